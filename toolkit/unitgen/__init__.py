"""Unit generation: definitions -> systemd unit files (escaping, rendering, the generator
and its cache). No imports here: this package is on the hot paths.
"""

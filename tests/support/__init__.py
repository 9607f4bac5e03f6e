"""Test support: the real-systemd sandbox and helpers shared by the tests and the
benchmarks.
"""

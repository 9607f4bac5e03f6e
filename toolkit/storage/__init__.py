"""Storage: the state store (SQLite, locks), the run/state directory layout, images. No
imports here: this package is on the hot paths.
"""

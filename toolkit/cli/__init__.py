"""The command line: argparse, the fast forms units run, verb handlers. The only layer that
knows argparse. No imports here: this package is on the hot paths.
"""

"""The container runtime: OCI spec, conmon, launch, status/exit bookkeeping, lifecycle
verbs, exec sessions, attach I/O, checkpoint, logs. No imports here: this package is on
the hot paths.
"""

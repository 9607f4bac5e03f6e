"""systemd integration: sd_notify and the notify proxy, socket activation, cgroup
placement, health checks. No imports here: this package is on the hot paths.
"""

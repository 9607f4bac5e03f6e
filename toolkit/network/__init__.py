"""The networking layer's home (networks, IPAM, netavark, port forwarding, DNS): between
systemd integration and the runtime. No imports here: this package is on the hot paths.
"""

"""podunit: containers as first-class systemd services (see README.md)."""

__version__ = "0.1.0"

"""Socket activation: accept systemd's fds and hand exactly those to the container.

Implements spec §3.3 with the protocol of sd_listen_fds(3): systemd passes
sockets as fds 3, 4, ... and describes them in ``LISTEN_FDS``, ``LISTEN_PID``
and ``LISTEN_FDNAMES``. podunit accepts them only when ``LISTEN_PID`` is its own
pid, checks each one is a socket, and passes them on:

- to conmon/the runtime as ``--runtime-opt --preserve-fds --runtime-opt N``
  (`runtime_preserve_fds_args`) with ``LISTEN_*`` removed from conmon's own
  environment (`environment_for_conmon`) — crun would otherwise add LISTEN_FDS to
  --preserve-fds a second time, and runc's own fds could leak in (runc #5474);
- to the payload as ``LISTEN_FDS=N``, ``LISTEN_PID=1`` and ``LISTEN_FDNAMES`` in
  config.json's ``process.env`` (`container_environment`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from toolkit.errors import PodunitError
from toolkit.record import Record

SD_LISTEN_FDS_START = 3
"""The first passed fd, as in sd-daemon.h."""

ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
"""What sd_listen_fds(3) reads; never passed to conmon or the runtime."""

NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")
"""What sd_notify(3) reads; runc/crun would start their own proxy on NOTIFY_SOCKET."""


class ActivationFds(Record):
    """The sockets systemd passed: fds 3.. and their FileDescriptorName= names."""

    fds: tuple[int, ...] = ()
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.fds)


class ActivationError(PodunitError):
    """The socket-activation environment is inconsistent (sd_listen_fds(3))."""


def inherited_sockets(environ: Mapping[str, str] = os.environ) -> ActivationFds:
    """The sockets passed to this process, per sd_listen_fds_with_names(3).

    Empty when LISTEN_PID is unset or names another process (the variables were
    meant for a parent). The fds stay open; marking them inheritable (or passing
    them with ``pass_fds``) is the caller's job.
    """
    listen_pid = environ.get("LISTEN_PID")
    listen_fds = environ.get("LISTEN_FDS")
    if listen_pid is None or listen_fds is None:
        return ActivationFds()
    if _parse_count("LISTEN_PID", listen_pid) != os.getpid():
        return ActivationFds()
    count = _parse_count("LISTEN_FDS", listen_fds)
    fds = tuple(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    names = _names(environ.get("LISTEN_FDNAMES"), count)
    for fd in fds:
        _require_socket(fd)
    return ActivationFds(fds=fds, names=names)


def container_environment(fds: ActivationFds) -> dict[str, str]:
    """``LISTEN_*`` for config.json ``process.env``: the payload is PID 1 in its namespace."""
    if not fds.fds:
        return {}
    return {
        "LISTEN_FDS": str(len(fds.fds)),
        "LISTEN_PID": "1",
        "LISTEN_FDNAMES": ":".join(fds.names),
    }


def runtime_preserve_fds_args(fds: ActivationFds) -> list[str]:
    """conmon arguments making the runtime keep exactly these fds (3..) open in the payload.

    conmon 2.1.x has no --preserve-fds of its own; it hands runtime options through.
    """
    if not fds.fds:
        return []
    return ["--runtime-opt", "--preserve-fds", "--runtime-opt", str(len(fds.fds))]


def environment_for_conmon(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`environ` without the activation and notify variables (they must not reach the runtime)."""
    dropped = set(ACTIVATION_VARIABLES) | set(NOTIFY_VARIABLES)
    return {key: value for key, value in environ.items() if key not in dropped}


def _parse_count(variable: str, value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise ActivationError(
            f"socket activation: {variable}={value!r} is not a positive number",
            hint="the unit's environment is inconsistent; see sd_listen_fds(3)",
        )
    return int(value)


def _names(fdnames: str | None, count: int) -> tuple[str, ...]:
    """LISTEN_FDNAMES split on ':'; "unknown" for each fd when unset (as sd-daemon does)."""
    if fdnames is None:
        return ("unknown",) * count
    names = tuple(fdnames.split(":"))
    if len(names) != count:
        raise ActivationError(
            f"socket activation: LISTEN_FDNAMES={fdnames!r} names {len(names)} fds"
            f" but LISTEN_FDS={count}",
        )
    return names


def _require_socket(fd: int) -> None:
    try:
        mode = os.fstat(fd).st_mode
    except OSError as error:
        raise ActivationError(
            f"socket activation: fd {fd} announced by LISTEN_FDS is not open ({error.strerror})"
        ) from None
    if not stat.S_ISSOCK(mode):
        raise ActivationError(
            f"socket activation: fd {fd} announced by LISTEN_FDS is not a socket",
            hint="only sockets are passed to containers (spec §3.3)",
        )

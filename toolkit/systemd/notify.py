"""Readiness notification towards systemd (spec §3.2; sd_notify(3)).

Sending: every message is ONE datagram to ``$NOTIFY_SOCKET`` (a path, or an
abstract address written ``@name``), followed by a ``BARRIER=1`` round trip
(sd_notify_barrier(3)) so that systemd has processed it before podunit exits.

Modes (``notify:`` in the definition):

- ``conmon``: the run path calls `notify_ready(conmon_pid)` once the runtime has
  started the payload: ``MAINPID=<conmon>`` and ``READY=1`` in one datagram.
- ``container``: `prepare_container_notify` binds a socket in the bundle,
  ``<bundle>/notify/notify.sock``, bind-mounted into the container at
  ``/run/notify`` with ``NOTIFY_SOCKET=/run/notify/notify.sock``. conmon 2.1.6
  only forwards READY/WATCHDOG, so podunit runs its own proxy:
  `NotifySetup.start` spawns ``python -m toolkit.systemd.notify proxy`` (a small process
  that stays in the unit's cgroup, so systemd attributes its datagrams to the
  unit under ``NotifyAccess=all``) and announces ``MAINPID=<conmon>``. The proxy
  forwards only `FORWARDED_KEYS`, drops ``MAINPID=`` and closes any fds that
  came with a message; it exits when conmon exits, logging to the journal if
  the container never sent ``READY=1``.
- ``healthy``: `toolkit.systemd.health` waits for the first passing check, then calls
  `notify_ready`.
- ``ignore``: nothing is sent (the unit is ``Type=forking`` with ``PIDFile=``).

``NOTIFY_SOCKET`` itself never reaches conmon or the runtime
(`toolkit.systemd.activation.environment_for_conmon`).

The sending side is a few lines of `socket` rather than systemd-python's
``daemon.notify``: that one reads only the process environment (the run path
passes an explicit one), reports failures as a bare ``False`` and has no barrier;
the proxy needs raw ``recvmsg`` for SCM_RIGHTS anyway.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import socket
import sys
from collections.abc import Mapping, Sequence

from toolkit import proc
from toolkit.definitions.model import Container, Mount, MountType, Notify
from toolkit.errors import PodunitError
from toolkit.fs import read_text, unlink_if_present

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import subprocess  # annotations only: `podunit run` imports neither it nor argparse here

CONTAINER_NOTIFY_DIR = "/run/notify"
PROXY_PIDFILE = "proxy.pid"  # beside the host socket: "PID STARTTIME" of the running proxy
PROXY_WAIT_SECONDS = 5.0
CONTAINER_NOTIFY_SOCKET = f"{CONTAINER_NOTIFY_DIR}/notify.sock"

FORWARDED_KEYS = frozenset(
    {"READY", "STATUS", "RELOADING", "STOPPING", "WATCHDOG", "ERRNO", "EXTEND_TIMEOUT_USEC"}
)
"""Assignments from the container that reach systemd (spec §3.2); all else is dropped."""

NOTIFY_DATAGRAM_MAX = 4096
"""systemd reads at most PIPE_BUF bytes of one notification."""

BARRIER_TIMEOUT_SECONDS = 5.0
_SUN_PATH_MAX = 107


class NotifyError(PodunitError):
    """A notification could not be delivered to systemd."""


def notify_socket_address(environ: Mapping[str, str] = os.environ) -> str | None:
    """$NOTIFY_SOCKET as a socket address (``@x`` -> abstract ``\\0x``), None when unset."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]
    if not address.startswith("/"):
        raise NotifyError(
            f"NOTIFY_SOCKET={address!r} is neither an absolute path nor an abstract address"
        )
    return address


def send_notification(
    message: str | bytes,
    environ: Mapping[str, str] = os.environ,
    *,
    barrier: bool = True,
) -> bool:
    """Send `message` as one datagram to $NOTIFY_SOCKET; False when there is no socket."""
    address = notify_socket_address(environ)
    if address is None:
        return False
    payload = message.encode() if isinstance(message, str) else message
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(payload)
        except OSError as error:
            raise NotifyError(
                f"cannot notify systemd at {environ['NOTIFY_SOCKET']!r}: {error.strerror}"
            ) from None
        if barrier:
            _barrier(sock)
    return True


def notify_ready(main_pid: int, environ: Mapping[str, str] = os.environ) -> None:
    """``MAINPID=<main_pid>`` and ``READY=1`` in one datagram; no-op without NOTIFY_SOCKET."""
    send_notification(f"MAINPID={main_pid}\nREADY=1", environ)


def notify_main_pid(main_pid: int, environ: Mapping[str, str] = os.environ) -> None:
    """``MAINPID=<main_pid>`` alone: the container itself will send READY."""
    send_notification(f"MAINPID={main_pid}", environ)


def notify_status(text: str, environ: Mapping[str, str] = os.environ) -> None:
    """``STATUS=<text>`` (shown by `systemctl status`); newlines become spaces."""
    send_notification("STATUS=" + " ".join(text.splitlines()), environ)


def forwardable(message: bytes) -> bytes | None:
    """The part of a container's notification systemd may see, or None if nothing is left.

    Keeps the lines whose key is in `FORWARDED_KEYS`, in order; drops MAINPID=,
    FDSTORE= and everything unknown.
    """
    kept = [
        line
        for line in message.split(b"\n")
        if b"=" in line and line.split(b"=", 1)[0].decode(errors="replace") in FORWARDED_KEYS
    ]
    return b"\n".join(kept) if kept else None


def announces_ready(message: bytes) -> bool:
    """Whether a (forwarded) notification contains ``READY=1``."""
    return b"READY=1" in message.split(b"\n")


class NotifySetup:
    """What the run path adds for a container's notify mode.

    `env` goes into config.json ``process.env``, `mounts` into its mounts (after
    the container's own). After conmon has started the payload, call `start`;
    `close` releases podunit's copy of the socket (always call it). A plain class,
    not a dataclass: `podunit run` must not pay for `dataclasses`.
    """

    __slots__ = ("container_name", "env", "host_socket", "listener", "mode", "mounts")

    def __init__(
        self,
        mode: Notify,
        container_name: str = "",
        env: dict[str, str] | None = None,
        mounts: tuple[Mount, ...] = (),
        host_socket: str | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        self.mode = mode
        self.container_name = container_name
        self.env: dict[str, str] = {} if env is None else env
        self.mounts = mounts
        self.host_socket = host_socket
        self.listener = listener

    def start(
        self, conmon_pid: int, environ: Mapping[str, str] = os.environ
    ) -> subprocess.Popen[bytes] | None:
        """Container mode: start the proxy for `conmon_pid`, then announce MAINPID=conmon.

        Returns the proxy process (it outlives podunit; nobody needs to wait for it).
        """
        if self.mode is not Notify.CONTAINER or self.listener is None:
            return None
        if notify_socket_address(environ) is None:
            return None
        fd = self.listener.fileno()
        assert self.host_socket is not None
        proxy = proc.spawn(
            [
                *proc.python_module_argv("toolkit.systemd.notify"),
                "proxy",
                "--listen-fd",
                str(fd),
                "--conmon-pid",
                str(conmon_pid),
                "--container",
                self.container_name,
            ],
            env=dict(environ),
            pass_fds=[fd],
        )
        pidfile = os.path.join(os.path.dirname(self.host_socket), PROXY_PIDFILE)
        with open(pidfile, "w", encoding="utf-8") as file:
            file.write(f"{proxy.pid} {proc.process_start_time(proxy.pid)}\n")
        notify_main_pid(conmon_pid, environ)
        return proxy

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None


def prepare_container_notify(
    bundle_dir: str | os.PathLike[str],
    container: Container,
    environ: Mapping[str, str] = os.environ,
) -> NotifySetup:
    """For ``notify: container`` bind the container's notify socket; other modes: empty setup.

    When the unit has ``WatchdogSec=`` (systemd sets WATCHDOG_USEC), the container
    gets WATCHDOG_USEC and WATCHDOG_PID=1 so sd_watchdog_enabled(3) works inside;
    its WATCHDOG=1 pings are forwarded by the proxy.
    """
    if container.notify is not Notify.CONTAINER:
        return NotifySetup(mode=container.notify, container_name=container.name)
    notify_dir = os.path.join(bundle_dir, "notify")
    os.makedirs(notify_dir, mode=0o755, exist_ok=True)
    host_socket = os.path.join(notify_dir, "notify.sock")
    unlink_if_present(host_socket)
    listener = bind_datagram_socket(host_socket)
    os.chmod(host_socket, 0o666)  # the payload may run as any user
    env = {"NOTIFY_SOCKET": CONTAINER_NOTIFY_SOCKET}
    if environ.get("WATCHDOG_USEC", "").isdigit():
        env.update(WATCHDOG_USEC=environ["WATCHDOG_USEC"], WATCHDOG_PID="1")
    return NotifySetup(
        mode=Notify.CONTAINER,
        container_name=container.name,
        env=env,
        mounts=(Mount(type=MountType.BIND, source=notify_dir, target=CONTAINER_NOTIFY_DIR),),
        host_socket=host_socket,
        listener=listener,
    )


def bind_datagram_socket(path: str | os.PathLike[str]) -> socket.socket:
    """An AF_UNIX datagram socket bound at `path`, even beyond sun_path's 107 bytes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        if len(os.fsencode(path)) <= _SUN_PATH_MAX:
            sock.bind(os.fspath(path))
        else:
            parent, name = os.path.split(path)
            directory = os.open(parent or ".", os.O_PATH | os.O_CLOEXEC)
            try:
                sock.bind(f"/proc/self/fd/{directory}/{name}")
            finally:
                os.close(directory)
    except OSError as error:
        sock.close()
        raise NotifyError(f"cannot bind notify socket {path}: {error.strerror}") from None
    return sock


def run_proxy(
    listener: socket.socket,
    conmon_pid: int,
    container_name: str,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Forward the container's notifications until it or conmon exits (the proxy's body).

    Besides conmon, the proxy watches conmon's children (the container's PID 1): it
    learns of the container's end as early as conmon does, so its journal line is
    written before systemd, seeing conmon exit, kills what is left of the unit.
    """
    ready = False
    watched = _pidfds([conmon_pid, *_children(conmon_pid)])
    try:
        while len(watched) > 0 and conmon_pid in watched:
            readable, _, _ = select.select([listener.fileno(), *watched.values()], [], [])
            if listener.fileno() in readable:
                ready = _forward_one(listener, environ) or ready
            if set(readable) & set(watched.values()):
                break
        # the container is gone: forward what it sent just before exiting
        listener.setblocking(False)
        while True:
            try:
                ready = _forward_one(listener, environ) or ready
            except BlockingIOError:
                break
    finally:
        for pidfd in watched.values():
            os.close(pidfd)
    if not ready:
        print(
            f"podunit: container {container_name} exited before it sent READY=1"
            f" to {CONTAINER_NOTIFY_SOCKET}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


def wait_for_proxy(bundle_dir: str | os.PathLike[str], timeout: float = PROXY_WAIT_SECONDS) -> None:
    """Wait until the container's notify proxy has exited (it does right after the container).

    conmon's exit command calls this in `notify: container` units: conmon waits for
    its exit command, and systemd kills what is left of a unit once conmon is gone,
    so the proxy's last line ("exited before it sent READY=1") is always written.
    """
    try:
        pid_text, start_text = read_text(os.path.join(bundle_dir, "notify", PROXY_PIDFILE)).split()
        pid, start = int(pid_text), int(start_text)
    except (OSError, ValueError):
        return
    proc.wait_until_gone(pid, start, timeout)


def _children(pid: int) -> list[int]:
    """The children of `pid` (Linux /proc/PID/task/PID/children), [] if it is gone."""
    try:
        return [int(child) for child in read_text(f"/proc/{pid}/task/{pid}/children").split()]
    except OSError:
        return []


def _pidfds(pids: Sequence[int]) -> dict[int, int]:
    """pidfd_open(2) of each pid still alive: {pid: pidfd}."""
    pidfds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            pidfds[pid] = os.pidfd_open(pid)
    return pidfds


def _forward_one(listener: socket.socket, environ: Mapping[str, str]) -> bool:
    """Receive one datagram, close any passed fds, forward its allowed part; True if READY."""
    data, ancillary, _, _ = listener.recvmsg(
        NOTIFY_DATAGRAM_MAX, socket.CMSG_SPACE(253 * array.array("i").itemsize)
    )
    for fd in _received_fds(ancillary):
        os.close(fd)
    message = forwardable(data)
    if message is None:
        return False
    try:
        send_notification(message, environ, barrier=False)
    except NotifyError as error:
        print(f"podunit: {error}", file=sys.stderr, flush=True)
    return announces_ready(message)


def _received_fds(ancillary: Sequence[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % array.array("i").itemsize
            fds.extend(array.array("i", data[:usable]))
    return fds


def _barrier(sock: socket.socket) -> None:
    """sd_notify_barrier(3): wait until systemd has processed what we sent before."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            sock.sendmsg(
                [b"BARRIER=1"],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [write_end]))],
            )
        except OSError:
            return  # an old manager or a receiver without fd passing: nothing to wait for
        os.close(write_end)
        write_end = -1
        poller = select.poll()
        poller.register(read_end, select.POLLHUP)
        poller.poll(int(BARRIER_TIMEOUT_SECONDS * 1000))
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m toolkit.systemd.notify proxy --listen-fd FD --conmon-pid PID --container N``."""
    import argparse

    parser = argparse.ArgumentParser(prog="podunit-notify-proxy")
    parser.add_argument("action", choices=["proxy"])
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--conmon-pid", type=int, required=True)
    parser.add_argument("--container", default="?")
    args = parser.parse_args(argv)
    listener = socket.socket(fileno=args.listen_fd)
    return run_proxy(listener, args.conmon_pid, args.container)


if __name__ == "__main__":
    sys.exit(main())

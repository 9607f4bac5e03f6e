"""Attach I/O: a container's or exec session's stdio through conmon's attach socket.

conmon 2.1.6's attach protocol (conn_sock.c): `<socket dir>/<id>/attach` is a
SOCK_SEQPACKET socket; packets from conmon start with 2 (stdout) or 3 (stderr), what we
send is the process's stdin, and shutdown(SHUT_WR) closes it. With `-t` the process has
a pseudo-terminal: our terminal goes raw, and `<bundle>/ctl` takes `1 ROWS COLS` to
resize it (ctrl.c). While attached, the signals podunit gets go to the container
(Podman's sig-proxy).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
from collections.abc import Callable, Iterator, Sequence

from toolkit.runtime.invoke import oci_runtime
from toolkit.storage.records import ContainerRecord
from toolkit.storage.state import StateStore

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

    from toolkit.storage.paths import RuntimePaths


STDIN_CHUNK = 4096  # below conmon's CONN_SOCK_BUF_SIZE, so no SEQPACKET is truncated


ATTACH_STDOUT = 2


ATTACH_STDERR = 3


def attach_packet(packet: bytes) -> tuple[int, bytes]:
    """(stream, data) of a packet conmon sent on the attach socket."""
    if not packet:
        return 0, b""
    return packet[0], packet[1:]


def resize_message(rows: int, columns: int) -> bytes:
    """The line conmon's ctl fifo takes to resize the terminal (ctrl.c: `1 HEIGHT WIDTH`)."""
    return f"1 {rows} {columns}\n".encode()


def connect_attach_socket(paths: RuntimePaths, session_id: str) -> socket.socket:
    """Connect through an O_PATH fd of the directory: its path may exceed sun_path's 108 bytes."""
    directory = os.open(paths.attach_socket_dir(session_id), os.O_PATH | os.O_CLOEXEC)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        client.connect(f"/proc/self/fd/{directory}/attach")
    finally:
        os.close(directory)
    return client


@contextlib.contextmanager
def raw_terminal(fd: int, enabled: bool) -> Iterator[None]:
    """Our terminal in raw mode while a `-t` session runs, restored afterwards."""
    if not enabled or not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of the terminal on `fd`, None if it is no terminal."""
    try:
        columns, rows = os.get_terminal_size(fd)
    except OSError:
        return None
    return (rows, columns) if rows and columns else None


def send_window_size(ctl: str, fd: int) -> None:
    with contextlib.suppress(OSError):
        columns, rows = os.get_terminal_size(fd)
        descriptor = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(descriptor, resize_message(rows, columns))
        finally:
            os.close(descriptor)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def relay(
    attach: socket.socket,
    *,
    stdin: int | None,
    stdout: int,
    stderr: int,
    on_output_closed: Callable[[], object] = lambda: None,
) -> None:
    """Copy stdin to the attach socket and its packets to stdout/stderr until conmon closes it.

    When a reader of our stdout or stderr goes away, `on_output_closed` is called
    once and further output for it is dropped (the caller ends the process, as a
    broken pipe would have).
    """
    closed: set[int] = set()
    readers: list[Any] = [attach] if stdin is None else [attach, stdin]
    while True:
        readable, _, _ = select.select(readers, [], [])  # select(2) also takes regular files
        if attach in readable:
            packet = attach.recv(65536)
            if not packet:
                return
            stream, data = attach_packet(packet)
            target = stderr if stream == ATTACH_STDERR else stdout
            if target not in closed:
                try:
                    _write_all(target, data)
                except BrokenPipeError:
                    closed.add(target)
                    on_output_closed()
        if stdin is not None and stdin in readable:
            chunk = os.read(stdin, STDIN_CHUNK)
            if chunk:
                attach.sendall(chunk)
            else:
                readers.remove(stdin)
                attach.shutdown(socket.SHUT_WR)  # conmon closes the process's stdin


@contextlib.contextmanager
def forwarded_signals(signals: Sequence[int], send: Callable[[int], object]) -> Iterator[None]:
    """While the block runs, `signals` delivered to podunit go to `send` (Podman's sig-proxy)."""
    previous = {signum: signal.signal(signum, lambda signum, _frame: send(signum))
                for signum in signals}  # fmt: skip
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def forward_signals(record: ContainerRecord) -> contextlib.AbstractContextManager[None]:
    """Attached run: SIGINT/SIGTERM/SIGHUP to podunit go to the container."""
    return forwarded_signals(
        (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
        lambda signum: oci_runtime().kill(record, signum),
    )


def relay_attached(
    store: StateStore, record: ContainerRecord, attach: socket.socket, *, tty: bool,
    interactive: bool,
) -> None:  # fmt: skip
    """Attached run through conmon's attach socket (needed with -t, or a logging driver)."""
    ctl = os.path.join(store.paths.bundle_dir(record.id), "ctl")
    previous_winch = None
    if tty:
        send_window_size(ctl, 0)
        previous_winch = signal.signal(signal.SIGWINCH, lambda *_: send_window_size(ctl, 0))
    try:
        with raw_terminal(0, tty):
            relay(attach, stdin=0 if (interactive or tty) else None, stdout=1, stderr=2)
    finally:
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)

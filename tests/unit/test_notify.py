"""sd_notify sending and the container notify proxy (spec §3.2) against real AF_UNIX sockets.

`Receiver` plays systemd: a datagram socket that records every message and, like
the manager, closes fds passed with BARRIER=1 so the sender's barrier returns.
"""

from __future__ import annotations

import array
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.definitions.model import Container, MountType, Notify
from toolkit.errors import Location
from toolkit.systemd.notify import (
    CONTAINER_NOTIFY_SOCKET,
    NotifyError,
    announces_ready,
    bind_datagram_socket,
    forwardable,
    notify_main_pid,
    notify_ready,
    notify_socket_address,
    notify_status,
    prepare_container_notify,
    send_notification,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """A stand-in for systemd's notify socket, recording datagrams in a thread."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[bytes] = []
        self.fd_counts: list[int] = []
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(64))
            except TimeoutError:
                continue
            except OSError:
                return
            fds: list[int] = []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
            self.fd_counts.append(len(fds))
            self.messages.append(data)
            for fd in fds:  # last, as systemd does: a barrier returns only after the record
                os.close(fd)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """The messages other than barriers, once `count` of them arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received = self.payloads()
            if len(received) >= count:
                return received
            time.sleep(0.02)
        raise AssertionError(f"expected {count} notifications, got {self.messages}")

    def payloads(self) -> list[bytes]:
        return [m for m in list(self.messages) if m != b"BARRIER=1"]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[Receiver, dict[str, str]]]:
    path = str(tmp_path / "notify")
    receiver = Receiver(path)
    yield receiver, {"NOTIFY_SOCKET": path}
    receiver.close()


def test_ready_is_one_datagram_with_mainpid_then_a_barrier(
    systemd_socket: tuple[Receiver, dict[str, str]],
) -> None:
    receiver, environ = systemd_socket
    started = time.monotonic()
    notify_ready(4242, environ)
    assert time.monotonic() - started < 2, "the barrier must return once the fd was closed"
    assert receiver.wait_for(1) == [b"MAINPID=4242\nREADY=1"]
    assert receiver.messages[-1] == b"BARRIER=1"
    assert receiver.fd_counts[-1] == 1


def test_abstract_notify_socket_address() -> None:
    name = f"podunit-test-{uuid.uuid4().hex}"
    receiver = Receiver("\0" + name)
    try:
        notify_status("starting\nstill starting", {"NOTIFY_SOCKET": "@" + name})
        assert receiver.wait_for(1) == [b"STATUS=starting still starting"]
    finally:
        receiver.close()


def test_main_pid_alone_carries_no_ready(systemd_socket: tuple[Receiver, dict[str, str]]) -> None:
    receiver, environ = systemd_socket
    notify_main_pid(77, environ)
    assert receiver.wait_for(1) == [b"MAINPID=77"]


def test_without_notify_socket_nothing_is_sent() -> None:
    assert send_notification("READY=1", {}) is False
    notify_ready(1, {})  # no error either


def test_relative_notify_socket_is_an_error() -> None:
    with pytest.raises(NotifyError, match="neither an absolute path nor an abstract"):
        notify_socket_address({"NOTIFY_SOCKET": "relative/sock"})


def test_unreachable_notify_socket_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone")
    with pytest.raises(NotifyError, match=f"cannot notify systemd at '{missing}'"):
        notify_ready(1, {"NOTIFY_SOCKET": missing})


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"READY=1", b"READY=1"),
        (b"MAINPID=12\nREADY=1", b"READY=1"),
        (b"MAINPID=12", None),
        (
            b"STATUS=ok\nRELOADING=1\nSTOPPING=1\nWATCHDOG=1\nERRNO=5\nEXTEND_TIMEOUT_USEC=9",
            b"STATUS=ok\nRELOADING=1\nSTOPPING=1\nWATCHDOG=1\nERRNO=5\nEXTEND_TIMEOUT_USEC=9",
        ),
        (b"FDSTORE=1\nFDNAME=x\nBARRIER=1\nREADY=1\n", b"READY=1"),
        (b"garbage without equals", None),
        (b"\xff\xfe=1\nREADY=1", b"READY=1"),
    ],
)
def test_forwardable_keeps_only_the_documented_keys(message: bytes, expected: bytes | None) -> None:
    assert forwardable(message) == expected


def test_announces_ready_is_exact() -> None:
    assert announces_ready(b"STATUS=x\nREADY=1")
    assert not announces_ready(b"READY=10")
    assert not announces_ready(b"STATUS=READY=1")


def container(notify: Notify) -> Container:
    return Container(name="web", source=Location("/etc/podunit/web.yaml", 1, 1), notify=notify)


@pytest.mark.parametrize("mode", [Notify.CONMON, Notify.HEALTHY, Notify.IGNORE])
def test_other_modes_get_an_empty_setup(tmp_path: Path, mode: Notify) -> None:
    setup = prepare_container_notify(tmp_path, container(mode))
    assert (setup.env, setup.mounts, setup.listener) == ({}, (), None)
    assert setup.start(os.getpid(), {"NOTIFY_SOCKET": str(tmp_path / "x")}) is None
    assert not (tmp_path / "notify").exists()


def test_container_setup_binds_socket_and_mounts_its_directory(tmp_path: Path) -> None:
    setup = prepare_container_notify(tmp_path, container(Notify.CONTAINER))
    try:
        assert setup.env == {"NOTIFY_SOCKET": CONTAINER_NOTIFY_SOCKET}
        (mount,) = setup.mounts
        assert (mount.type, mount.source, mount.target) == (
            MountType.BIND,
            str(tmp_path / "notify"),
            "/run/notify",
        )
        assert setup.host_socket == str(tmp_path / "notify" / "notify.sock")
        assert oct(os.stat(setup.host_socket).st_mode & 0o777) == oct(0o666)
    finally:
        setup.close()


def test_socket_path_longer_than_sun_path_still_binds(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    sock = bind_datagram_socket(deep / "notify.sock")
    try:
        assert (deep / "notify.sock").is_socket()
    finally:
        sock.close()


def send_from_container(path: str | Path, message: bytes, fds: list[int] | None = None) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        client.sendmsg([message], ancillary, 0, str(path))


def test_proxy_forwards_filtered_messages_and_closes_passed_fds(
    tmp_path: Path, systemd_socket: tuple[Receiver, dict[str, str]]
) -> None:
    receiver, environ = systemd_socket
    bundle = tmp_path / "bundle"
    setup = prepare_container_notify(bundle, container(Notify.CONTAINER))
    conmon = subprocess.Popen(["sleep", "60"])
    try:
        proxy = setup.start(conmon.pid, environ)
        setup.close()
        assert proxy is not None
        assert receiver.wait_for(1) == [f"MAINPID={conmon.pid}".encode()]
        assert setup.host_socket is not None
        read_end, write_end = os.pipe()
        send_from_container(
            setup.host_socket, b"MAINPID=1\nREADY=1\nSTATUS=serving\nFDSTORE=1", [write_end]
        )
        os.close(write_end)
        send_from_container(setup.host_socket, b"MAINPID=1")  # nothing left: dropped
        send_from_container(setup.host_socket, b"STOPPING=1")
        assert receiver.wait_for(3)[1:] == [b"READY=1\nSTATUS=serving", b"STOPPING=1"]
        # the proxy closed the fd it received: the pipe's last writer is gone
        assert os.read(read_end, 1) == b""
        os.close(read_end)
        conmon.terminate()
        assert proxy.wait(timeout=10) == 0
    finally:
        conmon.kill()
        conmon.wait()
        setup.close()


def test_proxy_reports_a_container_that_never_got_ready(
    tmp_path: Path, systemd_socket: tuple[Receiver, dict[str, str]]
) -> None:
    receiver, environ = systemd_socket
    listener = bind_datagram_socket(tmp_path / "notify.sock")
    conmon = subprocess.Popen(["sleep", "60"])
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolkit.systemd.notify",
            "proxy",
            "--listen-fd",
            str(listener.fileno()),
            "--conmon-pid",
            str(conmon.pid),
            "--container",
            "web",
        ],
        pass_fds=[listener.fileno()],
        env={**os.environ, **environ},
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    listener.close()
    try:
        send_from_container(tmp_path / "notify.sock", b"STATUS=loading")
        receiver.wait_for(1)
        conmon.kill()
        conmon.wait()
        _, stderr = proxy.communicate(timeout=10)
        assert proxy.returncode == 1
        assert stderr.strip() == (
            "podunit: container web exited before it sent READY=1 to /run/notify/notify.sock"
        )
        assert receiver.payloads() == [b"STATUS=loading"]
    finally:
        proxy.kill()
        conmon.kill()
        conmon.wait()


def test_proxy_for_an_already_gone_conmon_drains_and_exits(
    tmp_path: Path, systemd_socket: tuple[Receiver, dict[str, str]]
) -> None:
    receiver, environ = systemd_socket
    listener = bind_datagram_socket(tmp_path / "notify.sock")
    send_from_container(tmp_path / "notify.sock", b"READY=1")
    gone = subprocess.Popen(["true"])
    gone.wait()
    from toolkit.systemd.notify import run_proxy

    try:
        assert run_proxy(listener, gone.pid, "web", environ) == 0
    finally:
        listener.close()
    assert receiver.wait_for(1) == [b"READY=1"]


def test_proxy_ends_when_the_container_ends_even_before_conmon(
    tmp_path: Path, systemd_socket: tuple[Receiver, dict[str, str]]
) -> None:
    _, environ = systemd_socket
    listener = bind_datagram_socket(tmp_path / "notify.sock")
    conmon = subprocess.Popen(["sh", "-c", "sleep 60; sleep 60"])  # its child plays the payload
    try:
        wait = time.monotonic() + 10
        children: list[str] = []
        while not children and time.monotonic() < wait:
            children = Path(f"/proc/{conmon.pid}/task/{conmon.pid}/children").read_text().split()
        (payload,) = children
        from toolkit.systemd.notify import run_proxy

        result: list[int] = []
        proxy = threading.Thread(
            target=lambda: result.append(run_proxy(listener, conmon.pid, "web", environ))
        )
        proxy.start()
        time.sleep(0.2)
        assert proxy.is_alive()
        os.kill(int(payload), 9)
        proxy.join(timeout=10)
        assert result == [1]  # never READY
        assert conmon.poll() is None  # conmon itself was still there
    finally:
        conmon.kill()
        conmon.wait()
        listener.close()


def test_a_unit_watchdog_is_passed_on_to_the_container(tmp_path: Path) -> None:
    environ = {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "4242"}
    setup = prepare_container_notify(tmp_path, container(Notify.CONTAINER), environ)
    try:
        assert setup.env == {
            "NOTIFY_SOCKET": CONTAINER_NOTIFY_SOCKET,
            "WATCHDOG_USEC": "5000000",
            "WATCHDOG_PID": "1",
        }
    finally:
        setup.close()
    conmon_mode = prepare_container_notify(tmp_path / "b", container(Notify.CONMON), environ)
    assert conmon_mode.env == {}


def test_wait_for_proxy_waits_for_the_recorded_proxy_only(tmp_path: Path) -> None:
    """conmon's exit command waits so; a missing or stale pidfile does not block."""
    from toolkit import proc
    from toolkit.systemd.notify import PROXY_PIDFILE, wait_for_proxy

    wait_for_proxy(tmp_path, timeout=5)  # no pidfile: at once
    (tmp_path / "notify").mkdir()
    child = subprocess.Popen(["sleep", "0.5"])
    pidfile = tmp_path / "notify" / PROXY_PIDFILE
    start = proc.process_start_time(child.pid)
    pidfile.write_text(f"{child.pid} {start}\n")
    began = time.monotonic()
    wait_for_proxy(tmp_path, timeout=5)
    assert 0.2 < time.monotonic() - began < 4
    child.wait()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pidfile.write_text(f"{sleeper.pid} {start}\n")  # another process's start time
        began = time.monotonic()
        wait_for_proxy(tmp_path, timeout=5)
        assert time.monotonic() - began < 1
        pidfile.write_text("garbage\n")
        wait_for_proxy(tmp_path, timeout=5)
    finally:
        sleeper.kill()
        sleeper.wait()

"""The datagrams `podunit run NAME` sends for each notify mode (spec §3.2), seen by a
test NOTIFY_SOCKET receiver standing in for systemd.

podunit runs directly in the sandbox (not in a unit) as `run --unit` with NOTIFY_SOCKET
pointing at the receiver, so it behaves as a unit's ExecStart; conmon then lives in its own
scope (the systemd cgroup manager is used outside a service) and outlives the
command. The receiver closes the fds of BARRIER=1 as systemd does.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rootfs import busybox_rootfs, hosttools_rootfs
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

BASE = "/var/tmp/podunit-notify-modes"
DEFS = f"{BASE}/definitions"
RECEIVER = r"""
import array, json, os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
print("ready", flush=True)
while True:
    data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(64))
    fds = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
    for fd in fds:
        os.close(fd)
    out.write(json.dumps({"data": data.decode(), "fds": len(fds)}) + "\n")
"""
SENDER = r"""
import array, os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"STATUS=starting\nMAINPID=1\nFDSTORE=1")
r, w = os.pipe()
s.sendmsg([b"READY=1\nSTATUS=up"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
s.send(b"RELOADING=1\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000\nERRNO=0\nSTOPPING=1")
time.sleep(1000)
"""


def definitions(busybox: str, tools: str, volumes: tuple[str, ...]) -> dict[str, Any]:
    idle = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]
    base = {"rootfs": busybox, "runtime": "runc", "command": idle}
    return {
        "containers": {
            "nm-conmon": base,
            "nm-ignore": {**base, "notify": "ignore"},
            "nm-healthy": {
                **base,
                "notify": "healthy",
                "healthcheck": {"test": "test -d /proc/1", "interval": "100ms"},
            },
            "nm-container": {
                "rootfs": tools,
                "runtime": "runc",
                "notify": "container",
                "volumes": [*volumes, f"{BASE}/app:/app:ro"],
                "command": ["python3", "/app/sender.py"],
            },
        }
    }


class Harness:
    def __init__(self, sandbox: Sandbox, repo_root: Path) -> None:
        self.sandbox = sandbox
        self.podunit = f"{repo_root}/.venv/bin/podunit"
        self.env = {
            "PODUNIT_DEFINITION_DIRS": DEFS,
            "PODUNIT_STATE_DIR": f"{BASE}/state",
            "PODUNIT_RUN_DIR": "/run/podunit-notify-modes",
        }

    def run_with_receiver(self, name: str) -> tuple[str, list[dict[str, Any]]]:
        """`podunit run NAME` with a fresh receiver: its log file and the datagrams so far."""
        tag = secrets.token_hex(4)
        sock, log = f"/run/nm-{tag}.sock", f"{BASE}/nm-{tag}.jsonl"
        self.sandbox.sh(
            f"python3 {BASE}/receiver.py {sock} {log} >/dev/null 2>&1 & "
            f"while [ ! -S {sock} ]; do sleep 0.02; done; echo $! > {log}.pid"
        )
        # output to a file: the notify proxy (container mode) keeps stdout/stderr open
        result = self.sandbox.run(
            ["sh", "-c", f"{self.podunit} run --unit {name} >{log}.out 2>&1"],
            check=False,
            env={**self.env, "NOTIFY_SOCKET": sock},
        )
        assert result.returncode == 0, self.sandbox.read(f"{log}.out").decode()
        return log, self.datagrams(log)

    def datagrams(self, log: str) -> list[dict[str, Any]]:
        text = self.sandbox.run(["cat", log]).stdout.decode()
        return [json.loads(line) for line in text.splitlines()]

    def conmon_pid(self, name: str) -> int:
        result = self.sandbox.run([self.podunit, "inspect", name], env=self.env)
        return int(json.loads(result.stdout)[0]["State"]["ConmonPid"])

    def remove(self, name: str) -> None:
        self.sandbox.run([self.podunit, "rm", "-f", "-t", "2", name], check=False, env=self.env)


@pytest.fixture(scope="module")
def harness(sandbox: Sandbox, repo_root: Path) -> Iterator[Harness]:
    busybox = busybox_rootfs(sandbox, f"{BASE}/busybox")
    volumes = hosttools_rootfs(sandbox, f"{BASE}/tools")
    sandbox.write(f"{BASE}/receiver.py", RECEIVER)
    sandbox.write(f"{BASE}/app/sender.py", SENDER)
    sandbox.write(f"{DEFS}/nm.yaml", json.dumps(definitions(busybox, f"{BASE}/tools", volumes)))
    made = Harness(sandbox, repo_root)
    yield made
    for name in ("nm-conmon", "nm-ignore", "nm-healthy", "nm-container"):
        made.remove(name)
    sandbox.sh(
        f"for p in {BASE}/*.pid; do [ -e $p ] && kill $(cat $p); done; rm -rf {BASE}"
        " /run/podunit-notify-modes /run/nm-*.sock",
        check=False,
    )


def wait_for_datagrams(count: int, read: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        found: list[dict[str, Any]] = read()
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_conmon_mode_sends_mainpid_and_ready_in_one_datagram(harness: Harness) -> None:
    _, datagrams = harness.run_with_receiver("nm-conmon")
    conmon = harness.conmon_pid("nm-conmon")
    assert datagrams == [
        {"data": f"MAINPID={conmon}\nREADY=1", "fds": 0},
        {"data": "BARRIER=1", "fds": 1},
    ]
    harness.remove("nm-conmon")


def test_ignore_mode_sends_nothing(harness: Harness, sandbox: Sandbox) -> None:
    _, datagrams = harness.run_with_receiver("nm-ignore")
    assert datagrams == []
    pidfile = sandbox.read("/run/podunit-notify-modes/pidfiles/nm-ignore.pid").decode()
    assert int(pidfile) == harness.conmon_pid("nm-ignore")
    harness.remove("nm-ignore")


def test_healthy_mode_reports_status_then_ready(harness: Harness) -> None:
    _, datagrams = harness.run_with_receiver("nm-healthy")
    conmon = harness.conmon_pid("nm-healthy")
    assert [d["data"] for d in datagrams if d["data"] != "BARRIER=1"] == [
        "STATUS=waiting for the health check to pass",
        "STATUS=health: healthy",
        f"MAINPID={conmon}\nREADY=1",
    ]
    harness.remove("nm-healthy")


def test_container_mode_forwards_the_vocabulary_and_nothing_else(
    harness: Harness, sandbox: Sandbox
) -> None:
    log, first = harness.run_with_receiver("nm-container")
    conmon = harness.conmon_pid("nm-container")
    assert first[0] == {"data": f"MAINPID={conmon}", "fds": 0}
    datagrams = wait_for_datagrams(5, lambda: harness.datagrams(log))
    forwarded = [d for d in datagrams if d["data"] not in ("BARRIER=1", f"MAINPID={conmon}")]
    assert forwarded == [
        {"data": "STATUS=starting", "fds": 0},
        {"data": "READY=1\nSTATUS=up", "fds": 0},  # the pipe it sent was closed, not passed on
        {
            "data": "RELOADING=1\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000\nERRNO=0\nSTOPPING=1",
            "fds": 0,
        },
    ]
    harness.remove("nm-container")

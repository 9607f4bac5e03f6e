"""Generated units driven only through systemctl, judged by what systemd reports (spec §2, §3).

Definitions go to /etc/podunit/e2e-*.yaml in the shared sandbox, the generator is
installed and `systemctl daemon-reload` turns them into units; every check reads
systemd's view (`systemctl show` / D-Bus properties, the journal) or the kernel's
(/proc/PID/cgroup). Containers use runc (crun cannot create cgroups here, see
/work/shared/notes/crun-memlock-here.md) except for `cgroups: disabled`, which
needs crun. Payloads are busybox, or the host's Python via a host-tools rootfs.
Everything is stopped and removed again at the end of the module.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rootfs import busybox_rootfs, hosttools_rootfs
from tests.support.sandbox import Sandbox
from toolkit.systemd.cgroups import parse_proc_cgroup

pytestmark = pytest.mark.system

BASE = "/var/tmp/podunit-e2e"
BUSYBOX = f"{BASE}/busybox"
TOOLS = f"{BASE}/tools"
APP = f"{BASE}/app"  # bind-mounted at /app in host-tools containers
DEFINITION = "/etc/podunit/e2e.yaml"


def free_port_block(size: int = 4) -> int:
    """A first port of `size` consecutive free TCP/UDP ports below the ephemeral range.

    The shared sandbox uses the host's network, so ports are picked at run time.
    """
    for _ in range(100):
        first = random.randint(20000, 32000)
        try:
            for port in range(first, first + size):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as probe:
                        probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no free block of ports found")


PORT = free_port_block()

SERVE_PY = r"""
import json, os, select, signal, socket, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 has no default action
fds = list(range(3, 3 + int(os.environ.get("LISTEN_FDS", "0"))))
open_fds = []
for n in os.listdir("/proc/self/fd"):  # listdir's own fd is closed again by now
    try:
        os.readlink(f"/proc/self/fd/{n}")
    except FileNotFoundError:
        continue
    open_fds.append(int(n))
open_fds.sort()
report = json.dumps({
    "LISTEN_FDS": os.environ.get("LISTEN_FDS"), "LISTEN_PID": os.environ.get("LISTEN_PID"),
    "LISTEN_FDNAMES": os.environ.get("LISTEN_FDNAMES"),
    "NOTIFY_SOCKET": os.environ.get("NOTIFY_SOCKET"),
    "pid": os.getpid(), "fds": open_fds,
}).encode() + b"\n"
print("serving", len(fds), "sockets", flush=True)
socks = [socket.socket(fileno=fd) for fd in fds]
while True:
    for sock in select.select(socks, [], [])[0]:
        if sock.type == socket.SOCK_DGRAM:
            _, peer = sock.recvfrom(512)
            sock.sendto(report, peer)
        else:
            conn, _ = sock.accept()
            conn.sendall(report)
            conn.close()
"""

NOTIFY_PY = r"""
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
mode = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(os.environ["NOTIFY_SOCKET"])
sock.send(b"STATUS=warming up")
time.sleep(1.5)
if mode == "crash":
    print("giving up before READY", file=sys.stderr, flush=True)
    sys.exit(4)
sock.send(b"MAINPID=1\nREADY=1\nSTATUS=serving")
time.sleep(1000)
"""

# PID 1 ignores signals it has no handler for: idle payloads exit 0 on TERM/INT at once
IDLE = ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 0.1; done"]

BUSYBOX_CONTAINERS: dict[str, dict[str, Any]] = {
    # notify: conmon, split (the defaults); exits 0 on SIGTERM; writes to stdout and stderr
    "e2e-plain": {
        "command": [
            "sh",
            "-c",
            "trap 'echo got TERM; exit 0' TERM; trap 'echo reloaded' HUP;"
            " echo hello-stdout; echo hello-stderr >&2; while :; do sleep 0.1; done",
        ],
        "reload": {"signal": "SIGHUP"},
        "resources": {"memory": "64M", "cpus": 0.5, "pids": 40, "cpu_weight": 50},
    },
    # PID 1 without a TERM handler ignores SIGTERM: stop must escalate to SIGKILL
    "e2e-stubborn": {"command": ["sleep", "1000"], "stop_timeout": "1s"},  # no handler
    "e2e-crashy": {
        "command": ["sh", "-c", "sleep 0.2; exit 3"],
        "restart": "on-failure",
        "service": {"RestartSec": "100ms"},
        "unit": {"StartLimitBurst": 3, "StartLimitIntervalSec": 60},
    },
    "e2e-healthy": {
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1.5; touch /tmp/ready; " + IDLE[2]],
        "notify": "healthy",
        "healthcheck": {
            "test": ["CMD", "test", "-f", "/tmp/ready"],
            "interval": "200ms",
            "retries": 3,
            "timeout": "2s",
            "start_period": "10s",
        },
    },
    "e2e-unhealthy": {
        "command": IDLE,
        "notify": "healthy",
        "healthcheck": {
            "test": ["CMD-SHELL", "echo not yet; exit 1"],
            "interval": "100ms",
            "retries": 2,
            "timeout": "1s",
        },
    },
    "e2e-slow-health": {
        "command": IDLE,
        "notify": "healthy",
        "healthcheck": {"test": "exit 1", "interval": "100ms", "start_period": "60s"},
        "service": {"TimeoutStartSec": 2},
    },
    "e2e-after-healthy": {
        "command": IDLE,
        "depends_on": {"e2e-healthy": {"condition": "service_healthy"}},
    },
    "e2e-ignore": {"command": IDLE, "notify": "ignore"},
    "e2e-enabled": {
        "command": IDLE,
        "cgroups": "enabled",
        "stop_signal": "SIGINT",
        "stop_timeout": "4s",
        "resources": {"memory": "32M", "pids": 20},
    },
    "e2e-disabled": {"command": IDLE, "cgroups": "disabled", "runtime": "crun"},
}

TOOLS_CONTAINERS: dict[str, dict[str, Any]] = {
    "e2e-notify": {"command": ["python3", "/app/notify.py", "ok"], "notify": "container"},
    "e2e-notify-enabled": {
        "command": ["python3", "/app/notify.py", "ok"],
        "notify": "container",
        "cgroups": "enabled",
    },
    "e2e-notify-crash": {"command": ["python3", "/app/notify.py", "crash"], "notify": "container"},
    "e2e-sock1": {
        "command": ["python3", "/app/serve.py"],
        "network": "none",
        "sockets": [{"listen": f"127.0.0.1:{PORT}", "name": "web"}],
    },
    "e2e-sock3": {
        "command": ["python3", "/app/serve.py"],
        "network": "none",
        "sockets": [
            {"listen": f"127.0.0.1:{PORT + 1}", "name": "multi"},
            {"listen": f"127.0.0.1:{PORT + 2}", "type": "datagram", "name": "multi"},
            {"listen": "/run/e2e-sock3.sock", "name": "multi"},
        ],
    },
    "e2e-sock-ports": {
        "command": ["python3", "/app/serve.py"],
        "ports": [f"127.0.0.1:{PORT + 3}:8080"],
        "sockets": [
            {"listen": "/run/e2e-sock-ports.sock", "name": "ported"},
            {"listen": "/run/e2e-sock-ports-2.sock", "name": "ported"},
        ],
    },
}

ALL_UNITS = [*BUSYBOX_CONTAINERS, *TOOLS_CONTAINERS]


def definitions() -> str:
    containers: dict[str, dict[str, Any]] = {}
    for name, spec in BUSYBOX_CONTAINERS.items():
        containers[name] = {"rootfs": BUSYBOX, "runtime": "runc", **spec}
    for name, spec in TOOLS_CONTAINERS.items():
        containers[name] = {
            "rootfs": TOOLS,
            "runtime": "runc",
            "volumes": [*hosttools_volumes, f"{APP}:/app:ro"],
            **spec,
        }
    for spec in containers.values():
        spec.setdefault("install", {})  # nothing enabled: tests start what they need
    return json.dumps({"containers": containers}, indent=1)  # JSON is YAML


hosttools_volumes: tuple[str, ...] = ()


# --- reading systemd -------------------------------------------------------------------------


class Systemd:
    """systemctl/journalctl inside the sandbox, with polling helpers."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        result = self.sandbox.run(["systemctl", *args], check=check, timeout=timeout)
        return result.stdout.decode()

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        text = self.ctl("show", unit, "-p", ",".join(properties))
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def state(self, unit: str) -> str:
        return self.show(unit, "ActiveState")["ActiveState"]

    def wait_for(self, unit: str, states: set[str], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(unit)
            if state in states or time.monotonic() > deadline:
                assert state in states, f"{unit} is {state}, expected one of {states}"
                return state
            time.sleep(0.1)

    def journal(self, unit: str) -> list[dict[str, Any]]:
        result = self.sandbox.run(
            ["journalctl", "-u", unit, "-o", "json", "--no-pager", "--output-fields",
             "MESSAGE,PRIORITY,SYSLOG_IDENTIFIER,_PID,CONTAINER_NAME"]
        )  # fmt: skip
        return [json.loads(line) for line in result.stdout.decode().splitlines() if line]

    def messages(self, unit: str) -> list[str]:
        """Messages without the trailing newline conmon 2.1.6 keeps in MESSAGE=."""
        return [str(entry.get("MESSAGE", "")).rstrip("\n") for entry in self.journal(unit)]

    def reset(self, *units: str) -> None:
        self.ctl("stop", *units, check=False)
        self.ctl("reset-failed", *units, check=False)
        self.sandbox.run(["journalctl", "--rotate"], check=False)

    def cgroup(self, pid: int | str) -> str | None:
        return parse_proc_cgroup(self.sandbox.read(f"/proc/{pid}/cgroup").decode())

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID")["MainPID"])

    def comm(self, pid: int) -> str:
        return self.sandbox.read(f"/proc/{pid}/comm").decode().strip()

    def payload_pid(self, unit: str) -> int:
        """The container's PID 1 as seen from the sandbox: conmon's only child."""
        conmon = self.main_pid(unit)
        children = self.sandbox.read(f"/proc/{conmon}/task/{conmon}/children").decode().split()
        assert len(children) == 1, children
        return int(children[0])


def wait_until(condition: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def systemd(sandbox: Sandbox, repo_root: Path) -> Iterator[Systemd]:
    global hosttools_volumes
    busybox_rootfs(sandbox, BUSYBOX)
    hosttools_volumes = hosttools_rootfs(sandbox, TOOLS)
    sandbox.write(f"{APP}/serve.py", SERVE_PY)
    sandbox.write(f"{APP}/notify.py", NOTIFY_PY)
    sandbox.write(DEFINITION, definitions())
    sandbox.run([f"{repo_root}/scripts/install-generator"])
    sandbox.run(["systemctl", "daemon-reload"])
    manager = Systemd(sandbox)
    try:
        yield manager
    finally:
        units = [f"{name}.service" for name in ALL_UNITS]
        sockets = [
            f"{name}.socket" for name in TOOLS_CONTAINERS if "sockets" in TOOLS_CONTAINERS[name]
        ]
        manager.ctl("stop", *sockets, *units, check=False, timeout=120)
        manager.ctl("reset-failed", *sockets, *units, check=False)
        sandbox.run(["rm", "-rf", DEFINITION, BASE], check=False)
        sandbox.run([f"{repo_root}/scripts/install-generator", "--uninstall"], check=False)
        sandbox.run(["systemctl", "daemon-reload"], check=False)


# --- notify modes, stop, kill, restart ---------------------------------------------------------


def test_conmon_mode_split_cgroups_and_journal(systemd: Systemd) -> None:
    unit = "e2e-plain.service"
    systemd.reset(unit)
    systemd.ctl("start", unit)
    assert systemd.state(unit) == "active"
    conmon = systemd.main_pid(unit)
    assert systemd.comm(conmon) == "conmon"
    payload = systemd.payload_pid(unit)
    service = "/system.slice/e2e-plain.service"
    assert systemd.cgroup(conmon) == f"{service}/supervisor"
    assert systemd.cgroup(payload) == f"{service}/payload"
    status = systemd.ctl("status", unit, "--no-pager", "--lines=0", check=False)
    assert all(part in status for part in ("supervisor", "payload", "conmon", "sh -c")), status
    props = systemd.show(unit, "MemoryMax", "CPUQuotaPerSecUSec", "TasksMax", "CPUWeight")
    assert props == {
        "MemoryMax": str(64 << 20),
        "CPUQuotaPerSecUSec": "500ms",
        "TasksMax": "40",
        "CPUWeight": "50",
    }
    wait_until(
        lambda: {"hello-stdout", "hello-stderr"} <= set(systemd.messages(unit)), what="output"
    )
    by_message = {str(e["MESSAGE"]).rstrip("\n"): e for e in systemd.journal(unit)}
    assert by_message["hello-stdout"]["PRIORITY"] == "6"
    assert by_message["hello-stderr"]["PRIORITY"] == "3"
    assert by_message["hello-stdout"]["SYSLOG_IDENTIFIER"] == "e2e-plain"

    systemd.ctl("reload", unit)
    wait_until(lambda: "reloaded" in systemd.messages(unit), what="reload")
    assert systemd.state(unit) == "active"

    systemd.ctl("stop", unit)
    assert systemd.state(unit) == "inactive"  # exit 0 on SIGTERM
    assert "got TERM" in systemd.messages(unit)


def test_stop_that_needs_sigkill_leaves_the_unit_failed(systemd: Systemd) -> None:
    unit = "e2e-stubborn.service"
    systemd.reset(unit)
    systemd.ctl("start", unit)
    started = time.monotonic()
    systemd.ctl("stop", unit, check=False)
    assert 0.8 < time.monotonic() - started < 15
    assert systemd.show(unit, "ActiveState", "Result") == {
        "ActiveState": "failed",
        "Result": "exit-code",
    }
    assert systemd.show(unit, "ExecMainStatus")["ExecMainStatus"] == "137"


def test_killed_conmon_fails_the_unit_cleanup_runs_and_it_starts_again(
    systemd: Systemd, sandbox: Sandbox, repo_root: Path
) -> None:
    unit = "e2e-stubborn.service"
    systemd.reset(unit)
    systemd.ctl("start", unit)
    conmon = systemd.main_pid(unit)
    sandbox.run(["kill", "-KILL", str(conmon)])
    systemd.wait_for(unit, {"failed"})
    listing = sandbox.run([f"{repo_root}/.venv/bin/podunit", "ps", "-a", "--format", "json"])
    assert "e2e-stubborn" not in listing.stdout.decode()  # ExecStopPost removed it
    systemd.ctl("reset-failed", unit)
    systemd.ctl("start", unit)
    assert systemd.state(unit) == "active"
    assert systemd.main_pid(unit) != conmon
    systemd.ctl("kill", "--signal=SIGKILL", unit)  # reaches conmon and the payload
    systemd.wait_for(unit, {"failed"})


def test_on_failure_restarts_until_the_start_limit(systemd: Systemd) -> None:
    unit = "e2e-crashy.service"
    systemd.reset(unit)
    systemd.ctl("start", unit)
    wait_until(
        lambda: "e2e-crashy.service: Start request repeated too quickly." in systemd.messages(unit),
        timeout=40,
        what="the start limit",
    )
    props = systemd.show(unit, "NRestarts", "ActiveState", "ExecMainStatus")
    assert props == {"NRestarts": "3", "ActiveState": "failed", "ExecMainStatus": "3"}


@pytest.mark.parametrize(
    ("name", "conmon_cgroup"),
    [
        ("e2e-notify", "/system.slice/e2e-notify.service/supervisor"),
        ("e2e-notify-enabled", "/machine.slice/podunit-conmon-"),  # the proxy stays in the unit
    ],
)
def test_container_notify_forwards_status_and_ready_but_not_mainpid(
    systemd: Systemd, name: str, conmon_cgroup: str
) -> None:
    unit = f"{name}.service"
    systemd.reset(unit)
    systemd.ctl("start", "--no-block", unit)
    wait_until(
        lambda: systemd.show(unit, "StatusText")["StatusText"] == "warming up", what="STATUS"
    )
    assert systemd.state(unit) == "activating"
    systemd.wait_for(unit, {"active"})
    props = systemd.show(unit, "StatusText", "MainPID")
    assert props["StatusText"] == "serving"
    conmon = int(props["MainPID"])
    assert systemd.comm(conmon) == "conmon"  # the container's MAINPID=1 was dropped
    assert (systemd.cgroup(conmon) or "").startswith(conmon_cgroup)
    systemd.ctl("stop", unit)
    assert systemd.state(unit) == "inactive"


def test_container_exiting_before_ready_fails_with_a_clear_line(systemd: Systemd) -> None:
    unit = "e2e-notify-crash.service"
    systemd.reset(unit)
    systemd.ctl("start", unit, check=False)
    systemd.wait_for(unit, {"failed"})
    messages = systemd.messages(unit)
    assert "giving up before READY" in messages
    assert (
        "podunit: container e2e-notify-crash exited before it sent READY=1"
        " to /run/notify/notify.sock" in messages
    )


def test_healthy_mode_is_ready_when_the_check_passes_and_orders_dependents(
    systemd: Systemd,
) -> None:
    unit, dependent = "e2e-healthy.service", "e2e-after-healthy.service"
    systemd.reset(unit, dependent)
    started = time.monotonic()
    systemd.ctl("start", "--no-block", dependent)  # pulls in e2e-healthy (Requires=, After=)
    wait_until(lambda: systemd.state(unit) == "activating", what="activating")
    assert systemd.state(dependent) in {"inactive", "activating"}
    systemd.wait_for(dependent, {"active"})
    assert time.monotonic() - started > 1.4  # the check passes after 1.5 s
    ready_at = int(systemd.show(unit, "ActiveEnterTimestampMonotonic")[
        "ActiveEnterTimestampMonotonic"])  # fmt: skip
    dependent_at = int(systemd.show(dependent, "ExecMainStartTimestampMonotonic")[
        "ExecMainStartTimestampMonotonic"])  # fmt: skip
    assert dependent_at >= ready_at
    assert systemd.show(unit, "StatusText")["StatusText"] == "health: healthy"
    assert systemd.comm(systemd.main_pid(unit)) == "conmon"
    systemd.ctl("stop", dependent, unit)


def test_a_never_passing_check_fails_the_start(systemd: Systemd) -> None:
    unit = "e2e-unhealthy.service"
    systemd.reset(unit)
    systemd.ctl("start", unit, check=False)
    assert systemd.state(unit) == "failed"
    messages = systemd.messages(unit)
    assert "podunit: health check of e2e-unhealthy failed (1/2): exit 1: not yet" in messages
    assert any("container e2e-unhealthy is unhealthy" in m for m in messages)


def test_a_check_still_failing_at_timeout_start_sec_fails_cleanly(
    systemd: Systemd, sandbox: Sandbox, repo_root: Path
) -> None:
    unit = "e2e-slow-health.service"
    systemd.reset(unit)
    systemd.ctl("start", unit, check=False)
    assert systemd.show(unit, "ActiveState", "Result") == {
        "ActiveState": "failed",
        "Result": "timeout",
    }
    listing = sandbox.run([f"{repo_root}/.venv/bin/podunit", "ps", "-a", "--format", "json"])
    assert "e2e-slow-health" not in listing.stdout.decode()  # ExecStopPost removed it
    assert systemd.show(unit, "ControlGroup")["ControlGroup"] == ""  # nothing left running


def test_ignore_mode_is_forking_with_conmon_from_the_pidfile(systemd: Systemd) -> None:
    unit = "e2e-ignore.service"
    systemd.reset(unit)
    systemd.ctl("start", unit)
    props = systemd.show(unit, "Type", "ActiveState", "MainPID", "PIDFile", "StatusText")
    assert (props["Type"], props["ActiveState"]) == ("forking", "active")
    assert systemd.comm(int(props["MainPID"])) == "conmon"
    assert props["StatusText"] == ""
    systemd.ctl("stop", unit, check=False)


# --- cgroup modes --------------------------------------------------------------------------------


def test_enabled_mode_uses_scopes_with_the_containers_settings(
    systemd: Systemd, sandbox: Sandbox
) -> None:
    unit = "e2e-enabled.service"
    systemd.reset(unit)
    systemd.ctl("start", unit)
    conmon = systemd.main_pid(unit)
    conmon_cgroup = systemd.cgroup(conmon)
    assert conmon_cgroup is not None
    conmon_scope = conmon_cgroup.rsplit("/", 1)[-1]
    assert conmon_cgroup.startswith("/machine.slice/podunit-conmon-")
    container_id = conmon_scope.removeprefix("podunit-conmon-").removesuffix(".scope")
    payload_scope = f"podunit-{container_id}.scope"
    assert systemd.cgroup(systemd.payload_pid(unit)) == f"/machine.slice/{payload_scope}"
    props = systemd.show(payload_scope, "KillSignal", "TimeoutStopUSec", "MemoryMax", "TasksMax")
    assert props == {
        "KillSignal": "2",
        "TimeoutStopUSec": "4s",
        "MemoryMax": str(32 << 20),
        "TasksMax": "20",
    }
    conmon_props = systemd.show(conmon_scope, "Delegate", "Slice", "Description")
    assert conmon_props["Delegate"] == "yes" and conmon_props["Slice"] == "machine.slice"
    assert "e2e-enabled" in conmon_props["Description"]
    systemd.ctl("stop", unit, check=False)
    for scope in (conmon_scope, payload_scope):
        wait_until(
            lambda s=scope: systemd.show(s, "LoadState")["LoadState"] == "not-found",  # type: ignore[misc]
            what=f"{scope} gone",
        )


def test_disabled_mode_keeps_the_payload_in_conmons_cgroup(systemd: Systemd) -> None:
    unit = "e2e-disabled.service"
    systemd.reset(unit)
    systemd.ctl("start", unit)
    conmon = systemd.main_pid(unit)
    assert systemd.cgroup(systemd.payload_pid(unit)) == systemd.cgroup(conmon)
    assert (systemd.cgroup(conmon) or "").startswith("/system.slice/e2e-disabled.service")
    systemd.ctl("stop", unit, check=False)
    assert systemd.state(unit) in {"inactive", "failed"}


# --- socket activation ---------------------------------------------------------------------------


def ask_tcp(port: int) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.settimeout(20)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    return dict(json.loads(data))


def ask_unix(sandbox: Sandbox, path: str) -> dict[str, Any]:
    script = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(20); "
        f"s.connect({path!r}); sys.stdout.buffer.write(s.recv(4096))"
    )
    result = sandbox.run(["python3", "-c", script])
    return dict(json.loads(result.stdout))


def test_socket_activation_on_first_connection_with_network_none(systemd: Systemd) -> None:
    service, sock = "e2e-sock1.service", "e2e-sock1.socket"
    systemd.reset(service, sock)
    systemd.ctl("start", sock)
    assert systemd.state(service) == "inactive"
    report = ask_tcp(PORT)
    assert (report["LISTEN_FDS"], report["LISTEN_PID"], report["LISTEN_FDNAMES"]) == (
        "1",
        "1",
        "web",
    )
    assert report["pid"] == 1
    assert report["fds"] == [0, 1, 2, 3]  # stdio and the one socket, nothing else
    assert report["NOTIFY_SOCKET"] is None
    assert systemd.state(service) == "active"
    systemd.ctl("stop", service)
    assert systemd.state(sock) == "active"  # still listening
    assert systemd.state(service) in {"inactive", "failed"}
    systemd.ctl("reset-failed", service, check=False)
    assert ask_tcp(PORT)["LISTEN_FDNAMES"] == "web"  # starts again
    systemd.ctl("stop", service, sock)


def test_three_sockets_stream_datagram_and_unix_path(systemd: Systemd, sandbox: Sandbox) -> None:
    service, sock = "e2e-sock3.service", "e2e-sock3.socket"
    systemd.reset(service, sock)
    systemd.ctl("start", sock)
    report = ask_unix(sandbox, "/run/e2e-sock3.sock")
    assert report["LISTEN_FDS"] == "3"
    assert report["LISTEN_FDNAMES"] == "multi:multi:multi"
    assert report["fds"] == [0, 1, 2, 3, 4, 5]
    assert ask_tcp(PORT + 1)["pid"] == 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(20)
        udp.sendto(b"hi", ("127.0.0.1", PORT + 2))
        assert json.loads(udp.recv(4096))["LISTEN_FDS"] == "3"
    systemd.ctl("stop", service, sock)


def test_published_ports_do_not_leak_into_the_container(systemd: Systemd, sandbox: Sandbox) -> None:
    service, sock = "e2e-sock-ports.service", "e2e-sock-ports.socket"
    systemd.reset(service, sock)
    systemd.ctl("start", sock)
    report = ask_unix(sandbox, "/run/e2e-sock-ports-2.sock")
    assert report["fds"] == [0, 1, 2, 3, 4]  # conmon's reserved host port stays outside
    assert (report["LISTEN_FDS"], report["LISTEN_FDNAMES"]) == ("2", "ported:ported")
    listening = sandbox.run(["ss", "-Htln", f"sport = {PORT + 3}"]).stdout.decode()
    assert f"127.0.0.1:{PORT + 3}" in listening  # the published port is held open
    systemd.ctl("stop", service, sock)


# --- many at once --------------------------------------------------------------------------------


def test_twenty_units_started_at_once_all_become_active(systemd: Systemd, sandbox: Sandbox) -> None:
    names = [f"e2e-burst{i}" for i in range(20)]
    units = [f"{name}.service" for name in names]
    burst = {
        name: {"rootfs": BUSYBOX, "runtime": "runc", "command": IDLE, "install": {}}
        for name in names
    }
    sandbox.write("/etc/podunit/e2e-burst.yaml", json.dumps({"containers": burst}))
    sandbox.run(["systemctl", "daemon-reload"])
    try:
        systemd.ctl("start", *units, timeout=180)
        states = {unit: systemd.state(unit) for unit in units}
        assert set(states.values()) == {"active"}, states
        pids = {systemd.main_pid(unit) for unit in units}
        assert len(pids) == 20
    finally:
        systemd.ctl("stop", *units, check=False, timeout=180)
        systemd.ctl("reset-failed", *units, check=False)
        sandbox.run(["rm", "-f", "/etc/podunit/e2e-burst.yaml"])
        sandbox.run(["systemctl", "daemon-reload"])

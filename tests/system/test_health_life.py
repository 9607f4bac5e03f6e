"""Health checks for the container's whole life, under a real systemd (podunit.yaml(5)
HEALTH CHECKS; docs/podunit-systemd-integration.md "Health checks").

Five busybox containers start together (1 s checks, 2 retries) and are judged by what
systemd, the journal and podunit report:

- `hl-restart` turns unhealthy after ~2 s; `health_on_failure: restart` makes systemd
  restart it (NRestarts), with one journal line per transition on its unit;
- `hl-kill` turns unhealthy; `kill` fails the unit (exit 137, `restart: no`);
- `hl-none` turns unhealthy and stays running: ps, inspect (bounded log), the unit's
  status text, `healthcheck run`'s exit status; stopping it leaves no timer, check
  unit or process behind;
- `hl-off` has a disabled check: no health units, never checked;
- `hl-ready` is `notify: healthy` with a start-up check: READY after it passed twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

BASE = "/var/tmp/podunit-health-life"
DEFINITION = "/etc/podunit/health-life.yaml"
# healthy while /tmp/ok exists; the payload removes it after `after` seconds
SOURED = "trap 'exit 0' TERM; touch /tmp/ok; sleep {after}; rm /tmp/ok; while :; do sleep 0.1; done"
CHECK = "{test: [CMD, test, -e, /tmp/ok], interval: 1s, timeout: 2s, retries: 2}"


def definitions() -> str:
    return f"""
containers:
  hl-restart:
    rootfs: {BASE}/busybox
    runtime: runc
    tmpfs: [/tmp]  # each its own /tmp/ok: the root file system is shared
    command: [sh, -c, "{SOURED.format(after=2)}"]
    healthcheck: {CHECK}
    health_on_failure: restart
    service: {{RestartSec: 500ms}}
  hl-kill:
    rootfs: {BASE}/busybox
    runtime: runc
    tmpfs: [/tmp]  # each its own /tmp/ok: the root file system is shared
    command: [sh, -c, "{SOURED.format(after=2)}"]
    healthcheck: {CHECK}
    health_on_failure: kill
  hl-none:
    rootfs: {BASE}/busybox
    runtime: runc
    tmpfs: [/tmp]  # each its own /tmp/ok: the root file system is shared
    command: [sh, -c, "{SOURED.format(after=2)}"]
    healthcheck: {CHECK}
  hl-stop:
    rootfs: {BASE}/busybox
    runtime: runc
    tmpfs: [/tmp]  # each its own /tmp/ok: the root file system is shared
    command: [sh, -c, "{SOURED.format(after=2)}"]
    healthcheck: {CHECK}
    health_on_failure: stop
  hl-pace:
    rootfs: {BASE}/busybox
    runtime: runc
    tmpfs: [/tmp]  # each its own /tmp/ok: the root file system is shared
    command: [sh, -c, "trap 'exit 0' TERM; sleep 1; touch /tmp/ok; while :; do sleep 1; done"]
    healthcheck: {{test: [CMD, test, -e, /tmp/ok], interval: 1m, start_period: 1m,
                  start_interval: 300ms}}
  hl-off:
    rootfs: {BASE}/busybox
    runtime: runc
    tmpfs: [/tmp]  # each its own /tmp/ok: the root file system is shared
    command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 0.1; done"]
    healthcheck: {{test: [CMD, touch, /tmp/checked], interval: 1s, disable: true}}
  hl-ready:
    rootfs: {BASE}/busybox
    runtime: runc
    tmpfs: [/tmp]  # each its own /tmp/ok: the root file system is shared
    notify: healthy
    command: [sh, -c, "trap 'exit 0' TERM; sleep 1;\
      touch /tmp/up /tmp/ok; while :; do sleep 1; done"]
    healthcheck: {{test: [CMD, test, -e, /tmp/ok], interval: 1m}}
    health_startup: {{test: [CMD, test, -e, /tmp/up], interval: 300ms, success: 2}}
"""


UNITS = [
    f"hl-{name}.service" for name in ("restart", "kill", "stop", "pace", "none", "off", "ready")
]


class Units:
    def __init__(self, sandbox: Sandbox, podunit: str) -> None:
        self.sandbox = sandbox
        self.podunit = podunit

    def ctl(self, *args: str, check: bool = True) -> str:
        return self.sandbox.run(["systemctl", *args], check=check, timeout=60).stdout.decode()

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        text = self.ctl("show", unit, "-p", ",".join(properties))
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def pu(self, *args: str) -> tuple[int, str]:
        result = self.sandbox.run([self.podunit, *args], check=False)
        return result.returncode, result.stdout.decode()

    def inspect(self, name: str) -> dict[str, Any]:
        code, out = self.pu("inspect", name)
        assert code == 0, out
        data: dict[str, Any] = json.loads(out)[0]
        return data

    def messages(self, unit: str) -> list[str]:
        result = self.sandbox.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"])
        return result.stdout.decode().splitlines()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def units(sandbox: Sandbox, repo_root: Path) -> Iterator[Units]:
    busybox_rootfs(sandbox, f"{BASE}/busybox")
    sandbox.write(DEFINITION, definitions())
    sandbox.run([f"{repo_root}/scripts/install-generator"])
    sandbox.run(["systemctl", "daemon-reload"])
    manager = Units(sandbox, f"{repo_root}/.venv/bin/podunit")
    try:
        manager.ctl("start", *UNITS, "--no-block")
        yield manager
    finally:
        manager.ctl("stop", *UNITS, check=False)
        manager.ctl("reset-failed", *UNITS, check=False)
        sandbox.run(["rm", "-rf", DEFINITION, BASE], check=False)
        sandbox.run([f"{repo_root}/scripts/install-generator", "--uninstall"], check=False)
        sandbox.run(["systemctl", "daemon-reload"], check=False)


def test_unhealthy_with_restart_is_restarted_by_systemd(units: Units) -> None:
    unit = "hl-restart.service"
    wait_until(lambda: int(units.show(unit, "NRestarts")["NRestarts"]) >= 1, "a restart")
    lines = units.messages(unit)
    assert "container hl-restart is healthy" in lines
    assert (
        "container hl-restart is unhealthy: its health check failed 2 times in a row"
        " (last: exit 1); health_on_failure restart: killing it, systemd restarts"
        " hl-restart.service"
    ) in lines
    wait_until(lambda: units.show(unit, "ActiveState")["ActiveState"] == "active", "active")


def test_unhealthy_with_kill_fails_the_unit(units: Units) -> None:
    unit = "hl-kill.service"
    wait_until(lambda: units.show(unit, "ActiveState")["ActiveState"] == "failed", "failed")
    shown = units.show(unit, "Result", "ExecMainStatus", "NRestarts")
    assert shown == {"Result": "exit-code", "ExecMainStatus": "137", "NRestarts": "0"}
    assert units.show("hl-kill-health.timer", "ActiveState")["ActiveState"] == "inactive"


def test_unhealthy_with_stop_stops_the_unit(units: Units) -> None:
    unit = "hl-stop.service"
    lines: list[str] = []

    def stopped() -> bool:
        lines[:] = units.messages(unit)
        return any(line.startswith("Stopped hl-stop.service") for line in lines)

    wait_until(stopped, "the stop")
    assert units.show(unit, "ActiveState", "Result") == {
        "ActiveState": "inactive",
        "Result": "success",
    }
    assert (
        "container hl-stop is unhealthy: its health check failed 2 times in a row"
        " (last: exit 1); health_on_failure stop: stopping hl-stop.service"
    ) in lines


def test_the_start_pace_hands_over_to_the_interval(units: Units) -> None:
    def healthy() -> bool:
        code, out = units.pu("inspect", "hl-pace")
        return (
            code == 0 and json.loads(out)[0]["State"].get("Health", {}).get("Status") == "healthy"
        )

    wait_until(healthy, "healthy at the start pace", timeout=10)  # 300 ms checks, not 1 min
    wait_until(
        lambda: (
            units.show("hl-pace-health-start.timer", "ActiveState")["ActiveState"] == "inactive"
        ),
        "the start-pace timer to stop",
        timeout=5,
    )
    assert units.show("hl-pace-health.timer", "ActiveState")["ActiveState"] == "active"


def test_unhealthy_is_visible_everywhere_and_stop_leaves_nothing(units: Units) -> None:
    name, unit = "hl-none", "hl-none.service"

    def health() -> dict[str, Any]:
        data: dict[str, Any] = units.inspect(name)["State"]["Health"]
        return data

    wait_until(lambda: health()["Status"] == "unhealthy", "unhealthy")
    assert units.show(unit, "ActiveState")["ActiveState"] == "active"  # action none
    assert units.show(unit, "StatusText")["StatusText"] == "health: unhealthy (exit 1)"
    _, table = units.pu("ps")
    assert any(name in line and "running (unhealthy)" in line for line in table.splitlines())
    wait_until(lambda: len(health()["Log"]) == 5, "five results")
    time.sleep(1.5)
    now = health()
    assert len(now["Log"]) == 5 and now["Log"][-1]["ExitCode"] == 1, now
    assert now["FailingStreak"] >= 4, now
    assert [line for line in units.messages(unit) if line.startswith("container")] == [
        "container hl-none is healthy",
        "container hl-none is unhealthy: its health check failed 2 times in a row (last: exit 1)",
    ]
    assert units.pu("healthcheck", "run", name) == (1, "unhealthy\n")
    units.sandbox.run([units.podunit, "exec", name, "touch", "/tmp/ok"])
    assert units.pu("healthcheck", "run", name) == (0, "healthy\n")
    assert units.messages(unit)[-1] == "container hl-none is healthy again"

    units.ctl("stop", unit)
    for other in ("hl-none-health.timer", "hl-none-health.service"):
        assert units.show(other, "ActiveState")["ActiveState"] == "inactive"
    left = units.sandbox.run(["pgrep", "-f", "healthcheck run --scheduled hl-none"], check=False)
    assert left.returncode == 1, left.stdout
    active = units.ctl("list-units", "--no-legend", "--state=active,activating,deactivating",
                       "*hl-none*")  # fmt: skip
    assert active.strip() == "", active


def test_a_disabled_check_never_runs(units: Units) -> None:
    wait_until(lambda: units.show("hl-off.service", "ActiveState")["ActiveState"] == "active", "up")
    time.sleep(2)
    assert units.ctl("cat", "hl-off-health.timer", check=False) == ""
    assert "Health" not in units.inspect("hl-off")["State"]
    code, _ = units.pu("exec", "hl-off", "test", "-e", "/tmp/checked")
    assert code == 1
    code, _ = units.pu("healthcheck", "run", "hl-off")
    assert code == 125


def test_notify_healthy_waits_for_the_startup_check(units: Units) -> None:
    unit = "hl-ready.service"
    wait_until(lambda: units.show(unit, "ActiveState")["ActiveState"] == "active", "ready")
    health = units.inspect("hl-ready")["State"]["Health"]
    assert health["Status"] == "healthy"
    kinds = [entry["Startup"] for entry in health["Log"]]
    assert kinds.count(True) >= 2 and kinds[-1] is False, health["Log"]
    lines = units.messages(unit)
    assert units.show(unit, "StatusText")["StatusText"] == "health: healthy"
    assert not any("unhealthy" in line for line in lines)
    assert lines.index(
        "podunit: container hl-ready passed its start-up check; regular health checks begin"
    ) < lines.index("podunit: container hl-ready is healthy")

"""Runtime faults found by the hostile probe of issue 15, reproduced against real systemd,
conmon and runc in the shared sandbox (items 1, 4, 5, 6, 8, 9, 10, 11, 13, 17).

Faults are injected, not waited for: `PODUNIT_CONMON` names a conmon shim
(`conmon-slow`: sleeps before it execs the real conmon) for the interrupted
starts; disks are filled on a tiny tmpfs; rows and databases are damaged with
sqlite3; directories and processes are removed or killed by hand. Units are
generated from /etc/podunit/rr-*.yaml; ad-hoc containers use their own state
directories where the test damages state. Everything is removed at the end.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

BASE = "/var/tmp/podunit-rr"
ROOTFS = f"{BASE}/busybox"
SLOW_CONMON = f"{BASE}/conmon-slow"
DEFINITION = "/etc/podunit/rr-units.yaml"
IDLE = ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; while :; do sleep 0.1; done"]

SLOW_CONMON_SCRIPT = """#!/bin/sh
# conmon, 2 s late: the window in which a start is interrupted (issue 15 item 1)
sleep "${RR_CONMON_DELAY:-2}"
exec /usr/bin/conmon "$@"
"""

UNITS: dict[str, dict[str, Any]] = {
    "rr-idle": {"command": IDLE},
    "rr-slow": {"command": IDLE, "service": {"Environment": f"PODUNIT_CONMON={SLOW_CONMON}"}},
    "rr-exit3": {"command": ["sh", "-c", "exit 3"]},
}


def definitions() -> str:
    containers = {
        name: {"rootfs": ROOTFS, "runtime": "runc", "install": {}, **spec}
        for name, spec in UNITS.items()
    }
    return json.dumps({"containers": containers}, indent=1)  # JSON is YAML


class Host:
    """systemctl and podunit inside the sandbox."""

    def __init__(self, sandbox: Sandbox, repo_root: Path) -> None:
        self.sandbox = sandbox
        self.podunit = f"{repo_root}/.venv/bin/podunit"

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return self.sandbox.run(["systemctl", *args], check=check, timeout=timeout).stdout.decode()

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        text = self.ctl("show", unit, "-p", ",".join(properties))
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def state(self, unit: str) -> str:
        return self.show(unit, "ActiveState")["ActiveState"]

    def reset(self, unit: str) -> None:
        self.ctl("stop", unit, check=False)
        self.ctl("reset-failed", unit, check=False)
        self.pu("rm", "-f", unit.removesuffix(".service"))

    def pu(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return self.sandbox.run([self.podunit, *args], check=False, env=env, timeout=timeout)

    def ps(self, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        result = self.pu("ps", "-a", "--format", "json", env=env)
        assert result.returncode == 0, result.stderr.decode()
        return {entry["Name"]: entry for entry in json.loads(result.stdout)}

    def processes_naming(self, text: str) -> list[str]:
        result = self.sandbox.run(["pgrep", "-a", "-f", text], check=False)
        return [line for line in result.stdout.decode().splitlines() if "pgrep" not in line]

    def messages(self, unit: str) -> str:
        return self.sandbox.run(
            ["journalctl", "-u", unit, "--no-pager", "-o", "cat"]
        ).stdout.decode()


def wait_until(condition: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stderr_of(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def host(sandbox: Sandbox, repo_root: Path) -> Iterator[Host]:
    busybox_rootfs(sandbox, ROOTFS)
    sandbox.write(SLOW_CONMON, SLOW_CONMON_SCRIPT, mode=0o755)
    sandbox.write(DEFINITION, definitions())
    sandbox.run([f"{repo_root}/scripts/install-generator"])
    sandbox.run(["systemctl", "daemon-reload"])
    manager = Host(sandbox, repo_root)
    try:
        yield manager
    finally:
        units = [f"{name}.service" for name in UNITS]
        manager.ctl("stop", *units, check=False, timeout=120)
        manager.ctl("reset-failed", *units, check=False)
        manager.pu("rm", "-f", *UNITS)
        sandbox.run(["rm", "-rf", DEFINITION, BASE], check=False)
        sandbox.run([f"{repo_root}/scripts/install-generator", "--uninstall"], check=False)
        sandbox.run(["systemctl", "daemon-reload"], check=False)


def isolated(name: str) -> dict[str, str]:
    """The environment of a test that damages state: its own state and run directories."""
    return {
        "PODUNIT_STATE_DIR": f"/var/lib/podunit-rr-{name}",
        "PODUNIT_RUN_DIR": f"/run/podunit-rr-{name}",
    }


def drop_isolated(host: Host, env: dict[str, str]) -> None:
    names = list(host.ps(env)) if host.pu("ps", env=env).returncode == 0 else []
    if names:
        host.pu("rm", "-f", "-t", "0", *names, env=env)
    host.sandbox.run(["rm", "-rf", env["PODUNIT_STATE_DIR"], env["PODUNIT_RUN_DIR"]], check=False)


# --- item 1: an interrupted start never wedges the name ---------------------------------------


def test_stop_while_starting_is_quick_and_the_unit_starts_again(host: Host) -> None:
    unit = "rr-slow.service"
    host.reset(unit)
    host.ctl("start", "--no-block", unit)
    time.sleep(1)  # podunit run is waiting for the (late) conmon
    started = time.monotonic()
    host.ctl("stop", unit)
    assert time.monotonic() - started < 8, "stop during start must not wait for timeouts"
    assert "rr-slow" not in host.ps(), "the interrupted start left its row behind"
    assert not host.processes_naming("-n rr-slow"), "the interrupted start left a conmon"
    host.ctl("start", unit)
    assert host.state(unit) == "active"
    host.ctl("stop", unit)
    assert host.show(unit, "ActiveState", "Result") == {
        "ActiveState": "inactive",
        "Result": "success",
    }


def test_a_sigkilled_run_leaves_a_container_that_rm_f_removes_at_once(host: Host) -> None:
    env = {"PODUNIT_CONMON": SLOW_CONMON}
    argv = [host.podunit, "run", "-d", "--name", "rr-killed", "--runtime", "runc",
            "--rootfs", ROOTFS, "--", "sleep", "100"]  # fmt: skip
    host.sandbox.sh(
        f"{shlex.join(argv)} & p=$!; sleep 1; kill -KILL $p; wait $p", check=False, env=env
    )
    half_made = host.ps()["rr-killed"]
    assert half_made["State"]["ConmonPid"] == 0
    started = time.monotonic()
    removed = host.pu("rm", "-f", "rr-killed")
    assert removed.returncode == 0, stderr_of(removed)
    assert time.monotonic() - started < 5
    assert "rr-killed" not in host.ps()
    wait_until(
        lambda: not host.processes_naming(half_made["Id"]), timeout=5, what="its conmon to go"
    )
    again = host.pu("run", "--rm", "--name", "rr-killed", "--runtime", "runc", "--rootfs", ROOTFS,
                    "--", "true")  # fmt: skip
    assert again.returncode == 0, stderr_of(again)


def test_a_half_made_container_is_cleaned_by_the_next_start_of_its_unit(host: Host) -> None:
    """The unit's podunit run killed outright (SIGKILL: no cleanup of its own) mid-start."""
    unit = "rr-slow.service"
    host.reset(unit)
    host.ctl("start", "--no-block", unit)
    time.sleep(1)
    host.ctl("kill", "--signal=SIGKILL", unit)  # podunit run and the shim, no ExecStop
    wait_until(lambda: host.state(unit) in ("failed", "inactive"), what="the unit to fail")
    host.ctl("reset-failed", unit, check=False)
    started = time.monotonic()
    host.ctl("start", unit)
    assert host.state(unit) == "active"
    assert time.monotonic() - started < 10
    host.ctl("stop", unit)


# --- item 4: attached run from a terminal ----------------------------------------------------


@pytest.mark.parametrize("tty", [False, True], ids=["no-tty-flag", "tty-flag"])
def test_attached_run_in_a_terminal(host: Host, tty: bool) -> None:
    argv = [host.podunit, "run", "--rm", *(["-t"] if tty else []), "--runtime", "runc",
            "--rootfs", ROOTFS, "--", "sh", "-c", "echo hi; exit 5"]  # fmt: skip
    result = host.sandbox.run(["script", "-qec", shlex.join(argv), "/dev/null"], check=False)
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 5, output
    assert "hi" in output and "passthrough" not in output


# --- item 5: the unit's result is the payload's exit status ----------------------------------


def test_an_immediate_exit_fails_the_unit_every_time(host: Host) -> None:
    unit = "rr-exit3.service"
    results = []
    for _ in range(15):
        host.ctl("reset-failed", unit, check=False)
        host.ctl("start", unit, check=False)
        wait_until(lambda: host.state(unit) in ("failed", "inactive"), what="rr-exit3 to end")
        props = host.show(unit, "Result", "ExecMainStatus")
        results.append((props["Result"], props["ExecMainStatus"]))
    host.ctl("reset-failed", unit, check=False)
    assert results == [("exit-code", "3")] * 15


# --- item 6: a lost run directory is not a reboot -------------------------------------------


def test_a_lost_run_directory_while_a_unit_runs_is_not_a_reboot(host: Host) -> None:
    unit = "rr-idle.service"
    host.reset(unit)
    host.ctl("start", unit)
    host.sandbox.run(["rm", "-rf", "/run/podunit"])
    assert host.ps()["rr-idle"]["State"]["Status"] == "running"
    host.ctl("stop", unit)
    assert host.show(unit, "ActiveState", "Result", "ExecMainStatus") == {
        "ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0",
    }  # fmt: skip
    # the payload got the stop signal (its line reaches the journal a moment later)
    wait_until(lambda: "got TERM" in host.messages(unit), timeout=10, what="got TERM")


# --- item 8: NOTIFY_SOCKET alone is not unit mode --------------------------------------------

NOTIFY_PROBE = r"""
import os, socket, subprocess, sys
path = "/run/rr-notify.sock"
if os.path.exists(path):
    os.unlink(path)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
code = subprocess.run(sys.argv[1:], env={**os.environ, "NOTIFY_SOCKET": path}).returncode
sock.setblocking(False)
try:
    message = sock.recv(4096).decode()
except BlockingIOError:
    message = ""
os.unlink(path)
print(f"{code} {message!r}")
"""


def test_a_notify_socket_in_the_callers_environment_is_not_unit_mode(host: Host) -> None:
    argv = [host.podunit, "run", "--rm", "--runtime", "runc", "--rootfs", ROOTFS, "--",
            "sh", "-c", "exit 7"]  # fmt: skip
    result = host.sandbox.run(["python3", "-c", NOTIFY_PROBE, *argv], check=False)
    assert result.stdout.decode().split() == ["7", "''"], stderr_of(result)


# --- item 9: rm -f of a running unit's container ---------------------------------------------


def test_rm_f_of_a_running_units_container_leaves_the_unit_inactive(host: Host) -> None:
    unit = "rr-idle.service"
    host.reset(unit)
    host.ctl("start", unit)
    removed = host.pu("rm", "-f", "rr-idle")
    assert removed.returncode == 0, stderr_of(removed)
    wait_until(lambda: host.state(unit) in ("inactive", "failed"), what="the unit to stop")
    assert host.show(unit, "ActiveState", "Result") == {
        "ActiveState": "inactive",
        "Result": "success",
    }
    assert "no such container" not in host.messages(unit)


# --- item 10: a full disk ----------------------------------------------------------------------


def test_a_full_disk_is_named_and_ps_still_works(host: Host) -> None:
    mount = f"{BASE}/full"
    env = {"PODUNIT_STATE_DIR": f"{mount}/state", "PODUNIT_RUN_DIR": "/run/podunit-rr-full"}
    host.sandbox.sh(f"mkdir -p {mount} && mount -t tmpfs -o size=1m tmpfs {mount}")
    try:
        first = host.pu("run", "--name", "before-full", "--runtime", "runc", "--rootfs", ROOTFS,
                        "--", "true", env=env)  # fmt: skip
        assert first.returncode == 0, stderr_of(first)
        host.sandbox.sh(f"dd if=/dev/zero of={mount}/filler bs=4k 2>/dev/null", check=False)
        full = host.pu("run", "--name", "when-full", "--runtime", "runc", "--rootfs", ROOTFS,
                       "--", "true", env=env)  # fmt: skip
        assert full.returncode == 125
        assert f"no space left on {mount}/state" in stderr_of(full)
        assert "disk I/O error" not in stderr_of(full) and "Traceback" not in stderr_of(full)
        listed = host.pu("ps", "-a", env=env)
        assert listed.returncode == 0, stderr_of(listed)
        assert "before-full" in listed.stdout.decode()
        assert host.pu("inspect", "before-full", env=env).returncode == 0
    finally:
        host.sandbox.sh(f"rm -f {mount}/filler", check=False)
        host.pu("rm", "-f", "before-full", "when-full", env=env)
        host.sandbox.sh(f"umount {mount}; rm -rf {env['PODUNIT_RUN_DIR']}", check=False)


# --- item 11: a damaged row, a damaged database -----------------------------------------------

DAMAGE_ROW = (
    "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
    "db.execute(\"UPDATE containers SET spec = '{not json' WHERE name = 'rr-bad'\"); db.commit()"
)


def test_a_damaged_row_is_skipped_by_ps_and_removed_by_rm_f(host: Host) -> None:
    env = isolated("row")
    try:
        for name in ("rr-good", "rr-bad"):
            result = host.pu("run", "--name", name, "--runtime", "runc", "--rootfs", ROOTFS,
                             "--", "true", env=env)  # fmt: skip
            assert result.returncode == 0, stderr_of(result)
        host.sandbox.run(["python3", "-c", DAMAGE_ROW, f"{env['PODUNIT_STATE_DIR']}/state.db"])
        listed = host.pu("ps", "-a", env=env)
        assert listed.returncode == 0, stderr_of(listed)
        assert "rr-good" in listed.stdout.decode() and "rr-bad" not in listed.stdout.decode()
        warning = stderr_of(listed).strip().splitlines()
        assert len(warning) == 1 and "rr-bad" in warning[0] and "rm -f rr-bad" in warning[0]
        inspected = host.pu("inspect", "rr-bad", env=env)
        assert inspected.returncode == 125 and "Traceback" not in stderr_of(inspected)
        removed = host.pu("rm", "-f", "rr-bad", env=env)
        assert removed.returncode == 0, stderr_of(removed)
        listed = host.pu("ps", "-a", env=env)
        assert listed.returncode == 0 and stderr_of(listed) == ""
    finally:
        drop_isolated(host, env)


def test_a_file_that_is_not_a_database_is_one_message_saying_what_to_do(host: Host) -> None:
    env = isolated("notadb")
    database = f"{env['PODUNIT_STATE_DIR']}/state.db"
    try:
        host.sandbox.sh(
            f"mkdir -p {env['PODUNIT_STATE_DIR']} && head -c 8192 /dev/urandom > {database}"
        )
        result = host.pu("ps", env=env)
        assert result.returncode == 125
        lines = stderr_of(result).strip().splitlines()
        assert len(lines) == 2 and lines[1].startswith("hint: move it aside"), lines
        assert f"mv {database} {database}.broken" in lines[1]
    finally:
        host.sandbox.run(
            ["rm", "-rf", env["PODUNIT_STATE_DIR"], env["PODUNIT_RUN_DIR"]], check=False
        )


# --- item 13: nothing leaks from normal lifecycles ---------------------------------------------

SNAPSHOT = (
    "find /run/podunit -path /run/podunit/generator-cache -prune -o -print | sort; "
    "find /sys/fs/cgroup -type d | sort; systemctl list-units --all --no-legend 'podunit*'"
)


def test_a_full_lifecycle_leaves_the_run_directory_and_cgroups_as_it_found_them(host: Host) -> None:
    unit = "rr-idle.service"
    host.reset(unit)
    host.pu("ps")  # the run directory exists
    before = host.sandbox.sh(SNAPSHOT).stdout.decode()
    host.ctl("start", unit)
    assert host.pu("exec", "rr-idle", "--", "true").returncode == 0
    assert host.pu("exec", "-d", "rr-idle", "--", "sleep", "0.2").returncode == 0
    assert host.pu("exec", "-d", "rr-idle", "--", "sleep", "100").returncode == 0
    time.sleep(0.5)
    host.ctl("stop", unit)
    adhoc = ["--runtime", "runc", "--rootfs", ROOTFS]
    assert host.pu("run", "--rm", *adhoc, "--", "true").returncode == 0
    assert host.pu("run", "-d", "--name", "rr-adhoc", *adhoc, "--", "sleep", "100").returncode == 0
    assert host.pu("exec", "-d", "rr-adhoc", "--", "sleep", "0.1").returncode == 0
    time.sleep(0.3)
    assert host.pu("rm", "-f", "-t", "1", "rr-adhoc").returncode == 0
    time.sleep(0.3)
    after = host.sandbox.sh(SNAPSHOT).stdout.decode()
    assert after == before


# --- item 17: a lost database adopts what still runs ---------------------------------------


def test_a_lost_database_does_not_orphan_a_running_container(host: Host) -> None:
    env = isolated("lostdb")
    try:
        started = host.pu("run", "-d", "--name", "rr-orphan", "--runtime", "runc", "--rootfs",
                          ROOTFS, "--", "sleep", "100", env=env)  # fmt: skip
        assert started.returncode == 0, stderr_of(started)
        container_id = started.stdout.decode().strip()
        host.sandbox.sh(f"rm -f {env['PODUNIT_STATE_DIR']}/state.db*")
        assert host.ps(env)["rr-orphan"]["State"]["Status"] == "running"
        again = host.pu("run", "-d", "--name", "rr-orphan", "--runtime", "runc", "--rootfs",
                        ROOTFS, "--", "true", env=env)  # fmt: skip
        assert again.returncode == 125 and "rr-orphan is already running" in stderr_of(again)
        removed = host.pu("rm", "-f", "-t", "1", "rr-orphan", env=env)
        assert removed.returncode == 0, stderr_of(removed)
        wait_until(lambda: not host.processes_naming(container_id), timeout=5, what="conmon gone")
    finally:
        drop_isolated(host, env)

"""Units that start their container from a plan file: `podunit run --plan FILE NAME`.

The generator writes `{"podunit-plan": 1, "container": ...}` beside each unit
(toolkit.definitions.model, "plan files"); here the plan and a unit of the
generated form are written by hand, with an empty definition search path, so a
start that works proves no definition was read. Also checked: templates get
their instance, a unit's conmon has no `--exit-command` (ExecStopPost cleans
up), the exit code survives the removal, and a missing plan fails the start
with one line that suggests `systemctl daemon-reload`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import Sandbox
from toolkit.definitions.model import (
    PLAN_KEY,
    PLAN_VERSION,
    Container,
    container_to_json,
)
from toolkit.errors import Location

pytestmark = pytest.mark.system

BASE = "/var/tmp/podunit-test-plan"
ROOTFS = f"{BASE}/busybox"
EMPTY = f"{BASE}/no-definitions"
ENV = {
    "PODUNIT_STATE_DIR": "/var/lib/podunit-test-plan",
    "PODUNIT_RUN_DIR": "/run/podunit-test-plan",
    "PODUNIT_DEFINITION_DIRS": EMPTY,
}
UNIT_DIR = "/run/systemd/system"
TRAP = "trap 'echo got TERM; exit 0' TERM; echo instance=$INSTANCE; while :; do sleep 0.1; done"
WEB = Container(
    name="plan-web",
    source=Location("/etc/podunit/plan.yaml", 2, 3),
    rootfs=ROOTFS,
    command=("sh", "-c", TRAP),
    environment=(("INSTANCE", "none"),),
    network="none",
    runtime="runc",
)
WORKER = WEB._replace(name="plan-worker", template=True, environment=(("INSTANCE", "%i"),))


class Units:
    def __init__(self, sandbox: Sandbox, repo_root: Path) -> None:
        self.sandbox = sandbox
        self.podunit = f"{repo_root}/.venv/bin/podunit"
        self.launcher = f"{repo_root}/bin/podunit"

    def write(self, container: Container, *, plan: bool = True, podunit: str = "") -> None:
        """A plan (unless `plan` is False) and a unit of the generated form."""
        podunit = podunit or self.podunit
        path = f"{BASE}/{container.unit_name}.json"
        if plan:
            data = {PLAN_KEY: PLAN_VERSION, "container": container_to_json(container)}
            self.sandbox.write(path, json.dumps(data))
        name = container.unit_name + ("%i" if container.template else "")
        environment = " ".join(f"{key}={value}" for key, value in ENV.items())
        self.sandbox.write(
            f"{UNIT_DIR}/{container.unit_name}.service",
            "[Service]\nType=notify\nNotifyAccess=all\nKillMode=mixed\nDelegate=yes\n"
            f"Environment={environment}\n"
            f"ExecStart={podunit} run --plan {path} {name}\n"
            f"ExecStop={podunit} stop -t 10 {name}\n"
            f"ExecStopPost=-{podunit} rm -f {name}\n",
        )
        self.sandbox.run(["systemctl", "daemon-reload"])

    def systemctl(self, *args: str) -> tuple[int, str]:
        result = self.sandbox.run(["systemctl", *args], check=False)
        return result.returncode, (result.stdout + result.stderr).decode()

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-P", prop, unit)[1].strip()

    def podunit_json(self, *args: str) -> list[dict[str, object]]:
        result = self.sandbox.run([self.podunit, *args, "--format", "json"], env=ENV)
        data: list[dict[str, object]] = json.loads(result.stdout)
        return data

    def journal(self, unit: str) -> str:
        return self.sandbox.run(
            ["journalctl", "-q", "-o", "cat", "--no-pager", "-u", unit]
        ).stdout.decode()


@pytest.fixture(scope="module")
def units(sandbox: Sandbox, repo_root: Path) -> Iterator[Units]:
    busybox_rootfs(sandbox, ROOTFS)
    sandbox.sh(f"mkdir -p {EMPTY}")
    made = Units(sandbox, repo_root)
    yield made
    sandbox.sh(
        "systemctl stop 'plan-*' ; systemctl reset-failed 'plan-*' ;"
        f" rm -f {UNIT_DIR}/plan-*.service; systemctl daemon-reload;"
        f" rm -rf {BASE} {ENV['PODUNIT_STATE_DIR']} {ENV['PODUNIT_RUN_DIR']}",
        check=False,
    )


def _wait_for_journal(units: Units, unit: str, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        journal = units.journal(unit)
        if text in journal or time.monotonic() > deadline:
            return journal
        time.sleep(0.1)


def test_a_unit_starts_from_its_plan_and_stop_removes_the_container(units: Units) -> None:
    units.write(WEB)
    code, output = units.systemctl("start", "plan-web.service")
    assert code == 0, output + units.journal("plan-web.service")
    assert units.show("plan-web.service", "ActiveState") == "active"
    (listed,) = units.podunit_json("ps")
    assert listed["Name"] == "plan-web" and listed["State"]["Running"]  # type: ignore[index]
    conmon = units.show("plan-web.service", "MainPID")
    cmdline = units.sandbox.run(["cat", f"/proc/{conmon}/cmdline"]).stdout.split(b"\0")
    assert b"conmon" in cmdline[0] and b"--exit-command" not in cmdline
    assert "instance=none" in _wait_for_journal(units, "plan-web.service", "instance=none")

    code, output = units.systemctl("stop", "plan-web.service")
    assert code == 0, output
    assert units.show("plan-web.service", "ActiveState") == "inactive"
    assert "got TERM" in units.journal("plan-web.service")
    assert units.podunit_json("ps", "-a") == []  # ExecStopPost removed it
    waited = units.sandbox.run([units.podunit, "wait", "plan-web"], env=ENV)
    assert waited.stdout.decode().strip() == "0"  # the exit code survives the removal
    assert units.sandbox.sh(f"ls -A {ENV['PODUNIT_RUN_DIR']}/containers").stdout == b""


def test_a_template_plan_gives_each_instance_its_name(units: Units) -> None:
    units.write(WORKER)
    code, output = units.systemctl("start", "plan-worker@7.service")
    assert code == 0, output + units.journal("plan-worker@7.service")
    (listed,) = units.podunit_json("ps")
    assert listed["Name"] == "plan-worker@7"
    assert "instance=7" in _wait_for_journal(units, "plan-worker@7.service", "instance=7")
    code, output = units.systemctl("stop", "plan-worker@7.service")
    assert code == 0, output
    assert units.podunit_json("ps", "-a") == []


def test_a_missing_plan_fails_the_start_with_one_line_suggesting_daemon_reload(
    units: Units,
) -> None:
    gone = WEB._replace(name="plan-gone")
    units.write(gone, plan=False)
    code, _ = units.systemctl("start", "plan-gone.service")
    assert code != 0
    assert units.show("plan-gone.service", "ActiveState") == "failed"
    journal = units.journal("plan-gone.service")
    assert f"podunit: cannot read plan {BASE}/plan-gone.json: No such file or directory" in journal
    assert "hint: run 'systemctl daemon-reload'" in journal
    assert "Traceback" not in journal
    units.systemctl("reset-failed", "plan-gone.service")


def test_the_bin_podunit_launcher_runs_a_units_start_and_stop(units: Units) -> None:
    """bin/podunit (python3 -I -S) as the Exec lines' program, as units may use it."""
    fast = WEB._replace(name="plan-launched")
    units.write(fast, podunit=units.launcher)
    code, output = units.systemctl("start", "plan-launched.service")
    assert code == 0, output + units.journal("plan-launched.service")
    (listed,) = units.podunit_json("ps")
    assert listed["Name"] == "plan-launched"
    code, output = units.systemctl("stop", "plan-launched.service")
    assert code == 0, output
    assert units.show("plan-launched.service", "Result") == "success"
    assert units.podunit_json("ps", "-a") == []
    assert "Traceback" not in units.journal("plan-launched.service")

"""Health checks run in a real container with `RUNTIME exec` (spec §1.1 healthcheck).

A detached busybox container (podunit run -d, isolated state) is checked with
passing, failing, missing and hanging commands; a hanging check is killed when
its timeout expires, inside the container too.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

BASE = "/var/tmp/podunit-health"
ENV = {"PODUNIT_STATE_DIR": f"{BASE}/state", "PODUNIT_RUN_DIR": "/run/podunit-health"}
NAME = "hc-target"

CHECK = """
import json, sys
from datetime import timedelta
from toolkit.definitions.model import Healthcheck
from toolkit.systemd.health import run_check_in_container
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.state import StateStore
with StateStore(RuntimePaths.for_mode(False)) as store:
    record = store.get({name!r})
timeout = timedelta(seconds=float(sys.argv[2]))
check = Healthcheck(test=tuple(json.loads(sys.argv[1])), timeout=timeout)
result = run_check_in_container(
    record.runtime, list(record.options.runtime_args), record.id, check
)
print(json.dumps({{"exit_code": result.exit_code, "output": result.output}}))
"""


@pytest.fixture(scope="module")
def target(sandbox: Sandbox, repo_root: Path) -> Iterator[str]:
    rootfs = busybox_rootfs(sandbox, f"{BASE}/busybox")
    podunit = f"{repo_root}/.venv/bin/podunit"
    sandbox.run(
        [podunit, "run", "-d", "--name", NAME, "--runtime", "runc", "--rootfs", rootfs,
         "--", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
        env=ENV,
    )  # fmt: skip
    yield f"{repo_root}/.venv/bin/python"
    sandbox.run([podunit, "rm", "-f", "-t", "1", NAME], check=False, env=ENV)
    sandbox.run(["rm", "-rf", BASE, ENV["PODUNIT_RUN_DIR"]], check=False)


def check(sandbox: Sandbox, python: str, argv: list[str], timeout: float = 5) -> dict[str, object]:
    script = textwrap.dedent(CHECK.format(name=NAME))
    result = sandbox.run([python, "-c", script, json.dumps(argv), str(timeout)], env=ENV)
    return dict(json.loads(result.stdout))


def test_passing_check(sandbox: Sandbox, target: str) -> None:
    assert check(sandbox, target, ["sh", "-c", "echo fine"]) == {"exit_code": 0, "output": "fine\n"}


def test_failing_check_keeps_its_output(sandbox: Sandbox, target: str) -> None:
    result = check(sandbox, target, ["sh", "-c", "echo not ready >&2; exit 3"])
    assert result == {"exit_code": 3, "output": "not ready\n"}


def test_missing_command_fails_the_check(sandbox: Sandbox, target: str) -> None:
    result = check(sandbox, target, ["/no/such/check"])
    assert result["exit_code"] not in (0, None)
    assert "no/such/check" in str(result["output"])


def test_hanging_check_times_out_and_is_killed(sandbox: Sandbox, target: str) -> None:
    result = check(sandbox, target, ["sleep", "7.25"], timeout=0.5)
    assert result["exit_code"] is None
    left = sandbox.run(["pgrep", "-f", "sleep 7.25"], check=False)
    assert left.returncode == 1, left.stdout

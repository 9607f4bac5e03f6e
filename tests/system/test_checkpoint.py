"""Checkpoint/restore in the sandbox (toolkit.runtime.checkpoint): CRIU's availability decides."""

from __future__ import annotations

import re

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import VENV_PYTHON, Sandbox

pytestmark = pytest.mark.system

PODUNIT = str(VENV_PYTHON.parent / "podunit")

REQUIRE_CRIU = """
from toolkit.runtime.checkpoint import require_criu
from toolkit.errors import PodunitError
try:
    require_criu()
except PodunitError as error:
    print(f"{error}\\n{error.hint}")
else:
    print("ok")
"""


def criu_verdict(sandbox: Sandbox) -> str:
    result = sandbox.run([str(VENV_PYTHON), "-c", REQUIRE_CRIU])
    return result.stdout.decode().strip()


def run_detached(
    sandbox: Sandbox, env: dict[str, str], base: str, name: str, *command: str
) -> None:
    """`podunit run -d` of container NAME (runc) over a busybox root made under BASE."""
    busybox_rootfs(sandbox, f"{base}/rootfs")
    argv = [PODUNIT, "run", "-d", "--runtime", "runc", "--rootfs", f"{base}/rootfs", "--name", name]
    started = sandbox.run([*argv, "--", *command], env=env, check=False)
    assert started.returncode == 0, started.stderr


def test_unusable_criu_is_one_clear_error(sandbox: Sandbox) -> None:
    works = sandbox.run(["criu", "check"], check=False).returncode == 0
    verdict = criu_verdict(sandbox)
    if works:
        assert verdict == "ok"
        return
    first_line = verdict.splitlines()[0]
    assert first_line.startswith("CRIU cannot checkpoint on this machine: ")
    assert "Traceback" not in verdict
    assert "criu check fails here" in verdict


def test_checkpoint_and_restore_round_trip(sandbox: Sandbox) -> None:
    verdict = criu_verdict(sandbox)
    if verdict != "ok":
        pytest.skip(
            "criu 3.17 cannot run on this kernel (`criu check`: "
            f"{verdict.splitlines()[0].split(': ', 1)[-1]}), so no checkpoint can be taken"
        )
    base = "/var/tmp/podunit-checkpoint-round-trip"
    env = {"PODUNIT_STATE_DIR": f"{base}/state", "PODUNIT_RUN_DIR": "/run/podunit-cp-rt"}
    counter = "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done"
    run_detached(sandbox, env, base, "round-trip", "sh", "-c", counter)
    try:
        sandbox.run(["sleep", "1"])
        sandbox.run([PODUNIT, "checkpoint", "round-trip"], env=env)
        frozen = sandbox.run([PODUNIT, "exec", "round-trip", "--", "true"], env=env, check=False)
        assert frozen.returncode == 125  # checkpointed: not running any more
        sandbox.run([PODUNIT, "restore", "round-trip"], env=env)
        count = sandbox.run([PODUNIT, "exec", "round-trip", "--", "cat", "/tmp/n"], env=env)
        assert int(count.stdout) >= 5  # the counter went on from where it was
    finally:
        sandbox.run([PODUNIT, "rm", "-f", "-t", "0", "round-trip"], env=env, check=False)
        sandbox.run(["rm", "-rf", base, env["PODUNIT_RUN_DIR"]], check=False)


def test_cli_reports_criu_and_leaves_the_container_running(sandbox: Sandbox) -> None:
    base = "/var/tmp/podunit-checkpoint-test"
    env = {"PODUNIT_STATE_DIR": f"{base}/state", "PODUNIT_RUN_DIR": "/run/podunit-checkpoint"}
    run_detached(sandbox, env, base, "checkpointed", "sleep", "1000")
    try:
        verdict = criu_verdict(sandbox)
        if verdict == "ok":
            pytest.skip("CRIU works here: the failure path cannot be shown")
        criu_error = b"podunit: CRIU cannot checkpoint on this machine: "
        refused = sandbox.run([PODUNIT, "checkpoint", "checkpointed"], env=env, check=False)
        assert refused.returncode == 125
        assert refused.stderr.startswith(criu_error), refused.stderr
        assert b"Traceback" not in refused.stderr
        table = sandbox.run([PODUNIT, "ps"], env=env).stdout.decode()
        assert re.search(r"checkpointed\s+running", table), table
        running = sandbox.run([PODUNIT, "restore", "checkpointed"], env=env, check=False)
        assert running.returncode == 125
        assert b"is running: stop it before restoring" in running.stderr
        sandbox.run([PODUNIT, "stop", "-t", "0", "checkpointed"], env=env)
        stopped = sandbox.run([PODUNIT, "restore", "checkpointed"], env=env, check=False)
        assert stopped.returncode == 125
        assert stopped.stderr.startswith(criu_error), stopped.stderr
    finally:
        sandbox.run([PODUNIT, "rm", "-f", "-t", "0", "checkpointed"], env=env, check=False)
        sandbox.run(["rm", "-rf", base, env["PODUNIT_RUN_DIR"]], check=False)

"""A short soak (issue 15): bench/soak.py's cycles in the shared sandbox, 10 start/stop
cycles of a generated unit with exec, exec -d and two kill -9 of conmon, with zero
failures and nothing leaked. `scripts/soak` runs the full 1,000 cycles (not in CI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.sandbox import VENV_PYTHON, Sandbox

pytestmark = pytest.mark.system


def test_short_soak_has_no_failure_and_no_leak(sandbox: Sandbox, repo_root: Path) -> None:
    script = 'cd "$1" && shift && exec "$@"'
    argv = ["sh", "-c", script, "sh", str(repo_root), str(VENV_PYTHON), "-m", "bench.soak",
            "--inside", "--cycles", "10", "--kill-every", "5"]  # fmt: skip
    result = sandbox.run(argv, check=False, timeout=300)
    summary = json.loads(result.stdout)
    assert (summary["failures"], summary["leaks"]) == ([], {}), result.stderr.decode()
    assert summary["kills"] == 2 and len(summary["conmon_fds"]) == 1
    assert result.returncode == 0

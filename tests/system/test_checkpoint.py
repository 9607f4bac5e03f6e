"""Checkpoint/restore in the sandbox (toolkit.checkpoint): CRIU's availability decides."""

from __future__ import annotations

import pytest

from toolkit.sandbox import VENV_PYTHON, Sandbox

pytestmark = pytest.mark.system

REQUIRE_CRIU = """
from toolkit.checkpoint import require_criu
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
    pytest.skip("CRIU works here, but restore needs conmon --restore support in toolkit.conmon")

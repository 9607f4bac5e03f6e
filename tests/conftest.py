"""Shared fixtures: `repo_root`, and `sandbox`, one booted real-systemd sandbox per session.

System tests (marked ``system``) need root, systemd-nspawn and nsenter. Without them
they are skipped with the reason, except in CI (``CI=true``), where they fail: CI
runs as root and must never silently skip them. Tests sharing `sandbox` clean up
what they create in it (stop units, remove files, ``systemctl daemon-reload``).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sandbox import Sandbox, reap_stale
from toolkit.errors import SandboxError

REPO_ROOT = Path(__file__).resolve().parent.parent


def in_ci() -> bool:
    """Whether we run in CI (where system tests must run)."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def system_tests_unavailable() -> str | None:
    """Why system tests cannot run on this machine, or None if they can."""
    if os.geteuid() != 0:
        return "system tests need root (they mount an overlay and boot systemd-nspawn)"
    for program in ("systemd-nspawn", "nsenter", "unshare", "setpriv", "mount"):
        if shutil.which(program) is None:
            return f"system tests need {program} (Debian: systemd-container, util-linux)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("system") is None:
        return
    reason = system_tests_unavailable()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout this test suite belongs to."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A booted sandbox shared by the whole session (stale ones of killed runs are reaped)."""
    reason = system_tests_unavailable()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        reap_stale()
    except SandboxError as error:  # not ours to fail on: report it and go on
        warnings.warn(f"stale sandboxes could not be removed: {error}", stacklevel=1)
    with Sandbox.booted() as booted:
        yield booted


@pytest.fixture(autouse=True)
def _shared_sandbox_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Name the test that killed the shared sandbox (the later ones only see it gone)."""
    yield
    if "sandbox" in request.fixturenames:
        shared: Sandbox = request.getfixturevalue("sandbox")
        if not shared.alive:
            pytest.fail(f"the shared sandbox {shared.name} died during this test", pytrace=False)

"""Default OCI runtime choice (spec §1.1 `runtime`: crun if installed and usable, else runc)."""

from __future__ import annotations

import resource
import shutil

import pytest

from toolkit.runtime import invoke


def test_an_infinite_memlock_hard_limit_lets_crun_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )
    assert invoke.crun_can_work()


def test_crun_needs_cap_sys_resource_under_a_finite_hard_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (8 << 20, 8 << 20))
    with open("/proc/self/status") as status:
        bounding = next(int(line.split()[1], 16) for line in status if line.startswith("CapBnd:"))
    assert invoke.crun_can_work() is bool(bounding & (1 << invoke.CAP_SYS_RESOURCE))


@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
def test_the_default_is_runc_where_crun_cannot_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invoke, "crun_can_work", lambda: False)
    assert invoke.runtime_binary(None).endswith("/runc")


@pytest.mark.skipif(not shutil.which("crun"), reason="crun is not installed")
def test_the_default_is_crun_where_it_can_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invoke, "crun_can_work", lambda: True)
    assert invoke.runtime_binary(None).endswith("/crun")

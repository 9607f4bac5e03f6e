"""Hostile entries on the search path, with a real systemd's daemon-reload (issue 15 items 2,
3, 16).

One daemon-reload with every bad entry of the fault probe in /etc/podunit at once: a
FIFO and /dev/zero named *.yaml, a symlink loop, a link to /proc, a definition that
would shadow a vendor unit, and files in the per-user directory. Before the fixes the
reload hung 90 s (the FIFO) or the generator crashed (the loop) and every podunit unit
disappeared; the vendor's systemd-hostnamed.service was replaced; the user's file
became a root system service. Now the good unit loads, fast, and the manual run of
the generator names every bad entry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

P = "relgen-faults"
GOOD = f"containers:\n  {P}-good:\n    rootfs: /srv/good\n"
SHADOW = "containers:\n  systemd-hostnamed:\n    rootfs: /srv/evil\n"
USER_ONLY = f"containers:\n  {P}-user-only:\n    rootfs: /srv/user\n"
HIDDEN_USER = f"containers:\n  {P}-from-users:\n    rootfs: /srv/user\n"
HIDDEN_SYSTEM = f"containers:\n  {P}-from-system:\n    rootfs: /srv/system\n"
CLEANUP = (
    f"rm -rf /etc/podunit/{P}* /etc/podunit/users/0/{P}* /usr/local/share/podunit/{P}-hidden.yaml"
)


@pytest.fixture(scope="module")
def reloaded(sandbox: Sandbox, repo_root: object) -> Iterator[tuple[Sandbox, float]]:
    sandbox.write(f"/etc/podunit/{P}-good.yaml", GOOD)
    sandbox.write(f"/etc/podunit/{P}-shadow.yaml", SHADOW)
    sandbox.write(f"/etc/podunit/users/0/{P}-user-only.yaml", USER_ONLY)
    sandbox.write(f"/etc/podunit/users/0/{P}-hidden.yaml", HIDDEN_USER)
    sandbox.write(f"/usr/local/share/podunit/{P}-hidden.yaml", HIDDEN_SYSTEM)
    sandbox.sh(
        f"cd /etc/podunit && mkfifo {P}-fifo.yaml && ln -s /dev/zero {P}-zero.yaml && "
        f"ln -s {P}-b.yaml {P}-a.yaml && ln -s {P}-a.yaml {P}-b.yaml && ln -s /proc {P}-proc"
    )
    sandbox.run([f"{repo_root}/scripts/install-generator"])
    try:
        started = time.monotonic()
        sandbox.run(["systemctl", "daemon-reload"], timeout=120)
        yield sandbox, time.monotonic() - started
    finally:
        sandbox.sh(CLEANUP)
        sandbox.run([f"{repo_root}/scripts/install-generator", "--uninstall"])
        sandbox.run(["systemctl", "daemon-reload"])


def load_state(sandbox: Sandbox, unit: str) -> dict[str, str]:
    result = sandbox.run(["systemctl", "show", unit, "-p", "LoadState,FragmentPath"])
    return dict(line.partition("=")[::2] for line in result.stdout.decode().splitlines())


def test_daemon_reload_is_fast_and_the_good_unit_loads(reloaded: tuple[Sandbox, float]) -> None:
    sandbox, seconds = reloaded
    assert seconds < 15  # the FIFO made it 90 s, after which every podunit unit was gone
    assert load_state(sandbox, f"{P}-good.service") == {
        "LoadState": "loaded", "FragmentPath": f"/run/systemd/generator/{P}-good.service",
    }  # fmt: skip


def test_a_vendor_unit_is_not_replaced(reloaded: tuple[Sandbox, float]) -> None:
    sandbox, _ = reloaded
    state = load_state(sandbox, "systemd-hostnamed.service")
    assert state["LoadState"] == "loaded"
    assert state["FragmentPath"].endswith("/lib/systemd/system/systemd-hostnamed.service")


def test_the_users_directory_is_not_system_definitions(reloaded: tuple[Sandbox, float]) -> None:
    sandbox, _ = reloaded
    assert load_state(sandbox, f"{P}-user-only.service")["LoadState"] == "not-found"
    assert load_state(sandbox, f"{P}-from-users.service")["LoadState"] == "not-found"
    assert load_state(sandbox, f"{P}-from-system.service")["LoadState"] == "loaded"


def test_every_bad_entry_is_named_once(reloaded: tuple[Sandbox, float], repo_root: object) -> None:
    sandbox, _ = reloaded
    manual = sandbox.run([f"{repo_root}/generators/podunit-generator"], check=False, timeout=30)
    assert manual.returncode == 1
    ours = [
        line.partition("]: ")[2]
        for line in manual.stderr.decode().splitlines()
        if f"/etc/podunit/{P}" in line
    ]
    assert sorted(line.partition(": ")[0] for line in ours) == [
        f"/etc/podunit/{P}-a.yaml:1:1",
        f"/etc/podunit/{P}-b.yaml:1:1",
        f"/etc/podunit/{P}-fifo.yaml:1:1",
        f"/etc/podunit/{P}-proc",
        f"/etc/podunit/{P}-shadow.yaml:2:3",
        f"/etc/podunit/{P}-zero.yaml:1:1",
    ]

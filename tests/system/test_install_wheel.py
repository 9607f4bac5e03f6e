"""podunit installed from its wheel, without the checkout (issue 10 item 5).

The wheel is built from a copy of the source tree; its dependencies are repacked
from this test environment (tests/support/wheels.py: nothing is downloaded). In the
sandbox it is installed twice with `pip install --no-index`: into a fresh venv, and
into the system interpreter as a distribution package would be (/usr/local). Each
time `podunit install-generators` hooks that installation into systemd, a
`daemon-reload` runs the installed generator, and a unit is started and stopped.
Everything runs from / with no PYTHONPATH: the checkout (bound into the sandbox at
its own path) must appear in no launcher, unit or import path.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs
from tests.support import wheels
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

WHEELS = "/opt/relgen-wheels"
VENV = "/opt/relgen-venv"
ROOTFS = "/srv/relgen-wheel-root"
NAME = "relgen-wheel"
DEFINITION = f"/etc/podunit/{NAME}.yaml"
DEPENDENCIES = ("systemd-python", "pystemd", "psutil", "lxml", "PyYAML")


@pytest.fixture(scope="module")
def wheel_dir(sandbox: Sandbox, repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The wheels, copied into the sandbox."""
    work = tmp_path_factory.mktemp("wheels")
    built = work / "out"
    built.mkdir()
    wheels.build_podunit(wheels.copy_tree(repo_root, work / "src"), built)
    for name in wheels.requirement_closure("podunit")[1:]:
        wheels.repack(name, built)
    for wheel in built.iterdir():
        sandbox.write(f"{WHEELS}/{wheel.name}", wheel.read_bytes())
    busybox_rootfs(sandbox, ROOTFS)
    sandbox.write(
        DEFINITION,
        f"containers:\n  {NAME}:\n    rootfs: {ROOTFS}\n    command: [sleep, '600']\n"
        "    network: none\n    runtime: runc\n    stop_timeout: 2s\n",
    )
    return WHEELS


def outside(sandbox: Sandbox, script: str, **kwargs: object) -> str:
    """`script` from / with no PYTHONPATH (the checkout is bound in, but not used)."""
    result = sandbox.sh(f"cd / && unset PYTHONPATH && {script}", **kwargs)
    return result.stdout.decode()


def start_and_check(sandbox: Sandbox, podunit: str, checkout: Path) -> None:
    """daemon-reload with the installed generator; the unit runs the installed podunit."""
    sandbox.run(["systemctl", "daemon-reload"])
    show = sandbox.run(["systemctl", "show", f"{NAME}.service", "-p", "ExecStart,LoadState"])
    props = show.stdout.decode()
    assert "LoadState=loaded" in props
    assert f"argv[]={podunit} run --plan /run/systemd/generator/podunit/{NAME}.json {NAME} ;" in (
        props
    )
    assert str(checkout) not in props
    launcher = outside(sandbox, f"cat {shlex.quote(podunit)}")
    assert str(checkout) not in launcher
    sandbox.run(["systemctl", "start", f"{NAME}.service"], timeout=60)
    try:
        state = sandbox.run(["systemctl", "is-active", f"{NAME}.service"], check=False)
        assert state.stdout.decode().strip() == "active"
        listing = outside(sandbox, f"{shlex.quote(podunit)} ps")
        assert NAME in listing and "running" in listing
    finally:
        sandbox.run(["systemctl", "stop", f"{NAME}.service"], timeout=60, check=False)
    state = sandbox.run(["systemctl", "is-active", f"{NAME}.service"], check=False)
    assert state.stdout.decode().strip() in ("inactive", "failed")


@pytest.fixture
def cleanup(sandbox: Sandbox) -> Iterator[None]:
    yield
    units = " ".join(
        f"/usr/local/lib/systemd/{kind}/{path.name}"
        for path in (Path(__file__).parents[2] / "units").glob("*.*")
        for kind in ("system", "user")
    )
    sandbox.sh(
        f"rm -f /usr/local/lib/systemd/system-generators/podunit-generator "
        f"/usr/local/lib/systemd/user-generators/podunit-user-generator {units}; "
        f"systemctl reset-failed {NAME}.service 2>/dev/null; true"
    )


def test_a_venv_install_runs_units_without_the_checkout(
    sandbox: Sandbox, wheel_dir: str, repo_root: Path, cleanup: None
) -> None:
    try:
        # A venv without its own pip (ensurepip costs seconds): the system's pip installs
        # into it (`pip --python`), exactly as the venv's own pip would.
        outside(sandbox, f"python3 -m venv --without-pip {VENV}")
        outside(
            sandbox,
            f"python3 -m pip --python {VENV}/bin/python install -q --disable-pip-version-check "
            f"--no-compile --no-index --find-links {wheel_dir} podunit",
            timeout=300,
        )
        version = outside(sandbox, f"{VENV}/bin/podunit --version")
        assert version.startswith("podunit ")
        where = outside(sandbox, f"{VENV}/bin/python -c 'import toolkit; print(toolkit.__file__)'")
        assert where.startswith(f"{VENV}/lib/")
        installed = outside(sandbox, f"{VENV}/bin/podunit install-generators")
        assert f"installed {VENV}/lib/podunit/podunit" in installed
        assert f"{VENV}/share/doc/podunit/podunit.yaml.5.md" in outside(
            sandbox, f"ls {VENV}/share/doc/podunit/podunit.yaml.5.md"
        )
        page = f"{VENV}/share/man/man5/podunit.yaml.5"
        assert "podunit.yaml(5)" in outside(sandbox, f"MANWIDTH=80 man -l {page} | head -1")
        shipped = sorted(p.name for p in (repo_root / "units").glob("*.*"))
        for name in shipped:  # the wheel's units/, with the venv's launcher filled in
            for kind, flag in (("system", ""), ("user", " --user")):
                text = outside(sandbox, f"cat /usr/local/lib/systemd/{kind}/{name}")
                assert "@PODUNIT@" not in text and str(repo_root) not in text
                if name.endswith(".service"):
                    assert f"ExecStart={VENV}/lib/podunit/podunit{flag} " in text
        start_and_check(sandbox, f"{VENV}/lib/podunit/podunit", repo_root)
        for name in shipped:
            state = sandbox.run(["systemctl", "show", name, "-p", "LoadState"])
            assert state.stdout.decode().strip() == "LoadState=loaded"
        removed = outside(sandbox, f"{VENV}/bin/podunit install-generators --uninstall")
        assert "removed /usr/local/lib/systemd/system-generators/podunit-generator" in removed
    finally:
        sandbox.sh(f"rm -rf {VENV}")
        sandbox.run(["systemctl", "daemon-reload"])


def test_a_system_install_as_a_distribution_package(
    sandbox: Sandbox, wheel_dir: str, repo_root: Path, cleanup: None
) -> None:
    """The system interpreter's pip, as a package would install it: /usr/local here
    (Debian's scheme for pip), the units' podunit at /usr/local/lib/podunit/podunit."""
    pip = "/usr/bin/python3 -m pip"
    try:
        outside(
            sandbox,
            f"{pip} install -q --disable-pip-version-check --break-system-packages --no-compile "
            f"--no-index --find-links {wheel_dir} podunit",
            timeout=300,
        )
        assert outside(sandbox, "/usr/local/bin/podunit --version").startswith("podunit ")
        # where man finds it with no MANPATH: `man podunit.yaml` (Debian's /usr/local/man is
        # a link to /usr/local/share/man)
        assert outside(sandbox, 'readlink -f "$(man -w podunit.yaml)"').strip() == (
            "/usr/local/share/man/man5/podunit.yaml.5"
        )
        outside(sandbox, "/usr/local/bin/podunit install-generators")
        start_and_check(sandbox, "/usr/local/lib/podunit/podunit", repo_root)
        outside(sandbox, "/usr/local/bin/podunit install-generators --uninstall")
    finally:
        sandbox.sh(
            f"{pip} uninstall -y -q --break-system-packages podunit "
            f"{' '.join(DEPENDENCIES[:-1])} 2>/dev/null; rm -f /usr/local/lib/podunit/podunit; true"
        )
        sandbox.run(["systemctl", "daemon-reload"])

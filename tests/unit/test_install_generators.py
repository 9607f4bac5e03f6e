"""`podunit install-generators` (issue 10 item 5): launchers that start this installation.

Installed into a temporary prefix, the launchers are run as systemd runs them, from
another directory and with a PYTHONPATH that points elsewhere: the generator writes
units whose Exec lines run the installed podunit launcher, which works. The wheel
in a clean venv, without the checkout, is tests/system/test_install_wheel.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.cli import main as cli
from toolkit.errors import PodunitError
from toolkit.unitgen import install


def test_the_launchers_start_this_installation(tmp_path: Path) -> None:
    prefix, home = tmp_path / "prefix", tmp_path / "home"
    written = install.install(str(prefix), home=str(home))
    podunit = f"{home}/lib/podunit/podunit"
    assert written[:3] == [
        podunit,
        f"{prefix}/lib/systemd/system-generators/podunit-generator",
        f"{prefix}/lib/systemd/user-generators/podunit-user-generator",
    ]
    for path in written[:3]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
        assert Path(path).read_text().startswith(f"#!{os.path.abspath(sys.executable)} -IS\n")
    defs, out = tmp_path / "defs", tmp_path / "out"
    defs.mkdir()
    out.mkdir()
    (defs / "web.yaml").write_text("containers:\n  web:\n    rootfs: /srv\n")
    env = {
        "PATH": "/usr/bin:/bin", "PODUNIT_DEFINITION_DIRS": str(defs),
        "PODUNIT_RUN_DIR": str(tmp_path / "run"), "PYTHONPATH": str(tmp_path / "nothing"),
        "PODUNIT_KMSG": str(tmp_path / "no" / "kmsg"),  # messages to stderr
    }  # fmt: skip
    result = subprocess.run(
        [f"{prefix}/lib/systemd/system-generators/podunit-generator", str(out)],
        env=env, cwd="/", capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    unit = (out / "web.service").read_text()
    assert f"ExecStart={podunit} run --plan {out}/podunit/web.json web\n" in unit
    assert (out / "multi-user.target.wants" / "web.service").is_symlink()
    (out / "u").mkdir()
    user = subprocess.run(
        [f"{prefix}/lib/systemd/user-generators/podunit-user-generator", str(out / "u")],
        env={**env, "XDG_RUNTIME_DIR": str(tmp_path)}, cwd="/", capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert user.returncode == 0, user.stderr
    assert f"ExecStart={podunit} --user run" in (out / "u" / "web.service").read_text()
    assert (out / "u" / "default.target.wants" / "web.service").is_symlink()
    version = subprocess.run(
        [podunit, "--version"], env=env, cwd="/", capture_output=True, text=True, check=False
    )
    assert version.stdout.startswith("podunit ") and version.returncode == 0
    assert install.uninstall(str(prefix), home=str(home)) == written
    assert not Path(podunit).exists()


def test_shipped_units_get_the_launcher_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unit = tmp_path / "podunit-x.service"
    unit.write_text("[Service]\nExecStart=@PODUNIT@ auto-update\n")
    monkeypatch.setattr(install, "shipped_units", lambda: {unit.name: str(unit)})
    files = install.plan("/opt/p", home="/opt/venv")
    assert files["/opt/p/lib/systemd/system/podunit-x.service"] == (
        "[Service]\nExecStart=/opt/venv/lib/podunit/podunit auto-update\n"
    )
    assert files["/opt/p/lib/systemd/user/podunit-x.service"] == (
        "[Service]\nExecStart=/opt/venv/lib/podunit/podunit --user auto-update\n"
    )
    root = tmp_path / "root"
    install.install("/usr", root=str(root), home="/usr")  # as a packager would: below a root
    installed = root / "usr/lib/systemd/system/podunit-x.service"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o644
    assert "ExecStart=/usr/lib/podunit/podunit auto-update" in installed.read_text()
    user_copy = root / "usr/lib/systemd/user/podunit-x.service"
    assert stat.S_IMODE(user_copy.stat().st_mode) == 0o644
    assert os.access(root / "usr/lib/podunit/podunit", os.X_OK)


def test_the_checkouts_units_are_the_shipped_ones(repo_root: Path) -> None:
    units = repo_root / "units"
    expected = sorted(p.name for p in units.iterdir()) if units.is_dir() else []
    assert sorted(install.shipped_units()) == [
        name for name in expected if name.endswith(install.UNIT_SUFFIXES)
    ]


def test_relative_prefix_and_unwritable_targets_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PodunitError, match="must be an absolute path"):
        install.plan("relative")
    (tmp_path / "lib").write_text("a file where a directory must be")
    assert cli.main(["install-generators", "--root", str(tmp_path), "--prefix", "/"]) == 125
    err = capsys.readouterr().err
    assert err.startswith(f"podunit: cannot write {tmp_path}/")
    assert "hint: run as root" in err

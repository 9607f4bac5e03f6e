"""A container must not shadow a unit installed outside the generator (issue 15 item 16).

Before: a definition named `systemd-journald` (or with `install: {alias: [ssh]}`)
was generated into /run/systemd/generator, where systemd prefers it to the vendor's
/usr/lib/systemd/system unit: the vendor unit was replaced without a word.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolkit.cli import main as cli
from toolkit.definitions.model import Container, Install, SocketSpec
from toolkit.errors import Location
from toolkit.unitgen import shadow
from toolkit.unitgen.generator import generate_cached
from toolkit.unitgen.render import render_all

JOURNALD = "/lib/systemd/system/systemd-journald.service"
SOURCE = Location("/etc/podunit/x.yaml", 2, 3)


@pytest.mark.skipif(not os.path.exists(JOURNALD), reason=f"{JOURNALD} is not installed here")
def test_validate_refuses_a_container_named_like_an_installed_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.yaml").write_text(
        "containers:\n  systemd-journald:\n    rootfs: /srv\n  fine:\n    rootfs: /srv\n"
    )
    assert cli.main(["validate", str(tmp_path / "x.yaml")]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(
        f"{tmp_path}/x.yaml:2:3: container 'systemd-journald': systemd-journald.service "
        "already exists as "
    )
    assert line.endswith(
        "systemd-journald.service, a unit that is not podunit's: the generated unit would "
        "silently replace it or be hidden by it (hint: rename the container)"
    )


def test_installed_units_skip_masks_generator_links_and_directories(tmp_path: Path) -> None:
    high, low = tmp_path / "etc", tmp_path / "usr"
    for directory in (high, low):
        directory.mkdir()
    (low / "ssh.service").write_text("[Service]\n")
    (low / "sshd.service").symlink_to("ssh.service")  # a vendor alias counts
    (low / "getty@.service").write_text("")
    (high / "ssh.service").write_text("")  # the admin's copy: first directory wins
    (high / "masked.service").symlink_to("/dev/null")
    (high / "linked.service").symlink_to("/run/systemd/generator/linked.service")
    (high / "web.service.d").mkdir()  # drop-ins of a podunit unit are fine
    (high / "multi-user.target.wants").mkdir()
    (tmp_path / "same").symlink_to(low)  # /lib -> /usr/lib: listed once
    installed = shadow.InstalledUnits([str(high), str(low), str(tmp_path / "same"), "/nowhere"])
    assert installed.dirs == [str(high), str(low)]
    assert dict(installed.names()) == {
        "ssh.service": f"{high}/ssh.service",
        "sshd.service": f"{low}/sshd.service",
        "getty@.service": f"{low}/getty@.service",
    }
    assert [item[0] for item in installed.inputs] == ["u", "u", "-"]


def test_unit_files_and_aliases_are_checked_other_links_are_not() -> None:
    installed = {"ssh.service": "/usr/lib/systemd/system/ssh.service",
                 "echo.socket": "/etc/systemd/system/echo.socket",
                 "multi-user.target": "/usr/lib/systemd/system/multi-user.target"}  # fmt: skip
    containers = {
        "ssh": Container(name="ssh", source=SOURCE, rootfs="/srv"),
        "alias": Container(
            name="alias", source=SOURCE, rootfs="/srv", install=Install(alias=("ssh",))
        ),
        "echo": Container(
            name="echo", source=SOURCE, rootfs="/srv", sockets=(SocketSpec(listen="127.0.0.1:7"),)
        ),
        "web": Container(name="web", source=SOURCE, rootfs="/srv"),  # multi-user.target.wants/
    }
    rendered, errors = render_all(containers, podunit="/usr/bin/podunit", installed=installed)
    assert sorted(rendered) == ["web"]
    assert sorted(error.message.split(":")[0] for error in errors) == [
        "container 'alias'", "container 'echo'", "container 'ssh'",
    ]  # fmt: skip
    assert any("echo.socket already exists as /etc/systemd/system/echo.socket" in e.message
               for e in errors)  # fmt: skip


def test_a_newly_installed_unit_invalidates_the_generator_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units, defs = tmp_path / "units", tmp_path / "defs"
    units.mkdir()
    defs.mkdir()
    (defs / "web.yaml").write_text("containers:\n  web:\n    rootfs: /srv\n")
    monkeypatch.setattr(shadow, "SYSTEM_UNIT_DIRS", (str(units),))
    environ = {"PODUNIT_DEFINITION_DIRS": str(defs), "PODUNIT_RUN_DIR": str(tmp_path / "run")}
    # Old enough not to be "racy" for the cache (it trusts inputs older than 2 s).
    for path in (defs, defs / "web.yaml", units):
        os.utime(path, (1, 1))

    def run() -> tuple[list[str], list[str]]:
        output = generate_cached(
            user=False, podunit="/usr/bin/podunit", environ=environ, output_dir=str(tmp_path / "o")
        )
        return [name for files, _, _ in output[0] for name in files], output[1]

    assert run() == (["web.service"], [])
    assert run() == (["web.service"], [])  # from the cache
    (units / "web.service").write_text("[Service]\n")
    names, messages = run()
    assert names == [] and len(messages) == 1
    assert f"web.service already exists as {units}/web.service" in messages[0]


def test_the_user_managers_unit_directories() -> None:
    """As `systemd-analyze unit-paths --user` lists them (without control, transient and
    generator directories)."""
    environ = {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert shadow.unit_dirs(user=True, environ=environ) == [
        "/home/u/.config/systemd/user", "/etc/xdg/systemd/user", "/etc/systemd/user",
        "/run/user/1000/systemd/user", "/run/systemd/user", "/home/u/.local/share/systemd/user",
        "/usr/local/share/systemd/user", "/usr/share/systemd/user",
        "/usr/local/lib/systemd/user", "/usr/lib/systemd/user",
    ]  # fmt: skip
    custom = {"HOME": "/h", "XDG_CONFIG_HOME": "/c", "XDG_DATA_HOME": "/d"}
    dirs = shadow.unit_dirs(user=True, environ=custom)
    assert dirs[0] == "/c/systemd/user" and "/d/systemd/user" in dirs
    assert shadow.unit_dirs(user=False) == list(shadow.SYSTEM_UNIT_DIRS)

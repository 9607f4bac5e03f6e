"""The real-systemd sandbox itself (toolkit/sandbox.py, notes/real-systemd-in-tests.md)."""

from __future__ import annotations

import pytest

from toolkit.errors import CommandFailed
from toolkit.sandbox import VENV_PYTHON, Sandbox

pytestmark = pytest.mark.system


def test_boots_to_running(sandbox: Sandbox) -> None:
    state = sandbox.run(["systemctl", "is-system-running"], check=False).stdout.decode().strip()
    assert state == "running"
    assert sandbox.boot_state == "running"
    assert sandbox.failed_units == []


def test_systemd_run_propagates_exit_status(sandbox: Sandbox) -> None:
    result = sandbox.run(["systemd-run", "--wait", "--quiet", "sh", "-c", "exit 7"], check=False)
    assert result.returncode == 7
    ok = sandbox.run(["systemd-run", "--wait", "--quiet", "--pipe", "echo", "inside"])
    assert ok.stdout == b"inside\n"


def test_failing_command_raises_command_failed_naming_it(sandbox: Sandbox) -> None:
    with pytest.raises(CommandFailed) as caught:
        sandbox.sh("echo broken >&2; exit 4")
    assert caught.value.returncode == 4
    assert caught.value.argv[0] == "sh"
    assert "broken" in caught.value.stderr


def test_pystemd_reads_a_unit_property_over_dbus(sandbox: Sandbox) -> None:
    script = (
        "from pystemd.systemd1 import Unit\n"
        "unit = Unit(b'systemd-journald.service'); unit.load()\n"
        "print(unit.Unit.ActiveState.decode())\n"
    )
    result = sandbox.run([str(VENV_PYTHON), "-c", script])
    assert result.stdout == b"active\n"


def test_write_then_read_a_file_inside(sandbox: Sandbox) -> None:
    path = "/etc/podunit-sandbox-test/nested/file.yaml"
    try:
        sandbox.write(path, "name: web\n", mode=0o600)
        assert sandbox.read(path) == b"name: web\n"
        mode = sandbox.run(["stat", "-c", "%a", path]).stdout.strip()
        assert mode == b"600"
        sandbox.write(path, b"\x00binary")
        assert sandbox.read(path) == b"\x00binary"
    finally:
        sandbox.run(["rm", "-rf", "/etc/podunit-sandbox-test"])


def test_read_of_a_missing_file_is_file_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(FileNotFoundError):
        sandbox.read("/etc/podunit-sandbox-test/none")


def test_environment_is_clean_and_extendable(sandbox: Sandbox) -> None:
    env = sandbox.run(["env"], env={"EXTRA": "1"}).stdout.decode().splitlines()
    names = {line.split("=", 1)[0] for line in env}
    assert names == {"PATH", "LANG", "HOME", "SYSTEMD_PAGER", "SYSTEMD_COLORS", "EXTRA"}

"""Defects found while reading the runtime half (issue 10 item 6), each reproduced first.

- `--log-level` was parsed and never used, though an error hint tells users to pass it;
- `podunit --version` did not exist;
- `cleanup` showed as `==SUPPRESS==` in `podunit --help`;
- `checkpoint` ran the runtime with NOTIFY_SOCKET and LISTEN_* in its environment;
- exec's `-u USER` read `options["bundle_dir"]`, which nothing ever wrote.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import __version__, proc
from toolkit.cli import main as cli
from toolkit.runtime import checkpoint
from toolkit.runtime import exec as exec_sessions
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import ContainerRecord
from toolkit.storage.state import StateStore


@pytest.fixture(autouse=True)
def _reset_log_level() -> None:
    proc.set_log_level("warning")


def podunit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_version() -> None:
    result = podunit("--version")
    assert (result.returncode, result.stdout) == (0, f"podunit {__version__}\n")


def test_help_lists_no_suppressed_verb() -> None:
    result = podunit("--help")
    assert result.returncode == 0
    assert "SUPPRESS" not in result.stdout and "cleanup" not in result.stdout
    assert "install-generators" in result.stdout
    assert podunit("cleanup", "--help").returncode == 0  # still there for conmon


def test_debug_logs_every_external_command(capfd: pytest.CaptureFixture[str]) -> None:
    proc.run(["true", "it's", "a b"])
    assert capfd.readouterr().err == ""
    proc.set_log_level("debug")
    proc.run(["true", "it's", "a b"])
    proc.spawn(["true", "x"]).wait()
    err = capfd.readouterr().err
    true = proc.which("true")
    assert err == f"podunit: + {true} 'it'\"'\"'s' 'a b'\npodunit: + {true} x\n"


SEEN_LEVELS: list[str] = []


def _record_level(args: object) -> int:
    SEEN_LEVELS.append(proc.log_level())
    return 0


def test_the_log_level_option_reaches_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.HANDLERS, "ps", f"{__name__}:_record_level")
    SEEN_LEVELS.clear()
    assert cli.main(["--log-level", "debug", "ps"]) == 0
    assert SEEN_LEVELS == ["debug"]
    with pytest.raises(ValueError):
        proc.set_log_level("loud")


def test_checkpoint_runs_the_runtime_without_notify_or_activation_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake runtime records its environment; CRIU itself cannot run on this kernel
    (README, "Tests"), so only `criu check` and the status refresh are skipped."""
    runtime = tmp_path / "runtime"
    runtime.write_text(f"#!/bin/sh\nenv > {tmp_path}/env\n")
    runtime.chmod(0o755)
    paths = RuntimePaths.for_mode(
        False, {"PODUNIT_STATE_DIR": str(tmp_path / "s"), "PODUNIT_RUN_DIR": str(tmp_path / "r")}
    )
    record = ContainerRecord(
        id="c" * 64, name="web", runtime=str(runtime), status="running", created_at=0.0,
        spec={},
    )  # fmt: skip
    monkeypatch.setattr(checkpoint, "require_criu", lambda: None)
    monkeypatch.setattr(checkpoint, "sync_status", lambda store, record: record)
    for name, value in (("NOTIFY_SOCKET", "/run/x"), ("LISTEN_FDS", "1"), ("LISTEN_PID", "1"),
                        ("LISTEN_FDNAMES", "web"), ("KEEP_ME", "yes")):  # fmt: skip
        monkeypatch.setenv(name, value)
    store = StateStore(paths)
    try:
        checkpoint.checkpoint(store, record, export=None, leave_running=True)
    finally:
        store.close()
    names = {line.partition("=")[0] for line in (tmp_path / "env").read_text().splitlines()}
    assert "KEEP_ME" in names
    assert not names & {"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}


def test_exec_user_of_a_relative_root_is_read_in_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "etc").mkdir(parents=True)
    (bundle / "rootfs" / "etc" / "passwd").write_text("app:x:1000:1001::/home/app:/bin/sh\n")
    (bundle / "rootfs" / "etc" / "group").write_text("app:x:1001:\n")
    record = ContainerRecord(
        id="c" * 64, name="web", runtime="runc", status="running", created_at=0.0,
        spec={"root": {"path": "rootfs"}},
    )  # fmt: skip
    user = exec_sessions._resolve_exec_user(record, "app", str(bundle))
    assert user is not None and (user.uid, user.gid) == (1000, 1001)

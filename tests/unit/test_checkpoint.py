"""Pure parts of checkpoint/restore: CRIU's complaint, the runtime's command line."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from toolkit.runtime.checkpoint import (
    CheckpointError,
    checkpoint_argv,
    criu_problem,
    import_checkpoint,
)
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import ContainerOptions, ContainerRecord
from toolkit.storage.state import StateStore

CRIU_ON_NEW_KERNEL = """\
Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
Error (criu/crtools.c:260): Could not initialize kernel features detection.
"""


def test_criu_problem_names_the_vdso() -> None:
    assert criu_problem(CRIU_ON_NEW_KERNEL) == "vdso: Unexpected rt vDSO area bounds"


def test_criu_problem_falls_back_to_last_line() -> None:
    assert criu_problem("Warn: x\nError: no ptrace\n") == "Error: no ptrace"
    assert criu_problem("") == "criu check failed"


def _record(runtime_args: tuple[str, ...] = ()) -> ContainerRecord:
    return ContainerRecord(
        id="c" * 64,
        name="web",
        runtime="/usr/sbin/runc",
        status="running",
        created_at=0.0,
        spec={},
        options=ContainerOptions(runtime_args=runtime_args),
    )


def test_checkpoint_argv() -> None:
    argv = checkpoint_argv(
        _record(runtime_args=("--root", "/run/x")),
        Path("/img"),
        Path("/work"),
        leave_running=True,
    )
    assert argv == [
        "/usr/sbin/runc",
        "--root",
        "/run/x",
        "checkpoint",
        "--image-path",
        "/img",
        "--work-path",
        "/work",
        "--leave-running",
        "c" * 64,
    ]
    assert "--leave-running" not in checkpoint_argv(
        _record(), Path("/img"), Path("/work"), leave_running=False
    )


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    paths = RuntimePaths.for_mode(
        False, {"PODUNIT_STATE_DIR": str(tmp_path / "s"), "PODUNIT_RUN_DIR": str(tmp_path / "r")}
    )
    return StateStore(paths)


def test_import_unpacks_an_exported_archive(store: StateStore, tmp_path: Path) -> None:
    source = tmp_path / "image"
    source.mkdir()
    (source / "inventory.img").write_bytes(b"criu")
    archive = tmp_path / "cp.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=".")
    image_dir = import_checkpoint(store, _record(), archive)
    assert (image_dir / "inventory.img").read_bytes() == b"criu"


def test_import_of_missing_or_garbage_archive(store: StateStore, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        import_checkpoint(store, _record(), tmp_path / "missing.tar")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar")
    with pytest.raises(CheckpointError, match="cannot read checkpoint archive"):
        import_checkpoint(store, _record(), garbage)


def test_import_refuses_unsafe_entries(store: StateStore, tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc"
        tar.addfile(link)
    with pytest.raises(CheckpointError, match="unsafe entry 'escape'"):
        import_checkpoint(store, _record(), archive)

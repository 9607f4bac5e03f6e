"""`podunit checkpoint` and `restore` with CRIU (spec §4; runc-checkpoint(8), runc-restore(8)).

A checkpoint is written by `RUNTIME checkpoint --image-path DIR --work-path DIR`
into `<state_dir>/checkpoints/<container id>/` (it survives reboots, unlike the
bundle); `--export FILE` also packs it into a tar archive, `--import FILE`
unpacks one before restoring. Restoring runs the runtime's `restore` through
conmon (`conmon --restore DIR`, `toolkit.runtime.lifecycle.restore_container`).

CRIU must work on the machine: `criu check` is run first, and its failure is
reported with CRIU's own reason (on kernels newer than the installed CRIU knows,
typically "vdso: Failed to fill self vdso symtable").
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

from toolkit import proc
from toolkit.errors import CommandFailed, InvalidState, PodunitError
from toolkit.runtime.status import sync_status
from toolkit.storage.records import RUNNING, ContainerRecord
from toolkit.storage.state import StateStore

CHECKPOINT_TIMEOUT_SECONDS = 300.0


class CheckpointError(PodunitError):
    """CRIU is unusable here, or checkpointing/restoring failed."""


def criu_problem(stderr: str) -> str:
    """The most telling line of `criu check`'s complaint."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "Failed to fill self vdso" in line or "Unexpected rt vDSO" in line:
            return line.split(": ", 1)[-1]
    return lines[-1] if lines else "criu check failed"


def require_criu() -> None:
    """Raise CheckpointError naming why CRIU cannot work on this machine (`criu check`)."""
    try:
        proc.run(["criu", "check"], timeout=60)
    except CommandFailed as error:
        raise CheckpointError(
            f"CRIU cannot checkpoint on this machine: {criu_problem(error.stderr)}",
            hint="criu check fails here; a CRIU release that supports this kernel is needed",
        ) from None


def checkpoint_dir(store: StateStore, container_id: str) -> Path:
    return Path(store.paths.state_dir, "checkpoints", container_id)


def checkpoint_argv(
    record: ContainerRecord, image_dir: Path, work_dir: Path, *, leave_running: bool
) -> list[str]:
    """The runtime's checkpoint command (runc and crun take the same options)."""
    argv = [record.runtime, *record.options.runtime_args, "checkpoint"]
    argv += ["--image-path", str(image_dir), "--work-path", str(work_dir)]
    if leave_running:
        argv.append("--leave-running")
    return [*argv, record.id]


def runtime_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The runtime's environment: without NOTIFY_SOCKET and LISTEN_* (as every other
    runtime call, toolkit.runtime.invoke): `podunit checkpoint` run from a unit (or a
    shell inside one) must not hand the service's notify socket or fds to the runtime."""
    from toolkit.systemd import activation

    return activation.environment_for_conmon(environ)


def checkpoint(
    store: StateStore, record: ContainerRecord, *, export: Path | None, leave_running: bool
) -> Path:
    """Checkpoint a running container; returns the image directory (or the export archive)."""
    record = sync_status(store, record)
    if record.status != RUNNING:
        raise InvalidState(f"container {record.name} is {record.status}: only running ones")
    require_criu()
    image_dir = checkpoint_dir(store, record.id)
    shutil.rmtree(image_dir, ignore_errors=True)
    work_dir = image_dir.with_name(f"{record.id}.work")
    image_dir.mkdir(mode=0o700, parents=True)
    work_dir.mkdir(mode=0o700, exist_ok=True)
    try:
        proc.run(
            checkpoint_argv(record, image_dir, work_dir, leave_running=leave_running),
            timeout=CHECKPOINT_TIMEOUT_SECONDS,
            env=runtime_environment(),
        )
    except CommandFailed as error:
        shutil.rmtree(image_dir, ignore_errors=True)
        raise CheckpointError(
            f"checkpoint of {record.name} failed: {error}",
            hint=f"CRIU's log: {work_dir}/dump.log",
        ) from None
    if export is None:
        return image_dir
    with tarfile.open(export, "w:gz") as archive:
        archive.add(image_dir, arcname=".")
    return export


def safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Regular files and directories inside the target only (no links, devices, `..`)."""
    members = tar.getmembers()
    for member in members:
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise CheckpointError(
                f"checkpoint archive {archive} has an unsafe entry {member.name!r}"
            )
    return members


def import_checkpoint(store: StateStore, record: ContainerRecord, archive: Path) -> Path:
    """Unpack an exported checkpoint (`restore --import FILE`) into the container's image dir."""
    if not archive.is_file():
        raise CheckpointError(f"checkpoint archive {archive} does not exist")
    image_dir = checkpoint_dir(store, record.id)
    shutil.rmtree(image_dir, ignore_errors=True)
    image_dir.mkdir(mode=0o700, parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(image_dir, members=safe_members(tar, archive))
    except (tarfile.TarError, OSError) as error:
        shutil.rmtree(image_dir, ignore_errors=True)
        raise CheckpointError(f"cannot read checkpoint archive {archive}: {error}") from None
    return image_dir


def restore(store: StateStore, record: ContainerRecord, *, import_file: Path | None) -> Path:
    """Check that a restore can happen and return the checkpoint image to restore from.

    The restore itself is `toolkit.runtime.lifecycle.restore_container` (`conmon --restore`).
    """
    record = sync_status(store, record)
    if record.alive:
        raise InvalidState(f"container {record.name} is {record.status}: stop it before restoring")
    require_criu()
    if import_file is not None:
        return import_checkpoint(store, record, import_file)
    image_dir = checkpoint_dir(store, record.id)
    if not (image_dir / "inventory.img").is_file():
        raise CheckpointError(
            f"container {record.name} has no checkpoint",
            hint=f"podunit checkpoint {record.name} first, or restore --import FILE",
        )
    return image_dir

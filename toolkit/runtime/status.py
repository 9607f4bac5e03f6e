"""Status and exit bookkeeping: conmon's exit files, a container's status, its release.

Spec §3.1 and §4 (exit statuses). Status is derived from conmon's exit files and the
runtime's `state`: an exit file means the container exited (code, time, `oom` marker);
no exit file and a dead conmon means a runaway: the container is killed and -1
recorded. `finalize` records the exit once and releases what the run held (runtime
state, bundle, image root, cgroups); `forget` removes the row, the layer and the log.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

from toolkit.errors import CommandFailed, ContainerNotFound, PodunitError
from toolkit.fs import read_text, remove_tree, unlink_if_present
from toolkit.proc import same_process_alive, wait_until_gone
from toolkit.runtime import recovery
from toolkit.runtime.invoke import oci_runtime
from toolkit.runtime.placement import cgroups_left, stored_placement
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import EXITED, ContainerRecord
from toolkit.storage.state import StateStore

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    pass


KILL_WAIT_SECONDS = 5.0


POLL_SECONDS = 0.05


RUNAWAY_REASON = "conmon exited without writing an exit file; the container was killed"


def read_exit_file(path: str | os.PathLike[str]) -> tuple[int, float] | None:
    """conmon's exit file: (status, mtime), None if missing or still being written."""
    try:
        text = read_text(path).strip()
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    if not text.lstrip("-").isdigit():
        return None
    return int(text), mtime


def _exit_file_of(store: StateStore, record: ContainerRecord) -> tuple[int, float] | None:
    return read_exit_file(store.paths.exit_file(record.id)) or read_exit_file(
        os.path.join(store.paths.bundle_dir(record.id), "exit")
    )


def status_if_gone(store: StateStore, record: ContainerRecord) -> int | None:
    """The container's exit status if its conmon is no longer alive, else None.

    For `podunit run` in unit mode, after systemd acknowledged `MAINPID=` (a barrier):
    a conmon alive now was alive when systemd read it, so systemd watches it; a conmon
    gone now may have been reaped before (systemd then refused MAINPID= and kept podunit
    as the main process), so podunit must end with the container's status itself. conmon
    writes its exit file before it exits; without one (conmon killed) the status is 1.
    """
    if same_process_alive(record.conmon_pid, record.conmon_start_time):
        return None
    exited = _exit_file_of(store, record)
    return exited[0] if exited is not None and 0 <= exited[0] <= 255 else 1


def sync_status(
    store: StateStore, record: ContainerRecord, *, reload: bool = True
) -> ContainerRecord:
    """Bring `record` up to date from conmon's exit files, conmon's liveness and the runtime.

    `reload=False` for a record just read (ps: no second query and JSON decoding per row).
    """
    if reload:
        record = store.reload(record)
    if record.conmon_pid is None and recovery.half_made(record):
        return _finish_half_made(store, record)
    if not record.alive or record.conmon_pid is None:
        return record
    exited = _exit_file_of(store, record)
    if exited is not None:
        return finalize(store, record)
    if same_process_alive(record.conmon_pid, record.conmon_start_time):
        return record
    # conmon is gone: it may have written the exit file meanwhile.
    if _exit_file_of(store, record) is not None:
        return finalize(store, record)
    return finalize(store, record, runaway=True)


def _finish_half_made(store: StateStore, record: ContainerRecord) -> ContainerRecord:
    """A container whose creator died before conmon's pid was recorded (toolkit.runtime.
    recovery): its processes are killed, it is recorded exited (-1) and released."""
    with store.container_lock(record.id):
        record = store.reload(record)
        if record.conmon_pid is not None or not recovery.half_made(record):
            return record
        recovery.kill_leftovers(record)
        record = store.record_exit(
            record, -1, reason=recovery.INTERRUPTED_REASON, finished_at=time.time()
        )
        release(store, record)
        if record.options.auto_remove:
            forget(store, record)
    return record


def finalize(
    store: StateStore, record: ContainerRecord, *, runaway: bool = False
) -> ContainerRecord:
    """Record the exit and release everything of an exited container (conmon's exit command).

    With `runaway` (conmon died without an exit file) the container is killed first
    and -1 recorded with the reason. Idempotent and safe to race with itself.
    """
    with store.container_lock(record.id):
        record = store.reload(record)
        if record.status != EXITED:
            exited = _exit_file_of(store, record)
            if runaway and exited is None:
                _kill_runaway(record)
                code, finished, reason = -1, time.time(), RUNAWAY_REASON
            elif exited is None:
                return record
            else:
                (code, finished), reason = exited, None
            oom = os.path.exists(os.path.join(store.paths.bundle_dir(record.id), "oom"))
            record = store.record_exit(record, code, reason=reason, finished_at=finished, oom=oom)
        release(store, record)
        if record.options.auto_remove:
            forget(store, record)
            if record.options.volumes:  # `run --rm`: its anonymous volumes too (Docker)
                from toolkit.storage.volumes import VolumeStore

                VolumeStore(store).remove_anonymous_of(record.name)
    return record


def _kill_runaway(record: ContainerRecord) -> None:
    runtime = oci_runtime()
    state = runtime.state(record)
    if state is not None and state.get("status") in ("running", "paused", "created"):
        runtime.kill(record, signal.SIGKILL, all_processes=True)
        if state.get("status") == "paused":
            with contextlib.suppress(CommandFailed):
                runtime.resume(record)
        pid = state.get("pid") or record.pid
        if isinstance(pid, int) and pid > 0:
            start = record.pid_start_time if pid == record.pid else None
            wait_until_gone(pid, start, KILL_WAIT_SECONDS)


def disconnect(store: StateStore, record: ContainerRecord) -> None:
    """Tear down the container's networks (toolkit.network.netavark.disconnect); a failure
    is reported on stderr (the journal, under a unit) and the release goes on."""
    if not record.options.network:
        return
    from toolkit.network import netavark

    try:
        netavark.disconnect(store, record)
    except PodunitError as error:
        print(f"podunit: warning: {error}", file=sys.stderr)


def release(store: StateStore, record: ContainerRecord) -> None:
    """Everything of the run but the state row and the log: runtime state, bundle, cgroups.

    The cgroups go last, and not at all from inside the conmon scope they would
    remove (conmon's exit command runs there): systemd drops an empty scope itself.
    """
    if record.options.released:
        return
    oci_runtime().delete(record)
    disconnect(store, record)
    exec_dir = store.paths.exec_dir(record.id)
    if os.path.isdir(exec_dir):  # its sessions' attach links live outside the bundle
        for session_id in os.listdir(exec_dir):
            remove_tree_or_link(store.paths.attach_socket_dir(session_id))
    unmount_image_root(store.paths, record.id, record.options.image_rootfs)
    remove_tree(store.paths.bundle_dir(record.id))
    remove_tree_or_link(store.paths.attach_socket_dir(record.id))  # conmon's attach symlink
    unlink_if_present(store.paths.exit_file(record.id))
    pidfile = store.paths.unit_pidfile(record.name)
    with contextlib.suppress(OSError):
        if read_text(pidfile).strip() == str(record.conmon_pid):
            os.unlink(pidfile)
    store.update(record, options=record.options._replace(released=True))
    if not cgroups_left(record.options.cgroup_placement):
        return
    from toolkit.systemd import cgroups

    placement = stored_placement(record)
    own_cgroup = read_text("/proc/self/cgroup")
    if placement.conmon_scope is None or f"/{placement.conmon_scope}" not in own_cgroup:
        with contextlib.suppress(Exception):
            cgroups.cleanup_cgroups(placement)


def forget(store: StateStore, record: ContainerRecord) -> None:
    """Remove the row (the exit code stays), the layer, the log and the lock file.

    Called with the container lock held; a process still waiting on the unlinked
    lock file finds the row gone when it gets the lock.
    """
    store.remove(record)
    drop_image_layer(store.paths, record.id, record.options.image_rootfs)
    unlink_if_present(store.paths.lock_file(record.id))
    if record.options.log_path:
        unlink_if_present(record.options.log_path)


def wait_for_exit(
    store: StateStore, record: ContainerRecord, timeout: float | None = None
) -> ContainerRecord:
    """Block (without any lock) until the container exited or `timeout` passed; sync status.

    Sleeps on a pidfd of conmon (it exits right after writing the exit file), waking
    at least every half second to look for the exit file, and looks again at once
    when conmon is gone; only without a pidfd (none, or conmon already gone) it polls.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = None
    if record.conmon_pid:
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(record.conmon_pid)
        if pidfd is not None and not same_process_alive(
            record.conmon_pid, record.conmon_start_time
        ):  # opened first, checked second: never a reused pid's
            os.close(pidfd)
            pidfd = None
    try:
        while True:
            try:
                record = sync_status(store, record)
            except ContainerNotFound:  # removed meanwhile (--rm): its exit code remains
                recorded = store.exit_code(record.id)
                code, reason = recorded if recorded is not None else (None, None)
                return record._replace(status=EXITED, exit_code=code, exit_reason=reason)
            if not record.alive:
                return record
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return record
            step = 0.5 if remaining is None else min(0.5, remaining)
            if pidfd is None:
                time.sleep(min(step, POLL_SECONDS))  # no conmon to wait on: poll
            elif select.select([pidfd], [], [], step)[0]:
                os.close(pidfd)  # conmon exited: its exit file is written, look at once
                pidfd = None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def unmount_image_root(paths: RuntimePaths, container_id: str, image_rootfs: str | None) -> None:
    """Unmount an image container's root (the overlay of `image_rootfs` and its layer)."""
    if image_rootfs:
        from toolkit.storage import images

        with contextlib.suppress(PodunitError):
            images.release_container_rootfs(paths.rootfs_mount(container_id))
        with contextlib.suppress(OSError):
            os.rmdir(paths.rootfs_mount(container_id))


def drop_image_layer(paths: RuntimePaths, container_id: str, image_rootfs: str | None) -> None:
    """Unmount and delete an image container's writable layer (on `rm`)."""
    if image_rootfs:
        unmount_image_root(paths, container_id, image_rootfs)
        remove_tree(paths.image_layer(container_id))


def remove_tree_or_link(path: str) -> None:
    """Remove a directory tree, or just the symlink if `path` is one (rmtree refuses those)."""
    if os.path.islink(path):
        unlink_if_present(path)
    else:
        remove_tree(path)

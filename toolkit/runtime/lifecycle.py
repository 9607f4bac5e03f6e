"""The lifecycle verbs: create, start, stop, kill, rm, pause, wait, describe.

Spec §4; modelled on libpod's container_api.go. Each verb is a library call on a
`StateStore` and a `ContainerRecord`; `toolkit.cli.containers` is their command line.
Stop sends the stop signal, waits the stop timeout, then escalates to SIGKILL; rm of a
running container needs force; a half-made container is removed whole.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence

from toolkit.errors import CommandFailed, ContainerNotFound, InvalidState, PodunitError
from toolkit.fs import remove_tree, unlink_if_present
from toolkit.runtime import recovery
from toolkit.runtime.invoke import oci_runtime, signal_running
from toolkit.runtime.launch import Stdio, launch_container, prepare_record, start_created
from toolkit.runtime.placement import placed_again
from toolkit.runtime.status import (
    KILL_WAIT_SECONDS,
    POLL_SECONDS,
    forget,
    release,
    sync_status,
    wait_for_exit,
)
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import (
    CREATED,
    EXITED,
    PAUSED,
    RUNNING,
    ContainerRecord,
    CorruptRecord,
)
from toolkit.storage.state import StateStore

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

    from toolkit.definitions.model import Container, LogDriver
    from toolkit.systemd import notify


def open_store(
    user: bool, environ: Mapping[str, str] = os.environ, *, read_only: bool = False
) -> StateStore:
    """The state of this mode, reconciled after a reboot (`read_only`: see StateStore)."""
    return StateStore(RuntimePaths.for_mode(user, environ), read_only=read_only)


def parse_signal(text: str) -> int:
    """A signal by name (`TERM`, `SIGTERM`, `SIGRTMIN+3`) or number, validated."""
    from toolkit.definitions import values

    try:
        return values.parse_signal(text)
    except ValueError as error:
        raise PodunitError(
            str(error), hint="use a name such as SIGTERM or a number 1..64"
        ) from None


def create_container(
    store: StateStore,
    container: Container,
    *,
    stdio: Stdio,
    log_driver: LogDriver,
    tty: bool = False,
    interactive: bool = False,
    auto_remove: bool = False,
    replace: bool = False,
    environ: Mapping[str, str] = os.environ,
    unit: bool = False,
) -> tuple[ContainerRecord, notify.NotifySetup]:
    """Create `container` (conmon + runtime create). `replace` removes an exited namesake."""
    existing = store.find(container.name)
    if existing is not None:
        existing = sync_status(store, existing)
        if existing.alive:
            raise InvalidState(
                f"container {container.name} is already {existing.status}",
                hint=f"stop it first: podunit stop {container.name}",
            )
        if replace:
            remove_container(store, existing)
    record, notify_setup, fds = prepare_record(
        store, container, log_driver=log_driver, tty=tty, interactive=interactive,
        auto_remove=auto_remove, environ=environ, unit=unit,
    )  # fmt: skip
    try:
        try:
            store.add(record)
        except PodunitError:
            remove_tree(store.paths.bundle_dir(record.id))
            raise
        record = launch_container(store, record, stdio=stdio, preserved_fds=fds.fds,
                                  environ=environ, unit=unit)  # fmt: skip
    except BaseException:
        notify_setup.close()
        raise
    return record, notify_setup


def start_container(store: StateStore, record: ContainerRecord) -> ContainerRecord:
    """`podunit start`: a created container runs; an exited one is created again first."""
    record = sync_status(store, record)
    if record.status == EXITED:
        record = relaunch(store, record)
    if record.status != CREATED:
        raise InvalidState(f"container {record.name} is already {record.status}")
    return start_created(store, record)


def relaunch(
    store: StateStore, record: ContainerRecord, restore_path: str | None = None
) -> ContainerRecord:
    """Start an exited container again: a new conmon with its stored config.json."""
    record = placed_again(record, store.paths)
    options = record.options._replace(
        released=False, fresh=False, creator=tuple(recovery.creator_stamp())
    )
    record = store.update(record, options=options, status=CREATED, pid=None, conmon_pid=None)
    return launch_container(store, record, stdio=Stdio(), restore_path=restore_path)


def restore_container(
    store: StateStore, record: ContainerRecord, image_dir: str
) -> ContainerRecord:
    """Bring a checkpointed (hence exited) container back from `image_dir` (`conmon --restore`).

    For toolkit.runtime.checkpoint: its `restore` checks CRIU and finds the image; this
    launches it. The container keeps its id, name and config.json.
    """
    record = sync_status(store, record)
    if record.alive:
        raise InvalidState(f"container {record.name} is {record.status}: stop it before restoring")
    return relaunch(store, record, restore_path=image_dir)


def kill_container(store: StateStore, record: ContainerRecord, signum: int) -> ContainerRecord:
    """Send `signum` to the container's process (`RUNTIME kill`)."""
    record = sync_status(store, record)
    if record.status not in (RUNNING, PAUSED, CREATED):
        raise InvalidState(f"container {record.name} is not running ({record.status})")
    complaint = oci_runtime().kill(record, signum)
    if complaint is not None:
        record = sync_status(store, record)
        if record.alive:
            raise CommandFailed([os.path.basename(record.runtime), "kill"], 1, complaint)
    return record


def stop_container(
    store: StateStore, record: ContainerRecord, timeout: float | None = None
) -> ContainerRecord:
    """Stop signal, wait `timeout` (default: the container's stop_timeout), then SIGKILL."""
    record = sync_status(store, record)
    if not record.alive:
        return record
    if timeout is None:
        timeout = record.options.stop_timeout
    stop_signal = record.options.stop_signal
    runtime = oci_runtime()
    if timeout > 0:
        if not signal_running(record, stop_signal):
            runtime.kill(record, stop_signal)
        if record.status == PAUSED:
            with contextlib.suppress(CommandFailed):
                runtime.resume(record)
        record = wait_for_exit(store, record, timeout)
        if not record.alive:
            return record
    runtime.kill(record, signal.SIGKILL, all_processes=not record.options.own_pid_namespace)
    if record.status == PAUSED:
        with contextlib.suppress(CommandFailed):
            runtime.resume(record)
    record = wait_for_exit(store, record, KILL_WAIT_SECONDS)
    if record.alive:
        raise PodunitError(
            f"container {record.name} did not exit within {KILL_WAIT_SECONDS:.0f}s of SIGKILL"
        )
    return record


def remove_container(
    store: StateStore, record: ContainerRecord, *, force: bool = False,
    timeout: float | None = None,
) -> None:  # fmt: skip
    """Remove a container; a running or paused one only with `force` (it is stopped first).

    A container still being created by a live podunit is given a moment to finish (or
    its creator to die: then it is half made and taken down by `sync_status`)."""
    record = sync_status(store, record)
    deadline = time.monotonic() + recovery.CREATE_SETTLE_SECONDS
    while recovery.being_created(record) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        try:
            record = sync_status(store, record)
        except ContainerNotFound:  # its creator gave up and removed it
            return
    if record.alive:
        if not force and record.status != CREATED:
            raise InvalidState(
                f"container {record.name} is {record.status}: cannot remove it",
                hint=f"stop it first, or use: podunit rm -f {record.name}",
            )
        record = stop_container(store, record, timeout)
    if os.path.isdir(store.paths.exec_dir(record.id)):  # else it never had a session still running
        from toolkit.runtime import exec as exec_sessions  # only then: not on a plain rm's path

        exec_sessions.stop_all_sessions(store, record)
    with store.container_lock(record.id), contextlib.suppress(ContainerNotFound):
        record = store.reload(record)
        release(store, record)
        forget(store, record)


def remove_damaged(store: StateStore, corrupt: CorruptRecord) -> None:
    """`rm -f` of a row that cannot be decoded (issue 15 item 11): what its id names is
    taken down (its processes, the runtime's container under podunit's runtime root),
    then its files and row go. Its options (runtime arguments, image layer, log) are
    unreadable, so an image container's writable layer stays."""
    from toolkit import proc
    from toolkit.runtime.status import remove_tree_or_link

    runtime = os.path.basename(corrupt.runtime)
    with store.container_lock(corrupt.container_id):
        recovery.kill_processes(recovery.processes_naming(corrupt.container_id))
        root = os.path.join(store.paths.run_dir, f"runtime-{runtime}")
        with contextlib.suppress(Exception):
            proc.run([corrupt.runtime, "--root", root, "delete", "--force", corrupt.container_id],
                     check=False, timeout=30)  # fmt: skip
        remove_tree(store.paths.bundle_dir(corrupt.container_id))
        remove_tree_or_link(store.paths.attach_socket_dir(corrupt.container_id))
        unlink_if_present(store.paths.exit_file(corrupt.container_id))
        store.remove_id(corrupt.container_id)
        unlink_if_present(store.paths.lock_file(corrupt.container_id))


def set_paused(store: StateStore, record: ContainerRecord, paused: bool) -> ContainerRecord:
    """`RUNTIME pause` / `resume`."""
    record = sync_status(store, record)
    wanted, needed = (PAUSED, RUNNING) if paused else (RUNNING, PAUSED)
    if record.status != needed:
        raise InvalidState(f"container {record.name} is {record.status}, not {needed}")
    if paused:
        oci_runtime().pause(record)
    else:
        oci_runtime().resume(record)
    return store.update(record, status=wanted)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def _networks_of(record: ContainerRecord) -> dict[str, Any]:
    """network -> {IPAddress, Aliases} while the container is connected."""
    state = record.options.network or {}
    document = state.get("document", {})
    return {
        name: {"IPAddress": attached["static_ips"][0], "Aliases": attached["aliases"]}
        for name, attached in document.get("networks", {}).items()
    }


def describe(record: ContainerRecord) -> dict[str, Any]:
    """The JSON of `inspect` and `ps --format json`."""
    process = record.spec.get("process", {})
    return {
        "Id": record.id,
        "Name": record.name,
        "State": {
            "Status": record.status,
            "Running": record.status == RUNNING,
            "Paused": record.status == PAUSED,
            "Pid": record.pid if record.alive else 0,
            "ConmonPid": record.conmon_pid if record.alive else 0,
            "ExitCode": record.exit_code,
            "Reason": record.exit_reason,
            "OOMKilled": record.oom,
            "StartedAt": _iso(record.started_at),
            "FinishedAt": _iso(record.finished_at),
        },
        "Created": _iso(record.created_at),
        "Image": record.options.image,
        "Rootfs": record.options.rootfs,
        "Command": process.get("args", []),
        "Runtime": record.runtime,
        "LogDriver": record.options.log_driver,
        "LogPath": record.options.log_path,
        "Labels": dict(record.options.labels),
        "Ports": list(record.options.ports),
        "Networks": _networks_of(record),
        "StopSignal": record.options.stop_signal,
        "StopTimeout": record.options.stop_timeout,
        "CgroupsPath": record.spec.get("linux", {}).get("cgroupsPath"),
        "Volumes": list(record.options.volumes),  # named and anonymous (storage.volumes)
    }


def status_text(record: ContainerRecord) -> str:
    if record.status == EXITED:
        return f"exited ({record.exit_code})"
    return record.status


def command_summary(argv: Sequence[str], width: int = 60) -> str:
    """A container's command on one table line: control characters escaped, cut at `width`."""
    text = " ".join(argv)
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= width else text[: width - 3] + "..."

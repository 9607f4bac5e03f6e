"""`podunit exec`: exec sessions in running containers (spec §4; libpod container_exec.go).

A session is created (id, config, process.json), started through conmon's exec
mode (`--exec --exec-process-spec FILE`, its own exit directory), and once the
process runs it is written to the `exec_sessions` table as running, with the
process's pid; an attached session is removed when conmon has reported the exit
code, so nothing is left behind and an exec costs two write transactions. `-d`
prints the session id and leaves the session running; it is reaped (marked stopped
with its exit code) the next time sessions are listed.

Attached sessions use conmon's attach protocol (`toolkit.runtime.attach`): conmon
reports on `_OCI_ATTACHPIPE` that `<socket-dir>/<session>/attach` listens; we connect,
then a second byte on the start pipe lets the runtime exec the process. The session
rows are the state store's (`StateStore.add_exec_session` and friends).

Session management (`podunit exec` options):
`--list NAME` prints the sessions as JSON, `--stop SESSION NAME` stops one (its
container's stop signal, then SIGKILL after `--time`), `--rm SESSION NAME` removes
a stopped one and `--rm SESSION -f NAME` a running one (documented in
docs/podunit-exec-logs-images.md). Stopping waits on pidfds (pidfd_open(2)), not by
polling: for the process after each signal, then for its conmon, which writes the
exit file before it exits. `stop_all_sessions` is what removing a container calls first.

Nothing here is imported that a plain `podunit exec NAME CMD` does not use (issue 6:
the imports of a fresh process are most of its time): no dataclasses or typing, the
status machinery of `toolkit.runtime.status` only for a container that is not plainly
running, oci only for `-u`, conmon where a session starts.

Files of a session live in `<run>/containers/<container id>/exec/<session id>/`:
process.json, exec_pid (the runtime's pid file), conmon.pid, exit (the status, from
conmon's persist dir), exits/<container id>, ctl, and for detached sessions exec_log
(the output, k8s-file format, at most 1 MiB; attached output goes only to the caller).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence

from toolkit.errors import InvalidState, PodunitError
from toolkit.fs import read_text, remove_tree
from toolkit.proc import process_start_time, same_process_alive, wait_until_gone
from toolkit.record import Record
from toolkit.runtime.attach import (
    connect_attach_socket,
    forwarded_signals,
    raw_terminal,
    relay,
    send_window_size,
    terminal_size,
)
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import (
    PAUSED,
    RUNNING,
    SESSION_CREATED,
    SESSION_RUNNING,
    SESSION_STOPPED,
    ContainerRecord,
    ExecConfig,
    ExecProcesses,
    ExecSession,
)
from toolkit.storage.state import StateStore

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

    from toolkit.runtime import conmon, oci

EXIT_FILE_GRACE_SECONDS = 5.0
DETACHED_LOG_MAX_BYTES = 1024 * 1024  # conmon replaces exec_log when it is full


class ExecSessionNotFound(PodunitError):
    """No exec session with that id in the container."""


def parse_env_options(
    values: Sequence[str], environ: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """`-e K=V` pairs; `-e K` takes K from our environment (skipped if unset), like podman."""
    pairs = []
    for value in values:
        key, equals, rest = value.partition("=")
        if not key:
            raise PodunitError(f"invalid -e {value!r}: expected KEY=VALUE")
        if equals:
            pairs.append((key, rest))
        elif key in environ:
            pairs.append((key, environ[key]))
    return tuple(pairs)


def exec_process_spec(
    container_spec: Mapping[str, Any],
    config: ExecConfig,
    user: oci.ResolvedUser | None,
    console_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The runtime-spec `process` for the session: the container's, with the exec's overrides.

    Capabilities, rlimits, noNewPrivileges, apparmor/selinux labels are inherited
    from the container's process; args, terminal, env additions, cwd and user are
    the session's.
    """
    base = dict(container_spec.get("process") or {})
    env: dict[str, str] = {}
    for item in base.get("env", []):
        key, _, value = str(item).partition("=")
        env[key] = value
    if config.tty:
        env.setdefault("TERM", "xterm")
    env.update(config.environment)
    process: dict[str, Any] = {
        key: value for key, value in base.items() if key not in ("consoleSize", "args")
    }
    process["args"] = list(config.command)
    process["terminal"] = config.tty
    process["env"] = [f"{key}={value}" for key, value in env.items()]
    process["cwd"] = config.workdir or base.get("cwd") or "/"
    if config.tty and console_size is not None:
        rows, columns = console_size  # the runtime sizes the new terminal before the exec
        process["consoleSize"] = {"height": rows, "width": columns}
    if user is not None:
        identity: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
        if user.additional_gids:
            identity["additionalGids"] = list(user.additional_gids)
        process["user"] = identity
    return process


def find_session(store: StateStore, record: ContainerRecord, session_id: str) -> ExecSession:
    matches = [s for s in store.exec_sessions(record.id) if s.id.startswith(session_id)]
    if len(matches) != 1 or len(session_id) < 4:
        raise ExecSessionNotFound(
            f"container {record.name} has no exec session {session_id}",
            hint=f"list them: podunit exec --list {record.name}",
        )
    return matches[0]


def session_dir(paths: RuntimePaths, container_id: str, session_id: str) -> str:
    return os.path.join(paths.exec_dir(container_id), session_id)


def _exit_file(paths: RuntimePaths, session: ExecSession) -> str:
    """conmon's persist-dir exit file (bare decimal status)."""
    return os.path.join(session_dir(paths, session.container_id, session.id), "exit")


def _read_exit_file(path: str) -> int | None:
    try:
        return int(read_text(path).strip())
    except (FileNotFoundError, ValueError):
        return None


def _remove_session_files(paths: RuntimePaths, session: ExecSession) -> None:
    remove_tree(session_dir(paths, session.container_id, session.id))
    with contextlib.suppress(OSError):
        os.unlink(paths.attach_socket_dir(session.id))  # conmon's attach symlink


def refresh_session(store: StateStore, session: ExecSession) -> ExecSession:
    """A running session whose process is gone becomes stopped, with the exit code if known."""
    if session.state != SESSION_RUNNING:
        return session
    code = _read_exit_file(_exit_file(store.paths, session))
    if code is None and same_process_alive(session.pid, session.processes.pid_start_time):
        return session
    stopped = session._replace(state=SESSION_STOPPED, exit_code=code, finished_at=time.time())
    store.mark_exec_session_stopped(stopped)
    return stopped


def _abandoned(session: ExecSession) -> bool:
    """An attached session that ended after the `podunit exec` attached to it died."""
    owner = session.processes.owner_pid
    return (
        session.state == SESSION_STOPPED
        and not session.config.detach
        and owner is not None
        and not same_process_alive(owner, session.processes.owner_start_time)
    )


def list_sessions(store: StateStore, container_id: str) -> list[ExecSession]:
    """The container's sessions, reaped (for `inspect` and `exec --list`).

    Attached sessions are removed by their `podunit exec`; if that was killed, the
    session is removed here once its command has ended, so nothing piles up.
    """
    sessions = []
    for session in store.exec_sessions(container_id):
        session = refresh_session(store, session)
        if _abandoned(session):
            _remove_session_files(store.paths, session)
            store.remove_exec_session(session.id)
        else:
            sessions.append(session)
    return sessions


def _signal_session(session: ExecSession, signum: int) -> bool:
    """Send `signum` to the session's process if it is still the same process."""
    if not same_process_alive(session.pid, session.processes.pid_start_time):
        return False
    assert session.pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(session.pid, signum)
        return True
    return False


def stop_session(
    store: StateStore, session: ExecSession, *, stop_signal: int, timeout: float
) -> ExecSession:
    """Stop signal, then SIGKILL after `timeout` seconds (libpod ExecStopContainer)."""
    session = refresh_session(store, session)
    if session.state != SESSION_RUNNING:
        raise InvalidState(
            f"exec session {session.id[:12]} is {session.state}: "
            "only running sessions can be stopped"
        )
    pid_start_time = session.processes.pid_start_time
    _signal_session(session, stop_signal)
    if not wait_until_gone(session.pid, pid_start_time, timeout):
        _signal_session(session, signal.SIGKILL)
        wait_until_gone(session.pid, pid_start_time, EXIT_FILE_GRACE_SECONDS)
    # conmon writes the exit file once it has reaped the process, then exits
    wait_until_gone(
        session.processes.conmon_pid,
        session.processes.conmon_start_time,
        EXIT_FILE_GRACE_SECONDS,
    )
    return refresh_session(store, session)


def remove_session(
    store: StateStore, session: ExecSession, *, force: bool, stop_signal: int, timeout: float
) -> None:
    """Remove a session; a running one only with `force` (stopped first)."""
    session = refresh_session(store, session)
    if session.state == SESSION_RUNNING:
        if not force:
            raise InvalidState(
                f"exec session {session.id[:12]} is still running, cannot remove it",
                hint="stop it first, or remove it with -f",
            )
        stop_session(store, session, stop_signal=stop_signal, timeout=timeout)
    _remove_session_files(store.paths, session)
    store.remove_exec_session(session.id)


def stop_all_sessions(store: StateStore, record: ContainerRecord, *, timeout: float = 0.0) -> None:
    """Stop and remove every session of the container (before the container is stopped/removed).

    The sessions' processes die with the container anyway; this ends them first
    (SIGKILL after `timeout`), so their monitors report and nothing stays behind.
    A container without an exec directory never had a session that still runs (its
    files go only once it has ended), so the usual `rm` costs no database transaction;
    rows of ended sessions go with the container's row (ON DELETE CASCADE).
    """
    exec_dir = store.paths.exec_dir(record.id)
    if not os.path.isdir(exec_dir):
        return
    for session in store.exec_sessions(record.id):
        with contextlib.suppress(PodunitError):
            remove_session(
                store, session, force=True, stop_signal=record.options.stop_signal, timeout=timeout
            )
    remove_tree(exec_dir)


def require_running(store: StateStore, record: ContainerRecord) -> ContainerRecord:
    """Exec only in a running container (libpod: "can only create exec sessions on running").

    A container whose process and conmon are both still the recorded ones is running
    (conmon writes the exit file only after the process is gone), which is what
    `status.sync_status` would answer too; anything else goes through it.
    """
    record = store.reload(record)
    if not (
        record.status == RUNNING
        and same_process_alive(record.pid, record.pid_start_time)
        and same_process_alive(record.conmon_pid, record.conmon_start_time)
    ):
        from toolkit.runtime.status import sync_status  # the status machinery, only when needed

        record = sync_status(store, record)
    if record.status == PAUSED:
        raise InvalidState(
            f"container {record.name} is paused", hint=f"podunit unpause {record.name}"
        )
    if record.status != RUNNING or not same_process_alive(record.pid, record.pid_start_time):
        raise InvalidState(
            f"container {record.name} is not running: exec needs a running container",
            hint=f"start it first: systemctl start {record.name}",
        )
    return record


def _resolve_exec_user(
    record: ContainerRecord, user: str | None, bundle_dir: str
) -> oci.ResolvedUser | None:
    """`-u USER[:GROUP]` against the container's /etc/passwd and /etc/group (None: the
    container's own user). A relative `root.path` is relative to the bundle (runtime-spec
    config.md), `bundle_dir` (the options never held a "bundle_dir")."""
    if not user:
        return None
    from toolkit.runtime import oci

    rootfs = str((record.spec.get("root") or {}).get("path", "/"))
    if not os.path.isabs(rootfs):
        rootfs = os.path.join(bundle_dir, rootfs)
    return oci.resolve_user(
        user,
        (),
        oci.read_rootfs_file(rootfs, "/etc/passwd"),
        oci.read_rootfs_file(rootfs, "/etc/group"),
    )


def create_session(
    store: StateStore,
    record: ContainerRecord,
    config: ExecConfig,
    console_size: tuple[int, int] | None = None,
) -> ExecSession:
    """Write the session's process.json (libpod ExecCreate); its row is written once it runs."""
    if not config.command:
        raise PodunitError("exec needs a command: podunit exec NAME -- CMD...")
    if config.workdir is not None and not config.workdir.startswith("/"):
        raise PodunitError(f"-w {config.workdir!r}: the working directory must be absolute")
    record = require_running(store, record)
    user = _resolve_exec_user(record, config.user, store.paths.bundle_dir(record.id))
    process = exec_process_spec(record.spec, config, user, console_size)
    session = ExecSession(
        id=os.urandom(32).hex(),
        container_id=record.id,
        state=SESSION_CREATED,
        config=config,
        created_at=time.time(),
    )
    directory = session_dir(store.paths, record.id, session.id)
    os.makedirs(os.path.join(directory, "exits"), mode=0o700)
    with open(os.path.join(directory, "process.json"), "w", encoding="utf-8") as file:
        file.write(json.dumps(process))
    return session


def _conmon_options(
    paths: RuntimePaths, record: ContainerRecord, session: ExecSession, *, attach: bool
) -> conmon.ConmonOptions:
    from toolkit.definitions import logdrivers
    from toolkit.runtime import conmon

    directory = session_dir(paths, record.id, session.id)
    return conmon.ConmonOptions(
        container_id=record.id,
        name=record.name,
        runtime=record.runtime,
        bundle_dir=directory,
        exit_dir=os.path.join(directory, "exits"),
        persist_dir=directory,
        socket_dir=paths.sockets_dir,
        container_pidfile=os.path.join(directory, "exec_pid"),
        conmon_pidfile=os.path.join(directory, "conmon.pid"),
        # attached: the output goes to us only; detached: a bounded copy under the run dir
        log_driver=logdrivers.NONE if attach else logdrivers.K8S_FILE,
        log_path=None if attach else os.path.join(directory, "exec_log"),
        log_size_max=None if attach else DETACHED_LOG_MAX_BYTES,
        tty=session.config.tty,
        stdin=session.config.interactive,
        runtime_args=record.options.runtime_args,
        exec_process_spec=os.path.join(directory, "process.json"),
        exec_attach=attach,
        exec_session_id=session.id,
    )


def _read_record(channel: socket.socket, timeout: float) -> dict[str, Any] | None:
    from toolkit.runtime import conmon

    channel.settimeout(timeout)
    try:
        data = channel.recv(65536)
    except TimeoutError:
        raise conmon.RuntimeFailed("conmon did not report the attach socket in time") from None
    records = conmon.parse_sync_records(data)
    return records[0] if records else None


class _Started(Record):
    """A session whose process runs: its monitor, and the attach socket unless detached."""

    session: ExecSession
    monitor: conmon.ConmonProcess
    attach: socket.socket | None


def start_session(
    store: StateStore, record: ContainerRecord, session: ExecSession, *, environ: Mapping[str, str]
) -> _Started:
    """Launch conmon in exec mode and record the session as running (libpod ExecStartAndAttach)."""
    from toolkit.runtime import conmon

    attach = not session.config.detach
    options = _conmon_options(store.paths, record, session, attach=attach)
    env = {k: v for k, v in environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET"))}
    parent_attach = child_attach = None
    if attach:
        parent_attach, child_attach = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env["_OCI_ATTACHPIPE"] = str(conmon.SD_LISTEN_FDS_START + 2)
    try:
        monitor = conmon.launch(
            options, environ=env, extra_fds=[child_attach.fileno()] if child_attach else []
        )
    except BaseException:
        _fail_session(store, session)
        raise
    finally:
        if child_attach is not None:
            child_attach.close()
    client = None
    try:
        monitor.start(keep_open=attach)
        monitor.wait_launcher()
        if parent_attach is not None:
            if _read_record(parent_attach, conmon.CREATE_TIMEOUT_SECONDS) is None:
                monitor.container_pid()  # raises with conmon's error, if it sent one
                raise conmon.RuntimeFailed("conmon exited before its attach socket was ready")
            client = connect_attach_socket(store.paths, session.id)
            monitor.start()  # the second byte: the runtime may exec the process now
        pid = monitor.container_pid()
    except BaseException:
        if client is not None:
            client.close()
        _kill_monitor(monitor)  # before closing the start pipe, which would let the exec go on
        monitor.close()
        _fail_session(store, session)
        raise
    finally:
        if parent_attach is not None:
            parent_attach.close()
    conmon_pid = _monitor_pid(monitor)
    running = session._replace(
        state=SESSION_RUNNING,
        pid=pid,
        started_at=time.time(),
        processes=ExecProcesses(
            pid_start_time=process_start_time(pid),
            conmon_pid=conmon_pid,
            conmon_start_time=process_start_time(conmon_pid) if conmon_pid else None,
            owner_pid=os.getpid(),
            owner_start_time=process_start_time(os.getpid()),
        ),
    )
    try:
        store.add_exec_session(running)  # the session's one row, from here until it is removed
    except BaseException:
        _signal_session(running, signal.SIGKILL)  # a session nobody could see or stop
        if client is not None:
            client.close()
        monitor.close()
        _fail_session(store, session)
        raise
    return _Started(session=running, monitor=monitor, attach=client)


def _kill_monitor(monitor: conmon.ConmonProcess) -> None:
    """SIGKILL a conmon that is still waiting to exec (its runtime child has PDEATHSIG)."""
    pid = _monitor_pid(monitor)
    if pid is None:
        return
    try:  # only the conmon of this session, never a process that reused the pid
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            cmdline = file.read().split(b"\0")
    except OSError:
        return
    if str(monitor.options.exec_session_id).encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _monitor_pid(monitor: conmon.ConmonProcess) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return monitor.monitor_pid()
    return None


def _fail_session(store: StateStore, session: ExecSession) -> None:
    """A session that never ran leaves nothing behind (it has no row yet; its files go)."""
    _remove_session_files(store.paths, session)


PROXIED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def _proxied_signals(session: ExecSession) -> contextlib.AbstractContextManager[None]:
    """Signals podunit gets while attached go to the session's process (podman's sig-proxy).

    So `systemctl reload` timing out, or Ctrl-C without -t, ends the exec'd command
    rather than orphaning it; its exit status is then reported as usual.
    """
    return forwarded_signals(PROXIED_SIGNALS, lambda signum: _signal_session(session, signum))


def run_attached(
    store: StateStore,
    record: ContainerRecord,
    config: ExecConfig,
    *,
    environ: Mapping[str, str],
    stdin: int = 0,
    stdout: int = 1,
    stderr: int = 2,
) -> int:
    """Create, start, attach, wait and remove: `podunit exec` without -d (libpod Exec)."""
    session = create_session(store, record, config, terminal_size(stdin) if config.tty else None)
    started = start_session(store, record, session, environ=environ)
    assert started.attach is not None
    ctl = os.path.join(session_dir(store.paths, record.id, session.id), "ctl")
    previous_winch = None
    try:
        if config.tty:
            send_window_size(ctl, stdin)
            previous_winch = signal.signal(signal.SIGWINCH, lambda *_: send_window_size(ctl, stdin))
        with raw_terminal(stdin, config.tty), _proxied_signals(started.session):
            relay(
                started.attach,
                stdin=stdin if (config.interactive or config.tty) else None,
                stdout=stdout,
                stderr=stderr,
                on_output_closed=lambda: _signal_session(started.session, signal.SIGPIPE),
            )
        code = started.monitor.exec_exit_code()
    finally:
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)
        started.attach.close()
        started.monitor.close()
    # Ended and reported: the session goes at once (no `stopped` row in between, which
    # nobody could see), files first so that a killed `podunit exec` leaves a row to reap.
    _remove_session_files(store.paths, started.session)
    store.remove_exec_session(started.session.id)
    return code


def run_detached(
    store: StateStore, record: ContainerRecord, config: ExecConfig, *, environ: Mapping[str, str]
) -> ExecSession:
    """`podunit exec -d`: start the session and leave it running."""
    session = create_session(store, record, config)
    started = start_session(store, record, session, environ=environ)
    started.monitor.close()
    return started.session

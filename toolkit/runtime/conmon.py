"""Launching conmon, the container monitor, the way a container engine does.

Modelled on libpod's `createOCIContainer` (oci.go): conmon is started with
`--api-version 1` and an explicit file-descriptor table:

    0, 1, 2              stdio chosen by the caller
    3 .. 3+N-1           preserved fds (socket activation), passed on to the
                         payload with `--runtime-opt --preserve-fds N`
    3+N                  sync pipe  (`_OCI_SYNCPIPE`): conmon reports the pid
    3+N+1                start pipe (`_OCI_STARTPIPE`): conmon waits for a byte
    3+N+2 ..             extra fds conmon merely holds (reserved host ports)

Every other fd of podunit is close-on-exec in the child. `LISTEN_*` and
`NOTIFY_SOCKET` never reach conmon or the runtime.

Protocol (conmon 2.1.6): conmon blocks on the start pipe until `ConmonProcess.start`
— the window to move it into a cgroup — then runs `RUNTIME create`, and writes
`{"data": PID}` (or `{"data": -1, "message": "..."}`) to the sync pipe. In exec
mode a second record carries the exit code. EOF before a record is a failure.

Restoring a checkpoint (toolkit.runtime.checkpoint) is a launch with
`ConmonOptions(restore_path=IMAGE_DIR)`: conmon runs `RUNTIME restore` and the
reported pid is already running (no `RUNTIME start`); see
`toolkit.runtime.lifecycle.restore_container`.

Exec sessions (toolkit.runtime.exec) use the same launcher: pass
`ConmonOptions(exec_process_spec=PATH, ...)`, call `launch`, `start`, then
`container_pid` (the exec'd process's pid) and, when not detached,
`exec_exit_code`.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence

from toolkit import proc
from toolkit.definitions.logdrivers import JOURNALD, K8S_FILE
from toolkit.errors import (
    CannotInvoke,
    CommandNotFoundInContainer,
    ExecutableNotFound,
    PodunitError,
)
from toolkit.fs import read_text
from toolkit.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

CREATE_TIMEOUT_SECONDS = 60.0
# The conmon binary, instead of `conmon` on PATH: how the fault tests put a shim that
# delays or dies in its place (tests/system/test_reliability_run.py).
CONMON_VARIABLE = "PODUNIT_CONMON"
SD_LISTEN_FDS_START = 3


class RuntimeFailed(PodunitError):
    """conmon or the OCI runtime could not create or start the container."""


class ConmonOptions(Record):
    """Everything conmon's command line says about one container (or exec session)."""

    container_id: str
    name: str
    runtime: str  # absolute path of the runtime binary (conmon -r)
    bundle_dir: str  # also conmon's working directory (2.1.6 writes `oom` there)
    exit_dir: str
    persist_dir: str
    socket_dir: str
    container_pidfile: str
    conmon_pidfile: str
    log_driver: str = JOURNALD  # one of toolkit.definitions.logdrivers
    log_path: str | None = None  # k8s-file only
    log_size_max: int | None = None
    log_tag: str | None = None
    tty: bool = False
    stdin: bool = False
    preserve_fds: int = 0
    cgroup_args: tuple[str, ...] = ()  # CgroupPlacement.conmon_args(): -s, --runtime-arg ...
    runtime_args: tuple[str, ...] = ()  # before the runtime's subcommand
    exit_command: tuple[str, ...] = ()
    log_level: str = "error"
    exec_process_spec: str | None = None  # exec mode
    exec_attach: bool = False
    exec_session_id: str | None = None  # exec mode: conmon -u (attach socket name)
    sync: bool = False  # --sync: conmon stays our child instead of double-forking
    # the runtime's --log (JSON): its error when conmon has none
    runtime_log: str | None = None
    restore_path: str | None = None  # `RUNTIME restore --image-path` instead of create

    @property
    def exec_mode(self) -> bool:
        return self.exec_process_spec is not None


def log_argument(driver: str, log_path: str | None) -> str:
    """conmon's `-l` value: `journald`, `k8s-file:PATH`, `passthrough`, `none`."""
    if driver == K8S_FILE:
        if log_path is None:
            raise PodunitError("the k8s-file log driver needs a log path")
        return f"k8s-file:{log_path}"
    return driver


def conmon_argv(options: ConmonOptions) -> list[str]:
    """conmon's full argument vector (conmon(8), libpod createOCIContainer)."""
    argv = ["conmon", "--api-version", "1"]
    argv += list(options.cgroup_args)
    argv += ["-c", options.container_id, "-u", options.exec_session_id or options.container_id]
    argv += ["-n", options.name, "-r", options.runtime, "-b", str(options.bundle_dir)]
    argv += ["-p", str(options.container_pidfile), "-P", str(options.conmon_pidfile)]
    argv += ["-l", log_argument(options.log_driver, options.log_path)]
    if options.log_size_max is not None and options.log_driver == K8S_FILE:
        argv += ["--log-size-max", str(options.log_size_max)]
    if options.log_tag and options.log_driver == JOURNALD:
        argv += ["--log-tag", options.log_tag]
    argv += ["--exit-dir", str(options.exit_dir), "-0", str(options.persist_dir)]
    argv += ["--socket-dir-path", str(options.socket_dir), "--log-level", options.log_level]
    runtime_args = list(options.runtime_args)
    if options.runtime_log is not None:
        runtime_args += ["--log", str(options.runtime_log), "--log-format", "json"]
    for argument in runtime_args:
        argv += ["--runtime-arg", argument]
    if options.exit_command:
        argv += ["--exit-command", options.exit_command[0]]
        for argument in options.exit_command[1:]:
            argv += ["--exit-command-arg", argument]
    if options.tty:
        argv.append("-t")
    elif options.stdin:
        argv.append("-i")
    if options.preserve_fds:
        argv += ["--runtime-opt", "--preserve-fds", "--runtime-opt", str(options.preserve_fds)]
    if options.exec_process_spec is not None:
        argv += ["-e", "--exec-process-spec", str(options.exec_process_spec)]
        if options.exec_attach:
            argv.append("--exec-attach")
    if options.restore_path is not None:
        argv += ["--restore", str(options.restore_path)]
    if options.sync:
        argv.append("--sync")
    return argv


def fd_table(
    preserved: Sequence[int], sync_fd: int, start_fd: int, extra: Sequence[int]
) -> dict[int, int]:
    """{child fd: parent fd}: preserved fds at 3.., the two pipes, then `extra`."""
    table: dict[int, int] = {}
    for offset, fd in enumerate([*preserved, sync_fd, start_fd, *extra]):
        table[SD_LISTEN_FDS_START + offset] = fd
    return table


def parse_sync_records(data: bytes) -> list[dict[str, Any]]:
    """Newline-terminated JSON records from conmon's sync pipe (partial last line ignored)."""
    records = []
    for line in data.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def last_runtime_error(log_text: str) -> str | None:
    """The last error message in a runtime's JSON log (runc/crun `--log-format json`)."""
    message = None
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", "")) or message
    return message


def classify_runtime_error(message: str, runtime: str) -> PodunitError:
    """The runtime's error as the spec's exit status (§4): 127 not found, 126 not executable."""
    text = " ".join(message.split())
    lowered = text.lower()
    name = os.path.basename(runtime)
    if "executable file not found" in lowered or (
        "executable file" in lowered and "not found" in lowered
    ):
        return CommandNotFoundInContainer(f"{name}: {text}")
    if "exec" in lowered and ("permission denied" in lowered or "exec format error" in lowered):
        return CannotInvoke(f"{name}: {text}")
    if "no such file or directory" in lowered and ("exec:" in lowered or "execve" in lowered):
        return CommandNotFoundInContainer(f"{name}: {text}")
    return RuntimeFailed(f"{name}: {text}")


class ConmonProcess:
    """A conmon that has been spawned; see the module docstring for the protocol."""

    def __init__(
        self, options: ConmonOptions, popen: Any, sync: socket.socket, start: socket.socket
    ):
        self.options = options
        self._popen = popen
        self._sync = sync
        self._start: socket.socket | None = start
        self._buffer = b""
        self._records: list[dict[str, Any]] = []
        self.started = False  # the start byte was sent: conmon may be creating the container

    @property
    def launcher_pid(self) -> int:
        """The pid of the conmon we spawned (before it forks): the one to place in a cgroup."""
        pid: int = self._popen.pid
        return pid

    def start(self, *, keep_open: bool = False) -> None:
        """Let conmon go on: it forks and runs the runtime.

        With `keep_open` the start pipe stays open for a second byte: conmon 2.1.6 in
        attached exec mode (`--exec-attach`) reads it twice, once before it forks and
        once in the runtime's child, which must wait until the caller is connected to
        the attach socket. The next `start()` sends that byte and closes the pipe.
        """
        if self._start is None:
            if keep_open:
                raise RuntimeFailed("internal error: conmon's start pipe is already closed")
            return
        try:
            self._start.send(b"\0")
            self.started = True
        except OSError as error:
            keep_open = False
            raise RuntimeFailed(f"conmon exited before it was started ({error.strerror})") from None
        finally:
            if not keep_open:
                self._start.close()
                self._start = None

    def _next_record(self, deadline: float | None) -> dict[str, Any] | None:
        while not self._records:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self._sync], [], [], remaining)
            if not readable:
                raise RuntimeFailed(
                    f"conmon did not report within {CREATE_TIMEOUT_SECONDS:.0f}s"
                    f" for container {self.options.name}"
                )
            chunk = self._sync.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
            complete, _, self._buffer = self._buffer.rpartition(b"\n")
            self._records += parse_sync_records(complete)
        return self._records.pop(0)

    def container_pid(self, timeout: float = CREATE_TIMEOUT_SECONDS) -> int:
        """The pid conmon reports once the runtime created the process; raises on failure."""
        record = self._next_record(time.monotonic() + timeout)
        logged = self._logged_runtime_error()
        if record is None and logged is not None:
            raise classify_runtime_error(logged, self.options.runtime)
        if record is None:
            status = self._popen.poll()
            detail = f" (conmon exit status {status})" if status not in (None, 0) else ""
            raise RuntimeFailed(
                f"{os.path.basename(self.options.runtime)} failed to create container"
                f" {self.options.name} without an error message{detail}",
                hint="run with --log-level debug, or check the journal for conmon's messages",
            )
        pid = record.get("data", record.get("pid", -1))
        if not isinstance(pid, int) or pid <= 0:
            message = str(record.get("message") or logged or "unknown error")
            raise classify_runtime_error(message, self.options.runtime)
        return pid

    def _logged_runtime_error(self) -> str | None:
        if self.options.runtime_log is None:
            return None
        try:
            with open(self.options.runtime_log, encoding="utf-8", errors="replace") as log:
                return last_runtime_error(log.read())
        except OSError:
            return None

    def exec_exit_code(self, timeout: float | None = None) -> int:
        """Exec mode: the exec'd process's exit status (the second sync record)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        record = self._next_record(deadline)
        if record is None:
            raise RuntimeFailed("conmon exited without reporting the exec session's exit code")
        code = record.get("data", record.get("exit_code"))
        if not isinstance(code, int):
            raise RuntimeFailed(f"conmon reported no exit code: {record}")
        return code

    def wait_launcher(self, timeout: float = CREATE_TIMEOUT_SECONDS) -> int:
        """Reap the conmon we spawned (it exits after forking the monitor unless --sync)."""
        try:
            status: int = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeFailed(f"conmon did not detach within {timeout:.0f}s") from None
        return status

    def monitor_pid(self) -> int:
        """The long-lived conmon's pid, from its --conmon-pidfile (after `wait_launcher`)."""
        if self.options.sync:
            return self.launcher_pid
        try:
            return int(read_text(self.options.conmon_pidfile).strip())
        except (OSError, ValueError) as error:
            raise RuntimeFailed(
                f"conmon wrote no usable pid file {self.options.conmon_pidfile}: {error}"
            ) from None

    def settle(self, timeout: float) -> None:
        """After an interrupted launch: make sure conmon is not about to create anything.

        Before the start byte conmon is still the process we spawned, blocked on the
        start pipe: it is killed. After it, conmon may be inside `RUNTIME create`:
        its answer (a pid or a failure) is awaited up to `timeout`, so that what it
        made can be deleted; conmon is killed if it does not answer in time.
        """
        if self.started:
            try:
                self._next_record(time.monotonic() + timeout)
                return
            except (RuntimeFailed, OSError):
                pass
        try:
            self._popen.kill()
            self._popen.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            return

    def close(self) -> None:
        if self._start is not None:
            self._start.close()
            self._start = None
        self._sync.close()


def launch(
    options: ConmonOptions,
    *,
    environ: Mapping[str, str],
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    preserved_fds: Sequence[int] = (),
    extra_fds: Sequence[int] = (),
) -> ConmonProcess:
    """Spawn conmon with exactly stdio, `preserved_fds` at 3.., the pipes and `extra_fds`.

    `environ` must already be free of LISTEN_* and NOTIFY_SOCKET
    (`toolkit.systemd.activation.environment_for_conmon`); its `PODUNIT_CONMON` names
    another conmon binary (a test shim). stdio None means /dev/null.
    conmon then waits on its start pipe: place it, then call `start()`.
    """
    if len(preserved_fds) != options.preserve_fds:
        raise PodunitError("internal error: preserve_fds does not match the fds passed")
    parent_sync, child_sync = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent_start, child_start = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    table = fd_table(preserved_fds, child_sync.fileno(), child_start.fileno(), extra_fds)
    count = len(preserved_fds)
    env = dict(environ)
    env["_OCI_SYNCPIPE"] = str(SD_LISTEN_FDS_START + count)
    env["_OCI_STARTPIPE"] = str(SD_LISTEN_FDS_START + count + 1)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    argv = conmon_argv(options)
    argv[0] = environ.get(CONMON_VARIABLE) or argv[0]
    try:
        popen = proc.spawn(
            argv,
            env=env,
            cwd=str(options.bundle_dir),
            stdin=devnull if stdin is None else stdin,
            stdout=devnull if stdout is None else stdout,
            stderr=devnull if stderr is None else stderr,
            fd_table=table,
            start_new_session=True,
        )
    except ExecutableNotFound as error:
        raise ExecutableNotFound(
            "conmon: not found on PATH", hint="install the Debian package conmon"
        ) from error
    except OSError as error:
        raise RuntimeFailed(f"cannot start conmon: {error.strerror}") from None
    finally:
        os.close(devnull)
        child_sync.close()
        child_start.close()
    return ConmonProcess(options, popen, parent_sync, parent_start)

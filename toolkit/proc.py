"""The one subprocess wrapper: every external program podunit runs goes through here.

It resolves the binary first (a missing one is `ExecutableNotFound`, exit 127,
naming the program), never uses a shell, and turns a non-zero exit into
`CommandFailed` carrying the program's stderr.

`podunit --log-level debug` (`set_log_level`) logs every command line to stderr
before it runs, shell-quoted, as `podunit: + ARGV` (as mkosi does), and asks conmon
for its debug messages (`log_level`).
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Mapping, Sequence

from toolkit.errors import CommandFailed, ExecutableNotFound

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import subprocess

# subprocess, shutil and fcntl are imported where they are used: `podunit ps`, `rm` and
# `stop` after a stop run no program at all and must not pay for them at start-up.
_DEVNULL = -3  # subprocess.DEVNULL
LOG_LEVELS = ("debug", "info", "warning", "error")
_log_level = "warning"


def set_log_level(level: str) -> None:
    """`--log-level`: `debug` logs every external command's argv (see module docstring)."""
    global _log_level
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    _log_level = level


def log_level() -> str:
    """The level set by `--log-level` (default `warning`)."""
    return _log_level


def _trace(args: Sequence[str]) -> None:
    """Log `args` (the resolved command line) at debug level, as one line on stderr."""
    if _log_level != "debug":
        return
    import shlex

    line = f"podunit: + {shlex.join(args)}\n"
    try:
        os.write(2, line.encode(errors="backslashreplace"))
    except OSError:
        return


def which(program: str) -> str:
    """Absolute path of `program` (searched on PATH unless it contains a slash).

    The search of `shutil.which` (first executable non-directory on PATH, os.defpath
    when PATH is unset), without importing shutil: 3 ms of every `podunit run`.
    """
    if "/" in program:
        if os.access(program, os.X_OK):
            return program
        raise ExecutableNotFound(f"{program}: not found or not executable")
    found = next(
        (
            candidate
            for directory in os.environ.get("PATH", os.defpath).split(os.pathsep)
            if directory
            for candidate in (os.path.join(directory, program),)
            if os.access(candidate, os.X_OK) and not os.path.isdir(candidate)
        ),
        None,
    )
    if found is None:
        raise ExecutableNotFound(
            f"{program}: not found on PATH", hint=f"install the Debian package providing {program}"
        )
    return found


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` to completion; raise `CommandFailed` on non-zero exit if `check`."""
    import subprocess

    args = [which(argv[0]), *argv[1:]]
    _trace(args)
    result = subprocess.run(
        args,
        input=input,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        stdin=None if input is not None else subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        pass_fds=tuple(pass_fds),
        check=False,
    )
    if check and result.returncode != 0:
        stderr = result.stderr.decode(errors="replace") if result.stderr else ""
        raise CommandFailed(list(argv), result.returncode, stderr)
    return result


def output(argv: Sequence[str], **kwargs: object) -> str:
    """Run `argv` and return its stdout as text (stripped of the final newline)."""
    result = run(argv, **kwargs)  # type: ignore[arg-type]
    return result.stdout.decode(errors="replace").rstrip("\n")


def python_module_argv(module: str) -> list[str]:
    """`python -m MODULE` for a child that imports exactly as this process does.

    Plain `sys.executable -m` under bin/podunit (`python3 -I -S`, the checkout and
    the .venv's site-packages put on sys.path by hand, as units run podunit) would
    not find `toolkit`: there the child gets the same flags and this sys.path.
    """
    import sys

    if not (sys.flags.isolated and sys.flags.no_site):
        return [sys.executable, "-m", module]
    code = (
        f"import runpy, sys; sys.path[:] = {sys.path!r}; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-I", "-S", "-c", code]


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
    stdin: int | None = _DEVNULL,
    stdout: int | None = None,
    stderr: int | None = None,
    start_new_session: bool = False,
    fd_table: Mapping[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` without waiting; the caller owns the returned process.

    `fd_table` ({child fd: parent fd}, child fds >= 3) builds the child's fd table
    explicitly: the child gets stdio plus exactly those fds at those numbers, and
    every other descriptor of this process is closed on exec.
    """
    import fcntl
    import subprocess

    args = [which(argv[0]), *argv[1:]]
    _trace(args)
    # With a table: park the sources above every target, so no dup2 clobbers a later
    # source, and fill the free low numbers so Popen's own error pipe is not a target.
    parked: dict[int, int] = {}
    fillers: list[int] = []
    if fd_table is not None:
        floor = max([*fd_table, 2]) + 1
        for target, source in fd_table.items():
            parked[target] = fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, floor)
        while not fillers or fillers[-1] < floor:
            fillers.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    try:
        return subprocess.Popen(
            args,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            pass_fds=tuple(pass_fds) if fd_table is None else (),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=start_new_session,
            close_fds=fd_table is None,
            preexec_fn=None if fd_table is None else lambda: _install_fd_table(parked),
        )
    finally:
        for fd in [*parked.values(), *fillers]:
            os.close(fd)


def _install_fd_table(parked: Mapping[int, int]) -> None:
    """In the child before exec: dup2 each parked fd to its target, everything else CLOEXEC."""
    for target, source in parked.items():
        os.dup2(source, target, inheritable=True)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in parked:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def proc_stat_fields(stat_text: str) -> tuple[str, int, int]:
    """(state, ppid, starttime) from the text of ``/proc/PID/stat`` (proc(5) fields 3, 4, 22)."""
    fields = stat_text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _stat(pid: int) -> tuple[str, int, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return proc_stat_fields(stat.read())
    except OSError:
        return None


def process_start_time(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot (proc(5) field 22); None if
    there is no such process. Recorded beside a pid so a reused pid is not mistaken for it."""
    fields = _stat(pid)
    return fields[2] if fields else None


def same_process_alive(pid: int | None, start_time: int | None) -> bool:
    """Whether `pid` still names the running process that had `start_time` (any start time
    when None): not gone, not a reused pid, not a zombie awaiting its reaper."""
    fields = _stat(pid) if pid else None
    if fields is None:
        return False
    state, _ppid, start = fields
    return state not in ("Z", "X") and (start_time is None or start == start_time)


def wait_until_gone(pid: int | None, start_time: int | None, timeout: float) -> bool:
    """Wait until process `pid` (started at `start_time`; any when None) has exited; False
    on timeout, True at once when it is already gone or `pid` names another process.

    pidfd_open(2) + poll: the pidfd becomes readable when the process exits, whoever's
    child it is; it is opened before the identity check, so a reused pid is never waited on.
    """
    if not pid:
        return True
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not same_process_alive(pid, start_time):
            return True
        readable, _, _ = select.select([pidfd], [], [], max(0.0, timeout))
        return bool(readable)
    finally:
        os.close(pidfd)

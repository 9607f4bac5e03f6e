"""Interrupted starts and half-made containers (issue 15 item 1; spec §3.1).

Between the `created` row and conmon's recorded pid, a container is half made.
Whoever creates it stamps the row with its own pid and start time
(`options.creator`, `creator_stamp`), so that anyone who looks next tells
apart a container still being created (its creator runs: leave it alone, or
wait a moment) from one whose creator died (SIGKILL, a unit's stop timeout, a
crash): that one is `half_made` and is taken down by `kill_leftovers` (every
process naming its id: the conmon launcher, conmon, the runtime's `create`;
then `RUNTIME delete --force`) before the caller records it as exited.

A creator that is merely asked to stop (SIGTERM from `systemctl stop` while
the unit starts, SIGHUP, Ctrl-C) is not killed in the middle: `interruptible`
turns those signals into `Interrupted` (a BaseException, like KeyboardInterrupt,
so every `except BaseException` cleanup runs), and the CLI then ends the process
by that same signal (`die_by`), as systemd expects of a stopped main process.

Unit mode also hands the unit over to conmon (`MAINPID=`); a conmon that died before
systemd read it is toolkit.runtime.status.status_if_gone's case.
"""

from __future__ import annotations

import contextlib
import os
import signal

from toolkit.proc import process_start_time, same_process_alive, wait_until_gone

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from toolkit.storage.records import ContainerRecord

INTERRUPTED_REASON = "its start was interrupted (podunit was stopped or killed while creating it)"
INTERRUPT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
LEFTOVER_WAIT_SECONDS = 5.0
# How long an interrupted creator still waits for conmon's answer to a create it already
# let go (it then removes what was made); and how long a looker waits for a live creator.
CREATE_SETTLE_SECONDS = 10.0


class Interrupted(BaseException):
    """A stop signal arrived while podunit was creating or starting a container."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def creator_stamp() -> list[int]:
    """This process as `[pid, start time]`, for `options.creator` of a row it creates."""
    pid = os.getpid()
    return [pid, process_start_time(pid) or 0]


def creator_alive(record: ContainerRecord) -> bool:
    """Whether the process that is creating `record` still runs (never true for a row
    without a stamp: rows from before the stamp existed cannot be mid-creation now)."""
    stamp = record.options.creator
    if not stamp or len(stamp) != 2:
        return False
    pid, start = stamp
    if pid == os.getpid():
        return True
    return bool(isinstance(pid, int) and same_process_alive(pid, start or None))


def being_created(record: ContainerRecord) -> bool:
    """A `created` row without conmon whose creator still runs."""
    return record.status == "created" and record.conmon_pid is None and creator_alive(record)


def half_made(record: ContainerRecord) -> bool:
    """A `created` row without conmon whose creator is gone: nobody will finish it."""
    return record.status == "created" and record.conmon_pid is None and not creator_alive(record)


def processes_naming(container_id: str) -> list[tuple[int, int | None]]:
    """(pid, start time) of every process with `container_id` as a word of its command
    line: conmon (`-c ID`), a conmon shim, the runtime's `create ... ID`."""
    wanted = container_id.encode()
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as file:
                words = file.read().split(b"\0")
        except OSError:
            continue
        if wanted in words:
            found.append((int(name), process_start_time(int(name))))
    return found


def kill_processes(processes: Sequence[tuple[int, int | None]]) -> None:
    """SIGKILL each (pid, start time) through a pidfd (never a reused pid), then wait."""
    for pid, start in processes:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if same_process_alive(pid, start):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(pidfd)
    for pid, start in processes:
        wait_until_gone(pid, start, LEFTOVER_WAIT_SECONDS)


def kill_leftovers(record: ContainerRecord) -> None:
    """Take down what a dead creator left running: its processes, the runtime's container
    (`RUNTIME delete --force`, which also kills a created init). Files are the caller's."""
    from toolkit import proc

    kill_processes(processes_naming(record.id))
    argv = [record.runtime, *record.options.runtime_args, "delete", "--force", record.id]
    with contextlib.suppress(Exception):
        proc.run(argv, check=False, timeout=30)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise `Interrupted` (then the handlers
    are restored); a signal that arrived already is delivered at once."""

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM, SIGHUP and SIGINT back for the block (cleanup that must finish)."""
    held = {*INTERRUPT_SIGNALS, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def die_by(signum: int) -> None:
    """End this process by `signum` with its default action (a stopped unit's main process
    killed by SIGTERM is a clean stop to systemd, an exit status is not)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached for TERM and HUP

"""`podunit logs [-f] [--tail N] NAME` (spec §4; conmon's log drivers, spec §1.1 `log_driver`).

Two sources, both written by conmon:

- k8s-file: lines `<RFC3339Nano> stdout|stderr F|P text`; `P` marks a partial
  line that continues in the next record of the same stream. With
  `--log-size-max` conmon replaces the file (a new inode renamed over the path),
  which a follower notices and reopens.
- journald: entries carrying `CONTAINER_ID_FULL`, `CONTAINER_NAME`, `MESSAGE`,
  `PRIORITY` (6 stdout, 3 stderr) and `CONTAINER_PARTIAL_MESSAGE=true` on partial
  lines (conmon's ctr_logging.c).

The parsing is pure; the readers are the I/O edges (the command line: toolkit.cli.logs).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from toolkit.definitions.logdrivers import JOURNALD, K8S_FILE, PASSTHROUGH
from toolkit.errors import PodunitError
from toolkit.runtime.status import sync_status
from toolkit.storage.state import StateStore

STDOUT = "stdout"
STDERR = "stderr"
JOURNAL_PRIORITY_STDERR = 3
FOLLOW_POLL_SECONDS = 0.1
JOURNAL_WAIT_SECONDS = 0.5  # systemd.journal.Reader.wait takes seconds


class LogFormatError(PodunitError):
    """A k8s-file line that is not `<timestamp> <stream> <F|P> <text>`."""


@dataclass(frozen=True)
class LogRecord:
    """One record as conmon wrote it; `partial` records continue in the next one."""

    timestamp: str
    stream: str
    partial: bool
    text: bytes


@dataclass(frozen=True)
class LogLine:
    """One complete line of container output (without its newline)."""

    timestamp: str  # of the line's first record
    stream: str
    text: bytes


def parse_k8s_record(raw: bytes) -> LogRecord:
    """Parse one k8s-file line (with or without its trailing newline)."""
    line = raw[:-1] if raw.endswith(b"\n") else raw
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        shown = line[:80].decode(errors="replace")
        raise LogFormatError(f"not a k8s-file log line: {shown!r}")
    text = parts[3] if len(parts) == 4 else b""
    return LogRecord(parts[0].decode(), parts[1].decode(), parts[2] == b"P", text)


class PartialJoiner:
    """Joins partial records into complete lines, per stream (stdout and stderr interleave)."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, bytearray]] = {}

    def feed(self, record: LogRecord) -> LogLine | None:
        """Add a record; return the line it completes, if any."""
        started, text = self._pending.pop(record.stream, (record.timestamp, bytearray()))
        text += record.text
        if record.partial:
            self._pending[record.stream] = (started, text)
            return None
        return LogLine(started, record.stream, bytes(text))

    def flush(self) -> list[LogLine]:
        """Lines still waiting for their end (the container exited mid-line)."""
        lines = [LogLine(ts, stream, bytes(text)) for stream, (ts, text) in self._pending.items()]
        self._pending.clear()
        return lines


def parse_k8s_log(data: bytes) -> list[LogLine]:
    """All complete lines of a k8s-file log; an unterminated last line is ignored, blank skipped."""
    joiner = PartialJoiner()
    lines = []
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n") or not raw.strip():
            continue
        line = joiner.feed(parse_k8s_record(raw))
        if line is not None:
            lines.append(line)
    return [*lines, *joiner.flush()]


def last_lines(lines: Iterable[LogLine], count: int | None) -> list[LogLine]:
    """`--tail N`: the last `count` lines (all of them for None, none for 0)."""
    if count is None:
        return list(lines)
    if count < 0:
        raise PodunitError(f"--tail must not be negative, got {count}")
    return list(deque(lines, maxlen=count))


# --- k8s-file reading and following -------------------------------------------------------


class K8sFileFollower:
    """Reads a k8s-file log incrementally, surviving conmon's replacement or truncation of it.

    The old file is read to its end before switching; a file that conmon filled
    and replaced entirely between two polls (FOLLOW_POLL_SECONDS) is not seen.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._buffer = b""
        self._joiner = PartialJoiner()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _reopen_if_replaced(self) -> list[LogLine]:
        """Switch to a new file at the path; return what the old one still held."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return []  # not created yet
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open while following
            return []
        opened = os.fstat(self._file.fileno())
        if (on_disk.st_ino, on_disk.st_dev) != (opened.st_ino, opened.st_dev):
            leftover = self._drain()  # written to the old file before the rename
            self._file.close()
            self._file = open(self.path, "rb")  # noqa: SIM115
            self._buffer = b""
            return leftover
        if on_disk.st_size < self._file.tell():
            self._file.seek(0)  # truncated in place
            self._buffer = b""
        return []

    def _drain(self) -> list[LogLine]:
        assert self._file is not None
        self._buffer += self._file.read()
        *complete, self._buffer = self._buffer.split(b"\n")
        lines = []
        for raw in complete:
            if raw.strip():
                line = self._joiner.feed(parse_k8s_record(raw))
                if line is not None:
                    lines.append(line)
        return lines

    def read_available(self) -> list[LogLine]:
        """Every complete line written since the last call."""
        leftover = self._reopen_if_replaced()
        return [*leftover, *self._drain()] if self._file is not None else leftover

    def pending(self) -> list[LogLine]:
        """Partial lines still waiting for their end, as lines."""
        return self._joiner.flush()

    def follow(
        self, still_running: Callable[[], bool], *, poll: float = FOLLOW_POLL_SECONDS
    ) -> Iterator[LogLine]:
        """Yield lines as they arrive until `still_running()` is false and the file is drained."""
        while True:
            running = still_running()  # sample before reading: no line written before exit is lost
            yield from self.read_available()
            if not running:
                yield from self._joiner.flush()
                return
            time.sleep(poll)


def read_k8s_file(path: Path) -> list[LogLine]:
    """The whole log; a missing file means the container wrote nothing yet."""
    try:
        return parse_k8s_log(path.read_bytes())
    except FileNotFoundError:
        return []


# --- journald --------------------------------------------------------------------------------


def journal_entry_line(entry: dict[str, object]) -> tuple[LogLine, bool]:
    """A journal entry of conmon's as (line, partial)."""
    message = entry.get("MESSAGE", b"")
    text = message if isinstance(message, bytes) else str(message).encode()
    text = text.removesuffix(b"\n")  # conmon sends complete lines with their newline
    priority = entry.get("PRIORITY")
    stream = STDERR if str(priority) == str(JOURNAL_PRIORITY_STDERR) else STDOUT
    stamp = entry.get("__REALTIME_TIMESTAMP")
    timestamp = stamp.isoformat() if hasattr(stamp, "isoformat") else str(stamp or "")
    partial = str(entry.get("CONTAINER_PARTIAL_MESSAGE", "")).lower() == "true"
    return LogLine(timestamp, stream, text), partial


def journal_lines(entries: Iterable[dict[str, object]], joiner: PartialJoiner) -> list[LogLine]:
    """Complete lines from conmon's journal entries, partial messages joined across calls."""
    lines = []
    for entry in entries:
        line, partial = journal_entry_line(entry)
        joined = joiner.feed(LogRecord(line.timestamp, line.stream, partial, line.text))
        if joined is not None:
            lines.append(joined)
    return lines


def _journal_reader(container_id: str) -> Any:
    """A systemd.journal.Reader matching the container (CONTAINER_ID_FULL, as conmon writes it)."""
    try:
        from systemd import journal
    except ImportError as error:  # pragma: no cover - a dependency of podunit
        raise PodunitError("systemd-python is not installed: cannot read the journal") from error
    reader = journal.Reader()
    reader.add_match(CONTAINER_ID_FULL=container_id)
    # MESSAGE must stay bytes: container output need not be UTF-8.
    reader.converters["MESSAGE"] = lambda value: value
    return reader


def read_journal(
    container_id: str,
    *,
    tail: int | None = None,
    follow: bool = False,
    still_running: Callable[[], bool] = lambda: False,
) -> Iterator[LogLine]:
    """The container's journal lines; with `follow`, wait for more until it stops running."""
    reader: Any = _journal_reader(container_id)
    joiner = PartialJoiner()
    yield from last_lines(journal_lines(reader, joiner), tail)
    while follow:
        running = still_running()
        reader.wait(JOURNAL_WAIT_SECONDS)
        yield from journal_lines(reader, joiner)
        follow = running
    yield from joiner.flush()


# --- output and the CLI handler ---------------------------------------------------------------


def write_line(line: LogLine) -> None:
    """stdout lines to our stdout, stderr lines to our stderr (like `podman logs`)."""
    target = sys.stderr if line.stream == STDERR else sys.stdout
    target.flush()
    target.buffer.write(line.text + b"\n")
    target.buffer.flush()


def no_logs_message(driver: str, name: str) -> str:
    """Why `podunit logs` has nothing to show for `none`/`passthrough`."""
    if driver == PASSTHROUGH:
        return (
            f"container {name} uses log_driver passthrough: logs went to the unit's stdout: "
            f"see journalctl -u {name}"
        )
    return f"container {name} uses log_driver none: its output was discarded"


def show_logs(
    *,
    name: str,
    container_id: str,
    driver: str,
    log_path: Path | None,
    tail: int | None,
    follow: bool,
    still_running: Callable[[], bool],
    emit: Callable[[LogLine], None] = write_line,
) -> None:
    """Print a container's logs from wherever its log driver put them."""
    if driver == K8S_FILE:
        if log_path is None:
            raise PodunitError(f"container {name} has no k8s-file log path recorded")
        follower = K8sFileFollower(log_path)
        try:
            lines = follower.read_available()
            if not follow:
                lines += follower.pending()  # a last line the container never ended
            for line in last_lines(lines, tail):
                emit(line)
            if follow:
                for line in follower.follow(still_running):
                    emit(line)
        finally:
            follower.close()
    elif driver == JOURNALD:
        for line in read_journal(
            container_id, tail=tail, follow=follow, still_running=still_running
        ):
            emit(line)
    else:
        raise PodunitError(no_logs_message(driver, name))


@dataclass(frozen=True)
class LogTarget:
    """What `podunit logs` needs to know about a container (from the state database)."""

    name: str
    container_id: str
    driver: str
    log_path: Path | None
    still_running: Callable[[], bool]


def lookup_log_target(store: StateStore, name: str) -> LogTarget:
    """The container `name` as recorded in the state database (options log_driver, log_path)."""
    record = store.get(name)
    log_path = record.options.log_path

    def still_running() -> bool:
        return sync_status(store, record).alive

    return LogTarget(
        name=record.name,
        container_id=record.id,
        driver=record.options.log_driver,
        log_path=Path(log_path) if log_path else None,
        still_running=still_running,
    )

"""The `podunit exec` path stays event-driven and cheap (issue 6; toolkit.runtime.exec).

Real processes, sockets, pipes and SQLite. What exec may import is checked with the other
hot paths in tests/unit/test_light_imports.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.errors import InvalidState
from toolkit.proc import process_start_time, wait_until_gone
from toolkit.runtime import attach
from toolkit.runtime import exec as exec_sessions
from toolkit.storage import records
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import PAUSED, RUNNING, ContainerRecord
from toolkit.storage.state import StateStore

# A fresh interpreter: a container whose process and conmon (two sleeps here) are alive.
REQUIRE_RUNNING_PROBE = """
import json, os, subprocess, sys, time
from toolkit.runtime.exec import require_running
from toolkit.storage.paths import RuntimePaths
from toolkit.proc import process_start_time, wait_until_gone
from toolkit.storage.state import StateStore
from toolkit.storage.records import ContainerRecord
payload, monitor = (subprocess.Popen(["sleep", "60"]) for _ in range(2))
try:
    with StateStore(RuntimePaths.for_mode(False)) as store:
        record = ContainerRecord(
            id="c" * 64, name="web", runtime="/usr/sbin/runc", status=sys.argv[1],
            created_at=time.time(), spec={}, pid=payload.pid,
            pid_start_time=process_start_time(payload.pid), conmon_pid=monitor.pid,
            conmon_start_time=process_start_time(monitor.pid),
        )
        store.add(record)
        try:
            answer = require_running(store, record).status
        except Exception as error:
            answer = str(error)
    print(json.dumps([answer, "toolkit.runtime.status" in sys.modules]))
finally:
    for child in (payload, monitor):
        child.kill()
        child.wait()
"""


def _fresh(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return result.stdout


def test_exec_records_are_immutable_values() -> None:
    config = records.ExecConfig(command=("sh", "-c", "x"), tty=True, environment=(("A", "1"),))
    assert config == records.ExecConfig(
        command=("sh", "-c", "x"), tty=True, environment=(("A", "1"),)
    )
    assert hash(config) == hash(records.ExecConfig.from_json(config.to_json()))
    assert config != records.ExecConfig(command=("sh", "-c", "x"))
    with pytest.raises(AttributeError, match="ExecConfig is immutable: cannot set tty"):
        config.tty = False  # type: ignore[misc]
    session = records.ExecSession(
        id="a" * 64, container_id="b" * 64, state="created", config=config, created_at=1.0
    )
    running = session._replace(state="running", pid=7)
    assert (running.state, running.pid, running.config, running.processes) == (
        "running", 7, config, records.ExecProcesses()
    )  # fmt: skip
    assert (session.state, session.pid) == ("created", None)
    assert "pid=7" in repr(running)
    with pytest.raises(TypeError):
        session._replace(no_such_field=1)


@pytest.mark.parametrize(
    ("status", "answer", "status_machinery"),
    [
        (RUNNING, RUNNING, False),  # the common case: two /proc reads, nothing imported
        (PAUSED, "container web is paused", True),  # anything else: status.sync_status
    ],
)
def test_require_running_uses_the_status_machinery_only_when_needed(
    tmp_path: Path, status: str, answer: str, status_machinery: bool
) -> None:
    env = {
        **os.environ,
        "PODUNIT_STATE_DIR": str(tmp_path / "state"),
        "PODUNIT_RUN_DIR": str(tmp_path / "run"),
    }
    assert json.loads(_fresh(REQUIRE_RUNNING_PROBE, status, env=env)) == [
        answer, status_machinery
    ]  # fmt: skip


def test_a_container_whose_process_is_gone_is_not_running(tmp_path: Path) -> None:
    paths = RuntimePaths.for_mode(
        False,
        {"PODUNIT_STATE_DIR": str(tmp_path / "state"), "PODUNIT_RUN_DIR": str(tmp_path / "run")},
    )
    gone = subprocess.Popen(["true"])
    gone.wait()
    monitor = subprocess.Popen(["sleep", "60"])
    try:
        with StateStore(paths) as store:
            record = ContainerRecord(
                id="d" * 64, name="db", runtime="/usr/sbin/runc", status=RUNNING,
                created_at=time.time(), spec={}, pid=gone.pid, pid_start_time=1,
                conmon_pid=monitor.pid, conmon_start_time=process_start_time(monitor.pid),
            )  # fmt: skip
            store.add(record)
            with pytest.raises(InvalidState, match="container db is not running"):
                exec_sessions.require_running(store, record)
    finally:
        monitor.kill()
        monitor.wait()


def test_removing_a_container_without_exec_sessions_needs_no_transaction(
    tmp_path: Path,
) -> None:
    """`rm` calls stop_all_sessions: with no exec directory it does not touch the database."""
    paths = RuntimePaths.for_mode(
        False,
        {"PODUNIT_STATE_DIR": str(tmp_path / "state"), "PODUNIT_RUN_DIR": str(tmp_path / "run")},
    )
    with StateStore(paths) as store:
        record = ContainerRecord(
            id="e" * 64, name="idle", runtime="/usr/sbin/runc", status=RUNNING,
            created_at=time.time(), spec={},
        )  # fmt: skip
        store.add(record)
        other = sqlite3.connect(paths.database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            before = time.monotonic()
            exec_sessions.stop_all_sessions(store, record)
            assert time.monotonic() - before < 5.0
        finally:
            other.execute("ROLLBACK")
            other.close()
        Path(paths.exec_dir(record.id), "s1").mkdir(parents=True)
        exec_sessions.stop_all_sessions(store, record)  # with one: looked up, files removed
        assert not Path(paths.exec_dir(record.id)).exists()


def _session_rows(store: StateStore) -> list[tuple[str, str, int | None]]:
    with store.transaction() as db:
        rows = db.execute("SELECT id, state, exit_code FROM exec_sessions").fetchall()
    return [tuple(row) for row in rows]


def test_reaping_a_session_updates_its_row_and_never_recreates_it(tmp_path: Path) -> None:
    """A `--list` racing with the `podunit exec` that removes its session leaves no row."""
    paths = RuntimePaths.for_mode(
        False,
        {"PODUNIT_STATE_DIR": str(tmp_path / "state"), "PODUNIT_RUN_DIR": str(tmp_path / "run")},
    )
    ended = subprocess.Popen(["true"])
    ended.wait()
    with StateStore(paths) as store:
        record = ContainerRecord(
            id="f" * 64, name="app", runtime="/usr/sbin/runc", status=RUNNING,
            created_at=time.time(), spec={},
        )  # fmt: skip
        store.add(record)
        session = records.ExecSession(
            id="1" * 64, container_id=record.id, state=records.SESSION_RUNNING,
            config=records.ExecConfig(command=("true",)), created_at=time.time(), pid=ended.pid,
            processes=records.ExecProcesses(pid_start_time=1),
        )  # fmt: skip
        store.add_exec_session(session)
        exit_file = Path(exec_sessions.session_dir(paths, record.id, session.id), "exit")
        exit_file.parent.mkdir(parents=True)
        # the process is gone, conmon has not written the exit file yet: stopped, code unknown
        assert exec_sessions.refresh_session(store, session).exit_code is None
        assert _session_rows(store) == [(session.id, "stopped", None)]
        exit_file.write_text("3")  # then conmon writes it: the code is filled in
        assert exec_sessions.refresh_session(store, session).exit_code == 3
        assert _session_rows(store) == [(session.id, "stopped", 3)]
        store.remove_exec_session(session.id)  # its `podunit exec` removes it
        assert exec_sessions.refresh_session(store, session).state == "stopped"
        assert _session_rows(store) == []


def test_a_session_of_a_container_removed_meanwhile_is_a_clear_error(tmp_path: Path) -> None:
    paths = RuntimePaths.for_mode(
        False,
        {"PODUNIT_STATE_DIR": str(tmp_path / "state"), "PODUNIT_RUN_DIR": str(tmp_path / "run")},
    )
    with StateStore(paths) as store:
        session = records.ExecSession(
            id="2" * 64, container_id="9" * 64, state=records.SESSION_RUNNING,
            config=records.ExecConfig(command=("true",)), created_at=time.time(), pid=1,
        )  # fmt: skip
        with pytest.raises(InvalidState, match="container 999999999999 was removed while"):
            store.add_exec_session(session)
        assert _session_rows(store) == []


# --- waiting for a process to be gone (exec --stop/--rm -f, stop_all_sessions) --------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def test_wait_gone_returns_when_the_process_exits(sleeper: subprocess.Popen[bytes]) -> None:
    started = process_start_time(sleeper.pid)
    os.kill(sleeper.pid, signal.SIGTERM)
    before = time.monotonic()
    assert wait_until_gone(sleeper.pid, started, 30.0) is True
    assert time.monotonic() - before < 10.0  # woken by the exit, not by the timeout


def test_wait_gone_times_out_on_a_live_process(sleeper: subprocess.Popen[bytes]) -> None:
    started = process_start_time(sleeper.pid)
    before = time.monotonic()
    assert wait_until_gone(sleeper.pid, started, 0.2) is False
    assert time.monotonic() - before >= 0.2
    assert sleeper.poll() is None


def test_wait_gone_does_not_wait_on_another_process(sleeper: subprocess.Popen[bytes]) -> None:
    """A pid that now names another process (other start time) counts as gone."""
    started = process_start_time(sleeper.pid)
    assert started is not None
    assert wait_until_gone(sleeper.pid, started + 1, 30.0) is True
    assert wait_until_gone(None, None, 30.0) is True
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert wait_until_gone(finished.pid, None, 30.0) is True


# --- the attach relay ---------------------------------------------------------------------


def _conmon_side() -> tuple[socket.socket, socket.socket]:
    ours, conmons = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return ours, conmons


def test_relay_splits_the_streams_and_forwards_stdin_until_eof(tmp_path: Path) -> None:
    ours, conmons = _conmon_side()
    stdin_read, stdin_write = os.pipe()
    os.write(stdin_write, b"input")
    os.close(stdin_write)
    conmons.send(bytes([attach.ATTACH_STDOUT]) + b"hello ")
    conmons.send(bytes([attach.ATTACH_STDERR]) + b"oops")
    conmons.send(bytes([attach.ATTACH_STDOUT]) + b"world")
    received: list[bytes] = []

    def conmon() -> None:  # what conmon does: read the process's stdin to its end, then close
        conmons.settimeout(30)
        try:
            while chunk := conmons.recv(100):
                received.append(chunk)
            received.append(b"<EOF>")  # our shutdown(SHUT_WR): the process's stdin ends
        finally:
            conmons.close()  # the end of the output: the relay returns

    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        thread = threading.Thread(target=conmon)
        thread.start()
        attach.relay(ours, stdin=stdin_read, stdout=out.fileno(), stderr=err.fileno())
        thread.join()
    os.close(stdin_read)
    ours.close()
    assert b"".join(received) == b"input<EOF>"
    assert (tmp_path / "out").read_bytes() == b"hello world"
    assert (tmp_path / "err").read_bytes() == b"oops"


def test_relay_reports_a_closed_reader_once_and_drops_its_output(tmp_path: Path) -> None:
    ours, conmons = _conmon_side()
    reader, writer = os.pipe()
    os.close(reader)
    closed: list[int] = []
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it up
    try:
        with open(tmp_path / "err", "wb") as err:
            for data in (b"a", b"b"):
                conmons.send(bytes([attach.ATTACH_STDOUT]) + data)
            conmons.send(bytes([attach.ATTACH_STDERR]) + b"still here")
            conmons.close()
            attach.relay(
                ours, stdin=None, stdout=writer, stderr=err.fileno(),
                on_output_closed=lambda: closed.append(1),
            )  # fmt: skip
    finally:
        signal.signal(signal.SIGPIPE, previous)
        os.close(writer)
        ours.close()
    assert closed == [1]
    assert (tmp_path / "err").read_bytes() == b"still here"

"""The state store (storage.state) and paths (storage.paths): real SQLite in a temp dir."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pytest

from toolkit.errors import ContainerNotFound, PodunitError
from toolkit.storage import records
from toolkit.storage import state as st
from toolkit.storage.paths import SYSTEM_RUN_DIR, SYSTEM_STATE_DIR, RuntimePaths


def paths_in(tmp: Path) -> RuntimePaths:
    env = {"PODUNIT_STATE_DIR": str(tmp / "state"), "PODUNIT_RUN_DIR": str(tmp / "run")}
    return RuntimePaths.for_mode(False, env)


def record(name: str = "web", cid: str | None = None) -> records.ContainerRecord:
    return records.ContainerRecord(
        id=cid or os.urandom(32).hex(),
        name=name,
        runtime="/usr/sbin/runc",
        status=records.RUNNING,
        created_at=time.time(),
        spec={"process": {"args": ["true"]}},
        options=records.ContainerOptions(stop_timeout=10.0),
        pid=42,
        conmon_pid=41,
    )


def test_paths_for_modes() -> None:
    system = RuntimePaths.for_mode(False, {})
    assert (system.state_dir, system.run_dir) == (SYSTEM_STATE_DIR, SYSTEM_RUN_DIR)
    assert system.unit_pidfile("web") == "/run/podunit/pidfiles/web.pid"
    user = RuntimePaths.for_mode(True, {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7"})
    assert user.state_dir == "/home/u/.local/share/podunit"
    assert user.run_dir == "/run/user/7/podunit"
    # spelt as pathlib spelt them (a database stores its directories and checks them)
    odd = RuntimePaths.for_mode(
        True,
        {"XDG_DATA_HOME": "/d//x/./", "XDG_RUNTIME_DIR": "/r/", "PODUNIT_RUN_DIR": "//o/./r//"},
    )
    assert (odd.state_dir, odd.run_dir) == (str(Path("/d//x/./", "podunit")), "//o/r")
    assert RuntimePaths(user=False, state_dir=Path("/s"), run_dir="/r") == RuntimePaths(
        user=False, state_dir="/s", run_dir=Path("/r")
    )
    with pytest.raises(PodunitError, match="XDG_RUNTIME_DIR"):
        RuntimePaths.for_mode(True, {"HOME": "/home/u"})
    with pytest.raises(PodunitError, match="absolute"):
        RuntimePaths.for_mode(False, {"PODUNIT_STATE_DIR": "relative/dir"})


def test_directories_are_private(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    with st.StateStore(paths):
        pass
    assert os.stat(paths.state_dir).st_mode & 0o777 == 0o700
    assert os.stat(paths.database).st_mode & 0o777 == 0o600
    for directory in (paths.exits_dir, paths.locks_dir, paths.containers_dir):
        assert os.path.isdir(directory)
    assert Path(paths.boot_id_stamp).read_text().strip() == st.current_boot_id()


def test_add_find_update_remove(tmp_path: Path) -> None:
    with st.StateStore(paths_in(tmp_path)) as store:
        first = record("web")
        store.add(first)
        assert store.get("web") == first
        assert store.get(first.id) == first
        assert store.get(first.id[:8]) == first
        updated = store.update(first, status=records.PAUSED)
        assert store.get("web").status == records.PAUSED == updated.status
        with pytest.raises(PodunitError, match="already in use"):
            store.add(record("web"))
        store.remove(first)
        assert store.find("web") is None
        with pytest.raises(ContainerNotFound, match="no such container: web"):
            store.get("web")


def test_exit_code_is_recorded_once_and_survives_removal(tmp_path: Path) -> None:
    with st.StateStore(paths_in(tmp_path)) as store:
        r = record("job")
        store.add(r)
        first = store.record_exit(r, 7, reason=None, finished_at=100.0)
        second = store.record_exit(r, 9, reason="late", finished_at=200.0)
        assert first.exit_code == second.exit_code == 7
        assert store.get("job").status == records.EXITED
        store.remove(r)
        assert store.exit_code("job") == (7, None)
        assert store.exit_code(r.id) == (7, None)
        assert store.exit_code("other") is None


def test_reboot_marks_alive_containers_exited_and_clears_exec_sessions(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    with st.StateStore(paths) as store:
        alive, done = record("alive"), record("done")
        store.add(alive)
        store.add(done)
        store.record_exit(done, 0, reason=None, finished_at=1.0)
        with store.transaction() as db:
            db.execute(
                "INSERT INTO exec_sessions (id, container_id, state, config, created_at) "
                "VALUES ('s', ?, 'running', '{}', 0)",
                (alive.id,),
            )
    # a reboot: the run directory's stamp and the database's boot id are another boot's
    with st.StateStore(paths) as store, store.transaction() as db:
        db.execute("UPDATE meta SET value = 'some-other-boot' WHERE key = 'boot_id'")
    Path(paths.boot_id_stamp).write_text("some-other-boot\n")
    with st.StateStore(paths) as store:
        after = store.get("alive")
        assert (after.status, after.exit_code, after.exit_reason) == (
            records.EXITED,
            -1,
            st.REBOOT_REASON,
        )
        assert store.get("done").exit_code == 0
        with store.transaction() as db:
            assert db.execute("SELECT count(*) FROM exec_sessions").fetchone()[0] == 0
    assert Path(paths.boot_id_stamp).read_text().strip() == st.current_boot_id()


def test_a_database_of_other_directories_is_refused(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    with st.StateStore(paths):
        pass
    moved = RuntimePaths(user=False, state_dir=paths.state_dir, run_dir=tmp_path / "elsewhere")
    with pytest.raises(PodunitError, match="run_dir") as raised:
        st.StateStore(moved)
    assert raised.value.hint and "PODUNIT_RUN_DIR" in raised.value.hint


def test_durability_settings(tmp_path: Path) -> None:
    with st.StateStore(paths_in(tmp_path)) as store:
        db = store._connection
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL (WAL: crash-safe)
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000


def test_a_failed_transaction_is_rolled_back(tmp_path: Path) -> None:
    with st.StateStore(paths_in(tmp_path)) as store:
        r = record("rolled")
        with pytest.raises(RuntimeError), store.transaction() as db:
            db.execute("DELETE FROM meta")
            raise RuntimeError("boom")
        store.add(r)  # still usable, and meta is intact
        assert store._connection.execute("SELECT count(*) FROM meta").fetchone()[0] >= 3


def _writer(directory: str, index: int) -> None:
    paths = paths_in(Path(directory))
    with st.StateStore(paths) as store:
        for n in range(10):
            r = record(f"c{index}-{n}")
            store.add(r)
            store.update(r, status=records.PAUSED)
            store.record_exit(r, n, reason=None, finished_at=time.time())


def test_concurrent_writers_do_not_fail(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(str(tmp_path), i)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * 8
    with st.StateStore(paths_in(tmp_path)) as store:
        assert len(store.all()) == 80
        assert {r.status for r in store.all()} == {records.EXITED}


def _hold_lock(lock_path: str, ready: str) -> None:
    with st.flocked(lock_path):
        Path(ready).touch()
        time.sleep(30)


def test_container_lock_dies_with_its_holder(tmp_path: Path) -> None:
    lock, ready = tmp_path / "c.lock", tmp_path / "ready"
    holder = multiprocessing.get_context("fork").Process(target=_hold_lock, args=(lock, ready))
    holder.start()
    while not ready.exists():
        time.sleep(0.01)
    holder.kill()
    holder.join()
    started = time.monotonic()
    with st.flocked(str(lock)):
        pass
    assert time.monotonic() - started < 1


def test_schema_has_the_exec_sessions_table_for_exec(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    with st.StateStore(paths):
        pass
    columns = {
        row[1]
        for row in sqlite3.connect(paths.database).execute("PRAGMA table_info(exec_sessions)")
    }
    assert {"id", "container_id", "pid", "state", "exit_code", "config"} <= columns


def test_unusable_state_directory_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    paths = RuntimePaths(user=False, state_dir=blocker / "state", run_dir=tmp_path / "run")
    with pytest.raises(PodunitError, match="cannot use podunit's state") as raised:
        st.StateStore(paths)
    assert "Not a directory" in str(raised.value)


def test_a_database_locked_beyond_the_busy_timeout_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = paths_in(tmp_path)
    with st.StateStore(paths):
        pass
    monkeypatch.setattr(st, "BUSY_TIMEOUT_SECONDS", 0.2)
    holder = sqlite3.connect(paths.database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # the first write (whether opening or adding) fails with a one-line error
        with pytest.raises(PodunitError, match="locked") as raised, st.StateStore(paths) as store:
            store.add(record("blocked"))
        assert str(paths.database) in str(raised.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with st.StateStore(paths) as store:
        store.add(record("blocked"))  # usable again once the lock is gone
        assert store.get("blocked").name == "blocked"


def test_exit_codes_of_removed_containers_are_pruned(tmp_path: Path) -> None:
    with st.StateStore(paths_in(tmp_path)) as store:
        ancient = record("old")
        store.add(ancient)
        store.record_exit(ancient, 1, reason=None, finished_at=time.time() - 30 * 24 * 3600)
        store.remove(ancient)
        kept = record("kept-row")  # not removed: its exit code stays however old
        store.add(kept)
        store.record_exit(kept, 2, reason=None, finished_at=1.0)
        for n in range(st.EXIT_CODES_PER_NAME + 5):
            r = record("restarted")
            store.add(r)
            store.record_exit(r, n, reason=None, finished_at=1000.0 + n + time.time())
            store.remove(r)
        assert store.exit_code("old") is None
        assert store.exit_code("kept-row") == (2, None)
        count = store._connection.execute(
            "SELECT count(*) FROM exit_codes WHERE name = 'restarted'"
        ).fetchone()[0]
        assert count == st.EXIT_CODES_PER_NAME
        assert store.exit_code("restarted") == (st.EXIT_CODES_PER_NAME + 4, None)

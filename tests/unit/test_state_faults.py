"""The state store under faults (issue 15 items 6, 11, 17): real SQLite in a temp dir.

- a lost `boot-id` stamp or run directory is not a reboot (item 6);
- a row with bad JSON is skipped and reported, and can be removed; a file that is
  not a database is one error saying what to do (item 11);
- a lost database adopts the containers still running from their bundles (item 17).

A "conmon" here is a plain process whose command line names the container id, as
conmon's `-c ID` does: what `state.conmon_of` checks.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.errors import PodunitError
from toolkit.proc import process_start_time
from toolkit.storage import records
from toolkit.storage import state as st
from toolkit.storage.paths import RuntimePaths


def paths_in(tmp: Path) -> RuntimePaths:
    env = {"PODUNIT_STATE_DIR": str(tmp / "state"), "PODUNIT_RUN_DIR": str(tmp / "run")}
    return RuntimePaths.for_mode(False, env)


@pytest.fixture
def fake_conmon() -> Iterator[tuple[str, int]]:
    """A live process whose command line names a new container id: (id, pid)."""
    container_id = os.urandom(32).hex()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-c", container_id]
    )
    try:
        yield container_id, child.pid
    finally:
        child.kill()
        child.wait()


def running(container_id: str, pid: int | None, name: str = "web") -> records.ContainerRecord:
    return records.ContainerRecord(
        id=container_id,
        name=name,
        runtime="/usr/sbin/runc",
        status=records.RUNNING,
        created_at=time.time(),
        spec={"process": {"args": ["sleep", "100"]}},
        options=records.ContainerOptions(
            stop_timeout=10.0, cgroup_placement={"manager": "cgroupfs"}
        ),
        pid=pid,
        pid_start_time=process_start_time(pid) if pid else None,
        conmon_pid=pid,
        conmon_start_time=process_start_time(pid) if pid else None,
    )


def set_meta_boot_id(paths: RuntimePaths, value: str) -> None:
    with st.StateStore(paths) as store, store.transaction() as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'boot_id'", (value,))


# --- item 6: a lost stamp is not a reboot ----------------------------------------------------


def test_the_database_records_the_kernel_boot_id(tmp_path: Path) -> None:
    with st.StateStore(paths_in(tmp_path)) as store:
        assert store._meta()["boot_id"] == st.current_boot_id()


def test_a_lost_boot_id_stamp_is_not_a_reboot(tmp_path: Path, fake_conmon: tuple[str, int]) -> None:
    paths = paths_in(tmp_path)
    cid, pid = fake_conmon
    with st.StateStore(paths) as store:
        store.add(running(cid, pid))
        store.add(running(os.urandom(32).hex(), None, name="gone")._replace(status=records.CREATED))
    os.unlink(paths.boot_id_stamp)
    with st.StateStore(paths) as store:
        assert store.get("web").status == records.RUNNING
        assert store.get("gone").status == records.CREATED  # not taken for rebooted either
    assert Path(paths.boot_id_stamp).read_text().strip() == st.current_boot_id()


def test_a_lost_run_directory_is_not_a_reboot(tmp_path: Path, fake_conmon: tuple[str, int]) -> None:
    paths = paths_in(tmp_path)
    cid, pid = fake_conmon
    with st.StateStore(paths) as store:
        store.add(running(cid, pid))
    subprocess.run(["rm", "-rf", paths.run_dir], check=True)
    with st.StateStore(paths) as store:
        assert store.get("web").status == records.RUNNING
    assert os.path.isdir(paths.locks_dir)  # made again
    # conmon writes its exit file into the bundle (its persist directory): made again too
    bundle = Path(paths.bundle_dir(cid))
    assert json.loads((bundle / "config.json").read_text()) == running(cid, pid).spec
    assert json.loads((bundle / st.BUNDLE_RECORD).read_text())["name"] == "web"


def test_a_reboot_keeps_a_container_whose_conmon_is_alive(
    tmp_path: Path, fake_conmon: tuple[str, int]
) -> None:
    """The second fact: the database says another boot, but this conmon (pid, start time,
    command line with the id) runs: it cannot be from another boot."""
    paths = paths_in(tmp_path)
    cid, pid = fake_conmon
    with st.StateStore(paths) as store:
        store.add(running(cid, pid))
        dead = running(os.urandom(32).hex(), pid, name="dead")  # pid alive, but not its conmon
        store.add(dead)
    set_meta_boot_id(paths, "another-boot")
    Path(paths.boot_id_stamp).write_text("another-boot\n")
    with st.StateStore(paths) as store:
        assert store.get("web").status == records.RUNNING
        after = store.get("dead")
        assert (after.status, after.exit_code, after.exit_reason) == (
            records.EXITED, -1, st.REBOOT_REASON,
        )  # fmt: skip
        assert store._meta()["boot_id"] == st.current_boot_id()


def test_a_database_from_before_boot_ids_reconciles_on_the_process_check(
    tmp_path: Path, fake_conmon: tuple[str, int]
) -> None:
    paths = paths_in(tmp_path)
    cid, pid = fake_conmon
    with st.StateStore(paths) as store:
        store.add(running(cid, pid))
        store.add(running(os.urandom(32).hex(), None, name="old"))
        with store.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'boot_id'")
    os.unlink(paths.boot_id_stamp)
    with st.StateStore(paths) as store:
        assert store.get("web").status == records.RUNNING
        assert store.get("old").exit_reason == st.REBOOT_REASON


# --- item 11: a damaged row, a damaged database ----------------------------------------------


def corrupt(paths: RuntimePaths, name: str, column: str = "spec") -> None:
    with st.StateStore(paths) as store, store.transaction() as db:
        db.execute(f"UPDATE containers SET {column} = '{{not json' WHERE name = ?", (name,))


def test_a_row_with_bad_json_is_skipped_and_reported(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    with st.StateStore(paths) as store:
        good = running(os.urandom(32).hex(), None, name="good")
        bad = running(os.urandom(32).hex(), None, name="bad")
        store.add(good)
        store.add(bad)
    corrupt(paths, "bad", "options")
    with st.StateStore(paths) as store:
        assert [r.name for r in store.all()] == ["good"]
        assert [(s.name, s.column) for s in store.skipped] == [("bad", "options")]
        message = str(store.skipped[0])
        assert "\n" not in message and "bad" in message and "options" in message
        assert store.skipped[0].hint == "remove it: podunit rm -f bad"
        with pytest.raises(records.CorruptRecord) as raised:
            store.find("bad")
        assert raised.value.container_id == bad.id
        store.remove_id(raised.value.container_id)
        assert store.find("bad") is None
        assert store.all() == [good]


def test_a_spec_that_is_json_but_not_an_object_is_damaged(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    with st.StateStore(paths) as store:
        store.add(running(os.urandom(32).hex(), None))
        with store.transaction() as db:
            db.execute("UPDATE containers SET spec = '[1, 2]'")
        with pytest.raises(records.CorruptRecord):
            store.get("web")


def test_a_file_that_is_not_a_database_is_one_error_saying_what_to_do(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    os.makedirs(paths.state_dir)
    Path(paths.database).write_bytes(os.urandom(8192))
    with pytest.raises(PodunitError) as raised:
        st.StateStore(paths)
    error = raised.value
    assert f"state database {paths.database} is damaged" in str(error)
    assert "\n" not in str(error)
    assert error.hint is not None and f"mv {paths.database} {paths.database}.broken" in error.hint


# --- item 17: a lost database adopts what still runs ------------------------------------------


def make_bundle(paths: RuntimePaths, record: records.ContainerRecord) -> None:
    os.makedirs(paths.bundle_dir(record.id), exist_ok=True)
    with open(os.path.join(paths.bundle_dir(record.id), "config.json"), "w") as config:
        json.dump(record.spec, config)
    st.write_bundle_record(paths, record)


def test_a_lost_database_adopts_the_running_containers(
    tmp_path: Path, fake_conmon: tuple[str, int]
) -> None:
    paths = paths_in(tmp_path)
    cid, pid = fake_conmon
    with st.StateStore(paths) as store:
        alive = running(cid, pid, name="adhoc")
        store.add(alive)
        make_bundle(paths, alive)
        dead = running(os.urandom(32).hex(), None, name="dead")
        store.add(dead)
        make_bundle(paths, dead)
    for suffix in ("", "-wal", "-shm"):
        Path(paths.database + suffix).unlink(missing_ok=True)
    with st.StateStore(paths) as store:
        adopted = store.get("adhoc")
        assert adopted == alive  # every column back, the spec from config.json
        assert store.find("dead") is None  # its conmon is gone: nothing to protect
        with pytest.raises(PodunitError, match="already in use"):
            store.add(running(os.urandom(32).hex(), None, name="adhoc"))


def test_a_bundle_without_a_usable_record_is_not_adopted(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    paths.ensure()
    cid = os.urandom(32).hex()
    os.makedirs(paths.bundle_dir(cid))
    Path(paths.bundle_dir(cid), st.BUNDLE_RECORD).write_text("{broken")
    with st.StateStore(paths) as store:
        assert store.all() == []


def test_every_write_of_an_existing_database_is_unaffected_by_adoption(tmp_path: Path) -> None:
    """Adoption runs only for a database made new: an existing one is never rewritten."""
    paths = paths_in(tmp_path)
    with st.StateStore(paths):
        pass
    before = os.stat(paths.database).st_mtime_ns
    with st.StateStore(paths) as store:
        assert store.all() == []
    assert os.stat(paths.database).st_mtime_ns == before
    assert sqlite3.connect(paths.database).execute("PRAGMA journal_mode").fetchone() == ("wal",)

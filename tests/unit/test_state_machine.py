"""The container state machine without root: create -> start -> exit file -> status, stop
escalation, rm of a half-made container, a dead conmon, reboot reconcile, scopes.

The OCI runtime and conmon are `tests.support.fakes.FakeRuntime` (two shell processes per
container, real exit files and pids), the system manager `FakeSystemd`; the state store,
the status machinery and the verbs are podunit's own. tests/system/ runs the real ones.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import BrokenSystemd, FakeRuntime, FakeSystemd, installed
from toolkit.definitions.model import CgroupMode
from toolkit.errors import InvalidState, PodunitError
from toolkit.runtime import launch, lifecycle, status
from toolkit.runtime.placement import placement_to_json
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import (
    CREATED,
    EXITED,
    PAUSED,
    RUNNING,
    ContainerOptions,
    ContainerRecord,
)
from toolkit.storage.state import REBOOT_REASON, StateStore
from toolkit.systemd import cgroups


def ignores_sigterm(ready: Path) -> list[str]:
    """A payload that ignores SIGTERM; `ready` exists once its trap is set."""
    return ["sh", "-c", f"trap '' TERM; touch {ready}; while :; do sleep 0.05; done"]


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    paths = RuntimePaths(user=False, state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    with StateStore(paths) as opened:
        yield opened


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    fake = FakeRuntime()
    with installed(fake):
        yield fake


def created(
    store: StateStore,
    args: list[str],
    *,
    name: str = "web",
    mode: CgroupMode = CgroupMode.DISABLED,
    stop_timeout: float = 5.0,
) -> ContainerRecord:
    """A container as `podunit create` leaves it: row, bundle, monitor and payload waiting."""
    container_id = os.urandom(32).hex()
    placement = cgroups.decide_placement(
        mode, container_id, own_cgroup=None, in_service=False, bus_reachable=True
    )
    record = ContainerRecord(
        id=container_id, name=name, runtime="/usr/bin/fake-runtime", status=CREATED,
        created_at=time.time(), spec={"process": {"args": args}},
        options=ContainerOptions(
            cgroup_placement=placement_to_json(placement), stop_timeout=stop_timeout,
            log_driver="none",
        ),
    )  # fmt: skip
    store.add(record)
    return launch.launch_container(store, record, stdio=launch.Stdio())


def leftovers(store: StateStore, runtime: FakeRuntime, record: ContainerRecord) -> list[str]:
    found = [f"process of {cid[:12]}" for cid in runtime.alive()]
    for path in (store.paths.bundle_dir(record.id), store.paths.exit_file(record.id)):
        if os.path.exists(path):
            found.append(path)
    return found


def test_create_start_exit_file_status(store: StateStore, runtime: FakeRuntime) -> None:
    record = created(store, ["sh", "-c", "exit 3"])
    assert record.status == CREATED and record.pid and record.conmon_pid
    assert runtime.state(record) == {**(runtime.state(record) or {}), "status": "created"}
    assert status.sync_status(store, record).status == CREATED  # waits for start
    record = launch.start_created(store, record)
    assert record.status == RUNNING
    done = status.wait_for_exit(store, record, timeout=10)
    assert (done.status, done.exit_code, done.exit_reason) == (EXITED, 3, None)
    assert store.get("web").options.released  # finalize released the run
    assert ("delete", record.id) in runtime.calls
    assert leftovers(store, runtime, record) == []
    assert store.exit_code("web") == (3, None)


def test_a_created_container_has_its_bundle_record(store: StateStore, runtime: FakeRuntime) -> None:
    """launch_container writes <bundle>/podunit.json (what a lost database adopts) with the
    monitor's pid, as start_created does with the running status."""
    from toolkit.storage.state import BUNDLE_RECORD

    record = created(store, ["sh", "-c", "exit 0"])
    path = Path(store.paths.bundle_dir(record.id), BUNDLE_RECORD)
    written = json.loads(path.read_text())
    assert (written["status"], written["conmon_pid"]) == (CREATED, record.conmon_pid)
    record = launch.start_created(store, record)
    assert json.loads(path.read_text())["status"] == RUNNING
    status.wait_for_exit(store, record, timeout=10)


def test_stop_sends_the_stop_signal_and_nothing_more_when_it_works(
    store: StateStore, runtime: FakeRuntime
) -> None:
    record = launch.start_created(store, created(store, ["sleep", "1000"]))
    stopped = lifecycle.stop_container(store, record)
    assert (stopped.status, stopped.exit_code) == (EXITED, 128 + 15)
    # SIGTERM went straight to the process (pidfd), no runtime kill was needed
    assert [call for call in runtime.calls if call[0] == "kill"] == []


def test_stop_escalates_to_sigkill_after_the_stop_timeout(
    store: StateStore, runtime: FakeRuntime, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    record = launch.start_created(store, created(store, ignores_sigterm(ready), stop_timeout=0.3))
    wait_for(ready)
    started = time.monotonic()
    stopped = lifecycle.stop_container(store, record)
    assert time.monotonic() - started >= 0.3
    assert (stopped.status, stopped.exit_code) == (EXITED, 128 + 9)
    assert ("kill", record.id, "9") in runtime.calls
    lifecycle.remove_container(store, stopped)
    assert store.find("web") is None
    assert leftovers(store, runtime, record) == []


def test_stop_of_a_paused_container_resumes_it_for_the_kill(
    store: StateStore, runtime: FakeRuntime
) -> None:
    record = launch.start_created(store, created(store, ["sleep", "1000"], stop_timeout=0.2))
    paused = lifecycle.set_paused(store, record, True)
    assert paused.status == PAUSED and (runtime.state(paused) or {})["status"] == "paused"
    with pytest.raises(InvalidState, match="is paused, not running"):
        lifecycle.set_paused(store, paused, True)
    stopped = lifecycle.stop_container(store, paused)
    assert stopped.status == EXITED and ("resume", record.id) in runtime.calls


def test_rm_of_a_running_container_needs_force(store: StateStore, runtime: FakeRuntime) -> None:
    record = launch.start_created(store, created(store, ["sleep", "1000"]))
    with pytest.raises(InvalidState, match="cannot remove it"):
        lifecycle.remove_container(store, record)
    lifecycle.remove_container(store, record, force=True, timeout=0)
    assert store.find("web") is None
    assert leftovers(store, runtime, record) == []


def test_rm_of_a_created_container_that_never_ran(store: StateStore, runtime: FakeRuntime) -> None:
    record = created(store, ["sleep", "1000"])
    lifecycle.remove_container(store, record)
    assert store.find("web") is None
    assert leftovers(store, runtime, record) == []


def test_a_half_made_container_is_removed_whole(store: StateStore) -> None:
    """conmon and the payload were spawned, then the runtime failed: nothing stays."""
    runtime = FakeRuntime(fail_create="runtime said no")
    with installed(runtime), pytest.raises(PodunitError, match="runtime said no"):
        created(store, ["sleep", "1000"])
    record = store.find("web")
    assert record is None
    assert runtime.alive() == [] and [c[0] for c in runtime.calls] == ["create", "delete"]
    assert os.listdir(store.paths.containers_dir) == []


def test_conmon_dying_without_an_exit_file_is_a_runaway(
    store: StateStore, runtime: FakeRuntime
) -> None:
    record = launch.start_created(store, created(store, ["sleep", "1000"]))
    os.kill(record.conmon_pid or 0, 9)  # the monitor dies; the payload lives on
    deadline = time.monotonic() + 5
    while status.sync_status(store, record).status != EXITED and time.monotonic() < deadline:
        time.sleep(0.02)
    gone = store.get("web")
    assert (gone.status, gone.exit_code, gone.exit_reason) == (EXITED, -1, status.RUNAWAY_REASON)
    assert ("kill", record.id, "9", "--all") in runtime.calls  # the payload was killed
    assert leftovers(store, runtime, record) == []


def test_a_reboot_marks_living_containers_exited(store: StateStore, runtime: FakeRuntime) -> None:
    record = launch.start_created(store, created(store, ["sleep", "1000"]))
    # a reboot: the database's boot id (and the run directory's stamp) are another boot's;
    # a lost stamp alone is no reboot (issue 15 item 6)
    with store.transaction() as db:
        db.execute("UPDATE meta SET value = 'an-earlier-boot' WHERE key = 'boot_id'")
    Path(store.paths.boot_id_stamp).write_text("an-earlier-boot\n")
    with StateStore(store.paths) as after_reboot:
        rebooted = after_reboot.get("web")
    assert (rebooted.status, rebooted.exit_code, rebooted.exit_reason) == (
        EXITED, -1, REBOOT_REASON,
    )  # fmt: skip
    assert rebooted.id == record.id and not rebooted.alive


def test_enabled_containers_get_a_conmon_scope_and_lose_both_scopes_on_rm(
    store: StateStore,
) -> None:
    runtime, systemd = FakeRuntime(), FakeSystemd()
    with installed(runtime, systemd):
        record = launch.start_created(
            store, created(store, ["sleep", "1000"], mode=CgroupMode.ENABLED)
        )
        scope = f"podunit-conmon-{record.id}.scope"
        assert systemd.scopes[scope][0] == [record.conmon_pid]
        lifecycle.remove_container(store, record, force=True, timeout=0)
    assert systemd.scopes == {}
    assert ("stop_unit", f"podunit-{record.id}.scope") in systemd.calls
    assert ("stop_unit", scope) in systemd.calls


def test_a_scope_systemd_refuses_leaves_nothing_behind(store: StateStore) -> None:
    runtime, systemd = FakeRuntime(), BrokenSystemd()
    with installed(runtime, systemd), pytest.raises(PodunitError, match="access denied"):
        created(store, ["sleep", "1000"], mode=CgroupMode.ENABLED)
    assert store.find("web") is None
    assert runtime.alive() == [] and runtime.calls[-1][:1] == ("delete",)

"""Pure parts of the runtime (invoke, placement, status, launch, lifecycle): cgroup placements
in config.json, exit files, log drivers, signals, describe."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from toolkit import proc
from toolkit.cli import containers
from toolkit.definitions.model import CgroupMode, LogDriver, Resources
from toolkit.errors import PodunitError
from toolkit.runtime import invoke, launch, lifecycle, placement, status
from toolkit.storage.records import CREATED, EXITED, RUNNING, ContainerOptions, ContainerRecord
from toolkit.systemd import cgroups

CID = "cd" * 32


def decided(mode: CgroupMode, **facts: object) -> cgroups.CgroupPlacement:
    defaults: dict[str, object] = {"own_cgroup": "/user.slice", "in_service": False,
                                   "bus_reachable": True}  # fmt: skip
    defaults.update(facts)
    return cgroups.decide_placement(mode, CID, **defaults)  # type: ignore[arg-type]


def test_placements_survive_the_json_round_trip() -> None:
    enabled = cgroups.decide_placement(
        CgroupMode.ENABLED, CID, own_cgroup="/", in_service=False, bus_reachable=True
    )
    enabled = enabled._replace(
        resources=Resources(memory=1 << 20),
        annotations=(("org.systemd.property.A", "uint64 1"),),
    )
    split = decided(CgroupMode.SPLIT, own_cgroup="/system.slice/web.service", in_service=True)
    for original in (enabled, split, decided(CgroupMode.DISABLED)):
        assert placement.placement_from_json(placement.placement_to_json(original)) == original


def test_apply_placement_replaces_cgroup_settings_of_an_earlier_placement() -> None:
    spec: dict[str, Any] = {
        "annotations": {"org.systemd.property.KillSignal": "int32 15", "mine": "kept"},
        "linux": {"cgroupsPath": "/system.slice/old.service/payload",
                  "resources": {"devices": [{"allow": False, "access": "rwm"}],
                                "memory": {"limit": 5}}},
    }  # fmt: skip
    cgroupfs = decided(CgroupMode.SPLIT, bus_reachable=False)
    cgroupfs = cgroupfs._replace(resources=Resources(pids=7, cpus=0.5))
    applied = placement.apply_placement(spec, cgroupfs)
    assert applied["linux"]["cgroupsPath"] == f"/podunit/{CID}"
    assert applied["annotations"] == {"mine": "kept"}
    assert applied["linux"]["resources"]["pids"] == {"limit": 7}
    assert applied["linux"]["resources"]["cpu"] == {"quota": 50000, "period": 100000}
    assert "memory" not in applied["linux"]["resources"]
    assert applied["linux"]["resources"]["devices"] == spec["linux"]["resources"]["devices"]
    assert spec["linux"]["cgroupsPath"] == "/system.slice/old.service/payload"  # not mutated
    disabled = placement.apply_placement(spec, decided(CgroupMode.DISABLED))
    assert "cgroupsPath" not in disabled["linux"]


def test_spec_resources() -> None:
    everything = Resources(memory=1 << 30, memory_reservation=1 << 20, cpus=1.5, cpu_weight=100,
                           pids=64)  # fmt: skip
    assert placement.spec_resources(everything) == {
        "memory": {"limit": 1 << 30, "reservation": 1 << 20},
        "cpu": {"quota": 150000, "period": 100000, "shares": 1024},
        "pids": {"limit": 64},
    }
    assert placement.spec_resources(Resources()) == {}


def test_runtime_args_follow_the_placement(tmp_path: Path) -> None:
    from toolkit.storage.paths import RuntimePaths

    paths = RuntimePaths(user=False, state_dir=tmp_path / "s", run_dir=tmp_path / "r")
    systemd = decided(CgroupMode.ENABLED)
    assert placement.runtime_args_for(systemd, paths, "/usr/sbin/runc") == [
        "--root", str(tmp_path / "r" / "runtime-runc"), "--systemd-cgroup",
    ]  # fmt: skip
    disabled = placement.runtime_args_for(decided(CgroupMode.DISABLED), paths, "/usr/bin/crun")
    assert disabled[-1] == "--cgroup-manager=disabled"


def test_read_exit_file(tmp_path: Path) -> None:
    exit_file = tmp_path / "exit"
    assert status.read_exit_file(exit_file) is None
    exit_file.write_text("")
    assert status.read_exit_file(exit_file) is None  # still being written
    exit_file.write_text("137")
    code, mtime = status.read_exit_file(exit_file) or (None, None)
    assert code == 137 and mtime == pytest.approx(time.time(), abs=60)


def test_log_driver_choice() -> None:
    assert launch.choose_log_driver(LogDriver.NONE, True) is LogDriver.NONE
    assert launch.choose_log_driver(None, True) is LogDriver.PASSTHROUGH
    assert launch.choose_log_driver(None, False) in (LogDriver.JOURNALD, LogDriver.K8S_FILE)


def test_signal_parsing_names_numbers_and_errors() -> None:
    assert lifecycle.parse_signal("SIGTERM") == 15
    assert lifecycle.parse_signal("hup") == 1
    assert lifecycle.parse_signal("9") == 9
    assert lifecycle.parse_signal("SIGRTMIN+2") == 36
    for bad in ("0", "65", "SIGNOPE", "", "TERM2"):
        with pytest.raises(PodunitError) as raised:
            lifecycle.parse_signal(bad)
        assert raised.value.hint and "SIGTERM" in raised.value.hint


def test_same_process_alive_detects_reuse() -> None:
    import os

    me = os.getpid()
    start = proc.process_start_time(me)
    assert start is not None
    assert proc.same_process_alive(me, start)
    assert proc.same_process_alive(me, None)
    assert not proc.same_process_alive(me, start + 1)
    assert not proc.same_process_alive(None, None)
    assert not proc.same_process_alive(2**22 + 12345, None)


def test_a_zombie_is_not_alive_but_keeps_its_start_time() -> None:
    import os
    import time

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        while proc.proc_stat_fields(Path(f"/proc/{pid}/stat").read_text())[0] != "Z":
            time.sleep(0.01)
        start = proc.process_start_time(pid)
        assert start is not None
        assert not proc.same_process_alive(pid, start)
    finally:
        os.waitpid(pid, 0)
    assert proc.process_start_time(pid) is None


def test_describe_shows_exit_details_only_when_exited() -> None:
    base = ContainerRecord(id=CID, name="web", runtime="/usr/sbin/runc", status=RUNNING,
                           created_at=0.0, spec={"process": {"args": ["sleep", "1"]}},
                           options=ContainerOptions(log_driver="journald"), pid=10,
                           conmon_pid=9)  # fmt: skip
    running = lifecycle.describe(base)
    assert running["State"]["Running"] is True and running["State"]["Pid"] == 10
    assert running["Command"] == ["sleep", "1"] and running["LogDriver"] == "journald"
    exited = lifecycle.describe(
        base._replace(status=EXITED, exit_code=-1, exit_reason="gone", finished_at=0.0)
    )
    assert exited["State"]["Pid"] == 0 and exited["State"]["ExitCode"] == -1
    assert exited["State"]["Reason"] == "gone"
    assert exited["State"]["FinishedAt"] == "1970-01-01T00:00:00+00:00"


def test_ps_shows_a_multi_line_command_on_one_line() -> None:
    from toolkit.runtime.lifecycle import command_summary

    assert command_summary(["sh", "-c", "echo a\nexit 3"]) == "sh -c echo a\\nexit 3"
    assert command_summary(["printf", "\t\x1b"]) == "printf \\t\\x1b"
    long = command_summary(["x" * 100], width=20)
    assert long == "x" * 17 + "..." and len(long) == 20
    assert command_summary([]) == ""


def test_conmon_calls_podunit_cleanup_at_exit_only_outside_units(tmp_path: Path) -> None:
    """Under a unit conmon 2.1.6 would wait for the exit command on every stop, and
    ExecStopPost's `rm -f` cleans up anyway (launch.conmon_options)."""
    from toolkit.runtime import conmon
    from toolkit.storage.paths import RuntimePaths
    from toolkit.storage.state import StateStore

    paths = RuntimePaths(user=False, state_dir=tmp_path / "s", run_dir=tmp_path / "r")
    record = ContainerRecord(
        id=CID, name="web", runtime="/usr/sbin/runc", status=CREATED, created_at=0.0, spec={},
        options=ContainerOptions(
            cgroup_placement=placement.placement_to_json(decided(CgroupMode.SPLIT)),
            log_driver="journald",
        ),
    )  # fmt: skip
    with StateStore(paths) as store:
        shell = conmon.conmon_argv(launch.conmon_options(store, record))
        unit = conmon.conmon_argv(launch.conmon_options(store, record, exit_command=False))
    assert shell[shell.index("--exit-command") + 1].endswith(("podunit", "python3", "python"))
    exit_args = [shell[i + 1] for i, word in enumerate(shell) if word == "--exit-command-arg"]
    assert exit_args[-2:] == ["cleanup", CID]
    assert "--exit-command" not in unit and "cleanup" not in unit
    # unit mode is `run --plan` (only generated units have it) or `run --unit`, not
    # NOTIFY_SOCKET (issue 15 item 8: a script in any Type=notify service has that)
    assert containers.unit_mode(argparse.Namespace(plan="/run/systemd/generator/podunit/w.json"))
    assert not containers.unit_mode(argparse.Namespace(plan=None))
    assert not containers.unit_mode(argparse.Namespace())
    assert containers.unit_mode(argparse.Namespace(plan=None, unit=True))  # run --unit


def test_cgroups_left_says_when_cleanup_may_have_work(tmp_path: Path) -> None:
    """`release` imports cgroups (and the model) only when this is true."""
    mount = str(tmp_path)
    enabled = decided(CgroupMode.ENABLED, cgroup2_mount=mount)
    assert enabled.manager == "systemd" and placement.cgroups_left(
        placement.placement_to_json(enabled)
    )
    split = decided(CgroupMode.SPLIT, own_cgroup="/system.slice/web.service", in_service=True,
                 cgroup2_mount=mount)  # fmt: skip
    assert split.manager == "cgroupfs" and split.cgroups_path is not None
    payload = Path(mount + split.cgroups_path)
    payload.mkdir(parents=True)
    assert placement.cgroups_left(placement.placement_to_json(split))  # the runtime left it
    payload.rmdir()
    assert not placement.cgroups_left(placement.placement_to_json(split))  # nothing to remove
    cgroups.cleanup_cgroups(split)  # agrees: nothing to do, no error
    disabled = decided(CgroupMode.DISABLED, cgroup2_mount=mount)
    assert not placement.cgroups_left(placement.placement_to_json(disabled))


def test_signal_running_signals_only_the_recorded_running_process() -> None:
    import signal
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    try:
        start = proc.process_start_time(child.pid)
        base = ContainerRecord(
            id=CID, name="web", runtime="/usr/sbin/runc", status=RUNNING, created_at=0.0,
            spec={}, pid=child.pid, pid_start_time=start,
        )  # fmt: skip
        assert start is not None
        assert not invoke.signal_running(base._replace(pid_start_time=start + 1), 15)
        assert not invoke.signal_running(base._replace(status=CREATED), 15)
        assert not invoke.signal_running(base._replace(pid=None), 15)
        assert child.poll() is None  # none of those sent anything
        assert invoke.signal_running(base, signal.SIGTERM)
        assert child.wait(timeout=10) == -signal.SIGTERM
        assert not invoke.signal_running(base, signal.SIGTERM)  # gone (reaped)
    finally:
        child.kill()
        child.wait()


def test_which_searches_path_as_shutil_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "tool").chmod(0o755)
    (tmp_path / "bin" / "plain").write_text("")  # not executable
    (tmp_path / "bin" / "adir").mkdir()
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "plain").write_text("#!/bin/sh\n")
    (tmp_path / "late" / "plain").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}/bin::{tmp_path}/late:/usr/bin:/bin")
    for program in ("tool", "plain", "sh", "env"):
        assert proc.which(program) == shutil.which(program)
    for missing in ("adir", "no-such-program-here"):
        assert shutil.which(missing) is None
        with pytest.raises(PodunitError, match="not found on PATH"):
            proc.which(missing)


def test_wait_for_exit_looks_again_as_soon_as_conmon_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No poll interval between conmon's exit and the recorded exit (every stop waits so)."""
    import subprocess
    import threading

    from toolkit.storage.paths import RuntimePaths
    from toolkit.storage.state import StateStore

    paths = RuntimePaths(user=False, state_dir=tmp_path / "s", run_dir=tmp_path / "r")
    with StateStore(paths) as store:
        exit_file = paths.exit_file(CID)
        conmon = subprocess.Popen(["sh", "-c", f"sleep 0.3; echo 3 > {exit_file}"])
        record = ContainerRecord(
            id=CID, name="web", runtime="/bin/true", status=RUNNING, created_at=0.0, spec={},
            options=ContainerOptions(
                cgroup_placement=placement.placement_to_json(decided(CgroupMode.DISABLED))
            ),
            conmon_pid=conmon.pid, conmon_start_time=proc.process_start_time(conmon.pid),
        )  # fmt: skip
        store.add(record)
        slept: list[float] = []
        real_sleep = time.sleep

        def sleep(seconds: float) -> None:  # records only wait_for_exit's own polling
            if sys._getframe(1).f_code.co_name == "wait_for_exit":
                slept.append(seconds)
            real_sleep(seconds)

        monkeypatch.setattr(time, "sleep", sleep)
        reaper = threading.Thread(target=conmon.wait)
        reaper.start()  # reap conmon as its parent would
        done = status.wait_for_exit(store, record, timeout=10)
        reaper.join()
    assert (done.status, done.exit_code) == (EXITED, 3)
    assert slept == []


def test_wait_until_gone_wakes_when_the_process_exits() -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "0.3"])
    start = proc.process_start_time(child.pid)
    began = time.monotonic()
    assert proc.wait_until_gone(child.pid, start, 10)
    assert time.monotonic() - began < 5
    child.wait()
    assert proc.wait_until_gone(child.pid, start, 10)  # gone: at once
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert not proc.wait_until_gone(sleeper.pid, None, 0.1)  # timeout
        assert proc.wait_until_gone(sleeper.pid, 1, 10)  # another start time: not ours
    finally:
        sleeper.kill()
        sleeper.wait()

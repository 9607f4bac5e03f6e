"""The pure decisions of the cgroup modes (spec §3.4); placement itself is a system test."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest

from toolkit.definitions.model import CgroupMode, Container, Resources
from toolkit.errors import Location
from toolkit.systemd.cgroups import (
    CgroupError,
    CgroupPlacement,
    _remove_cgroup,
    decide_placement,
    is_service_cgroup,
    parse_proc_cgroup,
    payload_scope_annotations,
    prepare_before_conmon,
    scope_properties,
    service_cgroup,
    start_prepare_before_conmon,
    system_bus_reachable,
)

CID = "a" * 64
UNIT = "/system.slice/web.service"


def container(**changes: object) -> Container:
    return Container(
        name="web",
        source=Location("/etc/podunit/web.yaml", 1, 1),
        **changes,  # type: ignore[arg-type]
    )


def test_split_in_a_service_puts_payload_beside_a_supervisor_leaf() -> None:
    placement = decide_placement(
        CgroupMode.SPLIT, CID, own_cgroup=UNIT, in_service=True, bus_reachable=False
    )
    assert placement.mode is CgroupMode.SPLIT
    assert placement.manager == "cgroupfs"
    assert placement.cgroups_path == f"{UNIT}/payload"
    assert placement.supervisor_cgroup == f"{UNIT}/supervisor"
    assert placement.unit_cgroup == UNIT
    assert not placement.systemd_cgroup
    assert placement.conmon_args("crun") == []
    assert placement.annotations == ()


def test_split_placed_again_from_the_supervisor_leaf_finds_the_same_unit() -> None:
    placement = decide_placement(
        CgroupMode.SPLIT,
        CID,
        own_cgroup=f"{UNIT}/supervisor",
        in_service=True,
        bus_reachable=False,
    )
    assert placement.cgroups_path == f"{UNIT}/payload"


def test_enabled_uses_two_scopes_in_machine_slice_and_the_systemd_driver() -> None:
    placement = decide_placement(
        CgroupMode.ENABLED,
        CID,
        own_cgroup=UNIT,
        in_service=True,
        bus_reachable=True,
        container=container(stop_signal=2, stop_timeout=timedelta(seconds=3)),
    )
    assert placement.mode is CgroupMode.ENABLED
    assert placement.cgroups_path == f"machine.slice:podunit:{CID}"
    assert placement.conmon_scope == f"podunit-conmon-{CID}.scope"
    assert placement.payload_scope == f"podunit-{CID}.scope"
    assert placement.conmon_args("/usr/bin/runc") == ["-s"]
    assert dict(placement.annotations) == {
        "org.systemd.property.KillSignal": "int32 2",
        "org.systemd.property.TimeoutStopUSec": "uint64 3000000",
    }


@pytest.mark.parametrize("mode", [CgroupMode.SPLIT, CgroupMode.ENABLED])
def test_outside_systemd_with_a_bus_the_systemd_manager_is_used(mode: CgroupMode) -> None:
    placement = decide_placement(
        mode, CID, own_cgroup="/user.slice/session-1.scope", in_service=False, bus_reachable=True
    )
    decided = (placement.requested, placement.mode, placement.manager)
    assert decided == (mode, CgroupMode.ENABLED, "systemd")
    assert placement.systemd_cgroup


@pytest.mark.parametrize("mode", [CgroupMode.SPLIT, CgroupMode.ENABLED])
def test_outside_systemd_without_a_bus_cgroupfs_is_used(mode: CgroupMode) -> None:
    placement = decide_placement(mode, CID, own_cgroup="/", in_service=False, bus_reachable=False)
    assert placement.manager == "cgroupfs"
    assert placement.cgroups_path == f"/podunit/{CID}"
    assert placement.resources_in_spec
    assert placement.conmon_args("runc") == []


def test_split_without_a_cgroup_v2_hierarchy_falls_back() -> None:
    placement = decide_placement(
        CgroupMode.SPLIT, CID, own_cgroup=None, in_service=True, bus_reachable=True
    )
    assert placement.mode is CgroupMode.ENABLED


def test_disabled_needs_no_cgroup_and_tells_crun() -> None:
    placement = decide_placement(
        CgroupMode.DISABLED, CID, own_cgroup=UNIT, in_service=True, bus_reachable=True
    )
    decided = (placement.mode, placement.manager, placement.cgroups_path)
    assert decided == (CgroupMode.DISABLED, "none", None)
    assert placement.conmon_args("/usr/bin/crun") == ["--runtime-arg", "--cgroup-manager=disabled"]


def test_disabled_with_runc_is_a_clear_error() -> None:
    placement = decide_placement(
        CgroupMode.DISABLED,
        CID,
        own_cgroup=UNIT,
        in_service=True,
        bus_reachable=True,
        container=container(),
    )
    with pytest.raises(CgroupError, match="container web: cgroups: disabled needs crun") as caught:
        placement.conmon_args("runc")
    assert caught.value.hint == "set `runtime: crun` or `cgroups: split`"


def test_resources_become_scope_properties_with_dbus_types() -> None:
    resources = Resources(
        memory=512 * 2**20, memory_reservation=2**20, cpus=1.5, cpu_weight=200, pids=64
    )
    assert scope_properties(resources) == [
        ("MemoryMax", "t", 512 * 2**20),
        ("MemoryLow", "t", 2**20),
        ("CPUQuotaPerSecUSec", "t", 1_500_000),
        ("CPUWeight", "t", 200),
        ("TasksMax", "t", 64),
    ]
    assert scope_properties(Resources()) == []
    annotations = dict(payload_scope_annotations(resources, 15, 10_000_000))
    assert annotations["org.systemd.property.MemoryMax"] == "uint64 536870912"
    assert annotations["org.systemd.property.CPUQuotaPerSecUSec"] == "uint64 1500000"
    assert len(annotations) == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0::/system.slice/web.service\n", "/system.slice/web.service"),
        ("12:pids:/x\n1:name=systemd:/user.slice\n0::/user.slice/a.scope\n", "/user.slice/a.scope"),
        ("12:pids:/x\n1:name=systemd:/user.slice\n", None),
        ("", None),
    ],
)
def test_parse_proc_cgroup_reads_the_unified_line(text: str, expected: str | None) -> None:
    assert parse_proc_cgroup(text) == expected


@pytest.mark.parametrize(
    ("path", "unit", "is_service"),
    [
        (UNIT, UNIT, True),
        (f"{UNIT}/supervisor", UNIT, True),
        ("/system.slice/web.service/payload", "/system.slice/web.service/payload", False),
        (
            "/user.slice/user-0.slice/session-3.scope",
            "/user.slice/user-0.slice/session-3.scope",
            False,
        ),
        ("/", "/", False),
    ],
)
def test_service_cgroup_recognition(path: str, unit: str, is_service: bool) -> None:
    assert service_cgroup(path) == unit
    assert is_service_cgroup(path) is is_service


def test_bus_reachability_probes_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    assert not system_bus_reachable({"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={path}"})
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        assert system_bus_reachable({"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={path}"})
    assert not system_bus_reachable({"DBUS_SYSTEM_BUS_ADDRESS": "tcp:host=localhost,port=1"})


def test_remove_cgroup_removes_empty_trees_and_tolerates_absence(tmp_path: Path) -> None:
    tree = tmp_path / "payload"
    (tree / "child" / "grandchild").mkdir(parents=True)
    _remove_cgroup(tree)
    assert not tree.exists()
    _remove_cgroup(tree)  # already gone: fine


def test_remove_cgroup_reports_a_busy_one(tmp_path: Path) -> None:
    tree = tmp_path / "payload"
    tree.mkdir()
    (tree / "cgroup.procs").write_text("1\n")  # a regular dir with a file cannot be rmdir'ed
    with pytest.raises(CgroupError, match=r"cannot remove cgroup .*payload"):
        _remove_cgroup(tree)


def test_moving_into_a_missing_unit_cgroup_is_a_one_line_error(tmp_path: Path) -> None:
    placement = decide_placement(
        CgroupMode.SPLIT,
        CID,
        own_cgroup=UNIT,
        in_service=True,
        bus_reachable=False,
        cgroup2_mount=str(tmp_path),  # no system.slice/web.service below it
    )
    with pytest.raises(CgroupError) as caught:
        prepare_before_conmon(placement)
    assert str(caught.value) == (
        f"cannot move podunit into {UNIT}/supervisor: No such file or directory"
    )
    assert caught.value.hint == "cgroups: split needs Delegate=yes on the unit"


@pytest.mark.parametrize("mode", [CgroupMode.ENABLED, CgroupMode.DISABLED])
def test_only_split_moves_podunit_itself(tmp_path: Path, mode: CgroupMode) -> None:
    placement = decide_placement(
        mode, CID, own_cgroup=UNIT, in_service=True, bus_reachable=True, cgroup2_mount=str(tmp_path)
    )
    prepare_before_conmon(placement)
    assert list(tmp_path.iterdir()) == []


def _split_placement(mount: Path) -> CgroupPlacement:
    return decide_placement(
        CgroupMode.SPLIT, CID, own_cgroup=UNIT, in_service=True, bus_reachable=False,
        cgroup2_mount=str(mount),
    )  # fmt: skip


def test_an_early_move_is_finished_by_prepare_before_conmon(tmp_path: Path) -> None:
    import os

    (tmp_path / UNIT.lstrip("/")).mkdir(parents=True)
    placement = _split_placement(tmp_path)
    start_prepare_before_conmon(placement)
    prepare_before_conmon(placement)  # waits for the thread
    procs = tmp_path / UNIT.lstrip("/") / "supervisor" / "cgroup.procs"
    assert procs.read_text() == f"{os.getpid()}\n"
    procs.unlink()
    prepare_before_conmon(placement)  # nothing in flight any more: moves by itself
    assert procs.read_text() == f"{os.getpid()}\n"


def test_an_early_move_reports_its_error_where_it_is_awaited(tmp_path: Path) -> None:
    placement = _split_placement(tmp_path)  # no unit cgroup below the mount
    start_prepare_before_conmon(placement)  # does not raise here
    with pytest.raises(CgroupError, match=r"cannot move podunit into .*: No such file"):
        prepare_before_conmon(placement)
    disabled = decide_placement(CgroupMode.DISABLED, CID, own_cgroup=UNIT, in_service=True,
                           bus_reachable=False, cgroup2_mount=str(tmp_path))  # fmt: skip
    start_prepare_before_conmon(disabled)  # nothing to move: no thread
    prepare_before_conmon(disabled)

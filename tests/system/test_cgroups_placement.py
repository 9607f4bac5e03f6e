"""cgroup placement in a real systemd (spec §3.4): scopes over D-Bus, the split layout,
and the payload scope's properties as the runtimes' systemd drivers apply them.

These run without conmon: a plain `sleep` stands in for conmon, and the runtimes
are called directly on a busybox bundle, so they only depend on this module.
"""

from __future__ import annotations

import json
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import Sandbox
from toolkit.systemd.cgroups import parse_proc_cgroup

pytestmark = pytest.mark.system


def python(sandbox: Sandbox, repo_root: Path, script: str, **kwargs: object) -> str:
    """Run a Python snippet inside the sandbox with the checkout's venv; its stdout."""
    result = sandbox.run(
        [f"{repo_root}/.venv/bin/python", "-c", textwrap.dedent(script)],
        **kwargs,  # type: ignore[arg-type]
    )
    return result.stdout.decode()


def show(sandbox: Sandbox, unit: str, *properties: str) -> dict[str, str]:
    argv = ["systemctl", "show", unit, *(f"--property={p}" for p in properties)]
    text = sandbox.run(argv).stdout.decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture
def container_id() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def sleepers(sandbox: Sandbox) -> Iterator[list[int]]:
    """Two background `sleep` processes inside the sandbox (stand-ins for conmon)."""
    pids = [int(sandbox.sh("sleep 300 >/dev/null 2>&1 & echo $!").stdout) for _ in range(2)]
    yield pids
    sandbox.run(["kill", "-KILL", *map(str, pids)], check=False)


def cgroup_of(sandbox: Sandbox, pid: int) -> str | None:
    """The cgroup v2 path of `pid` (the kernel also lists the host's v1 hierarchies)."""
    return parse_proc_cgroup(sandbox.read(f"/proc/{pid}/cgroup").decode())


def test_enabled_moves_conmon_into_its_scope_and_cleanup_removes_it(
    sandbox: Sandbox, repo_root: Path, container_id: str, sleepers: list[int]
) -> None:
    first, second = sleepers

    def place(pid: int) -> None:
        python(
            sandbox,
            repo_root,
            f"""
            from toolkit.systemd.cgroups import host_placement, place_conmon
            from toolkit.definitions.model import CgroupMode
            placement = host_placement(CgroupMode.ENABLED, {container_id!r})
            assert placement.manager == "systemd", placement
            place_conmon(placement, {pid})
            """,
        )

    place(first)
    scope = f"podunit-conmon-{container_id}.scope"
    assert cgroup_of(sandbox, first) == f"/machine.slice/{scope}"
    properties = show(
        sandbox, scope, "Slice", "Delegate", "DefaultDependencies", "Description", "ActiveState"
    )
    assert properties["Slice"] == "machine.slice"
    assert properties["Delegate"] == "yes"
    assert properties["ActiveState"] == "active"
    assert properties["Description"] == f"podunit conmon of container {container_id}"
    assert "shutdown.target" not in show(sandbox, scope, "Conflicts")["Conflicts"]

    # the scope exists already: the next pid joins it instead of failing
    place(second)
    assert cgroup_of(sandbox, second) == f"/machine.slice/{scope}"

    python(
        sandbox,
        repo_root,
        f"""
        from toolkit.systemd.cgroups import host_placement, cleanup_cgroups
        from toolkit.definitions.model import CgroupMode
        cleanup_cgroups(host_placement(CgroupMode.ENABLED, {container_id!r}))
        cleanup_cgroups(host_placement(CgroupMode.ENABLED, {container_id!r}))  # idempotent
        """,
    )
    assert show(sandbox, scope, "LoadState")["LoadState"] == "not-found"


def test_placing_a_vanished_pid_is_a_one_line_error(
    sandbox: Sandbox, repo_root: Path, container_id: str
) -> None:
    out = python(
        sandbox,
        repo_root,
        f"""
        import subprocess
        from toolkit.systemd.cgroups import host_placement, place_conmon
        from toolkit.definitions.model import CgroupMode
        from toolkit.errors import PodunitError
        gone = subprocess.Popen(["true"]); gone.wait()
        try:
            place_conmon(host_placement(CgroupMode.ENABLED, {container_id!r}), gone.pid)
        except PodunitError as error:
            print(error)
        """,
    )
    assert out.startswith(f"cannot create scope podunit-conmon-{container_id}.scope: ")
    assert "\n" not in out.strip()


SPLIT_PROBE = """
    import json, os, subprocess
    from toolkit.systemd.cgroups import parse_proc_cgroup, host_placement, prepare_before_conmon
    from toolkit.definitions.model import CgroupMode
    placement = host_placement(CgroupMode.SPLIT, "c" * 64)
    def v2(text): return parse_proc_cgroup(text)
    before = v2(open("/proc/self/cgroup").read())
    prepare_before_conmon(placement)
    child = subprocess.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True)
    print(json.dumps({
        "mode": placement.mode.value, "cgroups_path": placement.cgroups_path, "before": before,
        "after": v2(open("/proc/self/cgroup").read()), "child": v2(child.stdout),
    }))
"""


def test_split_moves_podunit_into_a_supervisor_leaf_of_its_service(
    sandbox: Sandbox, repo_root: Path
) -> None:
    unit = f"podunit-split-{secrets.token_hex(4)}"
    result = sandbox.run(
        [
            "systemd-run",
            "--wait",
            "--pipe",
            "--quiet",
            f"--unit={unit}",
            "-p",
            "Delegate=yes",
            f"--working-directory={repo_root}",
            f"{repo_root}/.venv/bin/python",
            "-c",
            textwrap.dedent(SPLIT_PROBE),
        ]
    )
    seen = json.loads(result.stdout)
    service = f"/system.slice/{unit}.service"
    assert seen == {
        "mode": "split",
        "cgroups_path": f"{service}/payload",
        "before": service,
        "after": f"{service}/supervisor",
        "child": f"{service}/supervisor",
    }


def test_plan_outside_a_service_uses_the_systemd_manager(sandbox: Sandbox, repo_root: Path) -> None:
    out = python(
        sandbox,
        repo_root,
        """
        from toolkit.systemd.cgroups import host_placement
        from toolkit.definitions.model import CgroupMode
        placement = host_placement(CgroupMode.SPLIT, "d" * 64, environ={})
        print(placement.mode.value, placement.manager, placement.cgroups_path)
        """,
    )
    assert out.split() == ["enabled", "systemd", f"machine.slice:podunit:{'d' * 64}"]


BUNDLE = """
    set -e
    b=/tmp/podunit-cgtest-$1; rm -rf $b; mkdir -p $b/rootfs/bin
    cp /bin/busybox $b/rootfs/bin/ && ln -s busybox $b/rootfs/bin/sleep
    cd $b && crun spec
    echo $b
"""


@pytest.mark.parametrize("runtime", ["crun", "runc"])
def test_payload_scope_carries_stop_settings_and_limits(
    sandbox: Sandbox, repo_root: Path, container_id: str, runtime: str
) -> None:
    bundle = sandbox.sh(textwrap.dedent(BUNDLE).replace("$1", runtime)).stdout.decode().strip()
    python(
        sandbox,
        repo_root,
        f"""
        import json
        from datetime import timedelta
        from toolkit.systemd.cgroups import host_placement
        from toolkit.definitions.model import CgroupMode, Container, Resources
        from toolkit.errors import Location
        container = Container(
            name="web", source=Location("x", 1, 1), stop_signal=2,
            stop_timeout=timedelta(seconds=7),
            resources=Resources(memory=256 << 20, cpus=0.5, cpu_weight=50, pids=32),
        )
        placement = host_placement(
            CgroupMode.ENABLED, {container_id!r}, environ={{}}, container=container
        )
        path = {bundle!r} + "/config.json"
        spec = json.load(open(path))
        spec["process"].update(args=["sleep", "300"], terminal=False)
        spec["linux"]["cgroupsPath"] = placement.cgroups_path
        spec["linux"].pop("resources", None)
        spec["annotations"] = dict(placement.annotations)
        json.dump(spec, open(path, "w"))
        """,
    )
    name = f"cgtest-{runtime}"
    # detached: the payload must not hold the captured stdout open
    sandbox.sh(
        f"{runtime} --systemd-cgroup run -d --bundle {bundle} {name}"
        f" </dev/null >/dev/null 2>{bundle}.err || {{ cat {bundle}.err >&2; exit 1; }}"
    )
    scope = f"podunit-{container_id}.scope"
    try:
        properties = show(
            sandbox,
            scope,
            "Slice",
            "KillSignal",
            "TimeoutStopUSec",
            "MemoryMax",
            "CPUQuotaPerSecUSec",
            "CPUWeight",
            "TasksMax",
        )
        assert properties == {
            "Slice": "machine.slice",
            "KillSignal": "2",
            "TimeoutStopUSec": "7s",
            "MemoryMax": str(256 << 20),
            "CPUQuotaPerSecUSec": "500ms",
            "CPUWeight": "50",
            "TasksMax": "32",
        }
    finally:
        sandbox.run([runtime, "delete", "-f", name], check=False)
        sandbox.run(["rm", "-rf", bundle, f"{bundle}.err"], check=False)
    python(
        sandbox,
        repo_root,
        f"""
        from toolkit.systemd.cgroups import host_placement, cleanup_cgroups
        from toolkit.definitions.model import CgroupMode
        cleanup_cgroups(host_placement(CgroupMode.ENABLED, {container_id!r}, environ={{}}))
        """,
    )
    assert show(sandbox, scope, "LoadState")["LoadState"] == "not-found"


def test_without_a_system_bus_the_payload_gets_a_cgroupfs_cgroup(
    sandbox: Sandbox, repo_root: Path
) -> None:
    base = "/var/tmp/podunit-cgroupfs"
    env = {
        "PODUNIT_STATE_DIR": f"{base}/state",
        "PODUNIT_RUN_DIR": "/run/podunit-cgroupfs",
        "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/no-such-bus",
    }
    podunit = f"{repo_root}/.venv/bin/podunit"
    rootfs = busybox_rootfs(sandbox, f"{base}/busybox")
    try:
        argv = [podunit, "run", "-d", "--name", "cgfs", "--runtime", "runc", "--rootfs", rootfs]
        started = sandbox.run([*argv, "--", "sleep", "300"], env=env)
        container_id = started.stdout.decode().strip()
        inspect = json.loads(sandbox.run([podunit, "inspect", "cgfs"], env=env).stdout)[0]
        payload = int(inspect["State"]["Pid"])
        assert cgroup_of(sandbox, payload) == f"/podunit/{container_id}"
        sandbox.run([podunit, "rm", "-f", "-t", "0", "cgfs"], env=env)
        gone = sandbox.run(["test", "-e", f"/sys/fs/cgroup/podunit/{container_id}"], check=False)
        assert gone.returncode == 1
    finally:
        sandbox.run([podunit, "rm", "-f", "-t", "0", "cgfs"], check=False, env=env)
        sandbox.run(["rm", "-rf", base, env["PODUNIT_RUN_DIR"]], check=False)

"""Cgroup placement of a container, as the runtime stores and applies it (spec §3.4).

`toolkit.systemd.cgroups` decides where conmon and the payload go (a
`CgroupPlacement`); this module validates that against the runtime, stores it with the
container as JSON (`cgroup_plan` in the options), turns it into the runtime's global
options and config.json's cgroupsPath, annotations and limits, and places a container
anew when it is started again. ("Placement", not "plan": plan files are the
generator's, `toolkit.definitions.plan`.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from toolkit.errors import PodunitError
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import ContainerRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

    from toolkit.definitions.model import CgroupMode, Container, Resources
    from toolkit.systemd import cgroups


def placement_to_json(placement: cgroups.CgroupPlacement) -> dict[str, Any]:
    data = placement._asdict()
    data["resources"] = placement.resources._asdict()
    data["requested"] = placement.requested.value
    data["mode"] = placement.mode.value
    data["annotations"] = [list(pair) for pair in placement.annotations]
    return data


def placement_from_json(data: Mapping[str, Any]) -> cgroups.CgroupPlacement:
    from toolkit.definitions.model import CgroupMode, Resources
    from toolkit.systemd import cgroups

    fields = dict(data)
    fields["requested"] = CgroupMode(fields["requested"])
    fields["mode"] = CgroupMode(fields["mode"])
    fields["annotations"] = tuple(tuple(pair) for pair in fields.get("annotations", ()))
    fields["resources"] = Resources(**fields.get("resources", {}))
    return cgroups.CgroupPlacement(**fields)


def runtime_args_for(
    placement: cgroups.CgroupPlacement, paths: RuntimePaths, runtime: str
) -> list[str]:
    """Global runtime options every call for this container needs (`--root`, cgroup manager)."""
    from toolkit.definitions.model import CgroupMode

    name = os.path.basename(runtime)
    args = ["--root", os.path.join(paths.run_dir, f"runtime-{name}")]
    if placement.systemd_cgroup:
        args.append("--systemd-cgroup")
    elif placement.mode is CgroupMode.DISABLED and name == "crun":
        args.append("--cgroup-manager=disabled")
    return args


def placement_for(
    mode: CgroupMode,
    container_id: str,
    runtime: str,
    *,
    container: Container | None = None,
    environ: Mapping[str, str] = os.environ,
) -> cgroups.CgroupPlacement:
    """The cgroup placement (toolkit.systemd.cgroups, spec §3.4), validated against the runtime.

    Rootless (not root): no cgroup of podunit's own; crun runs with its cgroup
    manager disabled, rootless runc tolerates the cgroups it cannot create.
    """
    from toolkit.definitions.model import CgroupMode, Resources
    from toolkit.systemd import cgroups

    if os.geteuid() != 0:
        return cgroups.CgroupPlacement(
            requested=mode,
            mode=CgroupMode.DISABLED,
            manager="none",
            container_id=container_id,
            container_name=container.name if container else "",
            resources=container.resources if container else Resources(),
        )
    placement = cgroups.host_placement(mode, container_id, environ=environ, container=container)
    placement.conmon_args(runtime)  # raises for a mode the runtime cannot do
    return placement


def spec_resources(resources: Resources) -> dict[str, Any]:
    """`resources:` as config.json linux.resources (cgroupfs manager only)."""
    out: dict[str, Any] = {}
    if resources.memory is not None:
        out["memory"] = {"limit": resources.memory}
        if resources.memory_reservation is not None:
            out["memory"]["reservation"] = resources.memory_reservation
    if resources.cpus is not None:
        out.setdefault("cpu", {}).update(
            {"quota": round(resources.cpus * 100_000), "period": 100_000}
        )
    if resources.cpu_weight is not None:
        out.setdefault("cpu", {})["shares"] = max(2, resources.cpu_weight * 1024 // 100)
    if resources.pids is not None:
        out["pids"] = {"limit": resources.pids}
    return out


def apply_placement(spec: dict[str, Any], placement: cgroups.CgroupPlacement) -> dict[str, Any]:
    """config.json with the cgroup placement's cgroupsPath, scope annotations and limits."""
    spec = json.loads(json.dumps(spec))  # a deep copy
    linux = spec.setdefault("linux", {})
    if placement.cgroups_path is None:
        linux.pop("cgroupsPath", None)
    else:
        linux["cgroupsPath"] = placement.cgroups_path
    annotations = {
        key: value
        for key, value in spec.get("annotations", {}).items()
        if not key.startswith("org.systemd.property.")
    }
    annotations.update(dict(placement.annotations))
    if annotations:
        spec["annotations"] = annotations
    else:
        spec.pop("annotations", None)
    resources = linux.setdefault("resources", {})
    for key in ("memory", "cpu", "pids"):
        resources.pop(key, None)
    if placement.resources_in_spec:
        resources.update(spec_resources(placement.resources))
    return spec


def placed_again(record: ContainerRecord, paths: RuntimePaths) -> ContainerRecord:
    """The container with cgroups placed anew for this process (a restart elsewhere)."""
    from toolkit.systemd import cgroups

    old = stored_placement(record)
    placement = placement_for(old.requested, record.id, record.runtime)
    stop_usec = int(record.options.stop_timeout * 1_000_000)
    annotations = (
        cgroups.payload_scope_annotations(old.resources, record.options.stop_signal, stop_usec)
        if placement.systemd_cgroup
        else ()
    )
    placement = placement._replace(
        resources=old.resources, container_name=record.name, annotations=annotations
    )
    options = record.options._replace(
        cgroup_placement=placement_to_json(placement),
        runtime_args=tuple(runtime_args_for(placement, paths, record.runtime)),
    )
    return record._replace(spec=apply_placement(record.spec, placement), options=options)


def stored_placement(record: ContainerRecord) -> cgroups.CgroupPlacement:
    """The cgroup placement stored with the container (every container has one)."""
    if record.options.cgroup_placement is None:
        raise PodunitError(f"container {record.name} has no cgroup placement recorded")
    return placement_from_json(record.options.cgroup_placement)


def cgroups_left(stored: Mapping[str, Any] | None) -> bool:
    """Whether `cgroups.cleanup_cgroups` may have work for this stored placement: scopes of
    `enabled` under systemd, or a cgroupfs cgroup that still exists. Checked on the JSON,
    so that a stop after which `RUNTIME delete` removed everything (split, in a unit)
    imports neither cgroups nor the model."""
    if stored is None:
        return False
    manager = stored.get("manager")
    if manager == "systemd":
        return stored.get("mode") == "enabled"
    path = stored.get("cgroups_path")
    mount = stored.get("cgroup2_mount", "/sys/fs/cgroup")
    return manager == "cgroupfs" and path is not None and os.path.isdir(mount + path)

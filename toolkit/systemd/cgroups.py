"""Where conmon and the payload live: the three cgroup modes of spec §3.4.

- ``split`` (default in units, needs the unit's ``Delegate=yes``): conmon stays in
  the service's cgroup — in a ``supervisor`` leaf, so that the payload's cgroup
  can be a sibling without breaking cgroup v2's no-internal-processes rule — and
  the payload goes into ``<unit cgroup>/payload``, a cgroupfs path handed to the
  runtime. `systemctl status/kill/stop` see and reach both. Limits are the
  unit's own properties (the generator writes them).
- ``enabled``: conmon is moved into ``podunit-conmon-<id>.scope`` over D-Bus
  (StartTransientUnit, org.freedesktop.systemd1(5)) while it waits on its start
  pipe; the runtime's systemd driver (conmon ``-s``, cgroupsPath
  ``machine.slice:podunit:<id>``) creates ``podunit-<id>.scope`` for the payload,
  whose stop signal, timeout and limits come from ``org.systemd.property.*``
  annotations in config.json.
- ``disabled``: no cgroup of its own (crun ``--cgroup-manager=disabled``).

Outside a systemd service (``podunit run`` from a shell) ``split`` and
``enabled`` use the systemd manager (the ``enabled`` layout) when the system bus
is reachable, else cgroupfs under ``/podunit/<id>``.

`host_placement` gathers the facts (own cgroup, bus) and calls the pure
`decide_placement`; the other functions act on a placement.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

from toolkit.definitions.model import CgroupMode, Container, Resources
from toolkit.errors import PodunitError
from toolkit.fs import make_dir, read_text

CgroupManager = Literal["systemd", "cgroupfs", "none"]

MACHINE_SLICE = "machine.slice"
SUPERVISOR_LEAF = "supervisor"
PAYLOAD_LEAF = "payload"
CGROUP2_MOUNTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
JOB_TIMEOUT_SECONDS = 30.0


class CgroupError(PodunitError):
    """A cgroup or scope could not be created, joined or removed."""


class CgroupPlacement(NamedTuple):
    """Decided placement of conmon and the payload for one container."""

    requested: CgroupMode
    mode: CgroupMode  # effective mode
    manager: CgroupManager
    container_id: str
    cgroups_path: str | None = None  # config.json linux.cgroupsPath
    systemd_cgroup: bool = False  # conmon -s (runtime --systemd-cgroup)
    slice: str = MACHINE_SLICE
    conmon_scope: str | None = None  # enabled: podunit-conmon-<id>.scope
    payload_scope: str | None = None  # enabled: podunit-<id>.scope (made by the runtime)
    unit_cgroup: str | None = None  # split: the service's cgroup, e.g. /system.slice/web.service
    supervisor_cgroup: str | None = None  # split: where podunit and conmon go
    cgroup2_mount: str = "/sys/fs/cgroup"
    container_name: str = ""
    annotations: tuple[tuple[str, str], ...] = ()  # org.systemd.property.* for config.json
    resources: Resources = Resources()
    resources_in_spec: bool = False  # True: put limits into linux.resources (cgroupfs only)

    def conmon_args(self, runtime: str) -> list[str]:
        """conmon options for this placement; `runtime` is the runtime binary's name or path."""
        if self.mode is CgroupMode.DISABLED:
            if os.path.basename(runtime) != "crun":
                raise CgroupError(
                    f"container {self.container_name or self.container_id}: cgroups: disabled"
                    " needs crun (runc always creates a cgroup)",
                    hint="set `runtime: crun` or `cgroups: split`",
                )
            return ["--runtime-arg", "--cgroup-manager=disabled"]
        return ["-s"] if self.systemd_cgroup else []


def scope_properties(resources: Resources) -> list[tuple[str, str, int]]:
    """`resources:` as systemd unit properties: (name, D-Bus signature, value)."""
    properties: list[tuple[str, str, int]] = []
    if resources.memory is not None:
        properties.append(("MemoryMax", "t", resources.memory))
    if resources.memory_reservation is not None:
        properties.append(("MemoryLow", "t", resources.memory_reservation))
    if resources.cpus is not None:
        properties.append(("CPUQuotaPerSecUSec", "t", round(resources.cpus * 1_000_000)))
    if resources.cpu_weight is not None:
        properties.append(("CPUWeight", "t", resources.cpu_weight))
    if resources.pids is not None:
        properties.append(("TasksMax", "t", resources.pids))
    return properties


_VARIANT_TYPE_NAMES = {"t": "uint64", "i": "int32", "b": "boolean", "s": "string"}


def payload_scope_annotations(
    resources: Resources, stop_signal: int, stop_timeout_usec: int
) -> tuple[tuple[str, str], ...]:
    """``org.systemd.property.*`` annotations for the runtime's systemd driver.

    Values are GVariant text with an explicit type (``uint64 10000000``), the form
    runc (godbus ParseVariant) and crun both read.
    """
    properties: list[tuple[str, str, int]] = [
        ("KillSignal", "i", stop_signal),
        ("TimeoutStopUSec", "t", stop_timeout_usec),
        *scope_properties(resources),
    ]
    return tuple(
        (f"org.systemd.property.{name}", f"{_VARIANT_TYPE_NAMES[signature]} {value}")
        for name, signature, value in properties
    )


def decide_placement(
    mode: CgroupMode,
    container_id: str,
    *,
    own_cgroup: str | None,
    in_service: bool,
    bus_reachable: bool,
    cgroup2_mount: str = "/sys/fs/cgroup",
    container: Container | None = None,
) -> CgroupPlacement:
    """Pure decision of spec §3.4 from the facts `host_placement` gathers.

    `own_cgroup` is this process's cgroup v2 path (None without a unified
    hierarchy); `in_service` whether it runs as (part of) a systemd service.
    """
    name = container.name if container else ""
    resources = container.resources if container else Resources()
    common: dict[str, Any] = {
        "requested": mode,
        "container_id": container_id,
        "container_name": name,
        "cgroup2_mount": cgroup2_mount,
        "resources": resources,
    }
    if mode is CgroupMode.DISABLED:
        return CgroupPlacement(mode=CgroupMode.DISABLED, manager="none", **common)
    if mode is CgroupMode.SPLIT and in_service and own_cgroup is not None:
        unit = service_cgroup(own_cgroup)
        return CgroupPlacement(
            mode=CgroupMode.SPLIT,
            manager="cgroupfs",
            cgroups_path=f"{unit}/{PAYLOAD_LEAF}",
            unit_cgroup=unit,
            supervisor_cgroup=f"{unit}/{SUPERVISOR_LEAF}",
            **common,
        )
    if bus_reachable:
        stop_signal = container.stop_signal if container else 15
        stop_usec = (
            int(container.stop_timeout.total_seconds() * 1_000_000) if container else 10_000_000
        )
        return CgroupPlacement(
            mode=CgroupMode.ENABLED,
            manager="systemd",
            cgroups_path=f"{MACHINE_SLICE}:podunit:{container_id}",
            systemd_cgroup=True,
            conmon_scope=f"podunit-conmon-{container_id}.scope",
            payload_scope=f"podunit-{container_id}.scope",
            annotations=payload_scope_annotations(resources, stop_signal, stop_usec),
            **common,
        )
    return CgroupPlacement(
        mode=mode,
        manager="cgroupfs",
        cgroups_path=f"/podunit/{container_id}",
        resources_in_spec=True,
        **common,
    )


def service_cgroup(own_cgroup: str) -> str:
    """The unit's cgroup from podunit's own: strips a ``supervisor`` leaf it already moved to."""
    path = own_cgroup.rstrip("/") or "/"
    if path.endswith(f"/{SUPERVISOR_LEAF}"):
        return path[: -len(SUPERVISOR_LEAF) - 1]
    return path


def parse_proc_cgroup(text: str) -> str | None:
    """The cgroup v2 path from /proc/PID/cgroup (the ``0::`` line), None if absent."""
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            return path
    return None


def is_service_cgroup(path: str) -> bool:
    """Whether `path` (or its parent, for our supervisor leaf) is a ``.service`` cgroup."""
    return service_cgroup(path).rsplit("/", 1)[-1].endswith(".service")


def host_placement(
    mode: CgroupMode,
    container_id: str,
    *,
    environ: Mapping[str, str] = os.environ,
    container: Container | None = None,
) -> CgroupPlacement:
    """Decide the placement for `container_id` in the current process's situation."""
    mount = cgroup2_mount()
    own = parse_proc_cgroup(read_text("/proc/self/cgroup")) if mount else None
    in_service = bool(environ.get("INVOCATION_ID")) and own is not None and is_service_cgroup(own)
    needs_bus = mode is not CgroupMode.DISABLED and not (mode is CgroupMode.SPLIT and in_service)
    return decide_placement(
        mode,
        container_id,
        own_cgroup=own,
        in_service=in_service,
        bus_reachable=needs_bus and system_bus_reachable(environ),
        cgroup2_mount=mount or "/sys/fs/cgroup",
        container=container,
    )


def cgroup2_mount() -> str | None:
    """Mount point of the cgroup v2 hierarchy (unified or hybrid layout), None if none."""
    for candidate in CGROUP2_MOUNTS:
        if os.path.exists(os.path.join(candidate, "cgroup.controllers")):
            return candidate
    return None


def system_bus_reachable(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether something accepts connections on the system bus socket."""
    address = environ.get("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={SYSTEM_BUS_SOCKET}")
    path = next(
        (part[len("unix:path=") :] for part in address.split(";") if part.startswith("unix:path=")),
        None,
    )
    if path is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path.split(",", 1)[0])
        except OSError:
            return False
    return True


class _EarlyMove:
    """`_move_into_supervisor` running in a thread (see `start_prepare_before_conmon`)."""

    def __init__(self, placement: CgroupPlacement) -> None:
        import threading

        self.error: CgroupError | None = None
        self.thread = threading.Thread(target=self._move, args=(placement,), daemon=True)
        self.thread.start()

    def _move(self, placement: CgroupPlacement) -> None:
        try:
            _move_into_supervisor(placement)
        except CgroupError as error:
            self.error = error

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


_early_moves: dict[str, _EarlyMove] = {}  # supervisor cgroup -> its move in progress


def _moves_podunit(placement: CgroupPlacement) -> bool:
    return placement.mode is CgroupMode.SPLIT and placement.supervisor_cgroup is not None


def start_prepare_before_conmon(placement: CgroupPlacement) -> None:
    """Begin `prepare_before_conmon` in a thread; it finishes (or raises) there.

    Moving a process between cgroups waits in the kernel for an RCU grace period
    (10-20 ms of every unit start in split mode); `podunit run` starts it as soon as
    the placement is known and builds the bundle meanwhile (the GIL is free while the
    thread waits in write(2)). Nothing may be spawned that must stay behind.
    """
    if _moves_podunit(placement) and placement.supervisor_cgroup not in _early_moves:
        _early_moves[str(placement.supervisor_cgroup)] = _EarlyMove(placement)


def prepare_before_conmon(placement: CgroupPlacement) -> None:
    """split: move podunit into the unit's supervisor leaf, so conmon is born there."""
    if not _moves_podunit(placement):
        return
    early = _early_moves.pop(str(placement.supervisor_cgroup), None)
    if early is not None:
        early.join()
    else:
        _move_into_supervisor(placement)


def _move_into_supervisor(placement: CgroupPlacement) -> None:
    leaf = placement.cgroup2_mount + str(placement.supervisor_cgroup)
    try:
        make_dir(leaf)
        with open(os.path.join(leaf, "cgroup.procs"), "w", encoding="utf-8") as procs:
            procs.write(f"{os.getpid()}\n")
    except OSError as error:
        raise CgroupError(
            f"cannot move podunit into {placement.supervisor_cgroup}: {error.strerror}",
            hint="cgroups: split needs Delegate=yes on the unit",
        ) from None


def place_conmon(placement: CgroupPlacement, conmon_pid: int) -> None:
    """enabled: put `conmon_pid` into ``podunit-conmon-<id>.scope`` and wait for the job."""
    if placement.mode is not CgroupMode.ENABLED or placement.conmon_scope is None:
        return
    container = placement.container_name or placement.container_id
    description = f"podunit conmon of container {container}"
    properties: dict[bytes, Any] = {
        b"Description": description.encode(),
        b"Slice": placement.slice.encode(),
        b"Delegate": True,
        b"DefaultDependencies": False,
        b"_custom": (b"PIDs", b"au", [conmon_pid]),
    }
    with _manager() as systemd:
        systemd.start_scope(placement.conmon_scope, properties, conmon_pid)


def cleanup_cgroups(placement: CgroupPlacement) -> None:
    """Remove what a gone container left: its scopes (enabled) or payload cgroup (split)."""
    if placement.mode is CgroupMode.ENABLED and placement.manager == "systemd":
        scopes = [scope for scope in (placement.payload_scope, placement.conmon_scope) if scope]
        with _manager() as systemd:
            for scope in scopes:
                systemd.stop_unit(scope)
        return
    if placement.cgroups_path is not None and placement.manager == "cgroupfs":
        _remove_cgroup(placement.cgroup2_mount + placement.cgroups_path)


def _remove_cgroup(path: str | os.PathLike[str]) -> None:
    """rmdir an (empty) cgroup and its empty children; a missing one is fine."""
    if not os.path.isdir(path):
        return
    with os.scandir(path) as entries:
        children = sorted((entry.path for entry in entries if entry.is_dir()), reverse=True)
    for child in children:
        _remove_cgroup(child)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise CgroupError(f"cannot remove cgroup {path}: {error.strerror}") from None


class SystemdManager:
    """What podunit asks of the system manager (org.freedesktop.systemd1(5)): transient
    scopes for conmon, and stopping them. A context manager (a connection).

    `_SystemdConnection` is the real one (D-Bus); tests install a fake with `use_manager`
    (tests/support/fakes.py).
    """

    def __enter__(self) -> SystemdManager:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        return None

    def start_scope(self, name: str, properties: dict[bytes, Any], pid: int) -> None:
        """StartTransientUnit `name` with `pid` in it, or move `pid` into it if it exists."""
        raise NotImplementedError

    def stop_unit(self, name: str) -> None:
        """StopUnit `name` and wait; a unit that is not loaded is already gone."""
        raise NotImplementedError


class _SystemdConnection(SystemdManager):
    """The system manager over D-Bus (pystemd), with job waiting."""

    def __enter__(self) -> _SystemdConnection:
        from pystemd.dbuslib import DBus
        from pystemd.systemd1 import Manager

        self._bus = DBus()
        try:
            self._bus.open()
        except Exception as error:
            raise CgroupError(f"cannot connect to the system bus: {error}") from None
        self.manager = Manager(bus=self._bus)
        self._finished_jobs: dict[bytes, bytes] = {}
        try:
            self.manager.load()
        except Exception as error:
            self._bus.close()
            raise CgroupError(f"cannot talk to systemd: {_dbus_message(error)}") from None
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        self._bus.close()
        if isinstance(error, Exception) and not isinstance(error, PodunitError):
            # any other D-Bus failure (Subscribe, matches, bus I/O): one line, no traceback
            raise CgroupError(f"systemd D-Bus call failed: {_dbus_message(error)}") from None

    def start_scope(self, name: str, properties: dict[bytes, Any], pid: int) -> None:
        """StartTransientUnit, wait for its job; an existing scope adopts `pid` instead."""
        self._watch_jobs()
        try:
            job = self.manager.Manager.StartTransientUnit(name.encode(), b"fail", properties)
        except Exception as error:
            if _dbus_error_name(error) != "org.freedesktop.systemd1.UnitExists":
                raise CgroupError(f"cannot create scope {name}: {_dbus_message(error)}") from None
            self._attach(name, pid)
            return
        result = self._wait_for_job(job)
        if result != b"done":
            raise CgroupError(f"scope {name} did not start: job result {result.decode()}")

    def stop_unit(self, name: str) -> None:
        """StopUnit and wait; a unit that is not loaded is already gone."""
        self._watch_jobs()
        try:
            job = self.manager.Manager.StopUnit(name.encode(), b"replace")
        except Exception as error:
            if _dbus_error_name(error) == "org.freedesktop.systemd1.NoSuchUnit":
                return
            raise CgroupError(f"cannot stop {name}: {_dbus_message(error)}") from None
        self._wait_for_job(job)
        with contextlib.suppress(Exception):  # not failed, or already garbage-collected
            self.manager.Manager.ResetFailedUnit(name.encode())

    def _attach(self, name: str, pid: int) -> None:
        try:
            self.manager.Manager.AttachProcessesToUnit(name.encode(), b"/", [pid])
        except Exception as error:
            raise CgroupError(
                f"cannot move pid {pid} into existing {name}: {_dbus_message(error)}"
            ) from None

    def _watch_jobs(self) -> None:
        """Subscribe and match JobRemoved *before* the job is queued (no lost signal)."""
        if getattr(self, "_watching", False):
            return
        self.manager.Manager.Subscribe()
        finished = self._finished_jobs

        def on_job_removed(message: Any, error: object = None, userdata: object = None) -> None:
            # a plain function: pystemd stores metadata on the callback object
            message.process_reply(True)
            _job_id, job_path, _unit, result = message.body
            finished[bytes(job_path)] = bytes(result)

        self._job_callback = on_job_removed  # pystemd keeps only a borrowed pointer to it
        self._bus.match_signal(
            b"org.freedesktop.systemd1",
            b"/org/freedesktop/systemd1",
            b"org.freedesktop.systemd1.Manager",
            b"JobRemoved",
            on_job_removed,
        )
        self._watching = True

    def _wait_for_job(self, job: bytes) -> bytes:
        """Dispatch bus messages until JobRemoved for `job` arrived (or the timeout)."""
        key = bytes(job)
        deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
        while key not in self._finished_jobs:
            if time.monotonic() > deadline:
                raise CgroupError(f"systemd job {key.decode()} did not finish in time")
            if self._bus.process().is_empty():
                self._bus.wait(200_000)  # microseconds; returns at once when data is queued
        return self._finished_jobs.pop(key)


_manager: Callable[[], SystemdManager] = _SystemdConnection


@contextlib.contextmanager
def use_manager(factory: Callable[[], SystemdManager]) -> Iterator[None]:
    """Connect to `factory()` instead of the system bus for the duration of the block."""
    global _manager
    previous, _manager = _manager, factory
    try:
        yield
    finally:
        _manager = previous


def _dbus_error_name(error: Exception) -> str:
    """The D-Bus error name; pystemd keeps it only for errors it has no class for."""
    if type(error).__name__ == "DBusNoSuchUnitError":
        return "org.freedesktop.systemd1.NoSuchUnit"
    name = getattr(error, "err_name", "") or ""
    return name.decode() if isinstance(name, bytes) else str(name)


def _dbus_message(error: Exception) -> str:
    message = getattr(error, "err_message", None) or str(error)
    return message.decode() if isinstance(message, bytes) else str(message)

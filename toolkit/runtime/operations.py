"""Container lifecycle: create, start, run, stop, kill, rm, pause, wait, ps, inspect.

Spec §3.1 and §4; modelled on libpod's oci.go. Each verb is a library call
(`create_container`, `stop_container`, ...) plus a `cli_*` handler that
`toolkit.cli.main` dispatches to.

The run path (`podunit run NAME`, a unit's ExecStart): load the definition ->
reconcile state -> take the socket-activation fds -> plan cgroups -> write the
bundle -> spawn conmon (`toolkit.runtime.conmon`) -> place it -> start -> read the pid
-> record -> pidfile -> notify -> exit 0. conmon is then the unit's main
process and exits with the container's status.

`podunit run` knows it runs as a unit's ExecStart when `NOTIFY_SOCKET` is set
(generated units always have `NotifyAccess=all`): it then detaches after
notifying. From a shell it stays attached (stdio passed straight through with
the `passthrough` log driver) and exits with the container's status; `-d`
detaches.

Status is derived from conmon's exit files and the runtime's `state`: an exit
file means the container exited (code, time, `oom` marker); no exit file and a
dead conmon means a runaway: the container is killed and -1 recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from toolkit import proc
from toolkit.errors import (
    CommandFailed,
    ContainerNotFound,
    ExecutableNotFound,
    InvalidState,
    Location,
    PodunitError,
)
from toolkit.fs import read_text, remove_tree, unlink_if_present
from toolkit.proc import process_start_time, same_process_alive, wait_until_gone
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.state import (
    ALIVE_STATUSES,
    CREATED,
    EXITED,
    PAUSED,
    RUNNING,
    ContainerRecord,
    StateStore,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    # Annotations only. The light verbs (stop, kill, rm, ps, inspect, wait, and exec and
    # logs via `sync_status`) must not pay for the model, the run machinery, argparse,
    # socket or typing at start-up: the functions that need them import them there.
    import argparse
    import socket
    from typing import Any

    from toolkit.definitions.model import CgroupMode, Container, LogDriver, PortMapping, Resources
    from toolkit.runtime import conmon
    from toolkit.systemd import activation, cgroups, notify

KILL_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05
RUNAWAY_REASON = "conmon exited without writing an exit file; the container was killed"
NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


# --- small helpers ----------------------------------------------------------------------------


def open_store(user: bool, environ: Mapping[str, str] = os.environ) -> StateStore:
    """The state of this mode, reconciled after a reboot."""
    return StateStore(RuntimePaths.for_mode(user, environ))


CAP_SYS_RESOURCE = 24  # capabilities(7)


def crun_can_work() -> bool:
    """crun (1.8) raises RLIMIT_MEMLOCK to infinity for its cgroup eBPF programs.

    That needs CAP_SYS_RESOURCE unless the hard limit is already infinite; without
    either (as in containers and sandboxes that drop the capability) every crun
    start fails with "setrlimit (RLIM_MEMLOCK): Operation not permitted".
    """
    import resource

    from toolkit.runtime import oci

    if resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] == resource.RLIM_INFINITY:
        return True
    return oci.CAPABILITY_NAMES[CAP_SYS_RESOURCE] in oci.held_capabilities()


def runtime_binary(name: str | None) -> str:
    """Absolute path of the OCI runtime: `name`, else crun if installed and usable, else runc.

    Spec §1.1 (`runtime`); crun is passed over where it cannot work (`crun_can_work`).
    """
    if name is None:
        candidates = ("crun", "runc") if crun_can_work() else ("runc", "crun")
        for candidate in candidates:
            with contextlib.suppress(ExecutableNotFound):
                return proc.which(candidate)
        raise ExecutableNotFound(
            "no OCI runtime found: neither crun nor runc is on PATH",
            hint="install the Debian package crun or runc",
        )
    try:
        return proc.which(name)
    except ExecutableNotFound:
        raise ExecutableNotFound(
            f"OCI runtime {name}: not found on PATH", hint=f"install the Debian package {name}"
        ) from None


def parse_signal(text: str) -> int:
    """A signal by name (`TERM`, `SIGTERM`, `SIGRTMIN+3`) or number, validated."""
    from toolkit.definitions import values

    try:
        return values.parse_signal(text)
    except ValueError as error:
        raise PodunitError(
            str(error), hint="use a name such as SIGTERM or a number 1..64"
        ) from None


def podunit_command(user: bool, argv0: str | None = None) -> list[str]:
    """How conmon's exit command calls podunit back: the console script beside the
    interpreter, else the `podunit` launcher this process was started as (bin/podunit
    runs the system python3 -I -S), else `python -m toolkit.cli.main` as this process imports
    (`proc.python_module_argv`)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    script = os.path.join(os.path.dirname(sys.executable), "podunit")
    if os.path.exists(script):
        base = [script]
    elif os.path.isabs(argv0) and os.path.basename(argv0) == "podunit":
        base = [argv0]
    else:
        base = proc.python_module_argv("toolkit.cli.main")
    return [*base, *(["--user"] if user else [])]


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


# --- the runtime binary -----------------------------------------------------------------------


def runtime_global_args(record: ContainerRecord) -> list[str]:
    return list(record.options.get("runtime_args", []))


def runtime_call(
    record: ContainerRecord, *args: str, check: bool = True, timeout: float = 30
) -> Any:
    """Run `RUNTIME [global args] ARGS...` for this container.

    Never with NOTIFY_SOCKET or LISTEN_*: `runc start` would run its own notify proxy.
    """
    from toolkit.systemd import activation

    return proc.run([record.runtime, *runtime_global_args(record), *args], check=check,
                    timeout=timeout, env=activation.environment_for_conmon(os.environ))  # fmt: skip


def runtime_state(record: ContainerRecord) -> dict[str, Any] | None:
    """The runtime's `state` of the container, None when the runtime does not know it."""
    result = runtime_call(record, "state", record.id, check=False)
    if result.returncode != 0:
        return None
    try:
        state: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return None
    return state


def runtime_delete(record: ContainerRecord) -> None:
    """`RUNTIME delete --force ID`, tolerating a container the runtime no longer knows."""
    runtime_call(record, "delete", "--force", record.id, check=False)


# --- plans and options stored with the container ---------------------------------------------


def plan_to_json(plan: cgroups.CgroupPlan) -> dict[str, Any]:
    data = plan._asdict()
    data["resources"] = plan.resources._asdict()
    data["requested"] = plan.requested.value
    data["mode"] = plan.mode.value
    data["annotations"] = [list(pair) for pair in plan.annotations]
    return data


def plan_from_json(data: Mapping[str, Any]) -> cgroups.CgroupPlan:
    from toolkit.definitions.model import CgroupMode, Resources
    from toolkit.systemd import cgroups

    fields = dict(data)
    fields["requested"] = CgroupMode(fields["requested"])
    fields["mode"] = CgroupMode(fields["mode"])
    fields["annotations"] = tuple(tuple(pair) for pair in fields.get("annotations", ()))
    fields["resources"] = Resources(**fields.get("resources", {}))
    return cgroups.CgroupPlan(**fields)


def runtime_args_for(plan: cgroups.CgroupPlan, paths: RuntimePaths, runtime: str) -> list[str]:
    """Global runtime options every call for this container needs (`--root`, cgroup manager)."""
    from toolkit.definitions.model import CgroupMode

    name = os.path.basename(runtime)
    args = ["--root", os.path.join(paths.run_dir, f"runtime-{name}")]
    if plan.systemd_cgroup:
        args.append("--systemd-cgroup")
    elif plan.mode is CgroupMode.DISABLED and name == "crun":
        args.append("--cgroup-manager=disabled")
    return args


def plan_for(
    mode: CgroupMode,
    container_id: str,
    runtime: str,
    *,
    container: Container | None = None,
    environ: Mapping[str, str] = os.environ,
) -> cgroups.CgroupPlan:
    """The cgroup plan (toolkit.systemd.cgroups, spec §3.4), validated against the runtime.

    Rootless (not root): no cgroup of podunit's own; crun runs with its cgroup
    manager disabled, rootless runc tolerates the cgroups it cannot create.
    """
    from toolkit.definitions.model import CgroupMode, Resources
    from toolkit.systemd import cgroups

    if os.geteuid() != 0:
        return cgroups.CgroupPlan(
            requested=mode,
            mode=CgroupMode.DISABLED,
            manager="none",
            container_id=container_id,
            container_name=container.name if container else "",
            resources=container.resources if container else Resources(),
        )
    plan = cgroups.plan_cgroups(mode, container_id, environ=environ, container=container)
    plan.conmon_args(runtime)  # raises for a mode the runtime cannot do
    return plan


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


def apply_plan(spec: dict[str, Any], plan: cgroups.CgroupPlan) -> dict[str, Any]:
    """config.json with the cgroup plan's cgroupsPath, scope annotations and limits."""
    spec = json.loads(json.dumps(spec))  # a deep copy
    linux = spec.setdefault("linux", {})
    if plan.cgroups_path is None:
        linux.pop("cgroupsPath", None)
    else:
        linux["cgroupsPath"] = plan.cgroups_path
    annotations = {
        key: value
        for key, value in spec.get("annotations", {}).items()
        if not key.startswith("org.systemd.property.")
    }
    annotations.update(dict(plan.annotations))
    if annotations:
        spec["annotations"] = annotations
    else:
        spec.pop("annotations", None)
    resources = linux.setdefault("resources", {})
    for key in ("memory", "cpu", "pids"):
        resources.pop(key, None)
    if plan.resources_in_spec:
        resources.update(spec_resources(plan.resources))
    return spec


def replan(record: ContainerRecord, paths: RuntimePaths) -> ContainerRecord:
    """The container with cgroups planned anew for this process (a restart elsewhere)."""
    from toolkit.systemd import cgroups

    old = plan_from_json(record.options["cgroup_plan"])
    plan = plan_for(old.requested, record.id, record.runtime)
    stop_usec = int(float(record.options.get("stop_timeout", 10)) * 1_000_000)
    annotations = (
        cgroups.payload_scope_annotations(
            old.resources, int(record.options.get("stop_signal", signal.SIGTERM)), stop_usec
        )
        if plan.systemd_cgroup
        else ()
    )
    plan = plan._replace(
        resources=old.resources, container_name=record.name, annotations=annotations
    )
    options = {
        **record.options,
        "cgroup_plan": plan_to_json(plan),
        "runtime_args": runtime_args_for(plan, paths, record.runtime),
    }
    return record._replace(spec=apply_plan(record.spec, plan), options=options)


# --- ports ------------------------------------------------------------------------------------


def reserve_ports(ports: Sequence[PortMapping]) -> list[socket.socket]:
    """Bind every host port (libpod bindPorts): conmon holds them while the container runs."""
    import socket

    sockets: list[socket.socket] = []
    try:
        for port in ports:
            address = port.host_ip or "0.0.0.0"
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            kind = socket.SOCK_DGRAM if port.protocol == "udp" else socket.SOCK_STREAM
            sock = socket.socket(family, kind)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port.host_port))
            except OSError as error:
                raise PodunitError(
                    f"cannot reserve host port {address}:{port.host_port}/{port.protocol}:"
                    f" {error.strerror}"
                ) from None
            if kind == socket.SOCK_STREAM:
                sock.listen(16)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# --- create and start -------------------------------------------------------------------------


class Stdio:
    """conmon's stdio: fds of this process, None for /dev/null."""

    __slots__ = ("stderr", "stdin", "stdout")

    def __init__(
        self, stdin: int | None = None, stdout: int | None = None, stderr: int | None = None
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr


def new_container_id() -> str:
    return os.urandom(32).hex()  # like secrets.token_hex, without importing hashlib


def choose_log_driver(requested: LogDriver | None, attached: bool) -> LogDriver:
    """Explicit choice, else passthrough when attached, journald if running, else k8s-file."""
    from toolkit.definitions.model import LogDriver

    if requested is not None:
        return requested
    if attached:
        return LogDriver.PASSTHROUGH
    if os.path.exists("/run/systemd/journal/socket"):
        return LogDriver.JOURNALD
    return LogDriver.K8S_FILE


def prepare_record(
    store: StateStore,
    container: Container,
    *,
    log_driver: LogDriver,
    tty: bool = False,
    interactive: bool = False,
    auto_remove: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> tuple[ContainerRecord, notify.NotifySetup, activation.ActivationFds]:
    """Decide everything about a new container and build its config.json (not yet stored)."""
    from toolkit.definitions.model import LogDriver
    from toolkit.runtime import oci
    from toolkit.systemd import activation, cgroups, notify

    if container.rootfs is None:
        raise PodunitError(f"container {container.name!r} has neither rootfs nor image")
    container_id = new_container_id()
    runtime = runtime_binary(container.runtime)
    activation_fds = activation.inherited_sockets(environ)
    plan = plan_for(container.cgroups, container_id, runtime, container=container,
                    environ=environ)  # fmt: skip
    cgroups.start_prepare_before_conmon(plan)  # launch_container waits for it
    bundle = store.paths.bundle_dir(container_id)
    os.makedirs(bundle, mode=0o700, exist_ok=True)
    notify_setup = notify.prepare_container_notify(bundle, container)
    image_options = {"image_rootfs": container.rootfs} if container.image else {}
    try:
        rootfs = _container_root(store.paths, container_id, image_options) or container.rootfs
        extra_env = {**activation.container_environment(activation_fds), **notify_setup.env}
        inputs = oci.gather_inputs(
            container,
            container_id,
            rootfs=rootfs,
            tty=tty,
            extra_env=extra_env,
            extra_mounts=notify_setup.mounts,
            cgroups_path=plan.cgroups_path,
        )
        spec = apply_plan(oci.build_spec(container, inputs), plan)
        log_path = store.paths.log_file(container_id) if log_driver is LogDriver.K8S_FILE else None
        options = {
            "log_driver": log_driver.value,
            "log_path": str(log_path) if log_path else None,
            "log_size_max": container.log_max_size,
            "tty": tty,
            "interactive": interactive,
            "auto_remove": auto_remove,
            "stop_signal": container.stop_signal,
            "stop_timeout": container.stop_timeout.total_seconds(),
            "notify": container.notify.value,
            # with the host's network the container binds host ports itself (as Docker
            # discards published ports there): reserving them would block it
            "ports": []
            if container.network == "host"
            else [port._asdict() for port in container.ports],
            "cgroup_plan": plan_to_json(plan),
            "runtime_args": runtime_args_for(plan, store.paths, runtime),
            "own_pid_namespace": True,
            "preserve_fds": len(activation_fds),
            "image": container.image,
            "rootfs": rootfs,
            **image_options,
            "labels": dict(container.labels),
        }
        record = ContainerRecord(
            id=container_id,
            name=container.name,
            runtime=runtime,
            status=CREATED,
            created_at=time.time(),
            spec=spec,
            options=options,
        )
    except BaseException:
        notify_setup.close()
        remove_tree(bundle)
        _drop_image_layer(store.paths, container_id, image_options)
        raise
    return record, notify_setup, activation_fds


def _container_root(
    paths: RuntimePaths, container_id: str, options: Mapping[str, Any]
) -> str | None:
    """An image container's private root (toolkit.storage.images overlay), mounted if needed."""
    if not options.get("image_rootfs"):
        return None
    from toolkit.storage import images

    layer, mountpoint = paths.image_layer(container_id), paths.rootfs_mount(container_id)
    return str(images.container_rootfs(options["image_rootfs"], layer, mountpoint))


def _unmount_image_root(paths: RuntimePaths, container_id: str, options: Mapping[str, Any]) -> None:
    if options.get("image_rootfs"):
        from toolkit.storage import images

        with contextlib.suppress(PodunitError):
            images.release_container_rootfs(paths.rootfs_mount(container_id))
        with contextlib.suppress(OSError):
            os.rmdir(paths.rootfs_mount(container_id))


def _drop_image_layer(paths: RuntimePaths, container_id: str, options: Mapping[str, Any]) -> None:
    """Unmount and delete an image container's writable layer (on `rm`)."""
    if options.get("image_rootfs"):
        _unmount_image_root(paths, container_id, options)
        remove_tree(paths.image_layer(container_id))


def conmon_options(
    store: StateStore,
    record: ContainerRecord,
    *,
    restore_path: str | None = None,
    exit_command: bool = True,
) -> conmon.ConmonOptions:
    """conmon's options for the container; `exit_command`: call `podunit cleanup` at exit.

    conmon 2.1.6 waits for its exit command before exiting (ctr_exit.c
    `do_exit_command` reaps it), so under a unit, where conmon is the main process
    and ExecStopPost's `podunit rm -f` does the same cleanup, the exit command would
    only delay every `systemctl stop`: `launch_container` leaves it out there.
    """
    from toolkit.runtime import conmon

    stored = record.options
    plan = plan_from_json(stored["cgroup_plan"])
    bundle = store.paths.bundle_dir(record.id)
    return conmon.ConmonOptions(
        container_id=record.id,
        name=record.name,
        runtime=record.runtime,
        bundle_dir=bundle,
        exit_dir=store.paths.exits_dir,
        persist_dir=bundle,
        socket_dir=store.paths.sockets_dir,
        container_pidfile=os.path.join(bundle, "pidfile"),
        conmon_pidfile=os.path.join(bundle, "conmon.pid"),
        log_driver=str(stored["log_driver"]),
        log_path=str(stored["log_path"]) if stored.get("log_path") else None,
        log_size_max=stored.get("log_size_max"),
        log_tag=record.name,
        tty=bool(stored.get("tty")),
        stdin=bool(stored.get("interactive")),
        preserve_fds=int(stored.get("preserve_fds", 0)),
        cgroup_args=("-s",) if plan.systemd_cgroup else (),
        runtime_args=tuple(runtime_global_args(record)),
        exit_command=(*podunit_command(store.paths.user), "cleanup", record.id)
        if exit_command
        else (),
        runtime_log=os.path.join(bundle, "runtime.log"),
        restore_path=restore_path,
    )


def launch_container(
    store: StateStore,
    record: ContainerRecord,
    *,
    stdio: Stdio,
    preserved_fds: Sequence[int] = (),
    environ: Mapping[str, str] = os.environ,
    restore_path: str | None = None,
) -> ContainerRecord:
    """Write the bundle, reserve ports, run conmon + `RUNTIME create`; status `created`.

    With `restore_path` conmon runs `RUNTIME restore` from that checkpoint image
    instead, and the container is `running` at once.

    On any failure nothing is left behind: the runtime's container, the bundle,
    the cgroups, the port sockets and the state row are all removed.
    """
    from toolkit.definitions.model import PortMapping
    from toolkit.runtime import conmon
    from toolkit.systemd import activation, cgroups

    bundle = store.paths.bundle_dir(record.id)
    os.makedirs(bundle, mode=0o700, exist_ok=True)
    _container_root(store.paths, record.id, record.options)  # mounted again after a reboot
    with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as config:
        config.write(json.dumps(record.spec, indent=2))
    unlink_if_present(store.paths.exit_file(record.id))
    for stale in ("exit", "oom", "pidfile", "conmon.pid"):
        unlink_if_present(os.path.join(bundle, stale))
    if record.options.get("log_path"):
        os.makedirs(os.path.dirname(record.options["log_path"]), mode=0o700, exist_ok=True)
    plan = plan_from_json(record.options["cgroup_plan"])
    ports: list[socket.socket] = []
    monitor: conmon.ConmonProcess | None = None
    try:
        ports = reserve_ports([PortMapping(**p) for p in record.options.get("ports", [])])
        cgroups.prepare_before_conmon(plan)
        # under a unit ExecStopPost cleans up; a container-notify unit keeps the exit
        # command so that conmon outlives the notify proxy (cli_cleanup)
        exit_command = not _under_unit(environ) or record.options.get("notify") == "container"
        options = conmon_options(
            store, record, restore_path=restore_path, exit_command=exit_command
        )
        monitor = conmon.launch(
            options,
            environ=activation.environment_for_conmon(environ),
            stdin=stdio.stdin,
            stdout=stdio.stdout,
            stderr=stdio.stderr,
            preserved_fds=preserved_fds,
            extra_fds=[s.fileno() for s in ports],
        )
        cgroups.place_conmon(plan, monitor.launcher_pid)
        monitor.start()
        pid = monitor.container_pid()
        monitor.wait_launcher()
        conmon_pid = monitor.monitor_pid()
    except BaseException:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.wait_launcher(timeout=5)
        _discard_half_made(store, record, plan)
        raise
    finally:
        if monitor is not None:
            monitor.close()
        for sock in ports:
            sock.close()
    return store.update(
        record,
        status=CREATED if restore_path is None else RUNNING,
        pid=pid,
        pid_start_time=process_start_time(pid),
        conmon_pid=conmon_pid,
        conmon_start_time=process_start_time(conmon_pid),
        exit_code=None,
        exit_reason=None,
        oom=False,
        started_at=None if restore_path is None else time.time(),
        finished_at=None,
    )


def _remove_tree_or_link(path: str) -> None:
    """Remove a directory tree, or just the symlink if `path` is one (rmtree refuses those)."""
    if os.path.islink(path):
        unlink_if_present(path)
    else:
        remove_tree(path)


def _discard_half_made(
    store: StateStore, record: ContainerRecord, plan: cgroups.CgroupPlan
) -> None:
    from toolkit.systemd import cgroups

    with contextlib.suppress(Exception):
        runtime_delete(record)
    with contextlib.suppress(Exception):
        cgroups.cleanup_cgroups(plan)
    remove_tree(store.paths.bundle_dir(record.id))
    _remove_tree_or_link(store.paths.attach_socket_dir(record.id))  # conmon's attach symlink
    unlink_if_present(store.paths.exit_file(record.id))
    with contextlib.suppress(Exception):
        if record.options.get("fresh", True):
            _drop_image_layer(store.paths, record.id, record.options)
            store.remove(record)
        else:  # a restart of an exited container: it stays exited
            options = {**record.options, "released": True}
            store.update(record, status=EXITED, pid=None, conmon_pid=None, options=options)


def start_created(store: StateStore, record: ContainerRecord) -> ContainerRecord:
    """`RUNTIME start`: the created container's process runs its command."""
    from toolkit.runtime import conmon

    try:
        runtime_call(record, "start", record.id)
    except CommandFailed as error:
        raise conmon.classify_runtime_error(error.stderr or str(error), record.runtime) from None
    return store.update(record, status=RUNNING, started_at=time.time())


def create_container(
    store: StateStore,
    container: Container,
    *,
    stdio: Stdio,
    log_driver: LogDriver,
    tty: bool = False,
    interactive: bool = False,
    auto_remove: bool = False,
    replace: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> tuple[ContainerRecord, notify.NotifySetup]:
    """Create `container` (conmon + runtime create). `replace` removes an exited namesake."""
    existing = store.find(container.name)
    if existing is not None:
        existing = sync_status(store, existing)
        if existing.alive:
            raise InvalidState(
                f"container {container.name} is already {existing.status}",
                hint=f"stop it first: podunit stop {container.name}",
            )
        if replace:
            remove_container(store, existing)
    record, notify_setup, fds = prepare_record(
        store, container, log_driver=log_driver, tty=tty, interactive=interactive,
        auto_remove=auto_remove, environ=environ,
    )  # fmt: skip
    try:
        try:
            store.add(record)
        except PodunitError:
            remove_tree(store.paths.bundle_dir(record.id))
            raise
        record = launch_container(store, record, stdio=stdio, preserved_fds=fds.fds,
                                  environ=environ)  # fmt: skip
    except BaseException:
        notify_setup.close()
        raise
    return record, notify_setup


# --- status -----------------------------------------------------------------------------------


def read_exit_file(path: str | os.PathLike[str]) -> tuple[int, float] | None:
    """conmon's exit file: (status, mtime), None if missing or still being written."""
    try:
        text = read_text(path).strip()
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    if not text.lstrip("-").isdigit():
        return None
    return int(text), mtime


def _exit_file_of(store: StateStore, record: ContainerRecord) -> tuple[int, float] | None:
    return read_exit_file(store.paths.exit_file(record.id)) or read_exit_file(
        os.path.join(store.paths.bundle_dir(record.id), "exit")
    )


def sync_status(
    store: StateStore, record: ContainerRecord, *, reload: bool = True
) -> ContainerRecord:
    """Bring `record` up to date from conmon's exit files, conmon's liveness and the runtime.

    `reload=False` for a record just read (ps: no second query and JSON decoding per row).
    """
    if reload:
        record = store.reload(record)
    if not record.alive or record.conmon_pid is None:
        return record
    exited = _exit_file_of(store, record)
    if exited is not None:
        return finalize(store, record)
    if same_process_alive(record.conmon_pid, record.conmon_start_time):
        return record
    # conmon is gone: it may have written the exit file meanwhile.
    if _exit_file_of(store, record) is not None:
        return finalize(store, record)
    return finalize(store, record, runaway=True)


def finalize(
    store: StateStore, record: ContainerRecord, *, runaway: bool = False
) -> ContainerRecord:
    """Record the exit and release everything of an exited container (conmon's exit command).

    With `runaway` (conmon died without an exit file) the container is killed first
    and -1 recorded with the reason. Idempotent and safe to race with itself.
    """
    with store.container_lock(record.id):
        record = store.reload(record)
        if record.status != EXITED:
            exited = _exit_file_of(store, record)
            if runaway and exited is None:
                _kill_runaway(record)
                code, finished, reason = -1, time.time(), RUNAWAY_REASON
            elif exited is None:
                return record
            else:
                (code, finished), reason = exited, None
            oom = os.path.exists(os.path.join(store.paths.bundle_dir(record.id), "oom"))
            record = store.record_exit(record, code, reason=reason, finished_at=finished, oom=oom)
        _release(store, record)
        if record.options.get("auto_remove"):
            _forget(store, record)
    return record


def _kill_runaway(record: ContainerRecord) -> None:
    state = runtime_state(record)
    if state is not None and state.get("status") in ("running", "paused", "created"):
        runtime_call(record, "kill", "--all", record.id, "KILL", check=False)
        if state.get("status") == "paused":
            runtime_call(record, "resume", record.id, check=False)
        pid = state.get("pid") or record.pid
        if isinstance(pid, int) and pid > 0:
            start = record.pid_start_time if pid == record.pid else None
            wait_until_gone(pid, start, KILL_WAIT_SECONDS)


def _release(store: StateStore, record: ContainerRecord) -> None:
    """Everything of the run but the state row and the log: runtime state, bundle, cgroups.

    The cgroups go last, and not at all from inside the conmon scope they would
    remove (conmon's exit command runs there): systemd drops an empty scope itself.
    """
    if record.options.get("released"):
        return
    runtime_delete(record)
    _unmount_image_root(store.paths, record.id, record.options)
    remove_tree(store.paths.bundle_dir(record.id))
    _remove_tree_or_link(store.paths.attach_socket_dir(record.id))  # conmon's attach symlink
    unlink_if_present(store.paths.exit_file(record.id))
    pidfile = store.paths.unit_pidfile(record.name)
    with contextlib.suppress(OSError):
        if read_text(pidfile).strip() == str(record.conmon_pid):
            os.unlink(pidfile)
    store.update(record, options={**record.options, "released": True})
    stored_plan = record.options["cgroup_plan"]
    if not cgroups_left(stored_plan):
        return
    from toolkit.systemd import cgroups

    plan = plan_from_json(stored_plan)
    own_cgroup = read_text("/proc/self/cgroup")
    if plan.conmon_scope is None or f"/{plan.conmon_scope}" not in own_cgroup:
        with contextlib.suppress(Exception):
            cgroups.cleanup_cgroups(plan)


def cgroups_left(stored_plan: Mapping[str, Any]) -> bool:
    """Whether `cgroups.cleanup_cgroups` may have work for this stored plan: scopes of
    `enabled` under systemd, or a cgroupfs cgroup that still exists. Checked on the JSON,
    so that a stop after which `RUNTIME delete` removed everything (split, in a unit)
    imports neither cgroups nor the model."""
    manager = stored_plan.get("manager")
    if manager == "systemd":
        return stored_plan.get("mode") == "enabled"
    path = stored_plan.get("cgroups_path")
    mount = stored_plan.get("cgroup2_mount", "/sys/fs/cgroup")
    return manager == "cgroupfs" and path is not None and os.path.isdir(mount + path)


def _forget(store: StateStore, record: ContainerRecord) -> None:
    """Remove the row (the exit code stays), the layer, the log and the lock file.

    Called with the container lock held; a process still waiting on the unlinked
    lock file finds the row gone when it gets the lock.
    """
    store.remove(record)
    _drop_image_layer(store.paths, record.id, record.options)
    unlink_if_present(store.paths.lock_file(record.id))
    if record.options.get("log_path"):
        unlink_if_present(record.options["log_path"])


def wait_for_exit(
    store: StateStore, record: ContainerRecord, timeout: float | None = None
) -> ContainerRecord:
    """Block (without any lock) until the container exited or `timeout` passed; sync status.

    Sleeps on a pidfd of conmon (it exits right after writing the exit file), waking
    at least every half second to look for the exit file, and looks again at once
    when conmon is gone; only without a pidfd (none, or conmon already gone) it polls.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = None
    if record.conmon_pid:
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(record.conmon_pid)
        if pidfd is not None and not same_process_alive(
            record.conmon_pid, record.conmon_start_time
        ):  # opened first, checked second: never a reused pid's
            os.close(pidfd)
            pidfd = None
    try:
        while True:
            try:
                record = sync_status(store, record)
            except ContainerNotFound:  # removed meanwhile (--rm): its exit code remains
                recorded = store.exit_code(record.id)
                code, reason = recorded if recorded is not None else (None, None)
                return record._replace(status=EXITED, exit_code=code, exit_reason=reason)
            if not record.alive:
                return record
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return record
            step = 0.5 if remaining is None else min(0.5, remaining)
            if pidfd is None:
                time.sleep(min(step, POLL_SECONDS))  # no conmon to wait on: poll
            elif select.select([pidfd], [], [], step)[0]:
                os.close(pidfd)  # conmon exited: its exit file is written, look at once
                pidfd = None
    finally:
        if pidfd is not None:
            os.close(pidfd)


# --- stop, kill, rm, pause --------------------------------------------------------------------


def kill_container(store: StateStore, record: ContainerRecord, signum: int) -> ContainerRecord:
    """Send `signum` to the container's process (`RUNTIME kill`)."""
    record = sync_status(store, record)
    if record.status not in (RUNNING, PAUSED, CREATED):
        raise InvalidState(f"container {record.name} is not running ({record.status})")
    result = runtime_call(record, "kill", record.id, str(signum), check=False)
    if result.returncode != 0:
        record = sync_status(store, record)
        if record.alive:
            raise CommandFailed(
                [os.path.basename(record.runtime), "kill"], result.returncode,
                result.stderr.decode(errors="replace"),
            )  # fmt: skip
    return record


def signal_running(record: ContainerRecord, signum: int) -> bool:
    """`RUNTIME kill ID SIGNUM` for a running container, without starting the runtime.

    What runc and crun do for it: signal the container's init process. Sent through
    a pidfd opened before the recorded start time is checked, so a reused pid is
    never signalled. False (nothing sent) when the container is not plainly running
    or its process is not the recorded one: the caller asks the runtime then.
    """
    if record.status != RUNNING or record.pid is None:
        return False
    try:
        pidfd = os.pidfd_open(record.pid)
    except OSError:
        return False
    try:
        if not same_process_alive(record.pid, record.pid_start_time):
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def stop_container(
    store: StateStore, record: ContainerRecord, timeout: float | None = None
) -> ContainerRecord:
    """Stop signal, wait `timeout` (default: the container's stop_timeout), then SIGKILL."""
    record = sync_status(store, record)
    if not record.alive:
        return record
    if timeout is None:
        timeout = float(record.options.get("stop_timeout", 10))
    stop_signal = int(record.options.get("stop_signal", signal.SIGTERM))
    if timeout > 0:
        if not signal_running(record, stop_signal):
            runtime_call(record, "kill", record.id, str(stop_signal), check=False)
        if record.status == PAUSED:
            runtime_call(record, "resume", record.id, check=False)
        record = wait_for_exit(store, record, timeout)
        if not record.alive:
            return record
    kill_args = ["kill"] + ([] if record.options.get("own_pid_namespace", True) else ["--all"])
    runtime_call(record, *kill_args, record.id, "KILL", check=False)
    if record.status == PAUSED:
        runtime_call(record, "resume", record.id, check=False)
    record = wait_for_exit(store, record, KILL_WAIT_SECONDS)
    if record.alive:
        raise PodunitError(
            f"container {record.name} did not exit within {KILL_WAIT_SECONDS:.0f}s of SIGKILL"
        )
    return record


def remove_container(
    store: StateStore, record: ContainerRecord, *, force: bool = False,
    timeout: float | None = None,
) -> None:  # fmt: skip
    """Remove a container; a running or paused one only with `force` (it is stopped first)."""
    record = sync_status(store, record)
    if record.alive:
        if not force and record.status != CREATED:
            raise InvalidState(
                f"container {record.name} is {record.status}: cannot remove it",
                hint=f"stop it first, or use: podunit rm -f {record.name}",
            )
        record = stop_container(store, record, timeout)
    if os.path.isdir(store.paths.exec_dir(record.id)):  # else it never had a session still running
        from toolkit.runtime import exec as exec_sessions  # imports this module: import late

        exec_sessions.stop_all_sessions(store, record)
    with store.container_lock(record.id), contextlib.suppress(ContainerNotFound):
        record = store.reload(record)
        _release(store, record)
        _forget(store, record)


def set_paused(store: StateStore, record: ContainerRecord, paused: bool) -> ContainerRecord:
    """`RUNTIME pause` / `resume`."""
    record = sync_status(store, record)
    wanted, needed = (PAUSED, RUNNING) if paused else (RUNNING, PAUSED)
    if record.status != needed:
        raise InvalidState(f"container {record.name} is {record.status}, not {needed}")
    runtime_call(record, "pause" if paused else "resume", record.id)
    return store.update(record, status=wanted)


# --- presentation -----------------------------------------------------------------------------


def describe(record: ContainerRecord) -> dict[str, Any]:
    """The JSON of `inspect` and `ps --format json`."""
    process = record.spec.get("process", {})
    return {
        "Id": record.id,
        "Name": record.name,
        "State": {
            "Status": record.status,
            "Running": record.status == RUNNING,
            "Paused": record.status == PAUSED,
            "Pid": record.pid if record.alive else 0,
            "ConmonPid": record.conmon_pid if record.alive else 0,
            "ExitCode": record.exit_code,
            "Reason": record.exit_reason,
            "OOMKilled": record.oom,
            "StartedAt": _iso(record.started_at),
            "FinishedAt": _iso(record.finished_at),
        },
        "Created": _iso(record.created_at),
        "Image": record.options.get("image"),
        "Rootfs": record.options.get("rootfs"),
        "Command": process.get("args", []),
        "Runtime": record.runtime,
        "LogDriver": record.options.get("log_driver"),
        "LogPath": record.options.get("log_path"),
        "Labels": record.options.get("labels", {}),
        "Ports": record.options.get("ports", []),
        "StopSignal": record.options.get("stop_signal"),
        "StopTimeout": record.options.get("stop_timeout"),
        "CgroupsPath": record.spec.get("linux", {}).get("cgroupsPath"),
    }


def _status_text(record: ContainerRecord) -> str:
    if record.status == EXITED:
        return f"exited ({record.exit_code})"
    return record.status


# --- the CLI ----------------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> StateStore:
    return open_store(bool(getattr(args, "user", False)))


def _under_unit(environ: Mapping[str, str] = os.environ) -> bool:
    """ExecStart of a generated unit: they all have NotifyAccess=all, hence NOTIFY_SOCKET."""
    return bool(environ.get("NOTIFY_SOCKET"))


def _adhoc_container(args: argparse.Namespace, store: StateStore) -> Container:
    from toolkit.definitions import values
    from toolkit.definitions.model import CgroupMode, Container

    name = args.name or new_container_id()[:12]
    if not name[0].isalnum() or any(c not in NAME_ALPHABET for c in name):
        raise PodunitError(f"invalid container name {name!r}")
    words = [args.target, *args.command] if args.rootfs and args.target else args.command
    command = tuple(words or ())
    environment = []
    for item in args.env:
        key, equals, value = item.partition("=")
        if not equals:
            value = os.environ.get(key, "")
        environment.append((key, value))
    try:
        mounts = tuple(values.parse_volume(v, os.getcwd()) for v in args.volume)
        ports = tuple(p for text in args.publish for p in values.parse_port_mapping(text))
    except ValueError as error:
        raise PodunitError(str(error)) from None
    container = Container(
        name=name,
        source=Location("<command line>", 1, 1),
        rootfs=os.path.abspath(args.rootfs) if args.rootfs else None,
        image=None if args.rootfs else args.target,
        command=command or None,
        environment=tuple(environment),
        mounts=mounts,
        ports=ports,
        network=args.network or "private",
        runtime=args.runtime,
        cgroups=CgroupMode(args.cgroups) if args.cgroups else CgroupMode.SPLIT,
        user=args.user_spec,
        working_dir=args.workdir,
    )
    return container


def _resolve_image(container: Container, store: StateStore) -> Container:
    if container.rootfs is not None or container.image is None:
        return container
    from toolkit.storage import images

    unpacked = images.resolve_image(container.image, store.paths.state_dir)
    return images.apply_image_defaults(container, unpacked.config, unpacked.rootfs)


PLAN_HINT = "run 'systemctl daemon-reload' (with --user for user units) to write it again"


def container_from_plan(path: str, name: str) -> Container:
    """The container of a generated unit's plan file (`podunit run --plan FILE NAME`).

    The generator writes `{"podunit-plan": 1, "container": ...}` next to the unit
    (toolkit.definitions.model, "plan files"); no definition is read or searched.
    A template's plan holds the template: `NAME` (`worker@foo`) names the instance.
    """
    from toolkit.definitions.instances import instantiate
    from toolkit.definitions.model import PLAN_KEY, PLAN_VERSION, container_from_json

    try:
        with open(path, "rb") as file:
            data = json.loads(file.read())
    except OSError as error:
        raise PodunitError(f"cannot read plan {path}: {error.strerror}", hint=PLAN_HINT) from None
    except ValueError:
        raise PodunitError(f"plan {path} is not valid JSON", hint=PLAN_HINT) from None
    if (
        not isinstance(data, dict)
        or data.get(PLAN_KEY) != PLAN_VERSION
        or not isinstance(data.get("container"), dict)
    ):
        raise PodunitError(
            f"{path} is not a podunit plan of version {PLAN_VERSION}", hint=PLAN_HINT
        )
    try:
        container = container_from_json(data["container"])
    except PodunitError as error:
        raise PodunitError(f"plan {path}: {error}", hint=PLAN_HINT) from None
    base, at, instance = name.partition("@")
    if container.template != bool(at) or (base if at else name) != container.name:
        raise PodunitError(
            f"plan {path} is the plan of {container.unit_name!r}, not of {name!r}", hint=PLAN_HINT
        )
    return instantiate(container, instance) if at else container


def _container_for(args: argparse.Namespace, store: StateStore) -> tuple[Container, bool]:
    """The container to create and whether it comes from a definition.

    `run --plan FILE NAME` reads it from a generated unit's plan; `run NAME` is a
    definition (`worker@host:80` an instance of `worker@`); a target that names no
    definition but looks like an image reference (`oci:/path:tag`,
    `docker.io/library/busybox`) is run as an image.
    """
    from toolkit.definitions.model import CgroupMode

    if getattr(args, "plan", None):
        if args.rootfs or args.command:
            raise PodunitError("--plan names a generated unit's container: no --rootfs or command")
        container = container_from_plan(args.plan, args.target)
    elif args.rootfs or args.command:
        return _resolve_image(_adhoc_container(args, store), store), False
    else:
        from toolkit.definitions import loader

        try:
            container = loader.find_definition(args.target, user=bool(args.user))
        except ContainerNotFound:
            if not any(c in args.target for c in "/:"):
                raise
            return _resolve_image(_adhoc_container(args, store), store), False
    overrides: dict[str, Any] = {}
    if args.runtime:
        overrides["runtime"] = args.runtime
    if args.cgroups:
        overrides["cgroups"] = CgroupMode(args.cgroups)
    if args.network:
        overrides["network"] = args.network
    if overrides:
        container = container._replace(**overrides)
    return _resolve_image(container, store), True


def _create_from_args(
    args: argparse.Namespace, store: StateStore, *, attached: bool
) -> tuple[ContainerRecord, notify.NotifySetup, Container]:
    from toolkit.definitions.model import LogDriver

    container, from_definition = _container_for(args, store)
    explicit = LogDriver(args.log_driver) if args.log_driver else None
    if explicit is None and from_definition and not attached:
        explicit = container.log_driver
    log_driver = choose_log_driver(explicit, attached and not args.tty)  # no tty passthrough
    if attached and log_driver is LogDriver.PASSTHROUGH:
        stdio = Stdio(stdin=0 if args.interactive else None, stdout=1, stderr=2)
    elif _under_unit():
        stdio = Stdio(stdout=1, stderr=2)  # the unit's journal stream: conmon's own messages
    else:
        stdio = Stdio()
    record, setup = create_container(
        store, container, stdio=stdio, log_driver=log_driver, tty=args.tty,
        interactive=args.interactive, auto_remove=args.rm, replace=from_definition,
    )  # fmt: skip
    return record, setup, container


def cli_create(args: argparse.Namespace) -> int:
    with _store(args) as store:
        record, setup, _ = _create_from_args(args, store, attached=False)
        setup.close()
        print(record.id)
    return 0


def cli_run(args: argparse.Namespace) -> int:
    from toolkit.definitions.model import LogDriver

    under_unit = _under_unit()
    attached = not (args.detach or under_unit)
    with _store(args) as store:
        record, setup, container = _create_from_args(args, store, attached=attached)
        attach: socket.socket | None = None
        try:
            if attached and record.options["log_driver"] != LogDriver.PASSTHROUGH.value:
                attach = _connect_attach_socket(store, record)  # before start: lose nothing
            record = start_created(store, record)
        except BaseException:
            setup.close()
            if attach is not None:
                attach.close()
            with contextlib.suppress(Exception):
                remove_container(store, record, force=True, timeout=0)
            raise
        try:
            if under_unit:
                _announce(store, record, setup, container)
            elif args.detach:
                print(record.id)
        finally:
            setup.close()
        if not attached:
            return 0
        with _forward_signals(record):
            if attach is not None:
                with attach:
                    _relay_attached(store, record, attach, tty=args.tty,
                                    interactive=args.interactive)  # fmt: skip
            record = wait_for_exit(store, record)
        code = record.exit_code if record.exit_code is not None else -1
        if args.rm and store.find(record.id) is not None:
            remove_container(store, record, force=True)
        return code if 0 <= code <= 255 else 125


def _connect_attach_socket(store: StateStore, record: ContainerRecord) -> socket.socket:
    """conmon's attach socket of the container (`<socket dir>/<id>/attach`, SEQPACKET)."""
    from toolkit.runtime import exec as exec_sessions

    return exec_sessions.connect_attach_socket(store.paths, record.id)


def _relay_attached(
    store: StateStore, record: ContainerRecord, attach: socket.socket, *, tty: bool,
    interactive: bool,
) -> None:  # fmt: skip
    """Attached run through conmon's attach socket (needed with -t, or a logging driver)."""
    from toolkit.runtime import exec as exec_sessions

    ctl = os.path.join(store.paths.bundle_dir(record.id), "ctl")
    previous_winch = None
    if tty:
        exec_sessions.send_window_size(ctl, 0)
        previous_winch = signal.signal(
            signal.SIGWINCH, lambda *_: exec_sessions.send_window_size(ctl, 0)
        )
    try:
        with exec_sessions.raw_terminal(0, tty):
            exec_sessions.relay(attach, stdin=0 if (interactive or tty) else None,
                                stdout=1, stderr=2)  # fmt: skip
    finally:
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)


def _announce(
    store: StateStore, record: ContainerRecord, setup: notify.NotifySetup, container: Container
) -> None:
    """Unit mode: pidfile for Type=forking, then the readiness protocol of spec §3.2."""
    from toolkit.definitions.model import Notify
    from toolkit.systemd import notify

    assert record.conmon_pid is not None
    pidfile = store.paths.unit_pidfile(record.name)
    temporary = os.path.splitext(pidfile)[0] + ".tmp"  # NAME.pid -> NAME.tmp
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(f"{record.conmon_pid}\n")
    os.replace(temporary, pidfile)
    if container.notify is Notify.CONMON:
        notify.notify_ready(record.conmon_pid)
    elif container.notify is Notify.CONTAINER:
        setup.start(record.conmon_pid)
    elif container.notify is Notify.HEALTHY:
        from toolkit.systemd import health

        health.wait_until_healthy(store, record, container)
        notify.notify_ready(record.conmon_pid)


@contextlib.contextmanager
def forwarded_signals(signals: Sequence[int], send: Callable[[int], object]) -> Iterator[None]:
    """While the block runs, `signals` delivered to podunit go to `send` (Podman's sig-proxy)."""
    previous = {signum: signal.signal(signum, lambda signum, _frame: send(signum))
                for signum in signals}  # fmt: skip
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _forward_signals(record: ContainerRecord) -> contextlib.AbstractContextManager[None]:
    """Attached run: SIGINT/SIGTERM/SIGHUP to podunit go to the container."""
    return forwarded_signals(
        (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
        lambda signum: runtime_call(record, "kill", record.id, str(signum), check=False),
    )


def _each_named(
    args: argparse.Namespace, action: Callable[[StateStore, ContainerRecord], Any]
) -> int:
    """Apply `action` to every named container, printing each name (as Podman does)."""
    with _store(args) as store:
        for name in args.names:
            action(store, store.get(name))
            print(name)
    return 0


def start_container(store: StateStore, record: ContainerRecord) -> ContainerRecord:
    """`podunit start`: a created container runs; an exited one is created again first."""
    record = sync_status(store, record)
    if record.status == EXITED:
        record = _relaunch(store, record)
    if record.status != CREATED:
        raise InvalidState(f"container {record.name} is already {record.status}")
    return start_created(store, record)


def cli_start(args: argparse.Namespace) -> int:
    return _each_named(args, start_container)


def _relaunch(
    store: StateStore, record: ContainerRecord, restore_path: str | None = None
) -> ContainerRecord:
    """Start an exited container again: a new conmon with its stored config.json."""
    record = replan(record, store.paths)
    options = {**record.options, "released": False, "fresh": False}
    record = store.update(record, options=options, status=CREATED, pid=None, conmon_pid=None)
    return launch_container(store, record, stdio=Stdio(), restore_path=restore_path)


def restore_container(
    store: StateStore, record: ContainerRecord, image_dir: str
) -> ContainerRecord:
    """Bring a checkpointed (hence exited) container back from `image_dir` (`conmon --restore`).

    For toolkit.runtime.checkpoint: its `restore` checks CRIU and finds the image; this
    launches it. The container keeps its id, name and config.json.
    """
    record = sync_status(store, record)
    if record.alive:
        raise InvalidState(f"container {record.name} is {record.status}: stop it before restoring")
    return _relaunch(store, record, restore_path=image_dir)


def cli_stop(args: argparse.Namespace) -> int:
    with _store(args) as store:
        records = store.all() if args.all else [store.get(name) for name in args.names]
        if not records and not args.all:
            raise PodunitError("stop: name a container, or use --all")
        for record in records:
            stop_container(store, record, args.time)
            if not args.all:
                print(record.name)
    return 0


def cli_kill(args: argparse.Namespace) -> int:
    signum = parse_signal(args.signal)
    return _each_named(args, lambda store, record: kill_container(store, record, signum))


def cli_rm(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for name in args.names:
            record = store.find(name)
            if record is None:
                if args.force:
                    continue
                raise ContainerNotFound(f"no such container: {name}")
            remove_container(store, record, force=args.force, timeout=args.time)
            print(name)
    return 0


def cli_pause(args: argparse.Namespace) -> int:
    return _each_named(args, lambda store, record: set_paused(store, record, True))


def cli_unpause(args: argparse.Namespace) -> int:
    return _each_named(args, lambda store, record: set_paused(store, record, False))


def cli_wait(args: argparse.Namespace) -> int:
    with _store(args) as store:
        for name in args.names:
            record = store.find(name)
            if record is not None:
                record = wait_for_exit(store, record)
                code = record.exit_code
            else:
                recorded = store.exit_code(name)
                if recorded is None:
                    raise ContainerNotFound(f"no such container: {name}")
                code = recorded[0]
            print(code)
    return 0


def cli_cleanup(args: argparse.Namespace) -> int:
    """conmon's exit command: record the exit code, release the container's resources.

    A `notify: container` container's proxy is waited for first: conmon waits for
    this command, and the proxy must write its last line before conmon is gone.
    """
    with _store(args) as store:
        record = store.find(args.names)
        if record is not None:
            if record.options.get("notify") == "container":
                from toolkit.systemd import notify

                notify.wait_for_proxy(store.paths.bundle_dir(record.id))
            with contextlib.suppress(ContainerNotFound):  # removed meanwhile by rm -f
                finalize(store, record, runaway=False)
    return 0


def cli_ps(args: argparse.Namespace) -> int:
    with _store(args) as store:
        records = [sync_status(store, r, reload=False) for r in store.all()]
    if not args.all:
        records = [r for r in records if r.status in ALIVE_STATUSES]
    if args.format == "json":
        print(json.dumps([describe(r) for r in records], indent=2))
        return 0
    print(f"{'CONTAINER ID':<14}{'NAME':<24}{'STATUS':<16}COMMAND")
    for r in records:
        command = command_summary(r.spec.get("process", {}).get("args", []))
        print(f"{r.id[:12]:<14}{r.name:<24}{_status_text(r):<16}{command}")
    return 0


def command_summary(argv: Sequence[str], width: int = 60) -> str:
    """A container's command on one table line: control characters escaped, cut at `width`."""
    text = " ".join(argv)
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= width else text[: width - 3] + "..."


def cli_inspect(args: argparse.Namespace) -> int:
    with _store(args) as store:
        described = []
        for name in args.names:
            record = sync_status(store, store.get(name))
            data = describe(record)
            if record.alive:
                data["RuntimeState"] = runtime_state(record)
            described.append(data)
    print(json.dumps(described, indent=2))
    return 0


def cli_checkpoint(args: argparse.Namespace) -> int:
    from toolkit.runtime import checkpoint  # type: ignore[attr-defined, unused-ignore]

    result: int = checkpoint.cli_checkpoint(args)
    return result


def cli_restore(args: argparse.Namespace) -> int:
    from toolkit.runtime import checkpoint  # type: ignore[attr-defined, unused-ignore]

    result: int = checkpoint.cli_restore(args)
    return result

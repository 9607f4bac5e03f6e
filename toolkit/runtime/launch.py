"""Launching a container: decide its record, write its bundle, start conmon and the runtime.

Spec §3.1, §3.2 and §4; modelled on libpod's oci_conmon_linux.go. The run path of a
unit (`podunit run --plan FILE NAME`): take the socket-activation fds -> place cgroups ->
build config.json -> reserve published ports -> spawn conmon (`toolkit.runtime.conmon`)
-> place it -> `RUNTIME create` -> read the pid -> record -> (`start_created`) -> pidfile
and readiness (`announce`). conmon is then the unit's main process and exits with the
container's status. On any failure nothing is left behind (`discard_half_made`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence

from toolkit import proc
from toolkit.errors import PodunitError
from toolkit.fs import remove_tree, unlink_if_present
from toolkit.proc import process_start_time
from toolkit.record import Record
from toolkit.runtime import recovery
from toolkit.runtime.invoke import oci_runtime, runtime_binary, runtime_global_args
from toolkit.runtime.placement import (
    apply_placement,
    placement_for,
    placement_to_json,
    runtime_args_for,
    stored_placement,
)
from toolkit.runtime.status import disconnect, drop_image_layer, remove_tree_or_link
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import CREATED, EXITED, RUNNING, ContainerOptions, ContainerRecord
from toolkit.storage.state import StateStore, write_bundle_record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import socket

    from toolkit.definitions.model import Container, LogDriver, PortMapping
    from toolkit.network.netavark import PendingSetup
    from toolkit.runtime import conmon
    from toolkit.systemd import activation, cgroups, notify


class Stdio(Record):
    """conmon's stdio: fds of this process, None for /dev/null."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


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
    unit: bool = False,
) -> tuple[ContainerRecord, notify.NotifySetup, activation.ActivationFds]:
    """Decide everything about a new container and build its config.json (not yet stored).
    `unit`: it is a unit's ExecStart (`podunit run --plan` or `--unit`)."""
    from toolkit.definitions.model import LogDriver
    from toolkit.network import plan as networks
    from toolkit.runtime import oci
    from toolkit.systemd import activation, cgroups, notify

    network_plan = networks.network_plan(container, user=store.paths.user, environ=environ)
    if network_plan["mode"] == "host" and container.network != "host":
        container = container._replace(network="host")  # PODUNIT_DEFAULT_NETWORK=host
    if container.rootfs is None:
        raise PodunitError(f"container {container.name!r} has neither rootfs nor image")
    container_id = new_container_id()
    runtime = runtime_binary(container.runtime)
    activation_fds = activation.inherited_sockets(environ)
    placement = placement_for(container.cgroups, container_id, runtime, container=container,
                    environ=environ)  # fmt: skip
    cgroups.start_prepare_before_conmon(placement)  # launch_container waits for it
    bundle = store.paths.bundle_dir(container_id)
    os.makedirs(bundle, mode=0o700, exist_ok=True)
    notify_setup = notify.prepare_container_notify(bundle, container)
    image_rootfs = container.rootfs if container.image else None
    try:
        rootfs = container_root(store.paths, container_id, image_rootfs) or container.rootfs
        from toolkit.runtime import mounts

        resolved = None
        if mounts.needs_resolving(container):  # volumes and secrets made concrete on the host
            resolved = mounts.resolve(store, container, rootfs=rootfs, bundle=bundle,
                                      environ=environ)  # fmt: skip
            container = resolved.container
        extra_env = {**activation.container_environment(activation_fds), **notify_setup.env}
        inputs = oci.gather_inputs(
            container,
            container_id,
            rootfs=rootfs,
            tty=tty,
            extra_env=extra_env,
            extra_mounts=notify_setup.mounts,
            cgroups_path=placement.cgroups_path,
        )
        spec = apply_placement(oci.build_spec(container, inputs), placement)
        log_path = store.paths.log_file(container_id) if log_driver is LogDriver.K8S_FILE else None
        health = None
        if container.healthcheck is not None:
            from toolkit.runtime.healthcheck import health_options

            health = health_options(container, under_unit=unit, user=store.paths.user)
        options = ContainerOptions(
            log_driver=log_driver.value,
            log_path=log_path,
            log_size_max=container.log_max_size,
            tty=tty,
            interactive=interactive,
            auto_remove=auto_remove,
            stop_signal=container.stop_signal,
            stop_timeout=container.stop_timeout.total_seconds(),
            notify=container.notify.value,
            # with the host's network the container binds host ports itself (as Docker
            # discards published ports there): reserving them would block it
            ports=()
            if container.network == "host"
            else tuple(port._asdict() for port in container.ports),
            # what connect sets up before the runtime creates the container (none: nothing)
            network_plan=network_plan if networks.has_work(network_plan) else None,
            cgroup_placement=placement_to_json(placement),
            runtime_args=tuple(runtime_args_for(placement, store.paths, runtime)),
            own_pid_namespace=True,
            preserve_fds=len(activation_fds),
            image=container.image,
            rootfs=rootfs,
            image_rootfs=image_rootfs,
            labels=tuple(dict(container.labels).items()),
            # in use while a record lists them (storage.volumes)
            volumes=resolved.volumes if resolved else (),
            # where its secrets come from, written at each launch (runtime.mounts)
            secrets=resolved.secrets if resolved else (),
            health=health,  # `healthcheck run` reads it (HEALTH CHECKS)
            creator=tuple(recovery.creator_stamp()),  # a half-made row is told by it
        )
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
        drop_image_layer(store.paths, container_id, image_rootfs)
        raise
    return record, notify_setup, activation_fds


def container_root(paths: RuntimePaths, container_id: str, image_rootfs: str | None) -> str | None:
    """An image container's private root (toolkit.storage.images overlay), mounted if needed."""
    if not image_rootfs:
        return None
    from toolkit.storage import images

    layer, mountpoint = paths.image_layer(container_id), paths.rootfs_mount(container_id)
    return str(images.container_rootfs(image_rootfs, layer, mountpoint))


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
    placement = stored_placement(record)
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
        log_driver=stored.log_driver,
        log_path=stored.log_path,
        log_size_max=stored.log_size_max,
        log_tag=record.name,
        tty=stored.tty,
        stdin=stored.interactive,
        preserve_fds=stored.preserve_fds,
        cgroup_args=("-s",) if placement.systemd_cgroup else (),
        runtime_args=tuple(runtime_global_args(record)),
        exit_command=(*podunit_command(store.paths.user), "cleanup", record.id)
        if exit_command
        else (),
        runtime_log=os.path.join(bundle, "runtime.log"),
        restore_path=restore_path,
        log_level="debug" if proc.log_level() == "debug" else "error",
    )


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


def launch_container(
    store: StateStore,
    record: ContainerRecord,
    *,
    stdio: Stdio,
    preserved_fds: Sequence[int] = (),
    environ: Mapping[str, str] = os.environ,
    restore_path: str | None = None,
    unit: bool = False,
) -> ContainerRecord:
    """Write the bundle, reserve ports, run conmon + `RUNTIME create`; status `created`.

    With `restore_path` conmon runs `RUNTIME restore` from that checkpoint image
    instead, and the container is `running` at once.

    On any failure nothing is left behind: the runtime's container, the bundle,
    the cgroups, the port sockets and the state row are all removed.
    """
    from toolkit.definitions.model import PortMapping
    from toolkit.systemd import cgroups

    bundle = store.paths.bundle_dir(record.id)
    os.makedirs(bundle, mode=0o700, exist_ok=True)
    # mounted again after a reboot
    container_root(store.paths, record.id, record.options.image_rootfs)
    with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as config:
        config.write(json.dumps(record.spec, indent=2))
    unlink_if_present(store.paths.exit_file(record.id))
    for stale in ("exit", "oom", "pidfile", "conmon.pid"):
        unlink_if_present(os.path.join(bundle, stale))
    if record.options.log_path:
        os.makedirs(os.path.dirname(record.options.log_path), mode=0o700, exist_ok=True)
    placement = stored_placement(record)
    ports: list[socket.socket] = []
    network: PendingSetup | None = None
    try:
        ports = reserve_ports([PortMapping(**p) for p in record.options.ports])
        if record.options.network_plan:  # after the ports: a taken one sets up nothing
            from toolkit.network import attach

            record, network = attach.connect_record(store, record, bundle)
        if record.options.secrets:  # the bundle is per run: written at every launch
            from toolkit.runtime import mounts

            mounts.write_secrets(record.options.secrets, environ, user_mode=store.paths.user)
        cgroups.prepare_before_conmon(placement)
        # under a unit ExecStopPost cleans up; a container-notify unit keeps the exit
        # command so that conmon outlives the notify proxy (cli_cleanup)
        exit_command = not unit or record.options.notify == "container"
        options = conmon_options(
            store, record, restore_path=restore_path, exit_command=exit_command
        )
        pid, conmon_pid = oci_runtime().create(
            options,
            environ=environ,
            stdin=stdio.stdin,
            stdout=stdio.stdout,
            stderr=stdio.stderr,
            preserved_fds=preserved_fds,
            extra_fds=[s.fileno() for s in ports],
            place=lambda launcher: cgroups.place_conmon(placement, launcher),
        )
        if network is not None:  # netavark ran while the runtime created the container
            network.finish()
    except BaseException:
        # also a stop signal (recovery.Interrupted): the runtime's create settled conmon
        # (killed before the start byte, else its answer awaited); nothing outlives this
        with recovery.signals_held():
            if network is not None:  # before the teardown in discard_half_made
                with contextlib.suppress(Exception):
                    network.finish()
            discard_half_made(store, record, placement)
        raise
    finally:
        for sock in ports:
            sock.close()
    record = store.update(
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
    write_bundle_record(store.paths, record)  # a lost database adopts it from there
    return record


def discard_half_made(
    store: StateStore, record: ContainerRecord, placement: cgroups.CgroupPlacement
) -> None:
    from toolkit.systemd import cgroups

    with contextlib.suppress(Exception):
        oci_runtime().delete(record)
    # conmon (or a conmon still starting) ends with its container: let it, so that it
    # writes no exit file after the clean-up below
    recovery.kill_processes(recovery.processes_naming(record.id))
    with contextlib.suppress(Exception):
        disconnect(store, store.reload(record))
    with contextlib.suppress(Exception):
        cgroups.cleanup_cgroups(placement)
    remove_tree(store.paths.bundle_dir(record.id))
    remove_tree_or_link(store.paths.attach_socket_dir(record.id))  # conmon's attach symlink
    unlink_if_present(store.paths.exit_file(record.id))
    with contextlib.suppress(Exception):
        if record.options.fresh:
            drop_image_layer(store.paths, record.id, record.options.image_rootfs)
            store.remove(record)
        else:  # a restart of an exited container: it stays exited
            options = record.options._replace(released=True)
            store.update(record, status=EXITED, pid=None, conmon_pid=None, options=options)


def start_created(store: StateStore, record: ContainerRecord) -> ContainerRecord:
    """`RUNTIME start`: the created container's process runs its command."""
    oci_runtime().start(record)
    record = store.update(record, status=RUNNING, started_at=time.time())
    write_bundle_record(store.paths, record)  # adopted as running, should the database go
    return record


def announce(
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

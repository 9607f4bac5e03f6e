"""`podunit run|create|start|stop|kill|rm|pause|unpause|wait|cleanup|ps|inspect|checkpoint|restore`.

The command line of the lifecycle verbs (spec §4): arguments to library calls of
`toolkit.runtime.lifecycle` and friends, results to stdout. `podunit run` knows it runs
as a unit's ExecStart when `NOTIFY_SOCKET` is set (generated units always have
`NotifyAccess=all`): it then detaches after notifying. From a shell it stays attached
(stdio passed straight through with the `passthrough` log driver) and exits with the
container's status; `-d` detaches.

On the hot paths (a unit's `stop -t`, `rm -f`, `kill -s`, `cleanup`): module level
imports only the light runtime modules; run/create import the rest where they need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable

from toolkit.errors import ContainerNotFound, Location, PodunitError
from toolkit.runtime import recovery
from toolkit.runtime.invoke import oci_runtime
from toolkit.runtime.launch import Stdio, choose_log_driver, new_container_id
from toolkit.runtime.lifecycle import (
    command_summary,
    create_container,
    describe,
    kill_container,
    open_store,
    parse_signal,
    remove_container,
    remove_damaged,
    set_paused,
    start_container,
    status_text,
    stop_container,
)
from toolkit.runtime.status import finalize, status_if_gone, sync_status, wait_for_exit
from toolkit.storage.records import ALIVE_STATUSES, RUNNING, ContainerRecord, CorruptRecord
from toolkit.storage.state import StateStore

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import argparse
    import socket
    from typing import Any

    from toolkit.definitions.model import Container
    from toolkit.systemd import notify


NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


def _store(args: argparse.Namespace, *, read_only: bool = False) -> StateStore:
    return open_store(bool(getattr(args, "user", False)), read_only=read_only)


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
        network=args.network,
        runtime=args.runtime,
        cgroups=CgroupMode(args.cgroups) if args.cgroups else CgroupMode.SPLIT,
        user=args.user_spec,
        working_dir=args.workdir,
    )
    return container


def _resolve_image(container: Container, store: StateStore, *, planned: bool = False) -> Container:
    """The container over its image's root, the pull policy applied (podunit.yaml(5) `pull`).

    A generated unit (`planned`) has its image made by its pull or build unit already:
    it only pulls what went missing since (`missing`), and a `build:` image must be
    there. From a shell the container's own policy applies, with progress on a terminal.
    """
    if container.rootfs is not None or container.image is None:
        return container
    from toolkit.definitions.model import PullPolicy
    from toolkit.runtime.pulling import reporter
    from toolkit.storage import images

    policy = container.pull
    if container.build is not None:
        from toolkit.runtime.builds import ensure_built

        if planned:
            policy = PullPolicy.NEVER
        else:
            ensure_built(container, store.paths.state_dir)
            policy = PullPolicy.NEVER
    elif planned and policy is not PullPolicy.NEVER:
        policy = PullPolicy.MISSING
    unpacked = images.resolve_image(
        container.image, store.paths.state_dir, policy=policy, report=reporter()
    )
    return images.apply_image_defaults(container, unpacked.config, unpacked.rootfs)


def _container_for(args: argparse.Namespace, store: StateStore) -> tuple[Container, bool]:
    """The container to create and whether it comes from a definition.

    `run --plan FILE NAME` reads it from a generated unit's plan; `run NAME` is a
    definition (`worker@host:80` an instance of `worker@`); a target that names no
    definition but looks like an image reference (`oci:/path:tag`,
    `docker.io/library/busybox`) is run as an image.
    """
    from toolkit.definitions.model import CgroupMode

    if getattr(args, "plan", None):
        from toolkit.definitions.plan import container_from_plan

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
    return _resolve_image(container, store, planned=bool(getattr(args, "plan", None))), True


def unit_mode(args: argparse.Namespace) -> bool:
    """A unit's ExecStart: `run --plan FILE NAME`, which only the generator writes, or an
    explicit `run --unit` (a hand-written or transient unit). Not NOTIFY_SOCKET: a script
    inside any Type=notify service has it too, and its helper container would take over
    that service's main PID (issue 15 item 8)."""
    return bool(getattr(args, "plan", None) or getattr(args, "unit", False))


def _terminal_stdio() -> bool:
    """Whether stdin, stdout or stderr is a terminal (conmon refuses `passthrough` then)."""
    return any(os.isatty(fd) for fd in (0, 1, 2))


def _create_from_args(
    args: argparse.Namespace, store: StateStore, *, attached: bool, unit: bool = False
) -> tuple[ContainerRecord, notify.NotifySetup, Container]:
    from toolkit.definitions.model import LogDriver

    container, from_definition = _container_for(args, store)
    explicit = LogDriver(args.log_driver) if args.log_driver else None
    if explicit is None and from_definition and not attached:
        explicit = container.log_driver
    # conmon refuses a terminal with passthrough (TIOCSTI): a terminal goes through the
    # attach socket, as -t does (issue 15 item 4)
    terminal = attached and _terminal_stdio()
    if terminal and explicit is LogDriver.PASSTHROUGH:
        raise PodunitError(
            "the passthrough log driver cannot be used with a terminal (conmon refuses it)",
            hint="leave out --log-driver passthrough, or redirect stdin, stdout and stderr",
        )
    log_driver = choose_log_driver(explicit, attached and not args.tty and not terminal)
    if attached and log_driver is LogDriver.PASSTHROUGH:
        stdio = Stdio(stdin=0 if args.interactive else None, stdout=1, stderr=2)
    elif unit:
        stdio = Stdio(stdout=1, stderr=2)  # the unit's journal stream: conmon's own messages
    else:
        stdio = Stdio()
    record, setup = create_container(
        store, container, stdio=stdio, log_driver=log_driver, tty=args.tty,
        interactive=args.interactive, auto_remove=args.rm, replace=from_definition, unit=unit,
    )  # fmt: skip
    return record, setup, container


def cli_create(args: argparse.Namespace) -> int:
    with _store(args) as store:
        record, setup, _ = _create_from_args(args, store, attached=False)
        setup.close()
        print(record.id)
    return 0


def cli_run(args: argparse.Namespace) -> int:
    """`podunit run`. A stop signal while the container is made (`systemctl stop` of a
    unit that is starting) removes what was made, then ends podunit by that signal
    (toolkit.runtime.recovery)."""
    try:
        with recovery.interruptible():
            return _run(args)
    except recovery.Interrupted as interrupted:
        recovery.die_by(interrupted.signum)
        raise  # not reached


def _run(args: argparse.Namespace) -> int:
    from toolkit.definitions.model import LogDriver
    from toolkit.runtime.attach import connect_attach_socket, forward_signals, relay_attached
    from toolkit.runtime.launch import announce, start_created

    in_unit = unit_mode(args)
    attached = not (args.detach or in_unit)
    with _store(args) as store:
        record, setup, container = _create_from_args(args, store, attached=attached, unit=in_unit)
        attach: socket.socket | None = None
        try:
            if attached and record.options.log_driver != LogDriver.PASSTHROUGH.value:
                attach = connect_attach_socket(store.paths, record.id)  # before start: lose nothing
            record = start_created(store, record)
        except BaseException:
            with recovery.signals_held():
                setup.close()
                if attach is not None:
                    attach.close()
                with contextlib.suppress(Exception):
                    remove_container(store, record, force=True, timeout=0)
            raise
        try:
            if in_unit:
                announce(store, record, setup, container)
            elif args.detach:
                print(record.id)
        finally:
            setup.close()
        if in_unit:
            # conmon may have exited (and been reaped) before systemd read MAINPID=, which
            # systemd then refused: end with the container's status ourselves (item 5)
            status = status_if_gone(store, record)
            return 0 if status is None else status
        if not attached:
            return 0
        with forward_signals(record):
            if attach is not None:
                with attach:
                    relay_attached(store, record, attach, tty=args.tty,
                                   interactive=args.interactive)  # fmt: skip
            record = wait_for_exit(store, record)
        code = record.exit_code if record.exit_code is not None else -1
        if args.rm and store.find(record.id) is not None:
            remove_container(store, record, force=True)
        return code if 0 <= code <= 255 else 125


def _each_named(
    args: argparse.Namespace, action: Callable[[StateStore, ContainerRecord], Any]
) -> int:
    """Apply `action` to every named container, printing each name (as Podman does)."""
    with _store(args) as store:
        for name in args.names:
            action(store, store.get(name))
            print(name)
    return 0


def cli_start(args: argparse.Namespace) -> int:
    return _each_named(args, start_container)


def cli_stop(args: argparse.Namespace) -> int:
    """`podunit stop`. A container removed after it exited (its exit code is still
    recorded) is stopped already, like an exited one: a unit's ExecStop after `rm -f`."""
    with _store(args) as store:
        if args.all:
            records = store.all()
        else:
            if not args.names:
                raise PodunitError("stop: name a container, or use --all")
            records = []
            for name in args.names:
                record = store.find(name)
                if record is None and store.exit_code(name) is None:
                    raise ContainerNotFound(f"no such container: {name}")
                if record is None:
                    print(name)
                else:
                    records.append(record)
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
            try:
                record = store.find(name)
            except CorruptRecord as corrupt:
                if not args.force:
                    raise
                remove_damaged(store, corrupt)
                print(name)
                continue
            if record is None:
                if args.force:
                    continue
                raise ContainerNotFound(f"no such container: {name}")
            remove_container(store, record, force=args.force, timeout=args.time)
            if args.volumes:  # the container name's anonymous volumes no other container uses
                from toolkit.storage.volumes import VolumeStore

                VolumeStore(store).remove_anonymous_of(record.name)
            print(name)
    return 0


def _warn_skipped(store: StateStore) -> None:
    """One line per row `store.all()` could not decode (`ps` goes on with the others)."""
    for corrupt in store.skipped:
        print(f"podunit: warning: skipped: {corrupt}; {corrupt.hint}", file=sys.stderr)


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
            if record.options.notify == "container":
                from toolkit.systemd import notify

                notify.wait_for_proxy(store.paths.bundle_dir(record.id))
            with contextlib.suppress(ContainerNotFound):  # removed meanwhile by rm -f
                finalize(store, record, runaway=False)
    return 0


def cli_ps(args: argparse.Namespace) -> int:
    with _store(args, read_only=True) as store:
        records = store.all()
        if store.read_only:  # a full disk: what is stored, without bringing it up to date
            print(f"podunit: warning: no space left on {store.paths.state_dir}: showing the"
                  " stored state", file=sys.stderr)  # fmt: skip
        else:
            records = [sync_status(store, r, reload=False) for r in records]
        _warn_skipped(store)
        health = _health_statuses(store, records)
    if not args.all:
        records = [r for r in records if r.status in ALIVE_STATUSES]
    if args.format == "json":
        described = [describe(r) for r in records]
        for data in described:
            if data["Id"] in health:
                data["State"]["Health"] = health[data["Id"]]
        print(json.dumps(described, indent=2))
        return 0
    print(f"{'CONTAINER ID':<14}{'NAME':<24}{'STATUS':<22}COMMAND")
    for r in records:
        command = command_summary(r.spec.get("process", {}).get("args", []))
        status = status_text(r)
        if r.status == RUNNING and r.id in health:
            status += f" ({health[r.id]})"
        print(f"{r.id[:12]:<14}{r.name:<24}{status:<22}{command}")
    return 0


def _health_statuses(store: StateStore, records: list[ContainerRecord]) -> dict[str, str]:
    """container id -> health status (HEALTH CHECKS), for the containers with a check."""
    checked = {r.id for r in records if r.options.health}
    if not checked:
        return {}
    from toolkit.storage import health

    statuses = health.all_statuses(store)
    return {cid: statuses.get(cid, health.STARTING) for cid in checked}


def cli_inspect(args: argparse.Namespace) -> int:
    with _store(args, read_only=True) as store:
        described = []
        for name in args.names:
            record = store.get(name)
            if not store.read_only:
                record = sync_status(store, record, reload=False)
            data = describe(record)
            if record.alive:
                data["RuntimeState"] = oci_runtime().state(record)
            if record.options.health:
                from toolkit.runtime.healthcheck import inspect_health

                data["State"]["Health"] = inspect_health(store, record)
            described.append(data)
    print(json.dumps(described, indent=2))
    return 0


def cli_checkpoint(args: argparse.Namespace) -> int:
    """`podunit checkpoint NAME` (toolkit.runtime.checkpoint)."""
    from pathlib import Path

    from toolkit.runtime.checkpoint import checkpoint

    with _store(args) as store:
        record = store.get(args.names)
        export = Path(args.export) if args.export else None
        print(checkpoint(store, record, export=export, leave_running=args.leave_running))
    return 0


def cli_restore(args: argparse.Namespace) -> int:
    """`podunit restore NAME`: the checks in toolkit.runtime.checkpoint, then the launch."""
    from pathlib import Path

    from toolkit.runtime.checkpoint import restore
    from toolkit.runtime.lifecycle import restore_container

    with _store(args) as store:
        record = store.get(args.names)
        import_file = Path(args.import_file) if args.import_file else None
        image_dir = restore(store, record, import_file=import_file)
        restored = restore_container(store, record, str(image_dir))
    print(restored.id)
    return 0

"""Rendering: a pure function from a `Container` to its unit files and install symlinks.

Implements the unit shape of the spec, section 2. No I/O here: the generator
(`toolkit.unitgen.generator`) loads definitions and writes what `render`/`render_all`
return. Every value goes through `toolkit.unitgen.escape`.

Decisions (documented here and in the golden tests, tests/golden/):

- `notify: ignore` -> `Type=forking` with `PIDFile=%t/podunit/pidfiles/NAME.pid`
  (the runtime writes conmon's pid there and `podunit run` exits once conmon is
  up); every other mode -> `Type=notify` and `podunit run` sends MAINPID + READY.
  `NotifyAccess=all` is written in both cases (spec §2: every service has it).
- `TimeoutStopSec=` = stop_timeout + `STOP_TIMEOUT_MARGIN` (30 s): `ExecStop=`
  itself waits stop_timeout before SIGKILL; the margin covers the kill and the
  runtime's cleanup, so systemd's own SIGKILL only comes if podunit hangs.
- `restart: unless-stopped` -> `Restart=always`: under systemd a unit stopped
  with `systemctl stop` is never restarted anyway, which is what unless-stopped means.
- `depends_on` -> `Requires=` + `After=` (an instance `worker@a` of a template
  is `worker@a.service`; a template may name `db@%i`, the same instance).
  `condition: service_healthy` requires the dependency to use `notify: healthy`
  (checked by `render_all`), so its READY=1, which `After=` waits for, means
  "healthy". `required: false` -> `Wants=`; `restart: true` -> `BindsTo=` (with
  `Wants=`: `PartOf=`). `condition: service_completed_successfully` adds an
  `ExecStartPre=` that waits for the dependency's container to exit and fails
  unless it exited 0 (each start of the dependent starts the dependency again
  when it is not running, as Compose does at `up`).
- Compose projects: a service is `PartOf=` and `After=` `PROJECT-project.target`
  and in its `.wants/`; the target is in `multi-user.target.wants/`.
- `resources` -> `MemoryMax=`, `MemoryLow=`, `CPUQuota=` (percent), `CPUWeight=`,
  `TasksMax=` on the service when the payload lives in the service's cgroup
  (`cgroups: split` or `disabled`); with `cgroups: enabled` the runtime puts
  them on the container's scope instead.
- `healthcheck` with `notify: healthy` -> `TimeoutStartSec=` long enough for
  start_period plus every retry (interval + timeout each) plus the margin.
- `sockets` -> `NAME.socket` (one `Listen*=` per socket, `FileDescriptorName=`
  when named; systemd names every fd of one socket unit alike, so different
  names in one container are an error), and the service gets
  `Requires=`/`After=NAME.socket` so a direct start also receives the fds.
- Passthrough (`unit:`, `service:`, `socket:`): a key podunit also writes
  replaces podunit's lines, except list-valued keys (`LIST_KEYS`: dependencies,
  Environment=, Listen*=) which are appended. Values are verbatim (specifiers allowed).
- `install` is applied as relative symlinks in the output directory: the
  service defaults to `multi-user.target.wants/` (`default.target.wants/` for user
  units: a user manager has no multi-user.target) when it has no sockets; the
  socket is always in `sockets.target.wants/`. Templates get no default install
  and cannot be installed (no instance to enable).
- User units (`user=True`) run `podunit --user ...` so the runtime uses the
  per-user directories.
- Templates (`worker@`) run `podunit run worker@%i`: `%i` is an intended
  specifier, expanded after the words are unescaped, so the runtime gets the
  instance exactly as in the unit name (`worker@a\\x2db.service` runs
  `podunit run worker@a\\x2db`): the container is named like its unit.
- Plan files: the generator also writes each container, as parsed, to
  `<normal dir>/podunit/NAME.json` (templates: `NAME@.json`), and `ExecStart=`
  runs `podunit run --plan <that file> NAME` (`NAME@%i` for templates), so the
  runtime neither searches nor parses definitions; the plan lives and dies with
  the unit (systemd empties the generator directories at every daemon-reload).
- `<podunit>` in the Exec lines is the absolute path the caller passes (see
  `toolkit.unitgen.generator.podunit_executable`).
- Images: a registry image's pull unit (shared by its containers) and a `build:`
  container's build unit are rendered by `toolkit.unitgen.images`; the service
  `Requires=` and is `After=` them. `render_all` writes each pull unit once,
  under its own key (the unit file name) in the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta

from toolkit.definitions.imageref import registry_location, store_name
from toolkit.definitions.model import (
    CgroupMode,
    Container,
    DependencyCondition,
    Install,
    MountType,
    Notify,
    PullPolicy,
    Restart,
    project_target,
)
from toolkit.definitions.values import SIGNALS, SIGRTMAX, SIGRTMIN, has_control
from toolkit.errors import DefinitionError
from toolkit.unitgen import health as health_units
from toolkit.unitgen.escape import (
    UNIT_TYPES,
    UnsafeValue,
    check_unit_key,
    command_line,
    environment_assignment,
    exec_word,
    is_unit_name,
    path_word,
    plain_value,
    unit_type,
    verbatim_value,
)
from toolkit.unitgen.images import (
    build_unit_name,
    build_unit_text,
    image_units_of,
    pull_unit_name,
    pull_unit_text,
    stronger,
)

STOP_TIMEOUT_MARGIN = timedelta(seconds=30)
DEFAULT_START_TIMEOUT = timedelta(seconds=90)  # systemd's DefaultTimeoutStartSec
PIDFILE_DIR = "%t/podunit/pidfiles"
GENERATOR_NAME = "podunit-generator"

RESTART = {
    Restart.NO: "no",
    Restart.ON_FAILURE: "on-failure",
    Restart.ALWAYS: "always",
    Restart.UNLESS_STOPPED: "always",
}

# Keys systemd treats as lists: a passthrough value is added to podunit's, not replacing them.
LIST_KEYS = frozenset(
    [
        "After",
        "Before",
        "Requires",
        "Wants",
        "BindsTo",
        "PartOf",
        "Upholds",
        "Conflicts",
        "Requisite",
        "OnFailure",
        "OnSuccess",
        "RequiresMountsFor",
        "Environment",
        "EnvironmentFile",
        "ListenStream",
        "ListenDatagram",
        "ListenSequentialPacket",
        "ListenFIFO",
        "ListenSpecial",
        "ListenNetlink",
        "ListenMessageQueue",
        "ListenUSBFunction",
    ]
)

Lines = list[tuple[str, str]]


# Signal numbers to names as signal.Signals names them (the first name of an alias wins).
SIGNAL_NAMES = {
    **{number: f"SIG{name}" for name, number in reversed(SIGNALS.items())},
    SIGRTMIN: "SIGRTMIN",
    SIGRTMAX: "SIGRTMAX",
}


class UnitFiles:
    """What one container produces: unit file texts, install symlinks and plan files.

    `files` maps a unit file name (`web.service`) to its text; `symlinks` maps a
    link path relative to the output directory (`multi-user.target.wants/web.service`)
    to the link's relative target (`../web.service`); `plans` maps a plan file name
    (`web.json`, written under `podunit/`) to its text.
    """

    __slots__ = ("files", "plans", "symlinks")

    def __init__(
        self,
        files: dict[str, str] | None = None,
        symlinks: dict[str, str] | None = None,
        plans: dict[str, str] | None = None,
    ) -> None:
        self.files = {} if files is None else files
        self.symlinks = {} if symlinks is None else symlinks
        self.plans = {} if plans is None else plans

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnitFiles) and (self.files, self.symlinks, self.plans) == (
            other.files,
            other.symlinks,
            other.plans,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable dicts inside

    def __repr__(self) -> str:
        return f"UnitFiles({self.files!r}, {self.symlinks!r}, {self.plans!r})"


def seconds(duration: timedelta) -> str:
    """A duration as decimal seconds without trailing zeros (`10`, `1.5`), as systemd reads it."""
    text = f"{duration.total_seconds():.6f}".rstrip("0").rstrip(".")
    return text or "0"


def cpu_quota(cpus: float) -> str:
    """`cpus: 1.5` -> `150%` (systemd.resource-control(5) CPUQuota=, two decimals at most)."""
    text = f"{cpus * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def signal_name(number: int) -> str:
    """`1` -> `SIGHUP`; numbers without a name (real-time signals) stay numbers."""
    return SIGNAL_NAMES.get(number, str(number))


def _located(container: Container, error: DefinitionError) -> DefinitionError:
    """Attach the container's location to an error raised without one."""
    if error.location is not None:
        return error
    return DefinitionError(
        container.source, f"container {container.unit_name!r}: {error.message}", hint=error.hint
    )


def _apply_passthrough(lines: Lines, extra: Iterable[tuple[str, str]], section: str) -> Lines:
    """Merge `unit:`/`service:`/`socket:` keys into a section (see module docstring).

    A replacing key takes the place of podunit's first line with that key.
    """
    pending: dict[str, Lines] = {}
    for key, value in extra:
        check_unit_key(key, section)
        pending.setdefault(key, []).append((key, verbatim_value(value, f"{section}: {key}")))
    replaced = {key for key in pending if key not in LIST_KEYS}
    merged: Lines = []
    for key, value in lines:
        if key not in replaced:
            merged.append((key, value))
        elif key in pending:
            merged += pending.pop(key)
    for added in pending.values():
        merged += added
    return merged


def _text(header: Sequence[str], sections: Sequence[tuple[str, Lines]]) -> str:
    out = [f"# {line}" for line in header]
    for name, lines in sections:
        if not lines:
            continue
        out.append("")
        out.append(f"[{name}]")
        out.extend(f"{key}={value}" for key, value in lines)
    return "\n".join(out) + "\n"


def _header(sources: Sequence[str], notes: Sequence[str] = ()) -> list[str]:
    lines = [f"Automatically generated by {GENERATOR_NAME} from {sources[0]}"]
    lines.extend(f"with drop-in {path}" for path in sources[1:])
    lines.extend(notes)
    lines.append("Edit the definition, not this file; then run: systemctl daemon-reload")
    for line in lines:
        if has_control(line):  # paths and names were checked: this is a bug, not bad input
            raise UnsafeValue(f"header line {line!r} contains a control character")
    return lines


def _install_symlinks(
    container: Container, service: str, socket: str | None, *, user: bool = False
) -> dict[str, str]:
    """The symlinks for [Install], relative to the output directory (systemd.unit(5) [Install]).

    The default target is `multi-user.target` for system units and `default.target` for
    user units: a user manager has no multi-user.target (systemd.special(7)).
    """
    links: dict[str, str] = {}
    if socket is not None and not container.template:
        links[f"sockets.target.wants/{socket}"] = f"../{socket}"
    install = container.install
    if install is None and container.project is not None and socket is None:  # its project's
        install = Install(wanted_by=(project_target(container.project),))
    if install is None:
        if socket is None and not container.template:
            default = "default.target" if user else "multi-user.target"
            links[f"{default}.wants/{service}"] = f"../{service}"
        return links
    if container.template and (install.wanted_by or install.required_by or install.alias):
        raise UnsafeValue(
            "install: a template has no instance to enable; start instances explicitly "
            "or list them in another unit's Wants="
        )
    for kind, targets in (("wants", install.wanted_by), ("requires", install.required_by)):
        for target in targets:
            if not is_unit_name(target) or target.endswith("@." + unit_type(target)):
                raise UnsafeValue(
                    f"install: {target!r} is not a unit name (e.g. 'multi-user.target')"
                )
            links[f"{target}.{kind}/{service}"] = f"../{service}"
    for alias in install.alias:
        name = alias if unit_type(alias) in UNIT_TYPES else f"{alias}.service"
        if not is_unit_name(name) or unit_type(name) != "service" or "@" in name:
            raise UnsafeValue(
                f"install: alias {alias!r} must be a plain service name such as 'www.service'"
            )
        if name == service:
            raise UnsafeValue(f"install: alias {alias!r} is the unit's own name")
        links[name] = service
    return links


def _check_socket_names(container: Container) -> str | None:
    names = {socket.name for socket in container.sockets if socket.name is not None}
    if len(names) > 1:
        raise UnsafeValue(
            f"sockets: names {sorted(names)!r} differ, but systemd gives every fd of one socket "
            "unit the same FileDescriptorName= (systemd.socket(5)); use one name"
        )
    return names.pop() if names else None


def _socket_text(container: Container, sources: Sequence[str], socket: str) -> str:
    unit: Lines = [
        ("Description", plain_value(f"podunit sockets of container {container.unit_name}", "name")),
        ("SourcePath", plain_value(sources[0], "definition path")),
    ]
    section: Lines = [
        (spec.type.value, plain_value(spec.listen, "sockets: listen")) for spec in container.sockets
    ]
    name = _check_socket_names(container)
    if name is not None:
        section.append(("FileDescriptorName", plain_value(name, "sockets: name")))
    return _text(
        _header(sources),
        [
            ("Unit", _apply_passthrough(unit, container.unit_extra, "unit")),
            ("Socket", _apply_passthrough(section, container.socket_extra, "socket")),
        ],
    )


def host_paths(container: Container) -> list[str]:
    """The host paths a container's mounts read (bind sources, bind volumes' directories,
    secrets' files): the unit waits for the file systems that hold them, as Quadlet's
    units do (`RequiresMountsFor=`), so that at boot it never binds an empty mount point."""
    paths = {m.source for m in container.mounts if m.type is MountType.BIND and m.source}
    paths.update(v.device for v in container.volumes if v.kind == "bind" and v.device)
    paths.update(s.file for s in container.secrets if s.file)
    return sorted(paths)


def _start_timeout(container: Container) -> timedelta | None:
    """Worst case until the first passing health check, when READY waits for it."""
    check = container.healthcheck
    if container.notify is not Notify.HEALTHY or check is None:
        return None
    worst = check.start_period + (check.retries + 1) * (check.interval + check.timeout)
    return max(worst + STOP_TIMEOUT_MARGIN, DEFAULT_START_TIMEOUT)


def _service_text(
    container: Container,
    sources: Sequence[str],
    podunit: Sequence[str],
    socket: str | None,
    environment: Sequence[tuple[str, str]],
    plan: str | None,
    notes: Sequence[str] = (),
) -> str:
    name = container.unit_name + ("%i" if container.template else "")
    description = f"podunit container {container.unit_name}"
    origin = container.image or container.rootfs
    if origin:
        description += f" ({origin})"
    description = plain_value(description, "image")
    if container.template:
        description = description.replace("@", "@%i", 1)
    unit: Lines = [
        ("Description", description),
        ("SourcePath", plain_value(sources[0], "definition path")),
    ]
    for dependency in container.depends_on:
        dependency_unit = f"{dependency.name}.service"
        # A template may depend on the same instance of another: `db@%i` (intended specifier).
        checked = dependency_unit.replace("@%i.", "@i.") if container.template else dependency_unit
        if not is_unit_name(checked) or dependency.name.endswith("@"):
            raise UnsafeValue(
                f"depends_on: {dependency.name!r} is not a container or template instance name"
            )
        if dependency.required:
            unit.append(("BindsTo" if dependency.restart else "Requires", dependency_unit))
        else:
            unit.append(("Wants", dependency_unit))
            if dependency.restart:
                unit.append(("PartOf", dependency_unit))
        unit.append(("After", dependency_unit))
    if container.project is not None:  # stopped after the services: `stop` waits for them
        target = project_target(container.project)
        unit += [("PartOf", target), ("After", target)]
    if socket is not None:
        unit += [("Requires", socket), ("After", socket)]
    for image_unit in image_units_of(container):
        unit += [("Requires", image_unit), ("After", image_unit)]
    unit += [
        ("RequiresMountsFor", path_word(path, "volume source", template=container.template))
        for path in host_paths(container)
    ]
    unit += health_units.wants(container)

    # `%i` in the container name is an intended specifier: quote it as one word by hand.
    name_word = exec_word(container.unit_name) + ("%i" if container.template else "")
    podunit_words = command_line(list(podunit))

    def podunit_command(*args: str, prefix: str = "") -> str:
        return " ".join([prefix + podunit_words, *(exec_word(arg) for arg in args)])

    service: Lines = []
    if container.notify is Notify.IGNORE:
        service += [("Type", "forking"), ("PIDFile", f"{PIDFILE_DIR}/{name}.pid")]
    else:
        service.append(("Type", "notify"))
    service += [
        ("NotifyAccess", "all"),
        ("KillMode", "mixed"),
        ("Delegate", "yes"),
        ("SyslogIdentifier", "%N"),
    ]
    service += [("Environment", environment_assignment(k, v)) for k, v in environment]
    service += [
        ("ExecStartPre", _completed(list(podunit), dependency.name))
        for dependency in container.depends_on
        if dependency.condition is DependencyCondition.COMPLETED
    ]
    run = ("run",) if plan is None else ("run", "--plan", plan)
    service += [
        ("ExecStart", podunit_command(*run) + " " + name_word),
        (
            "ExecStop",
            podunit_command("stop", "-t", seconds(container.stop_timeout)) + " " + name_word,
        ),
        ("ExecStopPost", podunit_command("rm", "-f", prefix="-") + " " + name_word),
    ]
    reload = container.reload
    if reload is not None and reload.signal is not None:
        kill = podunit_command("kill", "-s", signal_name(reload.signal))
        service.append(("ExecReload", f"{kill} {name_word}"))
    elif reload is not None and reload.command:
        words = " ".join(exec_word(word, "reload: command") for word in reload.command)
        service.append(("ExecReload", f"{podunit_command('exec')} {name_word} -- {words}"))
    start_timeout = _start_timeout(container)
    if start_timeout is not None:
        service.append(("TimeoutStartSec", seconds(start_timeout)))
    service += [
        ("TimeoutStopSec", seconds(container.stop_timeout + STOP_TIMEOUT_MARGIN)),
        (
            "Restart",
            "on-failure"
            if health_units.restarts_on_failure(container)
            else RESTART[container.restart],
        ),
    ]
    if container.cgroups is not CgroupMode.ENABLED:
        limits = container.resources
        for key, value in (
            ("MemoryMax", limits.memory),
            ("MemoryLow", limits.memory_reservation),
            ("CPUQuota", None if limits.cpus is None else cpu_quota(limits.cpus)),
            ("CPUWeight", limits.cpu_weight),
            ("TasksMax", limits.pids),
        ):
            if value is not None:
                service.append((key, str(value)))
    return _text(
        _header(sources, notes),
        [
            ("Unit", _apply_passthrough(unit, container.unit_extra, "unit")),
            ("Service", _apply_passthrough(service, container.service_extra, "service")),
        ],
    )


def _completed(podunit: list[str], dependency: str) -> str:
    """`condition: service_completed_successfully`: an `ExecStartPre=` that waits until
    the dependency's container has exited (`podunit wait`, which also answers for a
    container already removed) and fails the start unless it exited 0."""
    import shlex

    wait = " ".join(shlex.quote(word) for word in [*podunit, "wait", dependency])
    script = (
        f'code=$({wait}) && test "$code" = 0 || {{ echo "podunit: dependency '
        f'{dependency} did not complete successfully (exit status $code)" >&2; exit 1; }}'
    )
    return command_line(["/bin/sh", "-c", script])


def podunit_argv(podunit: str, *, user: bool) -> list[str]:
    """The command prefix of every Exec line: the podunit executable (+ `--user`)."""
    return [podunit, "--user"] if user else [podunit]


def plan_text(container: Container) -> str:
    """The plan file of a container: `{"podunit-plan": 1, "container": ...}` as one line
    of JSON (toolkit.definitions.model, "plan files"); json's default encoder, the
    fastest (non-ASCII is written as \\u escapes)."""
    import json

    from toolkit.definitions.model import PLAN_KEY, PLAN_VERSION, container_to_json

    plan = {PLAN_KEY: PLAN_VERSION, "container": container_to_json(container)}
    return json.dumps(plan) + "\n"


def render(
    container: Container,
    *,
    podunit: str,
    user: bool = False,
    sources: Sequence[str] = (),
    environment: Sequence[tuple[str, str]] = (),
    plan_dir: str | None = None,
    notes: Sequence[str] = (),
) -> UnitFiles:
    """The unit files, install symlinks and plan file of one container (spec §2).

    `podunit` is the absolute path of the podunit executable written into the
    Exec lines; `sources` the definition file then its drop-ins (default: the
    container's own location); `environment` extra `Environment=` pairs for the
    service (e.g. PODUNIT_DEFINITION_DIRS, so the runtime finds the definition).
    With `plan_dir` (an absolute directory, `<normal dir>/podunit`), the container
    is also written as the plan file `NAME.json` (`NAME@.json` for a template) and
    the service runs `podunit run --plan <plan_dir>/NAME.json NAME`, which reads no
    definition. Raises `DefinitionError` located at the container.
    """
    source_paths = list(sources) or [container.source.path]
    service = f"{container.unit_name}.service"
    socket = f"{container.unit_name}.socket" if container.sockets else None
    plan_name = f"{container.unit_name}.json"
    plan = None if plan_dir is None else f"{plan_dir}/{plan_name}"
    try:
        files = {
            service: _service_text(
                container,
                source_paths,
                podunit_argv(podunit, user=user),
                socket,
                environment,
                plan,
                notes,
            )
        }
        if socket is not None:
            files[socket] = _socket_text(container, source_paths, socket)
        if container.build is not None:
            files[build_unit_name(container)] = build_unit_text(
                container, podunit_argv(podunit, user=user), plan
            )
        health = health_units.health_units(
            container,
            podunit_words=command_line(podunit_argv(podunit, user=user)),
            source=source_paths[0],
            environment=environment,
        )
        for file_name, sections in health.items():
            files[file_name] = _text(_header(source_paths), sections)
        symlinks = _install_symlinks(container, service, socket, user=user)
    except DefinitionError as error:
        raise _located(container, error) from None
    plans = {} if plan is None else {plan_name: plan_text(container)}
    return UnitFiles(files, symlinks, plans)


def dependency_errors(
    container: Container, containers: Mapping[str, Container]
) -> list[DefinitionError]:
    """`condition: service_healthy` needs the dependency to use `notify: healthy`.

    Whether a dependency is defined at all is the loader's check
    (`toolkit.definitions.loader`); unknown names are skipped here.
    """
    errors: list[DefinitionError] = []
    for dependency in container.depends_on:
        base, at, _ = dependency.name.partition("@")
        target = containers.get(base + at)  # `worker@foo` is an instance of `worker@`
        if (
            target is not None
            and dependency.condition is DependencyCondition.HEALTHY
            and target.notify is not Notify.HEALTHY
        ):
            errors.append(
                DefinitionError(
                    container.source,
                    f"container {container.unit_name!r}: depends_on {dependency.name!r} "
                    f"with condition service_healthy needs {base + at!r} to use "
                    "'notify: healthy' (its READY=1 then means healthy)",
                    hint=f"add 'notify: healthy' and a healthcheck to {base + at!r}",
                )
            )
    return errors


def _shadowed(units: UnitFiles, installed: Mapping[str, str]) -> tuple[str, str] | None:
    """(unit file name, existing path) of the first unit or alias of `units` that exists."""
    if not installed:
        return None
    for name in (*units.files, *(link for link in units.symlinks if "/" not in link)):
        if name in installed:
            return name, installed[name]
    return None


def project_text(project: str, sources: Sequence[str]) -> str:
    """`PROJECT-project.target`: starting it starts the project's enabled services (they
    are in its `.wants/`); stopping or restarting it stops or restarts every service of
    the project (they are PartOf= it). The services are ordered After= it, so a stop
    of the target completes only when every service has stopped (the reverse of the
    start order); a start returns once the services' start jobs are queued, as
    `docker compose up -d` does."""
    unit: Lines = [
        ("Description", plain_value(f"podunit Compose project {project}", "project name")),
        ("SourcePath", plain_value(sources[0], "definition path")),
    ]
    return _text(_header(sources), [("Unit", unit)])


def _projects(
    rendered: dict[str, UnitFiles],
    containers: Mapping[str, Container],
    projects: Mapping[str, Sequence[str]],
) -> None:
    """Add each project's target (and its install symlink) to `rendered`."""
    members = {containers[name].project for name in rendered} - {None}
    for project in sorted(p for p in members if p is not None):
        target = project_target(project)
        sources = list(projects.get(project, ())) or [
            next(c.source.path for c in containers.values() if c.project == project)
        ]
        rendered[target] = UnitFiles(
            {target: project_text(project, sources)},
            {f"multi-user.target.wants/{target}": f"../{target}"},
        )


def _drop_orphans(
    rendered: dict[str, UnitFiles], containers: Mapping[str, Container]
) -> list[DefinitionError]:
    """Drop every unit that depends on a unit that was not generated (until none is
    left), so no unit names a dependency that does not exist."""
    errors: list[DefinitionError] = []
    changed = True
    while changed:
        changed = False
        for name in sorted(rendered):
            container = containers[name]
            for dependency in container.depends_on:
                base, at, _ = dependency.name.partition("@")
                if base + at in rendered:
                    continue
                what = (
                    f"service {dependency.name.removeprefix(container.project + '-')!r}"
                    if container.project is not None
                    and dependency.name.startswith(container.project + "-")
                    else f"container {base + at!r}"
                )
                errors.append(
                    DefinitionError(
                        container.source,
                        f"container {name!r}: not generated, its dependency {what} was not "
                        "generated (see its errors)",
                    )
                )
                del rendered[name]
                changed = True
                break
    return errors


def render_all(
    containers: Mapping[str, Container],
    *,
    podunit: str,
    user: bool = False,
    sources: Mapping[str, Sequence[str]] | None = None,
    environment: Sequence[tuple[str, str]] = (),
    plan_dir: str | None = None,
    installed: Mapping[str, str] | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
    projects: Mapping[str, Sequence[str]] | None = None,
    stored_images: frozenset[str] = frozenset(),
) -> tuple[dict[str, UnitFiles], list[DefinitionError]]:
    """Render every container (keyed by unit name); one bad container never stops the others.

    Returns the units of every good container, of each Compose project
    (`PROJECT-project.target`, keyed by that name) and the pull units, and the errors
    of the bad ones, including cross-container problems: service_healthy dependencies
    on a container without `notify: healthy`, a dependency on a container that was not
    generated, and a symlink (alias, install link) that another container already
    generates. `installed`: unit file names that exist outside the generator's output
    (toolkit.unitgen.shadow) and the path of each; a container whose unit file or alias
    has one of these names is refused. `notes`: extra header lines per container;
    `projects`: each Compose project's files.
    """
    errors: list[DefinitionError] = []
    rendered: dict[str, UnitFiles] = {}
    for name in sorted(containers):
        container = containers[name]
        problems = dependency_errors(container, containers)
        if problems:
            errors += problems
            continue
        try:
            rendered[name] = render(
                container,
                podunit=podunit,
                user=user,
                sources=(sources or {}).get(name, ()),
                environment=environment,
                plan_dir=plan_dir,
                notes=(notes or {}).get(name, ()),
            )
        except DefinitionError as error:
            errors.append(error)
            continue
        shadowed = _shadowed(rendered[name], installed or {})
        if shadowed is not None:
            del rendered[name]
            errors.append(
                DefinitionError(
                    container.source,
                    f"container {name!r}: {shadowed[0]} already exists as {shadowed[1]}, a unit "
                    "that is not podunit's: the generated unit would silently replace it or be "
                    "hidden by it",
                    hint="rename the container",
                )
            )
    # A container's unit files may clash with another's (`web-health` and the health units
    # of `web`); symlinks may clash with unit files or each other. Every unit file is claimed
    # before any symlink; the first one (by name) wins and a loser is dropped whole.
    claimed: dict[str, str] = {}
    for symlinks in (False, True):
        for name in list(rendered):
            paths = rendered[name].symlinks if symlinks else rendered[name].files
            clashes = sorted(path for path in paths if path in claimed)
            if clashes:
                errors.append(
                    DefinitionError(
                        containers[name].source,
                        f"container {name!r}: {clashes[0]!r} is already generated for "
                        f"container {claimed[clashes[0]]!r}",
                        hint=None if symlinks else "rename one of them",
                    )
                )
                del rendered[name]
                continue
            claimed.update(dict.fromkeys(paths, name))
    errors += _drop_orphans(rendered, containers)
    pulls = _pull_units(containers, rendered, podunit_argv(podunit, user=user), stored_images)
    _projects(rendered, containers, projects or {})
    rendered.update(pulls)
    return rendered, errors


def _pull_units(
    containers: Mapping[str, Container], rendered: Mapping[str, UnitFiles], podunit: list[str],
    stored: frozenset[str],
) -> dict[str, UnitFiles]:  # fmt: skip
    """One pull unit per registry image that a rendered container requires; it waits for
    the network unless the policy is `missing` and the image is in the store (`stored`)."""
    wanted: dict[str, tuple[str, PullPolicy, list[str]]] = {}
    for name in sorted(rendered):
        container = containers[name]
        if container.build is not None or container.image is None:
            continue
        unit = pull_unit_name(container.image)
        if unit is None or container.pull is PullPolicy.NEVER:
            continue
        image, policy, users = wanted.get(unit, (container.image, container.pull, []))
        wanted[unit] = (image, stronger(policy, container.pull), [*users, container.unit_name])
    units = {}
    for unit, (image, policy, users) in wanted.items():
        location = registry_location(image)
        present = policy is PullPolicy.MISSING and store_name(str(location)) in stored
        text = pull_unit_text(image, policy, podunit, users, network=not present)
        units[unit] = UnitFiles({unit: text})
    return units

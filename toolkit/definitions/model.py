"""The typed, immutable model of a container definition (spec §1.1).

Parsing (`toolkit.definitions.parse`, `.compose`) produces these; unit rendering
(`toolkit.unitgen.render`) and the runtime (`toolkit.runtime.oci`, `toolkit.runtime`) consume them.
Every value is already validated and normalised: durations are `timedelta`,
sizes are bytes, signals are numbers, paths are absolute.

The records are `typing.NamedTuple`s rather than dataclasses: every `podunit run`
imports this module, and `dataclasses` (inspect, ast, ...) plus generating the
classes cost it about 25 ms; a NamedTuple class costs well under 1 ms. They are
tuples: change one with `_replace`, and serialise with `container_to_json`, never
with `json.dumps` directly (a tuple would become a list).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from enum import Enum
from typing import Any, NamedTuple

from toolkit.definitions import logdrivers
from toolkit.errors import Location, PodunitError


class Notify(Enum):
    """Readiness protocol (spec §3.2)."""

    CONMON = "conmon"
    CONTAINER = "container"
    HEALTHY = "healthy"
    IGNORE = "ignore"


class CgroupMode(Enum):
    """Where conmon and the payload are placed (spec §3.4)."""

    SPLIT = "split"
    ENABLED = "enabled"
    DISABLED = "disabled"


class Restart(Enum):
    """Restart policy, mapped onto systemd's Restart= by the renderer."""

    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"


class LogDriver(Enum):
    """Where a container's output goes; the values are `definitions.logdrivers`'s strings."""

    JOURNALD = logdrivers.JOURNALD
    K8S_FILE = logdrivers.K8S_FILE
    PASSTHROUGH = logdrivers.PASSTHROUGH
    NONE = logdrivers.NONE


class SocketType(Enum):
    """Socket kinds; the value is the systemd.socket(5) Listen*= key."""

    STREAM = "ListenStream"
    DATAGRAM = "ListenDatagram"
    SEQPACKET = "ListenSequentialPacket"


class MountType(Enum):
    BIND = "bind"
    TMPFS = "tmpfs"
    VOLUME = "volume"


class PullPolicy(Enum):
    """When a registry image is fetched (`pull:`; Compose `pull_policy`), podunit.yaml(5)."""

    MISSING = "missing"  # only when not in the store (the default)
    ALWAYS = "always"  # at every start of the image's pull unit
    NEVER = "never"  # never: a missing image is an error
    NEWER = "newer"  # when the registry's digest differs from the stored one


class AutoUpdate(Enum):
    """`auto_update:` (label io.containers.autoupdate): what `podunit auto-update` checks."""

    REGISTRY = "registry"  # the registry's digest of the reference
    LOCAL = "local"  # the local source (an archive/layout, or a rebuilt `build:`)


class DependencyCondition(Enum):
    STARTED = "service_started"
    HEALTHY = "service_healthy"
    COMPLETED = "service_completed_successfully"


class PortMapping(NamedTuple):
    """`[ip:]host:container[/proto]`; the host port is reserved while running."""

    host_port: int
    container_port: int
    protocol: str = "tcp"  # "tcp" or "udp"
    host_ip: str | None = None


class NetworkAttachment(NamedTuple):
    """One network a container joins (`networks:`), its DNS aliases and a fixed address."""

    name: str
    aliases: tuple[str, ...] = ()
    ipv4_address: str | None = None


class NetworkSpec(NamedTuple):
    """A network declared under a file's top-level `networks:` (podunit.yaml(5)).

    `subnet`/`gateway` None: chosen when the network is first created. `external`:
    declared elsewhere (another file or `podunit network create`), only referred to.
    """

    name: str
    subnet: str | None = None
    gateway: str | None = None
    internal: bool = False
    dns: bool = True
    ipv6: bool = False
    external: bool = False


class Mount(NamedTuple):
    """A volume or tmpfs. `source` is an absolute host path (bind), a volume name, or None."""

    type: MountType
    target: str
    source: str | None = None
    read_only: bool = False
    size: int | None = None  # bytes, tmpfs only
    options: tuple[str, ...] = ()


class Volume(NamedTuple):
    """A named volume as declared by a top-level `volumes:` entry (podunit.yaml(5) VOLUMES).

    `name` is the volume's real name in podunit's volume store (a Compose file's
    volumes are `PROJECT_KEY` unless `name:` or `external` says otherwise). `kind`:
    `directory` (podunit keeps the data under its state directory), `bind` (the data
    is the host directory `device`), `tmpfs` (memory; `options` as mount(8) tmpfs).
    """

    name: str
    kind: str = "directory"
    device: str | None = None  # bind: absolute host path
    options: tuple[str, ...] = ()  # driver_opts `o`, split at commas (bind/rbind dropped)
    external: bool = False  # must already exist: never created by a container's start
    labels: tuple[tuple[str, str], ...] = ()


class Secret(NamedTuple):
    """A secret or config mounted read-only into a container (podunit.yaml(5) SECRETS).

    Exactly one of `file` (absolute host path), `environment` (a variable of the
    environment `podunit run` starts with, read at start) or `content` (configs only)
    gives the value; the generator never reads it, so it is never in a unit or plan.
    """

    name: str  # the top-level key
    target: str  # absolute path in the container
    file: str | None = None
    environment: str | None = None
    content: str | None = None
    uid: int = 0
    gid: int = 0
    mode: int = 0o444
    config: bool = False  # a `configs:` entry (else `secrets:`)


class Declarations(NamedTuple):
    """A file's top-level `volumes:`, `secrets:`, `configs:`, keyed as written
    (`toolkit.definitions.declarations` parses them; containers refer to them by key).
    The secrets' and configs' `target` is empty until a container refers to one."""

    volumes: Mapping[str, Volume]
    secrets: Mapping[str, Secret]
    configs: Mapping[str, Secret]
    compose: bool = False  # a Compose file: a volume must be declared to be used
    broken: frozenset[str] = frozenset()  # "volumes:KEY", ... of declarations with errors


NO_DECLARATIONS = Declarations({}, {}, {})


class SocketSpec(NamedTuple):
    """One socket of the generated NAME.socket (spec §3.3).

    `listen` is what systemd's Listen*= takes: `[addr:]port` or an absolute path.
    """

    listen: str
    type: SocketType = SocketType.STREAM
    name: str | None = None  # FileDescriptorName=


class HealthOnFailure(Enum):
    """What happens when the container becomes unhealthy (Quadlet's HealthOnFailure=)."""

    NONE = "none"
    KILL = "kill"
    RESTART = "restart"
    STOP = "stop"


class Healthcheck(NamedTuple):
    """Compose-style health check; `test` is an argv (CMD-SHELL becomes sh -c).

    During `start_period` failures do not count and checks run every
    `start_interval` (Compose/Docker semantics); `retries` failures in a row make
    the container unhealthy.
    """

    test: tuple[str, ...]
    interval: timedelta = timedelta(seconds=30)
    timeout: timedelta = timedelta(seconds=30)
    retries: int = 3
    start_period: timedelta = timedelta(0)
    start_interval: timedelta = timedelta(seconds=5)


class StartupCheck(NamedTuple):
    """`health_startup`: a check of its own that runs first, until it passes `success`
    times in a row (Quadlet's HealthStartup*); `retries` failures (0: no limit) make
    the container unhealthy."""

    test: tuple[str, ...]
    interval: timedelta = timedelta(seconds=30)
    timeout: timedelta = timedelta(seconds=30)
    retries: int = 0
    success: int = 1


class Resources(NamedTuple):
    """Limits on the container's cgroup, as systemd properties (spec §3.4)."""

    memory: int | None = None  # MemoryMax=, bytes
    memory_reservation: int | None = None  # MemoryLow=, bytes
    cpus: float | None = None  # CPUQuota= (1.5 -> 150%)
    cpu_weight: int | None = None  # CPUWeight=, 1..10000
    pids: int | None = None  # TasksMax=


class Ulimit(NamedTuple):
    name: str  # lower-case resource name as in Compose: nofile, nproc, ...
    soft: int
    hard: int


class Reload(NamedTuple):
    """ExecReload=: either send `signal` to the container or exec `command` in it."""

    signal: int | None = None
    command: tuple[str, ...] | None = None


class Dependency(NamedTuple):
    """`depends_on`: `required` false -> Wants= (else Requires=); `restart` true -> the
    dependent is stopped and restarted with the dependency (BindsTo=/PartOf=)."""

    name: str
    condition: DependencyCondition = DependencyCondition.STARTED
    required: bool = True
    restart: bool = False


class Build(NamedTuple):
    """`build:` — an image built by buildah in its own unit (podunit.yaml(5), "build")."""

    context: str  # absolute directory
    dockerfile: str | None = None  # absolute path; None: <context>/Containerfile or Dockerfile
    args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    labels: tuple[tuple[str, str], ...] = ()


class Install(NamedTuple):
    """[Install] applied by the generator as symlinks in its output directory."""

    wanted_by: tuple[str, ...] = ()
    required_by: tuple[str, ...] = ()
    alias: tuple[str, ...] = ()


class Container(NamedTuple):
    """One container definition, fully validated (spec §1.1)."""

    name: str  # without the trailing "@" for templates
    source: Location  # where the container's key stands in its file
    template: bool = False
    image: str | None = None
    rootfs: str | None = None  # absolute host path
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: tuple[tuple[str, str], ...] = ()
    env_files: tuple[str, ...] = ()  # absolute paths
    working_dir: str | None = None
    user: str | None = None  # "uid[:gid]" or a name, as written
    group_add: tuple[str, ...] = ()
    hostname: str | None = None
    mounts: tuple[Mount, ...] = ()  # volumes: and tmpfs: together, in order
    volumes: tuple[Volume, ...] = ()  # the declared named volumes `mounts` use
    secrets: tuple[Secret, ...] = ()  # secrets: and configs: together, in order
    read_only: bool = False
    # None: the default network mode (bridge, the default network); "bridge", "none",
    # "host" or a network name. `networks` lists several, with aliases and addresses.
    network: str | None = None
    networks: tuple[NetworkAttachment, ...] = ()
    network_specs: tuple[NetworkSpec, ...] = ()  # the declared networks it joins (loader)
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (host name, address)
    ports: tuple[PortMapping, ...] = ()
    sockets: tuple[SocketSpec, ...] = ()
    notify: Notify = Notify.CONMON
    healthcheck: Healthcheck | None = None
    health_startup: StartupCheck | None = None
    health_on_failure: HealthOnFailure = HealthOnFailure.NONE
    stop_signal: int = 15
    stop_timeout: timedelta = timedelta(seconds=10)
    restart: Restart = Restart.NO
    resources: Resources = Resources()
    cap_add: tuple[str, ...] = ()  # upper-case, with CAP_ prefix
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    no_new_privileges: bool = True
    seccomp: str = "default"  # "default", "unconfined" or an absolute path
    devices: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    security_opt: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    init: bool = False
    cgroups: CgroupMode = CgroupMode.SPLIT
    log_driver: LogDriver = LogDriver.JOURNALD
    log_max_size: int | None = None  # bytes
    depends_on: tuple[Dependency, ...] = ()
    reload: Reload | None = None
    unit_extra: tuple[tuple[str, str], ...] = ()  # `unit:` -> [Unit]
    service_extra: tuple[tuple[str, str], ...] = ()  # `service:` -> [Service]
    socket_extra: tuple[tuple[str, str], ...] = ()  # `socket:` -> [Socket]
    install: Install | None = None  # None: the spec's defaults apply
    runtime: str | None = None  # "runc", "crun"; None: crun if installed
    pull: PullPolicy = PullPolicy.MISSING
    build: Build | None = None  # `image` then names the result
    auto_update: AutoUpdate | None = None
    # Compose (spec §1.3): the project and service a container comes from; its name
    # and unit are `PROJECT-SERVICE` (toolkit.definitions.project).
    project: str | None = None
    service: str | None = None
    profiles: tuple[str, ...] = ()  # Compose profiles; enabled only when one is active
    expose: tuple[str, ...] = ()  # recorded (documentation of the container's ports)
    tty: bool = False  # recorded: a unit's container has no terminal
    stdin_open: bool = False  # recorded: a unit's container has no stdin
    shm_size: int | None = None  # bytes of /dev/shm (default 64 MiB)
    domainname: str | None = None  # the UTS domain name
    # env_file syntax: "plain" (own form: K=V lines as written) or "dotenv" (Compose:
    # quotes, `export`, comments, ${VAR} of earlier keys; toolkit.definitions.dotenv)
    env_file_syntax: str = "plain"

    @property
    def unit_name(self) -> str:
        """`web` -> `web`, template `worker` -> `worker@` (add `.service`/`.socket`)."""
        return f"{self.name}@" if self.template else self.name


def project_target(project: str) -> str:
    """The unit that starts and stops a Compose project: `PROJECT-project.target`.

    Not `PROJECT.target`: a project named after a systemd target (`network`, `sound`,
    `default`) would replace that target (the generator's directory comes before
    /usr/lib/systemd/system); no standard unit ends in `-project.target`.
    """
    return f"{project}-project.target"


# --- plan files: a Container as JSON --------------------------------------------------------

# A generated unit's plan file is {PLAN_KEY: PLAN_VERSION, "container": container_to_json(c)}:
# `podunit run --plan FILE NAME` reads the container from it instead of the definitions.
PLAN_KEY = "podunit-plan"
PLAN_VERSION = 1

# Fields that JSON cannot carry as they are: nested records, enums, durations, the location.
# (A record in a tuple is written as a one-element tuple of its class.) Every other JSON
# list is a tuple of the model, every other value a plain str/int/float/bool/None.
_FIELD_TYPES: dict[type, dict[str, Any]] = {
    PortMapping: {},
    NetworkAttachment: {},
    NetworkSpec: {},
    Mount: {"type": MountType},
    Volume: {},
    Secret: {},
    SocketSpec: {"type": SocketType},
    Healthcheck: {
        "interval": timedelta,
        "timeout": timedelta,
        "start_period": timedelta,
        "start_interval": timedelta,
    },
    StartupCheck: {"interval": timedelta, "timeout": timedelta},
    Resources: {},
    Ulimit: {},
    Reload: {},
    Dependency: {"condition": DependencyCondition},
    Install: {},
    Build: {},
    Container: {
        "source": Location,
        "mounts": (Mount,),
        "volumes": (Volume,),
        "secrets": (Secret,),
        "ports": (PortMapping,),
        "networks": (NetworkAttachment,),
        "network_specs": (NetworkSpec,),
        "sockets": (SocketSpec,),
        "notify": Notify,
        "healthcheck": Healthcheck,
        "health_startup": StartupCheck,
        "health_on_failure": HealthOnFailure,
        "stop_timeout": timedelta,
        "restart": Restart,
        "resources": Resources,
        "ulimits": (Ulimit,),
        "cgroups": CgroupMode,
        "log_driver": LogDriver,
        "depends_on": (Dependency,),
        "reload": Reload,
        "install": Install,
        "pull": PullPolicy,
        "build": Build,
        "auto_update": AutoUpdate,
    },
}


_PLAIN = (str, int, bool, float, type(None))


def _to_json(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, timedelta):
        return value // timedelta(microseconds=1)  # exact: whole microseconds
    if isinstance(value, Location):
        return [value.path, value.line, value.column]
    if hasattr(value, "_fields"):
        # Fields at their default are left out (the record's defaults fill them in
        # again): most of a container is defaults, so plans are small and quick to write.
        defaults = value._field_defaults
        return {
            name: _to_json(item)
            for name, item in zip(value._fields, value, strict=True)
            if name not in defaults
            or type(item) is not type(defaults[name])
            or item != defaults[name]
        }
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    return value


def _from_json(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    if kind is timedelta:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"a duration must be whole microseconds, not {value!r}")
        return timedelta(microseconds=value)
    if kind is Location:
        path, line, column = value
        return Location(str(path), int(line), int(column))
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(value)
    if isinstance(kind, tuple):  # (Record,): a tuple of records
        return tuple(_from_json(kind[0], item) for item in value)
    if kind in _FIELD_TYPES:
        if not isinstance(value, Mapping):
            raise ValueError(f"{kind.__name__} must be an object, not {value!r}")
        kinds = _FIELD_TYPES[kind]
        return kind(**{name: _from_json(kinds.get(name), item) for name, item in value.items()})
    if isinstance(value, list):
        return tuple(_from_json(None, item) for item in value)
    if isinstance(value, dict):
        raise ValueError(f"unexpected object {value!r}")
    return value


def container_to_json(container: Container) -> dict[str, Any]:
    """The container as JSON-ready data; `container_from_json` gives back an equal one."""
    data: dict[str, Any] = _to_json(container)
    return data


def container_from_json(data: Mapping[str, Any]) -> Container:
    """The container that `container_to_json` wrote; `PodunitError` naming the problem
    when `data` is not one (unknown or missing fields, bad enum values, wrong shapes)."""
    try:
        container: Container = _from_json(Container, data)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise PodunitError(f"not a podunit container plan: {error}") from None
    return container

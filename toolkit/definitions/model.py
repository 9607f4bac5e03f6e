"""The typed, immutable model of a container definition (spec §1.1).

Parsing (`toolkit.definitions.parse`, `.compose`) produces these; unit rendering
(`toolkit.units`) and the runtime (`toolkit.oci`, `toolkit.runtime`) consume them.
Every value is already validated and normalised: durations are `timedelta`,
sizes are bytes, signals are numbers, paths are absolute.

The records are `typing.NamedTuple`s rather than dataclasses: every `podunit run`
imports this module, and `dataclasses` (inspect, ast, ...) plus generating the
classes cost it about 25 ms; a NamedTuple class costs well under 1 ms. They are
tuples: change one with `_replace`, and serialise with `container_to_json`, never
with `json.dumps` directly (a tuple would become a list).
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import NamedTuple

from toolkit.errors import Location


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
    JOURNALD = "journald"
    K8S_FILE = "k8s-file"
    PASSTHROUGH = "passthrough"
    NONE = "none"


class SocketType(Enum):
    """Socket kinds; the value is the systemd.socket(5) Listen*= key."""

    STREAM = "ListenStream"
    DATAGRAM = "ListenDatagram"
    SEQPACKET = "ListenSequentialPacket"


class MountType(Enum):
    BIND = "bind"
    TMPFS = "tmpfs"
    VOLUME = "volume"


class DependencyCondition(Enum):
    STARTED = "service_started"
    HEALTHY = "service_healthy"


class PortMapping(NamedTuple):
    """`[ip:]host:container[/proto]`; the host port is reserved while running."""

    host_port: int
    container_port: int
    protocol: str = "tcp"  # "tcp" or "udp"
    host_ip: str | None = None


class Mount(NamedTuple):
    """A volume or tmpfs. `source` is an absolute host path (bind), a volume name, or None."""

    type: MountType
    target: str
    source: str | None = None
    read_only: bool = False
    size: int | None = None  # bytes, tmpfs only
    options: tuple[str, ...] = ()


class SocketSpec(NamedTuple):
    """One socket of the generated NAME.socket (spec §3.3).

    `listen` is what systemd's Listen*= takes: `[addr:]port` or an absolute path.
    """

    listen: str
    type: SocketType = SocketType.STREAM
    name: str | None = None  # FileDescriptorName=


class Healthcheck(NamedTuple):
    """Compose-style health check; `test` is an argv (CMD-SHELL becomes sh -c)."""

    test: tuple[str, ...]
    interval: timedelta = timedelta(seconds=30)
    timeout: timedelta = timedelta(seconds=30)
    retries: int = 3
    start_period: timedelta = timedelta(0)


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
    name: str
    condition: DependencyCondition = DependencyCondition.STARTED


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
    read_only: bool = False
    network: str = "private"  # "private", "host", "none" or a network name
    ports: tuple[PortMapping, ...] = ()
    sockets: tuple[SocketSpec, ...] = ()
    notify: Notify = Notify.CONMON
    healthcheck: Healthcheck | None = None
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

    @property
    def unit_name(self) -> str:
        """`web` -> `web`, template `worker` -> `worker@` (add `.service`/`.socket`)."""
        return f"{self.name}@" if self.template else self.name

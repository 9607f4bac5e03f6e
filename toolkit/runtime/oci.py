"""The OCI bundle: a `Container` turned into runtime-spec `config.json`.

`build_spec` is pure: everything it needs from the host (resolved user, the
current hard rlimits, device numbers, env-file contents, capabilities held) is
gathered first by the `gather_*`/`resolve_*` helpers at the edge. The defaults
follow Podman's (libpod's generated specs): the default capability set, masked
and read-only paths, the standard mounts, no default pids limit.

References: opencontainers/runtime-spec config.md and config-linux.md; the JSON
schema (vendored for the tests in tests/data/oci-runtime-spec).
"""

from __future__ import annotations

import json
import os
import resource
import stat
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from toolkit import safefile
from toolkit.definitions import values
from toolkit.definitions.model import Container, Mount, MountType
from toolkit.definitions.values import PODUNIT_MOUNT_OPTIONS
from toolkit.errors import PodunitError, UnreadableFile
from toolkit.fs import read_text

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Podman's default capabilities (containers.conf default_capabilities).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)

# capability(7) numbers 0..40, in order.
CAPABILITY_NAMES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
)
READONLY_PATHS = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# Compose ulimit names -> OCI rlimit types.
RLIMIT_NAMES = {
    "as": "RLIMIT_AS",
    "core": "RLIMIT_CORE",
    "cpu": "RLIMIT_CPU",
    "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS",
    "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
}
# Podman's defaults, clamped to the caller's hard limits (no CAP_SYS_RESOURCE here).
DEFAULT_RLIMITS = {"RLIMIT_NOFILE": 1048576, "RLIMIT_NPROC": 4194304}

# A deny-list seccomp profile for `seccomp: default`: everything is allowed except
# the system calls Docker's and Podman's default profiles refuse to unprivileged
# containers. Unknown names are skipped by the runtimes' libseccomp.
SECCOMP_DENIED_SYSCALLS = [
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "move_pages",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
]


INIT_PATH = "/run/podunit-init"
INIT_CANDIDATES = ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit", "/usr/bin/tini-static",
                   "/usr/bin/tini")  # fmt: skip


def apply_security_opts(container: Container) -> Container:
    """`security_opt` entries (read by `definitions.values.security_opt`, as `validate`
    reads them) folded into the model's fields: `no-new-privileges[:true|false]`,
    `seccomp=unconfined|PATH`; `label=disable` and `apparmor=unconfined` are no-ops (no
    LSM here). A plan or ad-hoc option the definitions would refuse is an error here too.
    """
    changes: dict[str, Any] = {}
    for option in container.security_opt:
        try:
            key, value = values.security_opt(option)
        except ValueError as error:
            raise PodunitError(
                f"container {container.name!r}: {error}", hint="fix the definition's security_opt"
            ) from None
        if key == "no-new-privileges":
            changes["no_new_privileges"] = value == "true"
        elif key == "seccomp":
            changes["seccomp"] = value
    return container._replace(**changes) if changes else container


def find_init_binary(candidates: Sequence[str] = INIT_CANDIDATES) -> str | None:
    """A statically usable minimal init on the host (catatonit, as Podman uses), or None."""
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


class ResolvedUser(NamedTuple):
    """The numeric identity of the container's process."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()


class DeviceNode(NamedTuple):
    """A host device made available in the container (`devices:`)."""

    path: str  # inside the container
    type: str  # "c" or "b"
    major: int
    minor: int
    access: str = "rwm"
    file_mode: int = 0o666


_NOTHING: Mapping[str, Any] = MappingProxyType({})


class SpecInputs(NamedTuple):
    """Everything `build_spec` needs besides the `Container`, gathered at the edge.

    These records are NamedTuples, not dataclasses: `podunit run` must not pay for
    `dataclasses`.
    """

    container_id: str
    rootfs: str
    hard_limits: Mapping[str, int] = _NOTHING  # RLIMIT_* -> hard limit
    user: ResolvedUser = ResolvedUser()
    env_file_vars: tuple[tuple[str, str], ...] = ()
    devices: tuple[DeviceNode, ...] = ()
    extra_env: Mapping[str, str] = _NOTHING  # activation, notify
    extra_mounts: tuple[Mount, ...] = ()  # added by podunit itself (notify socket)
    cgroups_path: str | None = None
    tty: bool = False
    held_capabilities: tuple[str, ...] = CAPABILITY_NAMES  # what `privileged` grants
    seccomp_profile: Mapping[str, Any] | None = None  # the file of `seccomp: /path`
    init_binary: str | None = None  # host path of catatonit/tini for `init: true`
    rootless_ids: tuple[int, int] | None = None  # (uid, gid) of a non-root caller


def build_spec(container: Container, inputs: SpecInputs) -> dict[str, Any]:
    """The runtime-spec config.json for `container` (config.md, config-linux.md)."""
    container = apply_security_opts(container)
    network_is_host = container.network == "host"
    hostname = container.hostname or (None if network_is_host else inputs.container_id[:12])
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(container, inputs, hostname),
        "root": {"path": inputs.rootfs, "readonly": container.read_only},
        "mounts": _mounts(container, network_is_host)
        + [_volume_mount(m) for m in inputs.extra_mounts],
        "linux": _linux(
            container,
            inputs,
            network_is_host,
            hostname is not None or container.domainname is not None,
        ),
    }
    if container.init:
        if inputs.init_binary is None:
            raise PodunitError(
                f"container {container.name!r}: `init: true` needs catatonit or tini on the host",
                hint="install the Debian package catatonit",
            )
        init_mount = {"destination": INIT_PATH, "type": "bind", "source": inputs.init_binary}
        spec["mounts"].append({**init_mount, "options": ["bind", "ro"]})
        spec["process"]["args"] = [INIT_PATH, "--", *spec["process"]["args"]]
    if inputs.rootless_ids is not None:
        _make_rootless(spec, inputs.rootless_ids)
    if hostname is not None:
        spec["hostname"] = hostname
    if container.domainname is not None:
        spec["domainname"] = container.domainname
    annotations = dict(container.annotations)
    if annotations:
        spec["annotations"] = annotations
    return spec


def _make_rootless(spec: dict[str, Any], ids: tuple[int, int]) -> None:
    """A user namespace mapping container root to the caller (runc spec --rootless).

    Only root exists inside (no subordinate ids are used), so a container user or
    an extra group other than 0 cannot be mapped and is refused. devpts gets no
    `gid=5` (unmapped); the runtimes bind the default devices instead of mknod.
    """
    user = spec["process"]["user"]
    if user["uid"] != 0 or user["gid"] != 0 or any(user.get("additionalGids", [])):
        raise PodunitError(
            "a rootless container runs as root only: its user and groups must be 0",
            hint="drop `user:`/`group_add:`, or run podunit as root",
        )
    uid, gid = ids
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
    for mount in spec["mounts"]:
        if mount["type"] == "devpts":
            mount["options"] = [o for o in mount["options"] if not o.startswith("gid=")]


def container_argv(container: Container) -> list[str]:
    """entrypoint + command, as the process's args."""
    argv = [*(container.entrypoint or ()), *(container.command or ())]
    if not argv:
        raise PodunitError(
            f"container {container.name!r} has no command",
            hint="set `command:` (or `entrypoint:`) in its definition",
        )
    return argv


def _process(container: Container, inputs: SpecInputs, hostname: str | None) -> dict[str, Any]:
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    if inputs.tty:
        env["TERM"] = "xterm"
    if hostname is not None:
        env["HOSTNAME"] = hostname
    env.update(inputs.env_file_vars)
    env.update(container.environment)
    env.update(inputs.extra_env)
    user: dict[str, Any] = {"uid": inputs.user.uid, "gid": inputs.user.gid}
    if inputs.user.additional_gids:
        user["additionalGids"] = list(inputs.user.additional_gids)
    process: dict[str, Any] = {
        "terminal": inputs.tty,
        "user": user,
        "args": container_argv(container),
        "env": [f"{key}={value}" for key, value in env.items()],
        "cwd": container.working_dir or "/",
        "capabilities": _capabilities(container, inputs.held_capabilities),
        "rlimits": _rlimits(container, inputs.hard_limits),
        "noNewPrivileges": container.no_new_privileges and not container.privileged,
    }
    return process


def _capabilities(container: Container, held: Sequence[str]) -> dict[str, list[str]]:
    if container.privileged:
        chosen = list(held)
    else:
        unknown = [c for c in (*container.cap_add, *container.cap_drop) if c != "ALL"]
        unknown = [c for c in unknown if c not in CAPABILITY_NAMES]
        if unknown:
            raise PodunitError(f"unknown capability {unknown[0]!r}")
        chosen = [] if "ALL" in container.cap_drop else list(DEFAULT_CAPABILITIES)
        added = list(held) if "ALL" in container.cap_add else list(container.cap_add)
        chosen += [c for c in added if c not in chosen]
        chosen = [c for c in chosen if c not in container.cap_drop]
    return {
        "bounding": chosen,
        "effective": chosen,
        "permitted": chosen,
        "inheritable": [],
        "ambient": [],
    }


def _rlimits(container: Container, hard_limits: Mapping[str, int]) -> list[dict[str, Any]]:
    """Default and configured rlimits, never above the current hard limit."""
    wanted: dict[str, tuple[int, int]] = {name: (v, v) for name, v in DEFAULT_RLIMITS.items()}
    for ulimit in container.ulimits:
        if ulimit.name not in RLIMIT_NAMES:
            raise PodunitError(f"unknown ulimit {ulimit.name!r}")
        wanted[RLIMIT_NAMES[ulimit.name]] = (ulimit.soft, ulimit.hard)
    limits = []
    for name, (soft, hard) in wanted.items():
        ceiling = hard_limits.get(name)
        if ceiling is not None and ceiling >= 0:
            hard = min(hard, ceiling)
            soft = min(soft, hard)
        limits.append({"type": name, "soft": soft, "hard": hard})
    return limits


def _shm_size(container: Container) -> str:
    """`size=` of /dev/shm: Compose's `shm_size`, else 64 MiB (as Docker and Podman)."""
    size = container.shm_size
    return "size=65536k" if size is None else f"size={size}"


def _mounts(container: Container, network_is_host: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", _shm_size(container)]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]  # fmt: skip
    if network_is_host:  # sysfs of the host's network namespace: bind it, read-only
        mounts.append({"destination": "/sys", "type": "bind", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})  # fmt: skip
    else:
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})  # fmt: skip
    mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                   "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})  # fmt: skip
    mounts.extend(_volume_mount(mount) for mount in container.mounts)
    return mounts


def _volume_mount(mount: Mount) -> dict[str, Any]:
    if mount.type is MountType.TMPFS:
        options = ["nosuid", "nodev", "mode=1777"]
        if mount.size is not None:
            options.append(f"size={mount.size}")
        if mount.read_only:
            options.append("ro")
        return {
            "destination": mount.target,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": options + list(mount.options),
        }
    if mount.type is MountType.VOLUME:  # toolkit.runtime.mounts.resolve makes it a bind mount
        raise PodunitError(
            f"named volume {mount.source!r} for {mount.target} was not resolved to a host path",
            hint="this is a bug in podunit: volumes are resolved before the spec is built",
        )
    extra = [option for option in mount.options if option not in PODUNIT_MOUNT_OPTIONS]
    options = ["rbind", "ro" if mount.read_only else "rw", *extra]
    return {"destination": mount.target, "type": "bind", "source": mount.source, "options": options}


def _linux(
    container: Container, inputs: SpecInputs, network_is_host: bool, own_uts: bool
) -> dict[str, Any]:
    namespaces = [{"type": t} for t in ("pid", "mount", "ipc", "cgroup")]
    if own_uts:
        namespaces.append({"type": "uts"})
    if not network_is_host:  # "private", "none" and named networks: own netns, loopback only
        namespaces.append({"type": "network"})
    device_rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    device_rules += [
        {"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": d.access}
        for d in inputs.devices
    ]
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": {"devices": device_rules},
        "devices": [
            {
                "path": d.path,
                "type": d.type,
                "major": d.major,
                "minor": d.minor,
                "fileMode": d.file_mode,
                "uid": 0,
                "gid": 0,
            }
            for d in inputs.devices
        ],
    }
    if not container.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if container.sysctls:
        linux["sysctl"] = dict(container.sysctls)
    if inputs.cgroups_path is not None:
        linux["cgroupsPath"] = inputs.cgroups_path
    seccomp = _seccomp(container, inputs)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    return linux


def _seccomp(container: Container, inputs: SpecInputs) -> dict[str, Any] | None:
    if container.privileged or container.seccomp == "unconfined":
        return None
    if container.seccomp == "default":
        return {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": list(SECCOMP_DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO",
                 "errnoRet": 1}
            ],
        }  # fmt: skip
    if inputs.seccomp_profile is None:
        raise PodunitError(f"seccomp profile {container.seccomp} was not loaded")
    return dict(inputs.seccomp_profile)


# -- the edge: reading what build_spec needs from the host --


def current_hard_limits() -> dict[str, int]:
    """The calling process's hard rlimits (RLIM_INFINITY as -1 means "no ceiling")."""
    limits = {}
    for name in RLIMIT_NAMES.values():
        number = getattr(resource, name, None)
        if number is not None:
            hard = resource.getrlimit(number)[1]
            limits[name] = -1 if hard == resource.RLIM_INFINITY else hard
    return limits


def held_capabilities(status_text: str | None = None) -> tuple[str, ...]:
    """Names of the capabilities in this process's bounding set (/proc/self/status CapBnd)."""
    text = status_text if status_text is not None else read_text("/proc/self/status")
    for line in text.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return tuple(n for i, n in enumerate(CAPABILITY_NAMES) if mask & (1 << i))
    return CAPABILITY_NAMES


def parse_id_database(text: str) -> list[list[str]]:
    """Lines of /etc/passwd or /etc/group, split on ':' (comments and blanks skipped)."""
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(
    spec: str | None, group_add: Sequence[str], passwd_text: str, group_text: str
) -> ResolvedUser:
    """`uid[:gid]` or `name[:group]` against the rootfs's passwd and group files."""
    if not spec and not group_add:
        return ResolvedUser()
    passwd = parse_id_database(passwd_text)
    groups = parse_id_database(group_text)
    user_part, _, group_part = (spec or "0").partition(":")

    def lookup(table: list[list[str]], name: str, what: str) -> list[str]:
        for entry in table:
            if entry[0] == name and len(entry) >= 3:
                return entry
        raise PodunitError(f"{what} {name!r} not found in the container's /etc/{_file(what)}")

    if user_part.isdigit():
        uid = int(user_part)
        entry = next((e for e in passwd if len(e) >= 4 and e[2] == user_part), None)
        gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    else:
        entry = lookup(passwd, user_part, "user")
        uid, gid = int(entry[2]), int(entry[3])
    if group_part:
        gid = (
            int(group_part) if group_part.isdigit() else int(lookup(groups, group_part, "group")[2])
        )
    additional = tuple(
        int(g) if g.isdigit() else int(lookup(groups, g, "group")[2]) for g in group_add
    )
    return ResolvedUser(uid=uid, gid=gid, additional_gids=additional)


def _file(what: str) -> str:
    return "passwd" if what == "user" else "group"


def read_rootfs_file(rootfs: str, path: str) -> str:
    """A text file of the root file system, or "" if it does not exist. Read with
    toolkit.safefile (an image's /etc/passwd that is a FIFO or a link to /dev/zero must
    not hang or exhaust `podunit run`); invalid UTF-8 is replaced."""
    full = os.path.join(rootfs, path.lstrip("/"))
    try:
        return safefile.read_bytes(full, limit=safefile.MAX_BYTES).decode(errors="replace")
    except UnreadableFile as error:
        if not os.path.exists(full):
            return ""
        raise PodunitError(f"{path} of the root file system {rootfs}: {error.reason}") from None


def parse_env_file(text: str, source: str) -> list[tuple[str, str]]:
    """`K=V` lines (Compose env_file): blank lines and `#` comments skipped.

    A bad line is reported by its location only: an env_file holds secrets, and
    errors end up in the journal (issue 15 item 15).
    """
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, value = stripped.partition("=")
        if not equals or not key or any(c.isspace() for c in key):
            raise PodunitError(
                f"env_file {source}:{number}: not a KEY=VALUE line (its text is not shown: "
                "it may hold a secret)"
            )
        pairs.append((key, value))
    return pairs


def _dotenv_file(text: str, source: str) -> list[tuple[str, str]]:
    """A Compose env_file: `.env` syntax; `${VAR}` refers to the file's earlier keys."""
    from toolkit.definitions import dotenv

    try:
        return list(dotenv.parse(text).items())
    except dotenv.DotenvError as error:
        raise PodunitError(f"env_file {source}:{error.line}: {error}") from None


def read_env_files(paths: Sequence[str], syntax: str = "plain") -> tuple[tuple[str, str], ...]:
    """The `K=V` pairs of every env_file, in order (read with toolkit.safefile: regular
    files of at most 4 MiB, never blocking); `syntax` "dotenv": Compose's `.env`
    syntax (toolkit.definitions.dotenv), each file on its own."""
    pairs: list[tuple[str, str]] = []
    for entry in paths:
        path = entry.removeprefix("-")  # `-/path`: optional (Compose `required: false`)
        try:
            text = safefile.read_text(path)
        except UnreadableFile as error:
            if path != entry and not os.path.lexists(path):
                continue
            raise PodunitError(f"env_file {path}: {error.reason}") from None
        pairs += parse_env_file(text, path) if syntax == "plain" else _dotenv_file(text, path)
    return tuple(pairs)


def parse_device(spec: str) -> tuple[str, str, str]:
    """`host[:container][:perms]` -> (host path, container path, permissions), read as the
    definitions read it (`definitions.values.parse_device`: `/dev/null:rw` is permissions)."""
    try:
        return values.parse_device(spec)
    except ValueError as error:
        raise PodunitError(str(error)) from None


def gather_devices(specs: Sequence[str]) -> tuple[DeviceNode, ...]:
    nodes = []
    for spec in specs:
        host, inside, access = parse_device(spec)
        try:
            info = os.stat(host)
        except OSError as error:
            raise PodunitError(f"device {host}: {error.strerror}") from error
        if stat.S_ISCHR(info.st_mode):
            kind = "c"
        elif stat.S_ISBLK(info.st_mode):
            kind = "b"
        else:
            raise PodunitError(f"device {host}: not a character or block device")
        nodes.append(
            DeviceNode(
                path=inside,
                type=kind,
                major=os.major(info.st_rdev),
                minor=os.minor(info.st_rdev),
                access=access,
                file_mode=stat.S_IMODE(info.st_mode),
            )
        )
    return tuple(nodes)


def gather_inputs(
    container: Container,
    container_id: str,
    *,
    rootfs: str,
    tty: bool = False,
    extra_env: Mapping[str, str] | None = None,
    extra_mounts: Sequence[Mount] = (),
    cgroups_path: str | None = None,
) -> SpecInputs:
    """Read from the host and the rootfs what `build_spec` needs for `container`."""
    container = apply_security_opts(container)
    if not os.path.isdir(rootfs):
        raise PodunitError(f"root file system {rootfs}: not a directory")
    user = resolve_user(
        container.user,
        container.group_add,
        read_rootfs_file(rootfs, "/etc/passwd"),
        read_rootfs_file(rootfs, "/etc/group"),
    )
    profile = None
    if container.seccomp not in ("default", "unconfined"):
        try:
            profile = json.loads(safefile.read_bytes(container.seccomp))
        except UnreadableFile as error:
            raise PodunitError(f"seccomp profile {container.seccomp}: {error.reason}") from None
        except ValueError as error:  # json's messages give the position, not the text
            raise PodunitError(f"seccomp profile {container.seccomp}: {error}") from None
    return SpecInputs(
        container_id=container_id,
        rootfs=rootfs,
        hard_limits=current_hard_limits(),
        user=user,
        env_file_vars=read_env_files(container.env_files, container.env_file_syntax),
        devices=gather_devices(container.devices),
        extra_env=dict(extra_env or {}),
        extra_mounts=tuple(extra_mounts),
        cgroups_path=cgroups_path,
        tty=tty,
        held_capabilities=held_capabilities(),
        seccomp_profile=profile,
        init_binary=find_init_binary() if container.init else None,
        rootless_ids=None if os.geteuid() == 0 else (os.getuid(), os.getgid()),
    )

"""Normalisation of single values: durations, sizes, signals, ports, volumes...

Pure functions of text (spec §1.1). Each raises `ValueError` whose message is a
complete sentence that quotes the offending value; the parser adds the location.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

# typing.TYPE_CHECKING without importing typing (mypy knows the name): `podunit kill`
# (a unit's ExecReload) only parses a signal here and must pay neither for typing
# (~3.7 ms) nor for the model, which is imported where a mount or port mapping is built.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from toolkit.definitions.model import Mount, PortMapping

# Linux signal numbers (signal(7)); SIGRTMIN is 34 and SIGRTMAX 64 for glibc programs.
SIGNALS: dict[str, int] = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
    "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}  # fmt: skip
SIGRTMIN, SIGRTMAX = 34, 64

_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_CONTROL = frozenset(chr(c) for c in (*range(32), 127))
_TMPFS_VALUED = frozenset({"mode", "uid", "gid", "nr_inodes"})
_TMPFS_FLAGS = frozenset({"ro", "rw", "nosuid", "nodev", "noexec", "exec", "suid", "dev"})
PROPAGATIONS = frozenset({"shared", "rshared", "slave", "rslave", "private", "rprivate"})
# podunit's own options of a Mount (never passed to the runtime): `nocopy` (a new volume
# gets no copy of the image's content), `create_host_path` (a missing bind source is made).
NOCOPY = "nocopy"
CREATE_HOST_PATH = "create_host_path"
PODUNIT_MOUNT_OPTIONS = frozenset({NOCOPY, CREATE_HOST_PATH})
# SELinux relabelling: accepted and without effect (no SELinux here), as Docker does then.
_SELINUX_OPTIONS = frozenset({"z", "Z"})


def quote(text: object) -> str:
    """`'text'` for messages; control characters shown escaped."""
    text = str(text)
    return repr(text) if has_control(text) else f"'{text}'"


def has_control(text: str) -> bool:
    """True if `text` holds a control character (newline, tab, ESC, DEL, ...)."""
    return not _CONTROL.isdisjoint(text)


def _number(text: str) -> float | None:
    """A plain non-negative decimal number, or None."""
    if not text or text.strip(".") == "" or any(c not in "0123456789." for c in text):
        return None
    return float(text) if text.count(".") <= 1 else None


def parse_duration(text: str) -> timedelta:
    """`10s`, `1m30s`, `500ms`, `1h`, `2d`, `1.5s` or a number of seconds."""
    stripped = text.strip().replace(" ", "")
    plain = _number(stripped)
    if plain is not None:
        return seconds_to_timedelta(plain, text)
    total, number, rest = 0.0, "", stripped
    seen = False
    while rest:
        index = 0
        while index < len(rest) and (rest[index].isdigit() or rest[index] == "."):
            index += 1
        number, rest = rest[:index], rest[index:]
        unit_end = 0
        while unit_end < len(rest) and rest[unit_end].isalpha():
            unit_end += 1
        unit, rest = rest[:unit_end], rest[unit_end:]
        value = _number(number)
        if value is None or unit not in _DURATION_UNITS:
            raise ValueError(f"invalid duration {quote(text)} (use e.g. 10s, 1m30s, 500ms)")
        total += value * _DURATION_UNITS[unit]
        seen = True
    if not seen:
        raise ValueError(f"invalid duration {quote(text)} (use e.g. 10s, 1m30s, 500ms)")
    return seconds_to_timedelta(total, text)


def seconds_to_timedelta(seconds: float, text: object) -> timedelta:
    """`timedelta(seconds=...)`; ValueError for what it cannot hold (too large, NaN)."""
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise ValueError(f"duration {quote(text)} is out of range") from None


def format_duration(value: timedelta) -> str:
    """The inverse of `parse_duration` (microsecond precision), e.g. `1m30s`, `500ms`."""
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "0"
    parts = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000),
                       ("s", 1_000_000), ("ms", 1000), ("us", 1)):  # fmt: skip
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(text: str) -> int:
    """`512M`, `1G`, `64k`, `1.5g`, `100MiB`, `100mb` or bytes (units are powers of 1024)."""
    lowered = text.strip().lower()
    if lowered.endswith("ib") and lowered[-3:-2].isalpha():
        lowered = lowered[:-2]
    elif lowered.endswith("b"):
        lowered = lowered[:-1]
    unit = lowered[-1:] if lowered[-1:].isalpha() else ""
    number = _number(lowered[: len(lowered) - len(unit)])
    if number is None or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {quote(text)} (use e.g. 512M, 1G, 64k or bytes)")
    return int(number * _SIZE_UNITS[unit])


def parse_signal(text: str) -> int:
    """`SIGTERM`, `TERM`, `sigterm`, `15`, `SIGRTMIN+3`, `RTMAX-1` -> signal number."""
    name = text.strip().upper()
    if name.isdigit():
        number = int(name)
        if 1 <= number <= SIGRTMAX:
            return number
        raise ValueError(f"signal number {quote(text)} out of range 1..{SIGRTMAX}")
    name = name.removeprefix("SIG")
    if name in SIGNALS:
        return SIGNALS[name]
    for base_name, base, sign in (("RTMIN", SIGRTMIN, 1), ("RTMAX", SIGRTMAX, -1)):
        if name.startswith(base_name):
            offset_text = name[len(base_name) :]
            if not offset_text:
                return base
            op, digits = offset_text[0], offset_text[1:]
            if op == ("+" if sign > 0 else "-") and digits.isdigit():
                number = base + sign * int(digits)
                if SIGRTMIN <= number <= SIGRTMAX:
                    return number
    raise ValueError(f"unknown signal {quote(text)}")


def parse_port(value: str) -> int:
    """A port number 1..65535."""
    if not value.isdigit():
        raise ValueError(f"invalid port {quote(value)}")
    port = int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {quote(value)} out of range 1..65535")
    return port


def _port_range(text: str) -> list[int]:
    first, dash, last = text.partition("-")
    if not dash:
        return [parse_port(text)]
    low, high = parse_port(first), parse_port(last)
    if high < low:
        raise ValueError(f"invalid port range {quote(text)}")
    return list(range(low, high + 1))


def parse_port_mapping(text: str) -> list[PortMapping]:
    """`[ip:]host:container[/tcp|udp]`, IPv6 as `[::1]:80:80`, ranges `8000-8001:80-81`."""
    from toolkit.definitions.model import PortMapping

    spec, slash, protocol = text.partition("/")
    protocol = protocol.lower() if slash else "tcp"
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"invalid protocol {quote(protocol)} in port {quote(text)} (tcp or udp)")
    host_ip: str | None = None
    if spec.startswith("["):
        address, bracket, rest = spec[1:].partition("]")
        if not bracket or not rest.startswith(":") or ":" not in address:
            raise ValueError(f"invalid IPv6 address in port {quote(text)}")
        host_ip, spec = address, rest[1:]
    parts = spec.split(":")
    if len(parts) == 3 and host_ip is None:
        host_ip = parts.pop(0)
        if not host_ip or any(c not in "0123456789." for c in host_ip):
            raise ValueError(f"invalid host address {quote(host_ip)} in port {quote(text)}")
    if len(parts) == 1:
        raise ValueError(
            f"port {quote(text)} has no host port: write host:container (the host port "
            "is reserved while the container runs)"
        )
    if len(parts) != 2:
        raise ValueError(f"invalid port mapping {quote(text)} (use [ip:]host:container[/proto])")
    hosts, containers = _port_range(parts[0]), _port_range(parts[1])
    if len(hosts) != len(containers):
        raise ValueError(f"port ranges of different length in {quote(text)}")
    return [PortMapping(h, c, protocol, host_ip) for h, c in zip(hosts, containers, strict=True)]


def check_container_path(path: str) -> str:
    """An absolute path inside the container."""
    if not path.startswith("/"):
        raise ValueError(f"container path {quote(path)} must be absolute")
    return path


def resolve_host_path(path: str, base_dir: str) -> str:
    """Absolute host path; relative ones resolve against the definition's directory."""
    if path.startswith("~"):
        import os.path

        path = os.path.expanduser(path)
    if path.startswith("/"):
        return path
    import posixpath

    return posixpath.normpath(posixpath.join(base_dir, path))


def is_host_path(source: str) -> bool:
    """Compose's rule: a source starting with `/`, `.` or `~` is a host path, else a volume."""
    return source[:1] in ("/", ".", "~")


def check_volume_name(name: str, *, template: bool = False) -> str:
    """`[a-zA-Z0-9][a-zA-Z0-9_.-]*`; in a template also `%i` (the instance name, which must
    then make a valid volume name: checked when the instance starts)."""
    checked = name.replace("%i", "i") if template else name
    if not checked or not (
        checked[0].isascii() and checked[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in checked)
    ):  # fmt: skip
        raise ValueError(f"invalid volume name {quote(name)}")
    return name


def parse_volume(text: str, base_dir: str, *, template: bool = False) -> Mount:
    """`host:container[:OPTIONS]`, `volume:container[:OPTIONS]` or `container` (anonymous);
    OPTIONS: comma-separated `ro`, `rw`, a propagation, `nocopy`, `z`, `Z`."""
    from toolkit.definitions.model import Mount, MountType

    parts = text.split(":")
    if len(parts) > 3:
        raise ValueError(f"invalid volume {quote(text)} (use host:container[:ro|rw])")
    if len(parts) == 1:
        return Mount(MountType.VOLUME, check_container_path(parts[0]))
    source, target = parts[0], check_container_path(parts[1])
    read_only, options = False, []
    for option in parts[2].split(",") if len(parts) == 3 else []:
        if option in ("ro", "rw"):
            read_only = option == "ro"
        elif option in PROPAGATIONS or option == NOCOPY:
            options.append(option)
        elif option in _SELINUX_OPTIONS:
            continue
        else:
            raise ValueError(f"unknown volume option {quote(option)} in {quote(text)}")
    if is_host_path(source):
        kind, source = MountType.BIND, resolve_host_path(source, base_dir)
    else:
        kind, source = MountType.VOLUME, check_volume_name(source, template=template)
    return Mount(kind, target, source, read_only, None, tuple(options))


def parse_tmpfs(text: str) -> Mount:
    """`/run` or `/tmp:size=64m,mode=1777` (options as in mount(8) tmpfs)."""
    from toolkit.definitions.model import Mount, MountType

    target, _, option_text = text.partition(":")
    size, options = None, []
    for option in option_text.split(",") if option_text else []:
        key, _, value = option.partition("=")
        if key == "size":
            size = parse_size(value)
        elif (key in _TMPFS_VALUED and value) or option in _TMPFS_FLAGS:
            options.append(option)
        else:
            raise ValueError(f"unknown tmpfs option {quote(option)} in {quote(text)}")
    return Mount(MountType.TMPFS, check_container_path(target), None, False, size, tuple(options))


def check_user(text: str) -> str:
    """`uid[:gid]` or `name[:group]`, as written."""
    user, colon, group = text.partition(":")
    for part in (user, group) if colon else (user,):
        if not part or any(c.isspace() or c in ":/" for c in part) or has_control(part):
            raise ValueError(f"invalid user {quote(text)} (use uid[:gid] or name[:group])")
    return text


# The longest container name (a template's `@` included): `NAME.service` must fit systemd's
# unit names of at most 255 characters (unit-name.h; toolkit.unitgen.escape.UNIT_NAME_MAX),
# and the plan, pid and socket files named after it fit NAME_MAX (255 bytes) with it.
CONTAINER_NAME_MAX = 255 - len(".service")


def check_name(text: str, what: str) -> str:
    """`[a-zA-Z0-9][a-zA-Z0-9_.-]*` (container names, network names...)."""
    if (
        not text
        or not text[0].isascii()
        or not text[0].isalnum()
        or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in text)
    ):
        raise ValueError(f"invalid {what} {quote(text)} (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)")
    return text


DEVICE_ACCESS = "rwm"


def parse_device(text: str) -> tuple[str, str, str]:
    """`devices:` entry -> (host path, container path, access), as Docker reads
    `--device`: `/dev/HOST`, `/dev/HOST:/dev/CONTAINER`, `/dev/HOST:PERMS` (PERMS made of
    r, w, m: `/dev/null:rw` is the host's /dev/null with read and write access, not a
    container path `rw`) or `/dev/HOST:/dev/CONTAINER:PERMS`. The one reading of a
    device: the definition parser and the OCI spec builder both use it."""
    parts = text.split(":")
    host = parts[0]
    if len(parts) > 3 or not host.startswith("/"):
        raise ValueError(f"invalid device {quote(text)} (use /dev/host[:/dev/container][:rwm])")
    inside, access = host, DEVICE_ACCESS
    if len(parts) == 2 and parts[1] and not parts[1].strip(DEVICE_ACCESS):
        access = parts[1]
    elif len(parts) >= 2:
        inside = parts[1] or host
        if not inside.startswith("/"):
            raise ValueError(f"device container path in {quote(text)} must be absolute")
        if len(parts) == 3:
            access = parts[2]
            if not access or access.strip(DEVICE_ACCESS):
                raise ValueError(
                    f"invalid device permissions in {quote(text)} (letters r, w and m)"
                )
    return host, inside, access


SECURITY_OPTS_HINT = (
    "no-new-privileges[:true|false], seccomp=unconfined|/absolute/profile.json, "
    "label=disable, apparmor=unconfined"
)


def security_opt(text: str) -> tuple[str, str]:
    """A `security_opt` entry as Docker/Podman spell it (`key=value` or `key:value`) ->
    (key, value): `no-new-privileges` (`true`/`false`), `seccomp` (`unconfined` or an
    absolute path), `label`/`apparmor` (only `disable`/`unconfined`: there is no LSM
    policy to apply). Anything else is a ValueError naming what is supported, so
    `validate` refuses what the runtime could not apply."""
    key, _, value = text.replace(":", "=", 1).partition("=")
    if key == "no-new-privileges" and value in ("", "true", "false"):
        return key, "false" if value == "false" else "true"
    if key == "seccomp" and (value == "unconfined" or value.startswith("/")):
        return key, value
    if (key, value) in (("label", "disable"), ("apparmor", "unconfined")):
        return key, value
    raise ValueError(f"unsupported security_opt {quote(text)} (supported: {SECURITY_OPTS_HINT})")


def check_hostname(text: str) -> str:
    """A host name: RFC 1123 labels, at most 64 characters."""
    labels = text.split(".")
    if len(text) > 64 or not all(
        label and label[0] != "-" and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in labels
    ):  # fmt: skip
        raise ValueError(f"invalid hostname {quote(text)}")
    return text


CAPABILITIES = frozenset(
    [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
)


def parse_capability(text: str) -> str:
    """`net_admin`, `CAP_NET_ADMIN` -> `CAP_NET_ADMIN`; `ALL` stays `ALL`."""
    name = text.strip().upper().removeprefix("CAP_")
    if name == "ALL":
        return "ALL"
    if name not in CAPABILITIES:
        raise ValueError(f"unknown capability {quote(text)}{did_you_mean(name, CAPABILITIES)}")
    return "CAP_" + name


ULIMITS = frozenset(
    [
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ]
)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a candidate close to `word`, or ``.

    Close means: the same but for case and `-`/`_`; or one is a prefix of the other
    (4 characters at least); or the same first letter and at most 2 edits (1 for
    words of 4 characters or fewer; a swap of neighbours is one edit). So `restrat`
    suggests `restart`, `pre_start` does not (it is no typo of `restart`).
    """
    best: tuple[int, str] | None = None
    folded = word.lower().replace("-", "_")
    for candidate in sorted(candidates):
        other = candidate.lower().replace("-", "_")
        if other == folded:
            return f" (did you mean '{candidate}'?)"
        if (
            len(folded) >= 4
            and len(other) >= 4
            and (other.startswith(folded) or folded.startswith(other))
        ):
            score = 1
        elif folded[:1] == other[:1]:
            score = _edits(folded, other, 1 if len(folded) <= 4 else 2)
        else:
            continue
        if score <= (1 if len(folded) <= 4 else 2) and (best is None or score < best[0]):
            best = (score, candidate)
    return f" (did you mean '{best[1]}'?)" if best else ""


def _edits(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance of a and b (limit + 1 when above `limit`)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return min(previous[len(b)], limit + 1)


def shell_split(text: str) -> tuple[str, ...]:
    """Split a command string like a POSIX shell would (shlex, no expansion)."""
    import shlex

    try:
        return tuple(shlex.split(text, posix=True))
    except ValueError as error:
        raise ValueError(f"cannot split command {quote(text)}: {error}") from None

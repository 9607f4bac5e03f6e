"""A container spec (podunit's own form, spec §1.1) parsed into the typed model.

`parse_container` takes the located tree of one `containers:` entry and either
returns a `Container` or records one `DefinitionError` per problem (each key is
checked even after an earlier one failed) and returns None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from toolkit.definitions import values as v
from toolkit.definitions.model import (
    NO_DECLARATIONS,
    AutoUpdate,
    Build,
    CgroupMode,
    Container,
    Declarations,
    Dependency,
    DependencyCondition,
    Healthcheck,
    HealthOnFailure,
    Install,
    LogDriver,
    Mount,
    MountType,
    NetworkAttachment,
    Notify,
    PortMapping,
    PullPolicy,
    Reload,
    Resources,
    Restart,
    Secret,
    SocketSpec,
    SocketType,
    StartupCheck,
    Ulimit,
    Volume,
)
from toolkit.definitions.tree import Entry, Node
from toolkit.errors import DefinitionError, Location

Pairs = tuple[tuple[str, str], ...]


def fail(node: Node | Location, message: str, *, hint: str | None = None) -> DefinitionError:
    return DefinitionError(node if isinstance(node, Location) else node.loc, message, hint=hint)


def unknown(
    loc: Location, what: str, name: str, known: Iterable[str], where: str = ""
) -> DefinitionError:
    """`unknown key 'imagee' (did you mean 'image'?)`, `unknown key 'x' in healthcheck`."""
    place = f" in {where}" if where else ""
    return fail(loc, f"unknown {what} {v.quote(name)}{place}{v.did_you_mean(name, known)}")


def _kind(node: Node) -> str:
    if node.is_mapping:
        return "a mapping"
    if node.is_sequence:
        return "a list"
    return "null" if node.value is None else f"{quote_node(node)}"


def quote_node(node: Node) -> str:
    return v.quote(node.raw) if node.raw is not None else _kind(node)


def check_keys(node: Node, allowed: Iterable[str], where: str) -> dict[str, Entry]:
    """The mapping's entries; unknown keys (except `x-*`) are errors with a suggestion."""
    if not node.is_mapping:
        raise fail(node, f"{where} must be a mapping, not {_kind(node)}")
    allowed = frozenset(allowed)
    entries: dict[str, Entry] = {}
    for key, entry in node.value.items():
        if key.startswith("x-"):
            continue
        if key not in allowed:
            raise unknown(entry.key_loc, "key", key, allowed, where)
        entries[key] = entry
    return entries


def text(node: Node, what: str, *, multiline: bool = False) -> str:
    """A scalar as the text written in the YAML (so `22:22` stays `22:22`, `yes` stays `yes`).

    Unless `multiline`, control characters are refused: the value may end up in a unit file.
    """
    if node.raw is None or node.value is None:
        raise fail(node, f"{what} must be a string, not {_kind(node)}")
    result = node.value if isinstance(node.value, str) else node.raw
    if not multiline and v.has_control(result):
        raise fail(node, f"{what} {v.quote(result)} contains a control character or newline")
    return result


def non_empty(node: Node, what: str) -> str:
    result = text(node, what)
    if not result:
        raise fail(node, f"{what} must not be empty")
    return result


def boolean(node: Node, what: str) -> bool:
    if isinstance(node.value, bool):
        return node.value
    if isinstance(node.value, str) and node.value.lower() in ("true", "false"):
        return node.value.lower() == "true"
    raise fail(node, f"{what} must be true or false, not {_kind(node)}")


def integer(node: Node, what: str, low: int, high: int | None = None) -> int:
    value = node.value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(node, f"{what} must be an integer, not {_kind(node)}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise fail(node, f"{what} {v.quote(node.raw)} out of range {bound}")
    return value


def sequence(node: Node, what: str, *, scalar_ok: bool = False) -> list[Node]:
    """The items of a list; a single scalar counts as a one-item list if `scalar_ok`."""
    if node.is_sequence:
        items: list[Node] = node.value
        return items
    if scalar_ok and node.is_scalar and node.value is not None:
        return [node]
    raise fail(node, f"{what} must be a list, not {_kind(node)}")


def converted(node: Node, convert: Callable[[str], Any], what: str) -> Any:
    """`convert(text)` with its ValueError turned into a located error."""
    try:
        return convert(text(node, what))
    except ValueError as error:
        raise fail(node, str(error)) from None


def duration(node: Node, what: str) -> timedelta:
    if isinstance(node.value, int | float) and not isinstance(node.value, bool):
        if node.value < 0:
            raise fail(node, f"{what} {v.quote(node.raw)} must not be negative")
        try:
            return v.seconds_to_timedelta(node.value, node.raw)
        except ValueError as error:
            raise fail(node, f"{what}: {error}") from None
    result: timedelta = converted(node, v.parse_duration, what)
    return result


def size(node: Node, what: str) -> int:
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        if node.value < 0:
            raise fail(node, f"{what} {v.quote(node.raw)} must not be negative")
        return node.value
    result: int = converted(node, v.parse_size, what)
    return result


def signal(node: Node, what: str) -> int:
    result: int = converted(node, v.parse_signal, what)
    return result


def argv(node: Node, what: str) -> tuple[str, ...]:
    """A list of strings, or a string split like a POSIX shell."""
    if node.is_sequence:
        return tuple(text(item, f"{what} item", multiline=True) for item in node.value)
    result: tuple[str, ...] = converted(node, v.shell_split, what)
    return result


def pairs(node: Node, what: str, *, check_key: Callable[[str], str] | None = None) -> Pairs:
    """A mapping, or a list of `K=V` strings, as ordered (key, value) pairs."""
    result: list[tuple[str, str]] = []
    if node.is_mapping:
        for key, entry in node.value.items():
            if entry.node.value is None:
                raise fail(
                    entry.node,
                    f'{what} {v.quote(key)} has no value (write {key}: "" for an empty one; '
                    "the host's environment is not passed through)",
                )
            result.append((key, text(entry.node, f"{what} value", multiline=True)))
            _check_pair_key(entry.key_loc, key, what, check_key)
    else:
        for item in sequence(node, what):
            item_text = text(item, f"{what} item", multiline=True)
            key, equals, value = item_text.partition("=")
            if not equals:
                raise fail(item, f"{what} item {v.quote(item_text)} must be KEY=VALUE")
            _check_pair_key(item.loc, key, what, check_key)
            result.append((key, value))
    return tuple(result)


def _check_pair_key(
    loc: Location, key: str, what: str, check_key: Callable[[str], str] | None
) -> None:
    if not key or "=" in key or v.has_control(key):
        raise fail(loc, f"invalid {what} name {v.quote(key)}")
    if check_key:
        try:
            check_key(key)
        except ValueError as error:
            raise fail(loc, str(error)) from None


def strings(node: Node, what: str, *, scalar_ok: bool = True) -> tuple[str, ...]:
    return tuple(non_empty(item, what) for item in sequence(node, what, scalar_ok=scalar_ok))


def choice(node: Node, what: str, options: Iterable[str]) -> str:
    options = tuple(options)
    value = text(node, what)
    if value not in options:
        listed = ", ".join(options)
        raise fail(node, f"invalid {what} {v.quote(value)} (one of: {listed})")
    return value


# ---------------------------------------------------------------- the keys


HEALTHCHECK_KEYS = frozenset(
    {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
)
STARTUP_CHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "success"})
RESOURCES_KEYS = frozenset({"memory", "memory_reservation", "cpus", "cpu_weight", "pids"})
SOCKET_KEYS = frozenset({"listen", "type", "name"})
RELOAD_KEYS = frozenset({"signal", "command"})
INSTALL_KEYS = frozenset({"wanted_by", "required_by", "alias"})
LOG_OPT_KEYS = frozenset({"max_size"})
BUILD_KEYS = frozenset({"context", "dockerfile", "args", "target", "labels"})
AUTO_UPDATE_LABEL = "io.containers.autoupdate"  # Podman's label, honoured in both forms
VOLUME_KEYS = frozenset(
    {"type", "source", "target", "read_only", "size", "bind", "tmpfs", "volume", "consistency"}
)
BIND_KEYS = frozenset({"propagation", "create_host_path", "selinux"})
SECRET_REFERENCE_KEYS = frozenset({"source", "target", "uid", "gid", "mode"})
SECRETS_DIR = "/run/secrets"
PORT_KEYS = frozenset({"target", "published", "host_ip", "protocol", "mode"})
DEPENDENCY_KEYS = frozenset({"condition", "required", "restart"})
ENV_FILE_KEYS = frozenset({"path", "required"})
ULIMIT_KEYS = frozenset({"soft", "hard"})

Fields = dict[str, Any]


class _Context:
    """What a key handler needs besides its node."""

    def __init__(
        self, base_dir: str, template: bool, declarations: Declarations = NO_DECLARATIONS
    ) -> None:
        self.base_dir = base_dir
        self.template = template
        self.declarations = declarations


def _image(node: Node, ctx: _Context, out: Fields) -> None:
    out["image"] = non_empty(node, "image")


def _rootfs(node: Node, ctx: _Context, out: Fields) -> None:
    out["rootfs"] = v.resolve_host_path(non_empty(node, "rootfs"), ctx.base_dir)


def _command(node: Node, ctx: _Context, out: Fields) -> None:
    out["command"] = None if node.value is None else argv(node, "command")


def _entrypoint(node: Node, ctx: _Context, out: Fields) -> None:
    out["entrypoint"] = None if node.value is None else argv(node, "entrypoint")


def _environment(node: Node, ctx: _Context, out: Fields) -> None:
    out["environment"] = pairs(node, "environment")


def _env_file(node: Node, ctx: _Context, out: Fields) -> None:
    files = []
    for item in sequence(node, "env_file", scalar_ok=True):
        if item.is_mapping:
            keys = check_keys(item, ENV_FILE_KEYS, "env_file")
            if "path" not in keys:
                raise fail(item, "env_file entry needs 'path'")
            optional = "required" in keys and not boolean(keys["required"].node, "required")
            item = keys["path"].node
        else:
            optional = False
        path = v.resolve_host_path(non_empty(item, "env_file"), ctx.base_dir)
        files.append("-" + path if optional else path)  # as systemd's EnvironmentFile=-
    out["env_files"] = tuple(files)


def _working_dir(node: Node, ctx: _Context, out: Fields) -> None:
    out["working_dir"] = converted(node, v.check_container_path, "working_dir")


def _user(node: Node, ctx: _Context, out: Fields) -> None:
    out["user"] = converted(node, v.check_user, "user")


def _group_add(node: Node, ctx: _Context, out: Fields) -> None:
    out["group_add"] = strings(node, "group_add")


def _hostname(node: Node, ctx: _Context, out: Fields) -> None:
    name = non_empty(node, "hostname")
    out["hostname"] = (
        name if ctx.template and "%" in name else converted(node, v.check_hostname, "hostname")
    )


def _long_volume(node: Node, ctx: _Context) -> Mount:
    keys = check_keys(node, VOLUME_KEYS, "volume")
    if "type" not in keys or "target" not in keys:
        raise fail(node, "a volume mapping needs 'type' and 'target'")
    kind = MountType(choice(keys["type"].node, "volume type", [t.value for t in MountType]))
    target = converted(keys["target"].node, v.check_container_path, "target")
    read_only = boolean(keys["read_only"].node, "read_only") if "read_only" in keys else False
    source, options, mount_size = None, [], None
    if "consistency" in keys:
        text(keys["consistency"].node, "consistency")  # Docker Desktop's file sharing: no effect
    if kind is MountType.TMPFS:
        if "source" in keys:
            raise fail(keys["source"].key_loc, "a tmpfs volume has no 'source'")
    elif kind is MountType.BIND:
        if "source" not in keys:
            raise fail(node, "a bind volume needs 'source'")
        source = v.resolve_host_path(non_empty(keys["source"].node, "source"), ctx.base_dir)
    elif "source" in keys:  # a named volume; without a source an anonymous one
        source = converted(
            keys["source"].node, lambda s: v.check_volume_name(s, template=ctx.template), "source"
        )
    if "size" in keys:
        mount_size = size(keys["size"].node, "size")
    for sub_key, wanted in (
        ("bind", MountType.BIND),
        ("tmpfs", MountType.TMPFS),
        ("volume", MountType.VOLUME),
    ):
        if sub_key not in keys:
            continue
        if kind is not wanted:
            raise fail(keys[sub_key].key_loc, f"'{sub_key}' options on a {kind.value} volume")
        sub_node = keys[sub_key].node
        if sub_key == "bind":
            sub = check_keys(sub_node, BIND_KEYS, "bind")
            if "propagation" in sub:
                options.append(choice(sub["propagation"].node, "propagation", v.PROPAGATIONS))
            if "create_host_path" in sub and boolean(
                sub["create_host_path"].node, "create_host_path"
            ):
                options.append(v.CREATE_HOST_PATH)
            if "selinux" in sub:  # relabelling: no SELinux here, accepted as Docker does then
                choice(sub["selinux"].node, "selinux", ("z", "Z"))
        elif sub_key == "tmpfs":
            sub = check_keys(sub_node, ("size", "mode"), "tmpfs")
            if "size" in sub:
                mount_size = size(sub["size"].node, "size")
            if "mode" in sub:
                mode = sub["mode"].node
                digits = mode.raw if isinstance(mode.value, int) else text(mode, "mode")
                options.append(f"mode={digits}")
        else:
            sub = check_keys(sub_node, ("nocopy",), "volume")
            if "nocopy" in sub and boolean(sub["nocopy"].node, "nocopy"):
                options.append("nocopy")
    if mount_size is not None and kind is not MountType.TMPFS:
        raise fail(node, "'size' applies only to tmpfs volumes")
    return Mount(kind, target, source, read_only, mount_size, tuple(options))


def _named_volume(mount: Mount, node: Node, ctx: _Context, used: dict[str, Volume]) -> Mount:
    """A named volume's mount with the volume's real name; its declaration noted in `used`."""
    if mount.type is not MountType.VOLUME or mount.source is None:
        return mount
    declared = ctx.declarations.volumes.get(mount.source)
    if declared is None:
        _check_not_broken(ctx.declarations, "volumes", mount.source, node)
        if ctx.declarations.compose:
            raise fail(
                node,
                f"volume {v.quote(mount.source)} is not declared under the top-level "
                f"'volumes:'{v.did_you_mean(mount.source, ctx.declarations.volumes)}",
                hint=f"add it: volumes: {{{mount.source}: {{}}}}",
            )
        return mount  # the own form: an undeclared name is a plain local volume
    used[declared.name] = declared
    return mount._replace(source=declared.name)


def _volumes(node: Node, ctx: _Context, out: Fields) -> None:
    mounts = []
    used: dict[str, Volume] = {volume.name: volume for volume in out.get("volumes", ())}
    for item in sequence(node, "volumes"):
        if item.is_mapping:
            mount = _long_volume(item, ctx)
        else:
            mount = converted(
                item, lambda s: v.parse_volume(s, ctx.base_dir, template=ctx.template), "volume"
            )
            if ctx.declarations.compose and mount.type is MountType.BIND:
                # the Compose specification: the short syntax implies create_host_path
                mount = mount._replace(options=(*mount.options, v.CREATE_HOST_PATH))
        mounts.append(_named_volume(mount, item, ctx, used))
    out["mounts"] = (*out.get("mounts", ()), *mounts)
    if used:
        out["volumes"] = tuple(used.values())


def _numeric_id(node: Node, what: str) -> int:
    raw = node.raw if node.raw is not None else ""
    if not raw.isdigit() or int(raw) > 0xFFFFFFFE:
        raise fail(node, f"{what} must be a number 0..4294967294, not {quote_node(node)}")
    return int(raw)


def _file_mode(node: Node) -> int:
    """`0440` or `0o440` (octal, as Compose writes it), or a decimal number (YAML 1.1 reads an
    unquoted 0440 as octal already)."""
    raw = node.raw or ""
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        value = node.value
    else:
        digits = raw.removeprefix("0o")
        if not (raw.startswith("0") and digits.isdigit() and set(digits) <= set("01234567")):
            raise fail(node, f"mode {quote_node(node)} must be an octal number such as 0440")
        value = int(digits, 8)
    if not 0 <= value <= 0o7777:
        raise fail(node, f"mode {quote_node(node)} out of range 0..07777")
    return value


def _check_not_broken(declarations: Declarations, top: str, key: str, node: Node) -> None:
    if f"{top}:{key}" in declarations.broken:
        what = top.rstrip("s")
        raise fail(node, f"{what} {v.quote(key)} cannot be used: its declaration has errors")


def _secret_reference(item: Node, declarations: Declarations, config: bool) -> Secret:
    """A `secrets:`/`configs:` item (a name, or `{source, target, uid, gid, mode}`) resolved
    against the file's top-level declarations."""
    what = "config" if config else "secret"
    declared = declarations.configs if config else declarations.secrets
    fields: dict[str, Any] = {}
    source_node = item
    target = None
    if item.is_mapping:
        keys = check_keys(item, SECRET_REFERENCE_KEYS, what)
        if "source" not in keys:
            raise fail(item, f"a {what} reference needs 'source'")
        source_node = keys["source"].node
        if "target" in keys:
            target = non_empty(keys["target"].node, "target")
        for id_key in ("uid", "gid"):
            if id_key in keys:
                fields[id_key] = _numeric_id(keys[id_key].node, id_key)
        if "mode" in keys:
            fields["mode"] = _file_mode(keys["mode"].node)
    source = non_empty(source_node, what)
    top = "configs" if config else "secrets"
    if source not in declared:
        _check_not_broken(declarations, top, source, source_node)
        raise fail(
            source_node,
            f"{what} {v.quote(source)} is not declared under the top-level '{top}:'"
            f"{v.did_you_mean(source, declared)}",
        )
    target = target or source
    if not target.startswith("/"):
        target = f"/{target}" if config else f"{SECRETS_DIR}/{target}"
    if "/../" in f"{target}/" or "/./" in f"{target}/":
        raise fail(item, f"{what} target {v.quote(target)} must be a plain absolute path")
    secret: Secret = declared[source]._replace(target=target, **fields)
    return secret


def _secrets(config: bool) -> Callable[[Node, _Context, Fields], None]:
    def handler(node: Node, ctx: _Context, out: Fields) -> None:
        what = "configs" if config else "secrets"
        found = [
            _secret_reference(item, ctx.declarations, config) for item in sequence(node, what)
        ]
        out["secrets"] = (*out.get("secrets", ()), *found)

    return handler


def _tmpfs(node: Node, ctx: _Context, out: Fields) -> None:
    mounts = tuple(
        converted(item, v.parse_tmpfs, "tmpfs") for item in sequence(node, "tmpfs", scalar_ok=True)
    )
    out["mounts"] = (*out.get("mounts", ()), *mounts)


def _flag(field: str) -> Callable[[Node, _Context, Fields], None]:
    def handler(node: Node, ctx: _Context, out: Fields) -> None:
        out[field] = boolean(node, field)

    return handler


NETWORK_MODES = ("bridge", "none", "host")
NETWORK_ATTACH_KEYS = frozenset({"aliases", "ipv4_address"})


def _network(node: Node, ctx: _Context, out: Fields) -> None:
    """`bridge` (the default network), `none`, `host` or a network name; `private` is the
    name `none` had before podunit had bridge networks."""
    name = converted(node, lambda s: v.check_name(s, "network name"), "network")
    out["network"] = "none" if name == "private" else name


def check_address(text: str, what: str = "IP address", *, version: int | None = None) -> str:
    """An IPv4 (or IPv6 unless `version` is 4) address, in its canonical form."""
    import ipaddress

    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None or (version is not None and address.version != version):
        kind = "IPv4 address" if version == 4 else what
        raise ValueError(f"invalid {kind} {v.quote(text)}")
    return str(address)


def _networks(node: Node, ctx: _Context, out: Fields) -> None:
    """Several networks: a list of names, or names mapped to {aliases, ipv4_address}."""
    attached: list[NetworkAttachment] = []
    items = (
        [(name, entry.key_loc, entry.node) for name, entry in node.value.items()
         if not name.startswith("x-")]
        if node.is_mapping
        else [(text(item, "network"), item.loc, None) for item in sequence(node, "networks")]
    )  # fmt: skip
    for name, loc, spec in items:
        _check_pair_key(loc, name, "network", lambda s: v.check_name(s, "network name"))
        if name in NETWORK_MODES or name == "private":
            raise fail(loc, f"{v.quote(name)} is a network mode: use 'network: {name}' instead")
        if any(a.name == name for a in attached):
            raise fail(loc, f"network {v.quote(name)} is listed twice")
        aliases: tuple[str, ...] = ()
        address = None
        if spec is not None and spec.value is not None:
            keys = check_keys(spec, NETWORK_ATTACH_KEYS, f"network {name}")
            if "aliases" in keys:
                aliases = tuple(
                    converted(item, v.check_hostname, "alias")
                    for item in sequence(keys["aliases"].node, "aliases", scalar_ok=True)
                )
            if "ipv4_address" in keys:
                address = converted(
                    keys["ipv4_address"].node, lambda s: check_address(s, version=4),
                    "ipv4_address",
                )  # fmt: skip
        attached.append(NetworkAttachment(name, aliases, address))
    out["networks"] = tuple(attached)


def _dns(node: Node, ctx: _Context, out: Fields) -> None:
    out["dns"] = tuple(
        converted(item, lambda s: check_address(s, "DNS server address"), "dns")
        for item in sequence(node, "dns", scalar_ok=True)
    )


def _dns_search(node: Node, ctx: _Context, out: Fields) -> None:
    out["dns_search"] = tuple(
        converted(item, v.check_hostname, "dns_search domain")
        for item in sequence(node, "dns_search", scalar_ok=True)
    )


def _extra_host(text_: str) -> tuple[str, str]:
    """`host:address` or `host=address` (Compose); IPv6 as `host:::1` or `host:[::1]`."""
    separator = "=" if "=" in text_ else ":"
    host, found, address = text_.partition(separator)
    if not found:
        raise ValueError(f"extra_hosts entry {v.quote(text_)} must be HOST:ADDRESS")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    return v.check_hostname(host), check_address(address)


def _extra_hosts(node: Node, ctx: _Context, out: Fields) -> None:
    if node.is_mapping:
        entries = [
            (entry.node, f"{name}:{text(entry.node, 'extra_hosts address')}")
            for name, entry in node.value.items()
        ]
    else:
        items = sequence(node, "extra_hosts")
        entries = [(item, text(item, "extra_hosts entry")) for item in items]
    hosts = []
    for item, spec in entries:
        try:
            hosts.append(_extra_host(spec))
        except ValueError as error:
            raise fail(item, str(error)) from None
    out["extra_hosts"] = tuple(hosts)


def _long_port(node: Node) -> list[PortMapping]:
    keys = check_keys(node, PORT_KEYS, "port")
    if "target" not in keys:
        raise fail(node, "a port mapping needs 'target'")
    if "published" not in keys:
        raise fail(node, "a port mapping needs 'published' (the host port is reserved)")
    spec = f"{text(keys['published'].node, 'published')}:{text(keys['target'].node, 'target')}"
    if "host_ip" in keys:
        address = non_empty(keys["host_ip"].node, "host_ip")
        spec = f"[{address}]:{spec}" if ":" in address else f"{address}:{spec}"
    if "protocol" in keys:
        spec += "/" + text(keys["protocol"].node, "protocol")
    if "mode" in keys:
        choice(keys["mode"].node, "port mode", ["host"])
    try:
        return v.parse_port_mapping(spec)
    except ValueError as error:
        raise fail(node, str(error)) from None


def _ports(node: Node, ctx: _Context, out: Fields) -> None:
    ports: list[PortMapping] = []
    for item in sequence(node, "ports"):
        if item.is_mapping:
            ports.extend(_long_port(item))
        else:
            ports.extend(converted(item, v.parse_port_mapping, "port"))
    out["ports"] = tuple(ports)


def _socket_listen(node: Node) -> str:
    listen = non_empty(node, "listen")
    if listen.startswith(("/", "@")):
        return listen
    if listen.startswith("."):
        raise fail(node, f"socket path {v.quote(listen)} must be absolute")
    address, colon, port = listen.rpartition(":")
    if colon and not address:
        raise fail(node, f"invalid socket address {v.quote(listen)}")
    try:
        v.parse_port(port)
    except ValueError as error:
        raise fail(node, f"{error} in socket {v.quote(listen)}") from None
    return listen


def _sockets(node: Node, ctx: _Context, out: Fields) -> None:
    sockets = []
    for item in sequence(node, "sockets"):
        keys = check_keys(item, SOCKET_KEYS, "socket")
        if "listen" not in keys:
            raise fail(item, "a socket needs 'listen'")
        kind = SocketType.STREAM
        if "type" in keys:
            kind = SocketType[
                choice(
                    keys["type"].node, "socket type", ("stream", "datagram", "seqpacket")
                ).upper()
            ]
        name = None
        if "name" in keys:
            name = non_empty(keys["name"].node, "socket name")
            if ":" in name or len(name) > 255 or not name.isascii() or " " in name:
                raise fail(keys["name"].node, f"invalid socket name {v.quote(name)}")
        sockets.append(SocketSpec(_socket_listen(keys["listen"].node), kind, name))
    out["sockets"] = tuple(sockets)


def _enum(field: str, enum: Any) -> Callable[[Node, _Context, Fields], None]:
    options = tuple(member.value for member in enum)

    def handler(node: Node, ctx: _Context, out: Fields) -> None:
        out[field] = enum(choice(node, field, options))

    return handler


def _check_test(node: Node, what: str) -> tuple[str, ...] | None:
    """A check's `test` as an argv: `[CMD, ...]`, `[CMD-SHELL, "cmd"]`, a plain list,
    or a string (run by `/bin/sh -c`); None for `[NONE]` (disabled)."""
    if not node.is_sequence:
        return ("/bin/sh", "-c", text(node, what, multiline=True))
    test = argv(node, what)
    if not test:
        raise fail(node, f"{what} must not be empty")
    if test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        if len(test) != 2:
            raise fail(node, "CMD-SHELL takes exactly one command string")
        return ("/bin/sh", "-c", test[1])
    if test[0] == "CMD":
        if len(test) == 1:
            raise fail(node, f"{what.split()[0]} CMD needs a command")
        return test[1:]
    return test


def _positive_duration(node: Node, what: str) -> timedelta:
    result = duration(node, what)
    if not result:
        raise fail(node, f"{what} must be longer than 0")
    return result


def healthcheck(node: Node) -> Healthcheck | None:
    """Compose's healthcheck; None when disabled (`disable: true` or `test: [NONE]`)."""
    keys = check_keys(node, HEALTHCHECK_KEYS, "healthcheck")
    if "disable" in keys and boolean(keys["disable"].node, "disable"):
        return None
    if "test" not in keys:
        raise fail(node, "healthcheck needs 'test'")
    test = _check_test(keys["test"].node, "healthcheck test")
    if test is None:
        return None
    extra: dict[str, Any] = {}
    for key in ("interval", "timeout", "start_interval"):
        if key in keys:
            extra[key] = _positive_duration(keys[key].node, key)
    if "start_period" in keys:
        extra["start_period"] = duration(keys["start_period"].node, "start_period")
    if "retries" in keys:
        extra["retries"] = integer(keys["retries"].node, "retries", 0)
    return Healthcheck(test, **extra)


def health_startup(node: Node) -> StartupCheck | None:
    """`health_startup` (Quadlet's HealthStartup*); None for `test: [NONE]`."""
    keys = check_keys(node, STARTUP_CHECK_KEYS, "health_startup")
    if "test" not in keys:
        raise fail(node, "health_startup needs 'test'")
    test = _check_test(keys["test"].node, "health_startup test")
    if test is None:
        return None
    extra: dict[str, Any] = {}
    for key in ("interval", "timeout"):
        if key in keys:
            extra[key] = _positive_duration(keys[key].node, key)
    if "retries" in keys:
        extra["retries"] = integer(keys["retries"].node, "retries", 0)
    if "success" in keys:
        extra["success"] = max(1, integer(keys["success"].node, "success", 0))
    return StartupCheck(test, **extra)


def _health_startup(node: Node, ctx: _Context, out: Fields) -> None:
    out["health_startup"] = health_startup(node)


def _healthcheck(node: Node, ctx: _Context, out: Fields) -> None:
    out["healthcheck"] = healthcheck(node)


def _stop_signal(node: Node, ctx: _Context, out: Fields) -> None:
    out["stop_signal"] = signal(node, "stop_signal")


def _stop_timeout(node: Node, ctx: _Context, out: Fields) -> None:
    out["stop_timeout"] = duration(node, "stop_timeout")


_RESTARTS = tuple(r.value for r in Restart)


def _restart(node: Node, ctx: _Context, out: Fields) -> None:
    if node.value is False:  # YAML 1.1: an unquoted `no` is a boolean
        out["restart"] = Restart.NO
        return
    value = text(node, "restart")
    if value.startswith("on-failure:"):
        raise fail(
            node,
            f"restart {v.quote(value)}: a retry count is not supported; use on-failure and "
            "service: {StartLimitBurst: N}",
        )
    out["restart"] = Restart(choice(node, "restart", _RESTARTS))


def resources(node: Node) -> Resources:
    keys = check_keys(node, RESOURCES_KEYS, "resources")
    fields: dict[str, Any] = {}
    for key in ("memory", "memory_reservation"):
        if key in keys:
            fields[key] = size(keys[key].node, key)
    if "cpus" in keys:
        fields["cpus"] = cpus(keys["cpus"].node)
    if "cpu_weight" in keys:
        fields["cpu_weight"] = integer(keys["cpu_weight"].node, "cpu_weight", 1, 10000)
    if "pids" in keys:
        fields["pids"] = integer(keys["pids"].node, "pids", 1)
    return Resources(**fields)


def cpus(node: Node) -> float:
    value = node.value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise fail(node, f"cpus {v.quote(node.raw)} must be a number") from None
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise fail(node, f"cpus {quote_node(node)} must be a number greater than 0")
    return float(value)


def _resources(node: Node, ctx: _Context, out: Fields) -> None:
    out["resources"] = resources(node)


def _capabilities(field: str) -> Callable[[Node, _Context, Fields], None]:
    def handler(node: Node, ctx: _Context, out: Fields) -> None:
        out[field] = tuple(
            converted(item, v.parse_capability, field) for item in sequence(node, field)
        )

    return handler


def _seccomp(node: Node, ctx: _Context, out: Fields) -> None:
    value = non_empty(node, "seccomp")
    out["seccomp"] = (
        value if value in ("default", "unconfined") else v.resolve_host_path(value, ctx.base_dir)
    )


def _device(spec: str) -> str:
    v.parse_device(spec)  # the runtime reads it with the same function
    return spec


def _devices(node: Node, ctx: _Context, out: Fields) -> None:
    out["devices"] = tuple(converted(item, _device, "device") for item in sequence(node, "devices"))


def _sysctl_name(name: str) -> str:
    if any(c.isspace() for c in name):
        raise ValueError(f"invalid sysctl name {v.quote(name)}")
    return name


def _sysctls(node: Node, ctx: _Context, out: Fields) -> None:
    out["sysctls"] = pairs(node, "sysctl", check_key=_sysctl_name)


def _ulimits(node: Node, ctx: _Context, out: Fields) -> None:
    if not node.is_mapping:
        raise fail(node, f"ulimits must be a mapping, not {_kind(node)}")
    limits = []
    for name, entry in node.value.items():
        if name.startswith("x-"):
            continue
        if name not in v.ULIMITS:
            raise unknown(entry.key_loc, "ulimit", name, v.ULIMITS)
        if entry.node.is_mapping:
            keys = check_keys(entry.node, ULIMIT_KEYS, f"ulimit {name}")
            if set(keys) != ULIMIT_KEYS:
                raise fail(entry.node, f"ulimit {v.quote(name)} needs both 'soft' and 'hard'")
            soft = integer(keys["soft"].node, "soft", 0)
            hard = integer(keys["hard"].node, "hard", 0)
            if soft > hard:
                raise fail(entry.node, f"ulimit {v.quote(name)}: soft {soft} exceeds hard {hard}")
        else:
            soft = hard = integer(entry.node, f"ulimit {name}", 0)
        limits.append(Ulimit(name, soft, hard))
    out["ulimits"] = tuple(limits)


def _security_opt(node: Node, ctx: _Context, out: Fields) -> None:
    """Kept as written; each must be one the runtime applies (values.security_opt)."""
    items = sequence(node, "security_opt")
    out["security_opt"] = tuple(converted(item, _checked_security_opt, "security_opt")
                                for item in items)  # fmt: skip


def _checked_security_opt(text: str) -> str:
    v.security_opt(text)
    return text


def _labels(field: str) -> Callable[[Node, _Context, Fields], None]:
    def handler(node: Node, ctx: _Context, out: Fields) -> None:
        out[field] = pairs(node, field.rstrip("s"))

    return handler


def _log_opt(node: Node, ctx: _Context, out: Fields) -> None:
    keys = check_keys(node, LOG_OPT_KEYS, "log_opt")
    if "max_size" in keys:
        out["log_max_size"] = size(keys["max_size"].node, "max_size")


def check_reference(name: str) -> str:
    """A container name, or a template instance `name@instance`, to depend on."""
    base, at, instance = name.partition("@")
    v.check_name(base, "container name")
    if at and (not instance or "/" in instance or v.has_control(instance)):
        raise ValueError(f"invalid container name {v.quote(name)}")
    return name


def _depends_on(node: Node, ctx: _Context, out: Fields) -> None:
    deps = []
    if node.is_mapping:
        for name, entry in node.value.items():
            if name.startswith("x-"):
                continue
            _check_pair_key(entry.key_loc, name, "depends_on", check_reference)
            deps.append(dependency(name, entry.node))
    else:
        for item in sequence(node, "depends_on"):
            deps.append(Dependency(converted(item, check_reference, "depends_on")))
    out["depends_on"] = tuple(deps)


def dependency(name: str, node: Node) -> Dependency:
    """One `depends_on` entry of the long form: `{condition, required, restart}`."""
    if node.value is None:
        return Dependency(name)
    keys = check_keys(node, DEPENDENCY_KEYS, f"depends_on {name}")
    fields: dict[str, Any] = {}
    if "condition" in keys:
        conditions = [c.value for c in DependencyCondition]
        fields["condition"] = DependencyCondition(
            choice(keys["condition"].node, "condition", conditions)
        )
    for key in ("required", "restart"):
        if key in keys:
            fields[key] = boolean(keys[key].node, f"depends_on {name} {key}")
    return Dependency(name, **fields)


def _reload(node: Node, ctx: _Context, out: Fields) -> None:
    keys = check_keys(node, RELOAD_KEYS, "reload")
    if len(keys) != 1:
        raise fail(node, "reload needs exactly one of 'signal' or 'command'")
    if "signal" in keys:
        out["reload"] = Reload(signal=signal(keys["signal"].node, "reload signal"))
    else:
        command = argv(keys["command"].node, "reload command")
        for word in command:
            if v.has_control(word):
                raise fail(
                    keys["command"].node,
                    f"reload command {v.quote(word)} contains a control character or newline",
                )
        if not command:
            raise fail(keys["command"].node, "reload command must not be empty")
        out["reload"] = Reload(command=command)


def _is_unit_key(key: str) -> bool:
    """`TimeoutStartSec`, or an extension key `X-Something` (systemd.unit(5))."""
    name = key[2:] if key.startswith("X-") else key
    return (
        bool(name)
        and name.isascii()
        and name[0].isalpha()
        and name.replace("-", "").isalnum()
        and (key.startswith("X-") or name.isalnum())
    )


def _section(field: str, section: str) -> Callable[[Node, _Context, Fields], None]:
    def handler(node: Node, ctx: _Context, out: Fields) -> None:
        if not node.is_mapping:
            raise fail(node, f"{section} must be a mapping of [{section.title()}] keys")
        result = []
        for key, entry in node.value.items():
            if key.startswith("x-"):
                continue
            if not _is_unit_key(key):
                raise fail(entry.key_loc, f"invalid [{section.title()}] key {v.quote(key)}")
            items = entry.node.value if entry.node.is_sequence else [entry.node]
            for item in items:
                result.append((key, "" if item.value is None else text(item, key)))
        out[field] = tuple(result)

    return handler


def _unit_name(name: str) -> str:
    if "/" in name or "." not in name.strip(".") or any(c.isspace() for c in name):
        raise ValueError(f"invalid unit name {v.quote(name)} (e.g. multi-user.target)")
    return name


def _install(node: Node, ctx: _Context, out: Fields) -> None:
    keys = check_keys(node, INSTALL_KEYS, "install")
    out["install"] = Install(
        **{
            key: tuple(
                converted(item, _unit_name, key)
                for item in sequence(entry.node, key, scalar_ok=True)
            )
            for key, entry in keys.items()
        }
    )


def _build(node: Node, ctx: _Context, out: Fields) -> None:
    """`build: DIR` or `{context, dockerfile, args, target, labels}` (podunit.yaml(5) "build").

    The context resolves against the definition's directory, the Dockerfile against
    the context (as in Compose); buildah's own default file names apply without one.
    """
    if not node.is_mapping:
        context = v.resolve_host_path(non_empty(node, "build"), ctx.base_dir)
        out["build"] = Build(context=context)
        return
    keys = check_keys(node, BUILD_KEYS, "build")
    if "context" not in keys:
        raise fail(node, "build needs 'context' (the directory to build from)")
    context = v.resolve_host_path(non_empty(keys["context"].node, "context"), ctx.base_dir)
    dockerfile = None
    if "dockerfile" in keys:
        dockerfile = v.resolve_host_path(non_empty(keys["dockerfile"].node, "dockerfile"), context)
    out["build"] = Build(
        context=context,
        dockerfile=dockerfile,
        args=pairs(keys["args"].node, "build arg") if "args" in keys else (),
        target=non_empty(keys["target"].node, "target") if "target" in keys else None,
        labels=pairs(keys["labels"].node, "build label") if "labels" in keys else (),
    )


def _runtime(node: Node, ctx: _Context, out: Fields) -> None:
    out["runtime"] = choice(node, "runtime", ("runc", "crun"))


HANDLERS: dict[str, Callable[[Node, _Context, Fields], None]] = {
    "image": _image,
    "rootfs": _rootfs,
    "command": _command,
    "entrypoint": _entrypoint,
    "environment": _environment,
    "env_file": _env_file,
    "working_dir": _working_dir,
    "user": _user,
    "group_add": _group_add,
    "hostname": _hostname,
    "volumes": _volumes,
    "tmpfs": _tmpfs,
    "secrets": _secrets(config=False),
    "configs": _secrets(config=True),
    "read_only": _flag("read_only"),
    "network": _network,
    "networks": _networks,
    "dns": _dns,
    "dns_search": _dns_search,
    "extra_hosts": _extra_hosts,
    "ports": _ports,
    "sockets": _sockets,
    "notify": _enum("notify", Notify),
    "healthcheck": _healthcheck,
    "health_startup": _health_startup,
    "health_on_failure": _enum("health_on_failure", HealthOnFailure),
    "stop_signal": _stop_signal,
    "stop_timeout": _stop_timeout,
    "restart": _restart,
    "resources": _resources,
    "cap_add": _capabilities("cap_add"),
    "cap_drop": _capabilities("cap_drop"),
    "privileged": _flag("privileged"),
    "no_new_privileges": _flag("no_new_privileges"),
    "seccomp": _seccomp,
    "devices": _devices,
    "sysctls": _sysctls,
    "ulimits": _ulimits,
    "security_opt": _security_opt,
    "labels": _labels("labels"),
    "annotations": _labels("annotations"),
    "init": _flag("init"),
    "cgroups": _enum("cgroups", CgroupMode),
    "log_driver": _enum("log_driver", LogDriver),
    "log_opt": _log_opt,
    "depends_on": _depends_on,
    "reload": _reload,
    "unit": _section("unit_extra", "unit"),
    "service": _section("service_extra", "service"),
    "socket": _section("socket_extra", "socket"),
    "install": _install,
    "runtime": _runtime,
    "pull": _enum("pull", PullPolicy),
    "build": _build,
    "auto_update": _enum("auto_update", AutoUpdate),
}

CONTAINER_KEYS: frozenset[str] = frozenset(HANDLERS)
"""Every key of a container spec in podunit's own form (spec §1.1)."""


def check_container_name(name: str) -> tuple[str, bool]:
    """`web` -> ("web", False); `worker@` -> ("worker", True).

    The one place a container's name is checked, its length included
    (`CONTAINER_NAME_MAX` characters, so that `NAME.service` is a valid unit name).
    """
    template = name.endswith("@")
    v.check_name(name[:-1] if template else name, "container name")
    if len(name) > v.CONTAINER_NAME_MAX:
        raise ValueError(
            f"container name {v.quote(name[:24] + '...')} is {len(name)} characters long, "
            f"longer than {v.CONTAINER_NAME_MAX} ('NAME.service' must fit systemd's "
            "255-character unit names)"
        )
    return (name[:-1] if template else name), template


def parse_container(
    name: str, key_loc: Location, node: Node, base_dir: str, errors: list[DefinitionError],
    declarations: Declarations = NO_DECLARATIONS, extra: Fields | None = None,
    whole: bool = True,
) -> Container | None:  # fmt: skip
    """One container spec -> `Container`, or None after appending its errors to `errors`.

    `declarations`: the file's top-level volumes, secrets and configs, which the
    container's `volumes:`, `secrets:` and `configs:` refer to. `extra`: model fields
    set by the caller (a Compose service's project fields); a `unit_extra` there is
    added after the spec's own `unit:` lines. `whole` false: the rules across keys are
    not checked (the caller found a key wrong already)."""
    count = len(errors)
    try:
        plain_name, template = check_container_name(name)
    except ValueError as error:
        errors.append(fail(key_loc, str(error)))
        return None
    if v.has_control(name):
        errors.append(fail(key_loc, f"invalid container name {v.quote(name)}"))
        return None
    if not node.is_mapping:
        errors.append(fail(node, f"container {v.quote(name)} must be a mapping, not {_kind(node)}"))
        return None
    entries = {key: entry for key, entry in node.value.items() if not key.startswith("x-")}
    ctx = _Context(base_dir, template, declarations)
    fields: Fields = {}
    for key, entry in entries.items():
        handler = HANDLERS.get(key)
        if handler is None:
            errors.append(unknown(entry.key_loc, "key", key, CONTAINER_KEYS))
            continue
        try:
            handler(entry.node, ctx, fields)
        except DefinitionError as error:
            errors.append(error)
    if whole and len(errors) == count:  # rules across keys only once every key is right
        _check_whole(name, key_loc, entries, fields, errors)
    if len(errors) > count:
        return None
    for field, value in (extra or {}).items():
        joined = field in ("unit_extra", "service_extra")  # after the spec's own lines
        fields[field] = (*fields.get(field, ()), *value) if joined else value
    return Container(name=plain_name, source=key_loc, template=template, **fields)


def built_image_name(name: str) -> str:
    """The image a `build:` without `image:` produces: `localhost/podunit/NAME:latest`."""
    return f"localhost/podunit/{name.rstrip('@').lower()}:latest"


def _auto_update_label(
    entries: dict[str, Entry], fields: Fields, errors: list[DefinitionError]
) -> None:
    """Podman's label `io.containers.autoupdate=registry|local` is `auto_update:`."""
    label = dict(fields.get("labels", ())).get(AUTO_UPDATE_LABEL)
    if label is None:
        return
    value = "registry" if label == "image" else label  # Podman's old spelling
    if value not in ("registry", "local"):
        errors.append(
            fail(
                entries["labels"].node,
                f"label {AUTO_UPDATE_LABEL}={v.quote(label)} must be 'registry' or 'local'",
            )
        )
    elif "auto_update" in entries and fields["auto_update"].value != value:
        errors.append(
            fail(
                entries["auto_update"].node,
                f"auto_update {v.quote(fields['auto_update'].value)} contradicts the label "
                f"{AUTO_UPDATE_LABEL}={v.quote(label)}",
            )
        )
    else:
        fields["auto_update"] = AutoUpdate(value)


def _check_whole(
    name: str, key_loc: Location, entries: dict[str, Entry], fields: Fields,
    errors: list[DefinitionError],
) -> None:  # fmt: skip
    """Rules that involve several keys."""
    if "build" in entries and "rootfs" in entries:
        errors.append(
            fail(
                entries["build"].key_loc,
                f"container {v.quote(name)} has both 'build' and 'rootfs'; "
                "a build makes an image: name it with 'image'",
            )
        )
    elif "build" in entries and "image" not in entries:
        fields["image"] = built_image_name(name)
    elif "image" in entries and "rootfs" in entries:
        errors.append(
            fail(
                entries["rootfs"].key_loc,
                f"container {v.quote(name)} has both 'image' and 'rootfs'; use exactly one",
            )
        )
    elif "image" not in entries and "rootfs" not in entries:
        errors.append(fail(key_loc, f"container {v.quote(name)} needs 'image' or 'rootfs'"))
    _auto_update_label(entries, fields, errors)
    if fields.get("notify") is Notify.HEALTHY and fields.get("healthcheck") is None:
        errors.append(fail(entries["notify"].node, "notify 'healthy' needs a healthcheck"))
    if fields.get("networks") and fields.get("network", "bridge") != "bridge":
        errors.append(
            fail(
                entries["networks"].key_loc,
                f"'networks' joins bridge networks, but 'network' is {fields['network']!r}",
            )
        )
    if "healthcheck" not in entries:  # a disabled check (a drop-in's `disable`) is fine
        for key in ("health_startup", "health_on_failure"):
            if key in entries:
                errors.append(fail(entries[key].key_loc, f"{key} needs a healthcheck"))
    if "socket" in entries and not fields.get("sockets"):
        errors.append(fail(entries["socket"].key_loc, "'socket' keys given but no 'sockets'"))

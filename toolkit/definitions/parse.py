"""A container spec (podunit's own form, spec §1.1) parsed into the typed model.

`parse_container` takes the located tree of one `containers:` entry and either
returns a `Container` or records one `DefinitionError` per problem (each key is
checked even after an earlier one failed) and returns None.

`HANDLERS` is the table of every key. The plain keys, the rules across keys and the
readers Compose shares (`cpus`, `dependency`) are here; the topic modules hold the rest:
`mounts` (volumes, tmpfs, secrets, configs), `networking` (network keys, ports,
sockets), `security` (capabilities, seccomp, devices, sysctls, ulimits, security_opt),
`healthchecks` (healthcheck, health_startup); `readers` reads the nodes for all of them.
"""

from __future__ import annotations

from typing import Any

from toolkit.definitions import healthchecks, mounts, networking, security
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
    HealthOnFailure,
    Install,
    LogDriver,
    Notify,
    PullPolicy,
    Reload,
    Resources,
    Restart,
)
from toolkit.definitions.readers import (
    Context,
    Fields,
    Handler,
    argv,
    boolean,
    check_keys,
    check_pair_key,
    choice,
    converted,
    duration,
    fail,
    integer,
    node_kind,
    non_empty,
    pairs,
    quote_node,
    sequence,
    signal,
    size,
    strings,
    text,
    unknown,
)
from toolkit.definitions.tree import Entry, Node
from toolkit.errors import DefinitionError, Location

RESOURCES_KEYS = frozenset({"memory", "memory_reservation", "cpus", "cpu_weight", "pids"})
RELOAD_KEYS = frozenset({"signal", "command"})
INSTALL_KEYS = frozenset({"wanted_by", "required_by", "alias"})
LOG_OPT_KEYS = frozenset({"max_size"})
BUILD_KEYS = frozenset({"context", "dockerfile", "args", "target", "labels"})
AUTO_UPDATE_LABEL = "io.containers.autoupdate"  # Podman's label, honoured in both forms
DEPENDENCY_KEYS = frozenset({"condition", "required", "restart"})
ENV_FILE_KEYS = frozenset({"path", "required"})


def _image(node: Node, ctx: Context, out: Fields) -> None:
    out["image"] = non_empty(node, "image")


def _rootfs(node: Node, ctx: Context, out: Fields) -> None:
    out["rootfs"] = v.resolve_host_path(non_empty(node, "rootfs"), ctx.base_dir)


def _command(node: Node, ctx: Context, out: Fields) -> None:
    out["command"] = None if node.value is None else argv(node, "command")


def _entrypoint(node: Node, ctx: Context, out: Fields) -> None:
    out["entrypoint"] = None if node.value is None else argv(node, "entrypoint")


def _environment(node: Node, ctx: Context, out: Fields) -> None:
    out["environment"] = pairs(node, "environment")


def _env_file(node: Node, ctx: Context, out: Fields) -> None:
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


def _working_dir(node: Node, ctx: Context, out: Fields) -> None:
    out["working_dir"] = converted(node, v.check_container_path, "working_dir")


def _user(node: Node, ctx: Context, out: Fields) -> None:
    out["user"] = converted(node, v.check_user, "user")


def _group_add(node: Node, ctx: Context, out: Fields) -> None:
    out["group_add"] = strings(node, "group_add")


def _hostname(node: Node, ctx: Context, out: Fields) -> None:
    name = non_empty(node, "hostname")
    out["hostname"] = (
        name if ctx.template and "%" in name else converted(node, v.check_hostname, "hostname")
    )


def _flag(field: str) -> Handler:
    def handler(node: Node, ctx: Context, out: Fields) -> None:
        out[field] = boolean(node, field)

    return handler


def _enum(field: str, enum: Any) -> Handler:
    options = tuple(member.value for member in enum)

    def handler(node: Node, ctx: Context, out: Fields) -> None:
        out[field] = enum(choice(node, field, options))

    return handler


def _stop_signal(node: Node, ctx: Context, out: Fields) -> None:
    out["stop_signal"] = signal(node, "stop_signal")


def _stop_timeout(node: Node, ctx: Context, out: Fields) -> None:
    out["stop_timeout"] = duration(node, "stop_timeout")


_RESTARTS = tuple(r.value for r in Restart)


def _restart(node: Node, ctx: Context, out: Fields) -> None:
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


def _resources(node: Node, ctx: Context, out: Fields) -> None:
    out["resources"] = resources(node)


def _labels(field: str) -> Handler:
    def handler(node: Node, ctx: Context, out: Fields) -> None:
        out[field] = pairs(node, field.rstrip("s"))

    return handler


def _log_opt(node: Node, ctx: Context, out: Fields) -> None:
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


def _depends_on(node: Node, ctx: Context, out: Fields) -> None:
    deps = []
    if node.is_mapping:
        for name, entry in node.value.items():
            if name.startswith("x-"):
                continue
            check_pair_key(entry.key_loc, name, "depends_on", check_reference)
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


def _reload(node: Node, ctx: Context, out: Fields) -> None:
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


def _section(field: str, section: str) -> Handler:
    def handler(node: Node, ctx: Context, out: Fields) -> None:
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


def _install(node: Node, ctx: Context, out: Fields) -> None:
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


def _build(node: Node, ctx: Context, out: Fields) -> None:
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


def _runtime(node: Node, ctx: Context, out: Fields) -> None:
    out["runtime"] = choice(node, "runtime", ("runc", "crun"))


HANDLERS: dict[str, Handler] = {
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
    "volumes": mounts.key_volumes,
    "tmpfs": mounts.key_tmpfs,
    "secrets": mounts.key_secrets(config=False),
    "configs": mounts.key_secrets(config=True),
    "read_only": _flag("read_only"),
    "network": networking.key_network,
    "networks": networking.key_networks,
    "dns": networking.key_dns,
    "dns_search": networking.key_dns_search,
    "extra_hosts": networking.key_extra_hosts,
    "ports": networking.key_ports,
    "sockets": networking.key_sockets,
    "notify": _enum("notify", Notify),
    "healthcheck": healthchecks.key_healthcheck,
    "health_startup": healthchecks.key_health_startup,
    "health_on_failure": _enum("health_on_failure", HealthOnFailure),
    "stop_signal": _stop_signal,
    "stop_timeout": _stop_timeout,
    "restart": _restart,
    "resources": _resources,
    "cap_add": security.key_capabilities("cap_add"),
    "cap_drop": security.key_capabilities("cap_drop"),
    "privileged": _flag("privileged"),
    "no_new_privileges": _flag("no_new_privileges"),
    "seccomp": security.key_seccomp,
    "devices": security.key_devices,
    "sysctls": security.key_sysctls,
    "ulimits": security.key_ulimits,
    "security_opt": security.key_security_opt,
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
        kind = node_kind(node)
        errors.append(fail(node, f"container {v.quote(name)} must be a mapping, not {kind}"))
        return None
    entries = {key: entry for key, entry in node.value.items() if not key.startswith("x-")}
    ctx = Context(base_dir, template, declarations)
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

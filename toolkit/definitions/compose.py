"""Compose services (`services:`) translated into podunit's own form (spec §1.3).

Each service's located tree is rewritten into a `containers:` entry and then
parsed by `toolkit.definitions.parse`, so both forms share one validator. Keys
with a podunit meaning are renamed or reshaped (table in podunit.yaml(5));
every other Compose key is refused by name, never ignored. podunit-only keys go
under the service's `x-podunit:` mapping.
"""

from __future__ import annotations

from collections.abc import Iterable

from toolkit.definitions import values as v
from toolkit.definitions.model import Dependency, Install
from toolkit.definitions.parse import cpus
from toolkit.definitions.parse import dependency as parse_dependency
from toolkit.definitions.readers import (
    Fields,
    boolean,
    check_keys,
    choice,
    converted,
    duration,
    fail,
    integer,
    sequence,
    size,
    text,
    unknown,
)
from toolkit.definitions.tree import Entry, Node
from toolkit.errors import DefinitionError, Location

# Compose service keys that are the same key (and value syntax) in podunit's form.
SAME_KEYS = frozenset(
    {
        "image", "command", "entrypoint", "environment", "env_file", "working_dir", "user",
        "group_add", "hostname", "volumes", "tmpfs", "read_only", "ports", "healthcheck",
        "stop_signal", "cap_add", "cap_drop", "privileged", "devices", "sysctls",
        "ulimits", "security_opt", "labels", "annotations", "init",
        "networks", "dns", "dns_search", "extra_hosts", "secrets", "configs",
        "build",
    }
)  # fmt: skip
# Compose key -> podunit key (a dotted target is a key of a nested podunit mapping).
RENAMED_KEYS = {
    "stop_grace_period": "stop_timeout",
    "network_mode": "network",
    "mem_limit": "resources.memory",
    "mem_reservation": "resources.memory_reservation",
    "cpus": "resources.cpus",
    "pids_limit": "resources.pids",
    "cpu_shares": "resources.cpu_weight",
}
# Keys handled here into model fields (project, recorded and checked keys).
SPECIAL_KEYS = frozenset(
    {
        "container_name", "deploy", "logging", "x-podunit", "depends_on", "restart",
        "profiles", "expose", "stdin_open", "tty", "shm_size", "domainname", "platform",
        "pull_policy",
    }
)  # fmt: skip
# Compose pull_policy -> podunit's `pull:` (`build`: the build unit decides, see podunit.yaml(5)).
PULL_POLICIES = {
    "always": "always",
    "missing": "missing",
    "if_not_present": "missing",
    "never": "never",
    "build": "missing",
}
COMPOSE_KEYS: frozenset[str] = SAME_KEYS | frozenset(RENAMED_KEYS) | SPECIAL_KEYS
"""Every Compose service key podunit accepts."""

# Keys of the `x-podunit:` extension of a service: podunit-only settings.
X_PODUNIT_KEYS = frozenset(
    {
        "rootfs", "sockets", "notify", "cgroups", "reload", "unit", "service", "socket",
        "install", "runtime", "no_new_privileges", "seccomp", "resources", "auto_update",
        "health_on_failure", "health_startup",
    }
)  # fmt: skip
# Compose top-level keys: accepted ones; the rest of the Compose specification is refused.
TOP_LEVEL_KEYS = frozenset(
    {"services", "name", "version", "volumes", "networks", "secrets", "configs"}
)
# parsed with the own form's (toolkit.definitions.declarations), not here
DECLARATION_KEYS = frozenset({"volumes", "secrets", "configs"})
UNSUPPORTED_TOP_LEVEL = frozenset({"include", "models"})
# Compose's logging drivers podunit has (json-file is Podman's k8s-file, as in Podman).
LOGGING_DRIVERS = {
    "journald": "journald", "k8s-file": "k8s-file", "json-file": "k8s-file", "none": "none",
}  # fmt: skip

_RESOURCES = "use cpus, cpu_shares, mem_limit, pids_limit or deploy.resources.limits"
_NAMESPACES = "each container has its own namespaces"
# Every service key of the Compose specification that podunit refuses, with what to do instead.
UNSUPPORTED_HINTS = {
    "attach": "a unit's output goes to the journal: journalctl -u UNIT",
    "blkio_config": "set IO limits as systemd properties: x-podunit: {service: {IOWeight: N}}",
    "cgroup": f"{_NAMESPACES}; cgroup placement is x-podunit: {{cgroups: split|enabled}}",
    "cgroup_parent": "the container's cgroup is its unit's (x-podunit: {service: {Slice: ...}})",
    "cpu_count": _RESOURCES,
    "cpu_percent": _RESOURCES,
    "cpu_period": _RESOURCES,
    "cpu_quota": _RESOURCES,
    "cpu_rt_period": _RESOURCES,
    "cpu_rt_runtime": _RESOURCES,
    "cpuset": "set AllowedCPUs= through x-podunit: {service: {AllowedCPUs: 0-1}}",
    "credential_spec": "Windows only",
    "develop": "podunit runs services, it has no development watch mode",
    "device_cgroup_rules": "list the devices under 'devices:'",
    "dns_opt": "the container uses the host's resolver configuration",
    "extends": "copy the shared keys, or use a YAML anchor (x-common: &common, <<: *common)",
    "external_links": "services of a project reach each other by service name",
    "gpus": "pass the device nodes under 'devices:'",
    "ipc": _NAMESPACES,
    "isolation": "Windows only",
    "label_file": "write the labels under 'labels:'",
    "links": "services of a project reach each other by service name; drop 'links'",
    "mac_address": "podunit chooses the addresses of its networks",
    "mem_swappiness": "use mem_limit (x-podunit: {service: {MemorySwapMax: ...}} for swap)",
    "memswap_limit": "use mem_limit (x-podunit: {service: {MemorySwapMax: ...}} for swap)",
    "models": "run the model server as a service of its own",
    "oom_kill_disable": "use x-podunit: {service: {OOMPolicy: continue}}",
    "oom_score_adj": "use x-podunit: {service: {OOMScoreAdjust: N}}",
    "pid": _NAMESPACES,
    "post_start": "run it from the entrypoint, or x-podunit: {service: {ExecStartPost: ...}}",
    "pre_stop": "handle the stop signal in the container (stop_signal, stop_grace_period)",
    "provider": "run the provider's resource as a service of its own",
    "pull_refresh_after": "periodic pulls are podunit auto-update's job",
    "runtime": "podunit's own 'runtime' goes under 'x-podunit:' in a Compose service",
    "scale": "one container per service: define one service per replica",
    "storage_opt": "podunit's storage has no per-container options",
    "use_api_socket": "podunit has no Docker API socket",
    "userns_mode": _NAMESPACES,
    "uts": _NAMESPACES,
    "volumes_from": "mount the same named volume in both services",
}
UNSUPPORTED_KEYS = frozenset(UNSUPPORTED_HINTS)
UNSUPPORTED_TOP_LEVEL_HINTS = {
    "include": "each Compose file in the search path is a project of its own",
    "models": "run the model server as a service of its own",
}
# Machine names of `platform: linux/ARCH[/VARIANT]` as Go (OCI) names them.
_ARCHES = {
    "x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
    "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}  # fmt: skip


def unsupported(loc: Location, key: str, hint: str | None = None) -> DefinitionError:
    error = fail(loc, f"Compose key {v.quote(key)} is not supported by podunit")
    error.hint = hint
    return error


class Project:
    """What translating a service needs to know about its project (spec §1.3)."""

    def __init__(
        self, name: str, services: Iterable[str], profiles: Iterable[str] = (),
        machine: str | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.services = frozenset(services)
        self.active_profiles = frozenset(profiles)  # COMPOSE_PROFILES; "*": all
        self.machine = machine  # os.uname().machine; None: platform is not checked

    def container(self, service: str) -> str:
        """The container (and unit) name of a service: `PROJECT-SERVICE`."""
        return f"{self.name}-{service}"

    @property
    def default_network(self) -> str:
        """The project's default network, named as Compose names it."""
        return f"{self.name}_default"


def _put_nested(out: dict[str, Entry], parent: str, key: str, entry: Entry) -> None:
    """out[parent][key] = entry, creating the parent mapping at the entry's place."""
    holder = out.get(parent)
    if holder is None:
        holder = out[parent] = Entry(entry.key, Node.at({}, entry.key_loc))
    if key in holder.node.value:
        raise fail(entry.key_loc, f"{parent}.{key} is set twice (by two Compose keys)")
    holder.node.value[key] = entry


def _cpu_shares_to_weight(node: Node) -> Node:
    """cgroup v1 `cpu.shares` (2..262144, default 1024) -> v2 `cpu.weight` (1..10000, default
    100), with the formula systemd and crun use."""
    value = node.value
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= 262144:
        raise fail(node, f"cpu_shares {v.quote(node.raw)} must be an integer 2..262144")
    return Node(1 + ((value - 2) * 9999) // 262142, node.path, node.line, node.column, node.raw)


_DEPLOY_HINTS = {
    "mode": "one container per service",
    "replicas": "one container per service: define one service per replica",
    "labels": "write the labels under the service's 'labels:'",
    "rollback_config": "podunit does not roll out services",
    "update_config": "podunit does not roll out services",
    "placement": "podunit runs on one host",
    "endpoint_mode": "services of a project reach each other by service name",
}


_RESTART_CONDITIONS = {"none": "no", "on-failure": "on-failure", "any": "always"}


def _restart_policy(
    node: Node, out: dict[str, Entry], fields: Fields, errors: list[DefinitionError]
) -> None:
    """`deploy.restart_policy`: `condition` -> `restart`, `max_attempts` -> at most N
    restarts (as `restart: on-failure:N`), `delay` -> `RestartSec=`; `window` refused."""
    keys = check_keys(node, ("condition", "delay", "max_attempts", "window"), "restart_policy")
    if "condition" in keys:
        entry = keys["condition"]
        condition = choice(entry.node, "restart_policy condition", _RESTART_CONDITIONS)
        if "restart" in out:
            message = "restart is set twice (restart and deploy.restart_policy)"
            errors.append(fail(entry.key_loc, message))
        else:
            restart = _RESTART_CONDITIONS[condition]
            out["restart"] = Entry(entry.key, Node.at(restart, entry.node.loc, restart))
    if "max_attempts" in keys:
        attempts = integer(keys["max_attempts"].node, "max_attempts", 0)
        fields["unit_extra"] = (
            ("StartLimitIntervalSec", "infinity"),
            ("StartLimitBurst", str(attempts + 1)),
        )
    if "delay" in keys:
        delay = duration(keys["delay"].node, "delay")
        fields["service_extra"] = (("RestartSec", f"{delay.total_seconds():g}"),)
    if "window" in keys:
        hint = "systemd restarts at once; leave out window (delay sets RestartSec=)"
        errors.append(unsupported(keys["window"].key_loc, "deploy.restart_policy.window", hint))


def _deploy(
    node: Node, out: dict[str, Entry], fields: Fields, errors: list[DefinitionError]
) -> None:
    keys = check_keys(node, ("resources", "restart_policy", *_DEPLOY_HINTS), "deploy")
    for key, entry in keys.items():
        if key == "resources":
            continue
        if key == "restart_policy":
            try:
                _restart_policy(entry.node, out, fields, errors)
            except DefinitionError as error:
                errors.append(error)
            continue
        if key in ("replicas", "mode") and entry.node.raw in ("1", "replicated"):
            continue  # one replica is what podunit runs
        errors.append(unsupported(entry.key_loc, f"deploy.{key}", _DEPLOY_HINTS[key]))
    if "resources" not in keys:
        return
    resources = check_keys(keys["resources"].node, ("limits", "reservations"), "deploy.resources")
    if "limits" in resources:
        limits = check_keys(resources["limits"].node, ("cpus", "memory", "pids"), "limits")
        for key, entry in limits.items():
            _put_nested(out, "resources", key, entry)
    if "reservations" in resources:
        allowed = ("cpus", "memory", "generic_resources", "devices")
        reservations = check_keys(resources["reservations"].node, allowed, "reservations")
        for key, entry in reservations.items():
            if key != "memory":
                errors.append(
                    unsupported(
                        entry.key_loc,
                        f"deploy.resources.reservations.{key}",
                        "reserve memory only (deploy.resources.reservations.memory)",
                    )
                )
                continue
            _put_nested(out, "resources", "memory_reservation", entry)


def _logging(node: Node, out: dict[str, Entry], errors: list[DefinitionError]) -> None:
    keys = check_keys(node, ("driver", "options"), "logging")
    if "driver" in keys:
        driver_node = keys["driver"].node
        driver = text(driver_node, "logging driver")
        if driver not in LOGGING_DRIVERS:
            message = f"logging driver {v.quote(driver)} is not supported by podunit"
            error = fail(driver_node, message)
            error.hint = "use journald (the default), json-file (k8s-file) or none"
            errors.append(error)
        else:
            out["log_driver"] = Entry(
                keys["driver"].key, Node.at(LOGGING_DRIVERS[driver], driver_node.loc, driver)
            )
    if "options" in keys:
        options_node = keys["options"].node
        if not options_node.is_mapping:
            raise fail(options_node, "logging options must be a mapping")
        for key, entry in options_node.value.items():
            if key != "max-size":
                hint = "podunit keeps one log file, bounded by max-size"
                errors.append(unsupported(entry.key_loc, f"logging.options.{key}", hint))
                continue
            _put_nested(out, "log_opt", "max_size", entry)


def _pull_policy(entry: Entry) -> Entry:
    """Compose `pull_policy` -> `pull:`; the periodic ones are auto-update's job."""
    policy = text(entry.node, "pull_policy")
    mapped = PULL_POLICIES.get(policy)
    if mapped is None:
        error = fail(entry.node, f"pull_policy {v.quote(policy)} is not supported by podunit")
        if policy in ("daily", "weekly", "refresh") or policy.startswith("every_"):
            error.hint = (
                "periodic pulls are podunit auto-update's job: set the label "
                "io.containers.autoupdate=registry and enable podunit-auto-update.timer"
            )
        else:
            error.hint = "one of: " + ", ".join(PULL_POLICIES)
        raise error
    node = entry.node
    return Entry(entry.key, Node(mapped, node.path, node.line, node.column, mapped))


def _network_mode(entry: Entry) -> Entry:
    mode = text(entry.node, "network_mode")
    if mode in ("bridge", "host", "none"):
        return entry
    error = fail(entry.node, f"network_mode {v.quote(mode)} is not supported by podunit")
    if mode.startswith(("service:", "container:")):
        error.hint = "podunit does not share one container's network namespace with another"
    else:
        error.hint = "use bridge, host or none, or name networks under 'networks:'"
    raise error


def _restart(entry: Entry, out: dict[str, Entry], fields: Fields) -> None:
    """`no`, `always`, `on-failure`, `on-failure:N` (at most N restarts), `unless-stopped`."""
    node = entry.node
    value = node.raw if isinstance(node.value, str | bool) else None
    if isinstance(value, str) and value.startswith("on-failure:"):
        retries = value.removeprefix("on-failure:")
        if not retries.isdigit():
            raise fail(node, f"restart {v.quote(value)}: the retry count must be a number")
        # at most N restarts: N + 1 starts, counted over the whole life of the unit
        fields["unit_extra"] = (
            ("StartLimitIntervalSec", "infinity"),
            ("StartLimitBurst", str(int(retries) + 1)),
        )
        entry = Entry(entry.key, Node.at("on-failure", node.loc, "on-failure"))
    if "restart" in out:
        raise fail(entry.key_loc, "restart is set twice (restart and deploy.restart_policy)")
    out["restart"] = entry


def _env_file(entry: Entry, fields: Fields) -> Entry:
    """`env_file`, read with Compose's `.env` syntax, or as written for `format: raw`
    (the one other format Compose names); the `format` keys are taken out."""
    node = entry.node
    items = node.value if node.is_sequence else [node]
    formats = set()
    kept = []
    for item in items:
        if item.is_mapping and "format" in item.value:
            found = text(item.value["format"].node, "env_file format")
            if found != "raw":
                raise fail(
                    item.value["format"].node,
                    f"env_file format {v.quote(found)} is not supported by podunit (raw)",
                )
            formats.add("raw")
            item = Node(
                {k: e for k, e in item.value.items() if k != "format"},
                item.path, item.line, item.column,
            )  # fmt: skip
        else:
            formats.add("dotenv")
        kept.append(item)
    if formats == {"raw", "dotenv"}:
        raise fail(node, "env_file: all files or none have 'format: raw' in podunit")
    fields["env_file_syntax"] = "plain" if formats == {"raw"} else "dotenv"
    if not node.is_sequence:
        return entry
    return Entry(entry.key, Node(kept, node.path, node.line, node.column))


def _check_renamed(key: str, node: Node) -> None:
    """A renamed key's value checked under its Compose name (the error names the key
    as the user wrote it, and each key is its own error)."""
    if key in ("mem_limit", "mem_reservation"):
        size(node, key)
    elif key == "cpus":
        cpus(node)
    elif key == "pids_limit":
        integer(node, key, 1)
    elif key == "stop_grace_period":
        duration(node, key)


def _depends_on(node: Node, project: Project) -> tuple[Dependency, ...]:
    """`depends_on`: names of services of the same project, list or long form."""
    result = []
    if node.is_mapping:
        items = [
            (name, entry.key_loc, entry.node)
            for name, entry in node.value.items()
            if not name.startswith("x-")
        ]
    else:
        items = [
            (text(item, "depends_on"), item.loc, None) for item in sequence(node, "depends_on")
        ]
    for name, loc, spec in items:
        if name not in project.services:
            raise fail(
                loc,
                f"depends_on {v.quote(name)}: project {v.quote(project.name)} has no service "
                f"{v.quote(name)}{v.did_you_mean(name, project.services)}",
            )
        dependency = Dependency(name) if spec is None else parse_dependency(name, spec)
        result.append(dependency._replace(name=project.container(name)))
    return tuple(result)


def _platform(node: Node, project: Project) -> None:
    """`platform: [linux/]ARCH[/VARIANT]` must be the host's (podunit runs no emulation)."""
    platform = text(node, "platform")
    parts = platform.split("/")
    if parts[0] != "linux" or len(parts) < 2:
        raise fail(node, f"platform {v.quote(platform)}: podunit runs linux/ARCH containers")
    if project.machine is None:
        return
    host = _ARCHES.get(project.machine, project.machine)
    if parts[1] != host:
        error = fail(node, f"platform {v.quote(platform)} is not this host's (linux/{host})")
        error.hint = "podunit runs images of the host's architecture; remove 'platform'"
        raise error


def _profiles(node: Node) -> tuple[str, ...]:
    names = []
    for item in sequence(node, "profiles"):
        name = text(item, "profile")
        if not name or not (name[0].isalnum() and all(c.isalnum() or c in "_.-" for c in name)):
            raise fail(item, f"invalid profile name {v.quote(name)}")
        names.append(name)
    return tuple(names)


def _expose(node: Node) -> tuple[str, ...]:
    ports = []
    for item in sequence(node, "expose"):
        port = text(item, "expose")
        number, _, protocol = port.partition("/")
        low, _, high = number.partition("-")
        if not (low.isdigit() and (not high or high.isdigit()) and protocol in ("", "tcp", "udp")):
            raise fail(item, f"invalid expose port {v.quote(port)} (PORT[-PORT][/tcp|udp])")
        ports.append(port)
    return tuple(ports)


def _special(
    key: str, entry: Entry, out: dict[str, Entry], fields: Fields, project: Project,
    errors: list[DefinitionError],
) -> None:  # fmt: skip
    """The keys of SPECIAL_KEYS (every other key is renamed or passed on)."""
    node = entry.node
    if key == "container_name":
        text(node, "container_name")  # the container is named PROJECT-SERVICE
    elif key == "deploy":
        _deploy(node, out, fields, errors)
    elif key == "pull_policy":
        out["pull"] = _pull_policy(entry)
    elif key == "logging":
        _logging(node, out, errors)
    elif key == "restart":
        _restart(entry, out, fields)
    elif key == "depends_on":
        fields["depends_on"] = _depends_on(node, project)
    elif key == "profiles":
        fields["profiles"] = _profiles(node)
    elif key == "expose":
        fields["expose"] = _expose(node)
    elif key in ("stdin_open", "tty"):
        fields[key] = boolean(node, key)
    elif key == "shm_size":
        fields["shm_size"] = size(node, "shm_size")
    elif key == "domainname":
        fields["domainname"] = converted(node, v.check_hostname, "domainname")
    elif key == "platform":
        _platform(node, project)
    elif key == "x-podunit":
        extension = check_keys(node, X_PODUNIT_KEYS, "x-podunit")
        for sub_key, sub_entry in extension.items():
            if sub_key == "resources":
                for res_key, res_entry in check_keys(
                    sub_entry.node,
                    ("cpu_weight", "memory", "memory_reservation", "cpus", "pids"),
                    "resources",
                ).items():
                    _put_nested(out, "resources", res_key, res_entry)
            else:
                out[sub_key] = sub_entry


def translate_service(
    name: str, node: Node, project: Project, errors: list[DefinitionError]
) -> tuple[Node, Fields] | None:
    """A Compose service -> the equivalent podunit container spec (a located tree) and the
    model fields only Compose has (project, service, dependencies, recorded keys).

    Every problem is appended to `errors` (each key is checked even after an earlier
    one failed); the translation of the keys that are right is returned all the same,
    so that their values are checked too. None only when the service is no mapping.
    """
    if not node.is_mapping:
        errors.append(fail(node, f"service {v.quote(name)} must be a mapping"))
        return None
    count = len(errors)
    out: dict[str, Entry] = {}
    fields: Fields = {"project": project.name, "service": name}
    for key, entry in node.value.items():
        try:
            if key == "env_file":
                out[key] = _env_file(entry, fields)
            elif key in SAME_KEYS:
                out[key] = entry
            elif key in RENAMED_KEYS:
                target = RENAMED_KEYS[key]
                if key == "network_mode":
                    entry = _network_mode(entry)
                if key == "cpu_shares":
                    entry = Entry(entry.key, _cpu_shares_to_weight(entry.node))
                elif key == "pids_limit" and entry.node.raw in ("-1", "0"):
                    continue  # Compose's "unlimited"
                else:
                    _check_renamed(key, entry.node)  # named as written, before renaming
                parent, dot, child = target.partition(".")
                if dot:
                    _put_nested(out, parent, child, entry)
                else:
                    out[target] = entry
            elif key in SPECIAL_KEYS:
                _special(key, entry, out, fields, project, errors)
            elif key.startswith("x-"):
                continue
            else:
                if key in UNSUPPORTED_KEYS:
                    error = unsupported(entry.key_loc, key, UNSUPPORTED_HINTS[key])
                else:
                    error = unknown(entry.key_loc, "Compose key", key, COMPOSE_KEYS)
                if key in X_PODUNIT_KEYS:
                    error.hint = (
                        f"podunit's own '{key}' goes under 'x-podunit:' in a Compose service"
                    )
                errors.append(error)
        except DefinitionError as error:
            errors.append(error)
    if fields.get("profiles") and not (
        "*" in project.active_profiles or project.active_profiles & set(fields["profiles"])
    ):
        fields["install"] = Install()  # generated, not enabled: no profile is active
    if len(errors) > count:  # the rest is still parsed, for its problems
        fields.pop("install", None)
    return Node(out, node.path, node.line, node.column), fields


def check_top_level(document: Node, errors: list[DefinitionError]) -> None:
    """Compose's top-level keys besides `services`, `volumes`, `secrets` and `configs` (which
    `toolkit.definitions.declarations` parses): `name`, `version`."""
    for key, entry in document.value.items():
        if key.startswith("x-") or key == "services" or key in DECLARATION_KEYS:
            continue
        try:
            if key == "name" or key == "version":
                text(entry.node, key)
            elif key == "networks":
                pass  # parsed with the services (toolkit.definitions.networks)
            elif key in UNSUPPORTED_TOP_LEVEL:
                raise unsupported(entry.key_loc, key, UNSUPPORTED_TOP_LEVEL_HINTS[key])
            else:
                raise unknown(entry.key_loc, "top-level key", key, TOP_LEVEL_KEYS)
        except DefinitionError as error:
            errors.append(error)

"""Compose services (`services:`) translated into podunit's own form (spec §1.3).

Each service's located tree is rewritten into a `containers:` entry and then
parsed by `toolkit.definitions.parse`, so both forms share one validator. Keys
with a podunit meaning are renamed or reshaped (table in podunit.yaml(5));
every other Compose key is refused by name, never ignored. podunit-only keys go
under the service's `x-podunit:` mapping.
"""

from __future__ import annotations

from toolkit.definitions import values as v
from toolkit.definitions.parse import check_keys, fail, text, unknown
from toolkit.definitions.tree import Entry, Node
from toolkit.errors import DefinitionError, Location

# Compose service keys that are the same key (and value syntax) in podunit's form.
SAME_KEYS = frozenset(
    {
        "image", "command", "entrypoint", "environment", "env_file", "working_dir", "user",
        "group_add", "hostname", "volumes", "tmpfs", "read_only", "ports", "healthcheck",
        "stop_signal", "restart", "cap_add", "cap_drop", "privileged", "devices", "sysctls",
        "ulimits", "security_opt", "labels", "annotations", "init", "depends_on",
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
SPECIAL_KEYS = frozenset({"container_name", "deploy", "logging", "pull_policy", "x-podunit"})
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
LOGGING_DRIVERS = frozenset({"journald", "k8s-file", "none"})

# Every service key of the Compose specification that podunit refuses, for the message.
UNSUPPORTED_KEYS = frozenset(
    {
        "attach", "blkio_config", "cgroup", "cgroup_parent", "cpu_count",
        "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpuset",
        "credential_spec", "develop", "device_cgroup_rules", "dns_opt",
        "domainname", "expose", "extends", "external_links", "gpus", "ipc",
        "isolation", "label_file", "links", "mac_address", "mem_swappiness", "memswap_limit",
        "models", "oom_kill_disable", "oom_score_adj", "pid", "platform",
        "post_start", "pre_stop", "profiles", "provider", "pull_refresh_after",
        "runtime", "scale", "shm_size", "stdin_open", "storage_opt", "tty",
        "use_api_socket", "userns_mode", "uts", "volumes_from",
    }
)  # fmt: skip


def unsupported(loc: Location, key: str) -> DefinitionError:
    return fail(loc, f"Compose key {v.quote(key)} is not supported by podunit")


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


def _deploy(node: Node, out: dict[str, Entry]) -> None:
    keys = check_keys(node, ("resources", *_DEPLOY_UNSUPPORTED), "deploy")
    for key, entry in keys.items():
        if key != "resources":
            raise unsupported(entry.key_loc, f"deploy.{key}")
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
                raise unsupported(entry.key_loc, f"deploy.resources.reservations.{key}")
            _put_nested(out, "resources", "memory_reservation", entry)


_DEPLOY_UNSUPPORTED = (
    "mode", "replicas", "labels", "rollback_config", "update_config", "restart_policy",
    "placement", "endpoint_mode",
)  # fmt: skip


def _logging(node: Node, out: dict[str, Entry]) -> None:
    keys = check_keys(node, ("driver", "options"), "logging")
    if "driver" in keys:
        driver_node = keys["driver"].node
        driver = text(driver_node, "logging driver")
        if driver not in LOGGING_DRIVERS:
            raise fail(
                driver_node,
                f"logging driver {v.quote(driver)} is not supported by "
                "podunit (journald, k8s-file, none)",
            )
        out["log_driver"] = keys["driver"]
    if "options" in keys:
        options_node = keys["options"].node
        if not options_node.is_mapping:
            raise fail(options_node, "logging options must be a mapping")
        for key, entry in options_node.value.items():
            if key != "max-size":
                raise unsupported(entry.key_loc, f"logging.options.{key}")
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
    raise fail(
        entry.node,
        f"network_mode {v.quote(mode)} is not supported by podunit "
        "(bridge, host or none; name networks under 'networks:')",
    )


def translate_service(name: str, node: Node) -> Node:
    """A Compose service -> the equivalent podunit container spec (both as located trees).

    Raises the first problem as `DefinitionError`; refused keys are named.
    """
    if not node.is_mapping:
        raise fail(node, f"service {v.quote(name)} must be a mapping")
    out: dict[str, Entry] = {}
    for key, entry in node.value.items():
        if key in SAME_KEYS:
            out[key] = entry
        elif key in RENAMED_KEYS:
            target = RENAMED_KEYS[key]
            if key == "network_mode":
                entry = _network_mode(entry)
            if key == "cpu_shares":
                entry = Entry(entry.key, _cpu_shares_to_weight(entry.node))
            parent, dot, child = target.partition(".")
            if dot:
                _put_nested(out, parent, child, entry)
            else:
                out[target] = entry
        elif key == "container_name":
            text(entry.node, "container_name")  # podunit names the container after the service
        elif key == "deploy":
            _deploy(entry.node, out)
        elif key == "pull_policy":
            out["pull"] = _pull_policy(entry)
        elif key == "logging":
            _logging(entry.node, out)
        elif key == "x-podunit":
            extension = check_keys(entry.node, X_PODUNIT_KEYS, "x-podunit")
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
        elif key.startswith("x-"):
            continue
        else:
            error = (
                unsupported(entry.key_loc, key)
                if key in UNSUPPORTED_KEYS
                else unknown(entry.key_loc, "Compose key", key, COMPOSE_KEYS)
            )
            if key in X_PODUNIT_KEYS:
                error.hint = f"podunit's own '{key}' goes under 'x-podunit:' in a Compose service"
            raise error
    return Node(out, node.path, node.line, node.column)


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
                raise unsupported(entry.key_loc, key)
            else:
                raise unknown(entry.key_loc, "top-level key", key, TOP_LEVEL_KEYS)
        except DefinitionError as error:
            errors.append(error)

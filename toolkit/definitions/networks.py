"""Top-level `networks:` of a definition file, in both forms (podunit.yaml(5), NETWORKS).

Own form: `networks: {NAME: {subnet, gateway, internal, dns, ipv6, external}}`.
Compose: `networks: {NAME: {name, driver: bridge, internal, external, enable_ipv6,
ipam: {config: [{subnet, gateway}]}, attachable}}`; other Compose network keys are
refused by name. `attach_networks` gives each container the declarations of the
networks it joins (so that its plan file carries them: no YAML on the start path)
and checks the references.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from toolkit.definitions import values as v
from toolkit.definitions.model import Container, NetworkSpec
from toolkit.definitions.networking import NETWORK_MODES
from toolkit.definitions.readers import boolean, check_keys, fail, text
from toolkit.definitions.tree import Node
from toolkit.errors import DefinitionError, Location

OWN_KEYS = frozenset({"subnet", "gateway", "internal", "dns", "ipv6", "external"})
COMPOSE_KEYS = frozenset(
    {"name", "driver", "internal", "external", "enable_ipv6", "ipam", "attachable"}
)
COMPOSE_UNSUPPORTED = frozenset({"driver_opts", "labels", "enable_ipv4"})
IPAM_KEYS = frozenset({"driver", "config", "options"})
IPAM_CONFIG_KEYS = frozenset({"subnet", "gateway", "ip_range", "aux_addresses"})
# The name Compose gives the network of services that list none.
COMPOSE_DEFAULT = "default"

Declared = dict[str, tuple[NetworkSpec, Location]]


def check_subnet(text_: str) -> str:
    """An IPv4 subnet in CIDR form with room for a gateway and containers (/8../30)."""
    import ipaddress

    try:
        network = ipaddress.IPv4Network(text_, strict=True)
    except ValueError as error:
        raise ValueError(f"invalid IPv4 subnet {v.quote(text_)}: {error}") from None
    if not 8 <= network.prefixlen <= 30:
        raise ValueError(f"subnet {v.quote(text_)} must be /8 to /30")
    return str(network)


def check_gateway(subnet: str, gateway: str) -> str:
    import ipaddress

    try:
        address = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise ValueError(f"invalid gateway address {v.quote(gateway)}") from None
    network = ipaddress.IPv4Network(subnet)
    if address not in network or address in (network.network_address, network.broadcast_address):
        raise ValueError(f"gateway {gateway} is not a host address of subnet {subnet}")
    return str(address)


def _converted(node: Node, check: Callable[[str], str], what: str) -> str:
    try:
        return check(text(node, what))
    except ValueError as error:
        raise fail(node, str(error)) from None


def _name(value: str) -> str:
    return v.check_name(value, "network name")


def _own(name: str, node: Node) -> NetworkSpec:
    keys = check_keys(node, OWN_KEYS, f"network {name}")
    subnet = _converted(keys["subnet"].node, check_subnet, "subnet") if "subnet" in keys else None
    gateway = None
    if "gateway" in keys:
        if subnet is None:
            raise fail(keys["gateway"].key_loc, "'gateway' needs 'subnet'")
        gateway = _converted(keys["gateway"].node, lambda g: check_gateway(subnet, g), "gateway")
    flags = {key: boolean(keys[key].node, key) for key in ("internal", "dns", "ipv6", "external")
             if key in keys}  # fmt: skip
    if flags.get("ipv6"):
        raise fail(keys["ipv6"].node, "IPv6 networks are not supported yet (IPv4 only)")
    if flags.get("external") and len(keys) > 1:
        other = next(key for key in keys if key != "external")
        raise fail(keys[other].key_loc, f"an external network has no {v.quote(other)}")
    return NetworkSpec(name, subnet, gateway, **flags)


def _compose(key: str, node: Node, project: str | None) -> NetworkSpec:
    keys = node.value if node.is_mapping else {}
    for sub_key, entry in keys.items():
        if sub_key in COMPOSE_UNSUPPORTED:
            raise fail(entry.key_loc, f"Compose key 'networks.{key}.{sub_key}' is not supported")
    keys = check_keys(node, COMPOSE_KEYS, f"network {key}")
    name = None
    if "name" in keys:
        name = _converted(keys["name"].node, _name, "name")
    if "driver" in keys:
        driver = text(keys["driver"].node, "driver")
        if driver != "bridge":
            raise fail(keys["driver"].node, f"network driver {v.quote(driver)} is not supported"
                       " (bridge only)")  # fmt: skip
    subnet = gateway = None
    if "ipam" in keys:
        ipam = check_keys(keys["ipam"].node, IPAM_KEYS, "ipam")
        if "driver" in ipam and text(ipam["driver"].node, "ipam driver") != "default":
            raise fail(ipam["driver"].node, "only the default ipam driver is supported")
        if "options" in ipam:
            raise fail(ipam["options"].key_loc, "ipam options are not supported")
        if "config" in ipam:
            config = ipam["config"].node
            items = config.value if config.is_sequence else None
            if not items or len(items) > 1:
                raise fail(config, "ipam config must be a list of one {subnet, gateway}")
            entries = check_keys(items[0], IPAM_CONFIG_KEYS, "ipam config")
            for refused in ("ip_range", "aux_addresses"):
                if refused in entries:
                    raise fail(entries[refused].key_loc, f"ipam {refused} is not supported")
            if "subnet" in entries:
                subnet = _converted(entries["subnet"].node, check_subnet, "subnet")
            if "gateway" in entries:
                if subnet is None:
                    raise fail(entries["gateway"].key_loc, "'gateway' needs 'subnet'")
                gateway = _converted(
                    entries["gateway"].node, lambda g: check_gateway(subnet, g), "gateway"
                )
    external = False
    if "external" in keys:
        external_node = keys["external"].node
        if external_node.is_mapping:  # the old `external: {name: X}`
            named = check_keys(external_node, ("name",), "external")
            if "name" in named:
                name = _converted(named["name"].node, _name, "name")
            external = True
        else:
            external = boolean(external_node, "external")
    if "enable_ipv6" in keys and boolean(keys["enable_ipv6"].node, "enable_ipv6"):
        raise fail(keys["enable_ipv6"].node, "IPv6 networks are not supported yet (IPv4 only)")
    if "attachable" in keys:
        boolean(keys["attachable"].node, "attachable")  # every podunit network is attachable
    internal = boolean(keys["internal"].node, "internal") if "internal" in keys else False
    if name is None:  # Compose: PROJECT_KEY, an external network by its key
        name = key if external or project is None else f"{project}_{key}"
    return NetworkSpec(name, subnet, gateway, internal=internal, external=external)


def parse_networks(
    node: Node, *, compose: bool, errors: list[DefinitionError], project: str | None = None
) -> Declared:
    """The networks a file declares, by the key they are referred to with in that file
    (a Compose project's network is named `PROJECT_KEY` unless it says `name:`)."""
    declared: Declared = {}
    if node.value is None:
        return declared
    if not node.is_mapping:
        errors.append(fail(node, "networks must be a mapping of network names"))
        return declared
    for key, entry in node.value.items():
        if key.startswith("x-"):
            continue
        try:
            v.check_name(key, "network name")
            if key in NETWORK_MODES or key == "private":
                raise ValueError(f"{v.quote(key)} is a network mode, not a network name")
        except ValueError as error:
            errors.append(fail(entry.key_loc, str(error)))
            continue
        try:
            if entry.node.value is None:
                spec = NetworkSpec(f"{project}_{key}" if compose and project else key)
            elif compose:
                spec = _compose(key, entry.node, project)
            else:
                spec = _own(key, entry.node)
        except DefinitionError as error:
            errors.append(error)
            continue
        declared[key] = (spec, entry.key_loc)
    return declared


def attach_networks(container: Container, file_networks: Declared, *, compose: bool) -> Container:
    """The container with its references resolved against its file's declarations.

    A Compose service may only name networks its file declares (and `default`, the
    default network, unless declared); in the own form an undeclared name refers to a
    network that must exist when the container starts (declared in another file or made
    by `podunit network create`). Raises a located `DefinitionError`.
    """
    names = [a.name for a in container.networks]
    if container.network not in (None, *NETWORK_MODES):
        names.append(container.network)
    specs: list[NetworkSpec] = []
    attachments = []
    for attachment in container.networks:
        if compose and attachment.name == COMPOSE_DEFAULT and COMPOSE_DEFAULT not in file_networks:
            attachment = attachment._replace(name="bridge")
        attachments.append(attachment)
    for name in names:
        if name in file_networks:
            spec = file_networks[name][0]
            specs.append(spec)
        elif compose and name != COMPOSE_DEFAULT:
            raise fail(
                container.source,
                f"service {v.quote(container.service or container.name)} uses network "
                f"{v.quote(name)}, "
                "which the file's top-level 'networks:' does not declare",
            )
    # A Compose key may name its network differently (`name:`): refer to it by that name.
    renamed = {key: spec.name for key, (spec, _) in file_networks.items()}
    attachments = [a._replace(name=renamed.get(a.name, a.name)) for a in attachments]
    network = container.network
    if network is not None and network in renamed:
        network = renamed[network]
    return container._replace(
        network=network,
        networks=tuple(attachments),
        network_specs=tuple(s for s in dict.fromkeys(specs) if not s.external),
    )


def merge_declared(
    everything: dict[str, tuple[NetworkSpec, Location]],
    file_networks: Mapping[str, tuple[NetworkSpec, Location]],
    errors: list[DefinitionError],
) -> None:
    """Add a file's declarations to all files'; one network declared twice differently is
    an error at the second place (external references are not declarations)."""
    for spec, loc in file_networks.values():
        if spec.external:
            continue
        first = everything.get(spec.name)
        if first is None:
            everything[spec.name] = (spec, loc)
        elif first[0] != spec:
            where = f"{first[1].path}:{first[1].line}"
            errors.append(
                fail(loc, f"network {v.quote(spec.name)} is declared differently in {where}")
            )

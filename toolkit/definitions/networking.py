"""A container's network keys in the own form: `network`, `networks`, `dns`, `dns_search`,
`extra_hosts`, `ports` and `sockets` (podunit.yaml(5); spec §1.1). The top-level
`networks:` declarations are `networks`.
"""

from __future__ import annotations

from toolkit.definitions import values as v
from toolkit.definitions.model import NetworkAttachment, PortMapping, SocketSpec, SocketType
from toolkit.definitions.readers import (
    Context,
    Fields,
    check_keys,
    check_pair_key,
    choice,
    converted,
    fail,
    non_empty,
    sequence,
    text,
)
from toolkit.definitions.tree import Node

PORT_KEYS = frozenset({"target", "published", "host_ip", "protocol", "mode"})
SOCKET_KEYS = frozenset({"listen", "type", "name"})
NETWORK_MODES = ("bridge", "none", "host")
NETWORK_ATTACH_KEYS = frozenset({"aliases", "ipv4_address"})


def key_network(node: Node, ctx: Context, out: Fields) -> None:
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


def key_networks(node: Node, ctx: Context, out: Fields) -> None:
    """Several networks: a list of names, or names mapped to {aliases, ipv4_address}."""
    attached: list[NetworkAttachment] = []
    items = (
        [(name, entry.key_loc, entry.node) for name, entry in node.value.items()
         if not name.startswith("x-")]
        if node.is_mapping
        else [(text(item, "network"), item.loc, None) for item in sequence(node, "networks")]
    )  # fmt: skip
    for name, loc, spec in items:
        check_pair_key(loc, name, "network", lambda s: v.check_name(s, "network name"))
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


def key_dns(node: Node, ctx: Context, out: Fields) -> None:
    out["dns"] = tuple(
        converted(item, lambda s: check_address(s, "DNS server address"), "dns")
        for item in sequence(node, "dns", scalar_ok=True)
    )


def key_dns_search(node: Node, ctx: Context, out: Fields) -> None:
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


def key_extra_hosts(node: Node, ctx: Context, out: Fields) -> None:
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


def key_ports(node: Node, ctx: Context, out: Fields) -> None:
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


def key_sockets(node: Node, ctx: Context, out: Fields) -> None:
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

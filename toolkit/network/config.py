"""Networks as data: the network record, the default network, subnet and address choice,
netavark's document, and the container's /etc/hosts and /etc/resolv.conf (pure).

podunit is netavark's caller, as libpod is: the network definitions, their subnets
and every container's address are podunit's (recorded in the state store by
`toolkit.storage.networks`); netavark only sets up and tears down what this module
describes. See podunit.yaml(5) NETWORKS and docs/podunit-runtime.md (Networking).

Addresses are handled as integers: `ipaddress` costs a unit's start several ms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

DEFAULT_NETWORK = "podunit"
"""The default bridge network: `network: bridge` (and no `network:` at all) joins it."""
INTERFACE_PREFIX = "podunit"  # bridges are podunit0, podunit1, ...
# Subnets for networks without one: the /24s of 10.90.0.0/15, in order. Podman's default
# network is 10.88.0.0/16 and its further networks start at 10.89.0.0/24: never those.
POOL = ("10.90.0.0", 15, 24)
AVOIDED = ("10.88.0.0/16", "10.89.0.0/16")
MODES = ("bridge", "none", "host")
DNS_DOMAIN = "dns.podman"  # the search domain aardvark-dns answers (netavark's)


class Network(NamedTuple):
    """A bridge network as recorded in the state store."""

    name: str
    id: str  # 64 hex digits, as netavark wants
    interface: str  # the bridge's name
    subnet: str  # "10.90.0.0/24"
    gateway: str
    internal: bool = False
    dns: bool = True
    created: float = 0.0
    origin: str = "definition"  # "definition", "default" or "cli"

    def to_json(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Network:
        return cls(**{key: data[key] for key in cls._fields if key in data})


class Attachment(NamedTuple):
    """One network of a container at run time: where, which address, which names."""

    network: str
    aliases: tuple[str, ...] = ()
    address: str | None = None  # a fixed address (`ipv4_address`), else leased


# --- addresses ----------------------------------------------------------------------------


def to_int(address: str) -> int:
    """`10.90.0.1` -> its 32-bit number; ValueError for anything else."""
    parts = address.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        raise ValueError(f"invalid IPv4 address {address!r}")
    a, b, c, d = (int(p) for p in parts)
    return (a << 24) | (b << 16) | (c << 8) | d


def to_text(number: int) -> str:
    return ".".join(str((number >> shift) & 255) for shift in (24, 16, 8, 0))


def parse_subnet(subnet: str) -> tuple[int, int]:
    """`10.90.0.0/24` -> (first address, prefix length)."""
    address, slash, prefix = subnet.partition("/")
    if not slash or not prefix.isdigit() or not 0 <= int(prefix) <= 32:
        raise ValueError(f"invalid subnet {subnet!r}")
    length = int(prefix)
    base = to_int(address)
    mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    if base & ~mask & 0xFFFFFFFF:
        raise ValueError(f"invalid subnet {subnet!r}: host bits set")
    return base, length


def _range(subnet: str) -> tuple[int, int]:
    base, length = parse_subnet(subnet)
    return base, base + (1 << (32 - length)) - 1


def overlaps(a: str, b: str) -> bool:
    first_a, last_a = _range(a)
    first_b, last_b = _range(b)
    return first_a <= last_b and first_b <= last_a


def contains(subnet: str, address: str) -> bool:
    first, last = _range(subnet)
    return first <= to_int(address) <= last


def routes_from_proc(text: str) -> list[str]:
    """The destinations of the host's IPv4 routes, from /proc/net/route (the default route,
    0.0.0.0/0, is left out: it overlaps everything)."""
    routes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        destination = int.from_bytes(bytes.fromhex(fields[1]), "little")
        mask = int.from_bytes(bytes.fromhex(fields[7]), "little")
        length = bin(mask).count("1")
        if length:
            routes.append(f"{to_text(destination & mask)}/{length}")
    return routes


def choose_subnet(taken: Iterable[str]) -> str:
    """The first /24 of the pool that overlaps none of `taken` (other networks' subnets, the
    host's routes) nor Podman's; ValueError when the pool is full."""
    avoided = [*AVOIDED, *taken]
    base_text, pool_length, length = POOL
    base = to_int(base_text)
    for index in range(1 << (length - pool_length)):
        candidate = f"{to_text(base + (index << (32 - length)))}/{length}"
        if not any(overlaps(candidate, other) for other in avoided):
            return candidate
    raise ValueError(f"no free /{length} left in {base_text}/{pool_length}")


def first_host(subnet: str) -> str:
    first, _ = _range(subnet)
    return to_text(first + 1)


def check_address(network: Network, address: str) -> None:
    """A fixed address must be a host address of the subnet other than the gateway."""
    first, last = _range(network.subnet)
    number = to_int(address)
    if not first < number < last:
        raise ValueError(f"{address} is not in network {network.name}'s subnet {network.subnet}")
    if address == network.gateway:
        raise ValueError(f"{address} is network {network.name}'s gateway")


def next_free(network: Network, used: Iterable[str]) -> str | None:
    """The lowest host address of the subnet that is not the gateway and not `used`."""
    first, last = _range(network.subnet)
    taken = {to_int(a) for a in used}
    taken.add(to_int(network.gateway))
    for number in range(first + 1, last):
        if number not in taken:
            return to_text(number)
    return None


def interface_for(index: int) -> str:
    return f"{INTERFACE_PREFIX}{index}"


# --- the netavark document ----------------------------------------------------------------


def netavark_document(
    container_id: str,
    container_name: str,
    networks: Sequence[tuple[Network, str, tuple[str, ...]]],
    ports: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """What `netavark setup|teardown` read on stdin (the shape Podman 4.3 sends to netavark
    1.4): each network with the container's interface, its address and DNS names, and the
    published ports (forwarded on every network the container joins)."""
    attached: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for index, (network, address, aliases) in enumerate(networks):
        attached[network.name] = {
            "interface_name": f"eth{index}",
            "static_ips": [address],
            "aliases": list(aliases),
        }
        info[network.name] = {
            "name": network.name,
            "id": network.id,
            "driver": "bridge",
            "network_interface": network.interface,
            "subnets": [{"subnet": network.subnet, "gateway": network.gateway}],
            "ipv6_enabled": False,
            "internal": network.internal,
            "dns_enabled": network.dns,
            "ipam_options": {"driver": "host-local"},
            # no traffic between two podunit networks (a container on both reaches both)
            "options": {"isolate": "true"},
        }
    return {
        "container_id": container_id,
        "container_name": container_name,
        "networks": attached,
        "network_info": info,
        "port_mappings": [
            {
                "host_ip": port.get("host_ip") or "",
                "container_port": port["container_port"],
                "host_port": port["host_port"],
                "range": 1,
                "protocol": port.get("protocol", "tcp"),
            }
            for port in ports
        ],
    }


# --- files in the container ---------------------------------------------------------------


def hosts_file(
    names: Sequence[str],
    addresses: Sequence[str],
    extra_hosts: Sequence[tuple[str, str]] = (),
    gateway: str | None = None,
) -> str:
    """/etc/hosts: localhost, the container's names on its addresses, `extra_hosts`, and
    `host.containers.internal` (the first network's gateway, as Podman writes it)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{address}\t{name}" for name, address in extra_hosts]
    if gateway is not None:
        lines.append(f"{gateway}\thost.containers.internal")
    own = " ".join(dict.fromkeys(n for n in names if n))
    lines += [f"{address}\t{own}" for address in addresses] or [f"127.0.0.1\t{own}"]
    return "\n".join(lines) + "\n"


def resolv_conf(
    nameservers: Sequence[str], search: Sequence[str] = (), options: Sequence[str] = ()
) -> str:
    lines = []
    if search:
        lines.append("search " + " ".join(search))
    lines += [f"nameserver {server}" for server in nameservers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def host_nameservers(text: str) -> list[str]:
    """The `nameserver` lines of the host's /etc/resolv.conf, without loopback ones (they
    would mean the container itself); empty if there are none."""
    servers = []
    for line in text.splitlines():
        fields = line.split()
        local = len(fields) >= 2 and (fields[1].startswith("127.") or fields[1] == "::1")
        if len(fields) >= 2 and fields[0] == "nameserver" and not local:
            servers.append(fields[1])
    return servers

"""`podunit network create|ls|inspect|rm|prune` without the printing (docs/podunit-runtime.md,
Networking): the network records of the state store and who uses them."""

from __future__ import annotations

from typing import Any

from toolkit.definitions import values
from toolkit.errors import PodunitError
from toolkit.network import attach, config
from toolkit.storage import networks
from toolkit.storage.state import StateStore


def create(
    store: StateStore,
    name: str,
    *,
    subnet: str | None = None,
    gateway: str | None = None,
    internal: bool = False,
    dns: bool = True,
) -> dict[str, Any]:
    """Make network `name` now (an error if it exists); the subnet is chosen when not given."""
    from toolkit.definitions.networks import check_gateway, check_subnet

    try:
        values.check_name(name, "network name")
        if name in config.MODES or name == "private":
            raise ValueError(f"{name!r} is a network mode, not a network name")
        if subnet is not None:
            subnet = check_subnet(subnet)
        if gateway is not None:
            if subnet is None:
                raise ValueError("--gateway needs --subnet")
            gateway = check_gateway(subnet, gateway)
    except ValueError as error:
        raise PodunitError(str(error)) from None
    if networks.find(store, name) is not None:
        raise PodunitError(f"network {name} already exists", hint="see: podunit network ls")
    spec = {"subnet": subnet, "gateway": gateway, "internal": internal, "dns": dns}
    network = attach.ensure_network(store, name, spec, origin="cli")
    return describe(store, network.to_json())


def describe(store: StateStore, data: dict[str, Any]) -> dict[str, Any]:
    """A network as `ls --format json` and `inspect` show it, with its containers."""
    users = []
    for _, address, container_id in networks.leases(store, data["name"]):
        record = store.find(container_id)
        users.append({"id": container_id, "name": record.name if record else None,
                      "address": address})  # fmt: skip
    return {
        "name": data["name"],
        "id": data["id"],
        "driver": "bridge",
        "interface": data["interface"],
        "subnet": data["subnet"],
        "gateway": data["gateway"],
        "internal": data.get("internal", False),
        "dns": data.get("dns", True),
        "created": data.get("created"),
        "origin": data.get("origin"),
        "containers": users,
    }


def listing(store: StateStore) -> list[dict[str, Any]]:
    return [describe(store, data) for data in sorted(networks.every(store), key=_name)]


def _name(data: dict[str, Any]) -> str:
    return str(data["name"])


def inspect(store: StateStore, name: str) -> dict[str, Any]:
    data = networks.find(store, name)
    if data is None:
        raise PodunitError(f"no such network: {name}", hint="see: podunit network ls")
    return describe(store, data)


def remove(store: StateStore, name: str) -> None:
    if networks.find(store, name) is None:
        raise PodunitError(f"no such network: {name}", hint="see: podunit network ls")
    networks.remove(store, name)


def prune(store: StateStore) -> list[str]:
    """Remove every network no container uses, except the default network."""
    removed = []
    for data in networks.every(store):
        if data["name"] == config.DEFAULT_NETWORK or networks.leases(store, data["name"]):
            continue
        networks.remove(store, data["name"])
        removed.append(data["name"])
    return sorted(removed)

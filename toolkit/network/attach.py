"""A container's networks at start: which ones, their records, addresses, netavark setup,
and the /etc/hosts, /etc/resolv.conf and /etc/hostname it sees (podunit.yaml(5) NETWORKS).

`network_plan` (toolkit.network.plan; when the container is prepared) decides from the
definition what the container joins and keeps it in the record's options as JSON, so
that a restart of the record needs no definition. `connect` (before the runtime creates
the container) makes the networks on first use, leases addresses, makes the namespace,
runs netavark setup, writes the files into the bundle and returns what
`netavark.disconnect` needs; on failure it undoes its own steps.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

from toolkit.errors import PodunitError
from toolkit.network import config, netavark
from toolkit.network.plan import DEFAULT_ENV as DEFAULT_ENV  # re-exported
from toolkit.network.plan import has_work as has_work
from toolkit.network.plan import network_plan as network_plan
from toolkit.storage import networks

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from toolkit.storage.records import ContainerRecord
    from toolkit.storage.state import StateStore


def _make(name: str, spec: Mapping[str, Any] | None, origin: str, host_routes: list[str]) -> Any:
    """A maker of network `name` for `storage.networks.create` (subnet and bridge chosen
    against every other network and the host's routes)."""

    def make(others: list[dict[str, Any]]) -> dict[str, Any]:
        taken = [other["subnet"] for other in others]
        subnet = (spec or {}).get("subnet")
        if subnet is None:
            try:
                subnet = config.choose_subnet([*taken, *host_routes])
            except ValueError as error:
                raise PodunitError(f"network {name}: {error}") from None
        else:
            clash = next((o for o in others if config.overlaps(subnet, o["subnet"])), None)
            if clash is not None:
                raise PodunitError(
                    f"network {name}: subnet {subnet} overlaps network {clash['name']}'s "
                    f"{clash['subnet']}",
                    hint="choose another subnet, or remove that network",
                )
        used = {other["interface"] for other in others}
        index = next(i for i in range(len(others) + 1) if config.interface_for(i) not in used)
        network = config.Network(
            name=name,
            id=os.urandom(32).hex(),
            interface=config.interface_for(index),
            subnet=subnet,
            gateway=(spec or {}).get("gateway") or config.first_host(subnet),
            internal=bool((spec or {}).get("internal", False)),
            dns=bool((spec or {}).get("dns", True)),
            created=time.time(),
            origin=origin,
        )
        return network.to_json()

    return make


def host_routes() -> list[str]:
    try:
        with open("/proc/net/route", encoding="utf-8") as routes:
            return config.routes_from_proc(routes.read())
    except OSError:
        return []


def ensure_network(
    store: StateStore, name: str, spec: Mapping[str, Any] | None = None, *, origin: str
) -> config.Network:
    """Network `name` from the store, made now if it is the default or declared (`spec`).

    A declaration that differs from the recorded network is refused: the network keeps
    the settings it was made with until it is removed.
    """
    existing = networks.find(store, name)
    if existing is None:
        if spec is None and name != config.DEFAULT_NETWORK:
            raise PodunitError(
                f"network {name} does not exist",
                hint=f"declare it under networks: or create it: podunit network create {name}",
            )
        existing, _ = networks.create(store, name, _make(name, spec, origin, host_routes()))
    network = config.Network.from_json(existing)
    if spec is not None:
        _check_declaration(network, spec)
    return network


def _check_declaration(network: config.Network, spec: Mapping[str, Any]) -> None:
    wanted = {
        "subnet": spec.get("subnet") or network.subnet,
        "gateway": spec.get("gateway")
        or (network.gateway if not spec.get("subnet") else config.first_host(spec["subnet"])),
        "internal": bool(spec.get("internal", False)),
        "dns": bool(spec.get("dns", True)),
    }
    differs = [key for key, value in wanted.items() if getattr(network, key) != value]
    if differs:
        described = ", ".join(f"{k} {getattr(network, k)}" for k in differs)
        raise PodunitError(
            f"network {network.name} exists with {described}, unlike its declaration",
            hint=f"when no container uses it: podunit network rm {network.name}",
        )


def connect(
    store: StateStore, record: ContainerRecord, spec: dict[str, Any]
) -> tuple[dict[str, Any] | None, netavark.PendingSetup | None]:
    """Set up the container's networks and /etc files; change `spec` (config.json) to join
    the namespace and mount the files. Returns the state `netavark.disconnect` needs (None
    when nothing was set up) and netavark's setup, still running: the caller finishes it
    before the payload starts (and on failure, before `disconnect`)."""
    pending = None
    plan = record.options.network_plan
    if not plan:
        return None, None
    bundle = store.paths.bundle_dir(record.id)
    hostname = spec.get("hostname") or record.name
    state: dict[str, Any] = {}
    nameservers: list[str] = list(plan.get("dns", []))
    search: list[str] = list(plan.get("dns_search", []))
    addresses: list[str] = []
    gateway = None
    if plan["attachments"]:
        specs = {s["name"]: s for s in plan.get("specs", [])}
        joined = []
        for item in plan["attachments"]:
            origin = "default" if item["network"] == config.DEFAULT_NETWORK else "definition"
            network = ensure_network(store, item["network"], specs.get(item["network"]),
                                     origin=origin)  # fmt: skip
            if item["address"] is not None:
                try:
                    config.check_address(network, item["address"])
                except ValueError as error:
                    raise PodunitError(f"container {record.name}: ipv4_address {error}") from None
            joined.append((network, item))
        by_name = {network.name: network for network, _ in joined}

        def choose(name: str, used: set[str]) -> str:
            address = config.next_free(by_name[name], used)
            if address is None:
                raise PodunitError(f"network {name} has no free address left")
            return address

        addresses = networks.lease(
            store, record.id, [(n.name, item["address"]) for n, item in joined], choose
        )
        try:
            netns = netavark.netns_path(store.paths.run_dir, record.id)
            document = config.netavark_document(
                record.id, record.name,
                [(n, a, (*item["aliases"],)) for (n, item), a in zip(joined, addresses,
                                                                     strict=True)],
                record.options.ports,
            )  # fmt: skip
            state = {"netns": netns, "document": document, "addresses": addresses,
                     "networks": [n.name for n, _ in joined]}  # fmt: skip
            netavark.create_netns(netns)
            pending = netavark.start_setup(store.paths.run_dir, netns, document)
        except BaseException:
            _undo(store, record, state)
            raise
        gateway = joined[0][0].gateway
        if not nameservers:
            # what netavark reports for a network with DNS: aardvark-dns on its gateway
            nameservers = list(dict.fromkeys(n.gateway for n, _ in joined if n.dns))
            if nameservers and config.DNS_DOMAIN not in search:
                search.append(config.DNS_DOMAIN)
            if not nameservers:  # no network with DNS: the host's resolvers
                nameservers = config.host_nameservers(_read("/etc/resolv.conf"))
        for entry in spec["linux"]["namespaces"]:
            if entry["type"] == "network":
                entry["path"] = netns
    elif plan["mode"] == "host" and not nameservers:
        nameservers = config.host_nameservers(_read("/etc/resolv.conf"))
    files = {
        "hosts": config.hosts_file(
            [hostname, record.name], addresses,
            [(h, a) for h, a in plan.get("extra_hosts", [])], gateway,
        ),
    }  # fmt: skip
    if plan["attachments"] or plan.get("dns") or plan.get("dns_search"):
        files["resolv.conf"] = config.resolv_conf(nameservers, search)
    if plan["attachments"]:
        files["hostname"] = hostname + "\n"
    if plan["mode"] == "host" and not plan.get("extra_hosts"):
        files.pop("hosts")  # the host's own /etc/hosts stays
    targets = {mount["destination"] for mount in spec["mounts"]}
    for name, text in files.items():
        path = os.path.join(bundle, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        if f"/etc/{name}" not in targets:  # a volume the user mounts there wins
            spec["mounts"].append({"destination": f"/etc/{name}", "type": "bind",
                                   "source": path, "options": ["bind", "rw"]})  # fmt: skip
    return state or None, pending


def connect_record(
    store: StateStore, record: ContainerRecord, bundle: str
) -> tuple[ContainerRecord, netavark.PendingSetup | None]:
    """`connect` for the runtime's launch: config.json is written again with the namespace's
    path and the /etc files; the record keeps what teardown needs (saved at once, so that
    every exit path after this undoes it)."""
    import json

    spec = json.loads(json.dumps(record.spec))
    state, pending = connect(store, record, spec)
    try:
        if state:
            record = store.update(record, options=record.options._replace(network=state))
        with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as config:
            config.write(json.dumps(spec, indent=2))
    except BaseException:
        if pending is not None:
            with contextlib.suppress(PodunitError):
                pending.finish()
        raise
    return record, pending


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError:
        return ""


def _undo(store: StateStore, record: ContainerRecord, state: dict[str, Any]) -> None:
    """Take back a half-made connection: what a failed netavark setup left (it does not
    undo its own steps), the namespace, the leases."""
    netns = state.get("netns")
    if netns and os.path.exists(netns):
        with contextlib.suppress(PodunitError):
            netavark.teardown(store.paths.run_dir, netns, state["document"])
    if netns:
        with contextlib.suppress(OSError):
            netavark.remove_netns(netns)
    networks.release(store, record.id)

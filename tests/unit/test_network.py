"""Networks without netavark: subnet and address choice, the netavark document, the /etc
files, the network plan of a definition, and the records and leases in the state store
(20 processes leasing at once never share an address)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from toolkit.definitions.model import Container, NetworkAttachment, NetworkSpec, PortMapping
from toolkit.errors import Location, PodunitError
from toolkit.network import attach, config, manage
from toolkit.storage import networks
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import RUNNING, ContainerRecord
from toolkit.storage.state import StateStore

NET = config.Network("n", "ab" * 32, "podunit3", "10.90.4.0/30", "10.90.4.1")


def test_the_plan_names_configs_default_network() -> None:
    """toolkit.network.plan keeps its own copy (it must not import config on every start)."""
    from toolkit.network import plan

    assert plan.DEFAULT_NETWORK == config.DEFAULT_NETWORK
    assert attach.network_plan is plan.network_plan


def test_addresses_as_numbers() -> None:
    assert config.to_text(config.to_int("10.90.0.255")) == "10.90.0.255"
    assert config.parse_subnet("10.90.4.0/24") == (config.to_int("10.90.4.0"), 24)
    for bad in ("10.90.0", "10.90.0.256", "a.b.c.d", "10.90.0.1/24", "10.90.0.0/33"):
        with pytest.raises(ValueError):
            config.parse_subnet(bad if "/" in bad else bad + "/24")
    assert config.overlaps("10.90.0.0/16", "10.90.7.0/24")
    assert not config.overlaps("10.90.0.0/24", "10.90.1.0/24")
    assert config.contains("10.90.4.0/30", "10.90.4.3")


def test_subnet_choice_avoids_podman_other_networks_and_host_routes() -> None:
    assert config.choose_subnet([]) == "10.90.0.0/24"
    assert config.choose_subnet(["10.90.0.0/24", "10.90.1.0/25"]) == "10.90.2.0/24"
    assert config.choose_subnet(["10.90.0.0/23"]) == "10.90.2.0/24"
    with pytest.raises(ValueError, match=r"no free /24 left in 10\.90\.0\.0/15"):
        config.choose_subnet(["10.0.0.0/8"])
    assert all(not config.overlaps(config.choose_subnet([]), a) for a in config.AVOIDED)


def test_host_routes_from_proc_net_route() -> None:
    text = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t00005A0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "br0\t00015A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    )
    assert config.routes_from_proc(text) == ["10.90.0.0/16", "10.90.1.0/24"]
    assert config.choose_subnet(config.routes_from_proc(text)) == "10.91.0.0/24"


def test_addresses_in_a_subnet() -> None:
    assert config.next_free(NET, []) == "10.90.4.2"
    assert config.next_free(NET, ["10.90.4.2"]) is None  # /30: gateway + one host
    config.check_address(NET, "10.90.4.2")
    for bad, why in (("10.90.4.1", "gateway"), ("10.90.4.3", "not in"), ("10.90.5.2", "not in")):
        with pytest.raises(ValueError, match=why):
            config.check_address(NET, bad)


def test_the_netavark_document_has_podmans_shape() -> None:
    ports = [PortMapping(8080, 80)._asdict(), PortMapping(53, 53, "udp", "127.0.0.1")._asdict()]
    document = config.netavark_document("cd" * 32, "web", [(NET, "10.90.4.2", ("www",))], ports)
    assert document["networks"] == {
        "n": {"interface_name": "eth0", "static_ips": ["10.90.4.2"], "aliases": ["www"]}
    }
    info = document["network_info"]["n"]
    assert info["network_interface"] == "podunit3" and info["driver"] == "bridge"
    assert info["subnets"] == [{"subnet": "10.90.4.0/30", "gateway": "10.90.4.1"}]
    assert document["port_mappings"] == [
        {"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1, "protocol": "tcp"},
        {"host_ip": "127.0.0.1", "container_port": 53, "host_port": 53, "range": 1,
         "protocol": "udp"},
    ]  # fmt: skip


def test_hosts_and_resolv_conf() -> None:
    hosts = config.hosts_file(["web", "web"], ["10.90.0.2"], [("db", "10.1.1.1")], "10.90.0.1")
    assert hosts.splitlines()[2:] == [
        "10.1.1.1\tdb", "10.90.0.1\thost.containers.internal", "10.90.0.2\tweb"
    ]  # fmt: skip
    assert config.hosts_file(["c1"], []).splitlines()[-1] == "127.0.0.1\tc1"
    assert config.resolv_conf(["10.90.0.1"], ["dns.podman"]) == (
        "search dns.podman\nnameserver 10.90.0.1\n"
    )
    assert config.host_nameservers("nameserver 127.0.0.53\nnameserver 9.9.9.9\n# x\n") == [
        "9.9.9.9"
    ]


def _container(**fields: object) -> Container:
    return Container(name="web", source=Location("/x.yaml", 1, 1), rootfs="/r", **fields)  # type: ignore[arg-type]


def test_network_plans() -> None:
    plan = attach.network_plan(_container(), user=False, environ={})
    default: list[dict[str, Any]] = [{"network": "podunit", "aliases": [], "address": None}]
    assert plan == {"mode": "bridge", "specs": [], "attachments": default}
    none = attach.network_plan(_container(), user=False, environ={attach.DEFAULT_ENV: "none"})
    assert none == {"mode": "none", "attachments": []}
    explicit = _container(network="bridge")
    assert attach.network_plan(explicit, user=False, environ={attach.DEFAULT_ENV: "none"})[
        "attachments"
    ] == [{"network": "podunit", "aliases": [], "address": None}]
    several = _container(
        networks=(NetworkAttachment("bridge"), NetworkAttachment("b", ("x",), "10.9.0.5")),
        network_specs=(NetworkSpec("b", "10.9.0.0/24"),),
        extra_hosts=(("h", "1.2.3.4"),), dns=("9.9.9.9",),
    )  # fmt: skip
    plan = attach.network_plan(several, user=False, environ={})
    assert [a["network"] for a in plan["attachments"]] == ["podunit", "b"]
    assert plan["specs"][0]["subnet"] == "10.9.0.0/24"
    assert plan["extra_hosts"] == [["h", "1.2.3.4"]] and plan["dns"] == ["9.9.9.9"]
    assert attach.network_plan(_container(), user=True, environ={})["mode"] == "none"
    with pytest.raises(PodunitError, match="bridge networks need root"):
        attach.network_plan(_container(network="mynet"), user=True, environ={})
    assert attach.network_plan(_container(network="host"), user=False, environ={})["mode"] == (
        "host"
    )


@pytest.fixture
def paths(tmp_path: Path) -> RuntimePaths:
    return RuntimePaths(user=False, state_dir=tmp_path / "s", run_dir=tmp_path / "r")


def _add(store: StateStore, name: str) -> ContainerRecord:
    record = ContainerRecord(id=os.urandom(32).hex(), name=name, runtime="/bin/true",
                             status=RUNNING, created_at=0.0, spec={})  # fmt: skip
    store.add(record)
    return record


def test_networks_are_made_once_with_distinct_subnets_and_bridges(paths: RuntimePaths) -> None:
    with StateStore(paths) as store:
        default = attach.ensure_network(store, "podunit", origin="default")
        assert default.interface == "podunit0" and default.gateway == default.subnet[:-4] + "1"
        assert attach.ensure_network(store, "podunit", origin="default") == default
        other = attach.ensure_network(store, "b", {"subnet": None}, origin="definition")
        assert other.interface == "podunit1" and not config.overlaps(other.subnet, default.subnet)
        with pytest.raises(PodunitError, match="network c does not exist"):
            attach.ensure_network(store, "c", origin="definition")
        with pytest.raises(PodunitError, match="overlaps network"):
            attach.ensure_network(store, "d", {"subnet": default.subnet}, origin="definition")
        with pytest.raises(PodunitError, match="exists with internal False, unlike"):
            attach.ensure_network(store, "b", {"internal": True}, origin="definition")


def test_leases_fixed_addresses_release_and_stale_ones(paths: RuntimePaths) -> None:
    with StateStore(paths) as store:
        attach.ensure_network(store, "n", {"subnet": "10.90.4.0/29"}, origin="cli")
        net = config.Network.from_json(networks.find(store, "n") or {})

        def choose(name: str, used: set[str]) -> str:
            return config.next_free(net, used) or "none"

        a, b = _add(store, "a"), _add(store, "b")
        assert networks.lease(store, a.id, [("n", None)], choose) == ["10.90.4.2"]
        assert networks.lease(store, b.id, [("n", "10.90.4.5")], choose) == ["10.90.4.5"]
        c = _add(store, "c")
        with pytest.raises(
            PodunitError, match=r"10\.90\.4\.5 on network n is taken by container b"
        ):
            networks.lease(store, c.id, [("n", "10.90.4.5")], choose)
        assert networks.lease(store, c.id, [("n", None)], choose) == ["10.90.4.3"]
        with pytest.raises(PodunitError, match="network n is in use by a, b, c"):
            manage.remove(store, "n")
        networks.release(store, c.id)
        store.remove(b)  # a row that is gone: its lease is stale
        assert [address for _, address, _ in networks.leases(store, "n")] == ["10.90.4.2"]
        assert networks.lease(store, c.id, [("n", None)], choose) == ["10.90.4.3"]
        shown = manage.inspect(store, "n")
        assert {u["name"] for u in shown["containers"]} == {"a", "c"}
        networks.release(store, a.id)
        networks.release(store, c.id)
        assert manage.prune(store) == ["n"]
        assert manage.listing(store) == []


def test_leases_of_an_earlier_boot_are_free_again(paths: RuntimePaths) -> None:
    with StateStore(paths) as store:
        attach.ensure_network(store, "n", {"subnet": "10.90.4.0/24"}, origin="cli")
        record = _add(store, "a")
        networks.lease(store, record.id, [("n", "10.90.4.9")], lambda n, u: "x")
        with store.transaction() as db:
            db.execute("UPDATE network_leases SET boot_id = 'earlier'")
        assert networks.leases(store, "n") == []


LEASER = """
import os, sys
from toolkit.network import attach, config
from toolkit.storage import networks
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.state import StateStore
from toolkit.storage.records import RUNNING, ContainerRecord
paths = RuntimePaths(user=False, state_dir=sys.argv[1], run_dir=sys.argv[2])
with StateStore(paths) as store:
    network = attach.ensure_network(store, "podunit", origin="default")
    record = ContainerRecord(id=os.urandom(32).hex(), name=sys.argv[3], runtime="/bin/true",
                             status=RUNNING, created_at=0.0, spec={})
    store.add(record)
    print(networks.lease(store, record.id, [("podunit", None)],
                         lambda name, used: config.next_free(network, used))[0])
"""


def test_twenty_processes_leasing_at_once_get_twenty_addresses(paths: RuntimePaths) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", LEASER, paths.state_dir, paths.run_dir, f"c{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(20)
    ]
    addresses = [child.communicate(timeout=60)[0].strip() for child in children]
    assert all(child.returncode == 0 for child in children)
    assert len(set(addresses)) == 20
    with StateStore(paths) as store:
        shown = manage.inspect(store, "podunit")
        assert sorted(u["address"] for u in shown["containers"]) == sorted(addresses)
        assert len(manage.listing(store)) == 1


def test_network_cli_create_ls_inspect_rm(paths: RuntimePaths) -> None:
    env = {**os.environ, "PODUNIT_STATE_DIR": paths.state_dir, "PODUNIT_RUN_DIR": paths.run_dir}

    def podunit(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "toolkit.cli.main", *argv],
                              capture_output=True, text=True, env=env)  # fmt: skip

    assert podunit("network", "create", "--subnet", "10.91.3.0/24", "--internal", "back")
    listing = json.loads(podunit("network", "ls", "--format", "json").stdout)
    assert [(n["name"], n["subnet"], n["gateway"], n["internal"]) for n in listing] == [
        ("back", "10.91.3.0/24", "10.91.3.1", True)
    ]
    assert "back" in podunit("network", "ls").stdout
    again = podunit("network", "create", "back")
    assert again.returncode == 125 and "network back already exists" in again.stderr
    bad = podunit("network", "create", "--subnet", "10.91.3.1/24", "x")
    assert bad.returncode == 125 and "invalid IPv4 subnet" in bad.stderr
    assert json.loads(podunit("network", "inspect", "back").stdout)[0]["containers"] == []
    assert podunit("network", "rm", "back").returncode == 0
    missing = podunit("network", "inspect", "back")
    assert missing.returncode == 125 and "no such network: back" in missing.stderr

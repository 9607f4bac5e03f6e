"""The network keys of both forms (podunit.yaml(5), NETWORKS): `network`, `networks`,
`dns`, `dns_search`, `extra_hosts`, and the top-level `networks:` declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.definitions.loader import LoadResult, load_paths
from toolkit.definitions.model import (
    NetworkAttachment,
    NetworkSpec,
    container_from_json,
    container_to_json,
)


def load(tmp_path: Path, text: str, name: str = "defs.yaml") -> LoadResult:
    path = tmp_path / name
    path.write_text(text)
    return load_paths([path])


def errors(result: LoadResult, tmp_path: Path) -> list[str]:
    return [str(e).split(".yaml:", 1)[1] for e in result.errors]


def test_own_form_networks_keys_round_trip_through_a_plan(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        "networks:\n"
        "  back: {subnet: 10.91.7.0/24, gateway: 10.91.7.254, internal: true}\n"
        "  front:\n"
        "containers:\n"
        "  web:\n"
        "    rootfs: /srv/r\n"
        "    networks: {front: null, back: {aliases: [db, data.base], ipv4_address: 10.91.7.10}}\n"
        "    dns: [10.0.0.53, '::1']\n"
        "    dns_search: example.org\n"
        "    extra_hosts: ['db.local:10.1.1.1', 'v6:::1', 'eq=192.0.2.1']\n",
    )
    assert result.errors == []
    web = result.containers["web"]
    assert web.network is None
    assert web.networks == (
        NetworkAttachment("front"),
        NetworkAttachment("back", ("db", "data.base"), "10.91.7.10"),
    )
    assert web.network_specs == (
        NetworkSpec("front"),
        NetworkSpec("back", "10.91.7.0/24", "10.91.7.254", internal=True),
    )
    assert web.dns == ("10.0.0.53", "::1") and web.dns_search == ("example.org",)
    assert web.extra_hosts == (("db.local", "10.1.1.1"), ("v6", "::1"), ("eq", "192.0.2.1"))
    assert container_from_json(container_to_json(web)) == web


@pytest.mark.parametrize(
    ("value", "expected"),
    [("private", "none"), ("none", "none"), ("host", "host"), ("bridge", "bridge"),
     ("mynet", "mynet")],
)  # fmt: skip
def test_network_modes_and_the_old_private(tmp_path: Path, value: str, expected: str) -> None:
    result = load(tmp_path, f"containers:\n  c:\n    rootfs: /r\n    network: {value}\n")
    assert result.errors == []
    assert result.containers["c"].network == expected
    assert result.containers["c"].network_specs == ()


def test_a_network_declared_in_another_file_travels_with_the_container(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("networks:\n  shared: {subnet: 10.91.9.0/24}\n")
    (tmp_path / "b.yaml").write_text("containers:\n  c:\n    rootfs: /r\n    network: shared\n")
    result = load_paths([tmp_path])
    assert result.errors == []
    assert result.containers["c"].network_specs == (NetworkSpec("shared", "10.91.9.0/24"),)


def test_one_network_declared_twice_differently(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("networks:\n  n: {subnet: 10.91.9.0/24}\n")
    (tmp_path / "b.yaml").write_text("networks:\n  n: {subnet: 10.91.8.0/24}\n")
    result = load_paths([tmp_path])
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/b.yaml:2:3: network 'n' is declared differently in {tmp_path}/a.yaml:2"
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("    networks: [bridge]\n",
         "4:16: 'bridge' is a network mode: use 'network: bridge' instead"),
        ("    networks: [a, a]\n", "4:19: network 'a' is listed twice"),
        ("    networks: {a: {ipv4_address: '::1'}}\n", "4:34: invalid IPv4 address '::1'"),
        ("    networks: {a: {mac: x}}\n", "4:20: unknown key 'mac' in network a"),
        ("    networks: {a: {aliases: ['-x']}}\n", "4:30: invalid hostname '-x'"),
        ("    dns: [nameserver]\n", "4:11: invalid DNS server address 'nameserver'"),
        ("    dns_search: [-bad]\n", "4:18: invalid hostname '-bad'"),
        ("    extra_hosts: [nohost]\n", "4:19: extra_hosts entry 'nohost' must be HOST:ADDRESS"),
        ("    extra_hosts: {db: 1.2.3}\n", "4:23: invalid IP address '1.2.3'"),
        ("    network: none\n    networks: [a]\n",
         "5:5: 'networks' joins bridge networks, but 'network' is 'none'"),
    ],
)  # fmt: skip
def test_container_network_key_errors_are_located(
    tmp_path: Path, snippet: str, expected: str
) -> None:
    result = load(tmp_path, f"containers:\n  c:\n    rootfs: /r\n{snippet}")
    assert errors(result, tmp_path) == [expected]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("  n: {subnet: 10.0.0.0/31}\n", "2:15: subnet '10.0.0.0/31' must be /8 to /30"),
        ("  n: {subnet: 10.0.0.0/24, gateway: 10.0.1.1}\n",
         "2:37: gateway 10.0.1.1 is not a host address of subnet 10.0.0.0/24"),
        ("  n: {gateway: 10.0.1.1}\n", "2:7: 'gateway' needs 'subnet'"),
        ("  n: {ipv6: true}\n", "2:13: IPv6 networks are not supported yet"),
        ("  n: {external: true, subnet: 10.0.0.0/24}\n", "2:23: an external network has no"),
        ("  n: {driver: bridge}\n", "2:7: unknown key 'driver' in network n"),
        ("  host: {}\n", "2:3: 'host' is a network mode, not a network name"),
    ],
)  # fmt: skip
def test_declaration_errors_are_located(tmp_path: Path, snippet: str, expected: str) -> None:
    result = load(tmp_path, f"networks:\n{snippet}containers:\n  c:\n    rootfs: /r\n")
    assert len(result.errors) == 1
    assert errors(result, tmp_path)[0].startswith(expected)


def test_compose_networks_aliases_addresses_and_external(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        "services:\n"
        "  web:\n    image: nginx\n    network_mode: bridge\n"
        "  api:\n    image: api\n"
        "    networks:\n      default:\n      back: {aliases: [backend], ipv4_address: 10.92.0.5}\n"
        "      ext:\n"
        "    dns: 10.0.0.53\n    dns_search: [a.example]\n    extra_hosts: {db: 10.0.0.9}\n"
        "networks:\n"
        "  back:\n    name: app_back\n    driver: bridge\n    internal: true\n"
        "    ipam: {config: [{subnet: 10.92.0.0/24, gateway: 10.92.0.1}]}\n"
        "  ext: {external: true}\n",
    )
    assert result.errors == []
    project = "defs"  # defs.yaml is not a Compose file name: the project is the file's name
    assert result.containers[f"{project}-web"].network == "bridge"  # network_mode: bridge
    api = result.containers[f"{project}-api"]
    # the project's default network, and the service's name an alias on every network
    assert api.networks == (
        NetworkAttachment(f"{project}_default", ("api",)),
        NetworkAttachment("app_back", ("backend", "api"), "10.92.0.5"),
        NetworkAttachment("ext", ("api",)),
    )
    assert api.network_specs == (
        NetworkSpec(f"{project}_default"),
        NetworkSpec("app_back", "10.92.0.0/24", "10.92.0.1", internal=True),
    )
    assert api.extra_hosts == (("db", "10.0.0.9"),)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("  n:\n    driver_opts: {mtu: '1400'}\n",
         "6:5: Compose key 'networks.n.driver_opts' is not supported"),
        ("  n:\n    ipam: {config: [{subnet: 10.0.0.0/24, ip_range: 10.0.0.0/25}]}\n",
         "6:43: ipam ip_range is not supported"),
        ("  n:\n    enable_ipv6: true\n", "6:18: IPv6 networks are not supported yet (IPv4 only)"),
        ("  n:\n    external: {name: other}\n", None),
    ],
)  # fmt: skip
def test_compose_network_declarations(tmp_path: Path, snippet: str, expected: str | None) -> None:
    result = load(tmp_path, f"services:\n  s:\n    image: x\nnetworks:\n{snippet}")
    assert errors(result, tmp_path)[:1] == ([expected] if expected else [])


def test_the_web_example_of_the_readme_and_the_demo_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "web.yaml"
    result = load_paths([example])
    assert result.errors == []
    web = result.containers["web"]
    assert web.network is None and [(p.host_port, p.container_port) for p in web.ports] == [
        (8080, 80)
    ]


def test_a_compose_projects_networks_are_named_project_key(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        "name: shop\nservices:\n  web:\n    image: x\n    networks: [back, front, ext]\n"
        "networks:\n  back:\n  front: {internal: true}\n  ext: {external: true}\n",
        "compose.yaml",
    )
    assert result.errors == []
    web = result.containers["shop-web"]
    assert [a.name for a in web.networks] == ["shop_back", "shop_front", "ext"]
    assert web.network_specs == (NetworkSpec("shop_back"), NetworkSpec("shop_front", internal=True))

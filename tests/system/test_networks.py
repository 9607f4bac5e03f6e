"""Bridge networks end to end under systemd (podunit.yaml(5) NETWORKS; issue 11).

Everything runs in ONE sandbox with its own network namespace (`--private-network`):
bridges, veths, DNAT rules and aardvark-dns exist only in there, and test traffic
goes only to the sandbox's loopback, the sandbox's own address (192.0.2.10, on its
lo) and the containers' namespaces. Nothing here touches the
machine's network namespace.

Payloads are busybox (httpd, wget, nslookup) from the busybox rootfs. After every
test `assert_nothing_left` checks the four things a container's network leaves
behind: a veth, a NETAVARK DNAT rule, an aardvark-dns entry, an address lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs, hosttools_rootfs
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

ROOTFS = "/var/lib/podunit-net/busybox"
TOOLS = "/var/lib/podunit-net/tools"
WWW = "/var/lib/podunit-net/www"
SANDBOX_ADDRESS = "192.0.2.10"  # the sandbox's own address (on its lo: no dummy module here)
PODUNIT = ""  # set by the fixture: the checkout's .venv/bin/podunit
# A web server that stops at once on SIGTERM (busybox httpd as PID 1 would ignore it).
HTTPD = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"]
IDLE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]
SERVE_FD3 = (
    "import os, socket, signal, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "s = socket.socket(fileno=3)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(open('/proc/net/fib_trie').read().encode()[:4000]);"
    " c.close()\n"
)


UDP_ECHO = (
    "import signal, socket, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53))\n"
    "while True:\n"
    "    data, peer = s.recvfrom(512); s.sendto(b'echo:' + data, peer)\n"
)
UDP_CLIENT = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)\n"
    "for _ in range(20):\n"
    "    s.sendto(b'ping', ('127.0.0.1', int(sys.argv[1])))\n"
    "    try:\n"
    "        print(s.recvfrom(512)[0].decode()); break\n"
    "    except TimeoutError:\n"
    "        time.sleep(0.1)\n"
)


def container(command: list[str], **keys: object) -> dict[str, object]:
    return {"rootfs": ROOTFS, "command": command, "stop_timeout": "3s", **keys}


@pytest.fixture(scope="module")
def sb(repo_root: Path) -> Iterator[Sandbox]:
    global PODUNIT
    PODUNIT = f"{repo_root}/.venv/bin/podunit"
    with Sandbox.booted(private_network=True) as sandbox:
        busybox_rootfs(sandbox, ROOTFS)
        sandbox.sh(
            f"mkdir -p {WWW} && echo hello-from-web > {WWW}/index.html"
            f" && ip addr add {SANDBOX_ADDRESS}/32 dev lo"
        )
        sandbox.run([f"{repo_root}/scripts/install-generator"])
        yield sandbox


def define(sb: Sandbox, name: str, document: dict[str, object]) -> None:
    sb.write(f"/etc/podunit/{name}.yaml", json.dumps(document))
    sb.run(["systemctl", "daemon-reload"])


def sh(sb: Sandbox, script: str, check: bool = True) -> str:
    result = sb.sh(script, check=check)
    return result.stdout.decode()


def podunit(sb: Sandbox, *argv: str, check: bool = True) -> str:
    return sb.run([PODUNIT, *argv], check=check).stdout.decode()


def fetch(sb: Sandbox, address: str, timeout: float = 10) -> str:
    """GET http://ADDRESS/ from the sandbox, retried while the server is still starting (the
    unit is active once the container's process runs, before httpd listens)."""
    deadline = time.monotonic() + timeout
    while True:
        # a connection made before the DNAT rule exists waits on the reserved port: time out
        result = sb.sh(f"timeout 3 busybox wget -qO- http://{address}/", check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result.stdout.decode()
        time.sleep(0.1)


def leftovers(sb: Sandbox) -> dict[str, object]:
    """What a container's network can leave behind, in the sandbox's namespace."""
    links = sh(sb, "ip -br link").split("\n")
    aardvark = sh(sb, "cat /run/podunit/networks/aardvark-dns/* 2>/dev/null", check=False)
    leases = [
        c for n in json.loads(podunit(sb, "network", "ls", "--format", "json"))
        for c in n["containers"]
    ]  # fmt: skip
    return {
        "veths": [line.split()[0] for line in links if line.startswith("veth")],
        "dnat": sh(sb, "iptables-save -t nat | grep -- '-j DNAT' || true").splitlines(),
        "aardvark": [line for line in aardvark.splitlines() if len(line.split(" ")[0]) == 64],
        "leases": leases,
        "netns": sh(sb, "ls /run/podunit/netns 2>/dev/null || true").split(),
    }


NOTHING: dict[str, list[str]] = {"veths": [], "dnat": [], "aardvark": [], "leases": [], "netns": []}


def assert_nothing_left(sb: Sandbox) -> None:
    assert leftovers(sb) == NOTHING


def stop(sb: Sandbox, *units: str) -> None:
    sb.run(["systemctl", "stop", *units], timeout=120)
    sb.run(["systemctl", "reset-failed", *units], check=False)


def address_of(sb: Sandbox, name: str, network: str = "podunit") -> str:
    networks = json.loads(podunit(sb, "inspect", name))[0]["Networks"]
    return str(networks[network]["IPAddress"])


def test_published_ports_names_and_etc_files_compose(sb: Sandbox) -> None:
    """The README's example: a web server answering on its published port (all addresses
    and 127.0.0.1), reached by a second container by service name and alias. Project
    `app` (app.yaml): units app-web and app-client, on the project's network app_default."""
    define(sb, "app", {
        "services": {
            "web": {
                "command": HTTPD, "stop_grace_period": "3s",
                "ports": ["8080:80", "127.0.0.1:8081:80"],
                "volumes": [f"{WWW}:/www:ro"],
                "networks": {"default": {"aliases": ["www"]}},
                "x-podunit": {"rootfs": ROOTFS},
            },
            "client": {
                "command": IDLE, "stop_grace_period": "3s", "hostname": "cli",
                "extra_hosts": ["db.example:192.0.2.99"], "dns_search": ["example.org"],
                "x-podunit": {"rootfs": ROOTFS},
            },
        }
    })  # fmt: skip
    try:
        sb.run(["systemctl", "start", "app-project.target"])  # the whole project
        # (is-active with several units succeeds when one is: ask for each)
        sh(sb, "for i in $(seq 300); do systemctl is-active -q app-web &&"
           " systemctl is-active -q app-client && exit; sleep 0.1; done; exit 1")  # fmt: skip
        for address in ("127.0.0.1:8080", "127.0.0.1:8081", f"{SANDBOX_ADDRESS}:8080"):
            assert fetch(sb, address) == "hello-from-web\n"
        refused = sb.sh(f"timeout 3 busybox wget -qO- http://{SANDBOX_ADDRESS}:8081/", check=False)
        assert refused.returncode != 0  # 8081 is published on 127.0.0.1 only
        for name in ("web", "www"):
            answer = podunit(sb, "exec", "app-client", "--", "wget", "-qO-", f"http://{name}/")
            assert answer == "hello-from-web\n"
        web = address_of(sb, "app-web", "app_default")
        hosts = podunit(sb, "exec", "app-client", "--", "cat", "/etc/hosts")
        client = address_of(sb, "app-client", "app_default")
        assert f"{client}\tcli app-client" in hosts and "192.0.2.99\tdb.example" in hosts
        resolv = podunit(sb, "exec", "app-client", "--", "cat", "/etc/resolv.conf")
        assert resolv == "search example.org dns.podman\nnameserver 10.90.0.1\n"
        assert podunit(sb, "exec", "app-client", "--", "hostname") == "cli\n"
        assert web.startswith("10.90.0.") and web != client
        shown = json.loads(podunit(sb, "network", "inspect", "app_default"))[0]
        assert shown["subnet"] == "10.90.0.0/24"
        assert {c["name"] for c in shown["containers"]} == {"app-web", "app-client"}
    finally:
        stop(sb, "app-project.target")
        sb.run(["rm", "-f", "/etc/podunit/app.yaml"])
    assert_nothing_left(sb)
    podunit(sb, "network", "rm", "app_default")  # the project's network, made on first use


def test_two_networks_are_isolated_and_an_internal_one_has_no_way_out(sb: Sandbox) -> None:
    sb.sh(f"cd {WWW} && (busybox httpd -p {SANDBOX_ADDRESS}:9090 -h {WWW})")  # "outside"
    define(sb, "iso", {
        "networks": {"red": {"subnet": "10.91.1.0/24"}, "blue": None,
                     "inner": {"internal": True}},
        "containers": {
            "r1": container(HTTPD, network="red", volumes=[f"{WWW}:/www:ro"]),
            "b1": container(IDLE, network="blue"),
            "both": container(IDLE, networks={"red": None, "blue": {"aliases": ["bb"]}}),
            "in1": container(IDLE, network="inner"),
        },
    })  # fmt: skip
    try:
        sb.run(["systemctl", "start", "r1", "b1", "both", "in1"])
        red = address_of(sb, "r1", "red")
        assert red.startswith("10.91.1.")
        blue = address_of(sb, "b1", "blue")
        assert blue.startswith("10.90.")  # chosen from 10.90.0.0/15
        # on both networks: reaches r1 by name and address
        assert podunit(sb, "exec", "both", "--", "timeout", "3", "wget", "-qO-", "http://r1/")
        # from blue: no name, no route through the host to red
        assert sb.run([PODUNIT, "exec", "b1", "--", "nslookup", "r1"], check=False).returncode
        blocked = sb.run([PODUNIT, "exec", "b1", "--", "timeout", "2", "wget", "-qO-",
                          f"http://{red}/"], check=False)  # fmt: skip
        assert blocked.returncode != 0
        # outside: a bridge network gets out (NAT), the internal one does not
        outside = f"http://{SANDBOX_ADDRESS}:9090/"
        assert podunit(sb, "exec", "b1", "--", "timeout", "3", "wget", "-qO-", outside)
        cut = sb.run([PODUNIT, "exec", "in1", "--", "timeout", "2", "wget", "-qO-", outside],
                     check=False)  # fmt: skip
        assert cut.returncode != 0
        names = [n["name"] for n in json.loads(podunit(sb, "network", "ls", "--format", "json"))]
        assert {"red", "blue", "inner"} <= set(names)
    finally:
        stop(sb, "r1", "b1", "both", "in1")
        sb.run(["rm", "-f", "/etc/podunit/iso.yaml"])
        sb.sh("pkill -f 'httpd -p 192.0.2.10:9090'", check=False)
    assert_nothing_left(sb)
    assert json.loads(podunit(sb, "network", "prune", "--format", "json")) == [
        "blue", "inner", "red"
    ]  # fmt: skip


def test_a_taken_port_fails_the_start_before_anything_is_set_up(sb: Sandbox) -> None:
    sb.sh("(busybox nc -l -p 8090 >/dev/null 2>&1 &) ; sleep 0.2")
    define(sb, "conflict", {"containers": {"taken": container(IDLE, ports=["8090:80"])}})
    try:
        result = sb.run(["systemctl", "start", "taken"], check=False)
        assert result.returncode != 0
        journal = sh(sb, "journalctl -u taken --no-pager -o cat")
        assert "cannot reserve host port 0.0.0.0:8090/tcp: Address already in use" in journal
        assert_nothing_left(sb)
    finally:
        stop(sb, "taken")
        sb.sh("pkill -f 'nc -l -p 8090'", check=False)
        sb.run(["rm", "-f", "/etc/podunit/conflict.yaml"])


def test_fixed_addresses_are_honoured_or_refused_naming_the_holder(sb: Sandbox) -> None:
    define(sb, "fixed", {
        "networks": {"fix": {"subnet": "10.91.5.0/24"}},
        "containers": {
            "f1": container(IDLE, networks={"fix": {"ipv4_address": "10.91.5.50"}}),
            "f2": container(IDLE, networks={"fix": {"ipv4_address": "10.91.5.50"}}),
        },
    })  # fmt: skip
    try:
        sb.run(["systemctl", "start", "f1"])
        assert address_of(sb, "f1", "fix") == "10.91.5.50"
        assert sb.run(["systemctl", "start", "f2"], check=False).returncode != 0
        journal = sh(sb, "journalctl -u f2 --no-pager -o cat")
        assert "address 10.91.5.50 on network fix is taken by container f1" in journal
    finally:
        stop(sb, "f1", "f2")
        sb.run(["rm", "-f", "/etc/podunit/fixed.yaml"])
    assert_nothing_left(sb)
    podunit(sb, "network", "rm", "fix")


def test_twenty_containers_started_at_once_get_twenty_addresses(sb: Sandbox) -> None:
    define(sb, "many", {"containers": {"many@": container(IDLE)}})
    units = [f"many@{i}.service" for i in range(20)]
    try:
        sb.run(["systemctl", "start", *units], timeout=180)
        shown = json.loads(podunit(sb, "network", "inspect", "podunit"))[0]
        addresses = [c["address"] for c in shown["containers"]]
        assert len(addresses) == 20 and len(set(addresses)) == 20
        assert len(leftovers(sb)["veths"]) == 20  # type: ignore[arg-type]
    finally:
        stop(sb, *units)
        sb.run(["rm", "-f", "/etc/podunit/many.yaml"])
    assert_nothing_left(sb)


def test_conmon_killed_then_restarted_and_rm_f(sb: Sandbox) -> None:
    define(sb, "victim", {"containers": {"victim": container(
        HTTPD, ports=["8095:80"], volumes=[f"{WWW}:/www:ro"]
    )}})  # fmt: skip
    try:
        sb.run(["systemctl", "start", "victim"])
        assert fetch(sb, "127.0.0.1:8095") == "hello-from-web\n"
        conmon = sh(sb, "systemctl show -P MainPID victim").strip()
        sb.run(["kill", "-KILL", conmon])
        deadline = time.monotonic() + 30
        while sh(sb, "systemctl is-active victim", check=False).strip() not in (
            "failed", "inactive"
        ):  # fmt: skip
            assert time.monotonic() < deadline, "the unit did not notice conmon's death"
            time.sleep(0.2)
        assert_nothing_left(sb)  # ExecStopPost: rm -f released the network
        sb.run(["systemctl", "reset-failed", "victim"], check=False)
        sb.run(["systemctl", "start", "victim"])
        assert fetch(sb, "127.0.0.1:8095") == "hello-from-web\n"
    finally:
        stop(sb, "victim")
        sb.run(["rm", "-f", "/etc/podunit/victim.yaml"])
    assert_nothing_left(sb)
    # an ad-hoc container: stopped (released), started again (connected again), and
    # removed with rm -f while it runs
    podunit(sb, "run", "-d", "--name", "adhoc", "--rootfs", ROOTFS, "-p", "8096:80",
            "-v", f"{WWW}:/www:ro", "--runtime", "runc", "--cgroups", "enabled", "--",
            *HTTPD)  # fmt: skip
    assert fetch(sb, "127.0.0.1:8096") == "hello-from-web\n"
    podunit(sb, "stop", "adhoc")
    assert_nothing_left(sb)
    podunit(sb, "start", "adhoc")
    assert fetch(sb, "127.0.0.1:8096") == "hello-from-web\n"
    assert len(leftovers(sb)["veths"]) == 1  # type: ignore[arg-type]
    podunit(sb, "rm", "-f", "adhoc")
    assert_nothing_left(sb)
    # reconcile: an ad-hoc container's conmon and payload SIGKILLed (no unit, no ExecStopPost,
    # no exit file): the next podunit command that looks (`ps`) finds it gone and tears down
    podunit(sb, "run", "-d", "--name", "crashed", "--rootfs", ROOTFS, "-p", "8097:80",
            "-v", f"{WWW}:/www:ro", "--runtime", "runc", "--cgroups", "enabled", "--",
            *HTTPD)  # fmt: skip
    assert fetch(sb, "127.0.0.1:8097") == "hello-from-web\n"
    inspected = json.loads(podunit(sb, "inspect", "crashed"))[0]
    sb.run(["kill", "-KILL", *(str(inspected["State"][key]) for key in ("ConmonPid", "Pid"))])
    assert len(leftovers(sb)["veths"]) == 1  # type: ignore[arg-type]  # nobody looked yet
    assert "exited" in podunit(sb, "ps", "-a")
    assert_nothing_left(sb)
    podunit(sb, "rm", "crashed")


def test_socket_activation_and_a_udp_port_range_on_a_bridge_network(sb: Sandbox) -> None:
    volumes = hosttools_rootfs(sb, TOOLS)
    sb.write("/var/lib/podunit-net/serve.py", SERVE_FD3)
    sb.write("/var/lib/podunit-net/udp.py", UDP_ECHO)
    sb.write("/var/lib/podunit-net/client.py", UDP_CLIENT)
    define(sb, "act", {"containers": {"act": {
        "rootfs": TOOLS, "command": ["python3", "/app/serve.py"], "stop_timeout": "3s",
        "volumes": [*volumes, "/var/lib/podunit-net:/app:ro"],
        "sockets": [{"listen": "127.0.0.1:8097"}],
    }, "udp": {
        "rootfs": TOOLS, "command": ["python3", "/app/udp.py"], "stop_timeout": "3s",
        "volumes": [*volumes, "/var/lib/podunit-net:/app:ro"],
        "ports": ["5353-5354:53-54/udp"],
    }}})  # fmt: skip
    try:
        sb.run(["systemctl", "start", "udp"])
        answer = sh(sb, "python3 /var/lib/podunit-net/client.py 5353")
        assert answer == "echo:ping\n"
        rules = sh(sb, "iptables-save -t nat | grep -- '-j DNAT'")
        assert "--dport 5354 -j DNAT --to-destination" in rules and ":54" in rules
        sb.run(["systemctl", "start", "act.socket"])
        answer = sh(sb, "busybox nc 127.0.0.1 8097 </dev/null")
        assert "10.90.0." in answer  # served from inside: its namespace has the bridge address
        assert sh(sb, "systemctl is-active act.service").strip() == "active"
    finally:
        stop(sb, "act.socket", "act.service", "udp")
        sb.run(["rm", "-f", "/etc/podunit/act.yaml"])
    assert_nothing_left(sb)

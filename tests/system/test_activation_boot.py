"""Boot-time socket activation (spec §3.3): a fresh sandbox boots with a definition and
the generator already in place; at `running` the sockets listen and no container has
run; the first connection starts it.

This boots its own sandbox (about a second) with a private network, so the port
cannot collide with anything on the host.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.sandbox import Sandbox
from toolkit import proc

pytestmark = pytest.mark.system

SERVER = r"""
import json, os, socket
names = os.environ["LISTEN_FDNAMES"]
socks = [socket.socket(fileno=fd) for fd in range(3, 3 + int(os.environ["LISTEN_FDS"]))]
conn, _ = socks[0].accept()
conn.sendall(json.dumps({"names": names, "pid": os.getpid()}).encode())
conn.close()
socks[0].accept()[0].close()  # keep serving one more client, then exit 0
"""

DEFINITION = {
    "containers": {
        "boot-echo": {
            "rootfs": "/var/tmp/podunit-boot/tools",
            "runtime": "runc",
            "volumes": ["/usr:/usr:ro", "/var/tmp/podunit-boot/app:/app:ro"],
            "command": ["python3", "/app/server.py"],
            "network": "none",
            "sockets": [
                {"listen": "127.0.0.1:8787", "name": "echo"},
                {"listen": "/run/boot-echo.sock", "name": "echo"},
            ],
        }
    }
}


def place_files(repo_root: Path, root: Path) -> None:
    """Before boot: a host-tools rootfs, the server, the definition, the generator."""
    tools = root / "var/tmp/podunit-boot/tools"
    for directory in ("usr", "etc", "tmp", "proc", "sys", "dev", "run"):
        (tools / directory).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        os.symlink(f"usr/{link}", tools / link)
    app = root / "var/tmp/podunit-boot/app"
    app.mkdir(parents=True)
    (app / "server.py").write_text(SERVER)
    (root / "etc/podunit").mkdir(parents=True, exist_ok=True)
    (root / "etc/podunit/boot.yaml").write_text(json.dumps(DEFINITION))
    proc.run([f"{repo_root}/scripts/install-generator", "--root", str(root)])


def test_sockets_listen_at_boot_and_the_first_connection_starts_the_container(
    repo_root: Path,
) -> None:
    with Sandbox.booted(
        setup=lambda root: place_files(repo_root, root), private_network=True
    ) as sandbox:
        listening = sandbox.run(["systemctl", "list-sockets", "--no-legend", "--full"])
        ours = [line.split()[0] for line in listening.stdout.decode().splitlines()
                if "boot-echo.socket" in line]  # fmt: skip
        assert sorted(ours) == ["/run/boot-echo.sock", "127.0.0.1:8787"]
        state = sandbox.run(["systemctl", "is-active", "boot-echo.service"], check=False)
        assert state.stdout.decode().strip() == "inactive"
        assert sandbox.run(["pgrep", "-x", "conmon"], check=False).returncode == 1
        client = (
            "import socket,sys; s=socket.create_connection(('127.0.0.1', 8787), timeout=30);"
            " s.settimeout(30); sys.stdout.buffer.write(s.recv(4096))"
        )
        answer = json.loads(sandbox.run(["python3", "-c", client]).stdout)
        assert answer == {"names": "echo:echo", "pid": 1}
        state = sandbox.run(["systemctl", "is-active", "boot-echo.service"], check=False)
        assert state.stdout.decode().strip() == "active"

"""Volumes, secrets and configs under a real systemd (podunit.yaml(5) VOLUMES, SECRETS
AND CONFIGS; podunit-runtime.md "Volumes").

One definition file in the shared sandbox, one unit that uses a named volume, a
volume seeded from the root file system (copy-up), an anonymous volume, a secret
and a config; the checks go through `systemctl` and `podunit exec`/`volume`.
Everything is stopped and removed again at the end of the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import Sandbox
from toolkit.errors import CommandFailed

pytestmark = pytest.mark.system

BASE = "/var/tmp/podunit-volumes"
BUSYBOX = f"{BASE}/busybox"
DEFINITION = "/etc/podunit/voltest.yaml"
UNIT = "voltest.service"
IDLE = ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 0.1; done"]

DEFINITIONS = {
    "containers": {
        "voltest": {
            "rootfs": BUSYBOX,
            "runtime": "runc",
            "network": "none",
            "command": IDLE,
            "install": {},
            "volumes": ["vtdata:/data", "vtseeded:/seed", "/scratch"],
            "secrets": [{"source": "pw", "uid": "1000", "gid": "1000", "mode": 0o440}, "token"],
            # an `environment:` secret's value comes from the unit's environment at start
            "service": {"EnvironmentFile": f"{BASE}/token.env"},
            "configs": [{"source": "site", "target": "/etc/site.conf"}],
        },
    },
    "volumes": {"vtdata": {"labels": {"test": "volumes"}}, "vtseeded": {}},
    "secrets": {"pw": {"file": f"{BASE}/pw.txt"}, "token": {"environment": "VT_TOKEN"}},
    "configs": {"site": {"content": "listen = 80\n"}},
}


class Units:
    def __init__(self, sandbox: Sandbox, repo_root: Path) -> None:
        self.sandbox = sandbox
        self.podunit_bin = f"{repo_root}/bin/podunit"

    def ctl(self, *args: str, check: bool = True) -> str:
        return self.sandbox.run(["systemctl", *args], check=check, timeout=60).stdout.decode()

    def podunit(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        result = self.sandbox.run([self.podunit_bin, *args], check=check, env=env)
        return result.stdout.decode()

    def exec(self, *command: str) -> str:
        return self.podunit("exec", "voltest", "--", *command)

    def volumes(self) -> dict[str, dict[str, object]]:
        return {v["Name"]: v for v in json.loads(self.podunit("volume", "ls", "--format", "json"))}


@pytest.fixture(scope="module")
def units(sandbox: Sandbox, repo_root: Path) -> Iterator[Units]:
    busybox_rootfs(sandbox, BUSYBOX)
    # what the image holds at /seed: copied into the new volume with its owner and mode
    sandbox.sh(
        f"mkdir -p {BUSYBOX}/seed && echo from-the-rootfs > {BUSYBOX}/seed/hello.txt"
        f" && chown -R 1000:1000 {BUSYBOX}/seed && chmod 750 {BUSYBOX}/seed"
    )
    sandbox.write(f"{BASE}/pw.txt", "hunter2\n", mode=0o600)
    sandbox.write(f"{BASE}/token.env", "VT_TOKEN=t0ken-from-env\n", mode=0o600)
    sandbox.write(DEFINITION, json.dumps(DEFINITIONS))  # JSON is YAML
    sandbox.run([f"{repo_root}/scripts/install-generator"])
    sandbox.run(["systemctl", "daemon-reload"])
    manager = Units(sandbox, repo_root)
    try:
        yield manager
    finally:
        manager.ctl("stop", UNIT, check=False)
        manager.ctl("reset-failed", UNIT, check=False)
        manager.podunit("rm", "-f", "-v", "voltest", check=False)
        manager.podunit("volume", "rm", "-f", "vtdata", "vtseeded", "vtother", check=False)
        sandbox.run(["rm", "-rf", DEFINITION, BASE], check=False)
        sandbox.run([f"{repo_root}/scripts/install-generator", "--uninstall"], check=False)
        sandbox.run(["systemctl", "daemon-reload"], check=False)


def test_volumes_secrets_and_configs_of_a_unit(units: Units) -> None:
    units.ctl("start", UNIT)
    # copy-up: the new, empty volume got the root file system's /seed, owner and mode too
    assert units.exec("cat", "/seed/hello.txt") == "from-the-rootfs\n"
    assert units.exec("stat", "-c", "%u:%g %a", "/seed") == "1000:1000 750\n"
    # the secret: readable at /run/secrets/pw with its owner and mode, not writable
    assert units.exec("cat", "/run/secrets/pw") == "hunter2\n"
    assert units.exec("stat", "-c", "%u:%g %a", "/run/secrets/pw") == "1000:1000 440\n"
    with pytest.raises(CommandFailed, match="Read-only file system"):
        units.exec("sh", "-c", "echo x > /run/secrets/pw")
    assert units.exec("cat", "/etc/site.conf") == "listen = 80\n"
    assert units.exec("cat", "/run/secrets/token") == "t0ken-from-env"
    # neither the unit nor its plan file holds a secret's value
    generated = units.sandbox.sh(
        "cat /run/systemd/generator/voltest.service /run/systemd/generator/podunit/voltest.json"
    ).stdout
    assert b"ExecStart=" in generated and b"t0ken" not in generated and b"hunter2" not in generated
    # the unit waits for the file system of the secret's file (RequiresMountsFor=)
    required = units.ctl("show", UNIT, "-p", "RequiresMountsFor")
    assert required == f"RequiresMountsFor={BASE}/pw.txt\n"
    # data written into the volumes survives a restart (a new container of the same name)
    units.exec("sh", "-c", "echo one > /data/log; echo two > /scratch/note; rm /seed/hello.txt")
    anonymous = [name for name, v in units.volumes().items() if v["Anonymous"]]
    assert len(anonymous) == 1
    units.ctl("restart", UNIT)
    assert units.exec("cat", "/data/log") == "one\n"
    assert units.exec("cat", "/scratch/note") == "two\n"  # the same anonymous volume
    assert units.exec("ls", "-A", "/seed") == ""  # not copied again
    listing = units.volumes()
    assert listing["vtdata"]["UsedBy"] == ["voltest"]
    (described,) = json.loads(units.podunit("inspect", "--format", "json", "voltest"))
    assert described["Volumes"] == ["vtdata", "vtseeded", anonymous[0]]
    assert listing["vtdata"]["Labels"] == {"test": "volumes"}
    (inspected,) = json.loads(units.podunit("volume", "inspect", "vtdata"))
    assert inspected == listing["vtdata"]
    assert inspected["Mountpoint"] == "/var/lib/podunit/volumes/vtdata/_data"
    assert units.sandbox.read("/var/lib/podunit/volumes/vtdata/_data/log") == b"one\n"
    # in use: refused, with the container named
    refused = units.sandbox.run([units.podunit_bin, "volume", "rm", "vtdata"], check=False)
    assert refused.returncode == 125
    assert refused.stderr.decode().splitlines() == [
        "podunit: volume vtdata is in use by container voltest",
        "hint: remove the container first: podunit rm voltest",
    ]
    # stopped (the unit's ExecStopPost removed the container): kept, unused, removable
    units.ctl("stop", UNIT)
    listing = units.volumes()
    assert listing["vtdata"]["UsedBy"] == [] and anonymous[0] in listing
    assert units.podunit("volume", "rm", "vtdata") == "vtdata\n"
    assert units.sandbox.run(["test", "-e", "/var/lib/podunit/volumes/vtdata"], check=False
                             ).returncode == 1  # fmt: skip
    # outside a unit: an exited container started again gets its secrets again (the bundle
    # is per run) and the same anonymous volume; `rm -v` removes that (a plain rm keeps it)
    shell = {"VT_TOKEN": "from-the-shell"}  # outside a unit: podunit's own environment
    units.podunit("create", "voltest", env=shell)
    units.podunit("start", "voltest", env=shell)
    units.podunit("stop", "-t", "5", "voltest")
    units.podunit("start", "voltest", env=shell)
    assert units.exec("cat", "/run/secrets/token") == "from-the-shell"
    assert units.exec("cat", "/run/secrets/pw", "/scratch/note") == "hunter2\ntwo\n"
    units.podunit("rm", "-f", "-v", "voltest")
    assert anonymous[0] not in units.volumes()


def test_external_volume_must_exist(units: Units, sandbox: Sandbox) -> None:
    definition = {
        "containers": {
            "vtext": {"rootfs": BUSYBOX, "runtime": "runc", "network": "none",
                      "command": ["true"], "volumes": ["vtother:/o", "/anon"]},
        },
        "volumes": {"vtother": {"external": True}},
    }  # fmt: skip
    sandbox.write(f"{BASE}/defs/vtext.yaml", json.dumps(definition))
    env = {"PODUNIT_DEFINITION_DIRS": f"{BASE}/defs"}
    failed = sandbox.run([units.podunit_bin, "run", "vtext"], check=False, env=env)
    assert failed.returncode == 125
    assert b"external volume vtother does not exist" in failed.stderr
    assert b"podunit volume create vtother" in failed.stderr
    units.podunit("volume", "create", "vtother")
    ran = sandbox.run([units.podunit_bin, "run", "--rm", "vtext"], check=False, env=env)
    assert ran.returncode == 0, ran.stderr
    # `run --rm` removed the container and its anonymous volume, not the named one
    owners = [v["Owner"] for v in units.volumes().values()]
    assert "vtext" not in owners and "vtother" in units.volumes()
    units.podunit("volume", "rm", "vtother")

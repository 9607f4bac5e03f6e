"""Images under a real systemd: pull units, pull policy, builds, image commands, auto-update
(podunit.yaml(5) IMAGES; docs/podunit-exec-logs-images.md).

All offline: Debian's docker-registry listens on 127.0.0.1 inside the shared
sandbox (a transient unit), with images the module builds itself (busybox-static
in an OCI layout made by umoci, pushed with skopeo); a throttling proxy on
loopback plays a slow registry. One definition file and one registry for the
whole module; everything is stopped and removed at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sandbox import Sandbox
from toolkit.errors import CommandFailed

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("docker-registry", "buildah", "skopeo", "umoci")),
        reason="needs docker-registry, buildah, skopeo and umoci (scripts/bootstrap installs them)",
    ),
]

BASE = "/var/tmp/podunit-image-units"
REGISTRY = "127.0.0.1:5917"
SLOW = "127.0.0.1:5918"  # the throttling proxy in front of REGISTRY
DEFINITION = "/etc/podunit/imgtest.yaml"
COMPOSE = "/etc/podunit/imgbuild/compose.yaml"
REGISTRY_CONF = "/etc/containers/registries.conf.d/podunit-image-units.conf"
IDLE = "echo started $VERSION; trap 'exit 0' TERM; while :; do sleep 0.1; done"
PULL_APP = r"podunit-pull-127.0.0.1\x3a5917-app\x3av1.service"
PULL_AUTO = r"podunit-pull-127.0.0.1\x3a5917-app\x3aauto.service"
PULL_HEALTH = r"podunit-pull-127.0.0.1\x3a5917-app\x3ahealth.service"
PULL_SLOW = r"podunit-pull-127.0.0.1\x3a5918-app\x3aslow.service"

REGISTRY_CONFIG = f"""version: 0.1
log: {{level: error}}
storage: {{filesystem: {{rootdirectory: {BASE}/registry}}, delete: {{enabled: true}}}}
http: {{addr: {REGISTRY}}}
"""

# A TCP proxy that passes the registry's answers on in 64 KiB pieces, one every 0.25 s.
THROTTLE = r"""
import socket, sys, threading, time
listen, target = sys.argv[1], sys.argv[2]
def pipe(src, dst, slow):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
            if slow:
                time.sleep(0.25)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
server = socket.create_server((listen.split(":")[0], int(listen.split(":")[1])))
while True:
    client, _ = server.accept()
    upstream = socket.create_connection((target.split(":")[0], int(target.split(":")[1])))
    threading.Thread(target=pipe, args=(client, upstream, False), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client, True), daemon=True).start()
"""

DEFINITIONS = {
    "containers": {
        "imgapp": {
            "image": f"{REGISTRY}/app:v1", "runtime": "runc", "network": "none", "install": {},
        },
        "imgslow": {
            "image": f"{SLOW}/app:slow", "runtime": "runc", "network": "none", "install": {},
        },
        "imgauto": {
            "image": f"{REGISTRY}/app:auto", "auto_update": "registry", "runtime": "runc",
            "network": "none", "install": {},
        },
        "imghealth": {
            "image": f"{REGISTRY}/app:health", "auto_update": "registry", "runtime": "runc",
            "network": "none", "install": {},
            "healthcheck": {"test": ["CMD-SHELL", 'test "$VERSION" != health-bad'],
                            "interval": "1h"},
        },
        "imgnever": {
            "image": f"{REGISTRY}/app:absent", "pull": "never", "runtime": "runc",
            "network": "none", "install": {},
        },
    },
}  # fmt: skip

COMPOSE_FILE = {
    "name": "img",  # service `built` of project `img`: container and unit img-built
    "services": {
        "built": {
            "build": {"context": "ctx", "args": {"VERSION": "built-1"}},
            "image": "localhost/imgbuilt:test",
            "labels": {"io.containers.autoupdate": "local"},
            "network_mode": "none",
            "x-podunit": {"runtime": "runc", "install": {}},
        },
        "broken": {  # its Dockerfile copies a file the context does not have
            "build": {"context": "ctx", "dockerfile": "Dockerfile.broken"},
            "network_mode": "none",
            "x-podunit": {"runtime": "runc", "install": {}},
        },
    },
}
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY . /ctx/
ARG VERSION
ENV VERSION=$VERSION
ENTRYPOINT ["/bin/busybox", "sh", "-c"]
CMD ["echo started $VERSION; trap 'exit 0' TERM; while :; do /bin/busybox sleep 0.2; done"]
"""


class Images:
    def __init__(self, sandbox: Sandbox, repo_root: Path) -> None:
        self.sandbox = sandbox
        self.podunit_bin = f"{repo_root}/bin/podunit"

    def ctl(self, *args: str, check: bool = True) -> str:
        return self.sandbox.run(["systemctl", *args], check=check, timeout=90).stdout.decode()

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        text = self.ctl("show", unit, *(f"--property={p}" for p in properties))
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def podunit(self, *args: str, check: bool = True) -> str:
        return self.sandbox.run([self.podunit_bin, *args], check=check, timeout=90).stdout.decode()

    def images(self) -> dict[str, dict[str, object]]:
        listed = json.loads(self.podunit("images", "--format", "json"))
        return {str(image["Reference"]): image for image in listed}

    def journal(self, unit: str) -> str:
        return self.sandbox.run(
            ["journalctl", "-u", unit, "--no-pager", "-o", "cat"], check=False
        ).stdout.decode()

    def push(self, tag: str, version: str, *, exits: bool = False) -> None:
        """`app:TAG`, whose payload prints `started VERSION` and idles (or exits 3 at once)."""
        script = "exit 3" if exits else IDLE.replace("$", "\\$")  # inside "..." below
        layout = f"{BASE}/layout"
        self.sandbox.sh(
            f"""
set -e
umoci config --image {layout}:base --tag {version} --config.entrypoint /bin/sh \\
    --config.cmd -c --config.cmd "{script}" --config.env VERSION={version}
skopeo copy -q --dest-tls-verify=false oci:{layout}:{version} docker://{REGISTRY}/app:{tag}
"""
        )

    def auto_update(self, *args: str, container: str = "imgauto") -> list[dict[str, object]]:
        result = self.sandbox.run(
            [self.podunit_bin, "auto-update", "--format", "json", *args],
            check=False, timeout=120, env={"PODUNIT_AUTO_UPDATE_GRACE": "1"},
        )  # fmt: skip
        assert result.stdout, result.stderr.decode()
        report = json.loads(result.stdout)
        return [entry for entry in report if entry["Container"] == container]


@pytest.fixture(scope="module")
def images(sandbox: Sandbox, repo_root: Path) -> Iterator[Images]:
    manager = Images(sandbox, repo_root)
    layout, bundle = f"{BASE}/layout", f"{BASE}/bundle"
    sandbox.write(f"{BASE}/registry.yml", REGISTRY_CONFIG)
    sandbox.write(f"{BASE}/throttle.py", THROTTLE)
    sandbox.write(REGISTRY_CONF, "".join(
        f'[[registry]]\nlocation = "{address}"\ninsecure = true\n' for address in (REGISTRY, SLOW)
    ))  # fmt: skip
    sandbox.sh(
        f"""
set -e
systemd-run -q --unit podunit-test-registry /usr/bin/docker-registry serve {BASE}/registry.yml
systemd-run -q --unit podunit-test-throttle python3 {BASE}/throttle.py {SLOW} {REGISTRY}
umoci init --layout {layout}
umoci new --image {layout}:base
umoci unpack --image {layout}:base {bundle}
mkdir -p {bundle}/rootfs/bin && cp /bin/busybox {bundle}/rootfs/bin/
for applet in sh echo sleep cat; do ln -s busybox {bundle}/rootfs/bin/$applet; done
umoci repack --image {layout}:base {bundle}
for i in $(seq 50); do
    python3 -c 'import urllib.request as u; u.urlopen("http://{REGISTRY}/v2/")' 2>/dev/null && break
    sleep 0.1
done
"""
    )
    manager.push("v1", "one")
    manager.push("auto", "auto-one")
    manager.push("health", "health-one")
    # app:slow = app:v1 plus a layer of 768 KiB of noise: about 3 s through the proxy
    sandbox.sh(
        f"""
set -e
umoci unpack --image {layout}:one {BASE}/slow
head -c 786432 /dev/urandom > {BASE}/slow/rootfs/noise
umoci repack --image {layout}:slow {BASE}/slow
skopeo copy -q --dest-tls-verify=false oci:{layout}:slow docker://{REGISTRY}/app:slow
"""
    )
    # the slow pull unit gets a start timeout far below the pull's duration
    dropin = f"/etc/systemd/system/{PULL_SLOW}.d/timeout.conf"
    sandbox.write(dropin, "[Service]\nTimeoutStartSec=2\n")
    sandbox.write(DEFINITION, json.dumps(DEFINITIONS))  # JSON is YAML
    sandbox.write(COMPOSE, json.dumps(COMPOSE_FILE))
    sandbox.write(f"{Path(COMPOSE).parent}/ctx/Dockerfile", DOCKERFILE)
    sandbox.write(f"{Path(COMPOSE).parent}/ctx/Dockerfile.broken", "FROM scratch\nCOPY nothing /\n")
    sandbox.run(["cp", "/bin/busybox", f"{Path(COMPOSE).parent}/ctx/busybox"])
    # buildah leaves out what .dockerignore excludes, and so does the build digest
    sandbox.write(f"{Path(COMPOSE).parent}/ctx/.dockerignore", "# not sent\nignored\n")
    sandbox.write(f"{Path(COMPOSE).parent}/ctx/ignored/file", "one\n")
    sandbox.run([f"{repo_root}/scripts/install-generator"])
    sandbox.run(["systemctl", "daemon-reload"])
    try:
        yield manager
    finally:
        units = [
            "imgapp", "imgslow", "imgnever", "img-built", "imgauto", "imghealth",
            "img-broken", "podunit-build-img-broken",
            PULL_APP, PULL_SLOW, PULL_AUTO, PULL_HEALTH,
            "podunit-build-img-built", "podunit-test-registry", "podunit-test-throttle",
        ]  # fmt: skip
        manager.ctl("stop", *units, check=False)
        manager.ctl("reset-failed", *units, check=False)
        for name in ("imgapp", "imgslow", "imgnever", "img-built", "imgauto", "imghealth"):
            manager.podunit("rm", "-f", name, check=False)
        manager.podunit("image", "prune", "--all", check=False)
        sandbox.run(["rm", "-rf", DEFINITION, str(Path(COMPOSE).parent), BASE, REGISTRY_CONF,
                     f"/etc/systemd/system/{PULL_SLOW}.d"], check=False)  # fmt: skip
        sandbox.run([f"{repo_root}/scripts/install-generator", "--uninstall"], check=False)
        sandbox.run(["systemctl", "daemon-reload"], check=False)


def test_a_container_starts_through_its_pull_unit(images: Images) -> None:
    assert "imgapp" not in json.dumps(images.images())
    images.ctl("start", "imgapp")
    pull = images.show(PULL_APP, "ActiveState", "Result", "StatusText")
    assert (pull["ActiveState"], pull["Result"]) == ("active", "success")
    assert pull["StatusText"].startswith(f"pulled {REGISTRY}/app:v1: 1/1 layers")
    assert "started one" in images.journal("imgapp.service")
    listed = images.images()[f"{REGISTRY}/app:v1"]
    assert listed["Containers"] == ["imgapp"] and listed["Unpacked"] is True
    assert listed["RegistryDigest"] == listed["Digest"]  # an OCI manifest is stored as it is
    # in use: rmi refuses, naming the container
    refused = images.sandbox.run([images.podunit_bin, "rmi", f"{REGISTRY}/app:v1"], check=False)
    assert refused.returncode == 125
    assert refused.stderr.decode().splitlines()[0] == (
        f"podunit: image {REGISTRY}/app:v1 is used by container imgapp"
    )
    inspected = json.loads(images.podunit("image", "inspect", f"{REGISTRY}/app:v1"))[0]
    assert inspected["Config"]["Env"] == ["VERSION=one"] and len(inspected["Layers"]) == 1
    # a restart does not pull again (the pull unit stays active), a stop frees the image
    pulled_at = images.show(PULL_APP, "ExecMainStartTimestamp")
    images.ctl("restart", "imgapp")
    assert images.show(PULL_APP, "ExecMainStartTimestamp") == pulled_at
    images.ctl("stop", "imgapp")
    assert images.images()[f"{REGISTRY}/app:v1"]["Containers"] == []
    # stored now: after a daemon-reload its pull unit no longer waits for the network
    assert "network-online.target" in images.show(PULL_APP, "After")["After"]
    images.ctl("daemon-reload")
    assert "network-online.target" not in images.show(PULL_APP, "After")["After"]
    assert "network-online.target" in images.show(PULL_SLOW, "After")["After"]
    # unused now: prune removes its unpacked root, the image stays (unpacked again at start)
    assert f"{listed['Digest']} (unpacked root)" in images.podunit("image", "prune")
    assert images.images()[f"{REGISTRY}/app:v1"]["Unpacked"] is False


def test_a_slow_pull_extends_the_start_timeout(images: Images) -> None:
    started = time.monotonic()
    images.ctl("start", "imgslow")
    took = time.monotonic() - started
    pull = images.show(PULL_SLOW, "ActiveState", "Result", "TimeoutStartUSec")
    assert pull["TimeoutStartUSec"] == "2s"
    assert (pull["ActiveState"], pull["Result"]) == ("active", "success")
    assert took > 2.5, f"the throttled pull took only {took:.1f} s: not slower than its timeout"
    assert "started one" in images.journal("imgslow.service")
    images.ctl("stop", "imgslow")


def test_pull_never_with_a_missing_image_fails_clearly(images: Images) -> None:
    with pytest.raises(CommandFailed):
        images.ctl("start", "imgnever")
    assert images.show("imgnever.service", "Result")["Result"] == "exit-code"
    assert (
        f"image {REGISTRY}/app:absent is not in podunit's image store and 'pull: never' "
        "forbids pulling it" in images.journal("imgnever.service")
    )
    images.ctl("reset-failed", "imgnever")


def test_a_compose_build_service_builds_then_starts(images: Images) -> None:
    images.ctl("start", "img-built")
    build = images.show("podunit-build-img-built.service", "ActiveState", "Result")
    assert (build["ActiveState"], build["Result"]) == ("active", "success")
    assert "started built-1" in images.journal("img-built.service")
    assert images.images()["localhost/imgbuilt:test"]["Containers"] == ["img-built"]
    images.ctl("stop", "img-built", "podunit-build-img-built")
    # the context did not change: the build unit does not build again
    images.ctl("start", "img-built")
    assert "up to date (context unchanged)" in images.journal("podunit-build-img-built.service")
    # COPY . /ctx/ copied what .dockerignore keeps, and a change to an ignored file is none
    listed = images.podunit("exec", "img-built", "--", "/bin/busybox", "ls", "-a", "/ctx")
    assert sorted(listed.split()) == [
        ".", "..", ".dockerignore", "Dockerfile", "Dockerfile.broken", "busybox",
    ]  # fmt: skip
    images.sandbox.write(f"{Path(COMPOSE).parent}/ctx/ignored/file", "two\n")
    # auto_update local (the label): nothing changed, then the context changes: rebuilt
    assert [e["Updated"] for e in images.auto_update(container="img-built")] == ["false"]
    first = images.images()["localhost/imgbuilt:test"]["Digest"]
    images.sandbox.write(f"{Path(COMPOSE).parent}/ctx/new-file", "changed\n")
    [updated] = images.auto_update(container="img-built")
    assert updated["Updated"] == "true", updated
    assert images.images()["localhost/imgbuilt:test"]["Digest"] == updated["Digest"] != first
    assert images.journal("img-built.service").count("started built-1") == 3
    images.ctl("stop", "img-built")


def test_a_failed_build_is_a_failed_build_unit(images: Images) -> None:
    with pytest.raises(CommandFailed, match="dependency"):
        images.ctl("start", "img-broken")
    build = images.show("podunit-build-img-broken.service", "ActiveState", "Result")
    assert (build["ActiveState"], build["Result"]) == ("failed", "exit-code")
    journal = images.journal("podunit-build-img-broken.service")
    assert "cannot build image localhost/podunit/img-broken:latest" in journal
    assert "nothing" in journal  # buildah's own words about the missing file
    assert images.show("img-broken.service", "ActiveState")["ActiveState"] == "inactive"
    images.ctl("reset-failed", "podunit-build-img-broken")


def test_auto_update_restarts_on_a_new_digest_and_rolls_back_a_failing_one(
    images: Images,
) -> None:
    images.ctl("start", "imgauto")
    assert [entry["Updated"] for entry in images.auto_update("--dry-run")] == ["false"]
    first = images.images()[f"{REGISTRY}/app:auto"]["Digest"]
    images.push("auto", "auto-two")
    assert [entry["Updated"] for entry in images.auto_update("--dry-run")] == ["pending"]
    assert images.images()[f"{REGISTRY}/app:auto"]["Digest"] == first  # a dry run changes nothing
    [updated] = images.auto_update()
    assert updated["Updated"] == "true" and updated["PreviousDigest"] == first
    second = images.images()[f"{REGISTRY}/app:auto"]
    assert second["Digest"] == updated["Digest"] != first
    assert second["Containers"] == ["imgauto"]
    assert "started auto-two" in images.journal("imgauto.service")
    assert not any("(previous)" in reference for reference in images.images())
    # the next image's payload exits at once: the unit fails, the previous image comes back
    images.push("auto", "auto-three", exits=True)
    [rolled] = images.auto_update()
    assert rolled["Updated"] == "rolled back", rolled
    assert "is not active" in str(rolled["Reason"])
    assert rolled["Rollback"] == f"back on {second['Digest']}"
    assert images.show("imgauto.service", "ActiveState")["ActiveState"] == "active"
    assert images.images()[f"{REGISTRY}/app:auto"]["Digest"] == second["Digest"]
    assert images.journal("imgauto.service").count("started auto-two") == 2
    # the shipped units (units/, installed by scripts/install-generator) run the same
    timer = images.show("podunit-auto-update.timer", "Persistent", "RandomizedDelayUSec",
                        "UnitFileState")  # fmt: skip
    assert timer == {"Persistent": "yes", "RandomizedDelayUSec": "15min",
                     "UnitFileState": "disabled"}  # fmt: skip
    images.sandbox.sh(  # the registry's tag back on the image that works: nothing to update
        f"skopeo copy -q --dest-tls-verify=false oci:{BASE}/layout:auto-two "
        f"docker://{REGISTRY}/app:auto"
    )
    images.ctl("start", "podunit-auto-update.service")
    assert images.show("podunit-auto-update.service", "Result") == {"Result": "success"}
    assert f"imgauto.service  {REGISTRY}/app:auto  false" in images.journal(
        "podunit-auto-update.service"
    )
    images.ctl("stop", "imgauto")


def test_auto_update_rolls_back_when_the_health_check_fails(images: Images) -> None:
    images.ctl("start", "imghealth")
    first = images.images()[f"{REGISTRY}/app:health"]["Digest"]
    images.push("health", "health-bad")  # runs, but its health check fails
    [rolled] = images.auto_update(container="imghealth")
    assert rolled["Updated"] == "rolled back", rolled
    assert rolled["Reason"] == "imghealth.service: the health check fails after the restart"
    assert images.images()[f"{REGISTRY}/app:health"]["Digest"] == first
    assert images.journal("imghealth.service").count("started health-one") == 2
    images.ctl("stop", "imghealth")


def test_a_foreground_run_shows_the_pull_on_a_terminal_only(images: Images) -> None:
    """`podunit run IMAGE` from a terminal pulls with a progress line (rewritten in place
    with CR, ending `pulled REF: N/N layers, ...`); with no terminal it prints none."""
    images.push("tty", "tty-one")
    images.push("pipe", "pipe-one")
    argv = "run --rm --runtime runc --network none --name {name} {ref} -- -c 'echo ran $VERSION'"
    on_terminal = images.sandbox.run(
        ["script", "-qec", f"{images.podunit_bin} " + argv.format(name="imgtty",
         ref=f"{REGISTRY}/app:tty"), "/dev/null"],
        timeout=90,
    ).stdout.decode()  # fmt: skip
    progress = on_terminal.split("ran tty-one")[0]
    assert f"\rpulled {REGISTRY}/app:tty: 1/1 layers, " in progress, on_terminal
    assert "ran tty-one" in on_terminal
    piped = images.sandbox.run(
        ["sh", "-c", f"{images.podunit_bin} "
         + argv.format(name="imgpipe", ref=f"{REGISTRY}/app:pipe") + " 2>&1 | cat"],
        timeout=90,
    ).stdout.decode()  # fmt: skip
    assert piped.strip() == "ran pipe-one", piped
    for tag in ("tty", "pipe"):
        images.podunit("rmi", f"{REGISTRY}/app:{tag}")

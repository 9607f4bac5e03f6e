"""Images end to end with the real skopeo and umoci: local layouts and archives (storage.images).

No network here: the test builds its own busybox image with umoci and exports it
as an OCI layout, an oci-archive and a docker-archive. skopeo and umoci need no
systemd, so these run on the host against a temporary state directory.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.sandbox import VENV_PYTHON, Sandbox
from toolkit.definitions.imageref import ImageError
from toolkit.storage.images import ImageStore, resolve_image

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("skopeo", "umoci", "busybox")),
    reason="needs skopeo, umoci and busybox-static",
)


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A busybox image as oci:, oci-archive: and docker-archive: references."""
    base = tmp_path_factory.mktemp("image-src")
    layout, bundle = base / "layout", base / "bundle"
    _sh("umoci", "init", "--layout", str(layout))
    _sh("umoci", "new", "--image", f"{layout}:base")
    _sh("umoci", "unpack", "--rootless", "--image", f"{layout}:base", str(bundle))
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "", bundle / "rootfs" / "bin" / "busybox")
    (bundle / "rootfs" / "bin" / "sh").symlink_to("busybox")
    (bundle / "rootfs" / "marker").write_text("v1\n")
    _sh("umoci", "repack", "--image", f"{layout}:base", str(bundle))
    _sh(
        "umoci",
        "config",
        "--image",
        f"{layout}:base",
        "--tag",
        "v1",
        "--config.entrypoint",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        "echo hi",
        "--config.env",
        "GREETING=hello",
        "--config.workingdir",
        "/tmp",
        "--config.user",
        "1:2",
        "--config.stopsignal",
        "SIGINT",
    )
    _sh("skopeo", "--insecure-policy", "copy", f"oci:{layout}:v1", f"oci-archive:{base}/img.tar")
    _sh(
        "skopeo",
        "--insecure-policy",
        "copy",
        f"oci:{layout}:v1",
        f"docker-archive:{base}/docker.tar:busybox:v1",
    )
    return {
        "oci": f"oci:{layout}:v1",
        "oci-archive": f"oci-archive:{base}/img.tar",
        "docker-archive": f"docker-archive:{base}/docker.tar",
    }


@pytest.mark.parametrize("kind", ["oci", "oci-archive", "docker-archive"])
def test_resolve_unpacks_rootfs_and_reads_config(
    kind: str, images: dict[str, str], tmp_path: Path
) -> None:
    resolved = resolve_image(images[kind], tmp_path)
    assert (resolved.rootfs / "bin" / "busybox").is_file()
    assert (resolved.rootfs / "marker").read_text() == "v1\n"
    assert resolved.rootfs.is_relative_to(tmp_path / "images" / "rootfs")
    assert resolved.digest.startswith("sha256:")
    config = resolved.config
    assert config.entrypoint == ("/bin/sh",)
    assert config.cmd == ("-c", "echo hi")
    assert ("GREETING", "hello") in config.env
    assert (config.working_dir, config.user) == ("/tmp", "1:2")
    assert config.stop_signal == int(signal.SIGINT)


def test_second_resolve_reuses_the_unpacked_rootfs(images: dict[str, str], tmp_path: Path) -> None:
    first = resolve_image(images["oci-archive"], tmp_path)
    (first.rootfs / "touched").write_text("cache hit")
    second = resolve_image(images["oci-archive"], tmp_path)
    assert second.rootfs == first.rootfs
    assert (second.rootfs / "touched").read_text() == "cache hit"
    unpacked = list((tmp_path / "images" / "rootfs").iterdir())
    assert [path.name for path in unpacked] == [first.digest.replace(":", "_")]


def test_same_image_through_two_transports_shares_the_rootfs(
    images: dict[str, str], tmp_path: Path
) -> None:
    from_layout = resolve_image(images["oci"], tmp_path)
    from_archive = resolve_image(images["oci-archive"], tmp_path)
    assert from_layout.digest == from_archive.digest
    assert from_layout.rootfs == from_archive.rootfs
    store = ImageStore.under(tmp_path)
    assert store.manifest_digest("no-such-name") is None


def test_concurrent_resolves_share_one_unpack(images: dict[str, str], tmp_path: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: resolve_image(images["oci"], tmp_path), range(4)))
    assert len({result.rootfs for result in results}) == 1
    assert len(list((tmp_path / "images" / "rootfs").iterdir())) == 1


def test_missing_archive_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"/nonexistent/img.tar does not exist"):
        resolve_image("oci-archive:/nonexistent/img.tar", tmp_path)


def test_garbage_archive_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file")
    with pytest.raises(ImageError, match=r"cannot copy image oci-archive:.*garbage.tar") as caught:
        resolve_image(f"oci-archive:{garbage}", tmp_path)
    assert caught.value.hint is not None
    assert not (tmp_path / "images" / "rootfs").exists()


def test_missing_tag_in_layout_is_a_clear_error(images: dict[str, str], tmp_path: Path) -> None:
    layout = images["oci"].removeprefix("oci:").rsplit(":", 1)[0]
    with pytest.raises(ImageError, match=r"cannot copy image oci:.*:nope"):
        resolve_image(f"oci:{layout}:nope", tmp_path)


def test_unreachable_registry_is_a_pull_error(tmp_path: Path) -> None:
    # 127.0.0.1:9 (discard) has no registry: the pull fails fast without any network.
    with pytest.raises(ImageError, match=r"cannot pull image 127.0.0.1:9/busybox:latest") as caught:
        resolve_image("127.0.0.1:9/busybox", tmp_path)
    assert caught.value.hint and "network" in caught.value.hint


# Runs inside the sandbox: two containers over one image rootfs, on tmpfs (overlayfs works)
# and on the sandbox's own overlayfs root (an overlay upper dir cannot be overlayfs: copy).
PRIVATE_LAYERS = """
import json, os, sys
from pathlib import Path
from toolkit.storage.images import container_rootfs, release_container_rootfs
image, layers = Path(sys.argv[1]), Path(sys.argv[2])
image.mkdir(parents=True, exist_ok=True)
(image / "shared").write_text("image")
a = container_rootfs(image, layers / "a", layers / "a-mnt")
b = container_rootfs(image, layers / "b", layers / "b-mnt")
(a / "shared").write_text("written by a")
(a / "new").write_text("a")
report = {
    "a": str(a), "b": str(b), "a_mounted": os.path.ismount(a),
    "b_sees": (b / "shared").read_text(), "b_has_new": (b / "new").exists(),
    "image_sees": (image / "shared").read_text(),
    "again": str(container_rootfs(image, layers / "a", layers / "a-mnt")),
}
release_container_rootfs(layers / "a-mnt")
release_container_rootfs(layers / "b-mnt")
report["a_mounted_after"] = os.path.ismount(layers / "a-mnt")
report["a_kept"] = any((layers / "a" / d / "new").exists() for d in ("upper", "rootfs"))
print(json.dumps(report))
"""


@pytest.mark.system
@pytest.mark.parametrize(
    ("layers", "overlay"), [("/run/podunit-images-test", True), ("/var/tmp/pi-layers", False)]
)
def test_containers_of_one_image_do_not_share_writes(
    sandbox: Sandbox, layers: str, overlay: bool
) -> None:
    image = "/var/tmp/podunit-images-test/image"
    sandbox.write("/var/tmp/podunit-images-test/layers.py", PRIVATE_LAYERS)
    try:
        result = sandbox.run(
            [str(VENV_PYTHON), "/var/tmp/podunit-images-test/layers.py", image, layers]
        )
        report = json.loads(result.stdout)
    finally:
        sandbox.run(["rm", "-rf", "/var/tmp/podunit-images-test", layers], check=False)
    assert report["b_sees"] == "image"
    assert report["b_has_new"] is False
    assert report["image_sees"] == "image"
    assert report["again"] == report["a"]
    assert report["a_mounted"] is overlay
    assert report["a"].endswith("a-mnt" if overlay else "a/rootfs")
    assert report["a_mounted_after"] is False
    assert report["a_kept"] is True


# Runs inside the sandbox: a plain-HTTP registry (the read side of the registry API v2,
# serving one OCI layout) on 127.0.0.1, declared insecure in registries.conf.d as an
# administrator would, then pulls through it. argv: layout dir, state dir.
REGISTRY_PULL = r"""
import http.server, json, re, sys, threading
from pathlib import Path
from toolkit.definitions.imageref import ImageError
from toolkit.storage.images import REF_NAME_ANNOTATION, resolve_image

layout, state = Path(sys.argv[1]), Path(sys.argv[2])
requests = []

class Registry(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def blob(self, digest):
        path = layout / "blobs" / digest.replace(":", "/", 1)
        return path.read_bytes() if path.is_file() else None

    def do_GET(self):
        requests.append(self.path)
        match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", self.path)
        if self.path == "/v2/":
            return self.send(200, b"{}", [("Content-Type", "application/json")])
        if match is None:
            return self.send(404)
        if match[2] == "blobs":
            blob = self.blob(match[3])
            return self.send(404) if blob is None else self.send(200, blob)
        for descriptor in json.loads((layout / "index.json").read_bytes())["manifests"]:
            tag = (descriptor.get("annotations") or {}).get(REF_NAME_ANNOTATION)
            if match[3] in (tag, descriptor["digest"]):
                return self.send(200, self.blob(descriptor["digest"]), [
                    ("Content-Type", descriptor["mediaType"]),
                    ("Docker-Content-Digest", descriptor["digest"])])
        return self.send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')

    do_HEAD = do_GET

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
threading.Thread(target=server.serve_forever, daemon=True).start()
address = f"127.0.0.1:{server.server_address[1]}"
conf = Path("/etc/containers/registries.conf.d/podunit-test.conf")
conf.write_text(f'[[registry]]\nlocation = "{address}"\ninsecure = true\n')
report = {}
try:
    pulled = resolve_image(f"{address}/test/busybox:v1", state)
    report["marker"] = (pulled.rootfs / "marker").read_text()
    report["entrypoint"] = list(pulled.config.entrypoint or ())
    report["asked_for_manifest"] = any("/manifests/v1" in path for path in requests)
    try:
        resolve_image(f"{address}/test/busybox:nope", state)
    except ImageError as error:
        report["unknown_tag"] = str(error)
    server.shutdown()  # pull policy "missing": the stored image serves from now on
    report["same_digest_offline"] = (
        resolve_image(f"docker://{address}/test/busybox:v1", state).digest == pulled.digest
    )
finally:
    conf.unlink()
print(json.dumps(report))
"""


@pytest.mark.system
def test_pull_from_an_insecure_registry_then_use_the_store(sandbox: Sandbox) -> None:
    base = "/var/tmp/podunit-registry-test"
    layout, bundle = f"{base}/layout", f"{base}/bundle"
    sandbox.sh(
        f"""
set -e
rm -rf {base}; mkdir -p {base}
umoci init --layout {layout}
umoci new --image {layout}:base
umoci unpack --image {layout}:base {bundle}
mkdir -p {bundle}/rootfs/bin && cp /bin/busybox {bundle}/rootfs/bin/
echo v1 > {bundle}/rootfs/marker
umoci repack --image {layout}:base {bundle}
umoci config --image {layout}:base --tag v1 --config.entrypoint /bin/busybox
"""
    )
    sandbox.write(f"{base}/pull.py", REGISTRY_PULL)
    try:
        result = sandbox.run([str(VENV_PYTHON), f"{base}/pull.py", layout, f"{base}/state"])
        report = json.loads(result.stdout)
    finally:
        sandbox.run(["rm", "-rf", base], check=False)
    assert report["marker"] == "v1\n"
    assert report["entrypoint"] == ["/bin/busybox"]
    assert report["asked_for_manifest"] is True
    assert "cannot pull image 127.0.0.1:" in report["unknown_tag"]
    assert "/test/busybox:nope" in report["unknown_tag"]
    assert report["same_digest_offline"] is True


@pytest.mark.system
def test_podunit_run_of_an_image_uses_its_defaults(sandbox: Sandbox) -> None:
    """The run path end to end: `podunit run oci-archive:...` with and without a command."""
    base = "/var/tmp/podunit-image-run-test"
    env = {"PODUNIT_STATE_DIR": f"{base}/state", "PODUNIT_RUN_DIR": "/run/podunit-image-run"}
    sandbox.sh(
        f"""
set -e
rm -rf {base}; mkdir -p {base}
umoci init --layout {base}/layout
umoci new --image {base}/layout:base
umoci unpack --image {base}/layout:base {base}/bundle
mkdir -p {base}/bundle/rootfs/bin && cp /bin/busybox {base}/bundle/rootfs/bin/
ln -s busybox {base}/bundle/rootfs/bin/sh
umoci repack --image {base}/layout:base {base}/bundle
umoci config --image {base}/layout:base --tag v1 --config.entrypoint /bin/sh \\
    --config.cmd -c --config.cmd 'echo default $GREETING' --config.env GREETING=hello
skopeo copy -q oci:{base}/layout:v1 oci-archive:{base}/image.tar
"""
    )
    podunit = str(VENV_PYTHON.parent / "podunit")
    image = f"oci-archive:{base}/image.tar"
    try:
        default = sandbox.run(
            [podunit, "run", "--rm", "--runtime", "runc", "--name", "image-default", image],
            env=env,
        )
        assert default.stdout == b"default hello\n"
        override = sandbox.run(
            [
                podunit,
                "run",
                "--rm",
                "--runtime",
                "runc",
                "--name",
                "image-override",
                image,
                "--",
                "-c",
                "echo override $GREETING",
            ],
            env=env,
        )
        assert override.stdout == b"override hello\n"  # the image's entrypoint, our args
        missing = sandbox.run(
            [podunit, "run", "--rm", "--name", "image-missing", f"oci-archive:{base}/nope.tar"],
            env=env,
            check=False,
        )
        assert missing.returncode == 125
        assert b"nope.tar does not exist" in missing.stderr
    finally:
        sandbox.run(["rm", "-rf", base, env["PODUNIT_RUN_DIR"]], check=False)

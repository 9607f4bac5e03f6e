"""Image references, image configs and their merge under a definition (toolkit.storage.images)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from toolkit.definitions.imageref import ImageError
from toolkit.definitions.model import Container
from toolkit.errors import Location
from toolkit.storage.images import (
    ImageConfig,
    Transport,
    apply_image_defaults,
    parse_image_config,
    parse_image_reference,
)


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("library/nginx:1.27", "docker.io/library/nginx:1.27"),
        ("docker.io/library/nginx:1.27", "docker.io/library/nginx:1.27"),
        ("quay.io/podman/hello", "quay.io/podman/hello:latest"),
        ("localhost:5000/test/busybox:v1", "localhost:5000/test/busybox:v1"),
        ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest"),
        ("docker://alpine:3", "docker.io/library/alpine:3"),
        ("alpine@sha256:" + "a" * 64, "docker.io/library/alpine@sha256:" + "a" * 64),
    ],
)
def test_registry_references_are_normalised(text: str, location: str) -> None:
    reference = parse_image_reference(text)
    assert reference.transport is Transport.DOCKER
    assert reference.location == location
    assert reference.skopeo_source == f"docker://{location}"
    assert not reference.is_local


@pytest.mark.parametrize(
    ("text", "transport", "path", "ref"),
    [
        ("oci:/srv/layout:v1", Transport.OCI, "/srv/layout", "v1"),
        ("oci:/srv/layout", Transport.OCI, "/srv/layout", None),
        ("oci-archive:/srv/img.tar", Transport.OCI_ARCHIVE, "/srv/img.tar", None),
        ("oci-archive:/srv/img.tar:latest", Transport.OCI_ARCHIVE, "/srv/img.tar", "latest"),
        ("docker-archive:/srv/d.tar", Transport.DOCKER_ARCHIVE, "/srv/d.tar", None),
        ("docker-archive:/d.tar:busybox:1", Transport.DOCKER_ARCHIVE, "/d.tar", "busybox:1"),
    ],
)
def test_local_references(text: str, transport: Transport, path: str, ref: str | None) -> None:
    reference = parse_image_reference(text)
    assert (reference.transport, reference.location, reference.reference) == (transport, path, ref)
    assert reference.is_local
    assert reference.skopeo_source == text


def test_store_names_are_safe_and_distinct() -> None:
    one = parse_image_reference("oci:/a:v1").store_name
    two = parse_image_reference("oci:/a:v2").store_name
    assert one != two
    assert one.isalnum()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ftp:/srv/x", "unknown image transport 'ftp'"),
        ("containers-storage:busybox", "transport 'containers-storage' is not supported"),
        ("dir:/srv/x", "transport 'dir' is not supported"),
        ("docker:alpine", "invalid image reference"),
        ("UPPER/case", "invalid image reference"),
        ("", "invalid image reference"),
        (" nginx", "invalid image reference"),
        ("oci:", "names no path"),
        ("nginx:bad tag", "invalid image reference"),
    ],
)
def test_bad_references(text: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_image_reference(text)


def test_image_config_fields() -> None:
    config = parse_image_config(
        {
            "architecture": "amd64",
            "config": {
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["echo hi"],
                "Env": ["PATH=/usr/bin:/bin", "EMPTY=", "EQ=a=b"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
                "StopSignal": "SIGQUIT",
            },
        }
    )
    assert config == ImageConfig(
        entrypoint=("/bin/sh", "-c"),
        cmd=("echo hi",),
        env=(("PATH", "/usr/bin:/bin"), ("EMPTY", ""), ("EQ", "a=b")),
        working_dir="/srv",
        user="1000:1000",
        stop_signal=int(signal.SIGQUIT),
    )


def test_empty_image_config() -> None:
    assert parse_image_config({}) == ImageConfig()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"config": {"Cmd": "echo"}}, "Cmd is not a list of strings"),
        ({"config": {"StopSignal": "SIGNOPE"}}, "unknown signal 'SIGNOPE'"),
        ({"config": []}, "config is not an object"),
    ],
)
def test_bad_image_config(document: dict[str, object], message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_image_config(document)


IMAGE = ImageConfig(
    entrypoint=("/entry",),
    cmd=("default", "args"),
    env=(("A", "image"), ("B", "image")),
    working_dir="/work",
    user="100",
    stop_signal=int(signal.SIGQUIT),
)


def _container(**fields: object) -> Container:
    return Container(name="web", source=Location("/etc/podunit/web.yaml", 1, 1), **fields)  # type: ignore[arg-type]


def test_defaults_fill_an_empty_definition() -> None:
    merged = apply_image_defaults(_container(image="busybox"), IMAGE, rootfs=Path("/r"))
    assert merged.rootfs == "/r"
    assert merged.entrypoint == ("/entry",)
    assert merged.command == ("default", "args")
    assert merged.environment == (("A", "image"), ("B", "image"))
    assert (merged.working_dir, merged.user) == ("/work", "100")
    assert merged.stop_signal == int(signal.SIGQUIT)


def test_definition_wins_over_image() -> None:
    merged = apply_image_defaults(
        _container(
            image="busybox",
            command=("mine",),
            environment=(("B", "mine"),),
            working_dir="/mine",
            user="0",
            stop_signal=int(signal.SIGINT),
        ),
        IMAGE,
        rootfs=Path("/r"),
    )
    assert merged.entrypoint == ("/entry",)
    assert merged.command == ("mine",)
    assert merged.environment == (("A", "image"), ("B", "mine"))
    assert (merged.working_dir, merged.user) == ("/mine", "0")
    assert merged.stop_signal == int(signal.SIGINT)


def test_own_entrypoint_drops_image_cmd() -> None:
    merged = apply_image_defaults(_container(entrypoint=("/bin/sh",)), IMAGE, rootfs=Path("/r"))
    assert merged.entrypoint == ("/bin/sh",)
    assert merged.command == ()

"""Image reference grammar, light enough for the generator (spec §1.1, podunit.yaml(5) `image`).

`toolkit.images` parses references fully (transports, store names); the generator
only needs to know whether an `image:` is a registry image and its normal form,
to name the image's pull unit, without importing the image store. Only `re`.
"""

from __future__ import annotations

import os
import re

from toolkit.errors import PodunitError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
LOCAL_TRANSPORTS = ("oci", "oci-archive", "docker-archive")
# distribution/reference grammar, simplified: [host[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?)"
_DOCKER_REFERENCE = re.compile(
    rf"^(?:(?P<host>{_HOST})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


class ImageError(PodunitError):
    """An image reference that cannot be parsed, found, pulled or unpacked."""


def normalize_docker_reference(text: str) -> str:
    """`nginx` -> `docker.io/library/nginx:latest` (the Docker Hub conventions)."""
    match = _DOCKER_REFERENCE.match(text)
    if match is None:
        raise ImageError(
            f"invalid image reference {text!r}",
            hint="expected [registry/]name[:tag][@sha256:digest], oci:/path[:tag], "
            "oci-archive:/path.tar or docker-archive:/path.tar",
        )
    host, path, tag, digest = match.group("host", "path", "tag", "digest")
    if host is not None and "." not in host and ":" not in host and host != "localhost":
        if not re.fullmatch(_COMPONENT, host):
            raise ImageError(f"invalid image reference {text!r}: names must be lower-case")
        path, host = f"{host}/{path}", None  # "library/nginx": the first component is no host
    host = host or DEFAULT_REGISTRY
    if host == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return f"{host}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def registry_location(image: str) -> str | None:
    """The normal form of a registry image (`docker://` optional); None for a local
    transport (`oci:`, `oci-archive:`, `docker-archive:`) or an unparsable value
    (the runtime reports those)."""
    prefix, colon, rest = image.partition(":")
    if colon and prefix in LOCAL_TRANSPORTS:
        return None
    if colon and prefix == "docker":
        image = rest.removeprefix("//")
    try:
        return normalize_docker_reference(image)
    except ImageError:
        return None


def store_name(location: str) -> str:
    """The ref name of registry image `location` (normal form) in podunit's OCI layout
    (`toolkit.storage.images.ImageReference.store_name` of `docker://LOCATION`)."""
    import hashlib

    return hashlib.sha256(f"docker://{location}".encode()).hexdigest()[:32]


def stored_names(index_path: str | None) -> tuple[frozenset[str], tuple[int, int, int] | None]:
    """The ref names in the layout's index and the index's (inode, size, mtime) identity
    (the generator's cache keys on it); nothing when it cannot be read."""
    if index_path is None:
        return frozenset(), None
    try:
        with open(index_path, "rb") as handle:
            status = os.fstat(handle.fileno())
            import json

            index = json.loads(handle.read())
    except (OSError, ValueError):
        return frozenset(), None
    names = set()
    for descriptor in index.get("manifests", []) if isinstance(index, dict) else []:
        name = (descriptor.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if isinstance(name, str):
            names.add(name)
    return frozenset(names), (status.st_ino, status.st_size, status.st_mtime_ns)

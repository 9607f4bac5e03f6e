"""Images: `image:` references to a root file system plus the image's defaults (spec §1.1).

A reference (`docker.io/library/nginx:1.27`, `docker://...`, `oci:/path[:tag]`,
`oci-archive:/path.tar[:tag]`, `docker-archive:/path.tar[:name:tag]`) is copied with
skopeo(1) into one local OCI layout under the state directory, then unpacked with
umoci-raw-unpack(1) into a root file system cached per manifest digest:

    <state_dir>/images/oci/             OCI image layout, one ref name per reference
    <state_dir>/images/rootfs/<digest>/ rootfs/: the root file system (umoci raw unpack)
    <state_dir>/images/refs/<name>.json what each ref name is: the reference as written,
                                        the stored and the registry's manifest digests
    <state_dir>/images/lock             flock(2) serialising copies and unpacks

Registry images follow the container's pull policy (`pull:`, podunit.yaml(5)):
`missing` (the default, Podman's) pulls only what the store lacks, `always`
pulls, `newer` pulls when the registry's manifest digest differs from the one
recorded at the last pull, `never` only uses the store. A pull first reads the
manifest (`skopeo inspect --raw`: its digest, layer count and sizes) and then
copies exactly that digest, reporting progress (bytes and layers arrived, from
the layout's blob files as skopeo writes them) to a callback. Local files are
copied on every use so that a rebuilt archive is seen (skopeo skips blobs the
store already has). The image config
(OCI image-spec config.md: Entrypoint, Cmd, Env, WorkingDir, User, StopSignal)
is returned for the run path to merge under the definition's own values
(`apply_image_defaults`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from toolkit import proc
from toolkit.definitions import values
from toolkit.definitions.imageref import (  # noqa: F401  (re-exported: the reference grammar)
    DEFAULT_REGISTRY,
    DEFAULT_TAG,
    ImageError,
    normalize_docker_reference,
)
from toolkit.definitions.model import Container, PullPolicy
from toolkit.errors import CommandFailed

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
DEFAULT_STOP_SIGNAL = int(signal.SIGTERM)
# Transports skopeo knows that podunit does not support (containers-transports(5)).
UNSUPPORTED_TRANSPORTS = frozenset(
    {"dir", "containers-storage", "docker-daemon", "ostree", "sif", "tarball"}
)


class Transport(Enum):
    """The supported containers-transports(5)."""

    DOCKER = "docker"
    OCI = "oci"
    OCI_ARCHIVE = "oci-archive"
    DOCKER_ARCHIVE = "docker-archive"


@dataclass(frozen=True)
class ImageReference:
    """A parsed `image:` value. `location` is a registry reference or an absolute path."""

    transport: Transport
    location: str
    reference: str | None = None  # tag in an oci layout/archive, name:tag in a docker-archive

    @property
    def is_local(self) -> bool:
        return self.transport is not Transport.DOCKER

    @property
    def skopeo_source(self) -> str:
        """The source argument of `skopeo copy`."""
        if self.transport is Transport.DOCKER:
            return f"docker://{self.location}"
        suffix = f":{self.reference}" if self.reference else ""
        return f"{self.transport.value}:{self.location}{suffix}"

    @property
    def repository(self) -> str:
        """A registry reference without tag and digest (`host/path`)."""
        name = self.location.partition("@")[0]
        slash = name.rfind("/")
        colon = name.rfind(":")
        return name[:colon] if colon > slash else name

    @property
    def store_name(self) -> str:
        """The ref name in the local OCI layout: a hash, as references contain `/` and `@`."""
        return hashlib.sha256(self.skopeo_source.encode()).hexdigest()[:32]

    def __str__(self) -> str:
        return self.location if self.transport is Transport.DOCKER else self.skopeo_source


def _local_reference(transport: Transport, rest: str, original: str) -> ImageReference:
    path, _, reference = rest.partition(":")
    if not path:
        raise ImageError(f"image reference {original!r} names no path")
    absolute = os.path.abspath(path)
    return ImageReference(transport, absolute, reference or None)


def parse_image_reference(text: str) -> ImageReference:
    """Parse an `image:` value (spec §1.1); unknown transports are errors, not registry names."""
    if not text or text != text.strip():
        raise ImageError(f"invalid image reference {text!r}")
    prefix, colon, rest = text.partition(":")
    if colon:
        if prefix == "docker":
            if not rest.startswith("//"):
                raise ImageError(f"invalid image reference {text!r}", hint="write docker://NAME")
            return ImageReference(Transport.DOCKER, normalize_docker_reference(rest[2:]))
        for transport in (Transport.OCI, Transport.OCI_ARCHIVE, Transport.DOCKER_ARCHIVE):
            if prefix == transport.value:
                return _local_reference(transport, rest, text)
        if prefix in UNSUPPORTED_TRANSPORTS:
            raise ImageError(
                f"image transport {prefix!r} is not supported: {text!r}",
                hint="use a registry reference, oci:, oci-archive: or docker-archive:",
            )
        if rest.startswith("/"):  # neither a tag nor a registry port starts with "/"
            raise ImageError(
                f"unknown image transport {prefix!r} in {text!r}",
                hint="known transports: docker://, oci:, oci-archive:, docker-archive:",
            )
    return ImageReference(Transport.DOCKER, normalize_docker_reference(text))


# --- the image config ------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The runtime defaults an image carries (OCI image-spec config.md, `config` object)."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    user: str | None = None
    stop_signal: int | None = None


def parse_signal(value: str) -> int:
    """`SIGTERM`, `TERM`, `15`, `SIGRTMIN+3` -> the number (the definitions' own parser)."""
    try:
        return values.parse_signal(value)
    except ValueError:
        raise ImageError(f"unknown signal {value!r} in the image's StopSignal") from None


def _strings(value: Any, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ImageError(f"image config field {field} is not a list of strings: {value!r}")
    return tuple(value)


def parse_image_config(document: dict[str, Any]) -> ImageConfig:
    """An `application/vnd.oci.image.config.v1+json` document -> ImageConfig."""
    config = document.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ImageError("image config field config is not an object")
    env = []
    for item in _strings(config.get("Env"), "Env") or ():
        key, _, value = item.partition("=")
        env.append((key, value))
    stop_signal = config.get("StopSignal")
    return ImageConfig(
        entrypoint=_strings(config.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(config.get("Cmd"), "Cmd"),
        env=tuple(env),
        working_dir=config.get("WorkingDir") or None,
        user=config.get("User") or None,
        stop_signal=parse_signal(stop_signal) if stop_signal else None,
    )


def apply_image_defaults(container: Container, image: ImageConfig, rootfs: Path) -> Container:
    """The definition with the image's defaults under it and `rootfs` set.

    Docker/Compose semantics: an `entrypoint` in the definition drops the image's
    Cmd; a `command` replaces Cmd; environment variables of the definition win over
    the image's. The image's StopSignal applies only where the definition kept the
    default SIGTERM (the model cannot tell an explicit SIGTERM from the default).
    """
    entrypoint = container.entrypoint if container.entrypoint is not None else image.entrypoint
    command: tuple[str, ...] | None
    if container.command is not None:
        command = container.command
    elif container.entrypoint is not None:
        command = ()
    else:
        command = image.cmd
    own = {key for key, _ in container.environment}
    environment = tuple((k, v) for k, v in image.env if k not in own) + container.environment
    stop_signal = container.stop_signal
    if stop_signal == DEFAULT_STOP_SIGNAL and image.stop_signal is not None:
        stop_signal = image.stop_signal
    return container._replace(
        rootfs=str(rootfs),
        entrypoint=entrypoint,
        command=command,
        environment=environment,
        working_dir=container.working_dir or image.working_dir,
        user=container.user or image.user,
        stop_signal=stop_signal,
    )


# --- the local store --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRootfs:
    """An unpacked image: its root file system, its defaults and its manifest digest."""

    rootfs: Path
    config: ImageConfig
    digest: str  # "sha256:..." of the manifest


@dataclass(frozen=True)
class ImageStore:
    """The local OCI layout and the unpacked root file systems under `<state_dir>/images`."""

    root: Path

    @classmethod
    def under(cls, state_dir: str | os.PathLike[str]) -> ImageStore:
        return cls(Path(state_dir, "images"))

    @property
    def layout(self) -> Path:
        return self.root / "oci"

    def unpacked(self, digest: str) -> Path:
        return self.root / "rootfs" / digest.replace(":", "_")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise writers of the store (several units may start at once)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.root / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def blob(self, digest: str) -> dict[str, Any]:
        """A JSON blob of the layout (a manifest or a config)."""
        algorithm, _, hexdigest = digest.partition(":")
        path = self.layout / "blobs" / algorithm / hexdigest
        try:
            document: dict[str, Any] = json.loads(path.read_bytes())
        except (OSError, ValueError) as error:
            raise ImageError(
                f"image store {self.layout}: cannot read blob {digest}: {error}"
            ) from None
        return document

    def manifest_digest(self, name: str) -> str | None:
        """Digest of the manifest stored under ref name `name`, None when absent."""
        try:
            index = json.loads((self.layout / "index.json").read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise ImageError(f"image store {self.layout}/index.json is corrupt: {error}") from None
        for descriptor in index.get("manifests", []):
            if (descriptor.get("annotations") or {}).get(REF_NAME_ANNOTATION) == name:
                return str(descriptor["digest"])
        return None

    def config_of(self, manifest_digest: str) -> ImageConfig:
        manifest = self.blob(manifest_digest)
        config_digest = (manifest.get("config") or {}).get("digest")
        if not isinstance(config_digest, str):
            raise ImageError(f"manifest {manifest_digest} has no config descriptor")
        return parse_image_config(self.blob(config_digest))


def _last_line(error: CommandFailed) -> str:
    lines = error.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {error.returncode}"


class PullProgress:
    """What a pull has fetched so far: bytes and layers, against the manifest's totals."""

    __slots__ = ("bytes_done", "bytes_total", "done", "layers_done", "layers_total", "reference")

    def __init__(self, reference: str, layers_total: int | None, bytes_total: int | None) -> None:
        self.reference = reference
        self.layers_total = layers_total
        self.bytes_total = bytes_total
        self.layers_done = 0
        self.bytes_done = 0
        self.done = False

    def describe(self) -> str:
        """`pulling REF: 2/3 layers, 1.2 MB of 4.0 MB`."""
        layers = (
            f"{self.layers_done}/{self.layers_total} layers"
            if self.layers_total
            else (f"{self.layers_done} blobs")
        )
        amount = _megabytes(self.bytes_done)
        if self.bytes_total:
            amount += f" of {_megabytes(self.bytes_total)}"
        verb = "pulled" if self.done else "pulling"
        return f"{verb} {self.reference}: {layers}, {amount}"


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


ProgressCallback = Callable[[PullProgress], None]
PROGRESS_INTERVAL = 0.25  # seconds between looks at the layout while skopeo writes


def _skopeo() -> list[str]:
    argv = ["skopeo"]
    if not os.path.exists("/etc/containers/policy.json"):
        argv.append("--insecure-policy")  # no policy file at all: skopeo would refuse everything
    return argv


def _pull_error(reference: ImageReference, error: CommandFailed) -> ImageError:
    verb = "pull" if reference.transport is Transport.DOCKER else "copy"
    return ImageError(
        f"cannot {verb} image {reference}: {_last_line(error)}",
        hint="check the reference, the network and registry credentials"
        if reference.transport is Transport.DOCKER
        else "check that the file is an image of that format",
    )


class RemoteManifest:
    """A registry manifest as `skopeo inspect --raw` returns it: digest and layer sizes."""

    __slots__ = ("digest", "layer_sizes")

    def __init__(self, raw: bytes) -> None:
        self.digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.layer_sizes: tuple[int, ...] | None = None
        try:
            document = json.loads(raw)
        except ValueError:
            return
        layers = document.get("layers") if isinstance(document, dict) else None
        if isinstance(layers, list):  # an image manifest (an index names no layers)
            self.layer_sizes = tuple(int(layer.get("size") or 0) for layer in layers)


def remote_manifest(reference: ImageReference) -> RemoteManifest:
    """The registry's manifest of `reference` (the registry's digest: what `newer` compares)."""
    try:
        result = proc.run([*_skopeo(), "inspect", "--raw", reference.skopeo_source], timeout=300)
    except CommandFailed as error:
        raise _pull_error(reference, error) from None
    return RemoteManifest(result.stdout)


def _blob_sizes(store: ImageStore) -> tuple[dict[str, int], int]:
    """The layout's finished blobs (name -> size) and the bytes of skopeo's unfinished ones."""
    finished: dict[str, int] = {}
    partial = 0
    for directory, is_blobs in ((store.layout / "blobs" / "sha256", True), (store.layout, False)):
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            if is_blobs and entry.is_file():
                finished[entry.name] = size
            elif not is_blobs and entry.name.startswith("oci-put-blob"):
                partial += size  # containers/image writes a blob here, then renames it
    return finished, partial


@contextmanager
def _watching(
    store: ImageStore, progress: PullProgress, report: ProgressCallback
) -> Iterator[None]:
    """Call `report` every PROGRESS_INTERVAL while the body (a skopeo copy) runs."""
    before, _ = _blob_sizes(store)
    stop = threading.Event()

    def look() -> None:
        finished, partial = _blob_sizes(store)
        new = {name: size for name, size in finished.items() if name not in before}
        progress.bytes_done = sum(new.values()) + partial
        # the config and the manifest are blobs too: count layers only (the big ones)
        progress.layers_done = max(0, len(new) - 1) if progress.layers_total else len(new)
        if progress.layers_total is not None:
            progress.layers_done = min(progress.layers_done, progress.layers_total)
        report(progress)

    def watch() -> None:
        while not stop.wait(PROGRESS_INTERVAL):
            look()

    watcher = threading.Thread(target=watch, name="pull-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
    look()


def _copy_into_store(
    reference: ImageReference,
    store: ImageStore,
    report: ProgressCallback | None = None,
    manifest: RemoteManifest | None = None,
) -> RemoteManifest | None:
    """skopeo copy SOURCE oci:LAYOUT:NAME, with errors naming the image; returns the
    registry's manifest (None for a local source, or when it could not be read).

    A registry image's manifest (its digest, layers and sizes) is read while skopeo
    copies (one process less on the way to a first start): `manifest` when the caller
    read it already (the copy is then of exactly that digest), else by a thread. A tag
    that moves between the two requests leaves a recorded registry digest that is not
    the stored one; the next `newer` check or auto-update then pulls again, harmlessly.
    """
    if reference.is_local and not os.path.exists(reference.location):
        raise ImageError(f"image {reference}: {reference.location} does not exist")
    store.layout.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    source = reference.skopeo_source
    progress = PullProgress(str(reference), None, None)
    read: list[RemoteManifest] = []

    def learn(found: RemoteManifest) -> None:
        read.append(found)
        if found.layer_sizes is not None:
            progress.layers_total = len(found.layer_sizes)
            progress.bytes_total = sum(found.layer_sizes) or None

    reader = None
    if manifest is not None:
        learn(manifest)
        source = f"docker://{reference.repository}@{manifest.digest}"
    elif reference.transport is Transport.DOCKER:

        def inspect() -> None:
            with contextlib.suppress(ImageError):
                learn(remote_manifest(reference))

        reader = threading.Thread(target=inspect, name="manifest", daemon=True)
        reader.start()
    destination = f"oci:{store.layout}:{reference.store_name}"
    argv = [*_skopeo(), "copy", "--quiet", source, destination]
    try:
        if report is None:
            proc.run(argv, timeout=1800)
        else:
            with _watching(store, progress, report):
                proc.run(argv, timeout=None)
    except CommandFailed as error:
        raise _pull_error(reference, error) from None
    finally:
        if reader is not None:
            reader.join()
    manifest = read[0] if read else None
    if report is not None:
        progress.done = True
        if progress.layers_total is not None:
            progress.layers_done = progress.layers_total
        report(progress)
    return manifest


def _unpack(store: ImageStore, name: str, digest: str) -> Path:
    """`umoci raw unpack` into a fresh directory, renamed into place when complete.

    The raw form writes the root file system only: `umoci unpack` also hashes every
    file into an mtree manifest (for `umoci repack`, which podunit never runs), which
    made it take 1.5-2x as long (a 9 MB image: 163-249 ms against 106-111 ms).
    """
    target = store.unpacked(digest)
    if (target / "rootfs").is_dir():
        return target
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    bundle = scratch / "bundle"
    bundle.mkdir(mode=0o700)
    argv = ["umoci", "raw", "unpack"]
    if os.geteuid() != 0:
        argv.append("--rootless")
    argv += ["--image", f"{store.layout}:{name}", str(bundle / "rootfs")]
    try:
        proc.run(argv, timeout=1800)
        os.rename(bundle, target)
    except CommandFailed as error:
        raise ImageError(f"cannot unpack image {digest}: {error}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def container_rootfs(
    image_rootfs: str | os.PathLike[str],
    layer_dir: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str],
) -> Path:
    """A private writable root file system for one container over a shared image rootfs.

    An overlayfs (lower = the cached image, upper/work under `layer_dir`, which
    should live in the state directory until `rm`) mounted at `mountpoint`, so
    containers of one image never see each other's writes. Where overlayfs
    cannot be used (upper directory on overlayfs itself, no permission), the
    image is copied once into `layer_dir/rootfs` instead. Returns the path to use
    as the container's root.
    """
    image_rootfs, layer_dir, mountpoint = Path(image_rootfs), Path(layer_dir), Path(mountpoint)
    if os.path.ismount(mountpoint):
        return mountpoint
    copy = layer_dir / "rootfs"
    if copy.is_dir():
        return copy
    upper, work = layer_dir / "upper", layer_dir / "work"
    for directory in (upper, work, mountpoint):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    options = f"lowerdir={image_rootfs},upperdir={upper},workdir={work}"
    try:
        proc.run(["mount", "-t", "overlay", "overlay", "-o", options, str(mountpoint)])
        return mountpoint
    except CommandFailed:
        pass  # fall back to a private copy
    scratch = layer_dir / ".rootfs-copy"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        proc.run(["cp", "-a", "--reflink=auto", str(image_rootfs), str(scratch)], timeout=1800)
    except CommandFailed as error:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ImageError(f"cannot make a root file system from {image_rootfs}: {error}") from None
    os.rename(scratch, copy)
    shutil.rmtree(upper, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return copy


def release_container_rootfs(mountpoint: str | os.PathLike[str]) -> None:
    """Unmount what `container_rootfs` mounted (the layer stays until the container is removed)."""
    if os.path.ismount(mountpoint):
        try:
            proc.run(["umount", str(mountpoint)])
        except CommandFailed:
            proc.run(["umount", "--lazy", str(mountpoint)])


def write_record(store: ImageStore, reference: ImageReference, **fields: str | None) -> None:
    """`refs/<name>.json`: the reference as written and its digests (atomic replace)."""
    directory = store.root / "refs"
    directory.mkdir(mode=0o700, exist_ok=True)
    record = {"reference": str(reference), **fields, "updated": time.time()}
    scratch = directory / f".{reference.store_name}.tmp"
    scratch.write_text(json.dumps(record) + "\n")
    os.rename(scratch, directory / f"{reference.store_name}.json")


def read_record(store: ImageStore, name: str) -> dict[str, Any] | None:
    """The record of ref name `name` (None when there is none or it is unreadable)."""
    try:
        record: dict[str, Any] = json.loads((store.root / "refs" / f"{name}.json").read_bytes())
    except (OSError, ValueError):
        return None
    return record


def _needs_pull(
    reference: ImageReference, store: ImageStore, digest: str | None, policy: PullPolicy
) -> tuple[bool, RemoteManifest | None]:
    """Whether the policy wants a pull now (and the manifest read to decide it, for `newer`)."""
    if reference.is_local:
        return policy is not PullPolicy.NEVER or digest is None, None
    if policy is PullPolicy.ALWAYS or digest is None:
        return True, None
    if policy is PullPolicy.NEWER:
        try:
            manifest = remote_manifest(reference)
        except ImageError:
            return False, None  # registry unreachable: the stored image serves (as Podman does)
        recorded = (read_record(store, reference.store_name) or {}).get("registry_digest")
        return manifest.digest != recorded, manifest
    return False, None


def never_pulled(reference: ImageReference) -> ImageError:
    return ImageError(
        f"image {reference} is not in podunit's image store and 'pull: never' forbids pulling it",
        hint=f"run 'podunit pull {reference}' first, or set 'pull: missing'",
    )


def fetch_image(
    image: str,
    state_dir: str | os.PathLike[str],
    *,
    policy: PullPolicy = PullPolicy.MISSING,
    report: ProgressCallback | None = None,
) -> tuple[str, bool]:
    """Apply the pull policy to `image` in the store; return its manifest digest and
    whether it was copied now. Progress goes to `report` while skopeo copies."""
    reference = parse_image_reference(image)
    store = ImageStore.under(state_dir)
    with store.locked():
        digest = store.manifest_digest(reference.store_name)
        if policy is PullPolicy.NEVER and digest is None:
            if reference.is_local:
                policy = PullPolicy.MISSING  # a local file is no pull
            else:
                raise never_pulled(reference)
        wanted, manifest = _needs_pull(reference, store, digest, policy)
        if not wanted:
            assert digest is not None
            return digest, False
        manifest = _copy_into_store(reference, store, report, manifest)
        digest = store.manifest_digest(reference.store_name)
        if digest is None:
            raise ImageError(f"image {reference}: skopeo stored no manifest")
        write_record(
            store, reference, digest=digest,
            registry_digest=None if manifest is None else manifest.digest,
        )  # fmt: skip
    return digest, True


def resolve_image(
    image: str,
    state_dir: str | os.PathLike[str],
    *,
    policy: PullPolicy = PullPolicy.MISSING,
    report: ProgressCallback | None = None,
) -> ImageRootfs:
    """Make `image` available as a root file system; return it with the image's defaults."""
    digest, _ = fetch_image(image, state_dir, policy=policy, report=report)
    reference = parse_image_reference(image)
    store = ImageStore.under(state_dir)
    with store.locked():
        digest = store.manifest_digest(reference.store_name) or digest
        bundle = _unpack(store, reference.store_name, digest)
        config = store.config_of(digest)
    return ImageRootfs(rootfs=bundle / "rootfs", config=config, digest=digest)

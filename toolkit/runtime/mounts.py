"""A container's volumes, bind sources and secrets made concrete on the host, at start.

podunit.yaml(5) VOLUMES, SECRETS AND CONFIGS; podunit-runtime.md "Volumes". The
OCI spec builder (`toolkit.runtime.oci`) is pure and knows only bind and tmpfs
mounts with host paths: `resolve` turns the definition's mounts into those,
before the spec is built:

- a named volume is looked up in the volume store (`toolkit.storage.volumes`) and
  created on first use with its declaration's settings (an `external` one must
  exist); a declared volume whose stored settings differ is refused;
- an anonymous volume is the one the container's name already has at that target,
  else a new one;
- a new, empty volume gets a copy of what the image holds at the mount point
  (owner and mode included; Docker's rule), unless `nocopy`;
- a bind source marked `create_host_path` is created when missing, and a missing
  one otherwise is a clear error;
- each secret or config is bind-mounted read-only from a file in the container's
  bundle (per-boot, root only), which `write_secrets` writes at every launch with
  its owner and mode (the record keeps where the value comes from, never the
  value); a secret from the environment is read from the environment of the
  process that starts the container (`podunit run`: for a unit, the unit's).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from toolkit.definitions.model import Container, Mount, MountType, Volume
from toolkit.definitions.values import CREATE_HOST_PATH, NOCOPY, PODUNIT_MOUNT_OPTIONS
from toolkit.errors import PodunitError, UnreadableFile

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing it here (mypy knows the name)
if TYPE_CHECKING:
    from toolkit.storage.state import StateStore
    from toolkit.storage.volumes import VolumeRecord, VolumeStore

# toolkit.storage.volumes is imported only by a container that has volumes: `podunit run`
# of one without pays nothing for this module beyond `needs_resolving`.

_MAX_SYMLINKS = 40
SECRET_MOUNT_OPTIONS = ("nosuid", "nodev", "noexec")


class Resolved(NamedTuple):
    """The container with concrete mounts, the volumes it uses and the secret files to write
    at each launch (`write_secrets`), both for its record."""

    container: Container
    volumes: tuple[str, ...]
    secrets: tuple[dict[str, Any], ...]


def needs_resolving(container: Container) -> bool:
    """Whether `resolve` has anything to do (so a plain container imports nothing more)."""
    return bool(container.secrets) or any(
        mount.type is not MountType.TMPFS for mount in container.mounts
    )


def resolve(
    store: StateStore,
    container: Container,
    *,
    rootfs: str,
    bundle: str,
    environ: Mapping[str, str] = os.environ,
) -> Resolved:
    """`container` with every volume a bind or tmpfs mount of a host path, secrets mounted."""
    volumes: VolumeStore | None = None
    declared = {volume.name: volume for volume in container.volumes}
    mounts: list[Mount] = []
    used: list[str] = []
    for mount in container.mounts:
        if mount.type is MountType.VOLUME:
            if volumes is None:
                from toolkit.storage.volumes import VolumeStore

                volumes = VolumeStore(store)
            record = _volume_for(volumes, container.name, mount, declared)
            used.append(record.name)
            mounts.append(_volume_mount(volumes, record, mount, rootfs))
        elif mount.type is MountType.BIND:
            _check_bind_source(mount)
            mounts.append(_plain(mount))
        else:
            mounts.append(mount)
    secret_mounts, secret_files = _secret_mounts(container, bundle)
    for secret in secret_files:  # fail now rather than at launch: the value must be there
        _secret_value(secret, environ)
    mounts.extend(secret_mounts)
    return Resolved(container._replace(mounts=tuple(mounts)), tuple(used), tuple(secret_files))


def _plain(mount: Mount) -> Mount:
    """Without podunit's own options, which mean nothing to the runtime."""
    return mount._replace(options=tuple(o for o in mount.options if o not in PODUNIT_MOUNT_OPTIONS))


def _check_bind_source(mount: Mount) -> None:
    source = mount.source or ""
    if os.path.exists(source):
        return
    if CREATE_HOST_PATH in mount.options:
        try:
            os.makedirs(source, 0o755, exist_ok=True)
        except OSError as error:
            raise PodunitError(
                f"cannot create the bind mount source {source} for {mount.target}: {error.strerror}"
            ) from None
        return
    raise PodunitError(
        f"bind mount source {source} for {mount.target} does not exist",
        hint="create it, or use the long syntax with bind: {create_host_path: true}",
    )


def _volume_for(
    volumes: VolumeStore, owner: str, mount: Mount, declared: Mapping[str, Volume]
) -> VolumeRecord:
    """The stored volume of a mount, created on first use."""
    if mount.source is None:  # anonymous: the one this container name had, else a new one
        record = volumes.anonymous_of(owner, mount.target)
        return record or volumes.create(owner=owner, target=mount.target)
    name = mount.source
    wanted = declared.get(name)
    record = volumes.find(name)
    if record is None:
        if wanted is not None and wanted.external:
            raise PodunitError(
                f"external volume {name} does not exist",
                hint=f"create it first: podunit volume create {name}",
            )
        wanted = wanted or Volume(name)
        record = volumes.create(
            name, kind=wanted.kind, device=wanted.device, options=wanted.options,
            labels=wanted.labels, exist_ok=True,
        )  # fmt: skip
    if (
        wanted is not None
        and not wanted.external
        and not record.same_settings(wanted.kind, wanted.device, wanted.options)
    ):
        raise PodunitError(
            f"volume {name} exists with other settings than its declaration "
            f"({record.kind} {record.device or ''} {','.join(record.options)})".rstrip(),
            hint=f"to recreate it (its data is lost): podunit volume rm {name}",
        )
    return record


def _volume_mount(volumes: VolumeStore, record: VolumeRecord, mount: Mount, rootfs: str) -> Mount:
    """The bind (or tmpfs) mount of a stored volume; a new volume is populated first."""
    options = tuple(o for o in mount.options if o not in PODUNIT_MOUNT_OPTIONS)
    if record.kind == "tmpfs":
        return Mount(MountType.TMPFS, mount.target, None, mount.read_only, None,
                     (*record.options, *options))  # fmt: skip
    if record.mountpoint is None or not os.path.isdir(record.mountpoint):
        raise PodunitError(
            f"volume {record.name}: its data directory {record.mountpoint} is missing",
            hint=f"podunit volume rm {record.name} and start again",
        )
    if record.needs_copy_up:
        from toolkit.storage.state import flocked

        lock = os.path.join(volumes.paths.locks_dir, f"volume-{record.name}.lock")
        with flocked(lock):
            current = volumes.find(record.name)
            if current is not None and current.needs_copy_up:
                if NOCOPY not in mount.options:
                    copy_up(rootfs, mount.target, record.mountpoint)
                volumes.copied_up(record.name)
    return Mount(MountType.BIND, mount.target, record.mountpoint, mount.read_only, None, options)


def path_in_root(root: str, path: str) -> str | None:
    """The host path of container path `path` inside `root`, symbolic links resolved as the
    container would see them (never leaving `root`); None if it does not exist."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(host)
        except FileNotFoundError:
            return None
        except OSError:  # not a link
            if not os.path.lexists(host):
                return None
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            return None
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *resolved)


def copy_up(rootfs: str, target: str, data: str) -> bool:
    """Docker's rule: when `data` (a volume's directory) is empty and the image has a directory
    at `target`, copy its content, owner and mode in. True if anything was copied."""
    source = path_in_root(rootfs, target)
    if source is None or not os.path.isdir(source) or os.path.islink(source):
        return False
    if os.listdir(data):
        return False
    info = os.stat(source)
    with contextlib.suppress(PermissionError):  # rootless: the caller's own files stay its own
        os.chown(data, info.st_uid, info.st_gid)
    os.chmod(data, info.st_mode & 0o7777)
    if not os.listdir(source):
        return False
    from toolkit import proc

    proc.run(["cp", "-a", "--", source + "/.", data + "/"])
    return True


def _secret_value(secret: Mapping[str, Any], environ: Mapping[str, str]) -> bytes:
    what = "config" if secret.get("config") else "secret"
    name = secret["name"]
    if secret.get("file") is not None:  # a regular file, bounded, never blocking (safefile)
        from toolkit import safefile

        try:
            return safefile.read_bytes(secret["file"])
        except UnreadableFile as error:
            raise PodunitError(
                f"{what} {name}: {error}",
                hint="podunit validate checks that every secret's file exists",
            ) from None
    if secret.get("environment") is not None:
        value = environ.get(secret["environment"])
        if value is None:
            raise PodunitError(
                f"{what} {name}: the variable {secret['environment']} is not set",
                hint="the value comes from podunit run's environment: for a unit, set it "
                "with service: {EnvironmentFile: FILE} (or Environment=)",
            )
        return value.encode()
    return str(secret.get("content") or "").encode()


def _secret_mounts(container: Container, bundle: str) -> tuple[list[Mount], list[dict[str, Any]]]:
    """The read-only bind mounts of the secrets and configs, and what `write_secrets` needs
    to write their files (where the value comes from, never the value itself)."""
    directory = os.path.join(bundle, "secrets")
    mounts, files = [], []
    for index, secret in enumerate(container.secrets):
        path = os.path.join(directory, f"{index}-{secret.name}")
        mounts.append(Mount(MountType.BIND, secret.target, path, True, None,
                            SECRET_MOUNT_OPTIONS))  # fmt: skip
        fields = {key: value for key, value in secret._asdict().items() if value is not None}
        files.append({**fields, "path": path})
    return mounts, files


def write_secrets(
    files: Sequence[Mapping[str, Any]], environ: Mapping[str, str], *, user_mode: bool
) -> None:
    """Write the secrets' and configs' files (at every launch: the bundle is per run), each
    with its owner and mode, in a directory only root reads. User mode: owned by the caller."""
    for secret in files:
        path = str(secret["path"])
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        value = memoryview(_secret_value(secret, environ))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while value:
                value = value[os.write(fd, value) :]
            if not user_mode:
                os.fchown(fd, int(secret.get("uid", 0)), int(secret.get("gid", 0)))
            os.fchmod(fd, int(secret.get("mode", 0o444)))
        finally:
            os.close(fd)

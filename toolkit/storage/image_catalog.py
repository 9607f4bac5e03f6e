"""What the image store holds, what uses it, and removing from it (spec §4: `images`, `rmi`,
`image prune`, `image inspect`; docs/podunit-exec-logs-images.md, "Image commands").

An image is a ref name in the OCI layout (`toolkit.storage.images`) with its record
(`refs/NAME.json`: the reference as written, the stored and the registry's digests).
An image is *in use* while a container record's root file system is its unpacked
root (`<images>/rootfs/<digest>/rootfs`): containers of one image share that root
under their private overlay. `remove` refuses an image in use; `prune` removes
unpacked roots no container uses (a later start unpacks again from the layout),
and with `everything` also the images no container uses. Blobs no manifest refers
to any more are collected with `umoci gc`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from toolkit import proc
from toolkit.definitions.imageref import ImageError
from toolkit.errors import CommandFailed
from toolkit.storage.images import (
    REF_NAME_ANNOTATION,
    ImageStore,
    parse_image_reference,
    read_record,
)
from toolkit.storage.records import ContainerRecord


def tree_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the regular files under `path` (hard links counted once), 0 if absent."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def digest_of_root(rootfs: str) -> str | None:
    """`.../images/rootfs/sha256_abc/rootfs` -> `sha256:abc` (a record's `image_rootfs`)."""
    parent = os.path.basename(os.path.dirname(os.path.normpath(rootfs)))
    algorithm, underscore, hexdigest = parent.partition("_")
    return f"{algorithm}:{hexdigest}" if underscore and hexdigest else None


def users_by_digest(records: Iterable[ContainerRecord]) -> dict[str, list[str]]:
    """Manifest digest -> the names of the containers whose root is that image's."""
    users: dict[str, list[str]] = {}
    for record in records:
        rootfs = record.options.image_rootfs
        digest = digest_of_root(rootfs) if rootfs else None
        if digest is not None:
            users.setdefault(digest, []).append(record.name)
    return users


def _index(store: ImageStore) -> dict[str, Any]:
    try:
        index: dict[str, Any] = json.loads((store.layout / "index.json").read_bytes())
    except FileNotFoundError:
        return {"schemaVersion": 2, "manifests": []}
    except ValueError as error:
        raise ImageError(f"image store {store.layout}/index.json is corrupt: {error}") from None
    return index


def _ref_name(descriptor: Mapping[str, Any]) -> str | None:
    name = (descriptor.get("annotations") or {}).get(REF_NAME_ANNOTATION)
    return name if isinstance(name, str) else None


def list_images(store: ImageStore, users: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """Every stored image as a JSON-ready mapping (`podunit images --format json`)."""
    images = []
    for descriptor in _index(store).get("manifests", []):
        name = _ref_name(descriptor)
        if name is None:
            continue
        digest = str(descriptor.get("digest"))
        record = read_record(store, name) or {}
        unpacked = store.unpacked(digest)
        reference = str(record.get("reference", name))
        if name.endswith(PREVIOUS):  # kept by an auto-update in progress (see below)
            reference += " (previous)"
        images.append(
            {
                "Reference": reference,
                "Name": name,
                "Digest": digest,
                "RegistryDigest": record.get("registry_digest"),
                "Updated": record.get("updated"),
                "Unpacked": (unpacked / "rootfs").is_dir(),
                "RootfsSize": tree_size(unpacked) if unpacked.is_dir() else 0,
                "Containers": sorted(users.get(digest, [])),
            }
        )
    return sorted(images, key=lambda image: str(image["Reference"]))


def find_image(store: ImageStore, text: str) -> dict[str, Any]:
    """The stored image named by a reference (as written or normalised), its store name,
    or a unique digest prefix (`sha256:abc`, `abc`)."""
    candidates = list_images(store, {})
    name = None
    with contextlib.suppress(ImageError):
        name = parse_image_reference(text).store_name
    for image in candidates:
        if text in (image["Reference"], image["Name"]) or image["Name"] == name:
            return image
    prefix = text.removeprefix("sha256:")
    matches = [i for i in candidates if len(prefix) >= 4 and i["Digest"][7:].startswith(prefix)]
    if len({i["Digest"] for i in matches}) == 1:
        return matches[0]
    raise ImageError(
        f"no image {text!r} in podunit's image store"
        + (" (the prefix names several)" if matches else ""),
        hint="podunit images lists them",
    )


def _write_index(store: ImageStore, index: Mapping[str, Any]) -> None:
    scratch = store.layout / ".index.json.tmp"
    scratch.write_text(json.dumps(index))
    os.replace(scratch, store.layout / "index.json")


def _collect_blobs(store: ImageStore) -> None:
    """Delete blobs no manifest of the layout refers to (umoci-gc(1))."""
    if (store.layout / "index.json").exists():
        try:
            proc.run(["umoci", "gc", "--layout", str(store.layout)], timeout=600)
        except CommandFailed as error:
            raise ImageError(f"cannot collect unused blobs of {store.layout}: {error}") from None


def remove_image(store: ImageStore, text: str, users: Mapping[str, list[str]]) -> dict[str, Any]:
    """`podunit rmi`: drop the image's ref, record and (when no other ref has its digest)
    its unpacked root, then the blobs nothing refers to. Refused while a container uses it."""
    with store.locked():
        image = find_image(store, text)
        using = users.get(image["Digest"], [])
        if using:
            raise ImageError(
                f"image {image['Reference']} is used by container {', '.join(sorted(using))}",
                hint="remove the container first (podunit rm), or stop its unit",
            )
        index = _index(store)
        index["manifests"] = [d for d in index["manifests"] if _ref_name(d) != image["Name"]]
        _write_index(store, index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.root / "refs" / f"{image['Name']}.json")
        if not any(d.get("digest") == image["Digest"] for d in index["manifests"]):
            shutil.rmtree(store.unpacked(image["Digest"]), ignore_errors=True)
        _collect_blobs(store)
    return image


def prune(
    store: ImageStore, users: Mapping[str, list[str]], *, everything: bool = False
) -> list[str]:
    """`podunit image prune [--all]`: what was removed (unpacked roots by digest, and with
    `everything` the references of images no container uses)."""
    removed: list[str] = []
    with store.locked():
        if everything:
            index = _index(store)
            kept = []
            for descriptor in index.get("manifests", []):
                if users.get(str(descriptor.get("digest"))):
                    kept.append(descriptor)
                    continue
                name = _ref_name(descriptor)
                record = read_record(store, name) if name else None
                removed.append(str((record or {}).get("reference", name)))
                if name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(store.root / "refs" / f"{name}.json")
            if len(kept) != len(index.get("manifests", [])):
                index["manifests"] = kept
                _write_index(store, index)
                _collect_blobs(store)
        roots = store.root / "rootfs"
        for entry in sorted(os.listdir(roots)) if roots.is_dir() else []:
            digest = entry.replace("_", ":", 1)
            if entry.startswith(".") or users.get(digest):
                continue
            shutil.rmtree(roots / entry, ignore_errors=True)
            removed.append(f"{digest} (unpacked root)")
    return removed


# --- auto-update: keeping the previous image until the new one proved itself ----------------

PREVIOUS = ".previous"  # ref name suffix of the image an update replaced


def _set_ref(index: dict[str, Any], name: str, descriptor: Mapping[str, Any] | None) -> None:
    manifests = [d for d in index.get("manifests", []) if _ref_name(d) != name]
    if descriptor is not None:
        copy = dict(descriptor)
        copy["annotations"] = {**(descriptor.get("annotations") or {}), REF_NAME_ANNOTATION: name}
        manifests.append(copy)
    index["manifests"] = manifests


def _descriptor(index: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    for descriptor in index.get("manifests", []):
        if _ref_name(descriptor) == name:
            return dict(descriptor)
    return None


def _copy_record(store: ImageStore, source: str, target: str) -> None:
    refs = store.root / "refs"
    try:
        data = (refs / f"{source}.json").read_bytes()
    except FileNotFoundError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(refs / f"{target}.json")
        return
    (refs / f".{target}.tmp").write_bytes(data)
    os.replace(refs / f".{target}.tmp", refs / f"{target}.json")


def keep_previous(store: ImageStore, name: str) -> str | None:
    """Remember what ref `name` is now (as `name.previous`), so that `restore_previous`
    can bring it back after an update; the digest kept, None when there is none."""
    with store.locked():
        index = _index(store)
        current = _descriptor(index, name)
        if current is None:
            return None
        _set_ref(index, name + PREVIOUS, current)
        _write_index(store, index)
        _copy_record(store, name, name + PREVIOUS)
        return str(current.get("digest"))


def restore_previous(store: ImageStore, name: str) -> str | None:
    """Ref `name` is again what `keep_previous` kept (rollback); its digest."""
    with store.locked():
        index = _index(store)
        previous = _descriptor(index, name + PREVIOUS)
        if previous is None:
            return None
        _set_ref(index, name, previous)
        _set_ref(index, name + PREVIOUS, None)
        _write_index(store, index)
        _copy_record(store, name + PREVIOUS, name)
        _copy_record(store, name + PREVIOUS + ".gone", name + PREVIOUS)  # removes it
        return str(previous.get("digest"))


def drop_previous(store: ImageStore, name: str, users: Mapping[str, list[str]]) -> None:
    """The update stays: forget the previous image (its unpacked root too, when unused)."""
    with store.locked():
        index = _index(store)
        previous = _descriptor(index, name + PREVIOUS)
        if previous is None:
            return
        _set_ref(index, name + PREVIOUS, None)
        _write_index(store, index)
        _copy_record(store, name + PREVIOUS + ".gone", name + PREVIOUS)
        digest = str(previous.get("digest"))
        if not users.get(digest) and not any(
            d.get("digest") == digest for d in index.get("manifests", [])
        ):
            shutil.rmtree(store.unpacked(digest), ignore_errors=True)
        _collect_blobs(store)

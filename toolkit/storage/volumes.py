"""Volumes: records in the state database and data under the state directory.

podunit.yaml(5) VOLUMES, SECRETS AND CONFIGS; podunit-runtime.md "Volumes". A
volume is a row of the `volumes` table (owned by this module: its SQL lives
here, the table is made on first use) and, for the `directory` kind, the
directory `<state dir>/volumes/NAME/_data` (as Docker and Podman lay it out).
The `bind` kind's data is its host directory `device` (never deleted by
podunit); the `tmpfs` kind has no data on disk (each container mounts a fresh
tmpfs).

A volume is in use while a container record (any status) lists it in its
options' `volumes`; `remove` refuses such a volume. An anonymous volume has a
random name and belongs to a container name and target (`owner`, `target`): the
next container of that name reuses it, and `podunit rm -v` removes it.

`needs_copy_up` is set when a volume is created and cleared by the first
container that mounts it (`toolkit.runtime.mounts`), which copies the image's
content at the mount point in when the volume is empty (Docker's rule).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from toolkit.errors import PodunitError
from toolkit.fs import make_dir, remove_tree
from toolkit.storage.state import StateStore

DRIVER = "local"
KINDS = ("directory", "bind", "tmpfs")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    device TEXT,
    options TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at REAL NOT NULL,
    anonymous INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    target TEXT,
    needs_copy_up INTEGER NOT NULL DEFAULT 1
)
"""
_COLUMNS = ("name", "kind", "device", "options", "labels", "created_at", "anonymous", "owner",
            "target", "needs_copy_up")  # fmt: skip


class VolumeNotFound(PodunitError):
    """No volume of that name."""


class VolumeInUse(PodunitError):
    """The volume is used by a container."""


class VolumeRecord:
    """One row of `volumes`, with the host path of its data (`mountpoint`)."""

    __slots__ = (*_COLUMNS, "mountpoint")
    name: str
    kind: str
    device: str | None
    options: tuple[str, ...]
    labels: dict[str, str]
    created_at: float
    anonymous: bool
    owner: str | None
    target: str | None
    needs_copy_up: bool
    mountpoint: str | None  # None for tmpfs

    def __init__(self, mountpoint: str | None, **fields: Any) -> None:
        for key in _COLUMNS:
            object.__setattr__(self, key, fields[key])
        object.__setattr__(self, "mountpoint", mountpoint)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"VolumeRecord is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VolumeRecord) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"VolumeRecord(name={self.name!r}, kind={self.kind!r})"

    def same_settings(self, kind: str, device: str | None, options: Sequence[str]) -> bool:
        return (self.kind, self.device, self.options) == (kind, device, tuple(options))

    def describe(self, used_by: Sequence[str] = ()) -> dict[str, Any]:
        """`podunit volume inspect`'s JSON (Docker's field names)."""
        options: dict[str, str] = {}
        if self.kind == "bind":
            options = {"type": "none", "o": ",".join(("bind", *self.options)),
                       "device": self.device or ""}  # fmt: skip
        elif self.kind == "tmpfs":
            options = {"type": "tmpfs", "device": "tmpfs", "o": ",".join(self.options)}
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at))
        return {
            "Name": self.name,
            "Driver": DRIVER,
            "Mountpoint": self.mountpoint,
            "CreatedAt": created,
            "Labels": self.labels,
            "Options": options,
            "Scope": "local",
            "Anonymous": self.anonymous,
            "Owner": self.owner,
            "UsedBy": list(used_by),
        }


def check_name(name: str) -> str:
    """`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, as Docker's volume names."""
    if not name or not (
        name[0].isascii() and name[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    ):  # fmt: skip
        raise PodunitError(
            f"invalid volume name {name!r}", hint="use letters, digits, '_', '.', '-'"
        )
    return name


class VolumeStore:
    """The volumes of one mode (system or user), on top of its `StateStore`."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.paths = store.paths
        try:
            exists = store.query(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'volumes'"
            )
            if not exists:
                with store.transaction() as db:
                    db.execute(_SCHEMA)
        except sqlite3.Error as error:
            raise PodunitError(f"state database {self.paths.database}: {error}") from None

    # -- rows --
    def _record(self, row: sqlite3.Row) -> VolumeRecord:
        fields = {key: row[key] for key in _COLUMNS}
        fields["options"] = tuple(json.loads(fields["options"]))
        fields["labels"] = dict(json.loads(fields["labels"]))
        fields["anonymous"] = bool(fields["anonymous"])
        fields["needs_copy_up"] = bool(fields["needs_copy_up"])
        if fields["kind"] == "directory":
            mountpoint: str | None = self.paths.volume_data(fields["name"])
        else:
            mountpoint = fields["device"]
        return VolumeRecord(mountpoint, **fields)

    def find(self, name: str) -> VolumeRecord | None:
        rows = self.store.query("SELECT * FROM volumes WHERE name = ?", (name,))
        return self._record(rows[0]) if rows else None

    def get(self, name: str) -> VolumeRecord:
        record = self.find(name)
        if record is None:
            raise VolumeNotFound(
                f"no such volume: {name}", hint="podunit volume ls lists the volumes"
            )
        return record

    def all(self) -> list[VolumeRecord]:
        rows = self.store.query("SELECT * FROM volumes ORDER BY name")
        return [self._record(row) for row in rows]

    def anonymous_of(self, owner: str, target: str) -> VolumeRecord | None:
        """The anonymous volume that container `owner` mounts at `target`, if it has one."""
        rows = self.store.query(
            "SELECT * FROM volumes WHERE anonymous = 1 AND owner = ? AND target = ?",
            (owner, target),
        )
        return self._record(rows[0]) if rows else None

    # -- create --
    def create(
        self,
        name: str | None = None,
        *,
        kind: str = "directory",
        device: str | None = None,
        options: Sequence[str] = (),
        labels: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        owner: str | None = None,
        target: str | None = None,
        exist_ok: bool = False,
    ) -> VolumeRecord:
        """Record the volume and make its data directory; a random name when `name` is None.

        An anonymous volume is one with an `owner` (a container name) and `target`.
        `exist_ok`: an existing volume of that name is returned as it is.
        """
        if kind not in KINDS:
            raise PodunitError(f"unknown volume kind {kind!r}")
        if kind == "bind":
            if not device or not os.path.isabs(device):
                raise PodunitError(f"volume {name}: a bind volume needs an absolute device path")
            if not os.path.isdir(device):
                raise PodunitError(
                    f"volume {name}: device {device} is not a directory",
                    hint="create it first (a bind volume uses the host directory as it is)",
                )
        name = check_name(name) if name is not None else os.urandom(32).hex()
        if kind == "directory":  # made before the row: whoever sees the row finds the data
            try:
                make_dir(self.paths.volumes_dir, 0o700)
                make_dir(os.path.dirname(self.paths.volume_data(name)), 0o700)
                try:
                    os.mkdir(self.paths.volume_data(name), 0o755)
                    os.chmod(self.paths.volume_data(name), 0o755)  # whatever the umask
                except FileExistsError:  # another creator's (or a half-made one's): as it is
                    pass
            except OSError as error:
                raise PodunitError(
                    f"cannot create volume {name} in {self.paths.volumes_dir}: {error.strerror}"
                ) from None
        labels = dict(labels)
        row = (name, kind, device, json.dumps(list(options)), json.dumps(labels, sort_keys=True),
               time.time(), int(owner is not None), owner, target, 1)  # fmt: skip
        try:
            with self.store.transaction() as db:
                db.execute(
                    f"INSERT INTO volumes ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                    row,
                )
        except sqlite3.IntegrityError:  # the directory is the existing volume's: kept
            if exist_ok:
                return self.get(name)
            raise PodunitError(
                f"volume {name} already exists", hint=f"podunit volume inspect {name}"
            ) from None
        return self.get(name)

    def copied_up(self, name: str) -> None:
        """The first container has mounted the volume: no copy of image content any more."""
        with self.store.transaction() as db:
            db.execute("UPDATE volumes SET needs_copy_up = 0 WHERE name = ?", (name,))

    # -- use --
    def users(self, name: str) -> list[str]:
        """The containers (any status) whose records list volume `name`."""
        return [record.name for record in self.store.all() if name in record.options.volumes]

    def users_by_volume(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for record in self.store.all():
            for name in record.options.volumes:
                found.setdefault(name, []).append(record.name)
        return found

    # -- remove --
    def _delete_row(self, name: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM volumes WHERE name = ?", (name,))

    def remove(self, name: str) -> VolumeRecord:
        """Delete the volume and its data; refused while a container uses it."""
        record = self.get(name)
        users = self.users(name)
        if users:
            listed = ", ".join(users)
            raise VolumeInUse(
                f"volume {name} is in use by container {listed}",
                hint=f"remove the container first: podunit rm {users[0]}",
            )
        self._delete_row(name)
        if record.kind == "directory":  # a bind volume's device is the user's: never deleted
            remove_tree(os.path.dirname(self.paths.volume_data(name)))
        return record

    def prune(self, *, everything: bool = False) -> list[str]:
        """Remove the unused anonymous volumes (with `everything`, every unused volume)."""
        used = self.users_by_volume()
        removed = []
        for record in self.all():
            if record.name in used or not (everything or record.anonymous):
                continue
            self.remove(record.name)
            removed.append(record.name)
        return removed

    def remove_anonymous_of(self, owner: str) -> list[str]:
        """`podunit rm -v`: the anonymous volumes of container name `owner` that no other
        container uses."""
        rows = self.store.query(
            "SELECT name FROM volumes WHERE anonymous = 1 AND owner = ?", (owner,)
        )
        used = self.users_by_volume()
        removed = []
        for row in rows:
            if row["name"] not in used:
                self.remove(row["name"])
                removed.append(row["name"])
        return removed

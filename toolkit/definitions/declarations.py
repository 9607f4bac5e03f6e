"""A file's top-level `volumes:`, `secrets:` and `configs:` (podunit.yaml(5) VOLUMES, SECRETS).

Both forms declare them the same way (the Compose specification's shapes); a
container refers to them by key (`data:/var/lib/db`, `secrets: [token]`) and the
parser (`toolkit.definitions.mounts`) resolves the reference against the
`Declarations` of its file, so a `Container` carries everything it needs
(`Container.volumes`, `Container.secrets`) and the runtime never reads YAML.

Naming (Compose's): a Compose file's volume `data` of project `shop` is the volume
`shop_data` in podunit's store; `name:` gives the real name as it is (and so does
`external` with no `name:`, which names an existing volume). The own form has no
project: a volume's name is its key, or `name:`.

Pure: nothing here touches the file system; whether a secret's file exists is
checked by `podunit validate` (`toolkit.definitions.loader`) and at start.
"""

from __future__ import annotations

from typing import Any

from toolkit.definitions import values as v
from toolkit.definitions.model import Container, Declarations, Secret, Volume
from toolkit.definitions.readers import boolean, check_keys, fail, non_empty, pairs, text
from toolkit.definitions.tree import Entry, Node
from toolkit.errors import DefinitionError

VOLUME_KEYS = frozenset({"driver", "driver_opts", "external", "name", "labels"})
DRIVER_OPTS_KEYS = frozenset({"type", "o", "device"})
SECRET_KEYS = frozenset({"file", "environment", "external", "name", "labels"})
CONFIG_KEYS = SECRET_KEYS | {"content"}
# Keys of the Compose specification that only a Swarm (or a secrets plugin) can honour.
SWARM_SECRET_KEYS = frozenset({"driver", "driver_opts", "template_driver"})
TMPFS_OPTIONS = frozenset({"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks"})
TMPFS_FLAGS = frozenset({"ro", "rw", "nosuid", "nodev", "noexec", "exec", "suid", "dev"})


def parse_declarations(
    document: Node, base_dir: str, errors: list[DefinitionError], *,
    compose: bool, project: str | None = None,
) -> Declarations:  # fmt: skip
    """The file's top-level `volumes:`, `secrets:`, `configs:`; one error per problem.

    `project` (Compose files) prefixes the real names of the volumes."""
    found: dict[str, dict[str, Any]] = {"volumes": {}, "secrets": {}, "configs": {}}
    broken: set[str] = set()
    entries = document.value if document.is_mapping else {}
    for key, into in found.items():
        holder = entries.get(key)
        if holder is None or holder.node.value is None:
            continue
        if not holder.node.is_mapping:
            errors.append(fail(holder.node, f"'{key}' must be a mapping of names"))
            continue
        for name, entry in holder.node.value.items():
            if name.startswith("x-"):
                continue
            try:
                if key == "volumes":
                    into[name] = _volume(name, entry, base_dir, project)
                else:
                    into[name] = _secret_like(name, entry, base_dir, config=key == "configs")
            except DefinitionError as error:
                errors.append(error)
                broken.add(f"{key}:{name}")
    return Declarations(
        found["volumes"], found["secrets"], found["configs"], compose, frozenset(broken)
    )


def _name(entry: Entry, name: str, what: str) -> None:
    try:
        v.check_volume_name(name)
    except ValueError:
        raise fail(entry.key_loc, f"invalid {what} name {v.quote(name)}") from None


def _external(node: Node) -> tuple[bool, str | None]:
    """`external: true`, or the legacy `external: {name: N}` (Compose still reads it)."""
    if node.is_mapping:
        keys = check_keys(node, ("name",), "external")
        return True, non_empty(keys["name"].node, "external name") if "name" in keys else None
    return boolean(node, "external"), None


def _volume(key: str, entry: Entry, base_dir: str, project: str | None) -> Volume:
    _name(entry, key, "volume")
    node = entry.node
    if node.value is None:
        keys: dict[str, Entry] = {}
    else:
        keys = check_keys(node, VOLUME_KEYS, f"volume {v.quote(key)}")
    external, external_name = _external(keys["external"].node) if "external" in keys else (
        False, None)  # fmt: skip
    if external:
        for other in ("driver", "driver_opts", "labels"):
            if other in keys:
                raise fail(
                    keys[other].key_loc,
                    f"volume {v.quote(key)} is external: '{other}' cannot be set "
                    "(an external volume is used as it is)",
                )
    if "driver" in keys:
        driver = text(keys["driver"].node, "driver")
        if driver != "local":
            raise fail(
                keys["driver"].node,
                f"volume driver {v.quote(driver)} is not supported by podunit (only 'local'); "
                "mount network storage on the host and use a bind mount, or driver_opts "
                "type: none, o: bind, device: PATH",
            )
    real = key
    if "name" in keys:
        real = non_empty(keys["name"].node, "name")
        try:
            v.check_volume_name(real)
        except ValueError as error:
            raise fail(keys["name"].node, str(error)) from None
    elif external_name is not None:
        real = external_name
    elif project and not external:
        real = f"{project}_{key}"
    kind, device, options = "directory", None, tuple[str, ...]()
    if "driver_opts" in keys:
        kind, device, options = _driver_opts(keys["driver_opts"].node, key, base_dir)
    labels = pairs(keys["labels"].node, "label") if "labels" in keys else ()
    return Volume(real, kind, device, options, external, labels)


def _driver_opts(node: Node, key: str, base_dir: str) -> tuple[str, str | None, tuple[str, ...]]:
    """`{type: none, o: bind, device: PATH}` or `{type: tmpfs, device: tmpfs, o: size=64m}`."""
    keys = check_keys(node, DRIVER_OPTS_KEYS, f"driver_opts of volume {v.quote(key)}")
    if "type" not in keys:
        raise fail(node, "driver_opts needs 'type' (none with o: bind, or tmpfs)")
    kind = text(keys["type"].node, "driver_opts type")
    words = text(keys["o"].node, "driver_opts o").split(",") if "o" in keys else []
    words = [word for word in words if word]
    if kind in ("none", "bind"):
        if not {"bind", "rbind"} & set(words):
            raise fail(
                keys["o"].node if "o" in keys else node,
                "driver_opts type none needs o: bind (podunit's local volumes are "
                "directories, bind mounts of a host directory, or tmpfs)",
            )
        if "device" not in keys:
            raise fail(node, "driver_opts o: bind needs 'device' (the host directory)")
        device = v.resolve_host_path(non_empty(keys["device"].node, "device"), base_dir)
        options = [word for word in words if word not in ("bind", "rbind")]
        for word in options:
            if word not in ("ro", "rw") and word not in v.PROPAGATIONS:
                raise fail(keys["o"].node, f"unknown bind option {v.quote(word)} in driver_opts o")
        return "bind", device, tuple(options)
    if kind == "tmpfs":
        for word in words:
            name, equals, value = word.partition("=")
            if equals and name in TMPFS_OPTIONS and value:
                if name == "size":
                    try:
                        v.parse_size(value)
                    except ValueError as error:
                        raise fail(keys["o"].node, str(error)) from None
            elif word not in TMPFS_FLAGS:
                raise fail(keys["o"].node, f"unknown tmpfs option {v.quote(word)} in driver_opts o")
        return "tmpfs", None, tuple(words)
    raise fail(
        keys["type"].node,
        f"volume type {v.quote(kind)} is not supported by podunit (none with o: bind, or "
        "tmpfs); mount other file systems on the host and bind-mount them",
    )


def _secret_like(key: str, entry: Entry, base_dir: str, *, config: bool) -> Secret:
    what = "config" if config else "secret"
    _name(entry, key, what)
    allowed = (CONFIG_KEYS if config else SECRET_KEYS) | SWARM_SECRET_KEYS
    keys = check_keys(entry.node, allowed, f"{what} {v.quote(key)}")
    for swarm in SWARM_SECRET_KEYS & set(keys):
        raise fail(
            keys[swarm].key_loc,
            f"{what} key {v.quote(swarm)} needs a Swarm and is not supported by podunit; "
            "use 'file:' or 'environment:'",
        )
    if "external" in keys and _external(keys["external"].node)[0]:
        raise fail(
            keys["external"].key_loc,
            f"external {what}s live in a Swarm and are not supported by podunit; "
            "use 'file:' or 'environment:'",
        )
    if "name" in keys:
        text(keys["name"].node, "name")  # a Swarm's name for it: nothing to do here
    if "labels" in keys:
        pairs(keys["labels"].node, "label")
    sources = [k for k in ("file", "environment", "content") if k in keys]
    if len(sources) != 1:
        choices = "'file', 'environment' or 'content'" if config else "'file' or 'environment'"
        where = keys[sources[1]].key_loc if len(sources) > 1 else entry.key_loc
        raise fail(where, f"{what} {v.quote(key)} needs exactly one of {choices}")
    source = sources[0]
    if source == "file":
        path = v.resolve_host_path(non_empty(keys["file"].node, "file"), base_dir)
        return Secret(key, "", file=path, config=config)
    if source == "environment":
        name = non_empty(keys["environment"].node, "environment")
        if "=" in name or v.has_control(name):
            raise fail(keys["environment"].node, f"invalid variable name {v.quote(name)}")
        return Secret(key, "", environment=name, config=config)
    return Secret(key, "", content=text(keys["content"].node, "content", multiline=True),
                  config=True)  # fmt: skip


def conflicting_volumes(containers: dict[str, Container]) -> dict[str, str]:
    """Containers that declare a volume (by its real name) otherwise than a container before
    them (files in search order), as unit name -> message. External declarations only
    refer to a volume and never conflict; the first declaration wins, as at start."""
    first: dict[str, tuple[Volume, Container]] = {}
    problems: dict[str, str] = {}
    for unit_name, container in containers.items():
        for volume in container.volumes:
            if volume.external:
                continue
            seen = first.setdefault(volume.name, (volume, container))
            if seen[0] != volume and unit_name not in problems:
                other = seen[1]
                problems[unit_name] = (
                    f"volume {v.quote(volume.name)} is declared otherwise for container "
                    f"{v.quote(other.name)} ({other.source.path}:{other.source.line}); "
                    "one volume has one set of settings"
                )
    return problems

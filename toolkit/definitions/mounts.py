"""The own form's storage keys: `volumes` (short and long syntax, named volumes), `tmpfs`,
`secrets` and `configs` (podunit.yaml(5) "volumes", "tmpfs", "secrets"; spec §1.1).
"""

from __future__ import annotations

from typing import Any

from toolkit.definitions import values as v
from toolkit.definitions.model import Declarations, Mount, MountType, Secret, Volume
from toolkit.definitions.readers import (
    Context,
    Fields,
    Handler,
    boolean,
    check_keys,
    choice,
    converted,
    fail,
    non_empty,
    quote_node,
    sequence,
    size,
    text,
)
from toolkit.definitions.tree import Node

VOLUME_KEYS = frozenset(
    {"type", "source", "target", "read_only", "size", "bind", "tmpfs", "volume", "consistency"}
)
BIND_KEYS = frozenset({"propagation", "create_host_path", "selinux"})
SECRET_REFERENCE_KEYS = frozenset({"source", "target", "uid", "gid", "mode"})
SECRETS_DIR = "/run/secrets"


def _long_volume(node: Node, ctx: Context) -> Mount:
    keys = check_keys(node, VOLUME_KEYS, "volume")
    if "type" not in keys or "target" not in keys:
        raise fail(node, "a volume mapping needs 'type' and 'target'")
    kind = MountType(choice(keys["type"].node, "volume type", [t.value for t in MountType]))
    target = converted(keys["target"].node, v.check_container_path, "target")
    read_only = boolean(keys["read_only"].node, "read_only") if "read_only" in keys else False
    source, options, mount_size = None, [], None
    if "consistency" in keys:
        text(keys["consistency"].node, "consistency")  # Docker Desktop's file sharing: no effect
    if kind is MountType.TMPFS:
        if "source" in keys:
            raise fail(keys["source"].key_loc, "a tmpfs volume has no 'source'")
    elif kind is MountType.BIND:
        if "source" not in keys:
            raise fail(node, "a bind volume needs 'source'")
        source = v.resolve_host_path(non_empty(keys["source"].node, "source"), ctx.base_dir)
    elif "source" in keys:  # a named volume; without a source an anonymous one
        source = converted(
            keys["source"].node, lambda s: v.check_volume_name(s, template=ctx.template), "source"
        )
    if "size" in keys:
        mount_size = size(keys["size"].node, "size")
    for sub_key, wanted in (
        ("bind", MountType.BIND),
        ("tmpfs", MountType.TMPFS),
        ("volume", MountType.VOLUME),
    ):
        if sub_key not in keys:
            continue
        if kind is not wanted:
            raise fail(keys[sub_key].key_loc, f"'{sub_key}' options on a {kind.value} volume")
        sub_node = keys[sub_key].node
        if sub_key == "bind":
            sub = check_keys(sub_node, BIND_KEYS, "bind")
            if "propagation" in sub:
                options.append(choice(sub["propagation"].node, "propagation", v.PROPAGATIONS))
            if "create_host_path" in sub and boolean(
                sub["create_host_path"].node, "create_host_path"
            ):
                options.append(v.CREATE_HOST_PATH)
            if "selinux" in sub:  # relabelling: no SELinux here, accepted as Docker does then
                choice(sub["selinux"].node, "selinux", ("z", "Z"))
        elif sub_key == "tmpfs":
            sub = check_keys(sub_node, ("size", "mode"), "tmpfs")
            if "size" in sub:
                mount_size = size(sub["size"].node, "size")
            if "mode" in sub:
                mode = sub["mode"].node
                digits = mode.raw if isinstance(mode.value, int) else text(mode, "mode")
                options.append(f"mode={digits}")
        else:
            sub = check_keys(sub_node, ("nocopy",), "volume")
            if "nocopy" in sub and boolean(sub["nocopy"].node, "nocopy"):
                options.append("nocopy")
    if mount_size is not None and kind is not MountType.TMPFS:
        raise fail(node, "'size' applies only to tmpfs volumes")
    return Mount(kind, target, source, read_only, mount_size, tuple(options))


def _named_volume(mount: Mount, node: Node, ctx: Context, used: dict[str, Volume]) -> Mount:
    """A named volume's mount with the volume's real name; its declaration noted in `used`."""
    if mount.type is not MountType.VOLUME or mount.source is None:
        return mount
    declared = ctx.declarations.volumes.get(mount.source)
    if declared is None:
        _check_not_broken(ctx.declarations, "volumes", mount.source, node)
        if ctx.declarations.compose:
            raise fail(
                node,
                f"volume {v.quote(mount.source)} is not declared under the top-level "
                f"'volumes:'{v.did_you_mean(mount.source, ctx.declarations.volumes)}",
                hint=f"add it: volumes: {{{mount.source}: {{}}}}",
            )
        return mount  # the own form: an undeclared name is a plain local volume
    used[declared.name] = declared
    return mount._replace(source=declared.name)


def key_volumes(node: Node, ctx: Context, out: Fields) -> None:
    mounts = []
    used: dict[str, Volume] = {volume.name: volume for volume in out.get("volumes", ())}
    for item in sequence(node, "volumes"):
        if item.is_mapping:
            mount = _long_volume(item, ctx)
        else:
            mount = converted(
                item, lambda s: v.parse_volume(s, ctx.base_dir, template=ctx.template), "volume"
            )
            if ctx.declarations.compose and mount.type is MountType.BIND:
                # the Compose specification: the short syntax implies create_host_path
                mount = mount._replace(options=(*mount.options, v.CREATE_HOST_PATH))
        mounts.append(_named_volume(mount, item, ctx, used))
    out["mounts"] = (*out.get("mounts", ()), *mounts)
    if used:
        out["volumes"] = tuple(used.values())


def _numeric_id(node: Node, what: str) -> int:
    raw = node.raw if node.raw is not None else ""
    if not raw.isdigit() or int(raw) > 0xFFFFFFFE:
        raise fail(node, f"{what} must be a number 0..4294967294, not {quote_node(node)}")
    return int(raw)


def _file_mode(node: Node) -> int:
    """`0440` or `0o440` (octal, as Compose writes it), or a decimal number (YAML 1.1 reads an
    unquoted 0440 as octal already)."""
    raw = node.raw or ""
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        value = node.value
    else:
        digits = raw.removeprefix("0o")
        if not (raw.startswith("0") and digits.isdigit() and set(digits) <= set("01234567")):
            raise fail(node, f"mode {quote_node(node)} must be an octal number such as 0440")
        value = int(digits, 8)
    if not 0 <= value <= 0o7777:
        raise fail(node, f"mode {quote_node(node)} out of range 0..07777")
    return value


def _check_not_broken(declarations: Declarations, top: str, key: str, node: Node) -> None:
    if f"{top}:{key}" in declarations.broken:
        what = top.rstrip("s")
        raise fail(node, f"{what} {v.quote(key)} cannot be used: its declaration has errors")


def _secret_reference(item: Node, declarations: Declarations, config: bool) -> Secret:
    """A `secrets:`/`configs:` item (a name, or `{source, target, uid, gid, mode}`) resolved
    against the file's top-level declarations."""
    what = "config" if config else "secret"
    declared = declarations.configs if config else declarations.secrets
    fields: dict[str, Any] = {}
    source_node = item
    target = None
    if item.is_mapping:
        keys = check_keys(item, SECRET_REFERENCE_KEYS, what)
        if "source" not in keys:
            raise fail(item, f"a {what} reference needs 'source'")
        source_node = keys["source"].node
        if "target" in keys:
            target = non_empty(keys["target"].node, "target")
        for id_key in ("uid", "gid"):
            if id_key in keys:
                fields[id_key] = _numeric_id(keys[id_key].node, id_key)
        if "mode" in keys:
            fields["mode"] = _file_mode(keys["mode"].node)
    source = non_empty(source_node, what)
    top = "configs" if config else "secrets"
    if source not in declared:
        _check_not_broken(declarations, top, source, source_node)
        raise fail(
            source_node,
            f"{what} {v.quote(source)} is not declared under the top-level '{top}:'"
            f"{v.did_you_mean(source, declared)}",
        )
    target = target or source
    if not target.startswith("/"):
        target = f"/{target}" if config else f"{SECRETS_DIR}/{target}"
    if "/../" in f"{target}/" or "/./" in f"{target}/":
        raise fail(item, f"{what} target {v.quote(target)} must be a plain absolute path")
    secret: Secret = declared[source]._replace(target=target, **fields)
    return secret


def key_secrets(config: bool) -> Handler:
    def handler(node: Node, ctx: Context, out: Fields) -> None:
        what = "configs" if config else "secrets"
        found = [_secret_reference(item, ctx.declarations, config) for item in sequence(node, what)]
        out["secrets"] = (*out.get("secrets", ()), *found)

    return handler


def key_tmpfs(node: Node, ctx: Context, out: Fields) -> None:
    mounts = tuple(
        converted(item, v.parse_tmpfs, "tmpfs") for item in sequence(node, "tmpfs", scalar_ok=True)
    )
    out["mounts"] = (*out.get("mounts", ()), *mounts)

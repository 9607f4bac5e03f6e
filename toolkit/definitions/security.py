"""The own form's security keys: `cap_add`, `cap_drop`, `seccomp`, `devices`, `sysctls`,
`ulimits` and `security_opt` (podunit.yaml(5); spec §1.1). `privileged` and
`no_new_privileges` are plain flags (`parse`).
"""

from __future__ import annotations

from toolkit.definitions import values as v
from toolkit.definitions.model import Ulimit
from toolkit.definitions.readers import (
    Context,
    Fields,
    Handler,
    check_keys,
    converted,
    fail,
    integer,
    node_kind,
    non_empty,
    pairs,
    sequence,
    unknown,
)
from toolkit.definitions.tree import Node

ULIMIT_KEYS = frozenset({"soft", "hard"})


def key_capabilities(field: str) -> Handler:
    def handler(node: Node, ctx: Context, out: Fields) -> None:
        out[field] = tuple(
            converted(item, v.parse_capability, field) for item in sequence(node, field)
        )

    return handler


def key_seccomp(node: Node, ctx: Context, out: Fields) -> None:
    value = non_empty(node, "seccomp")
    out["seccomp"] = (
        value if value in ("default", "unconfined") else v.resolve_host_path(value, ctx.base_dir)
    )


def _device(spec: str) -> str:
    v.parse_device(spec)  # the runtime reads it with the same function
    return spec


def key_devices(node: Node, ctx: Context, out: Fields) -> None:
    out["devices"] = tuple(converted(item, _device, "device") for item in sequence(node, "devices"))


def _sysctl_name(name: str) -> str:
    if any(c.isspace() for c in name):
        raise ValueError(f"invalid sysctl name {v.quote(name)}")
    return name


def key_sysctls(node: Node, ctx: Context, out: Fields) -> None:
    out["sysctls"] = pairs(node, "sysctl", check_key=_sysctl_name)


def key_ulimits(node: Node, ctx: Context, out: Fields) -> None:
    if not node.is_mapping:
        raise fail(node, f"ulimits must be a mapping, not {node_kind(node)}")
    limits = []
    for name, entry in node.value.items():
        if name.startswith("x-"):
            continue
        if name not in v.ULIMITS:
            raise unknown(entry.key_loc, "ulimit", name, v.ULIMITS)
        if entry.node.is_mapping:
            keys = check_keys(entry.node, ULIMIT_KEYS, f"ulimit {name}")
            if set(keys) != ULIMIT_KEYS:
                raise fail(entry.node, f"ulimit {v.quote(name)} needs both 'soft' and 'hard'")
            soft = integer(keys["soft"].node, "soft", 0)
            hard = integer(keys["hard"].node, "hard", 0)
            if soft > hard:
                raise fail(entry.node, f"ulimit {v.quote(name)}: soft {soft} exceeds hard {hard}")
        else:
            soft = hard = integer(entry.node, f"ulimit {name}", 0)
        limits.append(Ulimit(name, soft, hard))
    out["ulimits"] = tuple(limits)


def key_security_opt(node: Node, ctx: Context, out: Fields) -> None:
    """Kept as written; each must be one the runtime applies (values.security_opt)."""
    items = sequence(node, "security_opt")
    out["security_opt"] = tuple(converted(item, _checked_security_opt, "security_opt")
                                for item in items)  # fmt: skip


def _checked_security_opt(text: str) -> str:
    v.security_opt(text)
    return text

"""Reading located YAML nodes into checked values, and what every key handler shares.

The own form's key handlers (`parse` and its topic modules `mounts`, `networking`,
`security`, `healthchecks`) and the Compose translation (`compose`, `networks`,
`declarations`) read nodes with these, so every error is located `FILE:LINE:COLUMN`
(spec §1.1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from toolkit.definitions import values as v
from toolkit.definitions.model import NO_DECLARATIONS, Declarations
from toolkit.definitions.tree import Entry, Node
from toolkit.errors import DefinitionError, Location

Pairs = tuple[tuple[str, str], ...]

Fields = dict[str, Any]
"""The model fields a container's key handlers set, by name."""


def fail(node: Node | Location, message: str, *, hint: str | None = None) -> DefinitionError:
    return DefinitionError(node if isinstance(node, Location) else node.loc, message, hint=hint)


def unknown(
    loc: Location, what: str, name: str, known: Iterable[str], where: str = ""
) -> DefinitionError:
    """`unknown key 'imagee' (did you mean 'image'?)`, `unknown key 'x' in healthcheck`."""
    place = f" in {where}" if where else ""
    return fail(loc, f"unknown {what} {v.quote(name)}{place}{v.did_you_mean(name, known)}")


def node_kind(node: Node) -> str:
    if node.is_mapping:
        return "a mapping"
    if node.is_sequence:
        return "a list"
    return "null" if node.value is None else f"{quote_node(node)}"


def quote_node(node: Node) -> str:
    return v.quote(node.raw) if node.raw is not None else node_kind(node)


def check_keys(node: Node, allowed: Iterable[str], where: str) -> dict[str, Entry]:
    """The mapping's entries; unknown keys (except `x-*`) are errors with a suggestion."""
    if not node.is_mapping:
        raise fail(node, f"{where} must be a mapping, not {node_kind(node)}")
    allowed = frozenset(allowed)
    entries: dict[str, Entry] = {}
    for key, entry in node.value.items():
        if key.startswith("x-"):
            continue
        if key not in allowed:
            raise unknown(entry.key_loc, "key", key, allowed, where)
        entries[key] = entry
    return entries


def text(node: Node, what: str, *, multiline: bool = False) -> str:
    """A scalar as the text written in the YAML (so `22:22` stays `22:22`, `yes` stays `yes`).

    Unless `multiline`, control characters are refused: the value may end up in a unit file.
    """
    if node.raw is None or node.value is None:
        raise fail(node, f"{what} must be a string, not {node_kind(node)}")
    result = node.value if isinstance(node.value, str) else node.raw
    if not multiline and v.has_control(result):
        raise fail(node, f"{what} {v.quote(result)} contains a control character or newline")
    return result


def non_empty(node: Node, what: str) -> str:
    result = text(node, what)
    if not result:
        raise fail(node, f"{what} must not be empty")
    return result


def boolean(node: Node, what: str) -> bool:
    if isinstance(node.value, bool):
        return node.value
    if isinstance(node.value, str) and node.value.lower() in ("true", "false"):
        return node.value.lower() == "true"
    raise fail(node, f"{what} must be true or false, not {node_kind(node)}")


def integer(node: Node, what: str, low: int, high: int | None = None) -> int:
    value = node.value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(node, f"{what} must be an integer, not {node_kind(node)}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise fail(node, f"{what} {v.quote(node.raw)} out of range {bound}")
    return value


def sequence(node: Node, what: str, *, scalar_ok: bool = False) -> list[Node]:
    """The items of a list; a single scalar counts as a one-item list if `scalar_ok`."""
    if node.is_sequence:
        items: list[Node] = node.value
        return items
    if scalar_ok and node.is_scalar and node.value is not None:
        return [node]
    raise fail(node, f"{what} must be a list, not {node_kind(node)}")


def converted(node: Node, convert: Callable[[str], Any], what: str) -> Any:
    """`convert(text)` with its ValueError turned into a located error."""
    try:
        return convert(text(node, what))
    except ValueError as error:
        raise fail(node, str(error)) from None


def duration(node: Node, what: str) -> timedelta:
    if isinstance(node.value, int | float) and not isinstance(node.value, bool):
        if node.value < 0:
            raise fail(node, f"{what} {v.quote(node.raw)} must not be negative")
        try:
            return v.seconds_to_timedelta(node.value, node.raw)
        except ValueError as error:
            raise fail(node, f"{what}: {error}") from None
    result: timedelta = converted(node, v.parse_duration, what)
    return result


def size(node: Node, what: str) -> int:
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        if node.value < 0:
            raise fail(node, f"{what} {v.quote(node.raw)} must not be negative")
        return node.value
    result: int = converted(node, v.parse_size, what)
    return result


def signal(node: Node, what: str) -> int:
    result: int = converted(node, v.parse_signal, what)
    return result


def argv(node: Node, what: str) -> tuple[str, ...]:
    """A list of strings, or a string split like a POSIX shell."""
    if node.is_sequence:
        return tuple(text(item, f"{what} item", multiline=True) for item in node.value)
    result: tuple[str, ...] = converted(node, v.shell_split, what)
    return result


def pairs(node: Node, what: str, *, check_key: Callable[[str], str] | None = None) -> Pairs:
    """A mapping, or a list of `K=V` strings, as ordered (key, value) pairs."""
    result: list[tuple[str, str]] = []
    if node.is_mapping:
        for key, entry in node.value.items():
            if entry.node.value is None:
                raise fail(
                    entry.node,
                    f'{what} {v.quote(key)} has no value (write {key}: "" for an empty one; '
                    "the host's environment is not passed through)",
                )
            result.append((key, text(entry.node, f"{what} value", multiline=True)))
            check_pair_key(entry.key_loc, key, what, check_key)
    else:
        for item in sequence(node, what):
            item_text = text(item, f"{what} item", multiline=True)
            key, equals, value = item_text.partition("=")
            if not equals:
                raise fail(item, f"{what} item {v.quote(item_text)} must be KEY=VALUE")
            check_pair_key(item.loc, key, what, check_key)
            result.append((key, value))
    return tuple(result)


def check_pair_key(
    loc: Location, key: str, what: str, check_key: Callable[[str], str] | None
) -> None:
    if not key or "=" in key or v.has_control(key):
        raise fail(loc, f"invalid {what} name {v.quote(key)}")
    if check_key:
        try:
            check_key(key)
        except ValueError as error:
            raise fail(loc, str(error)) from None


def strings(node: Node, what: str, *, scalar_ok: bool = True) -> tuple[str, ...]:
    return tuple(non_empty(item, what) for item in sequence(node, what, scalar_ok=scalar_ok))


def choice(node: Node, what: str, options: Iterable[str]) -> str:
    options = tuple(options)
    value = text(node, what)
    if value not in options:
        listed = ", ".join(options)
        raise fail(node, f"invalid {what} {v.quote(value)} (one of: {listed})")
    return value


# ---------------------------------------------------------------- the key handlers


class Context:
    """What a key handler needs besides its node."""

    def __init__(
        self, base_dir: str, template: bool, declarations: Declarations = NO_DECLARATIONS
    ) -> None:
        self.base_dir = base_dir
        self.template = template
        self.declarations = declarations


Handler = Callable[[Node, Context, Fields], None]
"""A key's handler: reads the key's node and sets its fields."""

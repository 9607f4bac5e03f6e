"""YAML read into a tree of located values, and drop-in merging (spec §1, §1.2).

Files are composed with libyaml (PyYAML's `CParser` with the safe loader's
resolver, as `yaml.CSafeLoader` but without its constructor; the pure Python
`SafeLoader` only when libyaml is missing). Composing stops before any
object is constructed, so no tag can build an object; every node keeps the file,
line and column it came from, and scalars keep their raw text, so that YAML 1.1
surprises (`22:22` read as the base-60 integer 1342, `no` read as false) can be
undone where a string was meant.
"""

from __future__ import annotations

from typing import Any, ClassVar

import yaml

from toolkit.errors import DefinitionError, Location, UnreadableFile
from toolkit.safefile import read_bytes

try:  # libyaml's parser and composer with the safe resolver, without a constructor
    from yaml._yaml import CParser

    class _CComposer(CParser, yaml.resolver.Resolver):
        """Only composition is used: a CSafeLoader without the constructor's set-up."""

    _LOADER: Any = _CComposer
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _LOADER = yaml.SafeLoader
_TAG = "tag:yaml.org,2002:"
_INT, _FLOAT, _BOOL, _NULL = _TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"
_STR, _MERGE, _TIMESTAMP = _TAG + "str", _TAG + "merge", _TAG + "timestamp"
_SEQ, _MAP = _TAG + "seq", _TAG + "map"
_BOOLS = {"yes": True, "true": True, "on": True, "y": True,
          "no": False, "false": False, "off": False, "n": False}  # fmt: skip


class Node:
    """One YAML value with its location.

    `value` is a `str`, `int`, `float`, `bool` or `None` for scalars, a
    `list[Node]` for sequences and a `dict[str, Entry]` for mappings.
    `raw` is the scalar's text exactly as written (None for collections).
    The `Location` is built only when asked for (errors are the rare path).
    """

    __slots__ = ("column", "line", "path", "raw", "value")

    def __init__(self, value: Any, path: str, line: int, column: int, raw: str | None = None):
        self.value = value
        self.path = path
        self.line = line
        self.column = column
        self.raw = raw

    @classmethod
    def at(cls, value: Any, loc: Location, raw: str | None = None) -> Node:
        return cls(value, loc.path, loc.line, loc.column, raw)

    @property
    def loc(self) -> Location:
        return Location(self.path, self.line, self.column)

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.value, list)

    @property
    def is_scalar(self) -> bool:
        return self.raw is not None

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Node({self.value!r} @ {self.loc})"


class Entry:
    """A mapping entry: the key (as a scalar node, for its location) and the value node."""

    __slots__ = ("key", "node")

    def __init__(self, key: Node, node: Node) -> None:
        self.key = key
        self.node = node

    @property
    def key_loc(self) -> Location:
        return self.key.loc


Mapping = dict[str, Entry]


def _int(text: str) -> int:
    """A YAML 1.1 integer: sign, `0x`, `0b`, leading-zero octal, `_`, base 60."""
    text = text.replace("_", "")
    sign = -1 if text[:1] == "-" else 1
    if text[:1] in "+-":
        text = text[1:]
    if text.startswith("0x"):
        return sign * int(text[2:], 16)
    if text.startswith("0b"):
        return sign * int(text[2:], 2)
    if ":" in text:
        value = 0
        for digit in text.split(":"):
            value = value * 60 + int(digit)
        return sign * value
    if len(text) > 1 and text[0] == "0":
        return sign * int(text, 8)
    return sign * int(text)


def _scalar(tag: str, text: str) -> Any:
    if tag in (_STR, _TIMESTAMP, _MERGE, "!"):
        return text
    if tag == _INT:
        return _int(text)
    if tag == _BOOL:
        return _BOOLS[text.lower()]
    if tag == _NULL:
        return None
    if tag == _FLOAT:
        lowered = text.lower().replace("_", "")
        if lowered.endswith(".inf"):
            return float("-inf") if lowered[0] == "-" else float("inf")
        return float("nan") if lowered == ".nan" else float(lowered)
    raise ValueError(tag)


def loader_class(base: Any) -> Any:
    """`base` (a safe loader class) with a memoised tag resolver; it has no path resolvers."""

    class Loader(base):  # type: ignore[misc]
        _tags: ClassVar[dict[str, str]] = {}

        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            pass

        def ascend_resolver(self) -> None:
            pass

        def resolve(self, kind: Any, value: Any, implicit: tuple[bool, bool]) -> str:
            if kind is not _ScalarNode:
                return _SEQ if kind is _SequenceNode else _MAP
            if not implicit[0]:
                return _STR
            tag = self._tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(self._tags) < 4096:
                    self._tags[value] = tag
            return tag

    return Loader


_Loader = loader_class(_LOADER)
_ScalarNode, _SequenceNode = yaml.ScalarNode, yaml.SequenceNode


class _Converter:
    """Turns PyYAML nodes of one file into `Node`s (aliases shared, cycles refused)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.done: dict[int, Node] = {}
        self.active: set[int] = set()

    def loc(self, yaml_node: Any) -> Location:
        mark = yaml_node.start_mark
        return Location(self.path, mark.line + 1, mark.column + 1)

    def convert(self, node: Any) -> Node:
        value = node.value
        mark = node.start_mark
        if value.__class__ is str:
            try:
                scalar = _scalar(node.tag, value)
            except ValueError:
                raise DefinitionError(
                    self.loc(node), f"YAML tag '{node.tag}' is not allowed"
                ) from None
            return Node(scalar, self.path, mark.line + 1, mark.column + 1, value)
        key = id(node)
        known = self.done.get(key)
        if known is not None:
            return known
        if key in self.active:
            raise DefinitionError(self.loc(node), "recursive YAML alias")
        self.active.add(key)
        if node.tag != _MAP and node.tag != _SEQ:
            raise DefinitionError(self.loc(node), f"YAML tag '{node.tag}' is not allowed")
        if value.__class__ is list and node.__class__ is _SequenceNode:
            path = self.path  # string scalars, the common case, without a call each
            content: Any = [
                Node(
                    item.value,
                    path,
                    item.start_mark.line + 1,
                    item.start_mark.column + 1,
                    item.value,
                )
                if item.tag == _STR and item.value.__class__ is str
                else self.convert(item)
                for item in value
            ]
        else:
            content = self.mapping(node)
        result = Node(content, self.path, mark.line + 1, mark.column + 1)
        self.active.discard(key)
        self.done[key] = result
        return result

    def mapping(self, node: Any) -> Mapping:
        entries: Mapping = {}
        merged: Mapping = {}
        path = self.path
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged = {**self.merge_sources(value_node), **merged}
                continue
            if not isinstance(key_node.value, str):
                raise DefinitionError(self.loc(key_node), "mapping keys must be scalars")
            key = key_node.value
            if key in entries:
                raise DefinitionError(self.loc(key_node), f"duplicate key '{key}'")
            mark = key_node.start_mark
            key_at = Node(key, path, mark.line + 1, mark.column + 1, key)
            value = value_node.value
            if value_node.tag == _STR and value.__class__ is str:  # without a call
                mark = value_node.start_mark
                entries[key] = Entry(
                    key_at, Node(value, path, mark.line + 1, mark.column + 1, value)
                )
            else:
                entries[key] = Entry(key_at, self.convert(value_node))
        return {**merged, **entries} if merged else entries

    def merge_sources(self, value_node: Any) -> Mapping:
        """`<<: *a` or `<<: [*a, *b]` (earlier sources win, as in YAML 1.1)."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        result: Mapping = {}
        for source in reversed(sources):
            converted = self.convert(source)
            if not converted.is_mapping:
                raise DefinitionError(converted.loc, "'<<' merges only mappings")
            result.update(converted.value)
        return result


def read_file(path: str) -> Node | None:
    """The file's document as a `Node` tree (None for an empty file).

    Raises `DefinitionError` located at the problem for unreadable files (read with
    `toolkit.safefile`: regular files of at most 4 MiB, never blocking), YAML
    syntax errors, several documents, disallowed tags and recursive aliases.
    """
    name = path
    try:
        data = read_bytes(path)
        loader = _Loader(data)
        try:
            document = loader.get_single_node()
        finally:
            loader.dispose()
    except UnreadableFile as error:
        raise DefinitionError(Location(name, 1, 1), f"cannot read: {error.reason}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name, 1, 1)
        problem = error.problem or error.context or "invalid YAML"
        raise DefinitionError(where, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:  # ReaderError: bad encoding, non-printable characters
        raise DefinitionError(Location(name, 1, 1), f"cannot read YAML: {error}") from None
    if document is None:
        return None
    return _Converter(name).convert(document)


def merge(base: Node, overlay: Node) -> Node:
    """Drop-in semantics (spec §1): mappings merge key by key, lists and scalars
    replace, an explicit `null` deletes the key. Neither input is modified."""
    if not (base.is_mapping and overlay.is_mapping):
        return overlay
    result: Mapping = dict(base.value)
    for key, entry in overlay.value.items():
        if entry.node.value is None and entry.node.is_scalar:
            result.pop(key, None)
        elif key in result:
            result[key] = Entry(result[key].key, merge(result[key].node, entry.node))
        else:
            result[key] = entry
    return Node(result, base.path, base.line, base.column)

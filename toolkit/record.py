"""`Record`: the one immutable record class of the hot paths; fields are named once.

A record class lists its fields as annotations, with optional defaults:

    class Stdio(Record):
        stdin: int | None = None
        stdout: int | None = None

and gets `__slots__`, a keyword-only `__init__`, `_replace`, `==`, `hash`, `repr` and a JSON
form (`to_json`, `from_json`; tuples are lists in JSON and tuples again when read). For
mypy it is a frozen keyword-only dataclass (PEP 681 `dataclass_transform`), so reads and
constructions are type-checked. At run time it needs neither `dataclasses` nor `typing`:
podunit's unit processes (start, stop, rm, exec) would pay about 10 ms for them (README,
"Hot paths"). Defaults must be immutable values (None, numbers, strings, tuples,
records).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Self, dataclass_transform
else:

    def dataclass_transform(**_options: object) -> object:
        return lambda cls: cls


_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, tuple, frozenset)


def _tuples(value: object) -> object:
    """JSON's lists as tuples, recursively (for fields annotated as tuples)."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def _lists(value: object) -> object:
    """Tuples as lists, recursively, and records as their JSON."""
    if isinstance(value, tuple):
        return [_lists(item) for item in value]
    if isinstance(value, Record):
        return value.to_json()
    return value


class _RecordType(type):
    """Makes `__slots__`, `_fields`, `_defaults` of a `Record` class from its annotations."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **options: Any
    ) -> _RecordType:
        annotations: dict[str, str] = namespace.get("__annotations__", {})
        own = tuple(
            field
            for field, annotation in annotations.items()
            if not field.startswith("_") and not str(annotation).startswith("ClassVar")
        )
        inherited: tuple[str, ...] = ()
        defaults: dict[str, object] = {}
        tuple_fields: set[str] = set()
        for base in reversed(bases):
            inherited += tuple(f for f in getattr(base, "_fields", ()) if f not in inherited)
            defaults.update(getattr(base, "_defaults", {}))
            tuple_fields.update(getattr(base, "_tuple_fields", ()))
        for field in own:
            if field in namespace:
                value = namespace.pop(field)
                if not isinstance(value, _IMMUTABLE) and not isinstance(type(value), _RecordType):
                    raise TypeError(f"{name}.{field}: a default must be immutable, not {value!r}")
                defaults[field] = value
            if str(annotations[field]).startswith("tuple"):
                tuple_fields.add(field)
        namespace["__slots__"] = own
        namespace["_fields"] = inherited + tuple(f for f in own if f not in inherited)
        namespace["_defaults"] = defaults
        namespace["_tuple_fields"] = frozenset(tuple_fields)
        return super().__new__(mcs, name, bases, namespace, **options)


@dataclass_transform(kw_only_default=True, frozen_default=True, eq_default=True)
class Record(metaclass=_RecordType):
    """Base of the immutable records (see the module docstring)."""

    if TYPE_CHECKING:
        __slots__: tuple[str, ...]
        _fields: tuple[str, ...]
        _defaults: Mapping[str, object]
        _tuple_fields: frozenset[str]

    def __init__(self, **values: Any) -> None:
        set_field = object.__setattr__
        defaults = self._defaults
        for field in self._fields:
            if field in values:
                set_field(self, field, values.pop(field))
            elif field in defaults:
                set_field(self, field, defaults[field])
            else:
                raise TypeError(f"{type(self).__name__}: missing field {field!r}")
        if values:
            raise TypeError(f"{type(self).__name__}: no field {', '.join(sorted(values))}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, field) for field in self._fields)

    def _asdict(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self._fields}

    def _replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied (an unknown field name is a TypeError)."""
        return type(self)(**{**self._asdict(), **changes})

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))  # TypeError if a field holds a dict

    def __repr__(self) -> str:
        fields = ", ".join(f"{field}={getattr(self, field)!r}" for field in self._fields)
        return f"{type(self).__name__}({fields})"

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values: tuples become lists, nested records their JSON."""
        return {field: _lists(getattr(self, field)) for field in self._fields}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The record of `to_json`'s output; missing fields take their defaults, unknown
        keys are ignored (a newer podunit may have written them)."""
        tuple_fields = cls._tuple_fields
        return cls(**{
            field: _tuples(data[field]) if field in tuple_fields else data[field]
            for field in cls._fields
            if field in data
        })  # fmt: skip

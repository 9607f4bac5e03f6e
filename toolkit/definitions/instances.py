"""Template instances: `worker@` + `foo` -> `worker@foo` (podunit.yaml(5), "Templates").

`%i` in a template's string values is the instance, `%%` a `%`. Kept apart from the
loader (no YAML, no search path) because `podunit run --plan` instantiates the
template stored in a unit's plan file on every start.
"""

from __future__ import annotations

from typing import Any

from toolkit.definitions import values as v
from toolkit.definitions.model import Container
from toolkit.errors import ContainerNotFound, DefinitionError

_KEPT = ("source", "name")  # a Container's own name and location are not substituted


def substitute(text: str, instance: str) -> str:
    """Template specifiers: `%i` -> instance, `%%` -> `%`; any other `%` stays as written."""
    if "%" not in text:
        return text
    out, index = [], 0
    while index < len(text):
        char = text[index]
        following = text[index + 1 : index + 2]
        if char == "%" and following in ("i", "%"):
            out.append(instance if following == "i" else "%")
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _substitute_all(value: Any, instance: str) -> Any:
    if isinstance(value, str):
        return substitute(value, instance)
    if isinstance(value, tuple):
        names: tuple[str, ...] | None = getattr(value, "_fields", None)
        if names is None:
            return tuple(_substitute_all(item, instance) for item in value)
        kept = _KEPT if isinstance(value, Container) else ()
        changes = {
            name: _substitute_all(item, instance)
            for name, item in zip(names, value, strict=True)
            if name not in kept
        }
        return value._replace(**changes)  # type: ignore[attr-defined]
    return value


def instantiate(template: Container, instance: str) -> Container:
    """Template `worker@` + `foo` -> container `worker@foo`, with `%i`/`%%` filled in
    in every string value (names, paths, command, environment, ...)."""
    if not template.template:
        raise ContainerNotFound(f"{v.quote(template.name)} is not a template (no trailing '@')")
    if not instance or "/" in instance or v.has_control(instance):
        raise ContainerNotFound(f"invalid instance name {v.quote(instance)}")
    container: Container = _substitute_all(template, instance)
    container = container._replace(name=f"{template.name}@{instance}", template=False)
    if container.hostname is not None:
        try:
            v.check_hostname(container.hostname)
        except ValueError as error:
            raise DefinitionError(template.source, str(error)) from None
    return container

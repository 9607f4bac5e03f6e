"""Variable interpolation in Compose files (spec §1.3; the Compose specification,
"Interpolation"; edge cases as compose-go's `template` package).

    $$                  a literal `$`
    $NAME  ${NAME}      the variable's value ("" when unset, recorded as unset)
    ${NAME:-default}    default when NAME is unset or empty;  ${NAME-default}: only when unset
    ${NAME:?message}    error when NAME is unset or empty;    ${NAME?message}: only when unset
    ${NAME:+alt}        alt when NAME is set and non-empty;   ${NAME+alt}: when set
    NAME                [_a-zA-Z][_a-zA-Z0-9]*

Defaults, messages and alternatives are themselves interpolated (`${A:-${B:-x}}`),
and only when they are used (as a shell does; compose-go expands them eagerly, which
only differs when an unused default holds an error). A `$` followed by anything else
(`$1`, `$ `, a `$` at the end) is kept as it is, as Compose does; a `${` that is not
one of the forms above (`${}`, `${1A}`, `${A/x/y}`, a missing `}`) is an error.

Pure: `interpolate(text, lookup)` with `lookup(name) -> value | None`; errors are
`InterpolationError` (the caller adds the location).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Lookup = Callable[[str], str | None]

_FIRST = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REST = _FIRST | frozenset("0123456789")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A required variable is missing, or a `${...}` expression is malformed."""


def _name_end(text: str, start: int) -> int:
    """The index after the variable name starting at `start` (== start: no name)."""
    if start >= len(text) or text[start] not in _FIRST:
        return start
    end = start + 1
    while end < len(text) and text[end] in _REST:
        end += 1
    return end


def _closing_brace(text: str, start: int) -> int:
    """The index of the `}` closing a `${` whose body starts at `start`; -1 if none.

    Nested `${...}` count; a `$$` inside is an escaped dollar, not an opening."""
    depth = 1
    index = start
    while index < len(text):
        char = text[index]
        if char == "$" and text.startswith("$$", index):
            index += 2
            continue
        if char == "$" and text.startswith("${", index):
            depth += 1
            index += 2
            continue
        if char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return -1


def interpolate(text: str, lookup: Lookup, used: dict[str, bool] | None = None) -> str:
    """`text` with every variable reference replaced (see the module docstring).

    `used`, when given, receives every variable name looked up, mapped to whether it
    was set (names only: the values may be secrets).
    """
    if "$" not in text:
        return text
    out: list[str] = []
    index = 0
    length = len(text)
    while index < length:
        dollar = text.find("$", index)
        if dollar < 0:
            out.append(text[index:])
            break
        out.append(text[index:dollar])
        following = text[dollar + 1 : dollar + 2]
        if following == "$":
            out.append("$")
            index = dollar + 2
        elif following == "{":
            end = _closing_brace(text, dollar + 2)
            if end < 0:
                raise InterpolationError(
                    f"invalid interpolation {_show(text[dollar:])}: no closing '}}'"
                )
            out.append(_braced(text[dollar + 2 : end], text[dollar : end + 1], lookup, used))
            index = end + 1
        else:
            end = _name_end(text, dollar + 1)
            if end == dollar + 1:  # `$1`, `$ `, trailing `$`: kept as written
                out.append("$")
                index = dollar + 1
                continue
            name = text[dollar + 1 : end]
            value = _get(name, lookup, used)
            out.append("" if value is None else value)
            index = end
    return "".join(out)


def _show(expression: str) -> str:
    shown = expression if len(expression) <= 60 else expression[:57] + "..."
    return repr(shown)


def _get(name: str, lookup: Lookup, used: dict[str, bool] | None) -> str | None:
    value = lookup(name)
    if used is not None:
        used[name] = used.get(name, False) or value is not None
    return value


def _braced(body: str, whole: str, lookup: Lookup, used: dict[str, bool] | None) -> str:
    """The value of one `${body}` (`whole` is the expression, for messages)."""
    end = _name_end(body, 0)
    if end == 0:
        raise InterpolationError(
            f"invalid interpolation {_show(whole)}: a variable name starts with a letter or '_'"
        )
    name, rest = body[:end], body[end:]
    if not rest:
        value = _get(name, lookup, used)
        return "" if value is None else value
    for operator in _OPERATORS:
        if rest.startswith(operator):
            break
    else:
        raise InterpolationError(
            f"invalid interpolation {_show(whole)}: after the name comes '}}' or one of "
            ":- - :? ? :+ + (other shell forms are not part of Compose)"
        )
    argument = rest[len(operator) :]
    value = _get(name, lookup, used)
    empty_counts = operator.startswith(":")
    missing = value is None or (empty_counts and value == "")
    kind = operator[-1]
    if kind == "-":
        return interpolate(argument, lookup, used) if missing else str(value)
    if kind == "+":
        return "" if missing else interpolate(argument, lookup, used)
    if missing:  # "?"
        message = interpolate(argument, lookup, used)
        state = "unset" if value is None else "empty"
        detail = f": {message}" if message else ""
        raise InterpolationError(f"required variable {name} is {state}{detail}")
    return str(value)

"""`.env` files as Compose reads them (spec §1.3; the Compose documentation, "Set
environment variables", `.env` file syntax; compose-go's `dotenv` package).

    # a comment line                   blank lines and comments are skipped
    KEY=value                          unquoted: trimmed; ` #` starts a comment
    export KEY=value                   `export ` is ignored
    KEY="a ${OTHER} \\n b"             double quotes: \\n \\r \\t \\\\ \\" \\$ escapes,
                                       interpolation, may span lines
    KEY='literal $NOT'                 single quotes: verbatim, may span lines
    KEY=                               empty
    KEY                                taken from the lookup (environment) when set

Unquoted and double-quoted values are interpolated (`toolkit.definitions.interpolate`)
against the file's earlier keys and the lookup (the environment wins, as it does for
the Compose file). Pure: the file is read with `toolkit.safefile` by the caller.
"""

from __future__ import annotations

from toolkit.definitions.interpolate import InterpolationError, interpolate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_KEY_FIRST = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KEY_REST = _KEY_FIRST | frozenset("0123456789.-")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$$"}


class DotenvError(ValueError):
    """A malformed line; `line` is its 1-based number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def parse(
    text: str,
    lookup: Callable[[str], str | None] = lambda name: None,
    used: dict[str, bool] | None = None,
) -> dict[str, str]:
    """The variables of a `.env` text, in order; `DotenvError` for a bad line."""
    result: dict[str, str] = {}

    def resolve(name: str) -> str | None:
        outside = lookup(name)
        return outside if outside is not None else result.get(name)

    lines = text.replace("\r\n", "\n").split("\n")
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        first = number
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export ") or stripped.startswith("export\t"):
            stripped = stripped[7:].lstrip()
        key, equals, rest = stripped.partition("=")
        key = key.rstrip()
        if not key or key[0] not in _KEY_FIRST or not set(key) <= _KEY_REST:
            if not equals or any(char.isspace() for char in key):  # the text may be a secret
                raise DotenvError(
                    first, "not a KEY=VALUE line (its text is not shown: it may hold a secret)"
                )
            raise DotenvError(first, f"invalid variable name {key!r} (expected KEY=VALUE)")
        if not equals:
            value = lookup(key)
            if value is not None:
                result[key] = value
            continue
        rest = rest.lstrip()
        try:
            if rest[:1] in ("'", '"'):
                quote = rest[0]
                body = rest[1:]
                while not _closes(body, quote):
                    if number >= len(lines):
                        raise DotenvError(first, f"{key}: unterminated {quote} quote")
                    body += "\n" + lines[number]
                    number += 1
                end = _closing(body, quote)
                trailing = body[end + 1 :].strip()
                if trailing and not trailing.startswith("#"):
                    raise DotenvError(first, f"{key}: text after the closing quote")
                if quote == "'":
                    value = body[:end]
                else:
                    value = interpolate(_unescape(body[:end]), resolve, used)
            else:
                value = interpolate(_strip_comment(rest).rstrip(), resolve, used)
        except InterpolationError as error:
            raise DotenvError(first, f"{key}: {error}") from None
        result[key] = value
    return result


def _closing(body: str, quote: str) -> int:
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and quote == '"':
            index += 2
            continue
        if char == quote:
            return index
        index += 1
    return -1


def _closes(body: str, quote: str) -> bool:
    return _closing(body, quote) >= 0


def _unescape(body: str) -> str:
    """Double-quoted escapes; `\\$` stays a literal dollar through interpolation (`$$`)."""
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            following = body[index + 1]
            out.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _strip_comment(value: str) -> str:
    """An unquoted value up to ` #` (a `#` right after text is part of the value)."""
    for index, char in enumerate(value):
        if char == "#" and (index == 0 or value[index - 1] in " \t"):
            return value[:index]
    return value

"""Every escaping rule podunit needs to write values into systemd unit files.

Nothing else in podunit quotes or escapes unit-file text; the renderer
(`toolkit.unitgen.render`) builds lines only from the functions here. References:

- systemd.unit(5) "Specifiers": `%` starts a specifier, `%%` is a literal `%`.
- systemd.service(5) "Command lines": words are split on whitespace, may be
  quoted with `"`/`'`, take C escapes (systemd.syntax(7)); `$NAME`/`${NAME}` are
  environment substitutions and `$$` is a literal `$`; a lone `;` separates
  commands; the first word takes the prefixes `-@:+!`.
- systemd.exec(5) `Environment=`: whitespace-separated, quoted `NAME=value`
  assignments with C escapes and specifiers, but no `$` substitution.
- systemd.unit(5) "String Escaping for Inclusion in Unit Names" (systemd-escape(1)).

A value that cannot be written safely (control characters, newlines, text that
is not valid Unicode, a trailing backslash that would continue the line) raises
`UnsafeValue`; callers add the definition's location.
"""

from __future__ import annotations

import functools

from toolkit.errors import DefinitionError

# systemd's unit types (systemd.unit(5)); a unit name must end in one of these.
UNIT_TYPES = frozenset(
    [
        "service",
        "socket",
        "device",
        "mount",
        "automount",
        "swap",
        "target",
        "path",
        "timer",
        "slice",
        "scope",
    ]
)
UNIT_NAME_MAX = 255  # UNIT_NAME_MAX - 1 in systemd's unit-name.h
# Character classes as plain strings (checked with str.strip, no regular expressions:
# compiling them cost the generator ~3 ms of start-up).
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALNUM = _LETTERS + "0123456789"
_UNIT_PREFIX_CHARS = _ALNUM + ":_.\\-"  # systemd's VALID_CHARS of a unit name prefix
_UNIT_INSTANCE_CHARS = _UNIT_PREFIX_CHARS + "@"
_CONTROL = frozenset(chr(code) for code in (*range(32), 127))
# Characters that make an Exec*= word need quotes (besides whitespace): quotes, escapes, `;`.
_QUOTE_CHARS = frozenset("\"'\\;")
# What systemd-escape keeps as is (systemd's unit-name.c VALID_CHARS minus `-` and `\`).
_UNIT_NAME_KEEP = frozenset("0123456789:_.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class UnsafeValue(DefinitionError):
    """A value that cannot be written into a unit file without changing its meaning."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(None, message, hint=hint)


def check_line_end(value: str, what: str) -> str:
    """Return `value` unless it ends in an odd number of backslashes, which systemd reads
    as a line continuation (systemd.syntax(7): "Lines ending in a backslash are
    concatenated with the following one"; conf-parser.c counts escaped backslashes):
    the next line podunit writes (`Restart=`, `ExecStart=`) would be swallowed."""
    if (len(value) - len(value.rstrip("\\"))) % 2:
        raise UnsafeValue(
            f"{what} {value!r} ends in a backslash, which systemd reads as a line "
            "continuation (the unit's next line would be lost)",
            hint="remove the trailing backslash",
        )
    return value


def check_safe(value: str, what: str) -> str:
    """Return `value` if it can live on one unit-file line; else raise `UnsafeValue`.

    Rejected: control characters (U+0000..U+001F incl. tab and newline, and DEL,
    the ones systemd's parser and `string_has_cc()` treat specially), lone
    surrogates and Unicode noncharacters (systemd's `utf8_is_valid()` refuses
    them). Everything else, C1 controls included, reaches systemd unchanged.
    """
    if _CONTROL.isdisjoint(value) and (value.isascii() or _systemd_unicode(value) is None):
        return value
    for char in value:
        if char in _CONTROL:
            kind = "a newline" if char in "\n\r" else f"the control character U+{ord(char):04X}"
            raise UnsafeValue(f"{what} {value!r} contains {kind}, which a unit file cannot hold")
    raise UnsafeValue(
        f"{what} {value!r} contains U+{_systemd_unicode(value):04X}, a surrogate or "
        "noncharacter that systemd does not accept as UTF-8"
    )


def _systemd_unicode(value: str) -> int | None:
    """The first code point systemd's utf8_is_valid() refuses (a surrogate or a
    noncharacter: U+FDD0..U+FDEF, U+xxFFFE, U+xxFFFF), or None."""
    for code in map(ord, value):
        if 0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
            return code
    return None


def _only(text: str, chars: str) -> bool:
    """True if `text` is not empty and every character of it is in `chars`."""
    return bool(text) and not text.strip(chars)


def _needs_quotes(word: str) -> bool:
    return not word or any(char in _QUOTE_CHARS or char.isspace() for char in word)


def escape_specifiers(value: str) -> str:
    """`%` -> `%%` so systemd does not expand specifiers (systemd.unit(5) "Specifiers")."""
    return value.replace("%", "%%")


def path_word(path: str, what: str, *, template: bool = False) -> str:
    """A path as one word of a list setting such as `RequiresMountsFor=` (specifiers
    expanded, then words split with quotes). In a template `%i` and `%%` stay specifiers
    (they mean there what they mean in the definition); every other `%` is escaped."""
    check_line_end(check_safe(path, what), what)
    if template:
        out, index = [], 0
        while index < len(path):
            if path[index] == "%" and path[index + 1 : index + 2] in ("i", "%"):
                out.append(path[index : index + 2])
                index += 2
                continue
            out.append("%%" if path[index] == "%" else path[index])
            index += 1
        text = "".join(out)
    else:
        text = escape_specifiers(path)
    return _quote(text) if _needs_quotes(text) else text


def _quote(value: str) -> str:
    """A double-quoted word with `\\` and `"` C-escaped (systemd.syntax(7) "Quoting")."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=4096)  # the same words recur in every unit: run, stop, -t, ...
def exec_word(value: str, what: str = "argument") -> str:
    """One argument of an `Exec*=` command line, read back by systemd as exactly `value`.

    Specifiers and `$` substitution are disabled (`%%`, `$$`); words containing
    whitespace, quotes, backslashes or `;` (a lone `;` would separate commands)
    and the empty word are double-quoted with C escapes (systemd.service(5)).
    """
    check_safe(value, what)
    escaped = escape_specifiers(value).replace("$", "$$")
    if _needs_quotes(escaped):
        return _quote(escaped)
    return escaped


def command_line(argv: tuple[str, ...] | list[str], *, prefix: str = "") -> str:
    """A whole `Exec*=` value: `prefix` (e.g. `-`), then argv with every word escaped.

    argv[0] must be an absolute path: systemd strips the prefixes `-@:+!` from the
    first word even when quoted, so a relative first word could change meaning.
    """
    if not argv or not argv[0].startswith("/"):
        raise UnsafeValue(f"command {list(argv)!r} must start with an absolute path")
    if prefix.strip("-@:+!") or len(set(prefix)) != len(prefix):
        raise UnsafeValue(f"invalid Exec prefix {prefix!r}")
    words = [exec_word(word) for word in argv]
    return prefix + " ".join(words)


def environment_assignment(name: str, value: str) -> str:
    """One `Environment=` word: `"NAME=value"`, quoted and C-escaped, `%` doubled.

    `$` needs no escaping there (systemd.exec(5): no variable expansion in
    Environment=). The name must be a shell variable name, as systemd requires.
    """
    if not (_only(name, _ALNUM + "_") and name[0] not in "0123456789"):
        raise UnsafeValue(
            f"environment variable name {name!r} is not valid (use [A-Za-z_][A-Za-z0-9_]*)"
        )
    check_safe(value, f"value of environment variable {name}")
    return _quote(escape_specifiers(f"{name}={value}"))


def plain_value(value: str, what: str) -> str:
    """A single-valued setting (Description=, SourcePath=, Listen...=): specifiers escaped.

    Leading/trailing whitespace would be trimmed by systemd, so it is rejected.
    """
    check_safe(value, what)
    if value != value.strip():
        raise UnsafeValue(f"{what} {value!r} has leading or trailing whitespace")
    return escape_specifiers(check_line_end(value, what))


def verbatim_value(value: str, what: str) -> str:
    """A passthrough value (`unit:`/`service:`/`socket:` keys): verbatim, specifiers
    allowed; it must not end in a line continuation (`check_line_end`)."""
    return check_line_end(check_safe(value, what), what)


def check_unit_key(key: str, section: str) -> str:
    """A unit-file key: `TimeoutStartSec`, or an extension key `X-Something` (systemd.unit(5))."""
    extension = key.startswith("X-")
    body = key[2:] if extension else key
    allowed = _ALNUM + "-" if extension else _ALNUM
    if not (_only(body, allowed) and body[0] in _LETTERS):
        raise UnsafeValue(f"{section}: {key!r} is not a valid unit file key")
    return key


def escape_unit_name(value: str) -> str:
    """Escape a string for use in a unit name, exactly like `systemd-escape VALUE`.

    `/` becomes `-`; every other byte outside `[A-Za-z0-9:_.]` (and a leading `.`)
    becomes `\\xHH` (systemd.unit(5) "String Escaping for Inclusion in Unit Names").
    """
    check_safe(value, "unit name part")
    out: list[str] = []
    for index, char in enumerate(value):
        if char == "/":
            out.append("-")
        elif char in _UNIT_NAME_KEEP and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def escape_unit_path(path: str) -> str:
    """Escape a file system path like `systemd-escape --path PATH` (`/` -> `-`)."""
    if not path.startswith("/"):
        raise UnsafeValue(f"path {path!r} must be absolute")
    parts = [part for part in path.split("/") if part and part != "."]
    if ".." in parts:
        raise UnsafeValue(f"path {path!r} must not contain '..'")
    return escape_unit_name("/".join(parts)) if parts else "-"


def is_unit_name(name: str) -> bool:
    """True if `name` is a full unit name: `foo.service`, `getty@tty1.service`, `a@.socket`."""
    if len(name) > UNIT_NAME_MAX or "." not in name:
        return False
    stem, _, unit_type = name.rpartition(".")
    if unit_type not in UNIT_TYPES or not stem:
        return False
    prefix, at, instance = stem.partition("@")
    if not _only(prefix, _UNIT_PREFIX_CHARS):
        return False
    return not at or instance == "" or _only(instance, _UNIT_INSTANCE_CHARS)


def unit_type(name: str) -> str:
    """The type suffix of a unit name: `web.service` -> `service`."""
    return name.rpartition(".")[2]

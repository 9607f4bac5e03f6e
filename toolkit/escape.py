"""Every escaping rule podunit needs to write values into systemd unit files.

Nothing else in podunit quotes or escapes unit-file text; the renderer
(`toolkit.units`) builds lines only from the functions here. References:

- systemd.unit(5) "Specifiers": `%` starts a specifier, `%%` is a literal `%`.
- systemd.service(5) "Command lines": words are split on whitespace, may be
  quoted with `"`/`'`, take C escapes (systemd.syntax(7)); `$NAME`/`${NAME}` are
  environment substitutions and `$$` is a literal `$`; a lone `;` separates
  commands; the first word takes the prefixes `-@:+!`.
- systemd.exec(5) `Environment=`: whitespace-separated, quoted `NAME=value`
  assignments with C escapes and specifiers, but no `$` substitution.
- systemd.unit(5) "String Escaping for Inclusion in Unit Names" (systemd-escape(1)).

A value that cannot be written safely (control characters, newlines, text that
is not valid Unicode) raises `UnsafeValue`; callers add the definition's location.
"""

from __future__ import annotations

import functools
import re

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
_UNIT_PREFIX_RE = re.compile(r"[A-Za-z0-9:_.\\-]+")
_UNIT_INSTANCE_RE = re.compile(r"[A-Za-z0-9:_.\\@-]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL_RE = re.compile("[\\x00-\\x1f\\x7f]")
# Code points systemd's utf8_is_valid() refuses: surrogates and the noncharacters.
_NON_SYSTEMD_UNICODE_RE = re.compile(
    "[\\ud800-\\udfff\\ufdd0-\\ufdef"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
    + "]"
)
_UNSAFE_RE = re.compile(f"{_CONTROL_RE.pattern}|{_NON_SYSTEMD_UNICODE_RE.pattern}")
_UNIT_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*|X-[A-Za-z][A-Za-z0-9-]*")
# Characters that make an Exec*= word need quotes: separators, quotes, escapes, `;`.
_NEEDS_QUOTES_RE = re.compile(r"""[\s"'\\;]""")
# What systemd-escape keeps as is (systemd's unit-name.c VALID_CHARS minus `-` and `\`).
_UNIT_NAME_KEEP = frozenset("0123456789:_.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class UnsafeValue(DefinitionError):
    """A value that cannot be written into a unit file without changing its meaning."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


def check_safe(value: str, what: str) -> str:
    """Return `value` if it can live on one unit-file line; else raise `UnsafeValue`.

    Rejected: control characters (U+0000..U+001F incl. tab and newline, and DEL,
    the ones systemd's parser and `string_has_cc()` treat specially), lone
    surrogates and Unicode noncharacters (systemd's `utf8_is_valid()` refuses
    them). Everything else, C1 controls included, reaches systemd unchanged.
    """
    if _UNSAFE_RE.search(value) is None:
        return value
    bad = _CONTROL_RE.search(value)
    if bad is not None:
        char = bad.group()
        kind = "a newline" if char in "\n\r" else f"the control character U+{ord(char):04X}"
        raise UnsafeValue(f"{what} {value!r} contains {kind}, which a unit file cannot hold")
    bad = _NON_SYSTEMD_UNICODE_RE.search(value)
    assert bad is not None
    raise UnsafeValue(
        f"{what} {value!r} contains U+{ord(bad.group()):04X}, a surrogate or noncharacter "
        "that systemd does not accept as UTF-8"
    )


def escape_specifiers(value: str) -> str:
    """`%` -> `%%` so systemd does not expand specifiers (systemd.unit(5) "Specifiers")."""
    return value.replace("%", "%%")


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
    if not escaped or _NEEDS_QUOTES_RE.search(escaped):
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
    if not _ENV_NAME_RE.fullmatch(name):
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
    return escape_specifiers(value)


def verbatim_value(value: str, what: str) -> str:
    """A passthrough value (`unit:`/`service:`/`socket:` keys): verbatim, specifiers allowed."""
    return check_safe(value, what)


def check_unit_key(key: str, section: str) -> str:
    """A unit-file key: `TimeoutStartSec`, or an extension key `X-Something` (systemd.unit(5))."""
    if not _UNIT_KEY_RE.fullmatch(key):
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
    if not _UNIT_PREFIX_RE.fullmatch(prefix):
        return False
    return not at or instance == "" or _UNIT_INSTANCE_RE.fullmatch(instance) is not None


def unit_type(name: str) -> str:
    """The type suffix of a unit name: `web.service` -> `service`."""
    return name.rpartition(".")[2]

"""Escaping rules of unitgen/escape.py (systemd.syntax(7), systemd.service(5), systemd.unit(5)).

Unit-name escaping is compared with the host's own `systemd-escape`; the
round trip of Exec words and Environment= values through a real systemd is in
tests/system/test_generator_sandbox.py.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.unitgen.escape import (
    UnsafeValue,
    check_line_end,
    check_safe,
    check_unit_key,
    command_line,
    environment_assignment,
    escape_specifiers,
    escape_unit_name,
    escape_unit_path,
    exec_word,
    is_unit_name,
    plain_value,
    verbatim_value,
)

needs_systemd_escape = pytest.mark.skipif(
    shutil.which("systemd-escape") is None, reason="systemd-escape (package systemd) not installed"
)


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("plain", "plain"),
        ("/usr/bin/x", "/usr/bin/x"),
        ("", '""'),
        ("two words", '"two words"'),
        ("100%", "100%%"),
        ("%i", "%%i"),
        ("$HOME", "$$HOME"),
        ("${X}", "$${X}"),
        ("a$$b", "a$$$$b"),
        (";", '";"'),
        ("a;b", '"a;b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("it's", '"it\'s"'),
        ("back\\slash", '"back\\\\slash"'),
        ("trailing\\", '"trailing\\\\"'),
        ("grüße ✓", '"grüße ✓"'),
        ("grüße", "grüße"),
        ("a\u00a0b", '"a\u00a0b"'),
    ],
)
def test_exec_word_quotes_and_escapes(value: str, word: str) -> None:
    assert exec_word(value) == word


@pytest.mark.parametrize(
    "value",
    [
        "new\nline",
        "tab\there",
        "cr\r",
        "nul\0",
        "esc\x1b[0m",
        "del\x7f",
        "\ud800",
        "x\udfff",
        "\ufffe",
        "\ufdd0",
        "a\ufdefb",
        "\U0001ffff",
        "é\U0010fffe",
    ],
)
def test_unsafe_values_are_rejected_everywhere(value: str) -> None:
    with pytest.raises(UnsafeValue):
        check_safe(value, "value")
    with pytest.raises(UnsafeValue):
        exec_word(value)
    with pytest.raises(UnsafeValue):
        environment_assignment("X", value)
    with pytest.raises(UnsafeValue):
        plain_value(value, "value")


def test_unsafe_value_message_names_the_problem() -> None:
    with pytest.raises(UnsafeValue, match=r"argument 'a\\nb' contains a newline"):
        exec_word("a\nb")
    with pytest.raises(UnsafeValue, match=r"U\+001B"):
        check_safe("\x1b", "label")
    with pytest.raises(UnsafeValue, match=r"U\+FFFF"):
        check_safe("\uffff", "label")
    with pytest.raises(UnsafeValue, match=r"contains U\+10FFFE, a surrogate or noncharacter"):
        check_safe("ok\U0010fffe", "label")


def test_c1_controls_and_astral_characters_are_allowed() -> None:
    assert check_safe("\x85\x9f😀\U0010fffd", "value") == "\x85\x9f😀\U0010fffd"
    assert check_safe("\ufdcf\ufdf0\ufffd\U0001fffd", "value") == "\ufdcf\ufdf0\ufffd\U0001fffd"


def test_command_line_needs_an_absolute_program() -> None:
    assert command_line(["/bin/echo", "a b", "50%"]) == '/bin/echo "a b" 50%%'
    assert command_line(["/opt/my dir/podunit", "run"], prefix="-") == '-"/opt/my dir/podunit" run'
    for argv in ([], ["echo"], ["-/bin/echo"], ["@/bin/echo"]):
        with pytest.raises(UnsafeValue, match="absolute path"):
            command_line(argv)
    with pytest.raises(UnsafeValue, match="prefix"):
        command_line(["/bin/true"], prefix="x")
    with pytest.raises(UnsafeValue, match="prefix"):
        command_line(["/bin/true"], prefix="--")


def test_environment_assignment_quotes_whole_assignment() -> None:
    assert environment_assignment("A", "x") == '"A=x"'
    assert environment_assignment("_b1", 'say "%n" $X \\') == '"_b1=say \\"%%n\\" $X \\\\"'
    assert environment_assignment("E", "") == '"E="'
    for name in ("", "1A", "A-B", "A B", "Ä", "A=B"):
        with pytest.raises(UnsafeValue, match="environment variable name"):
            environment_assignment(name, "v")


def test_specifiers_and_plain_values() -> None:
    assert escape_specifiers("%%n%") == "%%%%n%%"
    assert plain_value("/etc/podunit/100%.yaml", "path") == "/etc/podunit/100%%.yaml"
    with pytest.raises(UnsafeValue, match="whitespace"):
        plain_value(" leading", "path")


def test_unit_keys() -> None:
    assert check_unit_key("TimeoutStartSec", "service") == "TimeoutStartSec"
    assert check_unit_key("X-Podunit-Note", "unit") == "X-Podunit-Note"
    for key in ("", "A=B", "A B", "9Key", "Key\n", "Key-Dash", "X-", "X-1", "X-a b", "x-lower"):
        with pytest.raises(UnsafeValue, match="not a valid unit file key"):
            check_unit_key(key, "service")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("web.service", True),
        ("multi-user.target", True),
        ("getty@tty1.service", True),
        ("worker@.service", True),
        ("a\\x2db.mount", True),
        ("web", False),
        ("web.unknown", False),
        (".service", False),
        ("../../etc/foo.service", False),
        ("a/b.service", False),
        ("a b.service", False),
        ("x" * 250 + ".service", False),
    ],
)
def test_is_unit_name(name: str, valid: bool) -> None:
    assert is_unit_name(name) is valid


def test_unit_name_escaping_examples() -> None:
    assert escape_unit_name("foo/bar baz") == "foo-bar\\x20baz"
    assert escape_unit_name(".hidden-x") == "\\x2ehidden\\x2dx"
    assert escape_unit_name("ü") == "\\xc3\\xbc"
    assert escape_unit_path("/") == "-"
    assert escape_unit_path("//var//lib/") == "var-lib"
    with pytest.raises(UnsafeValue, match="absolute"):
        escape_unit_path("relative")
    with pytest.raises(UnsafeValue, match=r"\.\."):
        escape_unit_path("/a/../b")


def _systemd_escape(args: list[str], *options: str) -> list[str]:
    result = subprocess.run(
        ["systemd-escape", *options, "--", *args], capture_output=True, check=True, text=True
    )
    return result.stdout.split()


def _noncharacter(char: str) -> bool:
    """U+FDD0..U+FDEF and U+xxFFFE/U+xxFFFF of every plane: refused by check_safe."""
    code = ord(char)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


_name_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")).filter(
        lambda char: not _noncharacter(char)
    ),
    min_size=1,
    max_size=12,
)


@needs_systemd_escape
@settings(max_examples=15, deadline=None)
@given(st.lists(_name_text, min_size=1, max_size=30))
def test_unit_name_escaping_matches_systemd_escape(values: list[str]) -> None:
    assert [escape_unit_name(value) for value in values] == _systemd_escape(values)


@needs_systemd_escape
@settings(max_examples=10, deadline=None)
@given(st.lists(st.lists(_name_text.filter(lambda s: "/" not in s and s not in (".", "..")),
                         min_size=1, max_size=4), min_size=1, max_size=20))  # fmt: skip
def test_path_escaping_matches_systemd_escape(paths: list[list[str]]) -> None:
    absolute = ["/" + "/".join(parts) for parts in paths]
    assert [escape_unit_path(path) for path in absolute] == _systemd_escape(absolute, "--path")


# ------------------------------------------- line continuation (issue 15 item 7)


def systemd_lines(text: str) -> list[str]:
    """The logical lines systemd's conf-parser.c reads from a unit file: a line ending
    in an odd number of backslashes (an unescaped one) is joined with the next, the
    backslash becoming a space (systemd.syntax(7))."""
    lines: list[str] = []
    pending = ""
    for line in text.split("\n"):
        escaped = False
        for char in line:
            escaped = not escaped if char == "\\" else False
        if escaped:
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


@pytest.mark.parametrize("value", ["40 \\", "x \\", "\\", "a\\\\\\"])
def test_a_trailing_backslash_is_refused(value: str) -> None:
    for check in (verbatim_value, plain_value):
        with pytest.raises(UnsafeValue, match="ends in a backslash") as caught:
            check(value, "service: TimeoutStopSec")
        assert caught.value.hint == "remove the trailing backslash"


def test_an_escaped_trailing_backslash_is_kept() -> None:
    assert verbatim_value("x \\\\", "service: SyslogIdentifier") == "x \\\\"
    assert check_line_end("a\\b", "v") == "a\\b"


@given(st.text(alphabet="ab \\%$\"'", max_size=12), st.sampled_from([verbatim_value, plain_value]))
def test_no_accepted_value_continues_its_line(value: str, writer: object) -> None:
    """Whatever a writer of single-line values accepts stays one line with the next."""
    assert callable(writer)
    try:
        written = writer(value, "value")
    except UnsafeValue:
        return
    assert systemd_lines(f"Key={written}\nRestart=no") == [f"Key={written}", "Restart=no"]


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["TimeoutStopSec", "SyslogIdentifier", "X-Extra"]),
            st.text(alphabet="a 1\\%", min_size=1, max_size=8),
        ),
        max_size=3,
    )
)
def test_rendered_units_keep_every_line_whatever_the_passthrough(
    extra: list[tuple[str, str]],
) -> None:
    """Passthrough values never swallow a line podunit writes: the unit renders with
    ExecStart=, ExecStop= and Restart= intact, or is refused (issue 15 item 7)."""
    from toolkit.definitions.model import Container
    from toolkit.errors import DefinitionError, Location
    from toolkit.unitgen.render import render

    container = Container(
        name="web", source=Location("/etc/podunit/web.yaml", 2, 3), rootfs="/srv",
        service_extra=tuple(extra),
    )  # fmt: skip
    try:
        text = render(container, podunit="/usr/bin/podunit").files["web.service"]
    except DefinitionError as error:
        assert str(error).startswith("/etc/podunit/web.yaml:2:3: container 'web': service: ")
        return
    lines = systemd_lines(text)
    for key in ("ExecStart=", "ExecStop=", "ExecStopPost=", "Restart=", "KillMode="):
        assert sum(line.startswith(key) for line in lines) == 1, (key, text)

"""Compose interpolation and `.env` files (toolkit.definitions.interpolate, .dotenv):
the forms of the Compose specification, compose-go's edge cases, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.definitions.dotenv import DotenvError, parse
from toolkit.definitions.interpolate import InterpolationError, interpolate

ENV = {"SET": "value", "EMPTY": "", "A": "a", "B": "b", "NUM": "42"}


def sub(text: str, env: dict[str, str] | None = None) -> str:
    return interpolate(text, (ENV if env is None else env).get)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("$SET", "value"),
        ("${SET}", "value"),
        ("x${SET}y", "xvaluey"),
        ("$SET$SET", "valuevalue"),
        ("$SET-x", "value-x"),  # unbraced names end at the first non-name character
        ("$UNSET", ""),
        ("${UNSET}", ""),
        ("${UNSET:-def}", "def"),
        ("${EMPTY:-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${UNSET-def}", "def"),
        ("${SET:-def}", "value"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-${A}}", "a"),
        ("${UNSET:-${UNSET2:-${B}}}", "b"),
        ("${UNSET:-$A-$B}", "a-b"),
        ("${UNSET:-a}}", "a}"),  # the first unmatched } closes
        ("${UNSET:-}", ""),
        ("${UNSET:-with space}", "with space"),
        ("$$", "$"),
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        ("$$$SET", "$value"),
        ("${UNSET:-$$}", "$"),
        ("cost: 5$", "cost: 5$"),  # a $ before nothing is kept
        ("$1 $ $-", "$1 $ $-"),
        ("${SET:?must}", "value"),
        ("${EMPTY?ok when empty}", ""),
        ("${_under_score1}", ""),
    ],
)
def test_forms(text: str, expected: str) -> None:
    assert sub(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET:?set it}", "required variable UNSET is unset: set it"),
        ("${EMPTY:?}", "required variable EMPTY is empty"),
        ("${UNSET?}", "required variable UNSET is unset"),
        ("${UNSET:?need ${A}}", "required variable UNSET is unset: need a"),
        ("${}", "a variable name starts with a letter or '_'"),
        ("${1A}", "a variable name starts with a letter or '_'"),
        ("${A/x/y}", "other shell forms are not part of Compose"),
        ("${A:=x}", "other shell forms are not part of Compose"),
        ("${A", "no closing '}'"),
        ("x ${A:-${B}", "no closing '}'"),
        ("${UNSET:-${B:?inner}}", None),  # fine: B is set
    ],
)
def test_errors(text: str, message: str | None) -> None:
    if message is None:
        assert sub(text) == "b"
        return
    with pytest.raises(InterpolationError, match=__import__("re").escape(message)):
        sub(text)


def test_defaults_are_only_expanded_when_used() -> None:
    assert sub("${SET:-${UNSET:?never evaluated}}") == "value"
    assert sub("${UNSET:+${UNSET2:?never evaluated}}") == ""


def test_used_names_and_whether_set() -> None:
    used: dict[str, bool] = {}
    interpolate("$SET ${UNSET:-x} ${A:+$B} $$NOTUSED", ENV.get, used)
    assert used == {"SET": True, "UNSET": False, "A": True, "B": True}


_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
_PLAIN = st.text(st.characters(blacklist_characters="$", blacklist_categories=["Cs"]))


@given(_PLAIN)
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert sub(text) == text


@given(st.text(st.characters(blacklist_categories=["Cs"])))
def test_doubled_dollars_are_literal(text: str) -> None:
    """Escaping every `$` as `$$` gives the text back, whatever it holds."""
    assert sub(text.replace("$", "$$")) == text


@given(_NAMES, st.text(st.characters(blacklist_categories=["Cs"]), max_size=8), _PLAIN)
def test_set_variables_win_over_defaults(name: str, value: str, default: str) -> None:
    env = {name: value}
    escaped = default.replace("}", "")
    assert sub("${" + name + "-" + escaped + "}", env) == value
    expected = value if value else escaped
    assert sub("${" + name + ":-" + escaped + "}", env) == expected
    assert sub("${" + name + ":-" + escaped + "}", {}) == escaped


@given(_NAMES, st.text(st.characters(blacklist_categories=["Cs"]), max_size=8))
def test_braced_and_unbraced_agree(name: str, value: str) -> None:
    env = {name: value}
    assert sub("${" + name + "}", env) == value
    assert sub("$" + name, env) == value


# ---------------------------------------------------------------- .env


def test_dotenv_syntax() -> None:
    text = (
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "SPACED = around  \n"
        "COMMENTED=value # a comment\n"
        "HASH=a#b\n"
        "EMPTY=\n"
        "SINGLE='literal $PLAIN # not a comment'\n"
        'DOUBLE="tab\\there \\"quoted\\" ${PLAIN}"\n'
        'ESCAPED="\\$PLAIN"\n'
        "REF=${PLAIN}-${FROM_ENV:-none}\n"
        'MULTI="line one\n'
        'line two"\n'
        "CRLF=x\r\n"
        "DOTTED.KEY-1=ok\n"
    )
    assert parse(text) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "around",
        "COMMENTED": "value",
        "HASH": "a#b",
        "EMPTY": "",
        "SINGLE": "literal $PLAIN # not a comment",
        "DOUBLE": 'tab\there "quoted" value',
        "ESCAPED": "$PLAIN",
        "REF": "value-none",
        "MULTI": "line one\nline two",
        "CRLF": "x",
        "DOTTED.KEY-1": "ok",
    }


def test_dotenv_environment_wins_in_references_and_bare_keys_come_from_it() -> None:
    env = {"PLAIN": "from-env", "BARE": "b"}
    assert parse("PLAIN=file\nREF=$PLAIN\nBARE\nMISSING\n", env.get) == {
        "PLAIN": "file",
        "REF": "from-env",
        "BARE": "b",
    }


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("A=1\n1BAD=x\n", 2, "invalid variable name '1BAD'"),
        ("A=1\nB='open\n\n", 2, "B: unterminated ' quote"),
        ('A="x" y\n', 1, "A: text after the closing quote"),
        ("A=${B:?needed}\n", 1, "A: required variable B is unset: needed"),
        ("A=${\n", 1, "A: invalid interpolation"),
    ],
)
def test_dotenv_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DotenvError) as caught:
        parse(text)
    assert caught.value.line == line and str(caught.value).startswith(message)


@pytest.mark.parametrize("text", ["A=1\nghp_S3cr3tT0ken!\n", "A=1\nPASSWORD hunter2\n",
                                  "A=1\nmy pass=hunter2\n"])  # fmt: skip
def test_dotenv_errors_never_quote_a_line_that_may_be_a_secret(text: str) -> None:
    """issue 15 item 15: env files hold secrets and errors reach the journal."""
    with pytest.raises(DotenvError) as caught:
        parse(text)
    assert caught.value.line == 2
    assert str(caught.value).startswith("not a KEY=VALUE line (its text is not shown")
    for secret in ("S3cr3t", "hunter2", "PASSWORD"):
        assert secret not in str(caught.value)

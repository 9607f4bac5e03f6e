"""The command line grammar and its error handling (spec §4)."""

from __future__ import annotations

import pytest

from toolkit import cli


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["ps", "-a"], "ps"),
        (["--user", "generate", "--dry-run"], "generate"),
        (["--log-level", "debug", "stop", "web"], "stop"),
        (["--log-level", "run", "ps"], "ps"),  # "run" is the option's value here
        (["--help"], None),
        (["-h", "ps"], None),
        (["bogus"], None),
        ([], None),
    ],
)
def test_invoked_verb(argv: list[str], verb: str | None) -> None:
    assert cli.invoked_verb(argv) == verb


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "-d", "--rootfs", "/r", "--name", "x", "ad-hoc", "--", "sh", "-c", "exit 3"],
        ["--user", "generate", "--dry-run"],
        ["stop", "-t", "3", "web"],
        ["kill", "-s", "HUP", "web", "db"],
        ["exec", "-i", "-e", "A=1", "web", "--", "cat"],
        ["logs", "-f", "--tail", "5", "web"],
        ["sandbox", "exec", "--name", "s", "--", "true"],
    ],
)
def test_building_only_the_invoked_verb_parses_the_same(argv: list[str]) -> None:
    only = cli.build_parser(only=cli.invoked_verb(argv)).parse_args(argv)
    assert vars(only) == vars(cli.build_parser().parse_args(argv))


def test_every_verb_has_a_parser_and_a_handler() -> None:
    for verb in cli.HANDLERS:
        parser = cli.build_parser(only=verb)
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([verb, "--help"])
        assert exited.value.code == 0


@pytest.mark.parametrize("argv", [["bogus"], ["stop", "--bogus"], ["kill"], []])
def test_usage_errors_exit_125(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 125
    assert "podunit: error:" in capsys.readouterr().err


def test_expected_failures_are_one_line_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODUNIT_DEFINITION_DIRS", "relative/dir")
    assert cli.main(["validate"]) == 125
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("podunit: ")


def test_location_is_an_immutable_value() -> None:
    import copy
    import pickle

    from toolkit.errors import Location

    here = Location("/etc/podunit/web.yaml", 3, 5)
    assert str(here) == "/etc/podunit/web.yaml:3:5"
    assert here == Location("/etc/podunit/web.yaml", 3, 5) != Location("/x", 3, 5)
    assert len({here, Location("/etc/podunit/web.yaml", 3, 5)}) == 1
    assert copy.deepcopy(here) == here == pickle.loads(pickle.dumps(here))
    with pytest.raises(AttributeError):
        here.line = 4  # type: ignore[misc]

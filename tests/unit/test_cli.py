"""The command line grammar and its error handling (spec §4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.cli import main as cli


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
        here.line = 4  # type: ignore[misc, unused-ignore]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--plan", "/run/systemd/generator/podunit/web.json", "web"],
        ["--user", "run", "--plan", "/p/worker@.json", "worker@a:b"],
        ["stop", "-t", "10", "web"],
        ["stop", "-t", "1.5", "worker@x"],
        ["--user", "stop", "-t", "0", "web"],
        ["rm", "-f", "web"],
        ["--user", "rm", "-f", "web"],
        ["cleanup", "0123abcd" * 8],
        ["kill", "-s", "SIGHUP", "web"],  # ExecReload
        ["--user", "kill", "-s", "RTMIN+3", "worker@x"],
        ["exec", "web", "true"],  # and `podunit exec NAME [--] CMD...` without options
        ["exec", "web", "--", "nginx", "-t"],
        ["--user", "exec", "web", "sh", "-c", "exit 3", "--help"],
        ["exec", "web", "sh", "--", "-x"],  # a later `--` is the command's
        ["exec", "web", "--", "sh", "--", "-x"],
        ["healthcheck", "run", "--scheduled", "web"],  # NAME-health.service
        ["--user", "healthcheck", "run", "--scheduled", "worker@x"],
    ],
)
def test_the_unit_forms_parse_without_argparse_as_argparse_does(argv: list[str]) -> None:
    fast = cli.fast_arguments(argv)
    assert fast is not None
    assert vars(fast) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["stop", "-t", "soon", "web"],  # argparse reports the error
        ["stop", "-t", "-1", "web"],
        ["stop", "web"],
        ["rm", "-f", "-t", "3", "web"],
        ["rm", "-f", "web", "db"],
        ["run", "--plan", "/p.json", "--rm", "web"],
        ["run", "web"],
        ["--log-level", "debug", "rm", "-f", "web"],
        ["cleanup", "--help"],
        ["kill", "web"],
        ["kill", "-s", "-9", "web"],
        ["kill", "--signal", "HUP", "web"],
        ["kill", "-s", "HUP", "web", "db"],
        ["exec", "-i", "web", "cat"],
        ["exec", "web"],
        ["exec", "web", "--"],
        ["exec", "web", "--", "-x"],
        ["exec", "--list", "web"],
        ["exec", "-u", "nobody", "web", "id"],  # any option: argparse
        ["exec", "-e", "A=1", "web", "env"],
        ["exec", "-d", "web", "sleep", "9"],
        ["exec", "-w", "/tmp", "web", "pwd"],
        ["exec", "--stop", "0123", "web"],
        ["exec", "web", "-i", "cat"],
        ["exec", "--", "web", "true"],
        ["--log-level", "debug", "exec", "web", "true"],
        ["ps"],
        [],
    ],
)
def test_other_forms_go_through_argparse(argv: list[str]) -> None:
    assert cli.fast_arguments(argv) is None


def test_a_bad_stop_timeout_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["stop", "-t", "soon", "web"])
    assert exited.value.code == 125
    assert "invalid float value: 'soon'" in capsys.readouterr().err


def test_the_fast_forms_do_not_import_argparse() -> None:
    probe = (
        "import sys; from toolkit.cli import main as cli; "
        "cli.fast_arguments(['stop', '-t', '10', 'web']); cli.fast_arguments(['rm', '-f', 'web']); "
        "cli.fast_arguments(['exec', 'web', '--', 'true']); "
        "print('argparse' in sys.modules, 'typing' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


LAUNCHER = Path(__file__).resolve().parent.parent.parent / "bin" / "podunit"


def test_the_launcher_runs_podunit_without_site(tmp_path: Path) -> None:
    """bin/podunit (python3 -I -S, paths by hand) behaves as the console script."""
    env = {"PATH": os.environ["PATH"], "PODUNIT_STATE_DIR": str(tmp_path / "s"),
           "PODUNIT_RUN_DIR": str(tmp_path / "r")}  # fmt: skip
    script = Path(sys.executable).parent / "podunit"
    for argv in (["ps", "-a"], ["rm", "-f", "nothing"], ["stop", "-t", "1", "nothing"]):
        fast = subprocess.run([str(LAUNCHER), *argv], capture_output=True, text=True, env=env)
        usual = subprocess.run([str(script), *argv], capture_output=True, text=True, env=env)
        assert (fast.returncode, fast.stdout, fast.stderr) == (
            usual.returncode, usual.stdout, usual.stderr
        )  # fmt: skip
    probe = subprocess.run([str(LAUNCHER), "bogus-verb"], capture_output=True, text=True, env=env)
    assert probe.returncode == 125 and "Traceback" not in probe.stderr


def test_python_module_children_of_the_launcher_find_toolkit() -> None:
    """Under bin/podunit (-I -S, paths by hand) `-m toolkit.systemd.notify` (the proxy) runs."""
    from toolkit import proc

    module = "toolkit.systemd.notify"
    assert proc.python_module_argv(module) == [sys.executable, "-m", module]
    repo = LAUNCHER.parent.parent
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    probe = (  # what bin/podunit does, then start the proxy's module as notify.py does
        f"import subprocess, sys; sys.path[:0] = [{str(repo)!r}, "
        f"{str(repo / '.venv' / 'lib' / version / 'site-packages')!r}]\n"
        "from toolkit import proc\n"
        "argv = [*proc.python_module_argv('toolkit.systemd.notify'), '--help']\n"
        "print(argv[1:3], subprocess.run(argv, capture_output=True, text=True).stdout)"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("['-I', '-S']"), result.stdout
    assert "usage: podunit-notify-proxy" in result.stdout


def test_the_exit_command_finds_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.runtime import launch

    assert launch.podunit_command(False)[0] == str(Path(sys.executable).parent / "podunit")
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3-nowhere")
    assert launch.podunit_command(True, str(LAUNCHER)) == [str(LAUNCHER), "--user"]
    assert launch.podunit_command(False, "pytest") == [
        "/usr/bin/python3-nowhere", "-m", "toolkit.cli.main",
    ]  # fmt: skip


def test_the_exit_commands_module_fallback_imports_as_the_launcher_does() -> None:
    """No console script and no launcher in argv[0] under -I -S: `-m toolkit.cli.main` still
    finds toolkit (the same flags and sys.path as this process)."""
    repo = LAUNCHER.parent.parent
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    probe = (
        f"import subprocess, sys; sys.path[:0] = [{str(repo)!r}, "
        f"{str(repo / '.venv' / 'lib' / version / 'site-packages')!r}]\n"
        "from toolkit.runtime import launch\n"
        "argv = launch.podunit_command(False, 'not-the-launcher')\n"
        "print(argv[1:3], subprocess.run([*argv, '--help'], capture_output=True, text=True).stdout)"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("['-I', '-S']"), result.stdout
    assert "usage: podunit" in result.stdout


def test_a_units_invocation_flushes_its_output_before_exiting_at_once(tmp_path: Path) -> None:
    """`os._exit` ends the unit forms: their output and exit status must still be right."""
    from toolkit.storage.paths import RuntimePaths
    from toolkit.storage.records import EXITED, ContainerOptions, ContainerRecord
    from toolkit.storage.state import StateStore

    paths = RuntimePaths(user=False, state_dir=tmp_path / "s", run_dir=tmp_path / "r")
    with StateStore(paths) as store:
        store.add(ContainerRecord(
            id="ab" * 32, name="web", runtime="/bin/true", status=EXITED, created_at=0.0,
            spec={}, options=ContainerOptions(released=True, cgroup_placement={"manager": "none"}),
        ))  # fmt: skip
    env = {"PATH": os.environ["PATH"], "PODUNIT_STATE_DIR": str(paths.state_dir),
           "PODUNIT_RUN_DIR": str(paths.run_dir)}  # fmt: skip
    script = Path(sys.executable).parent / "podunit"
    stopped = subprocess.run(
        [str(script), "stop", "-t", "1", "nothing"], capture_output=True, text=True, env=env
    )
    assert (stopped.returncode, stopped.stderr) == (125, "podunit: no such container: nothing\n")
    removed = subprocess.run(
        [str(script), "rm", "-f", "web"], capture_output=True, text=True, env=env
    )
    assert (removed.returncode, removed.stdout, removed.stderr) == (0, "web\n", "")
    with StateStore(paths) as store:
        assert store.find("web") is None

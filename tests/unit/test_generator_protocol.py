"""The generator protocol (systemd.generator(7), spec §2) and `podunit generate`/`validate`.

The real executables in generators/ run as subprocesses on definition files in a
temporary directory (PODUNIT_DEFINITION_DIRS); `PODUNIT_KMSG` points the kernel
log at a plain file, never the host's /dev/kmsg.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.cli import main as cli
from toolkit.errors import PodunitError
from toolkit.unitgen.generator import GeneratorLog, podunit_executable, write_units
from toolkit.unitgen.render import UnitFiles

LAUNCHER = Path(__file__).resolve().parents[2] / "bin" / "podunit"  # units run it (not .venv's)

GOOD = """\
containers:
  web:
    image: docker.io/library/nginx:1.27
    reload: {signal: SIGHUP}
"""
# GOOD's pull unit (toolkit.unitgen.images)
PULL_NGINX = "podunit-pull-docker.io-library-nginx\\x3a1.27.service"
GOOD_SOCKET = """\
containers:
  echo:
    rootfs: /srv/echo
    sockets: [{listen: "127.0.0.1:7777", name: echo}]
"""
UNKNOWN_KEY = """\
containers:
  broken:
    image: x
    restrat: always
"""
SYNTAX_ERROR = "containers:\n  oops: [unclosed\n"
HOSTILE_ALIAS = """\
containers:
  sneaky:
    image: x
    install: {alias: ["../../etc/foo.service"]}
"""
COMPOSE = """\
services:
  cache:
    image: docker.io/library/redis:7
    stop_grace_period: 1m30s
    restart: unless-stopped
"""


@pytest.fixture
def defs(tmp_path: Path) -> Path:
    directory = tmp_path / "defs"
    directory.mkdir()
    return directory


def environment(defs: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PODUNIT_")}
    env["PODUNIT_DEFINITION_DIRS"] = str(defs)
    env["PODUNIT_RUN_DIR"] = str(defs.parent / "run")  # the generator's cache
    env.update(extra)
    return env


def run_generator(
    repo_root: Path, args: list[str], env: dict[str, str], *, user: bool = False
) -> subprocess.CompletedProcess[str]:
    name = "podunit-user-generator" if user else "podunit-generator"
    return subprocess.run(
        [str(repo_root / "generators" / name), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def output_dirs(tmp_path: Path) -> list[Path]:
    dirs = [tmp_path / "normal", tmp_path / "early", tmp_path / "late"]
    for directory in dirs:
        directory.mkdir()
    return dirs


def tree(directory: Path) -> dict[str, str]:
    """Every entry under `directory`: files as "file", symlinks as "-> target"."""
    found = {}
    for path in sorted(directory.rglob("*")):
        relative = str(path.relative_to(directory))
        if path.is_symlink():
            found[relative] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[relative] = "file"
    return found


def test_good_and_bad_definitions(repo_root: Path, tmp_path: Path, defs: Path) -> None:
    (defs / "a-broken.yaml").write_text(UNKNOWN_KEY)
    (defs / "b-syntax.yaml").write_text(SYNTAX_ERROR)
    (defs / "c-web.yaml").write_text(GOOD)
    (defs / "d-sneaky.yaml").write_text(HOSTILE_ALIAS)
    sub = defs / "more"
    sub.mkdir()
    (sub / "echo.yml").write_text(GOOD_SOCKET)
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    normal, early, late = output_dirs(tmp_path)
    result = run_generator(
        repo_root, [str(normal), str(early), str(late)], environment(defs, PODUNIT_KMSG=str(kmsg))
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert tree(normal) == {
        "echo.service": "file",
        "echo.socket": "file",
        "multi-user.target.wants/web.service": "-> ../web.service",
        "podunit/echo.json": "file",
        "podunit/web.json": "file",
        "podunit-pull-docker.io-library-nginx\\x3a1.27.service": "file",
        "sockets.target.wants/echo.socket": "-> ../echo.socket",
        "web.service": "file",
    }
    assert tree(early) == {} and tree(late) == {}
    assert not (tmp_path / "etc").exists()
    records = kmsg.read_text().splitlines()
    assert len(records) == 3, records
    pattern = re.compile(
        r"<3>podunit-generator\[\d+\]: " + re.escape(str(defs)) + r"/(\S+):(\d+):(\d+): (.*)"
    )
    matches = [pattern.fullmatch(record) for record in records]
    assert all(matches), records
    by_file = {m.group(1): m for m in matches if m}
    assert set(by_file) == {"a-broken.yaml", "b-syntax.yaml", "d-sneaky.yaml"}
    assert by_file["a-broken.yaml"].group(2, 3) == ("4", "5")
    assert "restrat" in by_file["a-broken.yaml"].group(4)
    assert "../../etc/foo.service" in by_file["d-sneaky.yaml"].group(4)
    web = (normal / "web.service").read_text()
    assert f"SourcePath={defs}/c-web.yaml\n" in web
    assert f"ExecStart={repo_root}/bin/podunit run --plan {normal}/podunit/web.json web\n" in web
    assert f'Environment="PODUNIT_DEFINITION_DIRS={defs}"\n' in web


def test_all_good_exits_zero_and_logs_nothing(repo_root: Path, tmp_path: Path, defs: Path) -> None:
    (defs / "web.yaml").write_text(GOOD)
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    normal = tmp_path / "normal"
    normal.mkdir()
    result = run_generator(repo_root, [str(normal)], environment(defs, PODUNIT_KMSG=str(kmsg)))
    assert (result.returncode, result.stderr, kmsg.read_text()) == (0, "", "")
    assert (normal / "web.service").is_file()


def test_log_falls_back_to_stderr_when_kmsg_is_not_writable(
    repo_root: Path, tmp_path: Path, defs: Path
) -> None:
    (defs / "broken.yaml").write_text(UNKNOWN_KEY)
    normal, early, late = output_dirs(tmp_path)
    env = environment(defs, PODUNIT_KMSG=str(tmp_path / "missing-dir" / "kmsg"))
    result = run_generator(repo_root, [str(normal), str(early), str(late)], env)
    assert result.returncode == 1
    assert re.fullmatch(
        r"podunit-generator\[\d+\]: \S+/broken\.yaml:4:5: unknown key 'restrat'.*\n", result.stderr
    ), result.stderr
    assert tree(normal) == {}


def test_manual_run_without_arguments_prints_a_dry_run(repo_root: Path, defs: Path) -> None:
    (defs / "web.yaml").write_text(GOOD)
    (defs / "broken.yaml").write_text(UNKNOWN_KEY)
    result = run_generator(repo_root, [], environment(defs))
    assert result.returncode == 1
    assert result.stdout.startswith(f"---{PULL_NGINX}---\n# Automatically generated")
    assert "\n---web.service---\n# Automatically generated" in result.stdout
    assert "broken.yaml:4:5: unknown key 'restrat'" in result.stderr


def test_usage_errors(repo_root: Path, tmp_path: Path, defs: Path) -> None:
    for args in (["--help"], [str(tmp_path), str(tmp_path)]):
        result = run_generator(repo_root, args, environment(defs))
        assert result.returncode == 2
        assert "usage: podunit-generator [NORMAL_DIR [EARLY_DIR LATE_DIR]]" in result.stderr


def test_user_generator_uses_the_user_search_path(repo_root: Path, tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "podunit").mkdir(parents=True)
    (config / "podunit" / "web.yaml").write_text(GOOD)
    env = environment(
        tmp_path / "unused", XDG_CONFIG_HOME=str(config), XDG_RUNTIME_DIR=str(tmp_path)
    )
    del env["PODUNIT_DEFINITION_DIRS"]
    normal = tmp_path / "normal"
    normal.mkdir()
    result = run_generator(repo_root, [str(normal)], env, user=True)
    assert result.returncode == 0, result.stderr
    web = (normal / "web.service").read_text()
    plan = f"{normal}/podunit/web.json"
    assert f"ExecStart={repo_root}/bin/podunit --user run --plan {plan} web\n" in web
    assert "Environment=" not in web


def test_podunit_executable_override(repo_root: Path, tmp_path: Path, defs: Path) -> None:
    (defs / "web.yaml").write_text(GOOD)
    result = run_generator(repo_root, [], environment(defs, PODUNIT_EXECUTABLE="/usr/bin/podunit"))
    plan = "/run/systemd/generator/podunit/web.json"  # a manual run shows systemd's directory
    assert f"ExecStart=/usr/bin/podunit run --plan {plan} web\n" in result.stdout
    result = run_generator(repo_root, [], environment(defs, PODUNIT_EXECUTABLE="podunit"))
    assert result.returncode == 1
    assert "PODUNIT_EXECUTABLE='podunit' must be an absolute path" in result.stderr


def test_bad_search_path_is_logged_not_a_traceback(repo_root: Path, tmp_path: Path) -> None:
    normal = tmp_path / "normal"
    normal.mkdir()
    env = environment(tmp_path, PODUNIT_DEFINITION_DIRS="relative/dir", PODUNIT_KMSG="/nonexistent")
    result = run_generator(repo_root, [str(normal)], env)
    assert result.returncode == 1
    assert re.fullmatch(
        r"podunit-generator\[\d+\]: PODUNIT_DEFINITION_DIRS entry 'relative/dir' is not an "
        r"absolute path\n",
        result.stderr,
    ), result.stderr


def test_podunit_executable_resolution() -> None:
    assert podunit_executable({"PODUNIT_EXECUTABLE": "/x/podunit"}, "/y") == "/x/podunit"
    assert podunit_executable({}, "/y/podunit") == "/y/podunit"
    assert podunit_executable({}) == str(LAUNCHER)
    installed = podunit_executable({}, launcher="/nonexistent/bin/podunit")
    assert installed == str(Path(sys.executable).parent / "podunit")  # the console script


def test_write_units_refuses_paths_outside_the_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for units in (
        UnitFiles(files={"../evil.service": "x"}),
        UnitFiles(symlinks={"../evil.service": "web.service"}),
        UnitFiles(symlinks={"a.target.wants/web.service": "../../web.service"}),
        UnitFiles(symlinks={"/etc/evil.service": "web.service"}),
        UnitFiles(symlinks={"www.service": "/etc/passwd"}),
        UnitFiles(symlinks={"www.service": "../web.service"}),
        UnitFiles(symlinks={"a/b/web.service": "../../web.service"}),
        UnitFiles(symlinks={"x.wants/web.service": "web.service"}),
        UnitFiles(symlinks={"x.wants/web.service": "../sub/web.service"}),
        UnitFiles(files={"sub/web.service": "x"}),
    ):
        with pytest.raises(PodunitError, match="refusing"):
            write_units(str(out), units.files, units.symlinks)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out"]


def test_write_units_replaces_existing_files_and_links(tmp_path: Path) -> None:
    units = UnitFiles({"web.service": "new\n"}, {"a.target.wants/web.service": "../web.service"})
    (tmp_path / "web.service").write_text("old\n")
    (tmp_path / "a.target.wants").mkdir()
    (tmp_path / "a.target.wants" / "web.service").symlink_to("../elsewhere.service")
    write_units(str(tmp_path), units.files, units.symlinks)
    assert (tmp_path / "web.service").read_text() == "new\n"
    assert os.readlink(tmp_path / "a.target.wants" / "web.service") == "../web.service"
    assert tree(tmp_path).keys() == {"web.service", "a.target.wants/web.service"}


def test_generator_log_record_format(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    log = GeneratorLog("podunit-generator", kmsg=str(kmsg))
    log.log(GeneratorLog.INFO, "hello")
    log.error(PodunitError("bad", hint="fix it"))
    log.close()
    assert kmsg.read_text() == (
        f"<6>podunit-generator[{os.getpid()}]: hello\n"
        f"<3>podunit-generator[{os.getpid()}]: bad (hint: fix it)\n"
    )


# --- podunit generate / validate ------------------------------------------------------------


def test_cli_generate_dry_run_and_output_dir(
    defs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (defs / "web.yaml").write_text(GOOD)
    (defs / "echo.yaml").write_text(GOOD_SOCKET)
    monkeypatch.setenv("PODUNIT_DEFINITION_DIRS", str(defs))
    monkeypatch.delenv("PODUNIT_EXECUTABLE", raising=False)
    assert cli.main(["generate", "--dry-run"]) == 0
    out = capsys.readouterr().out
    headers = re.findall(r"^---(.*)---$", out, re.MULTILINE)
    assert headers == ["echo.service", "echo.socket", PULL_NGINX, "web.service"]
    plan = "/run/systemd/generator/podunit/web.json"
    assert f"ExecStart={LAUNCHER} run --plan {plan} web\n" in out
    target = tmp_path / "generated" / "deep"
    assert cli.main(["generate", str(target)]) == 0
    assert sorted(tree(target)) == [
        "echo.service", "echo.socket", "multi-user.target.wants/web.service",
        PULL_NGINX, "podunit/echo.json", "podunit/web.json",
        "sockets.target.wants/echo.socket", "web.service",
    ]  # fmt: skip
    assert cli.main(["generate", "--dry-run", str(target)]) == 0  # as written to the directory
    out = capsys.readouterr().out
    assert (target / "web.service").read_text() == out.split("---web.service---\n")[1]
    assert f" run --plan {target}/podunit/web.json web\n" in out


def test_cli_generate_into_an_impossible_directory(
    defs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (defs / "web.yaml").write_text(GOOD)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PODUNIT_DEFINITION_DIRS", str(defs))
    assert cli.main(["generate", str(tmp_path / "file" / "out")]) == 125
    assert (
        capsys.readouterr().err == f"podunit: cannot create {tmp_path}/file/out: Not a directory\n"
    )


def test_cli_generate_reports_errors_and_still_prints_the_good(
    defs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (defs / "web.yaml").write_text(GOOD)
    (defs / "broken.yaml").write_text(UNKNOWN_KEY)
    monkeypatch.setenv("PODUNIT_DEFINITION_DIRS", str(defs))
    assert cli.main(["generate", "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"---{PULL_NGINX}---\n")
    assert "\n---web.service---\n" in captured.out
    assert captured.err == (
        f"{defs}/broken.yaml:4:5: unknown key 'restrat' (did you mean 'restart'?)\n"
    )


def test_cli_validate_prints_only_problems(
    defs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (defs / "web.yaml").write_text(GOOD)
    monkeypatch.setenv("PODUNIT_DEFINITION_DIRS", str(defs))
    assert cli.main(["validate"]) == 0
    assert capsys.readouterr() == ("", "")
    (defs / "sneaky.yaml").write_text(HOSTILE_ALIAS)
    (defs / "broken.yaml").write_text(UNKNOWN_KEY)
    assert cli.main(["validate"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{defs}/broken.yaml:4:5: unknown key 'restrat'")
    assert lines[1].startswith(f"{defs}/sneaky.yaml:")
    assert cli.main(["validate", str(defs / "web.yaml")]) == 0
    assert cli.main(["validate", str(defs / "broken.yaml"), str(defs / "nope.yaml")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{defs}/nope.yaml:1:1: no such file"
    assert "restrat" in lines[1]


def test_cli_validate_reports_rendering_problems(
    defs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Problems only the renderer sees (socket names, healthy deps) are found by validate too."""
    (defs / "app.yaml").write_text(
        "containers:\n"
        "  db: {image: postgres}\n"
        "  app:\n"
        "    image: app\n"
        "    depends_on: {db: {condition: service_healthy}}\n"
        "  two:\n"
        "    image: x\n"
        "    sockets: [{listen: '80', name: a}, {listen: '81', name: b}]\n"
    )
    monkeypatch.setenv("PODUNIT_DEFINITION_DIRS", str(defs))
    assert cli.main(["validate"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{defs}/app.yaml:3:3",
        f"{defs}/app.yaml:6:3",
    ]
    assert "notify: healthy" in lines[0]
    assert "FileDescriptorName" in lines[1]


def test_compose_file_becomes_a_unit(
    defs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (defs / "compose.yaml").write_text(COMPOSE)
    monkeypatch.setenv("PODUNIT_DEFINITION_DIRS", str(defs))
    assert cli.main(["generate", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # project "defs" (the directory's name): unit defs-cache.service, and the project's target
    assert out.startswith("---defs-cache.service---\n")
    assert "\n---defs-project.target---\n" in out
    assert "\nExecStop=" in out and " stop -t 90 defs-cache\n" in out
    assert "\nTimeoutStopSec=120\n" in out
    assert "\nRestart=always\n" in out


@pytest.mark.parametrize("argv", [["generate", "--dry-run", "--user"], ["--user", "generate"]])
def test_cli_generate_user_units(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "podunit").mkdir()
    (tmp_path / "podunit" / "web.yaml").write_text(GOOD)
    monkeypatch.delenv("PODUNIT_DEFINITION_DIRS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert cli.main(argv) == 0
    plan = f"{tmp_path}/run/systemd/generator/podunit/web.json"
    assert f"ExecStart={LAUNCHER} --user run --plan {plan} web\n" in capsys.readouterr().out
    assert cli.main(["validate", "--user"]) == 0


def test_plan_files_hold_the_rendered_containers(
    repo_root: Path, tmp_path: Path, defs: Path
) -> None:
    """`<normal>/podunit/NAME.json` is the container as parsed (templates: `NAME@.json`,
    the template), and the service runs `podunit run --plan` on it."""
    from toolkit.definitions.loader import load_all
    from toolkit.definitions.model import PLAN_KEY, PLAN_VERSION, container_from_json

    (defs / "web.yaml").write_text(GOOD)
    (defs / "worker.yaml").write_text("containers:\n  worker@:\n    image: x\n    hostname: w-%i\n")
    normal = tmp_path / "normal"
    normal.mkdir()
    result = run_generator(repo_root, [str(normal)], environment(defs))
    assert result.returncode == 0, result.stderr
    expected = load_all([defs]).containers
    for unit, instance in (("web", "web"), ("worker@", "worker@%i")):
        plan = normal / "podunit" / f"{unit}.json"
        data = json.loads(plan.read_text())
        assert data[PLAN_KEY] == PLAN_VERSION
        assert container_from_json(data["container"]) == expected[unit]
        service = (normal / f"{unit}.service").read_text()
        assert f"ExecStart={repo_root}/bin/podunit run --plan {plan} {instance}\n" in service

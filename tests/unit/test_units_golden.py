"""Golden tests: tests/golden/*.yaml definitions in, assertions on the generated units.

Each golden file carries its expectations as comment lines, in the style of
Quadlet's test files (arguments split like a POSIX shell; `@PODUNIT@` is the
podunit executable, `@DIR@` the golden directory):

    ## file NAME                          switch the unit the next assertions look at
                                          (default: the only .service generated)
    ## assert-key-is SECTION KEY V...     every value of KEY, in order, is V...
    ## assert-key-missing SECTION KEY
    ## assert-header-contains TEXT        a leading comment line contains TEXT
    ## assert-no-file NAME
    ## assert-symlink LINK TARGET         LINK (relative to the output dir) -> TARGET
    ## assert-symlink-count N             symlinks of the whole file
    ## assert-error REGEX                 an error matches (without one: no errors allowed)
    ## assert-generated [NAME...]         exactly these containers were generated

Every generated unit also passes `systemd-analyze verify`.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from test_units import parse_unit, verify

from toolkit.definitions.loader import load_paths
from toolkit.units import UnitFiles, render_all

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
GOLDEN_FILES = sorted(GOLDEN.glob("*.yaml"))


def generate(path: Path, podunit: str) -> tuple[dict[str, UnitFiles], list[str]]:
    loaded = load_paths([path])
    sources = {name: [str(p) for p in paths] for name, paths in loaded.sources.items()}
    rendered, errors = render_all(loaded.containers, podunit=podunit, sources=sources)
    return rendered, [str(error) for error in [*loaded.errors, *errors]]


def assertions(path: Path, podunit: str) -> list[list[str]]:
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            text = line[3:].replace("@PODUNIT@", podunit).replace("@DIR@", str(GOLDEN))
            found.append(shlex.split(text))
    return found


def run_assertions(path: Path, podunit: str) -> int:
    """Check every assertion of one golden file; return how many were checked."""
    rendered, errors = generate(path, podunit)
    files = {name: text for units in rendered.values() for name, text in units.files.items()}
    symlinks = {
        link: target for units in rendered.values() for link, target in units.symlinks.items()
    }
    services = [name for name in files if name.endswith(".service")]
    current = services[0] if len(services) == 1 else None
    checks = assertions(path, podunit)
    assert checks, f"{path.name} has no assertions"
    expects_errors = False
    for check in checks:
        verb, args = check[0], check[1:]
        where = f"{path.name}: {shlex.join(check)}"
        if verb == "file":
            current = args[0]
            continue
        if verb == "assert-error":
            expects_errors = True
            assert any(re.search(args[0], error) for error in errors), f"{where}\nerrors: {errors}"
        elif verb == "assert-generated":
            assert sorted(rendered) == sorted(args), where
        elif verb == "assert-symlink":
            assert symlinks.get(args[0]) == args[1], f"{where}\nsymlinks: {symlinks}"
        elif verb == "assert-symlink-count":
            assert len(symlinks) == int(args[0]), f"{where}\nsymlinks: {symlinks}"
        elif verb == "assert-no-file":
            assert args[0] not in files, where
        else:
            assert current in files, f"{where}: no unit {current!r} in {sorted(files)}"
            text = files[current]
            if verb == "assert-header-contains":
                header = [line for line in text.splitlines() if line.startswith("#")]
                assert any(args[0] in line for line in header), f"{where}\n{text}"
                continue
            section, key = args[0], args[1]
            values = [v for k, v in parse_unit(text).get(section, []) if k == key]
            if verb == "assert-key-is":
                assert values == args[2:], f"{where}\ngot: {values}\n{text}"
            elif verb == "assert-key-missing":
                assert values == [], f"{where}\ngot: {values}"
            else:
                pytest.fail(f"{where}: unknown assertion {verb!r}")
    if not expects_errors:
        assert errors == [], f"{path.name}: unexpected errors {errors}"
    return len(checks)


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=[p.name for p in GOLDEN_FILES])
def test_golden(path: Path, repo_root: Path) -> None:
    assert run_assertions(path, str(repo_root / ".venv/bin/podunit")) > 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_every_golden_unit_passes_systemd_analyze_verify(tmp_path: Path, repo_root: Path) -> None:
    checked = 0
    for path in GOLDEN_FILES:
        rendered, _ = generate(path, str(repo_root / ".venv/bin/podunit"))
        if not rendered:
            continue
        directory = tmp_path / path.stem
        directory.mkdir()
        for units in rendered.values():
            for name, text in units.files.items():
                (directory / name).write_text(text)
                checked += 1
        assert verify(directory) == "", path.name
    assert checked >= 20


def test_the_runner_catches_wrong_expectations(tmp_path: Path, repo_root: Path) -> None:
    """The assertion runner itself can fail (so a passing golden test means something)."""
    podunit = str(repo_root / ".venv/bin/podunit")
    wrong = [
        "## assert-key-is Service Type forking",
        "## assert-key-missing Service Type",
        "## assert-symlink multi-user.target.wants/web.service ../other.service",
        "## assert-symlink-count 2",
        "## assert-error nothing-like-this",
        "## assert-generated other",
        "## assert-no-file web.service",
        "## assert-header-contains not-in-the-header",
    ]
    for line in wrong:
        golden = tmp_path / "web.yaml"
        golden.write_text(f"{line}\ncontainers:\n  web:\n    image: x\n")
        with pytest.raises(AssertionError):
            run_assertions(golden, podunit)
    golden.write_text("## assert-key-is Service Type notify\ncontainers:\n  web:\n    imag: x\n")
    with pytest.raises(AssertionError, match="no unit"):
        run_assertions(golden, podunit)

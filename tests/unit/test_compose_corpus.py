"""A corpus of realistic Compose projects (tests/golden/compose/*/): each is valid
Compose (the JSON schema), passes `podunit validate`, and generates exactly the units
and install symlinks kept in its `expected/` directory (see the README there;
`PODUNIT_REGENERATE_GOLDEN=1` rewrites them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from toolkit.definitions.loader import load_paths
from toolkit.definitions.search import COMPOSE_FILE_NAMES
from toolkit.unitgen.render import render_all

from .test_compose import compose_errors
from .test_units import verify

CORPUS = Path(__file__).resolve().parent.parent / "golden" / "compose"
PROJECTS = sorted(p for p in CORPUS.iterdir() if p.is_dir())
PODUNIT = str(Path(__file__).resolve().parents[2] / "bin" / "podunit")
PLANS = "/run/systemd/generator/podunit"
REGENERATE = os.environ.get("PODUNIT_REGENERATE_GOLDEN") == "1"
# The machine's environment must not leak into the goldens: only the .env files count.
ENVIRON: dict[str, str] = {}


def compose_file(project: Path) -> Path:
    return next(project / name for name in COMPOSE_FILE_NAMES if (project / name).exists())


def generated(project: Path) -> dict[str, str]:
    """Every unit file (and `symlinks` listing the install links), with the corpus
    directory written as @DIR@ and the podunit executable as @PODUNIT@."""
    loaded = load_paths([project], environ=ENVIRON)
    assert [str(e) for e in loaded.errors] == []
    rendered, errors = render_all(
        loaded.containers,
        podunit=PODUNIT,
        sources=loaded.sources,
        plan_dir=PLANS,
        notes=loaded.notes,
        projects=loaded.projects,
    )
    assert [str(e) for e in errors] == []
    files: dict[str, str] = {}
    links = []
    for name in sorted(rendered):
        if name.startswith(("podunit-pull-", "podunit-build-")):
            continue  # the image units: the images tests' business
        files.update(rendered[name].files)
        links += [f"{link} -> {target}" for link, target in rendered[name].symlinks.items()]
    files["symlinks"] = "".join(f"{line}\n" for line in sorted(links))
    return {
        name: text.replace(str(CORPUS), "@DIR@").replace(PODUNIT, "@PODUNIT@")
        for name, text in files.items()
    }


def test_the_corpus_has_projects() -> None:
    assert len(PROJECTS) >= 4


@pytest.mark.parametrize("project", PROJECTS, ids=[p.name for p in PROJECTS])
def test_project_is_valid_compose(project: Path) -> None:
    assert compose_errors(compose_file(project).read_text()) == []


@pytest.mark.parametrize("project", PROJECTS, ids=[p.name for p in PROJECTS])
def test_project_generates_its_golden_units(project: Path) -> None:
    found = generated(project)
    expected_dir = project / "expected"
    if REGENERATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        expected_dir.mkdir()
        for name, text in found.items():
            (expected_dir / name).write_text(text)
    expected = {p.name: p.read_text() for p in sorted(expected_dir.iterdir())}
    assert sorted(found) == sorted(expected)
    for name, text in expected.items():
        assert found[name] == text, f"{project.name}/expected/{name} differs"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_corpus_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    for project in PROJECTS:
        directory = tmp_path / project.name
        directory.mkdir()
        for name, text in generated(project).items():
            if name != "symlinks":
                (directory / name).write_text(
                    text.replace("@PODUNIT@", PODUNIT).replace("@DIR@", str(CORPUS))
                )
        assert verify(directory) == "", project.name

"""The man page podunit.yaml(5): rendered by scripts/man (go-md2man) from
docs/podunit.yaml.5.md, committed as man/podunit.yaml.5, installed by the wheel."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "docs" / "podunit.yaml.5.md"
PAGE = ROOT / "man" / "podunit.yaml.5"


@pytest.mark.skipif(
    shutil.which("go-md2man") is None, reason="needs go-md2man (scripts/bootstrap installs it)"
)
def test_the_committed_man_page_is_rendered_from_its_current_source(tmp_path: Path) -> None:
    rendered = tmp_path / "podunit.yaml.5"
    subprocess.run(["go-md2man", "-in", str(SOURCE), "-out", str(rendered)], check=True)
    assert rendered.read_bytes() == PAGE.read_bytes(), (
        "man/podunit.yaml.5 is older than docs/podunit.yaml.5.md: run scripts/man"
    )


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man (scripts/bootstrap: man-db)")
def test_man_shows_the_page_with_its_sections() -> None:
    shown = subprocess.run(
        ["man", "-l", str(PAGE)],
        capture_output=True, text=True, check=True,
        env={"MANWIDTH": "100", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert shown.splitlines()[0].split() == [
        "podunit.yaml(5)",
        "File",
        "Formats",
        "podunit.yaml(5)",
    ]
    assert "podunit.yaml — container definitions run as systemd services by podunit" in shown
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "FILES AND SEARCH PATH"):
        assert f"\n{section}\n" in shown

"""podunit.yaml(5) documents exactly the keys the parser accepts (docs/podunit.yaml.5.md)."""

from __future__ import annotations

import re
from pathlib import Path

from toolkit.definitions.compose import COMPOSE_KEYS, UNSUPPORTED_HINTS, X_PODUNIT_KEYS
from toolkit.definitions.parse import CONTAINER_KEYS

MANPAGE = Path(__file__).resolve().parent.parent.parent / "docs" / "podunit.yaml.5.md"


def _section(title: str) -> str:
    text = MANPAGE.read_text()
    start = text.index(f"\n# {title}\n")
    end = text.find("\n# ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _first_column_names(table_text: str, header: str) -> set[str]:
    """Backquoted names in the first column of the table whose header row starts `| header |`."""
    lines = table_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    names: set[str] = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        first_cell = line.split(" | ")[0]
        names.update(re.findall(r"`([^`]+)`", first_cell))
    return names


def test_container_keys_table_matches_the_parser() -> None:
    assert _first_column_names(_section("CONTAINER KEYS"), "key") == set(CONTAINER_KEYS)


def test_every_container_key_has_type_default_and_meaning() -> None:
    rows = [line for line in _section("CONTAINER KEYS").splitlines() if line.startswith("| `")]
    assert len(rows) == len(CONTAINER_KEYS)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert len(cells) >= 4 and all(cells), row


def test_compose_mapping_table_matches_the_parser() -> None:
    documented = _first_column_names(_section("COMPOSE FILES"), "Compose key")
    assert documented - {"x-"} == set(COMPOSE_KEYS)


def test_x_podunit_table_matches_the_parser() -> None:
    documented = _first_column_names(_section("COMPOSE FILES"), "x-podunit key")
    assert documented == set(X_PODUNIT_KEYS)


def test_refused_compose_keys_are_listed_with_their_hints() -> None:
    """Every refused Compose key has a row, and the row says what its error's hint says."""
    rows = {}
    lines = _section("COMPOSE FILES").splitlines()
    start = lines.index("| Refused Compose key | instead |")
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        key, hint = (cell.strip() for cell in line.strip("|").split(" | "))
        rows[key.strip("`")] = hint
    assert rows == UNSUPPORTED_HINTS


def test_manpage_sections() -> None:
    text = MANPAGE.read_text()
    for title in (
        "FILES AND SEARCH PATH",
        "DROP-INS",
        "TEMPLATES",
        "COMPOSE FILES",
        "ERRORS",
        "GENERATOR CACHE",
    ):
        assert f"\n# {title}\n" in text

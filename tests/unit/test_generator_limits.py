"""Names and values that systemd cannot take: refused by `validate` and the generator,
located, before a unit is written (issue 15 items 7, 12).

Before: a 248-character name passed `validate` and the generator then failed to write
`NAME.service` (ENAMETOOLONG) with no location; a passthrough value ending in a
backslash continued its line in the unit file and systemd lost the next line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from toolkit.cli import main as cli
from toolkit.definitions import values
from toolkit.definitions.loader import load_paths
from toolkit.unitgen import escape


def test_the_name_limit_is_the_unit_name_limit() -> None:
    assert values.CONTAINER_NAME_MAX == escape.UNIT_NAME_MAX - len(".service") == 247


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a" * 247, True),
        ("a" * 248, False),
        ("a" * 246 + "@", True),
        ("a" * 247 + "@", False),
        ("a" * 1000, False),
    ],
)
def test_long_names_are_refused_where_they_are_written(tmp_path: Path, name: str, ok: bool) -> None:
    (tmp_path / "long.yaml").write_text(f"containers:\n  {name}:\n    rootfs: /srv\n")
    result = load_paths([tmp_path / "long.yaml"])
    if ok:
        assert result.errors == [] and len(result.containers) == 1
        return
    assert [str(error) for error in result.errors] == [
        f"{tmp_path}/long.yaml:2:3: container name '{name[:24]}...' is {len(name)} characters "
        "long, longer than 247 ('NAME.service' must fit systemd's 255-character unit names)"
    ]


def run_generator(repo_root: Path, tmp_path: Path, defs: Path) -> subprocess.CompletedProcess[str]:
    normal = tmp_path / "normal"
    normal.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PODUNIT_")}
    env.update(
        PODUNIT_DEFINITION_DIRS=str(defs),
        PODUNIT_RUN_DIR=str(tmp_path / "run"),
        PODUNIT_KMSG=str(tmp_path / "no-kmsg" / "kmsg"),  # not writable: stderr
    )
    return subprocess.run(
        [str(repo_root / "generators" / "podunit-generator"), str(normal)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_generator_writes_the_longest_name_and_locates_a_longer_one(
    repo_root: Path, tmp_path: Path
) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    longest, longer = "a" * 247, "b" * 248
    (defs / "names.yaml").write_text(
        f"containers:\n  {longest}:\n    rootfs: /srv\n  {longer}:\n    rootfs: /srv\n"
    )
    result = run_generator(repo_root, tmp_path, defs)
    assert result.returncode == 1
    assert (tmp_path / "normal" / f"{longest}.service").is_file()
    assert (tmp_path / "normal" / "podunit" / f"{longest}.json").is_file()
    assert sorted(os.listdir(tmp_path / "normal")) == [
        f"{longest}.service",
        "multi-user.target.wants",
        "podunit",
    ]
    [line] = result.stderr.splitlines()
    assert f"{defs}/names.yaml:4:3: container name 'bbbbbbbbbbbbbbbbbbbbbbbb...'" in line


TRAILING = """\
containers:
  web:
    rootfs: /srv
    service: {TimeoutStopSec: "40 \\\\", SyslogIdentifier: "kept \\\\\\\\"}
  other:
    rootfs: /srv
    unit: {Description: "x \\\\"}
"""


def test_validate_and_the_generator_refuse_a_trailing_backslash(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "web.yaml").write_text(TRAILING)
    assert cli.main(["validate", str(defs / "web.yaml")]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{defs}/web.yaml:5:3: container 'other': unit: Description 'x \\\\' ends in a "
        "backslash, which systemd reads as a line continuation (the unit's next line would "
        "be lost) (hint: remove the trailing backslash)",
        f"{defs}/web.yaml:2:3: container 'web': service: TimeoutStopSec '40 \\\\' ends in a "
        "backslash, which systemd reads as a line continuation (the unit's next line would "
        "be lost) (hint: remove the trailing backslash)",
    ]
    result = run_generator(repo_root, tmp_path, defs)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 2
    assert not (tmp_path / "normal" / "web.service").exists()
    # An escaped backslash (two) is a literal one and ends no line.
    (defs / "web.yaml").write_text(
        'containers:\n  web:\n    rootfs: /srv\n    service: {SyslogIdentifier: "kept \\\\\\\\"}\n'
    )
    result = run_generator(repo_root, tmp_path, defs)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "normal" / "web.service").read_text()
    assert "SyslogIdentifier=kept \\\\\n" in text and "\nRestart=no\n" in text

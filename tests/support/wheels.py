"""Wheels for an offline install test: podunit's own, built from the source tree, and its
dependencies repacked from this test environment (no network: the tests never download).

`repack(name, directory)` turns an installed distribution back into a wheel: the files
its RECORD lists inside site-packages (or, for a legacy egg-info install without a
RECORD, its top-level packages), its metadata, and a fresh WHEEL and RECORD. Good
enough for `pip install --no-index --find-links`, which is all it is for.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import sys_tags


def _site_files(dist: metadata.Distribution, site: Path) -> list[Path]:
    listed = [Path(str(f)) for f in dist.files or ()] if dist.read_text("RECORD") else []
    files = [site / f for f in listed if ".." not in f.parts and "__pycache__" not in f.parts]
    files = [
        f for f in files
        if f.is_file() and not any(part.endswith(".dist-info") for part in f.parts)
    ]  # fmt: skip
    if files:
        return files
    found = []
    for top in (dist.read_text("top_level.txt") or "").split():
        if "/" in top:
            continue
        base = site / top
        if base.is_dir():
            found += [p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        found += [p for p in site.glob(f"{top}.*") if p.is_file()]
    return found


def repack(name: str, directory: Path) -> Path:
    """A wheel of the installed distribution `name` in `directory`."""
    dist = metadata.distribution(name)
    site = Path(str(dist.locate_file("")))
    project = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    version = dist.version
    tag = next(iter(sys_tags()))
    info = f"{project}-{version}.dist-info"
    path = directory / f"{project}-{version}-{tag}.whl"
    records: list[str] = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:

        def add(arcname: str, data: bytes) -> None:
            wheel.writestr(arcname, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{arcname},sha256={digest.decode()},{len(data)}")

        for file in _site_files(dist, site):
            add(str(file.relative_to(site)), file.read_bytes())
        meta = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        add(f"{info}/METADATA", meta.encode())
        header = "Wheel-Version: 1.0\nGenerator: podunit-tests\nRoot-Is-Purelib: false\n"
        add(f"{info}/WHEEL", f"{header}Tag: {tag}\n".encode())
        records.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return path


def requirement_closure(name: str) -> list[str]:
    """`name` and every distribution it requires (markers evaluated, extras left out)."""
    seen: list[str] = []
    pending = [name]
    while pending:
        current = pending.pop()
        dist = metadata.distribution(current)
        canonical = dist.metadata["Name"]
        if canonical in seen:
            continue
        seen.append(canonical)
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


def build_podunit(source: Path, directory: Path) -> Path:
    """podunit's wheel, built from `source` (a copy of the tree) with this environment's
    setuptools, offline."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(directory), str(source)],
        check=True, capture_output=True, timeout=300, env={**os.environ, "PIP_NO_INPUT": "1"},
    )  # fmt: skip
    [wheel] = directory.glob("podunit-*.whl")
    return wheel


def copy_tree(checkout: Path, destination: Path) -> Path:
    """The files git knows of (tracked and new, not ignored): no .venv, no build output."""
    listed = (
        subprocess.run(
            [
                "git",
                "-C",
                str(checkout),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for relative in filter(None, listed):
        source = checkout / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode & 0o777)
    return destination

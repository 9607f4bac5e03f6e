"""Small file-system helpers without pathlib or shutil (foundation, like errors and proc).

pathlib (with urllib.parse, fnmatch, ...) would cost every unit's stop/rm/exec
process about 5 ms and shutil about 3 ms (issue 6), so the hot paths use these
`os`-only equivalents. Used by every layer; imports nothing from podunit.
"""

from __future__ import annotations

import os


def clean_path(path: str) -> str:
    """`path` as `str(pathlib.PurePosixPath(path))` spells it: no empty or `.` parts (`..`
    kept: collapsing it would be wrong after a symlink). Only `os` is imported here:
    toolkit.definitions.search uses it on the generator's warm path."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if path.startswith("//") and not path.startswith("///"):
        root = "//"  # POSIX leaves two leading slashes to the implementation; pathlib keeps them
    else:
        root = "/" if path.startswith("/") else ""
    return root + "/".join(parts) or "."


def make_dir(path: str, mode: int = 0o777) -> None:
    """`Path.mkdir(mode=mode, exist_ok=True)`: an existing directory is fine."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def remove_tree(path: str | os.PathLike[str]) -> None:
    """`rm -rf path` without following symbolic links; errors are ignored.

    What `shutil.rmtree(path, ignore_errors=True)` does, without importing shutil
    (with zlib, bz2 and lzma about 3 ms of every `podunit stop` and `rm`) or contextlib.
    """
    if os.path.islink(path):
        return  # as rmtree: a link to a directory is not a tree to remove
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(root, name))
            except OSError:  # contextlib.suppress: contextlib is not imported here
                continue
        for name in dirs:
            full = os.path.join(root, name)
            try:
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    os.rmdir(full)
            except OSError:
                continue
    try:
        os.rmdir(path)
    except OSError:
        return


def read_text(path: str | os.PathLike[str]) -> str:
    """`Path(path).read_text()` without importing pathlib (see RuntimePaths)."""
    with open(path, encoding="utf-8") as file:
        return file.read()


def unlink_if_present(path: str | os.PathLike[str]) -> None:
    """`Path(path).unlink(missing_ok=True)` without importing pathlib."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return

"""The definition search path and the walk that finds definition files (spec §1).

`search_dirs` gives the search path (highest precedence first), `Scan` walks it:
`*.yaml`/`*.yml` files, subdirectories walked, `*.d` directories holding drop-ins.
Every directory and file the walk looks at is recorded with its `stat` identity
in `Scan.inputs`, so the generator's cache (`toolkit.unitgen.cache`) can tell
whether anything changed without reading a file.

The run directory (`/run/podunit`, `$XDG_RUNTIME_DIR/podunit`) is also the first
search directory; the entries the runtime and the generator keep there
(`RUNTIME_ENTRIES`, the layout in `toolkit.storage.paths`) are not definitions and are not
walked: `rootfs/<id>` holds whole container root file systems, whose YAML files
must never become units.

Only `os` is imported: the generator's warm path runs this without PyYAML or the model.
"""

from __future__ import annotations

import os

from toolkit.errors import DefinitionError
from toolkit.fs import clean_path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TypeAlias

    # One input of the walk: ("d"|"f", path, st_dev, st_ino, st_size, st_mtime_ns,
    # st_ctime_ns), or ("-", path) for a directory or file that cannot be read.
    Input: TypeAlias = tuple[str | int, ...]

SYSTEM_RUN_DIR = "/run/podunit"
SYSTEM_DIRS = (SYSTEM_RUN_DIR, "/etc/podunit", "/usr/local/share/podunit", "/usr/share/podunit")
SUFFIXES = (".yaml", ".yml")
# Top-level entries of the run directory that belong to the runtime (toolkit.storage.paths) or to
# the generator's cache, not to the definitions.
RUNTIME_ENTRIES = frozenset(
    ["boot-id", "exits", "pidfiles", "locks", "containers", "rootfs", "sockets", "generator-cache"]
)


def search_dirs(*, user: bool = False, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The search path, highest precedence first (spec §1 table).

    `PODUNIT_DEFINITION_DIRS=dir1:dir2` replaces it; a relative entry is a
    `DefinitionError`.
    """
    override = environ.get("PODUNIT_DEFINITION_DIRS")
    if override is not None:
        result = []
        for entry in override.split(":"):
            if not entry:
                continue
            if not entry.startswith("/"):
                from toolkit.definitions.values import quote

                message = f"PODUNIT_DEFINITION_DIRS entry {quote(entry)} is not an absolute path"
                raise DefinitionError(None, message)
            result.append(clean_path(entry))
        return result
    if not user:
        return list(SYSTEM_DIRS)
    result = []
    runtime = run_dir(user=True, environ=environ)
    if runtime is not None:
        result.append(runtime)
    config_home = environ.get("XDG_CONFIG_HOME")
    if not (config_home and config_home.startswith("/")):
        home = environ.get("HOME") or os.path.expanduser("~")
        config_home = os.path.join(home, ".config")
    result.append(clean_path(f"{config_home}/podunit"))
    result.append(f"/etc/podunit/users/{os.getuid()}")
    return result


def run_dir(*, user: bool, environ: Mapping[str, str] = os.environ) -> str | None:
    """The per-boot run directory of the mode (spec §3.1; `$PODUNIT_RUN_DIR` when set, as
    in `toolkit.storage.paths`), None in user mode without an absolute `$XDG_RUNTIME_DIR`."""
    override = environ.get("PODUNIT_RUN_DIR")
    if override and override.startswith("/"):
        return clean_path(override)
    if not user:
        return SYSTEM_RUN_DIR
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and runtime_dir.startswith("/"):
        return clean_path(f"{runtime_dir}/podunit")
    return None


def _identity(kind: str, path: str, status: os.stat_result) -> Input:
    return (
        kind,
        path,
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


class Scan:
    """Definition files and drop-in directories found under the search directories.

    `skip_runtime`: the run directory whose `RUNTIME_ENTRIES` are not walked.
    """

    def __init__(self, *, skip_runtime: str | None = None) -> None:
        self.sources: dict[str, str] = {}  # file name (or path) -> first file of that name
        self.dropins: dict[str, dict[str, str]] = {}  # "web.yaml.d" -> drop-in name -> file
        self.seen: set[tuple[int, int]] = set()  # (device, inode) of walked directories
        self.inputs: list[Input] = []  # what the result depends on, in walk order
        self.skip_runtime = skip_runtime

    def walk(self, directory: str, *, shadow: bool) -> None:
        """Add the files under `directory` (`shadow`: the first file of a name wins)."""
        try:
            status = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:  # missing search directories are normal
            self.inputs.append(("-", directory))
            return
        if (status.st_dev, status.st_ino) in self.seen:  # symlink loops
            return
        self.seen.add((status.st_dev, status.st_ino))
        self.inputs.append(_identity("d", directory, status))
        runtime = directory == self.skip_runtime
        for entry in entries:
            name = entry.name
            if name.startswith("."):  # hidden: editors' and VCS files
                continue
            if runtime and name in RUNTIME_ENTRIES:
                continue
            if entry.is_dir():
                if name.endswith(".d"):
                    self.dropin_dir(entry.path, name)
                else:
                    self.walk(entry.path, shadow=shadow)
            elif name.endswith(SUFFIXES):
                self.add_source(entry.path, shadow=shadow, status=_stat(entry))

    def add_source(self, path: str, *, shadow: bool, status: os.stat_result | None) -> None:
        """A definition file (`status`: its stat, None if it cannot be read)."""
        self.inputs.append(("-", path) if status is None else _identity("f", path, status))
        key = os.path.basename(path) if shadow else path
        self.sources.setdefault(key, path)

    def dropin_dir(self, path: str, name: str) -> None:
        """Drop-ins for `name` minus `.d` (the first drop-in of a name wins)."""
        files = self.dropins.setdefault(name, {})
        try:
            status = os.stat(path)
            entries = list(os.scandir(path))
        except OSError:
            self.inputs.append(("-", path))
            return
        self.inputs.append(_identity("d", path, status))
        for entry in entries:
            if entry.name.endswith(SUFFIXES) and not entry.name.startswith("."):
                entry_status = _stat(entry)
                self.inputs.append(
                    ("-", entry.path)
                    if entry_status is None
                    else _identity("f", entry.path, entry_status)
                )
                files.setdefault(entry.name, entry.path)

    def dropins_for(self, source: str) -> list[str]:
        """The drop-in files of `source`, in lexical order of their names."""
        found = self.dropins.get(os.path.basename(source) + ".d", {})
        return [found[name] for name in sorted(found)]


def _stat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat()
    except OSError:  # a dangling symlink: read_file reports it
        return None

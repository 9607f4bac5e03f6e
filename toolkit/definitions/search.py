"""The definition search path and the walk that finds definition files (spec §1).

`search_dirs` gives the search path (highest precedence first), `Scan` walks it:
`*.yaml`/`*.yml` files, subdirectories walked, `*.d` directories holding drop-ins.
Every directory and file the walk looks at is recorded with its `stat` identity
in `Scan.inputs`, so the generator's cache (`toolkit.unitgen.cache`) can tell
whether anything changed without reading a file.

The run directory (`/run/podunit`, `$XDG_RUNTIME_DIR/podunit`) is also the first
search directory, and podunit's per-boot directory: its subdirectories belong to
the runtime, the networks, the generator's cache... (the layout in
`toolkit.storage.paths`) and are never walked; only its own `*.yaml`/`*.yml` files
and `*.d` drop-in directories are definitions. `rootfs/<id>` holds whole container
root file systems, whose YAML files must never become units, and `runtime-runc/`
or `netns/` change at every container start (walking them invalidated the
generator's cache).
The system search path never includes `/etc/podunit/users` (the user generator's).

One bad entry never stops the walk (podunit.yaml(5), "FILES AND SEARCH PATH"):
symbolic link loops, unreachable targets and unreadable subdirectories are noted
in `Scan.problems` and skipped; symbolic links to / or into /proc, /sys and /dev
are not followed; the walk stops at `MAX_DEPTH` levels and `MAX_ENTRIES` entries.

Only `os` is imported: the generator's warm path runs this without PyYAML or the model.
"""

from __future__ import annotations

import errno
import os

from toolkit.errors import DefinitionError
from toolkit.fs import clean_path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import TypeAlias

    # One input of the walk: ("d"|"f", path, st_dev, st_ino, st_size, st_mtime_ns,
    # st_ctime_ns), or ("-", path) for a directory or file that cannot be read.
    Input: TypeAlias = tuple[str | int, ...]

SYSTEM_RUN_DIR = "/run/podunit"
SYSTEM_DIRS = (SYSTEM_RUN_DIR, "/etc/podunit", "/usr/local/share/podunit", "/usr/share/podunit")
SUFFIXES = (".yaml", ".yml")
# Compose's file names: a project per directory, so such files are told apart by their
# path below the search directory, not by their name (podunit.yaml(5), "Compose projects").
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
DOTENV = ".env"  # a Compose project's variables (toolkit.definitions.project)
# The per-user admin directory: the user generator's (`/etc/podunit/users/$UID`), never
# system definitions (as Quadlet keeps its users/ directory out of system units).
USERS_DIR = "/etc/podunit/users"
# Symbolic links to these (or to /) are not walked: kernel file systems, endless trees.
KERNEL_DIRS = ("/proc", "/sys", "/dev")
MAX_DEPTH = 16  # directory levels below a search directory
MAX_ENTRIES = 100_000  # entries of all walked directories together


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


def _refused_target(path: str) -> str | None:
    """Why the directory `path`, reached through a symbolic link, is not walked: the
    root or a kernel file system (/proc holds a link to / for every process, so
    walking it walks everything), else None."""
    real = os.path.realpath(path)
    if real == "/":
        return "is a symbolic link to /: not searched"
    for kernel in KERNEL_DIRS:
        if real == kernel or real.startswith(kernel + "/"):
            return f"is a symbolic link into {kernel}, a kernel file system: not searched"
    return None


class Scan:
    """Definition files and drop-in directories found under the search directories.

    `skip_runtime`: the run directory, whose subdirectories (but `*.d`) are not walked;
    `exclude`: directories never walked (the system generator's `USERS_DIR`).
    The walk never raises: an entry it cannot use is skipped and noted in
    `problems` (one located `DefinitionError` each), the rest is still found.
    A name ending in `.yaml`/`.yml` is a definition whatever it is (it hides the
    lower files of its name); reading it (`toolkit.safefile`) reports one that
    is not a regular file.
    """

    def __init__(self, *, skip_runtime: str | None = None, exclude: Iterable[str] = ()) -> None:
        self.sources: dict[str, str] = {}  # file name (or path) -> first file of that name
        self.keys: dict[str, str] = {}  # file -> its key in sources
        self.dropins: dict[str, dict[str, str]] = {}  # "web.yaml.d" -> drop-in name -> file
        self.seen: set[tuple[int, int]] = set()  # (device, inode) of walked directories
        self.inputs: list[Input] = []  # what the result depends on, in walk order
        self.problems: list[DefinitionError] = []  # entries skipped, and why
        self.skip_runtime = skip_runtime
        self.entries = 0  # entries looked at, against MAX_ENTRIES
        for path in exclude:
            try:
                status = os.stat(path)
            except OSError:
                continue
            self.seen.add((status.st_dev, status.st_ino))

    @classmethod
    def of_mode(cls, *, user: bool, environ: Mapping[str, str] = os.environ) -> Scan:
        """An empty walk for the search path of the mode (system: without `USERS_DIR`)."""
        return cls(
            skip_runtime=run_dir(user=user, environ=environ),
            exclude=() if user else (USERS_DIR,),
        )

    def problem(self, path: str, message: str) -> None:
        self.problems.append(DefinitionError(None, f"{path}: {message}"))

    def walk(
        self, directory: str, *, shadow: bool, depth: int = 0, root: str | None = None
    ) -> None:
        """Add the files under `directory` (`shadow`: the first file of a name wins; for
        Compose's file names, the first of a path below the search directory `root`)."""
        root = directory if root is None else root
        try:
            status = os.stat(directory)
            if (status.st_dev, status.st_ino) in self.seen:  # symlink loops, excluded
                return
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:  # missing search directories are normal
            self.inputs.append(("-", directory))
            if depth and error.errno != errno.ENOENT:
                self.problem(directory, f"cannot read the directory: {error.strerror}; skipped")
            return
        self.seen.add((status.st_dev, status.st_ino))
        self.inputs.append(_identity("d", directory, status))
        self.entries += len(entries)
        if self.entries > MAX_ENTRIES:
            self.problem(
                directory,
                f"more than {MAX_ENTRIES} entries on the search path: not searched "
                "(is a search directory linked to a large tree?)",
            )
            return
        runtime = directory == self.skip_runtime
        # (a search directory itself is never a project's: its other files are definitions)
        project_dir = depth > 0 or not shadow
        if project_dir and not runtime and self._project_directory(entries, shadow, root):
            return
        for entry in entries:
            name = entry.name
            if name == DOTENV:  # a Compose project's variables: an input, not a definition
                found = _stat(entry)
                self.inputs.append(
                    ("-", entry.path) if found is None else _identity("f", entry.path, found)
                )
                continue
            if name.startswith("."):  # hidden: editors' and VCS files
                continue
            try:
                is_dir = entry.is_dir()
            except OSError as error:  # a symlink loop, an unreachable target
                if name.endswith(SUFFIXES):
                    # read reports it
                    self.add_source(entry.path, shadow=shadow, status=None, root=root)
                else:
                    self.inputs.append(("-", entry.path))
                    self.problem(entry.path, f"cannot tell what it is: {error.strerror}; skipped")
                continue
            if is_dir:
                refused = _refused_target(entry.path) if entry.is_symlink() else None
                if refused is not None:
                    self.inputs.append(("-", entry.path))
                    self.problem(entry.path, refused)
                elif name.endswith(".d"):
                    self.dropin_dir(entry.path, source_key(entry.path[:-2], root, shadow) + ".d")
                elif runtime:  # the runtime's own directories
                    continue
                elif depth >= MAX_DEPTH:
                    self.problem(
                        entry.path, f"more than {MAX_DEPTH} directory levels deep: not searched"
                    )
                else:
                    self.walk(entry.path, shadow=shadow, depth=depth + 1, root=root)
            elif name.endswith(SUFFIXES):
                self.add_source(entry.path, shadow=shadow, status=_stat(entry), root=root)

    def _project_directory(self, entries: list[os.DirEntry[str]], shadow: bool, root: str) -> bool:
        """A directory below a search directory holding a Compose file is that project's
        (`podunit validate DIR`: also DIR itself): only its Compose file
        (the first of `COMPOSE_FILE_NAMES`, Compose's order), its drop-ins and `.env`
        are read; its other YAML files (prometheus.yml, ...) and subdirectories belong
        to the project, not to the search path."""
        by_name = {entry.name: entry for entry in entries}
        found = next((by_name[name] for name in COMPOSE_FILE_NAMES if name in by_name), None)
        if found is None:
            return False
        for name in (DOTENV, found.name + ".d"):
            entry = by_name.get(name)
            if entry is None:
                continue
            if name == DOTENV:
                status = _stat(entry)
                self.inputs.append(
                    ("-", entry.path) if status is None else _identity("f", entry.path, status)
                )
            else:
                self.dropin_dir(entry.path, source_key(found.path, root, shadow) + ".d")
        self.add_source(found.path, shadow=shadow, status=_stat(found), root=root)
        return True

    def add_source(
        self, path: str, *, shadow: bool, status: os.stat_result | None, root: str | None = None
    ) -> None:
        """A definition file (`status`: its stat, None if it cannot be read)."""
        self.inputs.append(("-", path) if status is None else _identity("f", path, status))
        key = source_key(path, root, shadow)  # also the key of its drop-in directory
        self.keys[path] = key
        self.sources.setdefault(key if shadow else path, path)

    def dropin_dir(self, path: str, name: str) -> None:
        """Drop-ins for `name` minus `.d` (the first drop-in of a name wins)."""
        files = self.dropins.setdefault(name, {})
        try:
            status = os.stat(path)
            entries = list(os.scandir(path))
        except OSError as error:
            self.inputs.append(("-", path))
            self.problem(path, f"cannot read the drop-in directory: {error.strerror}; skipped")
            return
        self.inputs.append(_identity("d", path, status))
        self.entries += len(entries)
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
        key = self.keys.get(source, os.path.basename(source))
        found = self.dropins.get(key + ".d", {})
        return [found[name] for name in sorted(found)]


def source_key(path: str, root: str | None, shadow: bool) -> str:
    """What tells definition files apart: the file name (the first of a name wins), or
    for Compose's file names the path below the search directory (the path itself when
    nothing is shadowed)."""
    name = os.path.basename(path)
    if name not in COMPOSE_FILE_NAMES:
        return name
    if not shadow or root is None:
        return path
    return os.path.relpath(path, root)


def _stat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat()
    except OSError:  # a dangling symlink or a loop: reading it reports it
        return None


def store_index(*, user: bool, environ: Mapping[str, str]) -> str | None:
    """`<state dir>/images/oci/index.json` of the mode (as `toolkit.storage.paths` places
    the state directory), None when the mode has no state directory to name."""
    override = environ.get("PODUNIT_STATE_DIR")
    if override and override.startswith("/"):
        state = override
    elif not user:
        state = "/var/lib/podunit"
    else:
        home = environ.get("HOME") or ""
        data = environ.get("XDG_DATA_HOME") or (f"{home}/.local/share" if home else "")
        if not data.startswith("/"):
            return None
        state = f"{data}/podunit"
    return f"{state}/images/oci/index.json"

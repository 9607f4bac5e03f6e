"""Finding, reading and checking all definition files (spec §1).

`search_dirs` gives the search path, `load_all` reads every definition in it
(first file name wins, drop-ins merged, cross-file checks), `load_paths` checks
given files or directories (`podunit validate`), `find_definition` returns one
container by name (instantiating templates), `instantiate` fills in `%i`.

No function here raises for a bad definition file: problems are collected in
`LoadResult.errors`, one `DefinitionError` per problem, and every good
definition is still returned.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.definitions import values as v
from toolkit.definitions.instances import instantiate
from toolkit.definitions.instances import substitute as substitute  # re-exported
from toolkit.definitions.model import Container, DependencyCondition, Notify
from toolkit.definitions.parse import check_reference, fail, parse_container, unknown
from toolkit.definitions.tree import Node, merge, read_file
from toolkit.errors import ContainerNotFound, DefinitionError, Location

SYSTEM_DIRS = ("/run/podunit", "/etc/podunit", "/usr/local/share/podunit", "/usr/share/podunit")
SUFFIXES = (".yaml", ".yml")
DOCUMENT_KEYS = frozenset({"containers", "services", "version"})


@dataclass
class LoadResult:
    """Every good container, every problem, and where each container came from."""

    containers: dict[str, Container] = field(default_factory=dict)  # key: Container.unit_name
    errors: list[DefinitionError] = field(default_factory=list)
    sources: dict[str, list[Path]] = field(default_factory=dict)  # [main file, drop-ins...]
    failed: dict[str, list[DefinitionError]] = field(default_factory=dict)  # unit_name -> errors


def search_dirs(*, user: bool = False, environ: Mapping[str, str] = os.environ) -> list[Path]:
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
                raise DefinitionError(
                    None,
                    f"PODUNIT_DEFINITION_DIRS entry {v.quote(entry)} is not an absolute path",
                )
            result.append(Path(entry))
        return result
    if not user:
        return [Path(d) for d in SYSTEM_DIRS]
    result = []
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and runtime_dir.startswith("/"):
        result.append(Path(runtime_dir, "podunit"))
    config_home = environ.get("XDG_CONFIG_HOME")
    if not (config_home and config_home.startswith("/")):
        home = environ.get("HOME") or os.path.expanduser("~")
        config_home = os.path.join(home, ".config")
    result.append(Path(config_home, "podunit"))
    result.append(Path("/etc/podunit/users", str(os.getuid())))
    return result


class _Scan:
    """Definition files and drop-in directories found under the search directories."""

    def __init__(self) -> None:
        self.sources: dict[str, Path] = {}  # file name -> first file of that name
        self.dropins: dict[str, dict[str, Path]] = {}  # "web.yaml.d" -> drop-in name -> file
        self.seen: set[tuple[int, int]] = set()  # (device, inode) of walked directories

    def walk(self, directory: str, *, shadow: bool) -> None:
        try:
            status = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:  # missing search directories are normal
            return
        if (status.st_dev, status.st_ino) in self.seen:  # symlink loops
            return
        self.seen.add((status.st_dev, status.st_ino))
        for entry in entries:
            if entry.name.startswith("."):  # hidden: editors' and VCS files
                continue
            if entry.is_dir():
                if entry.name.endswith(".d"):
                    self._dropin_dir(entry.path, entry.name)
                else:
                    self.walk(entry.path, shadow=shadow)
            elif entry.name.endswith(SUFFIXES):
                self.add_source(Path(entry.path), shadow=shadow)

    def add_source(self, path: Path, *, shadow: bool) -> None:
        key = path.name if shadow else str(path)
        self.sources.setdefault(key, path)

    def _dropin_dir(self, path: str, name: str) -> None:
        files = self.dropins.setdefault(name, {})
        try:
            entries = os.scandir(path)
        except OSError:
            return
        for entry in entries:
            if entry.name.endswith(SUFFIXES) and not entry.name.startswith("."):
                files.setdefault(entry.name, Path(entry.path))

    def dropins_for(self, source: Path) -> list[Path]:
        found = self.dropins.get(source.name + ".d", {})
        return [found[name] for name in sorted(found)]


def load_all(dirs: Sequence[Path]) -> LoadResult:
    """Every definition under `dirs` (highest precedence first): the first file of a
    name wins, subdirectories are walked, `*.d` directories hold drop-ins."""
    scan = _Scan()
    for directory in dirs:
        scan.walk(str(directory), shadow=True)
    return _load(scan)


def load_paths(paths: Sequence[Path]) -> LoadResult:
    """The definitions in the given files and directories (`podunit validate PATH...`).

    Every file is checked (no shadowing); drop-ins are looked up next to each file
    and in the given directories.
    """
    scan = _Scan()
    result = LoadResult()
    for path in paths:
        if path.is_dir():
            scan.walk(str(path), shadow=False)
        elif path.exists():
            scan.add_source(path, shadow=False)
            dropin_dir = Path(str(path) + ".d")
            if dropin_dir.is_dir():
                scan._dropin_dir(str(dropin_dir), dropin_dir.name)
        else:
            result.errors.append(DefinitionError(Location(str(path), 1, 1), "no such file"))
    loaded = _load(scan)
    loaded.errors[:0] = result.errors
    return loaded


def _load(scan: _Scan) -> LoadResult:
    result = LoadResult()
    origin: dict[str, Location] = {}  # unit name -> where it was first defined (good or bad)
    for source in scan.sources.values():
        files = [source, *scan.dropins_for(source)]
        unsafe = [path for path in files if v.has_control(str(path))]
        if unsafe:  # the path is written into the unit (SourcePath=, comments)
            message = f"file name {v.quote(str(unsafe[0]))} contains a control character"
            result.errors.append(DefinitionError(None, message))
            continue
        document = _read_merged(files, result.errors)
        if document is None:
            continue
        for name, key_loc, spec, from_compose in _container_entries(document, result.errors):
            unit_name = name
            errors: list[DefinitionError] = []
            container = _parse_one(name, key_loc, spec, source, from_compose, errors)
            if unit_name in origin:  # the first definition stays; this one's problems are shown
                first = origin[unit_name]
                message = (
                    f"container {v.quote(name)} is already defined in {first.path}:{first.line}"
                )
                result.errors += [fail(key_loc, message), *errors]
                continue
            origin[unit_name] = key_loc
            if container is None:
                result.failed[unit_name] = errors
                result.errors.extend(errors)
                continue
            result.containers[unit_name] = container
            result.sources[unit_name] = files
    _check_dependencies(result, origin)
    _ready_when_healthy(result)
    return result


def _read_merged(files: list[Path], errors: list[DefinitionError]) -> Node | None:
    """The main file with its drop-ins merged over it; None (errors noted) if any is unreadable."""
    document: Node | None = None
    ok = True
    for path in files:
        try:
            node = read_file(path)
        except DefinitionError as error:
            errors.append(error)
            ok = False
            continue
        if node is None:
            continue
        if not node.is_mapping:
            errors.append(
                fail(
                    node, "a definition file must hold a mapping with 'containers:' or 'services:'"
                )
            )
            ok = False
            continue
        document = node if document is None else merge(document, node)
    return document if ok else None


def _container_entries(
    document: Node, errors: list[DefinitionError]
) -> Iterable[tuple[str, Location, Node, bool]]:
    """(name, key location, spec, is Compose) for each container of a document."""
    entries = document.value
    if "containers" in entries and "services" in entries:
        errors.append(
            fail(
                entries["services"].key_loc,
                "a file holds either 'containers:' or 'services:', not both",
            )
        )
        return
    from_compose = "services" in entries
    if from_compose:
        from toolkit.definitions.compose import check_top_level

        check_top_level(document, errors)
    else:
        for key, entry in entries.items():
            if key not in DOCUMENT_KEYS and not key.startswith("x-"):
                errors.append(unknown(entry.key_loc, "top-level key", key, DOCUMENT_KEYS))
    holder = entries.get("services" if from_compose else "containers")
    if holder is None or holder.node.value is None:
        return
    if not holder.node.is_mapping:
        errors.append(
            fail(
                holder.node,
                f"'{'services' if from_compose else 'containers'}' "
                "must be a mapping of names to definitions",
            )
        )
        return
    for name, entry in holder.node.value.items():
        if not name.startswith("x-"):
            yield name, entry.key_loc, entry.node, from_compose


def _parse_one(
    name: str, key_loc: Location, spec: Node, source: Path, from_compose: bool,
    errors: list[DefinitionError],
) -> Container | None:  # fmt: skip
    if from_compose:
        from toolkit.definitions.compose import translate_service

        try:
            spec = translate_service(name, spec)
        except DefinitionError as error:
            errors.append(error)
            return None
    return parse_container(name, key_loc, spec, os.path.abspath(source.parent), errors)


def _check_dependencies(result: LoadResult, origin: Mapping[str, Location]) -> None:
    """`depends_on` must name a defined container (or an instance of a defined template)."""
    for unit_name, container in list(result.containers.items()):
        for dependency in container.depends_on:
            base, at, _ = dependency.name.partition("@")
            wanted = base + "@" if at else base
            if wanted == unit_name or wanted not in origin:
                problem = "itself" if wanted == unit_name else "a container that is not defined"
                error = fail(
                    container.source, f"depends_on {v.quote(dependency.name)} names {problem}"
                )
                result.errors.append(error)
                result.failed[unit_name] = [error]
                del result.containers[unit_name]
                result.sources.pop(unit_name, None)
                break


def _ready_when_healthy(result: LoadResult) -> None:
    """A container others wait for with `condition: service_healthy` reports READY when healthy.

    Compose's `service_healthy` maps onto systemd ordering (`After=`/`Requires=`), which
    waits for the dependency's READY=1; so a dependency that has a healthcheck and the
    default `notify: conmon` is switched to `notify: healthy` (spec §3.2). One without a
    healthcheck, or with `notify: container`/`ignore`, is reported by the generator.
    """
    awaited = {
        dependency.name
        for container in result.containers.values()
        for dependency in container.depends_on
        if dependency.condition is DependencyCondition.HEALTHY
    }
    for name in awaited:
        target = result.containers.get(name)
        if target and target.healthcheck is not None and target.notify is Notify.CONMON:
            result.containers[name] = target._replace(notify=Notify.HEALTHY)


def find_definition(
    name: str, *, user: bool = False, environ: Mapping[str, str] = os.environ
) -> Container:
    """The container defined as `name`; `worker@foo` instantiates template `worker@`.

    Raises `ContainerNotFound`, or the definition's first `DefinitionError`.
    """
    dirs = search_dirs(user=user, environ=environ)
    try:
        check_reference(name)
    except ValueError as error:
        raise ContainerNotFound(str(error)) from None
    base, at, instance = name.partition("@")
    wanted = base + "@" if at else base
    result = load_all(dirs)
    container = result.containers.get(wanted)
    if container is None:
        problems = result.failed.get(wanted)
        if problems:
            raise problems[0]
        where = ", ".join(str(d) for d in dirs) or "(empty search path)"
        hint = "run 'podunit validate' to see the errors" if result.errors else None
        raise ContainerNotFound(f"no definition of {v.quote(name)} in {where}", hint=hint)
    return instantiate(container, instance) if at else container

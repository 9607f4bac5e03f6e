"""Finding, reading and checking all definition files (spec §1).

`search_dirs` gives the search path (`toolkit.definitions.search`), `load_all` reads
every definition in it (first file name wins, drop-ins merged, cross-file checks;
`scan_all` + `load_scan` are its two halves, the generator's cache sits between
them), `load_paths` checks
given files or directories (`podunit validate`), `find_definition` returns one
container by name (instantiating templates), `instantiate` fills in `%i`.

No function here raises for a bad definition file: problems are collected in
`LoadResult.errors`, one `DefinitionError` per problem, and every good
definition is still returned.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from toolkit.definitions import networks
from toolkit.definitions import values as v
from toolkit.definitions.instances import instantiate
from toolkit.definitions.instances import substitute as substitute  # re-exported
from toolkit.definitions.model import (
    Container,
    Declarations,
    DependencyCondition,
    NetworkSpec,
    Notify,
)
from toolkit.definitions.parse import check_reference, parse_container
from toolkit.definitions.readers import fail, unknown
from toolkit.definitions.search import SUFFIXES as SUFFIXES  # re-exported
from toolkit.definitions.search import SYSTEM_DIRS as SYSTEM_DIRS  # re-exported
from toolkit.definitions.search import Scan, source_key
from toolkit.definitions.search import search_dirs as search_dirs  # re-exported
from toolkit.definitions.tree import Node, merge, read_file
from toolkit.errors import ContainerNotFound, DefinitionError, Location

TYPE_CHECKING = False
if TYPE_CHECKING:
    from toolkit.definitions.compose_loader import ComposeFile

DOCUMENT_KEYS = frozenset(
    {"containers", "services", "version", "networks", "volumes", "secrets", "configs"}
)


class LoadResult:
    """Every good container, every problem, and where each container came from.

    `containers` and `failed` are keyed by `Container.unit_name`; `sources` gives a
    container's files as absolute paths: [main file, drop-ins...].
    """

    __slots__ = ("containers", "errors", "failed", "notes", "projects", "sources")

    def __init__(self) -> None:
        self.containers: dict[str, Container] = {}
        self.errors: list[DefinitionError] = []
        self.sources: dict[str, list[str]] = {}
        self.failed: dict[str, list[DefinitionError]] = {}
        # unit name -> header comment lines (a Compose service's project and variables)
        self.notes: dict[str, list[str]] = {}
        # Compose project name -> its files: [Compose file, drop-ins...]
        self.projects: dict[str, list[str]] = {}


def scan_all(
    dirs: Sequence[str | os.PathLike[str]],
    *,
    user: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> Scan:
    """The walk of the search path `dirs` (highest precedence first): the first file
    of a name wins, subdirectories are walked (not the runtime's entries of the
    mode's run directory), `*.d` directories hold drop-ins."""
    scan = Scan.of_mode(user=user, environ=environ)
    for directory in dirs:
        scan.walk(os.fspath(directory), shadow=True)
    return scan


def load_all(
    dirs: Sequence[str | os.PathLike[str]],
    *,
    user: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> LoadResult:
    """Every definition under `dirs` (see `scan_all`)."""
    return load_scan(scan_all(dirs, user=user, environ=environ), environ=environ)


def load_paths(
    paths: Sequence[str | os.PathLike[str]], *, environ: Mapping[str, str] = os.environ
) -> LoadResult:
    """The definitions in the given files and directories (`podunit validate PATH...`).

    Every file is checked (no shadowing); drop-ins are looked up next to each file
    and in the given directories.
    """
    scan = Scan()
    result = LoadResult()
    for given in paths:
        path = os.fspath(given)
        if os.path.isdir(path):
            scan.walk(path, shadow=False)
        elif os.path.exists(path):
            scan.add_source(path, shadow=False, status=None)
            dropin_dir = path + ".d"
            if os.path.isdir(dropin_dir):
                scan.dropin_dir(dropin_dir, source_key(path, None, False) + ".d")
        else:
            result.errors.append(DefinitionError(Location(path, 1, 1), "no such file"))
    loaded = load_scan(scan, environ=environ)
    loaded.errors[:0] = result.errors
    _check_secret_files(loaded)
    return loaded


def _check_secret_files(result: LoadResult) -> None:
    """A secret's or config's `file:` must exist (`podunit validate`; the generator does not
    look, so a file made after daemon-reload still counts; `podunit run` checks again)."""
    for container in result.containers.values():
        missing = [s for s in container.secrets if s.file and not os.path.isfile(s.file)]
        if missing:
            what = "config" if missing[0].config else "secret"
            error = fail(
                container.source,
                f"{what} {v.quote(missing[0].name)}: no such file {v.quote(missing[0].file)}",
            )
            result.errors.append(error)


def load_scan(scan: Scan, *, environ: Mapping[str, str] = os.environ) -> LoadResult:
    """Read, merge, parse and cross-check every definition the walk found (the walk's
    own problems first); `environ`: the variables Compose files are interpolated with
    (over each project's `.env`)."""
    result = LoadResult()
    result.errors.extend(scan.problems)
    origin: dict[str, Location] = {}  # unit name -> where it was first defined (good or bad)
    declared: dict[str, tuple[NetworkSpec, Location]] = {}  # every file's networks
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
        compose: ComposeFile | None = None
        if "services" in document.value and "containers" not in document.value:
            from toolkit.definitions.compose_loader import ComposeFile

            compose = ComposeFile.open(document, source, environ, result.errors)
            if compose is None:
                continue
            first_file = result.projects.setdefault(compose.project.name, files)
            if first_file is not files:
                message = (
                    f"Compose project {v.quote(compose.project.name)} is already defined "
                    f"in {first_file[0]}"
                )
                result.errors.append(fail(compose.name_loc, message))
                continue
            document = compose.document  # its top-level values interpolated
        project = None if compose is None else compose.project.name
        file_networks = _file_networks(document, result.errors, project)
        networks.merge_declared(declared, file_networks, result.errors)
        declarations = _declarations(document, source, result.errors, project)
        for name, key_loc, spec, from_compose in _container_entries(document, result.errors):
            errors: list[DefinitionError] = []
            if compose is None:
                unit_name = name
                container = _parse_one(name, key_loc, spec, source, declarations, errors)
            else:
                unit_name = compose.project.container(name)
                container = compose.service(name, key_loc, spec, declarations, errors)
                result.notes[unit_name] = compose.notes(name)
            if container is not None:
                try:
                    container = networks.attach_networks(
                        container, file_networks, compose=from_compose
                    )
                    if compose is not None:
                        container = compose.join_project_network(container, file_networks)
                except DefinitionError as error:
                    errors.append(error)
                    container = None
            if unit_name in origin:  # the first definition stays; this one's problems are shown
                first = origin[unit_name]
                what = "container" if compose is None else "service's unit"
                message = (
                    f"{what} {v.quote(unit_name)} is already defined in {first.path}:{first.line}"
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
    _check_volumes(result)
    _ready_when_healthy(result)
    _declared_elsewhere(result, declared)
    return result


def _file_networks(
    document: Node, errors: list[DefinitionError], project: str | None = None
) -> dict[str, tuple[NetworkSpec, Location]]:
    """The networks a document declares at its top level (own form or Compose)."""
    entry = document.value.get("networks")
    if entry is None:
        return {}
    compose = "services" in document.value
    return networks.parse_networks(entry.node, compose=compose, errors=errors, project=project)


def _declared_elsewhere(
    result: LoadResult, declared: Mapping[str, tuple[NetworkSpec, Location]]
) -> None:
    """A container joining a network another file declares carries that declaration."""
    for unit_name, container in result.containers.items():
        names = {a.name for a in container.networks}
        if container.network is not None:
            names.add(container.network)
        have = {spec.name for spec in container.network_specs}
        extra = tuple(declared[n][0] for n in sorted(names - have) if n in declared)
        if extra:
            result.containers[unit_name] = container._replace(
                network_specs=container.network_specs + extra
            )


def _read_merged(files: list[str], errors: list[DefinitionError]) -> Node | None:
    """The main file with its drop-ins merged over it; None (errors noted) if any is unreadable."""
    document: Node | None = None
    ok = True
    for index, path in enumerate(files):
        try:
            node = read_file(path)
        except DefinitionError as error:
            if index and error.hint is None:  # a drop-in: say what it costs
                error.hint = f"{files[0]} is not generated without its drop-ins"
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


def _declarations(
    document: Node, source: str, errors: list[DefinitionError], project: str | None
) -> Declarations:
    """The file's top-level volumes, secrets and configs (a Compose file's volumes are
    named after its `project`)."""
    from toolkit.definitions.declarations import parse_declarations

    base_dir = os.path.abspath(os.path.dirname(source))
    compose = project is not None
    return parse_declarations(document, base_dir, errors, compose=compose, project=project)


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
    name: str, key_loc: Location, spec: Node, source: str, declarations: Declarations,
    errors: list[DefinitionError],
) -> Container | None:  # fmt: skip
    base_dir = os.path.abspath(os.path.dirname(source))
    return parse_container(name, key_loc, spec, base_dir, errors, declarations)


def _check_volumes(result: LoadResult) -> None:
    """One named volume, one declaration (toolkit.definitions.declarations)."""
    from toolkit.definitions.declarations import conflicting_volumes

    for unit_name, message in conflicting_volumes(result.containers).items():
        error = fail(result.containers[unit_name].source, message)
        result.errors.append(error)
        result.failed[unit_name] = [error]
        del result.containers[unit_name]
        result.sources.pop(unit_name, None)


def _check_dependencies(result: LoadResult, origin: Mapping[str, Location]) -> None:
    """`depends_on` must name a defined container (or an instance of a defined template).

    (A Compose service's `depends_on` is checked against its project's services when
    it is translated; one naming a service that failed is reported by the renderer.)"""
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
    result = load_all(dirs, user=user, environ=environ)
    container = result.containers.get(wanted)
    if container is None:
        problems = result.failed.get(wanted)
        if problems:
            raise problems[0]
        where = ", ".join(str(d) for d in dirs) or "(empty search path)"
        hint = "run 'podunit validate' to see the errors" if result.errors else None
        raise ContainerNotFound(f"no definition of {v.quote(name)} in {where}", hint=hint)
    return instantiate(container, instance) if at else container

"""The systemd generator protocol and `podunit generate` / `podunit validate` (spec §2).

systemd.generator(7): the generator is called with three output directories
(normal, early, late) and writes into the normal one only; it must not use
D-Bus and must be fast (it runs at boot and at every daemon-reload). Messages go
to /dev/kmsg when it is writable (`<3>podunit-generator[PID]: message`), else to
stderr. A bad definition never stops the others: every good one is written, and
the exit status is 1 if any failed.

Manual runs: with no directory argument the generator prints what it would
write (like `podunit generate --dry-run`: the units as written to systemd's normal
generator directory, without the plan files) and logs to stderr.

Plan files: next to the units, `<normal dir>/podunit/NAME.json` holds each
container as parsed; the units run `podunit run --plan <that file> NAME`
(toolkit.unitgen.render).

The podunit executable written into the units (`<podunit>` in the Exec lines) is,
in order: `$PODUNIT_EXECUTABLE` (absolute path), the checkout's `bin/podunit`
launcher (next to this package: the generators/ scripts and `podunit generate`
in a checkout), or the `podunit` next to the running interpreter
(`Path(sys.executable).parent`: an installed package's console script).
`$PODUNIT_KMSG` replaces /dev/kmsg (tests use a plain file).

Warm path (daemon-reload with nothing changed): the generator walks the search
path, and when the walk, environment and code match its per-boot cache
(`toolkit.unitgen.cache`, off with `PODUNIT_GENERATOR_CACHE=0`) it writes the
cached output and logs the cached messages without importing PyYAML or the
model; otherwise (cold path, e.g. at boot) it loads and renders everything and
caches the result.

This module is imported by the generator executables at every boot: keep its
imports few (no subprocess, no argparse, no pathlib, no PyYAML at import time).
"""

from __future__ import annotations

import os
import sys

from toolkit.definitions.search import Scan, search_dirs, store_index
from toolkit.errors import DefinitionError, PodunitError
from toolkit.unitgen.shadow import InstalledUnits

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import TextIO

    from toolkit.unitgen.cache import Output
    from toolkit.unitgen.render import UnitFiles

KMSG = "/dev/kmsg"
# Passed on to the runtime, so `podunit run NAME` finds the definition the unit came from.
FORWARDED_ENVIRONMENT = ("PODUNIT_DEFINITION_DIRS",)
PLAN_DIR = "podunit"  # plan files: <normal dir>/podunit/<unit>.json


class GeneratorLog:
    """systemd.generator(7) logging: /dev/kmsg records when writable, else stderr lines."""

    ERROR, INFO = 3, 6

    def __init__(self, ident: str, *, kmsg: str | None, stderr: TextIO = sys.stderr) -> None:
        self.prefix = f"{ident}[{os.getpid()}]: "
        self.stderr = stderr
        self.kmsg_fd: int | None = None
        if kmsg is not None:
            try:
                self.kmsg_fd = os.open(kmsg, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError:
                self.kmsg_fd = None

    def log(self, priority: int, message: str) -> None:
        if self.kmsg_fd is not None:
            try:  # one write is one kernel log record
                os.write(self.kmsg_fd, f"<{priority}>{self.prefix}{message}\n".encode())
                return
            except OSError:
                pass
        print(f"{self.prefix}{message}", file=self.stderr)

    def error(self, error: PodunitError) -> None:
        self.log(self.ERROR, describe(error))

    def close(self) -> None:
        if self.kmsg_fd is not None:
            os.close(self.kmsg_fd)
            self.kmsg_fd = None


def describe(error: PodunitError) -> str:
    """One line: `FILE:LINE:COLUMN: message (hint: ...)`."""
    return f"{error} (hint: {error.hint})" if error.hint else str(error)


# bin/podunit of the checkout this package is in (absent in an installed package)
LAUNCHER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bin", "podunit"
)


def podunit_executable(
    environ: Mapping[str, str] = os.environ, default: str | None = None, launcher: str = LAUNCHER
) -> str:
    """The absolute path of `podunit` to write into Exec lines (see module docstring).

    `$PODUNIT_EXECUTABLE` wins, then `default`, then the checkout's `bin/podunit`
    launcher (python3 -I -S: ~4 ms less per unit process than the console script),
    then the `podunit` next to the running interpreter (an installed package).
    """
    configured = environ.get("PODUNIT_EXECUTABLE")
    if configured:
        if not os.path.isabs(configured):
            raise PodunitError(f"PODUNIT_EXECUTABLE={configured!r} must be an absolute path")
        return configured
    if default is not None:
        return default
    for candidate in (launcher, os.path.join(os.path.dirname(sys.executable), "podunit")):
        if os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    raise PodunitError(
        f"cannot find the podunit executable next to {sys.executable}",
        hint="set PODUNIT_EXECUTABLE to its absolute path",
    )


def _scan(*, user: bool, environ: Mapping[str, str]) -> tuple[list[str], Scan]:
    """The search path and its walk (no file is read yet)."""
    dirs = search_dirs(user=user, environ=environ)
    scan = Scan.of_mode(user=user, environ=environ)
    for directory in dirs:
        scan.walk(directory, shadow=True)
    return dirs, scan


def _render(
    scan: Scan, *, user: bool, podunit: str, environ: Mapping[str, str], plan_dir: str | None,
    installed: InstalledUnits | None = None,
) -> tuple[dict[str, UnitFiles], list[DefinitionError]]:  # fmt: skip
    """Load every definition the walk found and render it; errors never stop the rest.
    A container whose unit would shadow an `installed` unit is refused (unitgen.shadow)."""
    from toolkit.definitions.loader import load_scan
    from toolkit.unitgen.render import render_all

    if installed is None:
        installed = InstalledUnits.of_mode(user=user, environ=environ)
    loaded = load_scan(scan, environ=environ)
    from toolkit.definitions.imageref import stored_names

    stored, _ = stored_names(store_index(user=user, environ=environ))
    rendered, errors = render_all(
        loaded.containers,
        podunit=podunit,
        user=user,
        sources=loaded.sources,
        environment=[(key, environ[key]) for key in FORWARDED_ENVIRONMENT if environ.get(key)],
        plan_dir=plan_dir,
        installed=installed.names(),
        notes=loaded.notes,
        projects=loaded.projects,
        stored_images=stored,
    )
    return rendered, [*loaded.errors, *errors]


def _identity_of(path: str | None) -> str:
    """The image store index's identity: which images are stored decides whether a pull
    unit waits for the network (toolkit.unitgen.images), so it is part of the cache key."""
    try:
        status = os.stat(path) if path else None
    except OSError:
        status = None
    return "-" if status is None else f"{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"


def plan_dir_of(output_dir: str) -> str:
    """Where the plan files of units written to `output_dir` go (absolute)."""
    return f"{os.path.abspath(output_dir)}/{PLAN_DIR}"


def default_output_dir(*, user: bool, environ: Mapping[str, str] = os.environ) -> str:
    """The normal directory systemd gives the generator (systemd.generator(7)):
    /run/systemd/generator, or $XDG_RUNTIME_DIR/systemd/generator for users. A dry
    run shows the units as daemon-reload would write them there."""
    if not user:
        return "/run/systemd/generator"
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if not (runtime_dir and runtime_dir.startswith("/")):
        runtime_dir = f"/run/user/{os.getuid()}"
    return f"{os.path.normpath(runtime_dir)}/systemd/generator"


def generate(
    *,
    user: bool,
    podunit: str,
    environ: Mapping[str, str] = os.environ,
    output_dir: str | None = None,
) -> tuple[dict[str, UnitFiles], list[DefinitionError]]:
    """Load every definition on the search path and render it for `output_dir` (default:
    systemd's normal generator directory); errors never stop the rest."""
    _, scan = _scan(user=user, environ=environ)
    if output_dir is None:
        output_dir = default_output_dir(user=user, environ=environ)
    plan_dir = plan_dir_of(output_dir)
    return _render(scan, user=user, podunit=podunit, environ=environ, plan_dir=plan_dir)


def generate_cached(
    *, user: bool, podunit: str, environ: Mapping[str, str], output_dir: str
) -> Output:
    """The generator's whole output: from the cache when nothing changed (see module
    docstring), else loaded and rendered, and then cached."""
    from toolkit.unitgen import cache

    started = cache.now_ns()
    path = cache.prepare(user=user, environ=environ)  # before the walk: it may add a directory
    dirs, scan = _scan(user=user, environ=environ)
    installed = InstalledUnits.of_mode(user=user, environ=environ)  # stats its directories
    plan_dir = plan_dir_of(output_dir)  # written into ExecStart=: part of the key
    key = cache.make_key(
        user=user, podunit=podunit, dirs=dirs, environ=environ,
        inputs=[*scan.inputs, *installed.inputs],
        extra=f"{plan_dir}\0{_identity_of(store_index(user=user, environ=environ))}",
    )  # fmt: skip
    if path is not None:
        cached = cache.load(path, key)
        if cached is not None:
            return cached
    rendered, errors = _render(
        scan, user=user, podunit=podunit, environ=environ, plan_dir=plan_dir, installed=installed
    )
    output: Output = (
        [(units.files, units.symlinks, units.plans) for units in rendered.values()],
        [describe(error) for error in errors],
        1 if errors else 0,
    )
    if path is not None and not cache.racy(scan.inputs, started):
        cache.store(path, key, output)
    return output


_NOT_NAMES = frozenset(("", ".", ".."))


def _confined(relative: str) -> list[str]:
    """The parts of a path relative to the output directory; refuses any way out of it."""
    parts = relative.split("/")
    if not _NOT_NAMES.isdisjoint(parts):
        raise PodunitError(f"refusing to write {relative!r} outside the output directory")
    return parts


def write_units(
    output_dir: str,
    files: Mapping[str, str],
    symlinks: Mapping[str, str] = {},
    plans: Mapping[str, str] = {},
    made: set[str] | None = None,
) -> None:
    """Write one container's unit files, plan files and install symlinks into `output_dir`.

    Existing files and links are replaced. `made` remembers the directories already
    created (the generator writes thousands of links). Only plain names, plan files
    `podunit/NAME` and `DIR/NAME` links whose target is `../NAME` or `NAME` (a file
    in `output_dir` itself) are accepted.
    """
    made = set() if made is None else made
    base = os.path.normpath(output_dir)
    for directory, texts in (("", files), (PLAN_DIR, plans)):
        if texts and directory and directory not in made:
            os.makedirs(f"{base}/{directory}", exist_ok=True)
            made.add(directory)
        for name, text in texts.items():
            if ("/" in name or name in _NOT_NAMES) and len(_confined(name)) != 1:
                raise PodunitError(f"refusing to write {name!r}: not a plain file name")
            path = f"{base}/{directory}/{name}" if directory else f"{base}/{name}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
    for link, target in symlinks.items():
        parts = _confined(link)
        # Alias `www.service` -> `web.service`; `x.wants/web.service` -> `../web.service`.
        wanted_prefix = "" if len(parts) == 1 else "../"
        name = target.removeprefix(wanted_prefix)
        if len(parts) > 2 or not target.startswith(wanted_prefix) or len(_confined(name)) != 1:
            raise PodunitError(f"refusing symlink {link!r} -> {target!r} outside {output_dir}")
        path = f"{base}/{link}"
        if len(parts) == 2 and parts[0] not in made:
            os.makedirs(f"{base}/{parts[0]}", exist_ok=True)
            made.add(parts[0])
        try:
            os.symlink(target, path)
        except FileExistsError:
            os.unlink(path)
            os.symlink(target, path)


def write_all(
    output_dir: str,
    units: Iterable[tuple[Mapping[str, str], Mapping[str, str], Mapping[str, str]]],
    log: GeneratorLog,
) -> list[PodunitError]:
    """Write every container's (files, symlinks, plans); a failure is logged and the
    rest still written."""
    failures: list[PodunitError] = []
    made: set[str] = set()
    for files, symlinks, plans in units:
        try:
            write_units(output_dir, files, symlinks, plans, made)
        except (OSError, PodunitError) as error:
            failure = error if isinstance(error, PodunitError) else PodunitError(str(error))
            log.error(failure)
            failures.append(failure)
    return failures


def dry_run_text(rendered: Mapping[str, UnitFiles]) -> str:
    """Every unit under a `---NAME.service---` header, in name order (spec §2)."""
    chunks = []
    for name in sorted(rendered):
        for file_name, text in rendered[name].files.items():
            chunks.append(f"---{file_name}---\n{text}")
    return "".join(chunks)


def generator_main(
    argv: Sequence[str],
    *,
    user: bool,
    podunit: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """The generator executables' entry point (systemd.generator(7)); returns the exit status.

    argv: `NORMAL_DIR [EARLY_DIR LATE_DIR]` (only NORMAL_DIR is used), or nothing
    for a manual dry run to stdout. `podunit`: the executable for the Exec lines
    unless `$PODUNIT_EXECUTABLE` is set.
    """
    ident = "podunit-user-generator" if user else "podunit-generator"
    manual = len(argv) == 0
    if len(argv) not in (0, 1, 3) or any(arg.startswith("-") for arg in argv):
        print(f"usage: {ident} [NORMAL_DIR [EARLY_DIR LATE_DIR]]", file=sys.stderr)
        return 2
    log = GeneratorLog(ident, kmsg=None if manual else environ.get("PODUNIT_KMSG", KMSG))
    try:
        executable = podunit_executable(environ, podunit)
        if manual:
            rendered, errors = generate(user=user, podunit=executable, environ=environ)
            for error in errors:
                log.error(error)
            sys.stdout.write(dry_run_text(rendered))
            return 1 if errors else 0
        units, messages, status = generate_cached(
            user=user, podunit=executable, environ=environ, output_dir=argv[0]
        )
        for message in messages:
            log.log(GeneratorLog.ERROR, message)
        failures = write_all(argv[0], units, log)
        return 1 if status or failures else 0
    except PodunitError as error:
        log.error(error)
        return 1
    finally:
        log.close()

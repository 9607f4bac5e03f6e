"""The generator's per-boot cache of its own output (warm path of daemon-reload).

systemd runs the generator at every daemon-reload (systemd.generator(7)); most
reloads change no definition. The generator then writes again exactly what it
wrote last time: the unit files, install symlinks and plan files, and logs the
same error messages with the same exit status. This module keeps that output in
one `marshal` file and hands it back when nothing it was computed from changed,
so a warm run neither imports PyYAML nor parses anything.

The key is everything the output depends on:

- the walk of the search path (`toolkit.definitions.search.Scan.inputs`): path,
  st_dev, st_ino, st_size, st_mtime_ns and st_ctime_ns of every search directory,
  subdirectory, drop-in directory, definition file and drop-in (a missing one as
  missing), so editing, touching, replacing, adding or deleting any of them
  changes the key; so does a new file name, since its directory changes;
- the mode (system/user), the podunit executable and the plan files' directory
  written into the units, the search path itself, the environment the generator
  reads (`ENVIRONMENT`) and the uid;
- the whole environment, as a 64-bit digest (two CRC-32s; values never stored):
  Compose files interpolate `${VAR}` from it (`toolkit.definitions.project`); except
  the variables that differ at every run (`VOLATILE`: systemd gives each generator
  run its own SYSTEMD_EXEC_PID, which made every daemon-reload miss the cache);
- the code: Python's version and the identity of every module of `toolkit/`,
  `toolkit/definitions/`, `toolkit/unitgen/` and of PyYAML's `__init__.py`.

The whole output is one entry: any change regenerates everything, so facts that
cross files (a `service_healthy` dependency reads another container's healthcheck,
a name defined twice) can never be stale. File time stamps are coarse (one clock
tick), so an input changed less than `RACY_NS` before the run started is not
trusted: that run's output is not cached (the next run caches it), as Git treats
"racily clean" index entries.

Where: `<run dir>/generator-cache/` (`/run/podunit`, `$XDG_RUNTIME_DIR/podunit`, or
`$PODUNIT_RUN_DIR`), the per-boot directory the spec (§3.1) names for podunit's
per-boot files. Why this is acceptable under systemd.generator(7) ("Notes about
writing generators"): generators may rely on a mounted /run (not on /var), which is
a tmpfs, so the cache is gone at reboot and a boot always starts cold; the cache is
not configuration for another service nor generator output (systemd never loads
it; the units still go only into the output directory, and are written on every
run); generators of one manager run in parallel, so the file is per mode and
search path and replaced atomically (temporary file + rename). Since systemd 253
the system manager runs generators in a mount namespace with most of the file
system read-only but /run left writable "because that's where the output goes"
(systemd PR #25723); its authors call writes outside the output directories side
effects to avoid, which is why a cache that cannot be written only costs speed. The search walk
skips it (it walks no subdirectory of the run directory). A cache that cannot be read or written, is
corrupt or from another version is ignored (and overwritten);
`PODUNIT_GENERATOR_CACHE=0` turns the cache off.
"""

from __future__ import annotations

import binascii
import marshal
import os
import sys
import time

from toolkit.definitions.search import run_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, TypeAlias

    from toolkit.definitions.search import Input

    Key: TypeAlias = tuple[Any, ...]  # only marshal-able values: str, int, bool, None, tuples
    # What the generator produced: unit files, symlinks and plan files of every container
    # (relative path -> text or link target), the messages logged and the exit status.
    Output: TypeAlias = tuple[
        list[tuple[dict[str, str], dict[str, str], dict[str, str]]], list[str], int
    ]

MAGIC = "podunit-generator-cache 1"
ENVIRONMENT = (
    "PODUNIT_DEFINITION_DIRS",
    "PODUNIT_RUN_DIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "HOME",
)
RACY_NS = 2_000_000_000  # inputs changed this shortly before the run are not trusted
CACHE_DIR = "generator-cache"


def enabled(environ: Mapping[str, str]) -> bool:
    """False when `PODUNIT_GENERATOR_CACHE=0` (or `no`, `false`, `off`)."""
    return environ.get("PODUNIT_GENERATOR_CACHE", "1").lower() not in ("0", "no", "false", "off")


def cache_file(*, user: bool, environ: Mapping[str, str]) -> str | None:
    """The cache of this mode and environment, or None (no run directory, or the cache
    is off). One file per mode and `ENVIRONMENT` (a CRC in its name), so runs with
    different search paths do not overwrite each other's cache."""
    if not enabled(environ):
        return None
    directory = run_dir(user=user, environ=environ)
    if directory is None:
        return None
    setting = "\0".join(f"{name}={environ.get(name)}" for name in ENVIRONMENT)
    crc = binascii.crc32(setting.encode("utf-8", "surrogateescape"))
    return f"{directory}/{CACHE_DIR}/{'user' if user else 'system'}-{crc:08x}.marshal"


def prepare(*, user: bool, environ: Mapping[str, str]) -> str | None:
    """`cache_file`, with its directory created (None if that fails).

    Called before the search path is walked: creating the directory changes the run
    directory, which is a search directory, and the walk must see it as it will stay.
    At boot the generator may be first to make the run directory: with the runtime's
    mode, 0711 (`toolkit.storage.paths`); the cache directory is 0700.
    """
    path = cache_file(user=user, environ=environ)
    if path is None:
        return None
    directory = os.path.dirname(path)
    try:
        os.makedirs(os.path.dirname(directory), mode=0o711, exist_ok=True)
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return path


def _identity(path: str) -> tuple[str | int, ...]:
    try:
        status = os.stat(path)
    except OSError:
        return (path,)
    return (path, status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def code_version() -> Key:
    """Python's version and the identity of the code that produces the output."""
    toolkit = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts: list[Any] = [sys.version, sys.executable]
    for directory in (toolkit, f"{toolkit}/definitions", f"{toolkit}/unitgen"):
        try:
            names = sorted(name for name in os.listdir(directory) if name.endswith(".py"))
        except OSError:
            names = []
        parts.extend(_identity(f"{directory}/{name}") for name in names)
    for entry in sys.path:
        candidate = f"{entry or '.'}/yaml/__init__.py"
        if os.path.exists(candidate):
            parts.append(_identity(candidate))
            break
    return tuple(parts)


def make_key(
    *,
    user: bool,
    podunit: str,
    dirs: Sequence[str],
    environ: Mapping[str, str],
    inputs: Sequence[Input],
    extra: str = "",
) -> Key:
    """Everything the generator's output depends on (see the module docstring);
    `extra`: what else the caller writes into the output (the plan directory)."""
    return (
        MAGIC,
        user,
        podunit,
        extra,
        tuple(dirs),
        tuple(environ.get(name) for name in ENVIRONMENT),
        environment_digest(environ),
        os.getuid(),
        code_version(),
        tuple(inputs),
    )


# Set anew for every process (systemd.exec(5) "Environment Variables in Spawned
# Processes", the shell's `_`): no definition can mean them, and they would change the key.
VOLATILE = frozenset(["SYSTEMD_EXEC_PID", "INVOCATION_ID", "JOURNAL_STREAM", "_"])


def environment_digest(environ: Mapping[str, str]) -> tuple[int, int, int]:
    """The environment but `VOLATILE` as (count, CRC-32, CRC-32 of the reversed text):
    changes when a variable is added, removed or changed, and keeps no value."""
    kept = sorted((k, v) for k, v in environ.items() if k not in VOLATILE)
    data = "\0".join(f"{k}={v}" for k, v in kept).encode("utf-8", "surrogateescape")
    return (len(kept), binascii.crc32(data), binascii.crc32(data[::-1]))


def racy(inputs: Sequence[Input], started_ns: int) -> bool:
    """True if an input changed within `RACY_NS` before `started_ns` (or after it)."""
    limit = started_ns - RACY_NS
    for item in inputs:
        if len(item) == 7:
            mtime, ctime = item[5], item[6]
            if isinstance(mtime, int) and isinstance(ctime, int) and max(mtime, ctime) >= limit:
                return True
    return False


def load(path: str, key: Key) -> Output | None:
    """The cached output for `key`; None when missing, corrupt, foreign or for another key,
    or not this user's own file that only they can write (its text becomes units)."""
    try:
        with open(path, "rb") as stream:
            status = os.fstat(stream.fileno())
            if status.st_uid != os.geteuid() or status.st_mode & 0o022:
                return None
            data = marshal.loads(stream.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not (isinstance(data, tuple) and len(data) == 2 and data[0] == key):
        return None
    output = data[1]
    return output if _well_formed(output) else None


def _well_formed(output: object) -> bool:
    """The shape of `Output`, all of it checked before anything is written (plain loops:
    the warm path checks thousands of entries)."""
    if not (isinstance(output, tuple) and len(output) == 3):
        return False
    units, messages, status = output
    if not (isinstance(units, list) and isinstance(messages, list) and isinstance(status, int)):
        return False
    for unit in units:
        if not (isinstance(unit, tuple) and len(unit) == 3):
            return False
        for mapping in unit:
            if not isinstance(mapping, dict):
                return False
            for name, text in mapping.items():
                if name.__class__ is not str or text.__class__ is not str:
                    return False
    return all(message.__class__ is str for message in messages)


def store(path: str, key: Key, output: Output) -> None:
    """Write the cache atomically (temporary file + rename); failures are ignored."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as stream:
            stream.write(marshal.dumps((key, output)))
        os.rename(temporary, path)
    except (OSError, ValueError):
        _remove(temporary)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        return


def now_ns() -> int:
    """The wall clock in ns, as file time stamps use it."""
    return time.time_ns()

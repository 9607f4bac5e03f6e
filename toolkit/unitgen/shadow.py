"""Units that exist outside the generator's output, which a container must not shadow.

A container named `ssh` would write `ssh.service` into the generator directory,
which systemd prefers to `/usr/lib/systemd/system/ssh.service` (systemd.unit(5)
"Unit File Load Path"): the vendor's unit would silently be replaced; one in
`/etc/systemd/system` would silently hide podunit's. So the generator refuses a
container whose unit files or aliases already exist in the unit directories
below (podunit.yaml(5), "NAMES"), as a located error.

Not counted: masks (symbolic links to /dev/null: masking a podunit unit is the
admin's right), links into the generator directories, drop-in and `.wants`
directories, transient units (`systemd-run`), and other generators' output
(generators run in parallel, so it is not there to read yet).

Fast enough for every daemon-reload: the warm path only stats the directories
(`inputs`, part of the generator cache's key: adding or removing a unit file
changes its directory); the cold path lists each once. Only `os` is imported.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from toolkit.definitions.search import Input

SYSTEM_UNIT_DIRS = (
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)
# Links to these are the generators' own units (e.g. `systemctl link` of one), not others'.
GENERATOR_DIRS = ("/run/systemd/generator", "/run/systemd/generator.early",
                  "/run/systemd/generator.late")  # fmt: skip


def unit_dirs(*, user: bool, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The unit directories of the mode (`systemd-analyze unit-paths [--user]`, without
    the control, transient and generator directories)."""
    if not user:
        return list(SYSTEM_UNIT_DIRS)
    home = environ.get("HOME") or os.path.expanduser("~")
    config = environ.get("XDG_CONFIG_HOME") or f"{home}/.config"
    data = environ.get("XDG_DATA_HOME") or f"{home}/.local/share"
    dirs = [f"{config}/systemd/user", "/etc/xdg/systemd/user", "/etc/systemd/user"]
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:
        dirs.append(f"{runtime}/systemd/user")
    dirs += [
        "/run/systemd/user",
        f"{data}/systemd/user",
        "/usr/local/share/systemd/user",
        "/usr/share/systemd/user",
        "/usr/local/lib/systemd/user",
        "/usr/lib/systemd/user",
    ]
    return [directory for directory in dirs if directory.startswith("/")]


class InstalledUnits:
    """The unit files of `dirs`: `inputs` (their directories' stat identity) now,
    `names()` (listed once) when the cold path renders."""

    def __init__(self, dirs: Sequence[str]) -> None:
        self.dirs: list[str] = []
        self.inputs: list[Input] = []
        seen: set[tuple[int, int]] = set()
        for directory in dirs:
            try:
                status = os.stat(directory)
            except OSError:
                self.inputs.append(("-", directory))
                continue
            if (status.st_dev, status.st_ino) in seen:  # /lib -> /usr/lib
                continue
            seen.add((status.st_dev, status.st_ino))
            self.dirs.append(directory)
            self.inputs.append(
                ("u", directory, status.st_dev, status.st_ino, status.st_mtime_ns,
                 status.st_ctime_ns)
            )  # fmt: skip
        self._names: dict[str, str] | None = None

    @classmethod
    def of_mode(cls, *, user: bool, environ: Mapping[str, str] = os.environ) -> InstalledUnits:
        return cls(unit_dirs(user=user, environ=environ))

    def names(self) -> Mapping[str, str]:
        """Unit file name -> the path it exists at (the first directory wins)."""
        if self._names is None:
            found: dict[str, str] = {}
            for directory in self.dirs:
                try:
                    entries = list(os.scandir(directory))
                except OSError:
                    continue
                for entry in entries:
                    if entry.name in found or "." not in entry.name:
                        continue
                    try:
                        if entry.is_dir() or (entry.is_symlink() and _ours(entry.path)):
                            continue
                    except OSError:
                        continue
                    found[entry.name] = entry.path
            self._names = found
        return self._names


def _ours(link: str) -> bool:
    """A mask (-> /dev/null) or a link into a generator directory."""
    try:
        target = os.readlink(link)
    except OSError:
        return False
    if target == "/dev/null":
        return True
    target = os.path.join(os.path.dirname(link), target)
    return any(target.startswith(directory + "/") for directory in GENERATOR_DIRS)

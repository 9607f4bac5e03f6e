"""Where podunit keeps its state (spec §3.1).

System mode: the database under `/var/lib/podunit` (0700), per-boot files under
`/run/podunit`. User mode: `~/.local/share/podunit` and `$XDG_RUNTIME_DIR/podunit`.
`PODUNIT_STATE_DIR` and `PODUNIT_RUN_DIR` override either (tests isolate state so).

The state directory holds `state.db`, `logs/<id>.log` (k8s-file) and
`layers/<id>/` (an image container's writable layer). Layout of the run directory
(everything in it disappears at reboot):

    boot-id               the kernel boot id the directory was made in
    exits/<id>            conmon's exit files (bare decimal status)
    pidfiles/<name>.pid   conmon's pid, for Type=forking units (PIDFile=)
    locks/<id>.lock       per-container flock(2) locks; locks/global.lock
    containers/<id>/      the OCI bundle: config.json, conmon's persist dir (exit, oom)
    rootfs/<id>           an image container's root: overlay of the image + its layer
    sockets/<id>/attach   conmon's attach sockets
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from toolkit.errors import PodunitError

SYSTEM_STATE_DIR = Path("/var/lib/podunit")
SYSTEM_RUN_DIR = Path("/run/podunit")


class RuntimePaths:
    """The state and run directories of one mode, and the file names inside them.

    Immutable. A plain class, not a dataclass: every podunit process makes one, and
    `dataclasses` costs the light verbs (stop, rm, ps, ...) about 10 ms of start-up.
    """

    __slots__ = ("run_dir", "state_dir", "user")
    user: bool
    state_dir: Path
    run_dir: Path

    def __init__(self, *, user: bool, state_dir: Path, run_dir: Path) -> None:
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "state_dir", state_dir)
        object.__setattr__(self, "run_dir", run_dir)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RuntimePaths is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuntimePaths) and (self.user, self.state_dir, self.run_dir) == (
            other.user,
            other.state_dir,
            other.run_dir,
        )

    def __hash__(self) -> int:
        return hash((self.user, self.state_dir, self.run_dir))

    def __repr__(self) -> str:
        return (
            f"RuntimePaths(user={self.user!r}, state_dir={self.state_dir!r},"
            f" run_dir={self.run_dir!r})"
        )

    @classmethod
    def for_mode(cls, user: bool, environ: Mapping[str, str] = os.environ) -> RuntimePaths:
        """The directories of system or user mode, honouring the PODUNIT_*_DIR overrides."""
        state_override = environ.get("PODUNIT_STATE_DIR")
        run_override = environ.get("PODUNIT_RUN_DIR")
        if user:
            home = environ.get("HOME") or os.path.expanduser("~")
            data_home = environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
            state_dir = Path(data_home) / "podunit"
            runtime_dir = environ.get("XDG_RUNTIME_DIR")
            if not runtime_dir and not run_override:
                raise PodunitError(
                    "XDG_RUNTIME_DIR is not set: no place for per-boot state in user mode",
                    hint="log in through systemd-logind, or set PODUNIT_RUN_DIR",
                )
            run_dir = Path(runtime_dir or "/nonexistent") / "podunit"
        else:
            state_dir, run_dir = SYSTEM_STATE_DIR, SYSTEM_RUN_DIR
        for name, value in (
            ("PODUNIT_STATE_DIR", state_override),
            ("PODUNIT_RUN_DIR", run_override),
        ):
            if value is not None and not os.path.isabs(value):
                raise PodunitError(f"{name}={value!r} is not an absolute path")
        return cls(
            user=user,
            state_dir=Path(state_override) if state_override else state_dir,
            run_dir=Path(run_override) if run_override else run_dir,
        )

    # -- state directory (survives reboots) --
    @property
    def database(self) -> Path:
        return self.state_dir / "state.db"

    def log_file(self, container_id: str) -> Path:
        """Default k8s-file log of a container (kept until `rm`)."""
        return self.state_dir / "logs" / f"{container_id}.log"

    def image_layer(self, container_id: str) -> Path:
        """The container's private writable layer over its image (kept until `rm`)."""
        return self.state_dir / "layers" / container_id

    # -- run directory (per boot) --
    @property
    def boot_id_stamp(self) -> Path:
        return self.run_dir / "boot-id"

    @property
    def exits_dir(self) -> Path:
        return self.run_dir / "exits"

    @property
    def pidfiles_dir(self) -> Path:
        return self.run_dir / "pidfiles"

    @property
    def locks_dir(self) -> Path:
        return self.run_dir / "locks"

    @property
    def containers_dir(self) -> Path:
        return self.run_dir / "containers"

    @property
    def sockets_dir(self) -> Path:
        return self.run_dir / "sockets"

    def exit_file(self, container_id: str) -> Path:
        return self.exits_dir / container_id

    def unit_pidfile(self, name: str) -> Path:
        """`PIDFile=` of a Type=forking unit: `%t/podunit/pidfiles/NAME.pid` holds conmon's pid."""
        return self.pidfiles_dir / f"{name}.pid"

    def bundle_dir(self, container_id: str) -> Path:
        return self.containers_dir / container_id

    def exec_dir(self, container_id: str) -> Path:
        """The container's exec sessions (toolkit.exec_sessions); absent when it never had one."""
        return self.bundle_dir(container_id) / "exec"

    def rootfs_mount(self, container_id: str) -> Path:
        """Where an image container's root file system (an overlay) is mounted."""
        return self.run_dir / "rootfs" / container_id

    def lock_file(self, container_id: str) -> Path:
        return self.locks_dir / f"{container_id}.lock"

    @property
    def global_lock_file(self) -> Path:
        return self.locks_dir / "global.lock"

    def ensure(self) -> None:
        """Create the directories (state dir 0700, run dir 0711) if missing."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(mode=0o700, exist_ok=True)
        self.run_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        for directory in (
            self.exits_dir,
            self.pidfiles_dir,
            self.locks_dir,
            self.containers_dir,
            self.sockets_dir,
        ):
            directory.mkdir(mode=0o700, exist_ok=True)


def remove_tree(path: Path) -> None:
    """`rm -rf path` without following symbolic links; errors are ignored.

    What `shutil.rmtree(path, ignore_errors=True)` does, without importing shutil
    (with zlib, bz2 and lzma about 3 ms of every `podunit stop` and `rm`).
    """
    if os.path.islink(path):
        return  # as rmtree: a link to a directory is not a tree to remove
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, name))
        for name in dirs:
            full = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    os.rmdir(full)
    with contextlib.suppress(OSError):
        os.rmdir(path)

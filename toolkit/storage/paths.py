"""Where podunit keeps its state (spec §3.1).

System mode: the database under `/var/lib/podunit` (0700), per-boot files under
`/run/podunit`. User mode: `~/.local/share/podunit` and `$XDG_RUNTIME_DIR/podunit`.
`PODUNIT_STATE_DIR` and `PODUNIT_RUN_DIR` override either (tests isolate state so).

The state directory holds `state.db`, `logs/<id>.log` (k8s-file) and
`layers/<id>/` (an image container's writable layer), `volumes/<name>/_data`
(volumes, toolkit.storage.volumes). Layout of the run directory
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

import os

from toolkit.errors import PodunitError
from toolkit.fs import clean_path, make_dir
from toolkit.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping

SYSTEM_STATE_DIR = "/var/lib/podunit"
SYSTEM_RUN_DIR = "/run/podunit"


class RuntimePaths(Record):
    """The state and run directories of one mode, and the file names inside them.

    Paths are `str`s (os.path), not `pathlib.Path`s: pathlib (with urllib.parse,
    fnmatch, ...) would cost every unit's stop/rm/exec process about 5 ms.
    The constructor also takes `os.PathLike` directories (tests pass `Path`s).
    """

    user: bool
    state_dir: str
    run_dir: str

    def __init__(
        self, *, user: bool, state_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str]
    ) -> None:
        super().__init__(user=user, state_dir=os.fspath(state_dir), run_dir=os.fspath(run_dir))

    @classmethod
    def for_mode(cls, user: bool, environ: Mapping[str, str] = os.environ) -> RuntimePaths:
        """The directories of system or user mode, honouring the PODUNIT_*_DIR overrides."""
        state_override = environ.get("PODUNIT_STATE_DIR")
        run_override = environ.get("PODUNIT_RUN_DIR")
        if user:
            home = environ.get("HOME") or os.path.expanduser("~")
            data_home = environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
            state_dir = os.path.join(data_home, "podunit")
            runtime_dir = environ.get("XDG_RUNTIME_DIR")
            if not runtime_dir and not run_override:
                raise PodunitError(
                    "XDG_RUNTIME_DIR is not set: no place for per-boot state in user mode",
                    hint="log in through systemd-logind, or set PODUNIT_RUN_DIR",
                )
            run_dir = os.path.join(runtime_dir or "/nonexistent", "podunit")
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
            state_dir=clean_path(state_override or state_dir),
            run_dir=clean_path(run_override or run_dir),
        )

    # -- state directory (survives reboots) --
    @property
    def database(self) -> str:
        return os.path.join(self.state_dir, "state.db")

    def log_file(self, container_id: str) -> str:
        """Default k8s-file log of a container (kept until `rm`)."""
        return os.path.join(self.state_dir, "logs", f"{container_id}.log")

    @property
    def volumes_dir(self) -> str:
        """Named and anonymous volumes: `volumes/<name>/_data` (Docker and Podman's layout)."""
        return os.path.join(self.state_dir, "volumes")

    def volume_data(self, name: str) -> str:
        """The data directory of a (directory) volume (toolkit.storage.volumes)."""
        return os.path.join(self.state_dir, "volumes", name, "_data")

    def image_layer(self, container_id: str) -> str:
        """The container's private writable layer over its image (kept until `rm`)."""
        return os.path.join(self.state_dir, "layers", container_id)

    # -- run directory (per boot) --
    @property
    def boot_id_stamp(self) -> str:
        return os.path.join(self.run_dir, "boot-id")

    @property
    def exits_dir(self) -> str:
        return os.path.join(self.run_dir, "exits")

    @property
    def pidfiles_dir(self) -> str:
        return os.path.join(self.run_dir, "pidfiles")

    @property
    def locks_dir(self) -> str:
        return os.path.join(self.run_dir, "locks")

    @property
    def containers_dir(self) -> str:
        return os.path.join(self.run_dir, "containers")

    @property
    def sockets_dir(self) -> str:
        return os.path.join(self.run_dir, "sockets")

    def attach_socket_dir(self, session_id: str) -> str:
        """conmon's `sockets/<id>` (a container's or an exec session's id): a symlink to its dir."""
        return os.path.join(self.sockets_dir, session_id)

    def exit_file(self, container_id: str) -> str:
        return os.path.join(self.exits_dir, container_id)

    def unit_pidfile(self, name: str) -> str:
        """`PIDFile=` of a Type=forking unit: `%t/podunit/pidfiles/NAME.pid` holds conmon's pid."""
        return os.path.join(self.pidfiles_dir, f"{name}.pid")

    def bundle_dir(self, container_id: str) -> str:
        return os.path.join(self.containers_dir, container_id)

    def exec_dir(self, container_id: str) -> str:
        """The container's exec sessions (toolkit.runtime.exec); absent when it never had one."""
        return os.path.join(self.bundle_dir(container_id), "exec")

    def rootfs_mount(self, container_id: str) -> str:
        """Where an image container's root file system (an overlay) is mounted."""
        return os.path.join(self.run_dir, "rootfs", container_id)

    def lock_file(self, container_id: str) -> str:
        return os.path.join(self.locks_dir, f"{container_id}.lock")

    @property
    def global_lock_file(self) -> str:
        return os.path.join(self.locks_dir, "global.lock")

    def ensure(self) -> None:
        """Create the directories (state dir 0700, run dir 0711) if missing."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        make_dir(os.path.join(self.state_dir, "logs"), 0o700)
        os.makedirs(self.run_dir, mode=0o711, exist_ok=True)
        for directory in (
            self.exits_dir,
            self.pidfiles_dir,
            self.locks_dir,
            self.containers_dir,
            self.sockets_dir,
        ):
            make_dir(directory, 0o700)

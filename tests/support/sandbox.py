"""A throwaway real systemd for system tests and demos (issue 2; notes/real-systemd-in-tests.md).

A sandbox is systemd 252 booted by systemd-nspawn on an overlay of the host's
root, so nothing the booted systemd does reaches the host:

* Directory ``/var/lib/podunit-sandbox/NAME/`` (``BASE``) holds ``sandbox.json``
  (owner pid and start time, nspawn pid, leader, cgroups: what the reaper and
  ``podunit sandbox`` need), ``console.log`` (the container's console), ``rw/`` (a
  tmpfs with the overlay's upper and work directories) and ``root/`` (the overlay
  ``lowerdir=/``, i.e. the container's root as seen from the host: ``Sandbox.root``).
* Before boot, host units that are irrelevant or harmful in a test sandbox (every
  unit enabled in the host's ``/etc/systemd/system/*.wants``, gettys, timers,
  databases, sshd ...; see `units_to_mask`) are masked in the overlay's
  ``/etc/systemd/system``, ``/etc/fstab`` is emptied, ``/etc/machine-id`` is fresh
  and the hostname is NAME. Boot to ``running`` takes about half a second; only
  journald, D-Bus and logind run. A test that needs a masked unit can unmask it.
* nspawn runs with ``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`` (cgroup v2 inside, without
  controllers on hybrid hosts) and the keyring/mount system calls runc needs, in
  a private mount namespace whose ``/run/systemd/nspawn`` (or ``/run/systemd``) is a
  tmpfs (nspawn keeps locks there: the host's ``/run`` is never written), in a cgroup of its
  own (``podunit-sandbox.NAME`` below the caller's cgroup in the v2 and
  ``name=systemd`` hierarchies: without it, two nspawns would share ``/payload``).
  Teardown kills that cgroup, so nothing started inside survives. The network is the
  host's unless ``private_network=True`` (own namespace, loopback only: no port clashes).
  A sandbox on the host's network sets ``PODUNIT_DEFAULT_NETWORK=none`` for its units
  (``DefaultEnvironment=``) and for `Sandbox.run`: podunit's default, the bridge network,
  would make a bridge and firewall rules in the machine's own namespace. Tests of
  bridge networks use a private-network sandbox.
* The checkout (``REPO_ROOT``, found from this file) is bind-mounted at the same
  path, so ``REPO_ROOT/.venv/bin/python`` and ``podunit`` work inside; further
  ``binds`` likewise (``DIR`` or ``SRC:DST``). Files on the host that change after
  boot are visible inside only through such binds (overlayfs caches its lower).
* Commands run inside with ``nsenter -t LEADER -a`` and a clean environment.
* ``Sandbox.root`` is the container's root file system, shared live both ways: the host
  may read and write files there at any time (no nsenter needed), except below the
  container's own mounts: ``/tmp``, ``/run``, ``/dev``, ``/proc``, ``/sys`` and the binds.

Usage::

    with Sandbox.booted(binds=[...], setup=place_files) as sb:
        sb.run(["systemctl", "is-system-running"]).stdout  # b"running\\n"
        sb.write("/etc/podunit/web.yaml", text); sb.read(path); sb.sh("script")

Teardown (`Sandbox.down`) powers the sandbox off (SIGRTMIN+4 to its PID 1), kills
whatever is left in its cgroup, unmounts the overlay and the tmpfs and removes the
directory; `Sandbox.booted` also does it when the body raises, on Ctrl-C and on
SIGTERM (turned into KeyboardInterrupt while a sandbox is up). Sandboxes left by a
killed process halt by themselves (nspawn has the owner's death signal: SIGTERM) and
are removed by `reap_stale` (called by the test fixture) or ``scripts/sandbox down
--all``; a sandbox whose owner is still alive is never touched. ``scripts/sandbox up``
makes a detached sandbox (no owner) that lasts until ``scripts/sandbox down``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from toolkit import proc
from toolkit.errors import EXIT_PODUNIT_ERROR, CommandFailed, PodunitError, SandboxError
from toolkit.proc import proc_stat_fields, process_start_time, same_process_alive

BASE = Path("/var/lib/podunit-sandbox")
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Environment of every command run inside; the caller's `env` is added on top.
INSIDE_ENV: Mapping[str, str] = {
    "PATH": INSIDE_PATH,
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
# libmount (mount, umount, unshare, nspawn) locks /run/mount/utab unless told otherwise.
MOUNT_ENV: Mapping[str, str] = {
    "PATH": INSIDE_PATH,
    "LANG": "C.UTF-8",
    "LIBMOUNT_UTAB": str(BASE / ".utab"),
}
SYSTEM_CALL_FILTER = "@keyring @privileged @mount bpf keyctl add_key request_key"
BOOT_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 10.0

# Units masked in every sandbox even when the host does not enable them.
ALWAYS_MASKED = (
    "getty@.service",
    "serial-getty@.service",
    "console-getty.service",
    "container-getty@.service",
    "autovt@.service",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "systemd-homed.service",
    "cron.service",
    "anacron.service",
    "atd.service",
    "rsyslog.service",
    "ssh.service",
    "ssh.socket",
    "sshd.service",
    "docker.service",
    "docker.socket",
    "containerd.service",
    "podman.service",
    "podman.socket",
    "podman-restart.service",
    "postgresql.service",
    "postgresql@.service",
    "docker-registry.service",
    "unattended-upgrades.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "man-db.timer",
    "logrotate.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-tmpfiles-clean.timer",
)
# Never masked even when enabled on the host: what the tests rely on.
NEVER_MASKED = frozenset(
    {
        "dbus.service",
        "dbus.socket",
        "dbus-broker.service",
        "systemd-journald.service",
        "systemd-journald.socket",
        "systemd-journald-dev-log.socket",
        "systemd-logind.service",
    }
)
_MASKABLE_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount", ".automount")


# ---------------------------------------------------------------------------
# Pure helpers


def valid_name(name: str) -> bool:
    """A machine name nspawn accepts and that is safe as a directory name (hostname rules)."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return 0 < len(name) <= 64 and set(name) <= allowed and name[0].isalnum() and ".." not in name


def new_name() -> str:
    """A unique sandbox name: owner pid plus randomness, so parallel runs never collide."""
    return f"pu-{os.getpid()}-{secrets.token_hex(3)}"


def units_to_mask(enabled: Sequence[str]) -> list[str]:
    """Units to mask: everything the host enables (`enabled`) and `ALWAYS_MASKED`, minus
    `NEVER_MASKED`. Instances (``getty@tty1.service``) are masked with their template."""
    names: set[str] = set(ALWAYS_MASKED)
    for unit in enabled:
        if not unit.endswith(_MASKABLE_SUFFIXES):
            continue
        names.add(unit)
        if "@" in unit:
            prefix, _, rest = unit.partition("@")
            names.add(f"{prefix}@{rest[rest.rfind('.') :]}")
    return sorted(names - NEVER_MASKED)


def cgroup_parents(proc_cgroup: str, mountinfo: str) -> list[Path]:
    """The directories of a process's cgroups in the hierarchies nspawn uses: the v2 one
    (``0::``) and the v1 ``name=systemd`` one, from ``/proc/PID/cgroup`` and
    ``/proc/PID/mountinfo`` (cgroups(7), proc(5))."""
    mounts: dict[str, tuple[str, str]] = {}  # "v2" or "name=systemd" -> (root, mountpoint)
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            mounts.setdefault("v2", (root, mountpoint))
        elif tail[0] == "cgroup" and "name=systemd" in tail[2].split(","):
            mounts.setdefault("name=systemd", (root, mountpoint))
    parents: list[Path] = []
    for line in proc_cgroup.splitlines():
        hierarchy_id, controllers, path = line.split(":", 2)
        key = "v2" if hierarchy_id == "0" and controllers == "" else controllers
        if key not in mounts or path.startswith("/.."):
            continue
        root, mountpoint = mounts[key]
        if root != "/" and not (path == root or path.startswith(root + "/")):
            continue
        relative = path[len(root) :] if root != "/" else path
        parents.append(
            Path(mountpoint + relative.rstrip("/")) if relative != "/" else Path(mountpoint)
        )
    return parents


def _unescape(field: str) -> str:
    """Undo the octal escapes (``\\040``) of /proc/PID/mountinfo fields."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def mountpoints_under(mountinfo: str, directory: Path) -> list[Path]:
    """Mount points at or below `directory`, deepest first (for unmounting)."""
    prefix = str(directory).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def nspawn_argv(
    name: str, root: Path, binds: Sequence[str], *, private_network: bool = False
) -> list[str]:
    """The systemd-nspawn command line that boots the sandbox (notes/real-systemd-in-tests.md)."""
    return [
        "systemd-nspawn",
        "-q",
        "-D",
        str(root),
        "--register=no",
        "--keep-unit",
        "-b",
        "--capability=all",
        f"--system-call-filter={SYSTEM_CALL_FILTER}",
        "-M",
        name,
        *(["--private-network"] if private_network else []),
        *(f"--bind={bind}" for bind in binds),
    ]


def inside_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The clean environment of a command run inside, with the caller's `extra` on top."""
    env = dict(INSIDE_ENV)
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------
# Small I/O helpers


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _host_enabled_units() -> list[str]:
    """Names of the units linked in the host's ``/etc/systemd/system/*.wants|*.requires``."""
    names: list[str] = []
    for directory in Path("/etc/systemd/system").glob("*.[wr]*"):
        if directory.is_dir() and directory.name.endswith((".wants", ".requires")):
            names.extend(entry.name for entry in directory.iterdir())
    return names


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    temporary.rename(path)


@contextlib.contextmanager
def _reaper_lock() -> Iterator[None]:
    """Serialise reaping (and listing) across processes."""
    BASE.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(BASE / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt (so teardown runs) while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM/SIGHUP during teardown, so a second Ctrl-C cannot leak mounts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------
# The sandbox


@dataclass
class SandboxRecord:
    """What ``sandbox.json`` says about a sandbox, and whether its processes still live."""

    name: str
    directory: Path
    owner_pid: int | None
    owner_alive: bool
    running: bool
    leader: int | None

    @property
    def stale(self) -> bool:
        """Left behind: it had an owner process and that process is gone."""
        return self.owner_pid is not None and not self.owner_alive


class Sandbox:
    """One systemd-nspawn sandbox; see the module docstring. Not thread-safe."""

    def __init__(
        self,
        *,
        name: str | None = None,
        binds: Sequence[str | Path] = (),
        setup: Callable[[Path], None] | None = None,
        detached: bool = False,
        private_network: bool = False,
    ) -> None:
        self.name = name or new_name()
        if not valid_name(self.name):
            raise SandboxError(
                f"invalid sandbox name {self.name!r}",
                hint="use letters, digits, '-', '_' and '.', at most 64 characters",
            )
        repo = [str(REPO_ROOT)] if (REPO_ROOT / "pyproject.toml").is_file() else []
        self.binds: tuple[str, ...] = tuple(dict.fromkeys([*repo, *map(str, binds)]))
        self.setup = setup
        self.private_network = private_network  # own network namespace with loopback only
        self.directory = BASE / self.name
        self.root = self.directory / "root"
        self.detached = detached  # no owner process: only `down` removes it (the CLI's `up`)
        self.leader: int = 0
        self.nspawn_pid: int = 0
        self.boot_state = ""
        self.failed_units: list[str] = []
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._record: dict[str, Any] = {}
        # Whether `down` may remove self.directory: we made it, or attached to it on purpose
        # (never true for a Sandbox whose `up` found the name taken by another one).
        self._ours = False

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def booted(
        cls,
        binds: Sequence[str | Path] = (),
        name: str | None = None,
        setup: Callable[[Path], None] | None = None,
        timeout: float = BOOT_TIMEOUT,
        private_network: bool = False,
    ) -> Iterator[Sandbox]:
        """Boot a sandbox, yield it, and always tear it down (also on errors, Ctrl-C, SIGTERM).
        By default it shares the host's network (TCP ports can collide with the host and
        other sandboxes); `private_network` gives it a namespace with loopback only."""
        sandbox = cls(name=name, binds=binds, setup=setup, private_network=private_network)
        with _sigterm_interrupts():
            sandbox.up(timeout=timeout)  # undoes itself when it fails
            try:
                yield sandbox
            finally:
                sandbox.down()

    def up(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Prepare the overlay, boot systemd in it and wait until it is running.
        On any failure (or interrupt) everything done so far is undone."""
        _require_root()
        for bind in self.binds:
            source = bind.split(":", 1)[0]
            if not Path(source).exists():
                raise SandboxError(f"cannot bind {source} into the sandbox: it does not exist")
        BASE.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.directory.mkdir(mode=0o700)
        except FileExistsError:
            raise SandboxError(
                f"sandbox {self.name} already exists",
                hint=f"podunit sandbox down --name {self.name}",
            ) from None
        self._ours = True
        try:
            self._save(owner_pid=None if self.detached else os.getpid())
            self._mount_overlay()
            self._neutralise()
            if self.setup is not None:
                self.setup(self.root)
            self._start_nspawn()
            self._wait_for_boot(timeout)
        except BaseException:
            with contextlib.suppress(SandboxError):
                self.down()
            raise

    def down(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Power off, kill what is left, unmount, remove the directory. Idempotent.
        Raises SandboxError (after trying every step) if something could not be removed."""
        if not self._ours:
            return
        problems: list[str] = []
        with _signals_deferred():
            if self._leader_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGRTMIN + 4)  # systemd(1): poweroff
                self._wait_nspawn(timeout)
            self._kill_cgroups(problems)
            if self._nspawn is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._nspawn.wait(timeout=5)
            self._unmount(problems)
            self._remove_cgroups(problems)
            if not problems and self.directory.exists():
                shutil.rmtree(self.directory, ignore_errors=True)
                if self.directory.exists():
                    problems.append(f"cannot remove {self.directory}")
        if problems:
            raise SandboxError(f"sandbox {self.name}: " + "; ".join(problems))

    @property
    def network_env(self) -> dict[str, str]:
        """What keeps podunit's default bridge network out of the host's namespace."""
        return {} if self.private_network else {"PODUNIT_DEFAULT_NETWORK": "none"}

    # -- running things inside ---------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 60,
        input: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` inside (all namespaces of the sandbox's PID 1), stdout/stderr captured.
        The environment is `INSIDE_ENV` plus `env`. Raises CommandFailed (naming argv[0], with
        its stderr) on non-zero exit if `check`, SandboxError on timeout."""
        data = input.encode() if isinstance(input, str) else input
        try:
            result = proc.run(
                self.nsenter_argv(argv),
                input=data,
                check=False,
                env=inside_env({**self.network_env, **(env or {})}),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise SandboxError(
                f"{argv[0]} did not finish within {timeout} s in sandbox {self.name}"
            ) from None
        if result.returncode != 0 and not self._leader_alive():
            raise SandboxError(
                f"sandbox {self.name} is no longer running", hint=self._console_tail()
            )
        if check and result.returncode != 0:
            raise CommandFailed(
                list(argv), result.returncode, result.stderr.decode(errors="replace")
            )
        return result

    def sh(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        """Run a shell script inside (``sh -c``); keyword arguments as for `run`."""
        return self.run(["sh", "-c", script], **kwargs)

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """The host command line that runs `argv` inside the sandbox."""
        if not self.leader:
            raise SandboxError(f"sandbox {self.name} is not running")
        return ["nsenter", "-t", str(self.leader), "-a", "--", *argv]

    def write(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Create or replace the file `path` inside (parents created), atomically."""
        payload = data.encode() if isinstance(data, str) else data
        self.run(
            [
                "sh",
                "-c",
                'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.podunit-new" '
                '&& chmod "$2" "$1.podunit-new" && mv -f -- "$1.podunit-new" "$1"',
                "sh",
                path,
                f"{mode:o}",
            ],
            input=payload,
        )

    def read(self, path: str) -> bytes:
        """The contents of the file `path` inside; FileNotFoundError if there is none."""
        result = self.run(["cat", "--", path], check=False)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")
            if "No such file" in stderr:
                raise FileNotFoundError(f"{path} (in sandbox {self.name})")
            raise CommandFailed(["cat", path], result.returncode, stderr)
        return result.stdout

    # -- attaching to an existing sandbox (CLI, reaper) ---------------------

    @classmethod
    def attach(cls, name: str) -> Sandbox:
        """The sandbox `name` created earlier (by this or another process)."""
        if not valid_name(name):
            raise SandboxError(f"invalid sandbox name {name!r}")
        sandbox = cls(name=name)
        sandbox._ours = True
        text = _read_text(sandbox.directory / "sandbox.json")
        if text is None:
            if sandbox.directory.exists():
                return sandbox  # a half-made sandbox: `down` can still remove it
            raise SandboxError(
                f"no sandbox named {name}", hint="podunit sandbox list shows the existing ones"
            )
        try:
            record: dict[str, Any] = json.loads(text)
        except ValueError:
            return sandbox
        sandbox._record = record
        sandbox.binds = tuple(record.get("binds", sandbox.binds))
        sandbox.private_network = bool(record.get("private_network", False))
        sandbox.detached = record.get("owner_pid") is None
        sandbox.nspawn_pid = int(record.get("nspawn_pid") or 0)
        leader = int(record.get("leader") or 0)
        sandbox.leader = leader if leader and sandbox._nspawn_alive() else 0
        return sandbox

    def record(self) -> SandboxRecord:
        """The state of this sandbox as the reaper and ``podunit sandbox list`` see it."""
        owner = self._record.get("owner_pid")
        return SandboxRecord(
            name=self.name,
            directory=self.directory,
            owner_pid=owner,
            owner_alive=same_process_alive(owner, self._record.get("owner_start")),
            running=self._nspawn_alive(),
            leader=self.leader or None,
        )

    # -- internals ------------------------------------------------------------

    def _save(self, **changes: Any) -> None:
        if not self._record:
            self._record = {
                "name": self.name,
                "binds": list(self.binds),
                "created": time.time(),
                "owner_pid": None,
                "owner_start": None,
                "nspawn_pid": None,
                "nspawn_start": None,
                "leader": None,
                "cgroups": [],
                "private_network": self.private_network,
            }
        self._record.update(changes)
        if changes.get("owner_pid"):
            self._record["owner_start"] = process_start_time(changes["owner_pid"])
        _write_json(self.directory / "sandbox.json", self._record)

    def _mount_overlay(self) -> None:
        rw = self.directory / "rw"
        rw.mkdir(mode=0o700)
        self.root.mkdir(mode=0o755)
        _mount(["-t", "tmpfs", "-o", "mode=0700", "podunit-sandbox", str(rw)])
        (rw / "upper").mkdir()
        (rw / "work").mkdir()
        options = f"lowerdir=/,upperdir={rw / 'upper'},workdir={rw / 'work'}"
        _mount(["-t", "overlay", "-o", options, "podunit-sandbox", str(self.root)])

    def _neutralise(self) -> None:
        """Mask host units, empty fstab, fresh machine-id and hostname: a fast, quiet boot."""
        system = self.root / "etc" / "systemd" / "system"
        system.mkdir(parents=True, exist_ok=True)
        for unit in units_to_mask(_host_enabled_units()):
            link = system / unit
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("/dev/null")
        (self.root / "etc" / "fstab").write_text("# podunit sandbox: no mounts\n")
        (self.root / "etc" / "machine-id").write_text(secrets.token_hex(16) + "\n")
        (self.root / "etc" / "hostname").write_text(self.name + "\n")
        if not self.private_network:  # no bridge in the machine's network namespace
            conf = self.root / "etc" / "systemd" / "system.conf.d"
            conf.mkdir(parents=True, exist_ok=True)
            (conf / "podunit-sandbox-network.conf").write_text(
                "[Manager]\nDefaultEnvironment=" + " ".join(
                    f"{key}={value}" for key, value in self.network_env.items()
                ) + "\n"
            )  # fmt: skip

    def _cgroup_dirs(self) -> list[Path]:
        recorded = self._record.get("cgroups")
        if recorded:
            return [Path(p) for p in recorded]
        parents = cgroup_parents(
            Path("/proc/self/cgroup").read_text(), Path("/proc/self/mountinfo").read_text()
        )
        return [parent / f"podunit-sandbox.{self.name}" for parent in parents]

    def _start_nspawn(self) -> None:
        cgroups = self._cgroup_dirs()
        self._save(cgroups=[str(c) for c in cgroups])
        for cgroup in cgroups:
            cgroup.mkdir(exist_ok=True)
        hide = next(p for p in ("/run/systemd/nspawn", "/run/systemd", "/run") if Path(p).is_dir())
        # unshare execs sh (same pid) in a private mount namespace; sh waits until we have
        # moved it into the sandbox's cgroups, hides the host's /run/systemd/nspawn, execs nspawn.
        script = (
            'read -r go || exit 1; mount -t tmpfs -o mode=0755 podunit-sandbox "$1" || exit 1; '
            'shift; exec "$@" </dev/null'
        )
        env = {**MOUNT_ENV, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        # An owned sandbox halts when its owner dies without tearing it down (SIGKILL): nspawn
        # gets SIGTERM and halts the container; `reap_stale` removes the rest. Only from the
        # main thread: the signal comes when the thread that started nspawn ends.
        owned = not self.detached and threading.current_thread() is threading.main_thread()
        pdeathsig = ["setpriv", "--pdeathsig", "TERM"] if owned else []
        with open(self.directory / "console.log", "wb") as console:
            self._nspawn = proc.spawn(
                [
                    *pdeathsig,
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                    hide,
                    *nspawn_argv(
                        self.name, self.root, self.binds, private_network=self.private_network
                    ),
                ],
                env=env,
                cwd="/",
                stdin=subprocess.PIPE,
                stdout=console.fileno(),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nspawn_pid = self._nspawn.pid
        self._save(nspawn_pid=self.nspawn_pid, nspawn_start=process_start_time(self.nspawn_pid))
        assert self._nspawn.stdin is not None
        try:
            for cgroup in cgroups:
                (cgroup / "cgroup.procs").write_text(f"{self.nspawn_pid}\n")
            self._nspawn.stdin.write(b"go\n")
        finally:
            self._nspawn.stdin.close()

    def _wait_for_boot(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.leader:
            self._check_nspawn_alive()
            self.leader = self._find_leader()
            if not self.leader:
                self._deadline_check(deadline, "systemd did not start")
                time.sleep(0.02)
        self._save(leader=self.leader, leader_start=process_start_time(self.leader))
        while True:
            self._check_nspawn_alive()
            remaining = max(1.0, deadline - time.monotonic())
            result = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=remaining
            )
            self.boot_state = result.stdout.decode().strip()
            if self.boot_state in ("running", "degraded"):
                break
            if self.boot_state not in ("", "offline", "unknown", "initializing", "starting"):
                raise SandboxError(
                    f"sandbox {self.name} did not boot: system state {self.boot_state}",
                    hint=self._console_tail(),
                )
            self._deadline_check(deadline, f"systemd stuck in state {self.boot_state!r}")
            time.sleep(0.05)
        if self.boot_state == "degraded":
            failed = self.run(["systemctl", "--failed", "--plain", "--no-legend"], check=False)
            self.failed_units = [
                line.split()[0] for line in failed.stdout.decode().splitlines() if line.strip()
            ]
            print(
                f"podunit sandbox {self.name}: degraded, failed units: "
                + " ".join(self.failed_units),
                file=sys.stderr,
            )

    def _find_leader(self) -> int:
        """The container's PID 1 as seen from the host: nspawn's child in another pid namespace
        that has exec'd systemd."""
        own_ns = os.readlink("/proc/self/ns/pid")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            stat = _read_text(Path(f"/proc/{entry}/stat"))
            if not stat or proc_stat_fields(stat)[1] != self.nspawn_pid:
                continue
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
                if comm == "systemd" and os.readlink(f"/proc/{entry}/ns/pid") != own_ns:
                    return int(entry)
        return 0

    def _deadline_check(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise SandboxError(f"sandbox {self.name}: {what}", hint=self._console_tail())

    def _check_nspawn_alive(self) -> None:
        if not self._nspawn_alive():
            raise SandboxError(
                f"systemd-nspawn of sandbox {self.name} exited during boot",
                hint=self._console_tail(),
            )

    def _console_tail(self, lines: int = 15) -> str:
        text = _read_text(self.directory / "console.log") or ""
        tail = text.strip().splitlines()[-lines:]
        return "console: " + " | ".join(tail) if tail else "no console output"

    @property
    def alive(self) -> bool:
        """Whether the sandbox is up: its PID 1 and nspawn live."""
        return self._leader_alive()

    def _leader_alive(self) -> bool:
        """Whether the sandbox's PID 1 lives (an exiting one has already lost its namespaces)."""
        leader_start = self._record.get("leader_start")
        if not same_process_alive(self.leader, leader_start) or not self._nspawn_alive():
            return False
        try:
            os.readlink(f"/proc/{self.leader}/ns/mnt")
        except OSError:
            return False
        return True

    def _nspawn_alive(self) -> bool:
        if self._nspawn is not None:
            return self._nspawn.poll() is None
        return same_process_alive(self.nspawn_pid, self._record.get("nspawn_start"))

    def _wait_nspawn(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._nspawn_alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _kill_cgroups(self, problems: list[str]) -> None:
        """SIGKILL everything in the sandbox's cgroups and wait until they are empty."""
        cgroups = [c for c in self._cgroup_dirs() if c.is_dir()]
        deadline = time.monotonic() + 10
        while True:
            pids = _cgroup_pids(cgroups)
            if not pids:
                return
            for cgroup in cgroups:
                kill = cgroup / "cgroup.kill"
                if kill.exists():
                    with contextlib.suppress(OSError):
                        kill.write_text("1\n")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                problems.append(f"processes survive SIGKILL: {sorted(pids)}")
                return
            time.sleep(0.02)

    def _unmount(self, problems: list[str]) -> None:
        for point in mountpoints_under(Path("/proc/self/mountinfo").read_text(), self.directory):
            result = _mount([str(point)], program="umount", check=False)
            if result.returncode != 0:
                lazy = _mount(["--lazy", str(point)], program="umount", check=False)
                if lazy.returncode != 0:
                    problems.append(f"cannot unmount {point}: {lazy.stderr.decode().strip()}")

    def _remove_cgroups(self, problems: list[str]) -> None:
        for cgroup in self._cgroup_dirs():
            if not cgroup.is_dir():
                continue
            for directory, _subdirs, _files in os.walk(cgroup, topdown=False):
                try:
                    os.rmdir(directory)
                except OSError as error:
                    problems.append(f"cannot remove cgroup {directory}: {error.strerror}")


def _cgroup_pids(cgroups: Sequence[Path]) -> set[int]:
    pids: set[int] = set()
    for cgroup in cgroups:
        for directory, _subdirs, _files in os.walk(cgroup):
            text = _read_text(Path(directory) / "cgroup.procs") or ""
            pids.update(int(pid) for pid in text.split())
    return pids


def _mount(
    args: Sequence[str], *, program: str = "mount", check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run mount(8) or umount(8) with `MOUNT_ENV` (libmount's lock kept out of /run)."""
    return proc.run([program, *args], check=check, env=MOUNT_ENV)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError("the sandbox needs root (mounts, cgroups, systemd-nspawn)")
    for program in ("systemd-nspawn", "nsenter", "unshare", "setpriv", "mount", "umount"):
        proc.which(program)


def list_sandboxes() -> list[SandboxRecord]:
    """Every sandbox directory under `BASE`, with its state."""
    if not BASE.is_dir():
        return []
    records = []
    for directory in sorted(BASE.iterdir()):
        if directory.is_dir() and valid_name(directory.name):
            with contextlib.suppress(SandboxError):  # removed meanwhile
                records.append(Sandbox.attach(directory.name).record())
    return records


def reap_stale(*, include_detached: bool = False) -> list[str]:
    """Tear down sandboxes whose owner process is gone (and, with `include_detached`, those
    made by ``podunit sandbox up``). Sandboxes of live owners are never touched, nor are
    ownerless directories younger than a minute (another process may be creating them).
    Returns the names removed."""
    removed, problems = [], []
    with _reaper_lock():
        for record in list_sandboxes():
            try:
                sandbox = Sandbox.attach(record.name)
                if not sandbox._record:
                    if time.time() - record.directory.stat().st_mtime < 60:
                        continue
                elif not (record.stale or (include_detached and record.owner_pid is None)):
                    continue
                sandbox.down()
            except FileNotFoundError:
                continue  # removed meanwhile by its owner
            except SandboxError as error:
                if record.directory.exists():
                    problems.append(str(error))
                continue
            removed.append(record.name)
    if problems:
        raise SandboxError("; ".join(problems), hint=f"see {BASE} and findmnt")
    return removed


# ---------------------------------------------------------------------------
# CLI: scripts/sandbox up|exec|down|list (python -m tests.support.sandbox)


def cli_sandbox(args: argparse.Namespace) -> int:
    """``scripts/sandbox``: a long-lived sandbox for demos and debugging."""
    action: str = args.action
    _require_root()
    if action == "list":
        for record in list_sandboxes():
            if record.owner_pid is None:
                owner = "detached"
            else:
                owner = f"pid {record.owner_pid}" + ("" if record.owner_alive else " (gone)")
            state = "running" if record.running else "stopped"
            print(f"{record.name}\t{state}\t{owner}\tleader {record.leader or '-'}")
        return 0
    if action == "up":
        sandbox = Sandbox(name=args.name, binds=args.bind, detached=True,
                          private_network=args.private_network)  # fmt: skip
        sandbox.up()
        print(
            f"{sandbox.name}: {sandbox.boot_state} (root {sandbox.root}, leader {sandbox.leader})"
        )
        return 0
    if action == "down":
        if args.all:
            for name in reap_stale(include_detached=True):
                print(f"{name}: removed")
            return 0
        sandbox = Sandbox.attach(args.name)
        record = sandbox.record()
        if record.owner_pid is not None and record.owner_alive:
            raise SandboxError(
                f"sandbox {args.name} belongs to the running process {record.owner_pid}",
                hint="it is removed when that process ends",
            )
        sandbox.down()
        return 0
    # exec
    sandbox = Sandbox.attach(args.name)
    command: list[str] = args.command or ["bash", "-l"]
    env = {key: os.environ[key] for key in ("TERM",) if key in os.environ}
    env.update(sandbox.network_env)
    child = proc.spawn(sandbox.nsenter_argv(command), env=inside_env(env), stdin=None)
    try:
        return child.wait()
    except KeyboardInterrupt:
        return child.wait()


def build_parser() -> argparse.ArgumentParser:
    """``scripts/sandbox up|exec|down|list`` (was ``podunit sandbox``: the sandbox is test
    tooling, it needs the checkout and is not part of the installed package)."""
    p = argparse.ArgumentParser(
        prog="scripts/sandbox", description="a throwaway real-systemd sandbox (systemd-nspawn)"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="boot a sandbox that stays until `down`")
    up.add_argument("--bind", action="append", default=[], metavar="DIR", help="also bind DIR")
    up.add_argument(
        "--private-network", action="store_true", help="own network namespace (bridges allowed)"
    )
    ex = actions.add_parser("exec", help="run a command inside (default: a login shell)")
    down = actions.add_parser("down", help="power off and remove a sandbox")
    down.add_argument("-a", "--all", action="store_true", help="all ownerless and stale ones")
    actions.add_parser("list", help="list sandboxes")
    for action in (up, ex, down):
        action.add_argument("--name", default="podunit-sandbox")
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tests.support.sandbox``; errors are one line and exit 1."""
    args = build_parser().parse_args(argv)
    if args.action == "exec" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        return cli_sandbox(args)
    except PodunitError as error:
        print(f"sandbox: {error}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        return EXIT_PODUNIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""Fakes for the runtime's two seams, in the style of httpx's MockTransport.

`FakeRuntime` stands in for conmon + the OCI runtime (`toolkit.runtime.invoke.OciRuntime`):
a monitor `sh` plays conmon (it starts the payload, waits for it and writes its exit
status to the exit file, 128+N for signal N, then exits), the payload `sh` waits for
`start` before it execs the container's command. Real processes, so podunit's status
machinery (exit files, pidfds, /proc start times) runs unchanged; no root, no runc.

`FakeSystemd` stands in for the system manager (`toolkit.systemd.cgroups.SystemdManager`):
transient scopes are recorded, not made.

Install them with `invoke.use_runtime(FakeRuntime())` and `cgroups.use_manager(fake)`;
every call is logged in `calls` for assertions. System tests use the real things.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from toolkit.errors import CommandFailed, PodunitError
from toolkit.runtime.conmon import ConmonOptions
from toolkit.runtime.invoke import OciRuntime
from toolkit.storage.records import ContainerRecord
from toolkit.systemd.cgroups import CgroupError, SystemdManager

START_FILE = "fake-started"
SPAWN_TIMEOUT_SECONDS = 10.0


class _Container:
    def __init__(self, monitor: subprocess.Popen[bytes], pid: int, bundle: str) -> None:
        self.monitor = monitor
        self.pid = pid
        self.bundle = bundle
        self.paused = False


class FakeRuntime(OciRuntime):
    """conmon and an OCI runtime made of two shell processes per container.

    `fail_create`: raise this message after the processes were spawned (a half-made
    container, as when conmon reports a runtime error).
    """

    def __init__(self, *, fail_create: str | None = None) -> None:
        self.fail_create = fail_create
        self.containers: dict[str, _Container] = {}
        self.calls: list[tuple[str, ...]] = []

    # --- OciRuntime ---
    def create(
        self,
        options: ConmonOptions,
        *,
        environ: Mapping[str, str],
        stdin: int | None,
        stdout: int | None,
        stderr: int | None,
        preserved_fds: Sequence[int],
        extra_fds: Sequence[int],
        place: Callable[[int], None],
    ) -> tuple[int, int]:
        self.calls.append(("create", options.container_id))
        bundle = options.bundle_dir
        with open(os.path.join(bundle, "config.json"), encoding="utf-8") as file:
            args = json.load(file).get("process", {}).get("args") or ["sleep", "1000"]
        start = os.path.join(bundle, START_FILE)
        exit_file = os.path.join(options.exit_dir, options.container_id)
        payload = (
            f"while [ ! -e {shlex.quote(start)} ]; do sleep 0.01; done; exec {shlex.join(args)}"
        )
        monitor_script = (
            f"sh -c {shlex.quote(payload)} & echo $! > {shlex.quote(options.container_pidfile)}; "
            f"wait $!; code=$?; echo $code > {shlex.quote(exit_file)}.tmp; "
            f"mv {shlex.quote(exit_file)}.tmp {shlex.quote(exit_file)}"
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(options.container_pidfile)
        monitor = subprocess.Popen(
            ["sh", "-c", monitor_script],
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=stderr if stderr is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
        threading.Thread(target=monitor.wait, daemon=True).start()  # reaped as conmon's parent
        pid = _read_pid(options.container_pidfile, monitor)
        self.containers[options.container_id] = _Container(monitor, pid, bundle)
        place(monitor.pid)
        if self.fail_create is not None:
            raise PodunitError(self.fail_create)
        return pid, monitor.pid

    def start(self, record: ContainerRecord) -> None:
        self.calls.append(("start", record.id))
        container = self.containers.get(record.id)
        if container is None:
            raise CommandFailed(["fake", "start"], 1, f"container {record.id} does not exist")
        waiting = _cmdline(container.pid)
        with open(os.path.join(container.bundle, START_FILE), "w", encoding="utf-8"):
            pass
        deadline = time.monotonic() + SPAWN_TIMEOUT_SECONDS  # as runc: back once it exec'd
        while _cmdline(container.pid) == waiting and time.monotonic() < deadline:
            time.sleep(0.002)

    def kill(
        self, record: ContainerRecord, signum: int, *, all_processes: bool = False
    ) -> str | None:
        self.calls.append(("kill", record.id, str(signum), *(["--all"] if all_processes else [])))
        container = self.containers.get(record.id)
        if container is None:
            return "container does not exist"
        try:
            os.kill(container.pid, signum)
        except ProcessLookupError:
            return "container not running"
        if container.paused and signum == signal.SIGKILL:
            os.kill(container.pid, signal.SIGCONT)
        return None

    def state(self, record: ContainerRecord) -> dict[str, Any] | None:
        self.calls.append(("state", record.id))
        container = self.containers.get(record.id)
        if container is None:
            return None
        if _gone(container.pid):
            status = "stopped"
        elif container.paused:
            status = "paused"
        elif os.path.exists(os.path.join(container.bundle, START_FILE)):
            status = "running"
        else:
            status = "created"
        return {"ociVersion": "1.0.2", "id": record.id, "status": status, "pid": container.pid}

    def delete(self, record: ContainerRecord) -> None:
        self.calls.append(("delete", record.id))
        container = self.containers.pop(record.id, None)
        if container is None:
            return
        for pid in (container.pid, container.monitor.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        container.monitor.wait(timeout=SPAWN_TIMEOUT_SECONDS)

    def pause(self, record: ContainerRecord) -> None:
        self._set_paused(record, True)

    def resume(self, record: ContainerRecord) -> None:
        self._set_paused(record, False)

    # --- for the tests ---
    def alive(self) -> list[str]:
        """The containers whose payload or monitor process still runs."""
        return [
            cid
            for cid, container in self.containers.items()
            if not (_gone(container.pid) and container.monitor.poll() is not None)
        ]

    def close(self) -> None:
        """Kill whatever is left (the test's teardown)."""
        for container in self.containers.values():
            for pid in (container.pid, container.monitor.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                container.monitor.wait(timeout=SPAWN_TIMEOUT_SECONDS)
        self.containers.clear()

    def _set_paused(self, record: ContainerRecord, paused: bool) -> None:
        self.calls.append(("pause" if paused else "resume", record.id))
        container = self.containers.get(record.id)
        if container is None:
            if paused:
                raise CommandFailed(["fake", "pause"], 1, "container does not exist")
            return
        os.kill(container.pid, signal.SIGSTOP if paused else signal.SIGCONT)
        container.paused = paused


class FakeSystemd(SystemdManager):
    """The system manager's transient scopes as a dict: name -> (pids, properties)."""

    def __init__(self) -> None:
        self.scopes: dict[str, tuple[list[int], dict[bytes, Any]]] = {}
        self.calls: list[tuple[str, ...]] = []

    def __call__(self) -> FakeSystemd:  # the factory `cgroups.use_manager` takes
        return self

    def __enter__(self) -> FakeSystemd:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start_scope(self, name: str, properties: dict[bytes, Any], pid: int) -> None:
        self.calls.append(("start_scope", name, str(pid)))
        if name in self.scopes:
            self.scopes[name][0].append(pid)  # the real one adopts the pid
            return
        self.scopes[name] = ([pid], dict(properties))

    def stop_unit(self, name: str) -> None:
        self.calls.append(("stop_unit", name))
        self.scopes.pop(name, None)


class BrokenSystemd(FakeSystemd):
    """A manager that refuses every scope (as a D-Bus error would)."""

    def start_scope(self, name: str, properties: dict[bytes, Any], pid: int) -> None:
        self.calls.append(("start_scope", name, str(pid)))
        raise CgroupError(f"cannot create scope {name}: access denied")


@contextlib.contextmanager
def installed(runtime: FakeRuntime, systemd: FakeSystemd | None = None) -> Iterator[None]:
    """Both fakes installed for the block; the runtime's processes killed after it."""
    from toolkit.runtime import invoke
    from toolkit.systemd import cgroups

    try:
        with invoke.use_runtime(runtime), cgroups.use_manager(systemd or FakeSystemd()):
            yield
    finally:
        runtime.close()


def _read_pid(path: str, monitor: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + SPAWN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError), open(path, encoding="utf-8") as f:
            return int(f.read().strip())
        if monitor.poll() is not None:
            break
        time.sleep(0.005)
    raise PodunitError("fake runtime: the payload did not start")


def _gone(pid: int) -> bool:
    from toolkit.proc import same_process_alive

    return not same_process_alive(pid, None)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""

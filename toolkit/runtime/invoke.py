"""Runtime invocation: which OCI runtime binary, and the runtime as the verbs use it.

Spec §1.1 (`runtime`), runc(8)/crun(1): `RUNTIME [global options] state|kill|delete|
start|pause|resume ID`. The global options (`--root`, the cgroup manager) are stored with
the container (`runtime_args`). A signal to a plainly running container goes straight to
its process through a pidfd (`signal_running`): what runc and crun do, without starting
the runtime.

`OciRuntime` is the seam: create (conmon + `RUNTIME create`), start, kill, state, delete,
pause, resume for one container record. `ConmonRuntime` is the real one; tests install a
fake with `use_runtime` (tests/support/fakes.py), as httpx's tests hand a client a
MockTransport, and run the state machine without root.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from toolkit import proc
from toolkit.errors import CommandFailed, ExecutableNotFound
from toolkit.proc import same_process_alive
from toolkit.runtime import recovery
from toolkit.storage.records import RUNNING, ContainerRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import Any

    from toolkit.runtime.conmon import ConmonOptions


CAP_SYS_RESOURCE = 24  # capabilities(7)


def crun_can_work() -> bool:
    """crun (1.8) raises RLIMIT_MEMLOCK to infinity for its cgroup eBPF programs.

    That needs CAP_SYS_RESOURCE unless the hard limit is already infinite; without
    either (as in containers and sandboxes that drop the capability) every crun
    start fails with "setrlimit (RLIM_MEMLOCK): Operation not permitted".
    """
    import resource

    from toolkit.runtime import oci

    if resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] == resource.RLIM_INFINITY:
        return True
    return oci.CAPABILITY_NAMES[CAP_SYS_RESOURCE] in oci.held_capabilities()


def runtime_binary(name: str | None) -> str:
    """Absolute path of the OCI runtime: `name`, else crun if installed and usable, else runc.

    Spec §1.1 (`runtime`); crun is passed over where it cannot work (`crun_can_work`).
    """
    if name is None:
        candidates = ("crun", "runc") if crun_can_work() else ("runc", "crun")
        for candidate in candidates:
            with contextlib.suppress(ExecutableNotFound):
                return proc.which(candidate)
        raise ExecutableNotFound(
            "no OCI runtime found: neither crun nor runc is on PATH",
            hint="install the Debian package crun or runc",
        )
    try:
        return proc.which(name)
    except ExecutableNotFound:
        raise ExecutableNotFound(
            f"OCI runtime {name}: not found on PATH", hint=f"install the Debian package {name}"
        ) from None


def runtime_global_args(record: ContainerRecord) -> list[str]:
    return list(record.options.runtime_args)


def runtime_call(
    record: ContainerRecord, *args: str, check: bool = True, timeout: float = 30
) -> Any:
    """Run `RUNTIME [global args] ARGS...` for this container.

    Never with NOTIFY_SOCKET or LISTEN_*: `runc start` would run its own notify proxy.
    """
    from toolkit.systemd import activation

    return proc.run([record.runtime, *runtime_global_args(record), *args], check=check,
                    timeout=timeout, env=activation.environment_for_conmon(os.environ))  # fmt: skip


def runtime_state(record: ContainerRecord) -> dict[str, Any] | None:
    """The runtime's `state` of the container, None when the runtime does not know it."""
    result = runtime_call(record, "state", record.id, check=False)
    if result.returncode != 0:
        return None
    try:
        state: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return None
    return state


def runtime_delete(record: ContainerRecord) -> None:
    """`RUNTIME delete --force ID`, tolerating a container the runtime no longer knows."""
    runtime_call(record, "delete", "--force", record.id, check=False)


def signal_running(record: ContainerRecord, signum: int) -> bool:
    """`RUNTIME kill ID SIGNUM` for a running container, without starting the runtime.

    What runc and crun do for it: signal the container's init process. Sent through
    a pidfd opened before the recorded start time is checked, so a reused pid is
    never signalled. False (nothing sent) when the container is not plainly running
    or its process is not the recorded one: the caller asks the runtime then.
    """
    if record.status != RUNNING or record.pid is None:
        return False
    try:
        pidfd = os.pidfd_open(record.pid)
    except OSError:
        return False
    try:
        if not same_process_alive(record.pid, record.pid_start_time):
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


class OciRuntime:
    """The OCI runtime and its monitor, per container (see the module docstring)."""

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
        """Start the monitor, which creates the container (`RUNTIME create`, or `restore`
        with `options.restore_path`); `place(pid)` puts the monitor into its cgroup before
        the container is created. Returns (the container's pid, the monitor's pid)."""
        raise NotImplementedError

    def start(self, record: ContainerRecord) -> None:
        """`RUNTIME start`: the created container runs its command."""
        raise NotImplementedError

    def kill(
        self, record: ContainerRecord, signum: int, *, all_processes: bool = False
    ) -> str | None:
        """`RUNTIME kill [--all] ID SIGNUM`; None when sent, else the runtime's complaint."""
        raise NotImplementedError

    def state(self, record: ContainerRecord) -> dict[str, Any] | None:
        """The runtime's `state` of the container, None when the runtime does not know it."""
        raise NotImplementedError

    def delete(self, record: ContainerRecord) -> None:
        """`RUNTIME delete --force ID`, tolerating a container the runtime no longer knows."""
        raise NotImplementedError

    def pause(self, record: ContainerRecord) -> None:
        raise NotImplementedError

    def resume(self, record: ContainerRecord) -> None:
        raise NotImplementedError


class ConmonRuntime(OciRuntime):
    """conmon (toolkit.runtime.conmon) and the runtime binary the record names."""

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
        from toolkit.runtime import conmon
        from toolkit.systemd import activation

        monitor = conmon.launch(
            options,
            environ=activation.environment_for_conmon(environ),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            preserved_fds=preserved_fds,
            extra_fds=extra_fds,
        )
        try:
            place(monitor.launcher_pid)
            monitor.start()
            pid = monitor.container_pid()
            monitor.wait_launcher()
            return pid, monitor.monitor_pid()
        except BaseException:
            # also a stop signal (toolkit.runtime.recovery.Interrupted): conmon is killed
            # before the start byte, else its answer is awaited, so that the caller can
            # delete whatever it created
            with recovery.signals_held(), contextlib.suppress(Exception):
                monitor.settle(recovery.CREATE_SETTLE_SECONDS)
                monitor.wait_launcher(timeout=5)
            raise
        finally:
            monitor.close()

    def start(self, record: ContainerRecord) -> None:
        from toolkit.runtime import conmon

        try:
            runtime_call(record, "start", record.id)
        except CommandFailed as error:
            raise conmon.classify_runtime_error(
                error.stderr or str(error), record.runtime
            ) from None

    def kill(
        self, record: ContainerRecord, signum: int, *, all_processes: bool = False
    ) -> str | None:
        every = ["--all"] if all_processes else []
        result = runtime_call(record, "kill", *every, record.id, str(int(signum)), check=False)
        if result.returncode == 0:
            return None
        return str(result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}")

    def state(self, record: ContainerRecord) -> dict[str, Any] | None:
        return runtime_state(record)

    def delete(self, record: ContainerRecord) -> None:
        runtime_delete(record)

    def pause(self, record: ContainerRecord) -> None:
        runtime_call(record, "pause", record.id)

    def resume(self, record: ContainerRecord) -> None:
        runtime_call(record, "resume", record.id)


_runtime: OciRuntime = ConmonRuntime()


def oci_runtime() -> OciRuntime:
    """The runtime the verbs use: `ConmonRuntime` unless a test installed another."""
    return _runtime


@contextlib.contextmanager
def use_runtime(runtime: OciRuntime) -> Iterator[OciRuntime]:
    """Use `runtime` for the duration of the block (tests: a fake)."""
    global _runtime
    previous, _runtime = _runtime, runtime
    try:
        yield runtime
    finally:
        _runtime = previous

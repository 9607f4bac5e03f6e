"""Driving netavark (and through it aardvark-dns), and a container's network namespace.

netavark is run exactly as Podman runs it: the document on stdin,
`netavark --config DIR --rootless=false --aardvark-binary PATH setup|teardown NETNS`.
`DIR` (`RUN_DIR/networks`) holds aardvark-dns's state; netavark starts aardvark-dns in
a transient scope of its own (systemd-run), so it outlives the unit that started it
and serves every container of the network. The namespace is a bind mount of a new
network namespace on `RUN_DIR/netns/ID` (as Podman's /run/netns/netns-ID), made
before the runtime creates the container, which joins it by path.

`disconnect` undoes everything `toolkit.network.attach.connect` did, from what the
container's record kept: netavark teardown (veth, firewall and DNAT rules, the
aardvark entry; the bridge and aardvark-dns go with the network's last container),
the namespace, the address leases. It runs on every exit path (stop, `rm -f`, the
cleanup after conmon was killed) and imports neither `typing` nor the model.
"""

from __future__ import annotations

import contextlib
import json
import os

from toolkit import proc
from toolkit.errors import CommandFailed, PodunitError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

    from toolkit.storage.records import ContainerRecord
    from toolkit.storage.state import StateStore

# Debian's podman, netavark and aardvark-dns packages install them here (not on PATH).
LIBEXEC_DIRS = ("/usr/lib/podman", "/usr/libexec/podman", "/usr/local/libexec/podman")


def binary(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """The path of `netavark` or `aardvark-dns` (PODUNIT_NETAVARK / PODUNIT_AARDVARK_DNS
    override the search)."""
    override = environ.get("PODUNIT_" + name.upper().replace("-", "_"))
    if override:
        return override
    for directory in LIBEXEC_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    raise PodunitError(
        f"{name} is not installed (looked in {', '.join(LIBEXEC_DIRS)})",
        hint="install the Debian packages netavark and aardvark-dns, or use network: none",
    )


def config_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "networks")


def netns_path(run_dir: str, container_id: str) -> str:
    return os.path.join(run_dir, "netns", container_id)


def _netavark(action: str, run_dir: str, netns: str, document: Mapping[str, Any]) -> bytes:
    directory = config_dir(run_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    argv = [
        binary("netavark"), "--config", directory, "--rootless=false",
        "--aardvark-binary", binary("aardvark-dns"), action, netns,
    ]  # fmt: skip
    with _locked(directory):  # one netavark at a time, as Podman does (bridge, firewall)
        result = proc.run(argv, input=json.dumps(document).encode(), check=False)
    if result.returncode != 0:
        raise PodunitError(
            f"netavark {action} failed for container {document.get('container_name')}: "
            f"{_netavark_message(result.stdout, result.stderr)}",
            hint="`podunit network ls` shows the networks; netavark's state is in " + directory,
        )
    output: bytes = result.stdout
    return output


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    import fcntl

    fd = os.open(os.path.join(directory, "podunit.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _netavark_message(stdout: bytes, stderr: bytes) -> str:
    """netavark reports `{"error": "..."}` (on stdout), and logs on stderr."""
    for stream in (stdout, stderr):
        text = stream.decode(errors="replace").strip()
        if not text:
            continue
        try:
            data = json.loads(text.splitlines()[-1])
            return str(data.get("error", text))
        except (ValueError, AttributeError):
            return text.splitlines()[-1]
    return "no message"


def setup(run_dir: str, netns: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """`netavark setup`: the result, per network (interfaces, DNS servers and domains)."""
    output = _netavark("setup", run_dir, netns, document)
    try:
        result: dict[str, Any] = json.loads(output or b"{}")
    except ValueError:
        result = {}
    return result


class PendingSetup:
    """`netavark setup` running in the background (`start_setup`): the container's runtime
    create overlaps it; `finish` waits for it (before the payload starts) and raises as
    `setup` would. Holds the netavark lock until then."""

    def __init__(self, run_dir: str, netns: str, document: Mapping[str, Any]) -> None:
        import fcntl
        import subprocess

        directory = config_dir(run_dir)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.name = document.get("container_name")
        self.directory = directory
        self._lock = os.open(
            os.path.join(directory, "podunit.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        )
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            argv = [
                binary("netavark"), "--config", directory, "--rootless=false",
                "--aardvark-binary", binary("aardvark-dns"), "setup", netns,
            ]  # fmt: skip
            self._child: subprocess.Popen[bytes] | None = proc.spawn(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            self._input: bytes | None = json.dumps(document).encode()
        except BaseException:
            os.close(self._lock)
            raise

    def finish(self) -> None:
        """Wait for netavark; PodunitError naming its message if it failed. Idempotent."""
        child, self._child = self._child, None
        if child is None:
            return
        try:
            stdout, stderr = child.communicate(self._input)
        finally:
            os.close(self._lock)
        if child.returncode != 0:
            raise PodunitError(
                f"netavark setup failed for container {self.name}: "
                f"{_netavark_message(stdout, stderr)}",
                hint="`podunit network ls` shows the networks; netavark's state is in "
                + self.directory,
            )


def start_setup(run_dir: str, netns: str, document: Mapping[str, Any]) -> PendingSetup:
    return PendingSetup(run_dir, netns, document)


def teardown(run_dir: str, netns: str, document: Mapping[str, Any]) -> None:
    _netavark("teardown", run_dir, netns, document)


def create_netns(path: str) -> None:
    """A new network namespace, kept by a bind mount on `path` (util-linux unshare)."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "w"):
        pass
    try:
        proc.run(["unshare", f"--net={path}", "true"])
    except CommandFailed as error:
        remove_netns(path)
        raise PodunitError(
            f"cannot make a network namespace at {path}: {error.stderr.strip() or error}"
        ) from None


def remove_netns(path: str) -> None:
    """Unmount and remove the namespace's file (nothing if it is gone already)."""
    if not os.path.exists(path):
        return
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        mounted = any(line.split()[4] == path for line in mountinfo)
    if mounted:
        proc.run(["umount", "--lazy", path], check=False)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def disconnect(store: StateStore, record: ContainerRecord) -> None:
    """Tear down the container's networks and give back its addresses (idempotent).

    Every step runs even when an earlier one failed; the first failure is raised
    at the end, after the leases are released.
    """
    state = record.options.network
    if not state:
        return
    problem: PodunitError | None = None
    netns = state.get("netns")
    document = state.get("document")
    if netns and document and os.path.exists(netns):
        try:
            teardown(store.paths.run_dir, netns, document)
        except PodunitError as error:
            problem = error
    if netns:
        try:
            remove_netns(netns)
        except OSError as error:
            problem = problem or PodunitError(f"cannot remove {netns}: {error.strerror}")
    from toolkit.storage import networks

    networks.release(store, record.id)
    if problem is not None:
        raise problem

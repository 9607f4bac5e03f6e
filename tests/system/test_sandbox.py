"""The real-systemd sandbox itself (tests/support/sandbox.py, notes/real-systemd-in-tests.md)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.sandbox import (
    BASE,
    REPO_ROOT,
    VENV_PYTHON,
    Sandbox,
    cgroup_parents,
    list_sandboxes,
    reap_stale,
)
from toolkit.errors import CommandFailed, SandboxError

pytestmark = pytest.mark.system


def test_boots_to_running(sandbox: Sandbox) -> None:
    # the state at boot: other tests sharing the sandbox may have left failed units since
    assert sandbox.boot_state == "running"
    assert sandbox.failed_units == []
    assert sandbox.run(["systemctl", "show", "-P", "SystemState"]).stdout.strip() in (
        b"running",
        b"degraded",
    )


def test_systemd_run_propagates_exit_status(sandbox: Sandbox) -> None:
    result = sandbox.run(
        ["systemd-run", "--wait", "--collect", "--quiet", "sh", "-c", "exit 7"], check=False
    )
    assert result.returncode == 7
    ok = sandbox.run(["systemd-run", "--wait", "--collect", "--quiet", "--pipe", "echo", "inside"])
    assert ok.stdout == b"inside\n"


def test_failing_command_raises_command_failed_naming_it(sandbox: Sandbox) -> None:
    with pytest.raises(CommandFailed) as caught:
        sandbox.sh("echo broken >&2; exit 4")
    assert caught.value.returncode == 4
    assert caught.value.argv[0] == "sh"
    assert "broken" in caught.value.stderr


def test_pystemd_reads_a_unit_property_over_dbus(sandbox: Sandbox) -> None:
    script = (
        "from pystemd.systemd1 import Unit\n"
        "unit = Unit(b'systemd-journald.service'); unit.load()\n"
        "print(unit.Unit.ActiveState.decode())\n"
    )
    result = sandbox.run([str(VENV_PYTHON), "-c", script])
    assert result.stdout == b"active\n"


def test_write_then_read_a_file_inside(sandbox: Sandbox) -> None:
    path = "/etc/podunit-sandbox-test/nested/file.yaml"
    try:
        sandbox.write(path, "name: web\n", mode=0o600)
        assert sandbox.read(path) == b"name: web\n"
        mode = sandbox.run(["stat", "-c", "%a", path]).stdout.strip()
        assert mode == b"600"
        sandbox.write(path, b"\x00binary")
        assert sandbox.read(path) == b"\x00binary"
    finally:
        sandbox.run(["rm", "-rf", "/etc/podunit-sandbox-test"])


def test_root_is_shared_live_with_the_host(sandbox: Sandbox) -> None:
    directory = sandbox.root / "etc/podunit-sandbox-shared"
    try:
        directory.mkdir()
        (directory / "from-host").write_text("host\n")
        assert sandbox.read("/etc/podunit-sandbox-shared/from-host") == b"host\n"
        sandbox.write("/etc/podunit-sandbox-shared/from-inside", "inside\n")
        assert (directory / "from-inside").read_text() == "inside\n"
    finally:
        sandbox.run(["rm", "-rf", "/etc/podunit-sandbox-shared"])
    assert not Path("/etc/podunit-sandbox-shared").exists(), "the host's /etc is untouched"


def test_read_of_a_missing_file_is_file_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(FileNotFoundError):
        sandbox.read("/etc/podunit-sandbox-test/none")


def test_environment_is_clean_and_extendable(sandbox: Sandbox) -> None:
    env = sandbox.run(["env"], env={"EXTRA": "1"}).stdout.decode().splitlines()
    names = {line.split("=", 1)[0] for line in env}
    assert names == {
        "PATH",
        "LANG",
        "HOME",
        "SYSTEMD_PAGER",
        "SYSTEMD_COLORS",
        "EXTRA",
        "PODUNIT_DEFAULT_NETWORK",
    }  # no bridge in the shared network namespace


RUNC_BUNDLE = "/var/tmp/podunit-runc-smoke"
RUNC_BUNDLE_SCRIPT = r"""
set -e
bundle=/var/tmp/podunit-runc-smoke; rm -rf "$bundle"; mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
ln -s busybox "$bundle/rootfs/bin/sh"
cd "$bundle" && runc spec
sed -i -e 's/"terminal": true/"terminal": false/' \
    -e 's/"sh"$/"sh", "-c", "echo from-container; exit 5"/' config.json
"""


# crun (1.8.1) with cgroups first raises RLIMIT_MEMLOCK to infinity, which fails on these
# machines (hard limit 8 MiB, no CAP_SYS_RESOURCE in the bounding set; not a sandbox issue):
# its keyring handling is checked without cgroups.
@pytest.mark.parametrize("runtime", ["runc", "crun --cgroup-manager=disabled"])
def test_oci_runtime_runs_a_container_inside_a_service(sandbox: Sandbox, runtime: str) -> None:
    """The keyring system calls are allowed: runc and crun work inside a systemd service."""
    program, *options = runtime.split()
    sandbox.sh(RUNC_BUNDLE_SCRIPT)
    try:
        result = sandbox.run(
            [
                "systemd-run", "--wait", "--collect", "--pipe", "--quiet",
                f"--unit=podunit-smoke-{program}",
                "-p", f"WorkingDirectory={RUNC_BUNDLE}",
                program, *options, "run", f"smoke-{program}",
            ],
            check=False,
        )  # fmt: skip
        assert (result.returncode, result.stdout) == (5, b"from-container\n"), result.stderr
        unit = sandbox.run(["systemctl", "is-failed", f"podunit-smoke-{program}"], check=False)
        assert unit.stdout == b"inactive\n", "--collect leaves no failed unit behind"
    finally:
        sandbox.sh(f"{program} delete -f smoke-{program} 2>/dev/null; rm -rf {RUNC_BUNDLE}")


# --- sandboxes of their own: boot, teardown, leaks ---------------------------------


def unique_name() -> str:
    return f"pu-test-{secrets.token_hex(3)}"


def host_mounts() -> set[str]:
    """Mount points of the host's mount namespace."""
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def leftovers(name: str) -> list[str]:
    """Everything sandbox `name` could leave behind on the host."""
    found = []
    directory = BASE / name
    if directory.exists():
        found.append(f"directory {directory}")
    found += [f"mount {m}" for m in host_mounts() if m.startswith(str(directory))]
    found += [f"cgroup {c}" for c in cgroup_roots() if (c / f"podunit-sandbox.{name}").exists()]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if name.encode() in cmdline.read_bytes():
                found.append(f"process {cmdline.parent.name}: {cmdline.read_bytes()[:80]!r}")
    return found


def cgroup_roots() -> list[Path]:
    return cgroup_parents(
        Path("/proc/self/cgroup").read_text(), Path("/proc/self/mountinfo").read_text()
    )


def new_mounts_outside_sandboxes(before: set[str]) -> set[str]:
    return {m for m in host_mounts() - before if not m.startswith(str(BASE) + "/")}


def test_teardown_leaves_nothing_behind() -> None:
    name = unique_name()
    mounts_before = host_mounts()
    run_paths = [Path("/run/systemd/nspawn"), Path("/run/mount")]  # nspawn's and libmount's
    run_before = [p.exists() for p in run_paths]
    with Sandbox.booted(name=name) as sb:
        leader, nspawn_pid = sb.leader, sb.nspawn_pid
        assert sb.root.is_mount()
        assert leftovers(name), "the leftover check must see a running sandbox"
        # something started inside must not survive either
        sb.run(["systemd-run", "--unit", "podunit-sleeper", "sleep", "600"])
    assert leftovers(name) == []
    assert new_mounts_outside_sandboxes(mounts_before) == set()
    assert not Path(f"/proc/{leader}").exists()
    assert not Path(f"/proc/{nspawn_pid}").exists()
    assert [p.exists() for p in run_paths] == run_before  # the host's /run untouched


def enable_at_boot(root: Path, unit: str, command: str) -> None:
    """Place a oneshot unit wanted by multi-user.target into a sandbox root before boot."""
    system = root / "etc/systemd/system"
    (system / unit).write_text(
        f"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={command}\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    (system / "multi-user.target.wants").mkdir(exist_ok=True)
    (system / "multi-user.target.wants" / unit).symlink_to(f"../{unit}")


def test_setup_runs_before_boot_and_host_units_are_masked() -> None:
    def place_unit(root: Path) -> None:
        enable_at_boot(root, "podunit-probe.service", "/bin/true")

    with Sandbox.booted(setup=place_unit) as sb:
        assert sb.run(["systemctl", "is-active", "podunit-probe.service"]).stdout == b"active\n"
        masked = sb.run(["systemctl", "is-enabled", "getty@tty1.service"], check=False)
        assert masked.stdout == b"masked\n"
        assert sb.run(["hostname"]).stdout.decode().strip() == sb.name
    assert not (Path("/etc/systemd/system") / "podunit-probe.service").exists()


def test_a_degraded_boot_is_reported_with_the_failed_units(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def place_broken_unit(root: Path) -> None:
        enable_at_boot(root, "podunit-broken.service", "/bin/false")

    with Sandbox.booted(setup=place_broken_unit) as sb:
        assert sb.boot_state == "degraded"
        assert sb.failed_units == ["podunit-broken.service"]
    assert "failed units: podunit-broken.service" in capsys.readouterr().err


def test_two_sandboxes_at_once_do_not_collide() -> None:
    with Sandbox.booted() as first, Sandbox.booted() as second:
        assert first.name != second.name and first.leader != second.leader
        first.write("/etc/podunit-only-here", "1")
        with pytest.raises(FileNotFoundError):
            second.read("/etc/podunit-only-here")
        for sb in (first, second):
            assert sb.run(["systemctl", "is-system-running"]).stdout == b"running\n"
            cgroup = Path(f"/proc/{sb.leader}/cgroup").read_text()
            assert f"podunit-sandbox.{sb.name}/payload" in cgroup
        names = first.name, second.name
    assert [leftovers(n) for n in names] == [[], []]


def test_private_network_has_loopback_only_and_its_own_ports() -> None:
    with socket.socket() as host_listener, Sandbox.booted(private_network=True) as sb:
        host_listener.bind(("127.0.0.1", 0))
        host_listener.listen()
        port = host_listener.getsockname()[1]
        links = sb.run(["ip", "-o", "link"]).stdout.decode().splitlines()
        assert [line.split(":")[1].strip() for line in links] == ["lo"]
        same_port = (
            "import socket; s = socket.socket(); "
            f"s.bind(('127.0.0.1', {port})); s.listen(); "
            f"socket.create_connection(('127.0.0.1', {port})); print('own port')"
        )
        assert sb.run(["python3", "-c", same_port]).stdout == b"own port\n"


def test_a_sandbox_that_died_says_so_and_still_tears_down() -> None:
    with Sandbox.booted() as sb:
        assert sb.alive
        os.kill(sb.leader, signal.SIGKILL)
        with pytest.raises(SandboxError, match="no longer running"):
            for _ in range(100):  # nspawn notices within moments
                sb.run(["true"])
                time.sleep(0.05)
        assert not sb.alive
        name = sb.name
    assert leftovers(name) == []


def test_a_failing_setup_leaves_nothing_behind() -> None:
    name = unique_name()

    def broken(root: Path) -> None:
        raise RuntimeError("setup broke")

    with pytest.raises(RuntimeError, match="setup broke"), Sandbox.booted(name=name, setup=broken):
        pytest.fail("must not boot")
    assert leftovers(name) == []


def test_nspawn_failing_to_boot_is_a_sandbox_error_with_the_console() -> None:
    name = unique_name()

    def not_an_os(root: Path) -> None:
        for release in ("etc/os-release", "usr/lib/os-release"):
            (root / release).unlink()

    with pytest.raises(SandboxError) as caught, Sandbox.booted(name=name, setup=not_an_os):
        pytest.fail("must not boot")
    assert "exited during boot" in str(caught.value)
    assert caught.value.hint and "os-release" in caught.value.hint
    assert leftovers(name) == []


def test_bad_binds_and_names_are_refused_before_anything_is_made() -> None:
    name = unique_name()
    with pytest.raises(SandboxError, match="does not exist"):
        Sandbox(name=name, binds=["/nonexistent/podunit"]).up()
    assert leftovers(name) == []
    with pytest.raises(SandboxError, match="invalid sandbox name"):
        Sandbox(name="../etc")


def test_an_existing_name_is_refused_and_the_existing_sandbox_survives() -> None:
    with Sandbox.booted() as sb:
        with pytest.raises(SandboxError, match="already exists"):
            Sandbox(name=sb.name).up()
        with pytest.raises(SandboxError, match="already exists"), Sandbox.booted(name=sb.name):
            pytest.fail("must not boot")
        Sandbox(name=sb.name).down()  # not attached: does nothing
        assert sb.run(["systemctl", "is-system-running"]).stdout == b"running\n"
        assert sb.root.is_mount()


# --- interrupted and killed owners ---------------------------------------------------

INNER_TESTS = """
import os, time
from tests.support.sandbox import Sandbox

def test_raises_inside():
    with Sandbox.booted(name=os.environ["SANDBOX_NAME"] + "-a") as sb:
        sb.run(["true"])
        raise RuntimeError("the test failed")

def test_hangs_until_signalled():
    with Sandbox.booted(name=os.environ["SANDBOX_NAME"] + "-b") as sb:
        print("BOOTED", sb.name, flush=True)
        time.sleep(120)

def test_session_fixture_until_signalled(sandbox):
    print("BOOTED", sandbox.name, flush=True)
    time.sleep(120)

def test_kills_the_shared_sandbox(sandbox):
    print("BOOTED", sandbox.name, flush=True)
    os.kill(sandbox.leader, 9)
    time.sleep(1)
"""

OWNER_SCRIPT = """
import os, time
from tests.support.sandbox import Sandbox
sandbox = Sandbox(name=os.environ["SANDBOX_NAME"])
sandbox.up()
print("BOOTED", flush=True)
time.sleep(120)
"""


def start(argv: list[str], name: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SANDBOX_NAME": name, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_boot(process: subprocess.Popen[str]) -> str:
    """The name of the sandbox the process reports as booted."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("BOOTED"):
            return line.split()[-1]
    pytest.fail("the inner process ended before booting: " + "".join(lines[-20:]))


def inner_pytest(tmp_path: Path, test: str) -> list[str]:
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    (tmp_path / "conftest.py").write_text(
        Path(__file__).parent.parent.joinpath("conftest.py").read_text()
    )
    return [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-k", test]


def test_a_test_failing_inside_booted_leaks_nothing(tmp_path: Path) -> None:
    name = unique_name()
    inner = start(inner_pytest(tmp_path, "test_raises_inside"), name, tmp_path)
    output, _ = inner.communicate(timeout=60)
    assert inner.returncode == 1, output
    assert "the test failed" in output
    assert leftovers(name + "-a") == []


def test_a_test_killing_the_shared_sandbox_is_named_and_nothing_leaks(tmp_path: Path) -> None:
    inner = start(inner_pytest(tmp_path, "test_kills_the_shared_sandbox"), "unused", tmp_path)
    name = wait_for_boot(inner)
    output, _ = inner.communicate(timeout=60)
    assert inner.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert f"the shared sandbox {name} died during this test" in output
    assert "ERROR test_inner.py::test_kills_the_shared_sandbox" in output
    assert leftovers(name) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("test", ["test_hangs_until_signalled", "test_session_fixture"])
def test_an_interrupted_test_run_leaks_nothing(tmp_path: Path, signum: int, test: str) -> None:
    inner = start(inner_pytest(tmp_path, test), unique_name(), tmp_path)
    try:
        name = wait_for_boot(inner)
        assert (BASE / name / "root").is_mount()
        inner.send_signal(signum)
        output, _ = inner.communicate(timeout=30)
    finally:
        inner.kill()
    assert inner.returncode == pytest.ExitCode.INTERRUPTED, output
    assert leftovers(name) == []


def test_reaper_removes_sandboxes_of_killed_owners_only(tmp_path: Path) -> None:
    killed, living = unique_name(), unique_name()
    owners = [start([sys.executable, "-c", OWNER_SCRIPT], n, tmp_path) for n in (killed, living)]
    try:
        for owner in owners:
            wait_for_boot(owner)
        owners[0].kill()
        owners[0].wait()
        records = {r.name: r for r in list_sandboxes()}
        assert records[killed].stale
        assert not records[living].stale and records[living].owner_alive
        # nspawn got SIGTERM when its owner died: the sandbox halts by itself
        deadline = time.monotonic() + 15
        while Sandbox.attach(killed).record().running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Sandbox.attach(killed).record().running
        assert (BASE / killed / "root").is_mount(), "the mounts wait for the reaper"
        removed = reap_stale()
        assert living not in removed
        assert killed in removed or not (BASE / killed).exists()  # or another run's reaper
        assert leftovers(killed) == []
        assert (BASE / living / "root").is_mount()
    finally:
        for owner in owners:
            owner.kill()
            owner.wait()
        reap_stale()
    assert leftovers(living) == []


# --- scripts/sandbox up|exec|list|down ----------------------------------------------


def podunit(*args: str) -> subprocess.CompletedProcess[str]:
    """`scripts/sandbox ARGS` (python -m tests.support.sandbox)."""
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "sandbox"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_cli_up_exec_list_down(tmp_path: Path) -> None:
    name = unique_name()
    (tmp_path / "shared").write_text("bound\n")
    try:
        up = podunit("up", "--name", name, "--bind", str(tmp_path))
        assert up.returncode == 0, up.stderr
        assert up.stdout.startswith(f"{name}: running")
        bound = podunit("exec", "--name", name, "--", "cat", str(tmp_path / "shared"))
        assert bound.stdout == "bound\n"
        state = podunit("exec", "--name", name, "--", "systemctl", "is-system-running")
        assert (state.returncode, state.stdout) == (0, "running\n")
        assert podunit("exec", "--name", name, "--", "sh", "-c", "exit 3").returncode == 3
        listed = podunit("list").stdout.splitlines()
        assert any(line.split("\t")[:3] == [name, "running", "detached"] for line in listed)
        # a detached sandbox is not stale: the fixture's reaper leaves it alone
        assert name not in reap_stale()
        down = podunit("down", "--name", name)
        assert down.returncode == 0, down.stderr
        assert leftovers(name) == []
    finally:
        podunit("down", "--name", name)


def test_cli_errors_are_one_line_without_traceback() -> None:
    missing = podunit("down", "--name", "pu-test-never-made")
    assert missing.returncode == 125
    assert missing.stderr.startswith("sandbox: no sandbox named pu-test-never-made")
    assert "Traceback" not in missing.stderr
    exec_missing = podunit("exec", "--name", "pu-test-never-made", "--", "true")
    assert exec_missing.returncode == 125 and "Traceback" not in exec_missing.stderr
    invalid = podunit("up", "--name", "../x")
    assert invalid.returncode == 125
    assert "invalid sandbox name" in invalid.stderr and "Traceback" not in invalid.stderr


def test_cli_refuses_to_remove_a_sandbox_of_a_live_owner(sandbox: Sandbox) -> None:
    refused = podunit("down", "--name", sandbox.name)
    assert refused.returncode == 125
    assert "belongs to the running process" in refused.stderr
    assert sandbox.root.is_mount()
    assert sandbox.run(["systemctl", "is-active", "dbus.service"]).stdout == b"active\n"
    # (`down --all` is not run here: it would remove other people's detached sandboxes)

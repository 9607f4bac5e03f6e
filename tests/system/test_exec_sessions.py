"""`podunit exec` end to end in the sandbox: conmon exec mode, attach, sessions.

The container is started with `runc run -d` and recorded in an isolated state
directory, so these tests depend only on the state store and conmon, not on the
`podunit run` path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import VENV_PYTHON, Sandbox

pytestmark = pytest.mark.system

PODUNIT = str(VENV_PYTHON.parent / "podunit")
BASE = "/var/tmp/podunit-exec-test"
ENV = {"PODUNIT_STATE_DIR": f"{BASE}/state", "PODUNIT_RUN_DIR": "/run/podunit-exec-test"}
ROOTFS = f"{BASE}/rootfs"

STOP_ALL = """
import sys
from toolkit.runtime.exec import stop_all_sessions
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.state import StateStore
with StateStore(RuntimePaths.for_mode(False)) as store:
    stop_all_sessions(store, store.get(sys.argv[1]))
"""


@dataclass(frozen=True)
class ExecTarget:
    name: str
    id: str


def podunit(sandbox: Sandbox, *args: str, input: bytes | None = None):  # type: ignore[no-untyped-def]
    return sandbox.run([PODUNIT, *args], check=False, env=ENV, input=input, timeout=60)


def python_inside(sandbox: Sandbox, script: str, *args: str) -> str:
    path = f"{BASE}/script-{secrets.token_hex(4)}.py"
    sandbox.write(path, script)
    try:
        result = sandbox.run([str(VENV_PYTHON), path, *args], env=ENV)
    finally:
        sandbox.run(["rm", "-f", path])
    return result.stdout.decode().strip()


def start_container(sandbox: Sandbox, name: str) -> ExecTarget:
    """A busybox container started the real way: `podunit run -d` (conmon, runc)."""
    started = podunit(
        sandbox,
        "run",
        "-d",
        "--runtime",
        "runc",
        "--rootfs",
        ROOTFS,
        "--name",
        name,
        "--",
        "sleep",
        "3600",
    )
    assert started.returncode == 0, started.stderr
    return ExecTarget(name, started.stdout.decode().strip())


def remove_container(sandbox: Sandbox, container: ExecTarget) -> None:
    podunit(sandbox, "rm", "-f", "-t", "0", container.name)


@pytest.fixture(scope="module")
def web(sandbox: Sandbox) -> Iterator[ExecTarget]:
    busybox_rootfs(sandbox, ROOTFS)
    sandbox.write(f"{ROOTFS}/not-executable", "#!/bin/sh\necho never\n", mode=0o644)
    container = start_container(sandbox, "exec-web")
    yield container
    remove_container(sandbox, container)
    sandbox.run(["rm", "-rf", BASE, ENV["PODUNIT_RUN_DIR"]], check=False)


def sessions(sandbox: Sandbox, container: ExecTarget) -> list[dict[str, object]]:
    result = podunit(sandbox, "exec", "--list", container.name)
    assert result.returncode == 0, result.stderr
    listed: list[dict[str, object]] = json.loads(result.stdout)
    return listed


def leftovers(sandbox: Sandbox, container: ExecTarget) -> list[str]:
    """Files of the container's exec sessions: its bundle's exec/ and conmon's attach symlinks."""
    script = (
        f"find {ENV['PODUNIT_RUN_DIR']}/containers/{container.id}/exec -mindepth 1 2>/dev/null;"
        f"find {ENV['PODUNIT_RUN_DIR']}/sockets -mindepth 1 -lname '*/{container.id}/exec/*' "
        "2>/dev/null; true"
    )
    return sandbox.sh(script).stdout.decode().split()


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_status_and_separate_streams(sandbox: Sandbox, web: ExecTarget, code: int) -> None:
    result = podunit(
        sandbox, "exec", web.name, "--", "sh", "-c", f"echo out; echo err >&2; exit {code}"
    )
    assert result.returncode == code
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"


@pytest.mark.parametrize(
    ("command", "status", "needle"),
    [
        ("no-such-command", 127, "executable file not found"),
        ("/not-executable", 126, "permission denied"),
    ],
)
def test_cannot_invoke_and_not_found_leave_no_session(
    sandbox: Sandbox, web: ExecTarget, command: str, status: int, needle: str
) -> None:
    before = len(sessions(sandbox, web))
    result = podunit(sandbox, "exec", web.name, "--", command)
    assert result.returncode == status
    stderr = result.stderr.decode()
    assert needle in stderr
    assert "Traceback" not in stderr
    assert len(sessions(sandbox, web)) == before
    assert leftovers(sandbox, web) == []


def test_interactive_stdin_is_exact(sandbox: Sandbox, web: ExecTarget) -> None:
    data = os.urandom(1_500_000)
    result = podunit(sandbox, "exec", "-i", web.name, "--", "md5sum", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
    echoed = podunit(sandbox, "exec", "-i", web.name, "--", "cat", input=data)
    assert echoed.stdout == data


def test_without_interactive_stdin_is_empty(sandbox: Sandbox, web: ExecTarget) -> None:
    result = podunit(sandbox, "exec", web.name, "--", "wc", "-c", input=b"ignored")
    assert result.stdout.split()[0] == b"0"


def test_user_workdir_and_environment(sandbox: Sandbox, web: ExecTarget) -> None:
    result = podunit(
        sandbox,
        "exec",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "-e",
        "GREETING=hi there",
        web.name,
        "--",
        "sh",
        "-c",
        'echo "$(id -u) $(pwd) $GREETING"',
    )
    assert result.stdout == b"65534 /tmp hi there\n", result.stderr


def test_three_execs_leave_nothing_behind(sandbox: Sandbox, web: ExecTarget) -> None:
    before = len(sessions(sandbox, web))
    for _ in range(3):
        assert podunit(sandbox, "exec", web.name, "--", "true").returncode == 0
    assert len(sessions(sandbox, web)) == before
    assert leftovers(sandbox, web) == []


def test_tty_is_a_pseudo_terminal(sandbox: Sandbox, web: ExecTarget) -> None:
    inner = f"{PODUNIT} exec -t {web.name} -- tty"
    result = sandbox.run(["script", "-qec", inner, "/dev/null"], env=ENV, check=False)
    assert result.returncode == 0, result.stderr
    assert re.search(rb"/dev/pts/\d+", result.stdout), result.stdout
    status = sandbox.run(
        ["script", "-qec", f"{PODUNIT} exec -t {web.name} -- sh -c 'exit 3'", "/dev/null"],
        env=ENV,
        check=False,
    )
    assert status.returncode == 3


# Runs inside: `podunit exec -t` on a pseudo-terminal of 33x101 that becomes 20x70 (SIGWINCH).
RESIZE = """
import fcntl, os, pty, signal, struct, subprocess, sys, termios, time
master, slave = pty.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
child = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave,
                         start_new_session=True)
time.sleep(1.0)
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 70, 0, 0))
os.kill(child.pid, signal.SIGWINCH)
os.close(slave)
out = b""
while True:
    try:
        chunk = os.read(master, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
sys.stdout.buffer.write(out)
sys.exit(child.wait())
"""


def test_tty_size_and_resize(sandbox: Sandbox, web: ExecTarget) -> None:
    script = f"{BASE}/resize.py"
    sandbox.write(script, RESIZE)
    result = sandbox.run(
        [
            str(VENV_PYTHON),
            script,
            PODUNIT,
            "exec",
            "-t",
            web.name,
            "--",
            "sh",
            "-c",
            "stty size; sleep 2; stty size; exit 6",
        ],
        env=ENV,
        check=False,
    )
    assert result.returncode == 6, result.stderr
    assert result.stdout == b"33 101\r\n20 70\r\n"


def test_detached_session_runs_then_stops(sandbox: Sandbox, web: ExecTarget) -> None:
    started = podunit(sandbox, "exec", "-d", web.name, "--", "sleep", "1000")
    assert started.returncode == 0, started.stderr
    session_id = started.stdout.decode().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", session_id)
    listed = {s["ID"]: s for s in sessions(sandbox, web)}
    assert listed[session_id]["State"] == "running"
    pid = listed[session_id]["Pid"]
    assert sandbox.run(["kill", "-0", str(pid)], check=False).returncode == 0

    stopped = podunit(sandbox, "exec", "--stop", session_id[:12], web.name)
    assert stopped.returncode == 0, stopped.stderr
    after = {s["ID"]: s for s in sessions(sandbox, web)}[session_id]
    assert after["State"] == "stopped"
    assert after["ExitCode"] == 128 + 15  # SIGTERM
    assert sandbox.run(["kill", "-0", str(pid)], check=False).returncode != 0

    again = podunit(sandbox, "exec", "--stop", session_id, web.name)
    assert again.returncode == 125
    assert b"only running sessions can be stopped" in again.stderr
    assert podunit(sandbox, "exec", "--rm", session_id, web.name).returncode == 0
    assert session_id not in {s["ID"] for s in sessions(sandbox, web)}


def test_remove_running_session_needs_force(sandbox: Sandbox, web: ExecTarget) -> None:
    started = podunit(sandbox, "exec", "-d", web.name, "--", "sh", "-c", "trap '' TERM; sleep 1000")
    session_id = started.stdout.decode().strip()
    refused = podunit(sandbox, "exec", "--rm", session_id, web.name)
    assert refused.returncode == 125
    assert b"still running" in refused.stderr
    forced = podunit(sandbox, "exec", "--rm", session_id, "-f", "--time", "0.5", web.name)
    assert forced.returncode == 0, forced.stderr
    assert session_id not in {s["ID"] for s in sessions(sandbox, web)}
    assert leftovers(sandbox, web) == []


def test_unknown_session_is_a_clear_error(sandbox: Sandbox, web: ExecTarget) -> None:
    result = podunit(sandbox, "exec", "--stop", "0123456789ab", web.name)
    assert result.returncode == 125
    assert b"has no exec session 0123456789ab" in result.stderr


def test_stop_all_sessions_ends_them(sandbox: Sandbox, web: ExecTarget) -> None:
    ids = [
        podunit(sandbox, "exec", "-d", web.name, "--", "sleep", "1000").stdout.decode().strip()
        for _ in range(2)
    ]
    pids = [s["Pid"] for s in sessions(sandbox, web) if s["ID"] in ids]
    assert len(pids) == 2
    python_inside(sandbox, STOP_ALL, web.name)
    assert sessions(sandbox, web) == []
    for pid in pids:
        assert sandbox.run(["kill", "-0", str(pid)], check=False).returncode != 0
    assert leftovers(sandbox, web) == []


def test_exec_in_a_stopped_container_is_refused(sandbox: Sandbox, web: ExecTarget) -> None:
    stopped = start_container(sandbox, "exec-stopped")
    try:
        assert podunit(sandbox, "stop", "-t", "0", stopped.name).returncode == 0
        result = podunit(sandbox, "exec", stopped.name, "--", "true")
        assert result.returncode == 125
        assert b"is not running" in result.stderr
        assert b"Traceback" not in result.stderr
    finally:
        remove_container(sandbox, stopped)


def test_exec_in_a_missing_container(sandbox: Sandbox, web: ExecTarget) -> None:
    result = podunit(sandbox, "exec", "no-such-container", "--", "true")
    assert result.returncode == 125
    assert b"no such container: no-such-container" in result.stderr


def test_exec_without_command(sandbox: Sandbox, web: ExecTarget) -> None:
    result = podunit(sandbox, "exec", web.name)
    assert result.returncode == 125
    assert b"exec needs a command" in result.stderr


def test_exec_in_a_container_that_podunit_run_started(sandbox: Sandbox, web: ExecTarget) -> None:
    """The real run path: conmon-monitored, with podunit's runtime arguments (--root ...)."""
    name = start_container(sandbox, f"exec-run-{secrets.token_hex(3)}").name
    try:
        assert podunit(sandbox, "exec", name, "--", "sh", "-c", "exit 5").returncode == 5
        assert podunit(sandbox, "pause", name).returncode == 0
        paused = podunit(sandbox, "exec", name, "--", "true")
        assert paused.returncode == 125
        assert b"is paused" in paused.stderr
        assert podunit(sandbox, "unpause", name).returncode == 0
        detached = podunit(sandbox, "exec", "-d", name, "--", "sleep", "1000")
        session_pid = {s["ID"]: s["Pid"] for s in sessions(sandbox, ExecTarget(name, ""))}[
            detached.stdout.decode().strip()
        ]
        removed = podunit(sandbox, "rm", "-f", "-t", "0", name)
        assert removed.returncode == 0, removed.stderr
        assert sandbox.run(["kill", "-0", str(session_pid)], check=False).returncode != 0
        gone = podunit(sandbox, "exec", name, "--", "true")
        assert gone.returncode == 125
        assert b"no such container" in gone.stderr
    finally:
        podunit(sandbox, "rm", "-f", "-t", "0", name)


def test_signals_to_an_attached_exec_reach_its_process(sandbox: Sandbox, web: ExecTarget) -> None:
    inner = "trap 'echo got-term; exit 9' TERM; echo ready; sleep 100 & wait"
    script = (
        f'{PODUNIT} exec {web.name} -- sh -c "{inner}" & pid=$!; '
        "sleep 1.5; kill -TERM $pid; wait $pid; echo status=$?"
    )
    result = sandbox.run(["sh", "-c", script], env=ENV, timeout=30)
    assert result.stdout == b"ready\ngot-term\nstatus=9\n", result.stderr
    assert leftovers(sandbox, web) == []


def test_session_of_a_killed_podunit_exec_is_reaped(sandbox: Sandbox, web: ExecTarget) -> None:
    before = {s["ID"] for s in sessions(sandbox, web)}
    sandbox.sh(
        f"{PODUNIT} exec {web.name} -- sleep 2 >/dev/null & pid=$!; sleep 1; kill -KILL $pid",
        env=ENV,
    )
    running = [s for s in sessions(sandbox, web) if s["ID"] not in before]
    assert [s["State"] for s in running] == ["running"]  # the command goes on meanwhile
    sandbox.run(["sleep", "2"])
    assert {s["ID"] for s in sessions(sandbox, web)} == before
    assert leftovers(sandbox, web) == []


def test_closed_output_ends_the_command_like_a_broken_pipe(
    sandbox: Sandbox, web: ExecTarget
) -> None:
    script = f"{PODUNIT} exec {web.name} -- yes | head -n 1; echo status=${{PIPESTATUS[0]}}"
    result = sandbox.run(["bash", "-c", script], env=ENV, timeout=30)
    assert result.stdout == b"y\nstatus=141\n", result.stderr  # 128 + SIGPIPE
    assert b"Traceback" not in result.stderr
    assert all(s["State"] != "running" for s in sessions(sandbox, web))
    assert leftovers(sandbox, web) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-u", "nosuchuser"], b"user 'nosuchuser' not found in the container's /etc/passwd"),
        (["-w", "relative/dir"], b"the working directory must be absolute"),
        (["-e", "=value"], b"invalid -e '=value'"),
    ],
)
def test_bad_exec_options(
    sandbox: Sandbox, web: ExecTarget, options: list[str], message: bytes
) -> None:
    result = podunit(sandbox, "exec", *options, web.name, "--", "true")
    assert result.returncode == 125
    assert message in result.stderr
    assert leftovers(sandbox, web) == []


def test_twenty_parallel_execs_keep_their_own_exit_codes(sandbox: Sandbox, web: ExecTarget) -> None:
    """Concurrent sessions share the state database without errors (issue 4)."""
    before = len(sessions(sandbox, web))
    env = " ".join(f"{key}={value}" for key, value in ENV.items())
    script = " ".join(
        f"( env {env} {PODUNIT} exec {web.name} -- sh -c 'exit {code}' 2>>{BASE}/parallel.err;"
        f" echo {code}:$? ) &"
        for code in range(20)
    )
    result = sandbox.sh(f": > {BASE}/parallel.err; {script} wait", timeout=120)
    statuses = sorted(result.stdout.decode().split(), key=lambda pair: int(pair.split(":")[0]))
    assert statuses == [f"{code}:{code}" for code in range(20)]
    assert sandbox.read(f"{BASE}/parallel.err") == b""
    assert len(sessions(sandbox, web)) == before
    assert leftovers(sandbox, web) == []


def test_a_real_exec_imports_only_what_it_needs(sandbox: Sandbox, web: ExecTarget) -> None:
    """What one `podunit exec NAME CMD` process loads (issue 6: imports dominate its time)."""
    result = sandbox.run(
        [PODUNIT, "exec", web.name, "--", "true"],
        env={**ENV, "PYTHONPROFILEIMPORTTIME": "1"}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    # (cli's import_module of the verb's module is not listed)
    assert "toolkit.storage.state" in loaded
    heavy = {
        "toolkit.runtime.status", "toolkit.runtime.lifecycle", "toolkit.runtime.oci",
        "toolkit.definitions.model", "typing", "secrets", "tty",
    }  # fmt: skip
    assert sorted(loaded & heavy) == []
    assert leftovers(sandbox, web) == []


def test_stop_escalates_to_sigkill_after_the_timeout(sandbox: Sandbox, web: ExecTarget) -> None:
    started = podunit(sandbox, "exec", "-d", web.name, "--", "sh", "-c", "trap '' TERM; sleep 1000")
    session_id = started.stdout.decode().strip()
    stopped = podunit(sandbox, "exec", "--stop", session_id, "--time", "0.5", web.name)
    assert stopped.returncode == 0, stopped.stderr
    after = {s["ID"]: s for s in sessions(sandbox, web)}[session_id]
    assert (after["State"], after["ExitCode"]) == ("stopped", 128 + 9)
    assert podunit(sandbox, "exec", "--rm", session_id, web.name).returncode == 0
    assert leftovers(sandbox, web) == []

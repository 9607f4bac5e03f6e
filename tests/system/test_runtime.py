"""The core runtime against real conmon + runc inside the sandbox (spec §3.1, §4).

podunit runs as a transient service (`systemd-run --wait --pipe`, Delegate=yes),
as it would from a unit or a login shell; state is isolated in this module's own
PODUNIT_STATE_DIR / PODUNIT_RUN_DIR. Detached containers use `--cgroups enabled`
so that conmon lives in its own scope and outlives the transient service.
runc is used throughout: on the test machines crun cannot create cgroups (its
eBPF device filter fails, then raising RLIMIT_MEMLOCK needs CAP_SYS_RESOURCE,
which is absent: "setrlimit (RLIM_MEMLOCK): Operation not permitted"); crun gets
its own tests with `--cgroups disabled`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs, hosttools_rootfs
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

BASE = "/var/tmp/podunit-test-runtime"
ROOTFS = f"{BASE}/busybox"
STATE_DIR = "/var/lib/podunit-test-runtime"
RUN_DIR = "/run/podunit-test-runtime"
ENV = {"PODUNIT_STATE_DIR": STATE_DIR, "PODUNIT_RUN_DIR": RUN_DIR}
DEFINITIONS = f"{BASE}/definitions"


class Podunit:
    """Runs podunit inside the sandbox with this module's isolated state."""

    def __init__(self, sandbox: Sandbox, repo_root: Path) -> None:
        self.sandbox = sandbox
        self.binary = f"{repo_root}/.venv/bin/podunit"

    def service_argv(self, args: Sequence[str], *, properties: Sequence[str] = ()) -> list[str]:
        argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", "-p", "Delegate=yes"]
        for key, value in ENV.items():
            argv += ["--setenv", f"{key}={value}"]
        for prop in properties:
            argv += ["-p", prop]
        return [*argv, self.binary, *args]

    def run(
        self, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """`podunit ARGS` as a transient service (stdio piped through)."""
        return self.sandbox.run(
            self.service_argv(args), check=False, input=input, timeout=timeout, env=ENV
        )

    def run_definition(self, name: str) -> subprocess.CompletedProcess[bytes]:
        """`podunit run NAME` of a definition in DEFINITIONS, as a transient service."""
        argv = self.service_argv(["run", name])
        argv[1:1] = ["--setenv", f"PODUNIT_DEFINITION_DIRS={DEFINITIONS}"]
        return self.sandbox.run(argv, check=False, env=ENV)

    def direct(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """`podunit ARGS` directly (for verbs that need no cgroup of their own)."""
        return self.sandbox.run([self.binary, *args], check=False, timeout=timeout, env=ENV)

    def detached(self, name: str, *command: str, extra: Sequence[str] = ()) -> str:
        result = self.run(
            "run", "-d", "--name", name, "--runtime", "runc", "--cgroups", "enabled",
            *extra, "--rootfs", ROOTFS, "--", *command,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode().strip()

    def attached(self, *command: str, extra: Sequence[str] = (), input: bytes | None = None
                 ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        return self.run(
            "run", "--runtime", "runc", *extra, "--rootfs", ROOTFS, "--", *command, input=input
        )

    def inspect(self, name: str) -> dict[str, object]:
        result = self.direct("inspect", name)
        assert result.returncode == 0, result.stderr.decode()
        data: dict[str, object] = json.loads(result.stdout)[0]
        return data

    def state(self, name: str) -> dict[str, object]:
        state = self.inspect(name)["State"]
        assert isinstance(state, dict)
        return state


@pytest.fixture(scope="module")
def pu(sandbox: Sandbox, repo_root: Path) -> Iterator[Podunit]:
    busybox_rootfs(sandbox, ROOTFS)
    podunit = Podunit(sandbox, repo_root)
    yield podunit
    podunit.direct("rm", "-f", "-t", "0", *_all_names(podunit))
    sandbox.sh(f"rm -rf {STATE_DIR} {RUN_DIR} {BASE}", check=False)


def _all_names(podunit: Podunit) -> list[str]:
    result = podunit.direct("ps", "-a", "--format", "json")
    if result.returncode != 0:
        return []
    return [entry["Name"] for entry in json.loads(result.stdout)]


def stderr_of(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode(errors="replace")


# --- attached runs: exit codes, output, stdin, fds --------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42])
def test_run_exits_with_the_container_status(pu: Podunit, code: int) -> None:
    result = pu.attached("sh", "-c", f"echo out; echo err >&2; exit {code}")
    assert result.returncode == code, stderr_of(result)
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr


def test_missing_command_is_127_and_not_executable_is_126(pu: Podunit) -> None:
    missing = pu.attached("no-such-command")
    assert missing.returncode == 127, stderr_of(missing)
    assert "no-such-command" in stderr_of(missing)
    assert "executable file not found" in stderr_of(missing)
    not_executable = pu.attached("/etc/passwd")
    assert not_executable.returncode == 126, stderr_of(not_executable)
    assert "permission denied" in stderr_of(not_executable).lower()
    assert "Traceback" not in stderr_of(missing) + stderr_of(not_executable)
    # nothing of the failed creations is left behind
    listed = json.loads(pu.direct("ps", "-a", "--format", "json").stdout)
    assert not [c for c in listed if "no-such-command" in c["Command"]]
    leftovers = pu.sandbox.sh(f"ls {RUN_DIR}/containers").stdout.split()
    running = {c["Id"].encode() for c in listed if c["State"]["Status"] != "exited"}
    assert set(leftovers) <= running


def test_one_megabyte_of_binary_output_is_byte_exact(pu: Podunit) -> None:
    data = os.urandom(1 << 20)
    pu.sandbox.write(f"{BASE}/data/blob.bin", data)
    result = pu.attached("cat", "/data/blob.bin", extra=["-v", f"{BASE}/data:/data:ro"])
    assert result.returncode == 0, stderr_of(result)
    assert len(result.stdout) == len(data)
    assert result.stdout == data


def test_stdin_is_delivered_and_closed_with_dash_i(pu: Podunit) -> None:
    payload = b"line one\n\x00\xffbinary\n" * 1000
    result = pu.attached("sh", "-c", "cat; echo END", extra=["-i"], input=payload)
    assert result.returncode == 0, stderr_of(result)
    assert result.stdout == payload + b"END\n"
    without = pu.attached("sh", "-c", "cat; echo END", input=b"ignored")
    assert without.stdout == b"END\n"  # no -i: stdin is /dev/null


def test_container_sees_only_stdio_fds(pu: Podunit) -> None:
    # PID 1 (the shell) lists its own fds through a child `ls`, which adds none to PID 1.
    result = pu.attached("sh", "-c", "ls /proc/1/fd; true")  # `; true`: sh must not exec ls
    assert result.returncode == 0, stderr_of(result)
    assert result.stdout.split() == [b"0", b"1", b"2"]


def test_crun_runs_with_cgroups_disabled(pu: Podunit) -> None:
    result = pu.run(
        "run", "--runtime", "crun", "--cgroups", "disabled", "--rootfs", ROOTFS, "--",
        "sh", "-c", "echo via crun; exit 5",
    )  # fmt: skip
    assert result.returncode == 5, stderr_of(result)
    assert result.stdout == b"via crun\n"


# --- detached containers: stop, kill, rm, wait, pause -----------------------------------------


def test_stop_escalates_to_sigkill_for_a_container_ignoring_sigterm(pu: Podunit) -> None:
    pu.detached("ignorer", "sh", "-c", "trap '' TERM; while :; do sleep 0.1; done")
    started = time.monotonic()
    result = pu.direct("stop", "-t", "1", "ignorer")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, stderr_of(result)
    assert 1.0 <= elapsed < 8, elapsed
    state = pu.state("ignorer")
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 137
    assert pu.direct("rm", "ignorer").returncode == 0


def test_stop_of_a_trapping_container_returns_promptly_with_its_code(pu: Podunit) -> None:
    pu.detached("trapper", "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done")
    started = time.monotonic()
    result = pu.direct("stop", "-t", "30", "trapper")
    assert result.returncode == 0, stderr_of(result)
    assert time.monotonic() - started < 5
    assert pu.state("trapper")["ExitCode"] == 7
    # stopping an exited container again is fine (ExecStop after the container exited)
    assert pu.direct("stop", "trapper").returncode == 0
    pu.direct("rm", "trapper")


def test_rm_refuses_a_running_container_and_wait_works_after_rm(pu: Podunit) -> None:
    pu.detached("keeper", "sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.1; done")
    refused = pu.direct("rm", "keeper")
    assert refused.returncode == 125
    assert "running" in stderr_of(refused) and "rm -f" in stderr_of(refused)
    assert pu.state("keeper")["Status"] == "running"
    keeper_id = pu.inspect("keeper")["Id"]
    forced = pu.direct("rm", "-f", "keeper")
    assert forced.returncode == 0, stderr_of(forced)
    leftovers = pu.sandbox.sh(f"ls {RUN_DIR}/locks {RUN_DIR}/containers {RUN_DIR}/exits").stdout
    assert str(keeper_id).encode() not in leftovers
    assert pu.direct("inspect", "keeper").returncode == 125
    waited = pu.direct("wait", "keeper")
    assert waited.returncode == 0, stderr_of(waited)
    assert waited.stdout == b"3\n"
    unknown = pu.direct("wait", "never-existed")
    assert unknown.returncode == 125
    assert "no such container" in stderr_of(unknown)


SIGNALS_BY_NAME = ["HUP", "INT", "QUIT", "USR1", "USR2", "PIPE", "ALRM", "TERM", "TSTP", "WINCH"]
SIGNALS_BY_NUMBER = {
    "SIGURG": 23, "SIGXCPU": 24, "SIGXFSZ": 25, "SIGVTALRM": 26, "SIGPROF": 27,
    "SIGIO": 29, "SIGPWR": 30, "SIGSYS": 31, "SIGRTMIN+1": 35, "SIGRTMAX-1": 63,
}  # fmt: skip


def test_kill_delivers_signals_by_name_and_number_and_rejects_bad_ones(pu: Podunit) -> None:
    import signal as host_signal

    numbers = [int(host_signal.Signals["SIG" + n]) for n in SIGNALS_BY_NAME]
    numbers += list(SIGNALS_BY_NUMBER.values())
    traps = " ".join(f"trap 'echo {n} >> /out/got' {n};" for n in numbers)
    pu.sandbox.sh(f"mkdir -p {BASE}/kill && rm -f {BASE}/kill/got")
    pu.detached(
        "signalled",
        "sh", "-c", f"{traps} echo ready > /out/ready; while :; do sleep 0.05; done",
        extra=["-v", f"{BASE}/kill:/out"],
    )  # fmt: skip
    _wait_for_file(pu, f"{BASE}/kill/ready")
    sent = [f"SIG{n}" if i % 2 else n.lower() for i, n in enumerate(SIGNALS_BY_NAME)]
    sent += [str(number) for number in SIGNALS_BY_NUMBER.values()]
    for spec in sent:
        result = pu.direct("kill", "-s", spec, "signalled")
        assert result.returncode == 0, (spec, stderr_of(result))
        deadline = time.monotonic() + 5  # one at a time: standard signals do not queue
        while time.monotonic() < deadline:
            got_now = pu.sandbox.sh(f"cat {BASE}/kill/got 2>/dev/null || true").stdout.split()
            if len(got_now) == sent.index(spec) + 1:
                break
            time.sleep(0.05)
    got = [int(x) for x in pu.sandbox.sh(f"cat {BASE}/kill/got").stdout.split()]
    assert got == numbers
    for bad in ("SIGNOPE", "0", "65", "-3", "RTMIN+40", ""):
        result = pu.direct("kill", "-s", bad, "signalled")
        assert result.returncode == 125, bad
        assert "signal" in stderr_of(result) and "Traceback" not in stderr_of(result)
    assert pu.state("signalled")["Status"] == "running"
    assert pu.direct("kill", "-s", "KILL", "signalled").returncode == 0
    assert pu.direct("wait", "signalled").stdout == b"137\n"
    pu.direct("rm", "signalled")


def _wait_for_file(pu: Podunit, path: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pu.sandbox.sh(f"test -e {path}", check=False).returncode != 0:
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_pause_and_unpause(pu: Podunit) -> None:
    pu.detached("pausable", "sh", "-c", "while :; do sleep 0.1; done")
    assert pu.direct("pause", "pausable").returncode == 0
    assert pu.state("pausable")["Status"] == "paused"
    runtime_state = pu.inspect("pausable")["RuntimeState"]
    assert isinstance(runtime_state, dict) and runtime_state["status"] == "paused"
    again = pu.direct("pause", "pausable")
    assert again.returncode == 125 and "paused" in stderr_of(again)
    assert pu.direct("unpause", "pausable").returncode == 0
    assert pu.state("pausable")["Status"] == "running"
    assert pu.direct("rm", "-f", "-t", "0", "pausable").returncode == 0
    # stopping a paused container: the stop signal is delivered once it is resumed
    pu.detached("paused-stop", "sh", "-c", "trap 'exit 5' TERM; while :; do sleep 0.1; done")
    assert pu.direct("pause", "paused-stop").returncode == 0
    assert pu.direct("stop", "-t", "10", "paused-stop").returncode == 0
    assert pu.state("paused-stop")["ExitCode"] == 5
    pu.direct("rm", "paused-stop")


def test_ps_lists_running_and_with_all_exited_containers(pu: Podunit) -> None:
    pu.detached("listed", "sh", "-c", "while :; do sleep 0.1; done")
    pu.attached("true", extra=["--name", "listed-exited"])
    running = json.loads(pu.direct("ps", "--format", "json").stdout)
    everything = json.loads(pu.direct("ps", "-a", "--format", "json").stdout)
    assert "listed" in [c["Name"] for c in running]
    assert "listed-exited" not in [c["Name"] for c in running]
    assert "listed-exited" in [c["Name"] for c in everything]
    table = pu.direct("ps", "-a").stdout.decode()
    assert "listed-exited" in table and "exited (0)" in table
    pu.direct("rm", "-f", "-t", "0", "listed", "listed-exited")


# --- failure handling -------------------------------------------------------------------------


def test_conmon_killed_with_sigkill_records_minus_one_and_cleans_up(pu: Podunit) -> None:
    pu.detached("orphan", "sh", "-c", "while :; do sleep 0.1; done")
    conmon_pid = pu.state("orphan")["ConmonPid"]
    container_pid = pu.state("orphan")["Pid"]
    pu.sandbox.run(["kill", "-KILL", str(conmon_pid)])
    time.sleep(0.2)
    result = pu.direct("stop", "-t", "1", "orphan")
    assert result.returncode == 0, stderr_of(result)
    state = pu.state("orphan")
    assert state["Status"] == "exited"
    assert state["ExitCode"] == -1
    assert "conmon" in str(state["Reason"])
    alive = pu.sandbox.sh(f"test -d /proc/{container_pid}", check=False).returncode == 0
    assert not alive, "the runaway container was not killed"
    assert pu.direct("rm", "orphan").returncode == 0
    assert pu.direct("wait", "orphan").stdout == b"-1\n"


def test_concurrent_stop_and_kill_record_one_exit_code(pu: Podunit) -> None:
    pu.detached("raced", "sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.1; done")
    command = (
        f"{pu.binary} stop -t 5 raced & {pu.binary} kill -s TERM raced & "
        f"{pu.binary} stop -t 5 raced & wait"
    )
    pu.sandbox.sh(command, check=False, env=ENV)
    state = pu.state("raced")
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 9
    db = f"{STATE_DIR}/state.db"
    rows = pu.sandbox.run(
        ["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
         "print(c.execute(\"select count(*) from exit_codes e join containers c "
         "on c.id = e.container_id where c.name = 'raced'\").fetchone()[0])", db]
    ).stdout  # fmt: skip
    assert rows == b"1\n"
    pu.direct("rm", "raced")


def test_twenty_parallel_runs_without_database_errors(pu: Podunit) -> None:
    jobs = " ".join(
        f"( {shlex.join(pu.service_argv(['run', '--runtime', 'runc', '--name', f'par{i}', '--rootfs', ROOTFS, '--', 'sh', '-c', f'exit {i}']))} ; echo par{i}=$? ) &"  # noqa: E501
        for i in range(20)
    )
    result = pu.sandbox.sh(f"{jobs} wait", timeout=180, check=False)
    out = result.stdout.decode()
    codes = dict(line.split("=") for line in out.split())
    assert codes == {f"par{i}": str(i) for i in range(20)}, out + stderr_of(result)
    assert "database" not in stderr_of(result).lower()
    listed = json.loads(pu.direct("ps", "-a", "--format", "json").stdout)
    by_name = {c["Name"]: c["State"]["ExitCode"] for c in listed}
    assert all(by_name[f"par{i}"] == i for i in range(20))
    assert pu.direct("rm", *[f"par{i}" for i in range(20)]).returncode == 0


def test_reboot_is_reconciled_on_first_use(pu: Podunit) -> None:
    pu.detached("survivor", "sh", "-c", "while :; do sleep 0.1; done")
    state = pu.state("survivor")
    # a reboot: every process gone, /run wiped, /var/lib kept, and the kernel's boot id
    # (which the database records) another one
    pu.sandbox.sh(f"kill -KILL {state['ConmonPid']} {state['Pid']}")
    pu.sandbox.sh(f"rm -rf {RUN_DIR}")
    pu.sandbox.run(["python3", "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
                    "db.execute(\"UPDATE meta SET value = 'old-boot' WHERE key = 'boot_id'\"); "
                    "db.commit()", f"{STATE_DIR}/state.db"])  # fmt: skip
    after = pu.state("survivor")
    assert after["Status"] == "exited"
    assert after["ExitCode"] == -1
    assert "restarted" in str(after["Reason"])
    assert pu.sandbox.sh(f"test -s {RUN_DIR}/boot-id", check=False).returncode == 0
    # the state is usable again: same name, new container
    assert pu.attached("true", extra=["--name", "after-reboot"]).returncode == 0
    assert pu.direct("rm", "survivor", "after-reboot").returncode == 0


def test_mismatched_run_dir_is_refused(pu: Podunit) -> None:
    result = pu.sandbox.run(
        [pu.binary, "ps"], check=False,
        env={"PODUNIT_STATE_DIR": STATE_DIR, "PODUNIT_RUN_DIR": "/run/somewhere-else"},
    )  # fmt: skip
    assert result.returncode == 125
    assert "run_dir" in stderr_of(result) and RUN_DIR in stderr_of(result)
    pu.sandbox.sh("rm -rf /run/somewhere-else")


def test_missing_conmon_or_runtime_is_127_naming_it(pu: Podunit) -> None:
    no_runtime = pu.run("run", "--runtime", "no-such-runtime", "--rootfs", ROOTFS, "--", "true")
    assert no_runtime.returncode == 127
    assert "no-such-runtime" in stderr_of(no_runtime)
    # a PATH with runc but without conmon
    pu.sandbox.sh(f"mkdir -p {BASE}/bin && ln -sf /usr/sbin/runc {BASE}/bin/runc")
    argv = pu.service_argv(["run", "--runtime", "runc", "--rootfs", ROOTFS, "--", "true"])
    argv[1:1] = ["--setenv", f"PATH={BASE}/bin"]
    no_conmon = pu.sandbox.run(argv, check=False, env=ENV)
    assert no_conmon.returncode == 127, stderr_of(no_conmon)
    assert "conmon" in stderr_of(no_conmon) and "Traceback" not in stderr_of(no_conmon)


def test_host_ports_are_reserved_while_the_container_runs(pu: Podunit) -> None:
    loop = "while :; do sleep 0.1; done"
    pu.detached("porty", "sh", "-c", loop, extra=["-p", "127.0.0.1:18471:80"])
    probe = "import socket; s=socket.socket(); s.bind(('127.0.0.1', 18471))"
    busy = pu.sandbox.run(["python3", "-c", probe], check=False)
    assert busy.returncode != 0 and b"Address already in use" in busy.stderr
    clash = pu.run(
        "run", "-d", "--name", "porty2", "--runtime", "runc", "--cgroups", "enabled",
        "-p", "127.0.0.1:18471:80", "--rootfs", ROOTFS, "--", "true",
    )  # fmt: skip
    assert clash.returncode == 125
    assert "18471" in stderr_of(clash) and "in use" in stderr_of(clash)
    assert pu.direct("inspect", "porty2").returncode == 125  # nothing left behind
    pu.direct("rm", "-f", "-t", "0", "porty")
    free = pu.sandbox.run(["python3", "-c", probe], check=False)
    assert free.returncode == 0, free.stderr.decode()


# --- as a unit's ExecStart (run --unit: detach after READY) ------------------------------------


def _unit_argv(pu: Podunit, unit: str, *command: str) -> list[str]:
    stop = f"{pu.binary} stop -t 3 {unit}"
    argv = ["systemd-run", "--unit", unit, "-p", "Type=notify", "-p", "NotifyAccess=all",
            "-p", "Delegate=yes", "-p", "KillMode=mixed", "-p", f"ExecStop={stop}",
            "-p", f"ExecStopPost=-{pu.binary} rm -f {unit}"]  # fmt: skip
    for key, value in ENV.items():
        argv += ["--setenv", f"{key}={value}"]
    return [*argv, pu.binary, "run", "--unit", "--name", unit, "--runtime", "runc", "--rootfs",
            ROOTFS, "--", *command]  # fmt: skip


def _unit_property(pu: Podunit, unit: str, name: str) -> str:
    return pu.sandbox.run(["systemctl", "show", "-P", name, unit]).stdout.decode().strip()


def test_run_as_notify_unit_makes_conmon_the_main_pid(pu: Podunit) -> None:
    unit = "pu-rt-web"
    loop = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
    pu.sandbox.run(_unit_argv(pu, unit, "sh", "-c", loop))
    try:
        assert _unit_property(pu, unit, "ActiveState") == "active"
        state = pu.state(unit)
        assert state["Status"] == "running"
        assert _unit_property(pu, unit, "MainPID") == str(state["ConmonPid"])
        cgroup = pu.sandbox.sh(f"cat /proc/{state['Pid']}/cgroup").stdout.decode()
        assert f"/system.slice/{unit}.service/" in cgroup
        conmon_env = pu.sandbox.run(["cat", f"/proc/{state['ConmonPid']}/environ"]).stdout
        assert b"NOTIFY_SOCKET" not in conmon_env and b"LISTEN_" not in conmon_env
        container_env = pu.sandbox.run(["cat", f"/proc/{state['Pid']}/environ"]).stdout
        assert b"NOTIFY_SOCKET" not in container_env
        pidfile = pu.sandbox.read(f"{RUN_DIR}/pidfiles/{unit}.pid")
        assert pidfile.strip() == str(state["ConmonPid"]).encode()
    finally:
        pu.sandbox.run(["systemctl", "stop", f"{unit}.service"], check=False)
    assert _unit_property(pu, unit, "ActiveState") in ("inactive", "")
    assert pu.direct("inspect", unit).returncode == 125  # ExecStopPost removed it
    assert pu.direct("wait", unit).stdout == b"0\n"


def test_a_failing_container_fails_its_unit_with_its_status(pu: Podunit) -> None:
    unit = "pu-rt-failing"
    pu.sandbox.run(_unit_argv(pu, unit, "sh", "-c", "sleep 0.3; exit 3"))
    deadline = time.monotonic() + 15
    while _unit_property(pu, unit, "ActiveState") not in ("failed", "inactive"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _unit_property(pu, unit, "Result") == "exit-code"
    assert _unit_property(pu, unit, "ExecMainStatus") == "3"
    assert pu.direct("wait", unit).stdout == b"3\n"
    pu.sandbox.run(["systemctl", "reset-failed", f"{unit}.service"], check=False)


# --- definitions, init, logs, create/start, restart, signal forwarding ------------------------


def test_run_a_definition_with_init_from_a_shell(pu: Podunit) -> None:
    pu.sandbox.write(
        f"{DEFINITIONS}/initdemo.yaml",
        f"containers:\n  initdemo:\n    rootfs: {ROOTFS}\n    runtime: runc\n    init: true\n"
        "    environment: {GREETING: hello}\n"
        '    command: [sh, -c, \'echo $GREETING; tr "\\\\0" " " < /proc/1/cmdline; exit 4\']\n',
    )
    result = pu.run_definition("initdemo")
    assert result.returncode == 4, stderr_of(result)
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "hello"
    assert lines[1].startswith("/run/podunit-init -- sh -c")
    # a second run replaces the exited container of the same definition
    again = pu.run_definition("initdemo")
    assert again.returncode == 4, stderr_of(again)
    names = [c["Name"] for c in json.loads(pu.direct("ps", "-a", "--format", "json").stdout)]
    assert names.count("initdemo") == 1
    missing = pu.run("run", "no-such-definition")
    assert missing.returncode == 125
    assert "no-such-definition" in stderr_of(missing) and "Traceback" not in stderr_of(missing)
    pu.direct("rm", "initdemo")


def test_k8s_file_log_of_a_detached_container(pu: Podunit) -> None:
    pu.detached("logged", "sh", "-c", "echo to-stdout; echo to-stderr >&2",
                extra=["--log-driver", "k8s-file"])  # fmt: skip
    assert pu.direct("wait", "logged").stdout == b"0\n"
    log_path = pu.inspect("logged")["LogPath"]
    assert isinstance(log_path, str) and log_path.startswith(STATE_DIR)
    lines = pu.sandbox.run(["cat", log_path]).stdout.decode().splitlines()
    assert any(line.endswith(" stdout F to-stdout") for line in lines), lines
    assert any(line.endswith(" stderr F to-stderr") for line in lines), lines
    pu.direct("rm", "logged")
    assert pu.sandbox.sh(f"test -e {log_path}", check=False).returncode != 0


def test_create_then_start_and_start_again_after_exit(pu: Podunit) -> None:
    pu.sandbox.sh(f"mkdir -p {BASE}/starts && rm -f {BASE}/starts/count")
    created = pu.run(
        "create", "--name", "twice", "--runtime", "runc", "--cgroups", "enabled",
        "-v", f"{BASE}/starts:/out", "--rootfs", ROOTFS, "--",
        "sh", "-c", "echo run >> /out/count; exit 6",
    )  # fmt: skip
    assert created.returncode == 0, stderr_of(created)
    assert pu.state("twice")["Status"] == "created"
    assert pu.sandbox.sh(f"cat {BASE}/starts/count 2>/dev/null || true").stdout == b""
    assert pu.run("start", "twice").returncode == 0
    assert pu.direct("wait", "twice").stdout == b"6\n"
    restarted = pu.run("start", "twice")
    assert restarted.returncode == 0, stderr_of(restarted)
    assert pu.direct("wait", "twice").stdout == b"6\n"
    assert pu.sandbox.sh(f"cat {BASE}/starts/count").stdout == b"run\nrun\n"
    pu.direct("rm", "twice")
    # a created (never started) container can be removed without -f; it never ran
    assert pu.run("create", "--name", "unstarted", "--runtime", "runc", "--cgroups", "enabled",
                  "--rootfs", ROOTFS, "--", "true").returncode == 0  # fmt: skip
    assert pu.direct("rm", "unstarted").returncode == 0
    assert pu.direct("inspect", "unstarted").returncode == 125


def test_attached_run_forwards_sigterm_to_the_container(pu: Podunit) -> None:
    script = "trap 'echo got-term; exit 11' TERM; echo ready; while :; do sleep 0.1; done"
    argv = shlex.join(pu.service_argv(
        ["run", "--name", "forwarded", "--runtime", "runc", "--rootfs", ROOTFS, "--",
         "sh", "-c", script]))  # fmt: skip
    shell = (
        f"{argv} > {BASE}/forward.out & "
        f"for i in $(seq 100); do grep -q ready {BASE}/forward.out 2>/dev/null && break; "
        "sleep 0.05; done; "
        "pid=$(systemctl show -P MainPID $(systemctl list-units --no-legend 'run-*.service' "
        "| awk '{print $1}' | while read u; do systemctl show -P ExecStart $u | grep -q "
        "forwarded && echo $u; done)); kill -TERM $pid; wait $!; echo status=$?"
    )
    result = pu.sandbox.sh(shell, check=False, env=ENV, timeout=60)
    assert b"status=11" in result.stdout, result.stdout + result.stderr
    assert pu.sandbox.read(f"{BASE}/forward.out") == b"ready\ngot-term\n"
    pu.direct("rm", "forwarded")


def test_conmon_exit_command_records_and_releases_without_podunit(pu: Podunit) -> None:
    cid = pu.detached("selfclean", "sh", "-c", "sleep 0.2; exit 12")
    bundle = f"{RUN_DIR}/containers/{cid}"
    deadline = time.monotonic() + 15
    while pu.sandbox.sh(f"test -e {bundle}", check=False).returncode == 0:
        assert time.monotonic() < deadline, "podunit cleanup (conmon's exit command) never ran"
        time.sleep(0.1)
    db = f"{STATE_DIR}/state.db"
    query = f"select status, exit_code from containers where id = '{cid}'"
    row = pu.sandbox.run(["python3", "-c", "import sqlite3,sys; print(sqlite3.connect("
                          f"sys.argv[1]).execute({query!r}).fetchone())", db]).stdout  # fmt: skip
    assert row == b"('exited', 12)\n"
    runtime_list = pu.sandbox.run(["runc", "--root", f"{RUN_DIR}/runtime-runc", "list", "-q"])
    assert cid.encode() not in runtime_list.stdout
    attach_link = f"{RUN_DIR}/sockets/{cid}"
    assert pu.sandbox.sh(f"test -L {attach_link} || test -e {attach_link}",
                         check=False).returncode != 0  # fmt: skip
    pu.direct("rm", "selfclean")


def test_rm_flag_removes_the_container_but_keeps_its_exit_code(pu: Podunit) -> None:
    attached = pu.attached("sh", "-c", "exit 21", extra=["--rm", "--name", "gone-attached"])
    assert attached.returncode == 21, stderr_of(attached)
    assert pu.direct("inspect", "gone-attached").returncode == 125
    assert pu.direct("wait", "gone-attached").stdout == b"21\n"
    pu.detached("gone-detached", "sh", "-c", "sleep 0.2; exit 22", extra=["--rm"])
    deadline = time.monotonic() + 15
    while pu.direct("inspect", "gone-detached").returncode == 0:
        assert time.monotonic() < deadline, "--rm did not remove the detached container"
        time.sleep(0.1)
    assert pu.direct("wait", "gone-detached").stdout == b"22\n"


def test_a_failed_restart_leaves_the_container_exited(pu: Podunit) -> None:
    pu.sandbox.sh(f"rm -rf {BASE}/fragile && cp -a {ROOTFS} {BASE}/fragile")
    result = pu.run("run", "--name", "fragile", "--runtime", "runc",
                    "--rootfs", f"{BASE}/fragile", "--", "sh", "-c", "exit 5")  # fmt: skip
    assert result.returncode == 5, stderr_of(result)
    pu.sandbox.sh(f"rm -f {BASE}/fragile/bin/sh")
    restart = pu.run("start", "fragile")
    assert restart.returncode == 127, stderr_of(restart)
    state = pu.state("fragile")
    assert state["Status"] == "exited" and state["ExitCode"] == 5
    assert pu.direct("rm", "fragile").returncode == 0


def _report(pu: Podunit, script: str, *extra: str, runtime: str = "runc") -> dict[str, str]:
    """Run `script` (lines `key=value`) in a container and return them as a mapping."""
    result = pu.run("run", "--runtime", runtime, *extra, "--rootfs", ROOTFS, "--", "sh", "-c",
                    script)  # fmt: skip
    assert result.returncode == 0, stderr_of(result)
    return dict(line.split("=", 1) for line in result.stdout.decode().splitlines())


ISOLATION_SCRIPT = """
echo host=$(hostname)
echo uid=$(id -u):$(id -g)
echo nets=$(ls /sys/class/net | tr '\\n' ' ')
echo lo=$(ip link show lo | head -1)
echo caps=$(grep CapEff /proc/self/status | cut -f2)
echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)
echo seccomp=$(grep Seccomp: /proc/self/status | cut -f2)
echo timer_list=$(wc -c < /proc/timer_list)
echo proc_sys=$( (echo 1 > /proc/sys/kernel/domainname) 2>&1 | grep -c Read-only)
echo root_writable=$(touch /probe 2>/dev/null && rm /probe && echo yes || echo no)
"""


def test_isolation_defaults_of_a_private_container(pu: Podunit) -> None:
    seen = _report(pu, ISOLATION_SCRIPT, "--name", "isolated")
    container_id = pu.inspect("isolated")["Id"]
    assert isinstance(container_id, str)
    assert seen["host"] == container_id[:12]
    assert seen["uid"] == "0:0"
    assert seen["nets"].split() == ["lo"]
    assert "UP" in seen["lo"]
    assert seen["caps"] == "00000000800405fb"  # Podman's default 11 capabilities
    assert seen["nnp"] == "1" and seen["seccomp"] == "2"
    assert seen["timer_list"] == "0"  # masked
    assert seen["proc_sys"] == "1"  # read-only
    assert seen["root_writable"] == "yes"
    pu.direct("rm", "isolated")


def test_user_host_network_and_read_only_root(pu: Podunit) -> None:
    pu.sandbox.write(
        f"{DEFINITIONS}/hardened.yaml",
        f"containers:\n  hardened:\n    rootfs: {ROOTFS}\n    runtime: runc\n    user: app\n"
        "    network: host\n    read_only: true\n    cap_drop: [ALL]\n    tmpfs: [/scratch]\n"
        f"    command: [sh, -c, {ISOLATION_SCRIPT!r}]\n",
    )
    result = pu.run_definition("hardened")
    assert result.returncode == 0, stderr_of(result)
    seen = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    assert seen["uid"] == "1000:1000"
    host_nets = pu.sandbox.sh("ls /sys/class/net").stdout.decode().split()
    assert seen["nets"].split() == host_nets
    assert seen["caps"] == "0000000000000000"
    assert seen["root_writable"] == "no"
    pu.direct("rm", "hardened")


def test_crun_private_network_has_loopback_up(pu: Podunit) -> None:
    seen = _report(pu, "echo lo=$(ip link show lo | head -1)", "--cgroups", "disabled",
                   runtime="crun")  # fmt: skip
    assert "UP" in seen["lo"]


def test_image_containers_get_private_writable_roots(pu: Podunit) -> None:
    layout, bundle = f"{BASE}/image/layout", f"{BASE}/image/bundle"
    pu.sandbox.sh(
        f"""set -e
        rm -rf {BASE}/image && mkdir -p {BASE}/image
        umoci init --layout {layout}
        umoci new --image {layout}:base
        umoci unpack --image {layout}:base {bundle}
        cp -a {ROOTFS}/. {bundle}/rootfs/
        echo from-image > {bundle}/rootfs/marker
        umoci repack --image {layout}:base {bundle}
        umoci config --image {layout}:base --tag v1 --config.cmd cat --config.cmd /marker
        """,
        timeout=120,
    )
    image = f"oci:{layout}:v1"
    first = pu.run("run", "--runtime", "runc", "--name", "img-a", image)
    assert first.returncode == 0, stderr_of(first)
    assert first.stdout == b"from-image\n"
    writer = pu.run("run", "--runtime", "runc", "--name", "img-b", "--log-driver", "k8s-file",
                    image, "--", "sh", "-c", "cat /marker; echo changed > /marker")  # fmt: skip
    assert writer.returncode == 0, stderr_of(writer)
    reader = pu.run("run", "--runtime", "runc", "--name", "img-c", image)
    assert reader.stdout == b"from-image\n"  # img-b's write stayed in img-b's layer
    layer_b = f"{STATE_DIR}/layers/{pu.inspect('img-b')['Id']}"
    assert pu.sandbox.sh(f"test -d {layer_b}", check=False).returncode == 0
    again = pu.run("start", "img-b")  # a restart sees its own earlier write
    assert again.returncode == 0, stderr_of(again)
    assert pu.direct("wait", "img-b").stdout == b"0\n"
    log = pu.sandbox.read(str(pu.inspect("img-b")["LogPath"])).decode().splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in log] == ["from-image", "changed"]
    assert pu.direct("rm", "img-a", "img-b", "img-c").returncode == 0
    assert pu.sandbox.sh(f"test -e {layer_b}", check=False).returncode != 0
    mounts = pu.sandbox.run(["cat", "/proc/self/mountinfo"]).stdout.decode()
    assert f"{RUN_DIR}/rootfs/" not in mounts


def test_attached_run_through_the_attach_socket_with_a_log_driver(pu: Podunit) -> None:
    result = pu.attached("sh", "-c", "cat; echo to-err >&2; exit 3",
                         extra=["-i", "--log-driver", "k8s-file", "--name", "via-socket"],
                         input=b"from stdin\n")  # fmt: skip
    assert result.returncode == 3, stderr_of(result)
    assert result.stdout == b"from stdin\n"
    assert b"to-err\n" in result.stderr
    log = pu.sandbox.read(str(pu.inspect("via-socket")["LogPath"])).decode()
    assert "stdout F from stdin" in log and "stderr F to-err" in log
    pu.direct("rm", "via-socket")


def test_attached_run_with_a_terminal(pu: Podunit) -> None:
    result = pu.attached("sh", "-c", "tty; test -t 0 && echo stdin-is-tty; exit 4",
                         extra=["-t"])  # fmt: skip
    assert result.returncode == 4, stderr_of(result)
    lines = result.stdout.decode().replace("\r", "").splitlines()
    assert "/dev/pts/0" in lines and "stdin-is-tty" in lines


def test_user_mode_keeps_state_in_the_user_directories(pu: Podunit) -> None:
    home, runtime_dir = f"{BASE}/home", f"{RUN_DIR}-user"
    env = {"HOME": home, "XDG_RUNTIME_DIR": runtime_dir}
    pu.sandbox.sh(f"mkdir -p {home} {runtime_dir}")
    started = pu.sandbox.run(
        [pu.binary, "--user", "run", "-d", "--name", "mine", "--runtime", "runc",
         "--rootfs", ROOTFS, "--", "sh", "-c", "exit 8"], env=env, check=False,
    )  # fmt: skip
    assert started.returncode == 0, stderr_of(started)
    waited = pu.sandbox.run([pu.binary, "--user", "wait", "mine"], env=env)
    assert waited.stdout == b"8\n"
    state_db, stamp = f"{home}/.local/share/podunit/state.db", f"{runtime_dir}/podunit/boot-id"
    assert pu.sandbox.sh(f"test -f {state_db} && test -s {stamp}", check=False).returncode == 0
    assert pu.direct("inspect", "mine").returncode == 125  # not in the system-mode state
    no_runtime_dir = pu.sandbox.run([pu.binary, "--user", "ps"], env={"HOME": home}, check=False)
    assert no_runtime_dir.returncode == 125 and "XDG_RUNTIME_DIR" in stderr_of(no_runtime_dir)
    assert pu.sandbox.run([pu.binary, "--user", "rm", "mine"], env=env).returncode == 0
    pu.sandbox.sh(f"rm -rf {runtime_dir}")


def test_definition_settings_reach_the_container(pu: Podunit) -> None:
    pu.sandbox.write(f"{DEFINITIONS}/settings.env", "FROM_FILE=file value\nSHARED=file\n")
    script = (
        "echo host=$(hostname); echo cwd=$(pwd); echo groups=$(id -G); "
        "echo fwd=$(cat /proc/sys/net/ipv4/ip_forward); echo nofile=$(ulimit -n); "
        "echo dev=$(head -c 5 /dev/myzero | wc -c); echo from_file=$FROM_FILE; "
        "echo shared=$SHARED; echo scratch=$(df -k /scratch | tail -1 | tr -s ' ' | cut -d' ' -f2)"
    )
    pu.sandbox.write(
        f"{DEFINITIONS}/settings.yaml",
        f"containers:\n  settings:\n    rootfs: {ROOTFS}\n    runtime: runc\n"
        "    hostname: custom-host\n    working_dir: /tmp\n    group_add: [wheel, '4242']\n"
        "    sysctls: {net.ipv4.ip_forward: '1'}\n"
        "    ulimits: {nofile: {soft: 1024, hard: 2048}}\n"
        "    devices: ['/dev/zero:/dev/myzero:r']\n"
        "    env_file: [settings.env]\n    environment: {SHARED: definition}\n"
        "    tmpfs: ['/scratch:size=2m']\n"
        f"    command: [sh, -c, {script!r}]\n",
    )
    result = pu.run_definition("settings")
    assert result.returncode == 0, stderr_of(result)
    seen = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    assert seen == {
        "host": "custom-host", "cwd": "/tmp", "groups": "0 10 4242", "fwd": "1",
        "nofile": "1024", "dev": "5", "from_file": "file value", "shared": "definition",
        "scratch": "2048",
    }  # fmt: skip
    pu.direct("rm", "settings")


def test_conmon_killed_in_a_unit_fails_it_and_exec_stop_post_cleans_up(pu: Podunit) -> None:
    unit = "pu-rt-orphan"
    pu.sandbox.run(_unit_argv(pu, unit, "sh", "-c", "while :; do sleep 0.1; done"))
    state = pu.state(unit)
    pu.sandbox.run(["kill", "-KILL", str(state["ConmonPid"])])
    deadline = time.monotonic() + 15
    while pu.direct("inspect", unit).returncode == 0:  # until ExecStopPost's rm -f ran
        assert time.monotonic() < deadline, "ExecStopPost did not remove the container"
        time.sleep(0.1)
    assert _unit_property(pu, unit, "Result") == "signal"
    assert pu.direct("wait", unit).stdout == b"-1\n"
    alive = pu.sandbox.sh(f"test -d /proc/{state['Pid']}", check=False).returncode == 0
    assert not alive
    pu.sandbox.run(["systemctl", "reset-failed", f"{unit}.service"], check=False)


def test_hosttools_rootfs_runs_the_hosts_python(pu: Podunit) -> None:
    volumes = hosttools_rootfs(pu.sandbox, f"{BASE}/hosttools")
    extra = [arg for volume in volumes for arg in ("-v", volume)]
    script = "import os, sys; print(sys.version_info[0], sorted(os.listdir('/proc/self/fd')))"
    result = pu.run(
        "run", "--runtime", "runc", *extra, "--rootfs", f"{BASE}/hosttools", "--",
        "python3", "-c", script,
    )  # fmt: skip
    assert result.returncode == 0, stderr_of(result)
    major, fds = result.stdout.decode().split(" ", 1)
    assert major == "3"
    assert fds.strip() == "['0', '1', '2', '3']"  # 3: listdir's own directory fd


def test_template_instances_run_even_when_they_look_like_images(pu: Podunit) -> None:
    pu.sandbox.write(
        f"{DEFINITIONS}/worker.yaml",
        f"containers:\n  worker@:\n    rootfs: {ROOTFS}\n    runtime: runc\n"
        "    command: [echo, 'instance %i']\n",
    )
    result = pu.run_definition("worker@10.0.0.1:80")
    assert result.returncode == 0, stderr_of(result)
    assert result.stdout == b"instance 10.0.0.1:80\n"
    assert pu.direct("rm", "worker@10.0.0.1:80").returncode == 0


def test_published_ports_are_not_reserved_with_the_host_network(pu: Podunit) -> None:
    volumes = hosttools_rootfs(pu.sandbox, f"{BASE}/hosttools")
    extra = [arg for volume in volumes for arg in ("-v", volume)]
    bind = "import socket; socket.socket().bind(('127.0.0.1', 18472)); print('bound')"
    result = pu.run(
        "run", "--runtime", "runc", "--network", "host", "-p", "127.0.0.1:18472:18472", *extra,
        "--rootfs", f"{BASE}/hosttools", "--", "python3", "-c", bind,
    )  # fmt: skip
    assert result.returncode == 0, stderr_of(result)
    assert result.stdout == b"bound\n"


def test_rootless_containers_map_root_to_the_calling_user(pu: Podunit) -> None:
    user, runtime_dir = "podunit-rootless", f"{RUN_DIR}-rootless"
    pu.sandbox.sh(
        f"id {user} >/dev/null 2>&1 || useradd --create-home {user}; "
        f"mkdir -p {runtime_dir} && chown {user} {runtime_dir} && chmod 700 {runtime_dir}"
    )
    uid = pu.sandbox.run(["id", "-u", user]).stdout.decode().strip()
    as_user = ["runuser", "-u", user, "--", "env", f"HOME=/home/{user}",
               f"XDG_RUNTIME_DIR={runtime_dir}", pu.binary, "--user"]  # fmt: skip
    script = "id -u; cat /proc/self/uid_map; exit 6"
    try:
        for runtime in ("runc", "crun"):
            result = pu.sandbox.run(
                [*as_user, "run", "--runtime", runtime, "--rootfs", ROOTFS, "--", "sh", "-c",
                 script], check=False,
            )  # fmt: skip
            assert result.returncode == 6, (runtime, stderr_of(result))
            lines = result.stdout.decode().split("\n")
            assert lines[0] == "0"
            assert lines[1].split() == ["0", uid, "1"]
        refused = pu.sandbox.run(
            [*as_user, "run", "-u", "app", "--runtime", "runc", "--rootfs", ROOTFS, "--", "true"],
            check=False,
        )
        assert refused.returncode == 125
        assert "rootless" in stderr_of(refused) and "Traceback" not in stderr_of(refused)
    finally:
        pu.sandbox.sh(f"userdel --remove {user} 2>/dev/null; rm -rf {runtime_dir}", check=False)


def test_journald_and_none_log_drivers(pu: Podunit) -> None:
    extra = ["--log-driver", "journald", "--name", "journaled"]
    journald = pu.attached("sh", "-c", "echo to-journal", extra=extra)
    assert journald.returncode == 0 and journald.stdout == b"to-journal\n", stderr_of(journald)
    container_id = pu.inspect("journaled")["Id"]
    deadline = time.monotonic() + 10
    while True:
        entries = (
            pu.sandbox.run(["journalctl", "CONTAINER_NAME=journaled", "-o", "json", "--no-pager"])
            .stdout.decode()
            .splitlines()
        )
        if entries or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    fields = json.loads(entries[-1])
    assert fields["MESSAGE"].rstrip("\n") == "to-journal"  # conmon 2.1.6 keeps the newline
    assert fields["CONTAINER_ID_FULL"] == container_id
    assert fields["SYSLOG_IDENTIFIER"] == "journaled"
    silent = pu.attached("sh", "-c", "echo still-attached; exit 2", extra=["--log-driver", "none"])
    assert silent.returncode == 2 and silent.stdout == b"still-attached\n"
    pu.direct("rm", "journaled")

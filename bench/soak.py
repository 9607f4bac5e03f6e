"""Soak: start/stop cycles of one generated unit in a real systemd, asserting zero failures
and nothing leaked (issue 15, "Then a soak").

Each cycle: `systemctl start`, an attached `podunit exec`, every 10th cycle also a
detached `podunit exec -d`, every `--kill-every`th cycle `kill -9` of conmon (the
unit must fail, its ExecStopPost must remove the container, and the next start must
work), then `systemctl stop` (the unit must end `inactive`, Result=success).

Leak accounting, after a warm-up cycle (the first container of a boot makes the run
directory and the runtime's --root) and after the last cycle (psutil for processes and
fds): mounts (the sandbox's mount table), podunit scopes and cgroup directories,
files under /run/podunit (the generator cache aside), rows of `podunit ps -a`,
processes of podunit (conmon, podunit, the notify proxy); during the run, conmon's
open fds after its exec, which must not grow from cycle to cycle.

    scripts/soak [--cycles 1000] [--kill-every 50]     boots a throwaway sandbox
    scripts/soak --sandbox NAME ...                     uses a running one (scripts/sandbox up)

The inside part (`--inside`) runs in the sandbox; tests/system/test_soak.py runs a
short version of it in the shared test sandbox. Prints one JSON summary; exit status 1
on any failure or leak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
UNIT = "podunit-soak"
ROOT = "/var/tmp/podunit-soak"
ROOTFS = f"{ROOT}/busybox"
DEFINITION = "/etc/podunit/podunit-soak.yaml"
RUN_DIR = "/run/podunit"
PODUNIT = str(REPO_ROOT / ".venv" / "bin" / "podunit")
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


def _run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return _run(["systemctl", *args])


def _show(*properties: str) -> dict[str, str]:
    text = _ctl("show", f"{UNIT}.service", "-p", ",".join(properties)).stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _wait_state(states: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = _show("ActiveState")["ActiveState"]
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def _podunit_processes() -> list[Any]:
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        ours = "podunit" in cmdline and "bench.soak" not in cmdline
        if process.info["name"] == "conmon" or ours:
            found.append(process)
    return found


def snapshot() -> dict[str, Any]:
    """What must be the same before and after the soak."""
    files = []
    for directory, dirs, names in os.walk(RUN_DIR):
        if directory == RUN_DIR and "generator-cache" in dirs:
            dirs.remove("generator-cache")
        files += [os.path.join(directory, name) for name in [*dirs, *names]]
    cgroups = [d for d, _, _ in os.walk("/sys/fs/cgroup")]
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        mounts = [line.split()[4] for line in mountinfo]
    units = _run(["systemctl", "list-units", "--all", "--no-legend", "--plain", "podunit*"]).stdout
    listed = _run([PODUNIT, "ps", "-a", "--format", "json"])
    rows = [entry["Name"] for entry in json.loads(listed.stdout or "[]")]
    return {
        "mounts": sorted(mounts),
        "cgroups": sorted(cgroups),
        "scopes": sorted(line.split()[0] for line in units.splitlines() if line.strip()),
        "run_files": sorted(files),
        "rows": sorted(rows),
        "processes": sorted(" ".join(p.info["cmdline"] or []) for p in _podunit_processes()),
    }


def prepare() -> None:
    """The busybox root, the definition and the generator (idempotent)."""
    from tests.rootfs import busybox_rootfs

    class Local:
        def sh(self, script: str, **kwargs: object) -> object:
            return subprocess.run(["sh", "-c", script], check=True)

    busybox_rootfs(Local(), ROOTFS)
    definition = {
        "containers": {
            UNIT: {"rootfs": ROOTFS, "runtime": "runc", "command": COMMAND, "install": {}}
        }
    }
    Path(DEFINITION).parent.mkdir(parents=True, exist_ok=True)
    Path(DEFINITION).write_text(json.dumps(definition))
    subprocess.run([str(REPO_ROOT / "scripts" / "install-generator")], check=True)
    subprocess.run(["systemctl", "daemon-reload"], check=True)


def unprepare() -> None:
    _ctl("stop", f"{UNIT}.service")
    _ctl("reset-failed", f"{UNIT}.service")
    Path(DEFINITION).unlink(missing_ok=True)
    subprocess.run(["rm", "-rf", ROOT], check=False)
    subprocess.run([str(REPO_ROOT / "scripts" / "install-generator"), "--uninstall"], check=False)
    _ctl("daemon-reload")


def cycle(number: int, kill: bool, failures: list[str], timings: dict[str, list[float]]) -> int:
    """One start/exec/(kill)/stop cycle; returns conmon's fd count after the exec (0 if none)."""
    import psutil

    unit = f"{UNIT}.service"

    def fail(what: str, result: subprocess.CompletedProcess[str] | None = None) -> None:
        detail = f": {result.stderr.strip()[-300:]}" if result is not None else ""
        failures.append(f"cycle {number}: {what}{detail}")

    started = time.monotonic()
    result = _ctl("start", unit)
    timings["start"].append(time.monotonic() - started)
    if result.returncode != 0 or _show("ActiveState")["ActiveState"] != "active":
        fail("start", result)
        _ctl("stop", unit)
        _ctl("reset-failed", unit)
        return 0
    started = time.monotonic()
    result = _run([PODUNIT, "exec", UNIT, "--", "true"])
    timings["exec"].append(time.monotonic() - started)
    if result.returncode != 0:
        fail("exec", result)
    if number % 10 == 0:
        result = _run([PODUNIT, "exec", "-d", UNIT, "--", "sleep", "0.05"])
        if result.returncode != 0:
            fail("exec -d", result)
        time.sleep(0.1)
    conmon = int(_show("MainPID")["MainPID"])
    fds = 0
    try:
        fds = psutil.Process(conmon).num_fds()
    except psutil.Error:
        fail(f"conmon {conmon} is gone")
    if kill:
        os.kill(conmon, 9)
        state = _wait_state({"failed", "inactive"})
        if state != "failed":
            fail(f"after kill -9 of conmon the unit is {state}, not failed")
        listed = _run([PODUNIT, "ps", "-a", "--format", "json"])
        if any(entry["Name"] == UNIT for entry in json.loads(listed.stdout or "[]")):
            fail("ExecStopPost left the killed container's row")
        _ctl("reset-failed", unit)
        return fds
    started = time.monotonic()
    result = _ctl("stop", unit)
    timings["stop"].append(time.monotonic() - started)
    props = _show("ActiveState", "Result")
    if result.returncode != 0 or props != {"ActiveState": "inactive", "Result": "success"}:
        fail(f"stop ended {props}", result)
        _ctl("reset-failed", unit)
    return fds


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(quantile: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000, 1)

    return {"median_ms": pick(0.5), "p95_ms": pick(0.95), "max_ms": pick(1.0)}


def inside(cycles: int, kill_every: int, keep: bool = False) -> dict[str, Any]:
    """The soak itself, run inside a sandbox (PID 1 is systemd)."""
    prepare()
    failures: list[str] = []
    timings: dict[str, list[float]] = {"start": [], "stop": [], "exec": []}
    # a warm-up cycle before the baseline: the first container of a boot makes what stays
    # for every later one (the run directory, the runtime's --root directory)
    cycle(0, False, failures, {"start": [], "stop": [], "exec": []})
    before = snapshot()
    fds: list[int] = []
    began = time.monotonic()
    for number in range(1, cycles + 1):
        kill = kill_every > 0 and number % kill_every == 0
        count = cycle(number, kill, failures, timings)
        if count:
            fds.append(count)
        if number % 100 == 0:
            print(f"soak: {number}/{cycles} cycles, {len(failures)} failures", file=sys.stderr)
    time.sleep(0.5)
    after = snapshot()
    leaks = {
        key: {"gone": sorted(set(before[key]) - set(after[key])),
              "new": sorted(set(after[key]) - set(before[key]))}
        for key in before if before[key] != after[key]
    }  # fmt: skip
    if len(set(fds)) > 1:
        leaks["conmon_fds"] = {"seen": sorted(set(fds))}
    if not keep:
        unprepare()
    return {
        "cycles": cycles,
        "kills": cycles // kill_every if kill_every else 0,
        "seconds": round(time.monotonic() - began, 1),
        "failures": failures,
        "leaks": leaks,
        "conmon_fds": sorted(set(fds)),
        "baseline": {key: len(value) for key, value in before.items()},
        "timings": {key: _percentiles(values) for key, values in timings.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--kill-every", type=int, default=50)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox", help="use this running sandbox (scripts/sandbox up)")
    args = parser.parse_args(argv)
    if args.inside:
        summary = inside(args.cycles, args.kill_every)
        print(json.dumps(summary, indent=1))
        return 1 if summary["failures"] or summary["leaks"] else 0
    from tests.support.sandbox import VENV_PYTHON, Sandbox, inside_env

    command = [str(VENV_PYTHON), "-m", "bench.soak", "--inside", "--cycles", str(args.cycles),
               "--kill-every", str(args.kill_every)]  # fmt: skip

    def run_in(sandbox: Sandbox) -> int:
        argv = sandbox.nsenter_argv(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh",
                                     str(REPO_ROOT), *command])  # fmt: skip
        return subprocess.run(argv, env=inside_env(None), check=False).returncode

    if args.sandbox:
        return run_in(Sandbox.attach(args.sandbox))
    with Sandbox.booted() as sandbox:
        return run_in(sandbox)


if __name__ == "__main__":
    sys.exit(main())

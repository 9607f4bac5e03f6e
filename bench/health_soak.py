"""Health checks at scale (issue 14): N containers with 1 s checks for a while, sampled.

Boots a sandbox, generates N busybox containers whose `healthcheck` runs every second,
starts them and samples inside the sandbox with psutil every few seconds: the number of
processes, their total resident memory, PID 1's and journald's, how many health check
runs are in flight, the active timers, and the CPU the whole sandbox used (its cgroup's
`cpu.stat`). A leak shows as a growing process count or memory; the summary compares the
first and the last third of the samples. Then it stops everything and checks that no
timer, check unit or process is left. Not a test: `scripts/health-soak`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

SAMPLER = r"""
import json, psutil
procs = list(psutil.process_iter(["pid", "name", "cmdline", "memory_info"]))
def rss(p):
    info = p.info.get("memory_info")
    return info.rss if info else 0
cmd = lambda p: " ".join(p.info.get("cmdline") or [])
journald = lambda p: (p.info["name"] or "").startswith("systemd-journal")
check = lambda p: "healthcheck run" in cmd(p) and "psutil" not in cmd(p)
usage = 0
for line in open("/sys/fs/cgroup/cpu.stat"):
    key, value = line.split()
    if key == "usage_usec":
        usage = int(value)
print(json.dumps({
    "processes": len(procs),
    "rss_total": sum(rss(p) for p in procs),
    "pid1_rss": sum(rss(p) for p in procs if p.info["pid"] == 1),
    "journald_rss": sum(rss(p) for p in procs if journald(p)),
    "checks_running": sum(1 for p in procs if check(p)),
    "conmons": sum(1 for p in procs if p.info["name"] == "conmon"),
    "cpu_usec": usage,
}))
"""


def definitions(count: int, rootfs: str) -> str:
    lines = ["containers:"]
    for index in range(count):
        lines += [
            f"  soak{index:02d}:",
            f"    rootfs: {rootfs}",
            "    runtime: runc",
            "    tmpfs: [/tmp]",
            "    command: [sh, -c, \"trap 'exit 0' TERM; while :; do sleep 1; done\"]",
            "    healthcheck: {test: [CMD, 'true'], interval: 1s, timeout: 5s}",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=5)
    args = parser.parse_args(argv)

    from rootfs import busybox_rootfs

    from tests.support.sandbox import Sandbox

    python = str(REPO / ".venv" / "bin" / "python")
    units = [f"soak{i:02d}.service" for i in range(args.containers)]
    with Sandbox.booted() as sandbox:
        rootfs = busybox_rootfs(sandbox, "/var/tmp/soak/busybox")
        sandbox.write("/etc/podunit/soak.yaml", definitions(args.containers, rootfs))
        sandbox.run([str(REPO / "scripts" / "install-generator")])
        sandbox.run(["systemctl", "daemon-reload"])

        def sample() -> dict[str, int]:
            data: dict[str, int] = json.loads(sandbox.run([python, "-c", SAMPLER]).stdout)
            timers = sandbox.run(
                ["systemctl", "list-units", "--no-legend", "--state=active", "soak*-health.timer"]
            ).stdout.decode()
            data["timers"] = len(timers.splitlines())
            return data

        baseline = sample()
        print("before start:", json.dumps(baseline), flush=True)
        sandbox.run(["systemctl", "start", *units], timeout=300)
        time.sleep(3)  # the first checks
        samples: list[dict[str, int]] = []
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            data = sample()
            data["t"] = round(time.monotonic() - started)
            samples.append(data)
            print(json.dumps(data), flush=True)
            time.sleep(args.interval)
        checks_done = (
            sandbox.run(["sh", "-c", "journalctl -u 'soak*-health.service' -o cat | wc -l"])
            .stdout.decode()
            .strip()
        )
        sandbox.run(["systemctl", "stop", *units], timeout=300)
        time.sleep(1)
        after = sample()
        left = sandbox.run(
            ["systemctl", "list-units", "--no-legend", "--state=active,activating", "soak*"]
        ).stdout.decode()

    third = max(1, len(samples) // 3)

    def mean(key: str, part: list[dict[str, int]]) -> float:
        return statistics.fmean(s[key] for s in part)

    summary = {
        "containers": args.containers,
        "seconds": args.seconds,
        "samples": len(samples),
        "cpu_share_of_one_core": round(
            (samples[-1]["cpu_usec"] - samples[0]["cpu_usec"])
            / 1e6
            / max(samples[-1]["t"] - samples[0]["t"], 1),
            3,
        ),
        **{
            f"{key}_first_third_mean": round(mean(key, samples[:third]))
            for key in ("processes", "rss_total", "pid1_rss", "journald_rss")
        },
        **{
            f"{key}_last_third_mean": round(mean(key, samples[-third:]))
            for key in ("processes", "rss_total", "pid1_rss", "journald_rss")
        },
        "processes_max": max(s["processes"] for s in samples),
        "checks_in_flight_max": max(s["checks_running"] for s in samples),
        "timers_active": samples[-1]["timers"],
        "journal_lines_of_check_units": int(checks_done or 0),
        "before_start": baseline,
        "after_stop": after,
        "units_left_active": left.split(),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

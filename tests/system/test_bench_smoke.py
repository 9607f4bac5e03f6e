"""Smoke test of the benchmark harness (bench/, issue 6) in the shared sandbox: one
start/stop cycle and one exec of a podunit unit and of the runc floor, one generator
run, rendered into the table; then everything the harness set up is removed.
Podman is left out (CI need not have it; scripts/bench installs it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.sandbox import VENV_PYTHON, Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench import report
from bench.inside import DEFINITION, WORK, Sizes

pytestmark = pytest.mark.system

OUTPUT = "/run/podunit-bench-smoke.json"
SIZES = Sizes(
    lifecycle_repeats=1,
    exec_repeats=1,
    generator_counts=(1,),
    generator_repeats=1,
    contenders=("podunit", "runc"),
    scenarios=("generator", "lifecycle", "exec"),
    budget_seconds=60.0,
)


def test_bench_smoke(sandbox: Sandbox, repo_root: Path) -> None:
    env = {"PYTHONPATH": str(repo_root)}
    bench = [str(VENV_PYTHON), "-m", "bench.inside"]
    try:
        sandbox.run([*bench, json.dumps(SIZES.to_json()), OUTPUT], env=env, timeout=120)
        results = json.loads(sandbox.read(OUTPUT))
    finally:
        sandbox.run([*bench, "teardown"], env=env)
        sandbox.run(["rm", "-f", OUTPUT])
    scenarios = results["scenarios"]
    for scenario in ("start", "stop", "exec"):
        for contender in ("podunit", "runc"):
            measurement = scenarios[scenario][contender]
            assert "error" not in measurement, measurement
            assert len(measurement["samples"]) == 1
            assert 0 < measurement["samples"][0] < 60_000
    generator = scenarios["generator"]["1"]
    assert len(generator["samples"]) == 1
    warm = scenarios["generator"]["warm-1"]  # the cache hit is checked by the scenario
    assert "error" not in warm and len(warm["samples"]) == 1, warm
    if os.access("/usr/bin/time", os.X_OK):  # GNU time measures the peak RSS
        assert generator["maxrss_kib"] > 1000  # a Python process: megabytes
    else:
        assert generator["maxrss_kib"] is None
    assert scenarios["generator"]["floor"]["samples"]

    text = report.render(results)
    assert "| start: `systemctl start` until active |" in text
    assert "| generator <= 30 ms for 1 definition, cold (boot) |" in text
    assert "| generator <= 30 ms for 1 definition, warm (daemon-reload) |" in text

    left = sandbox.sh(
        f"ls {DEFINITION.parent}/{DEFINITION.stem}-* {WORK} 2>/dev/null;"
        " systemctl list-units --all --plain --no-legend 'bpu-*' 'bpm-*';"
        " runc list -q | grep '^br'",
        check=False,
    )
    assert left.stdout.decode().split() == []

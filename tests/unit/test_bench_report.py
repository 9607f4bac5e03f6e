"""The benchmark's pure parts: statistics, verdicts against the issue's targets, the
Markdown table, the results file's generated section, sizes and option parsing."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

# bench/ is a directory of the checkout, not part of the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import report
from bench.inside import (
    BenchFailure,
    PodmanUnits,
    PodunitUnits,
    Recorder,
    Sizes,
    catches_sigterm,
    rotated,
    scenario_lifecycle,
    wait_until_terminable,
)
from bench.main import BEGIN, END, parse_args, sizes_from, write_results
from bench.profile import collapsed_inclusive, import_times
from bench.stats import Summary, all_of, at_most, cell, number, ratio, summary
from toolkit.errors import PodunitError


def results(**scenarios: dict[str, Any]) -> dict[str, Any]:
    return {"meta": {"sizes": {"density": 100, "burst": 50}}, "scenarios": scenarios}


def samples(*values: float) -> dict[str, Any]:
    return {"samples": list(values)}


def verdict(found: dict[str, Any], target_prefix: str) -> str:
    (match,) = [v for v in report.verdicts(found) if v.target.startswith(target_prefix)]
    return match.mark


def test_summary_is_median_and_range() -> None:
    assert Summary.of([5, 1, 3, 100]) == Summary(4, 4.0, 1, 100)
    with pytest.raises(ValueError):
        Summary.of([])


def test_failed_or_missing_measurements_have_no_summary() -> None:
    assert summary({"samples": [1.0], "error": "boom"}) is None
    assert summary({"samples": []}) is None
    assert summary(None) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 4.0) == 0.25


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (0.41234, "0.412"), (4.1234, "4.12"), (41.234, "41.2"), (412.5, "412"),
     (4123.4, "4123")],
)  # fmt: skip
def test_numbers_keep_three_significant_digits(value: float, text: str) -> None:
    assert number(value) == text


def test_cells_show_the_range_only_for_several_samples() -> None:
    assert cell(Summary.of([10, 12, 30])) == "12.0 ms (10.0-30.0)"
    assert cell(Summary.of([500]), "KiB") == "500 KiB"
    assert cell(None) == "-"


def test_combined_verdicts_miss_when_any_part_misses() -> None:
    met, missed, unknown = at_most("a", 1, 2), at_most("b", 3, 2), at_most("c", None, 2)
    assert (met.mark, missed.mark, unknown.mark) == ("met", "MISSED", "n/a")
    assert all_of("x", [met, unknown]).met is None
    assert all_of("x", [unknown, missed]).met is False
    assert all_of("x", [met, met]).met is True


def test_start_target_needs_both_the_ratio_and_the_floor_gap() -> None:
    fast = results(start={"podunit": samples(100), "podman": samples(200), "runc": samples(70)})
    assert verdict(fast, "start") == "met"
    far_from_floor = results(
        start={"podunit": samples(100), "podman": samples(200), "runc": samples(50)}
    )
    assert verdict(far_from_floor, "start") == "MISSED"
    slower_than_podman = results(start={"podunit": samples(150), "podman": samples(200)})
    assert verdict(slower_than_podman, "start") == "MISSED"  # 0.75x, floor unknown
    assert verdict(results(), "start") == "n/a"


def test_ratio_targets() -> None:
    found = results(
        exec={"podunit": samples(50), "podman": samples(100)},
        stop={"podunit": samples(101), "podman": samples(100)},
        burst={"podunit": samples(10), "podman": {"samples": [], "error": "podman broke"}},
    )
    assert verdict(found, "exec") == "met"
    assert verdict(found, "stop") == "MISSED"
    assert verdict(found, "burst") == "n/a"


def test_memory_target_counts_resident_podunit_processes() -> None:
    lean = {"samples": [400.0], "podunit_processes": 0, "resident_elsewhere": []}
    podman = {"samples": [410.0]}
    assert verdict(results(density={"podunit": lean, "podman": podman}), "memory") == "met"
    daemon = {**lean, "resident_elsewhere": ["42: podunit daemon"]}
    assert verdict(results(density={"podunit": daemon, "podman": podman}), "memory") == "MISSED"
    within_a_page = {**lean, "samples": [413.0]}
    assert verdict(results(density={"podunit": within_a_page, "podman": podman}), "memory") == "met"
    heavier = {**lean, "samples": [420.0]}
    assert verdict(results(density={"podunit": heavier, "podman": podman}), "memory") == "MISSED"


def test_generator_targets_cold_and_warm() -> None:
    found = results(
        generator={
            "1": samples(29),
            "1000": samples(121),
            "warm-1": samples(31),
            "warm-1000": samples(50),
            "floor": samples(12),
        }
    )
    assert verdict(found, "generator <= 30 ms for 1 definition, cold") == "met"
    assert verdict(found, "generator <= 120 ms for 1000 definitions, cold") == "MISSED"
    assert verdict(found, "generator <= 30 ms for 1 definition, warm") == "MISSED"
    assert verdict(found, "generator <= 120 ms for 1000 definitions, warm") == "met"
    unmeasured = results(generator={"1": samples(29)})
    assert verdict(unmeasured, "generator <= 120 ms for 1000 definitions, warm") == "n/a"


def test_render_shows_failures_once_with_every_place() -> None:
    broken = {"samples": [], "error": "setrlimit | denied"}
    found = results(
        start={"podunit": samples(300, 320), "podman": samples(400), "crun": broken},
        stop={"podunit": samples(50), "podman": samples(100), "crun": broken},
        generator={
            "1": {"samples": [40.0], "maxrss_kib": 20480},
            "warm-1": {"samples": [14.0], "maxrss_kib": 10240},
            "101": samples(240.0),
            "warm-101": {"samples": [], "error": "the warm generator run missed its cache"},
            "floor": samples(12.0),
        },
    )
    text = report.render(found)
    assert "| start: `systemctl start` until active | 310 ms (300-320) | 400 ms | failed |" in text
    assert "| 0.78x | 0.75x |" in text  # medians 310 / 400, minimums 300 / 400
    assert "- start/crun, stop/crun: setrlimit | denied" in text  # a list, not a table
    assert "- generator/warm-101: the warm generator run missed its cache" in text
    assert "| 1 | 40.0 ms | 14.0 ms | 40.0 ms | 20.0 MiB / 10.0 MiB | 3.00 ms |" in text
    assert "| 101 | 240 ms | failed | 2.38 ms / 2.00 ms | - / - | - |" in text
    assert "| 0: `python3 -I -S -c pass` (interpreter floor) | 12.0 ms | - | - | - | - |" in text


def test_write_results_replaces_only_the_generated_section(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Results\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## Profiles\nkept\n")
    write_results("new table\n", path)
    assert path.read_text() == (
        f"# Results\n\nintro\n\n{BEGIN}\nnew table\n{END}\n\n## Profiles\nkept\n"
    )
    fresh = tmp_path / "fresh.md"
    write_results("table\n", fresh)
    assert f"{BEGIN}\ntable\n{END}" in fresh.read_text()


def test_sizes_round_trip_through_json_and_options() -> None:
    quick = Sizes.quick()
    assert Sizes.from_json({**quick.to_json(), "unknown": 1}) == quick
    chosen = sizes_from(parse_args(["--quick", "--contenders", "podunit, runc"]))
    assert chosen.contenders == ("podunit", "runc")
    assert chosen.lifecycle_repeats == quick.lifecycle_repeats
    with pytest.raises(PodunitError, match="unknown scenarios: warp"):
        sizes_from(parse_args(["--scenarios", "exec,warp"]))


def test_rotation_starts_each_repetition_with_another_contender() -> None:
    assert [rotated(["a", "b", "c"], turn)[0] for turn in range(4)] == ["a", "b", "c", "a"]
    assert rotated([], 3) == []


def test_contender_units_are_equivalent() -> None:
    definition = PodunitUnits("runc").definition(2)
    assert definition.count("runtime: runc") == 2
    assert "bpu-1:" in definition
    assert "network: none" in definition
    unit = PodmanUnits().unit("bpm-0")
    for expected in ("Type=notify", "KillMode=mixed", "Delegate=yes", "--sdnotify=conmon",
                     "--cgroups=split", "--network=none", "--pids-limit=0", "runc",
                     '"trap \'exit 0\' TERM; sleep 1000000 & wait"'):  # fmt: skip
        assert expected in unit
    # podman run stops parsing options at the rootfs: every option must come before it
    run_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert run_line.index("--rootfs") > run_line.index("--network=none")


def test_import_times_take_the_minimum_per_module() -> None:
    header = "import time: self [us] | cumulative | imported package\n"
    runs = [
        header + "import time:       300 |        500 |   yaml.reader\n"
        "import time:      1000 |       9000 | yaml\n",
        header + "import time:       200 |        700 |   yaml.reader\n"
        "import time:      1200 |       8000 | yaml\nnoise\n",
    ]
    assert import_times(runs) == [("yaml", 8.0, 1.0), ("yaml.reader", 0.5, 0.2)]


def test_collapsed_stacks_count_a_frame_once_per_sample() -> None:
    raw = (
        "podunit;main (toolkit/cli/main.py:1);run (toolkit/ops.py:5);run (toolkit/ops.py:7) 3\n"
        "podunit;main (toolkit/cli/main.py:2);select (selectors.py:9) 1\n"
        "garbage line\n"
    )
    assert collapsed_inclusive(raw) == [
        ("main (toolkit/cli/main.py)", 100.0),
        ("run (toolkit/ops.py)", 75.0),
    ]
    assert collapsed_inclusive("") == []


class StandIn:
    """A contender whose start can be made to fail; records the order of calls (the
    harness's bookkeeping is under test here, not a container runtime)."""

    def __init__(
        self, key: str, calls: list[str], fail_on_start: int | None = None, payload: int = 0
    ) -> None:
        self.key, self.calls, self.fail_on_start = key, calls, fail_on_start
        self.starts = 0
        self.payload = payload

    def name(self, index: int) -> str:
        return f"{self.key}-{index}"

    def start(self, names: Sequence[str]) -> None:
        self.starts += 1
        self.calls.append(f"start {self.key}")
        if self.starts == self.fail_on_start:
            raise BenchFailure(f"{self.key} would not start")

    def stop(self, names: Sequence[str]) -> None:
        self.calls.append(f"stop {self.key}")

    def check_active(self, names: Sequence[str]) -> None:
        pass

    def cleanup(self, names: Sequence[str]) -> None:
        self.calls.append(f"cleanup {self.key}")

    def prepare(self, count: int) -> None:
        pass

    def exec_argv(self, name: str) -> list[str]:
        return ["true"]

    def ps_argv(self) -> list[str]:
        return ["true"]

    def resident_pids(self, names: Sequence[str]) -> list[int]:
        return []

    def payload_pids(self, names: Sequence[str]) -> list[int]:
        return [self.payload] * len(names)


@pytest.fixture
def trapping_shell() -> Iterator[int]:
    """A shell that installs a SIGTERM trap (a moment after it starts, like the payload)."""
    shell = subprocess.Popen(["sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait"])
    yield shell.pid
    shell.terminate()
    shell.wait()


def test_waiting_for_the_payload_to_catch_sigterm(trapping_shell: int) -> None:
    wait_until_terminable(StandIn("ready", [], payload=trapping_shell), ["ready-0"])
    assert catches_sigterm(trapping_shell)
    sleeper = subprocess.Popen(["sleep", "30"])  # default SIGTERM disposition
    try:
        assert not catches_sigterm(sleeper.pid)
        with pytest.raises(BenchFailure, match="never caught SIGTERM"):
            wait_until_terminable(StandIn("deaf", [], payload=sleeper.pid), ["x"], timeout=0.1)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not catches_sigterm(sleeper.pid)  # gone


def test_lifecycle_alternates_and_a_failing_contender_drops_out(trapping_shell: int) -> None:
    calls: list[str] = []
    good = StandIn("good", calls, payload=trapping_shell)
    flaky = StandIn("flaky", calls, fail_on_start=3, payload=trapping_shell)
    recorder = Recorder(deadline=time.monotonic() + 60)
    scenario_lifecycle([good, flaky], Sizes(lifecycle_repeats=4), recorder)
    starts = [call.split()[1] for call in calls if call.startswith("start")]
    # warm-up of each, then rotated order per repetition; flaky fails on its 3rd start
    assert starts == ["good", "flaky", "good", "flaky", "flaky", "good", "good", "good"]
    assert len(recorder.results["start"]["good"]["samples"]) == 4
    assert len(recorder.results["stop"]["good"]["samples"]) == 4
    assert recorder.results["start"]["flaky"]["error"] == "flaky would not start"
    assert len(recorder.results["start"]["flaky"]["samples"]) == 1
    assert "cleanup flaky" in calls


def test_a_spent_budget_stops_repeating_and_is_reported(trapping_shell: int) -> None:
    calls: list[str] = []
    recorder = Recorder(deadline=time.monotonic() - 1)
    late = StandIn("late", calls, payload=trapping_shell)
    scenario_lifecycle([late], Sizes(lifecycle_repeats=5), recorder)
    assert recorder.results["start"]["_note"] == {"truncated": True}
    assert calls == ["cleanup late", "start late", "stop late"]  # only the warm-up ran
    text = report.render({"meta": {}, "scenarios": recorder.results})
    assert "- time budget spent: fewer repetitions in start" in text


def test_the_bridge_network_rows_and_targets() -> None:
    found: dict[str, Any] = {
        "meta": {"sizes": {"density": 100, "burst": 50}},
        "scenarios": {
            "net-start": {"podunit": {"samples": [150]}, "podman": {"samples": [200]}},
            "net-stop": {"podunit": {"samples": [300]}, "podman": {"samples": [250]}},
        },
    }
    assert verdict(found, "bridge network + port: start") == "met"
    assert verdict(found, "bridge network + port: stop") == "MISSED"
    table = "\n".join(report.main_table(found))
    assert "start, bridge network + 1 published port" in table and "0.75x" in table

"""The benchmark table and target verdicts as Markdown, from `bench.inside`'s JSON (pure).

Targets are the issue's (a standing goal, not a test gate): start <= 0.6x Podman
and within 40 ms of the raw runtime; exec <= 0.5x Podman; stop <= Podman; memory
per running container <= Podman's (within a page) with no podunit process resident; generator
<= 30 ms for 1 definition and <= 120 ms for 1000, each cold (boot: no cache) and warm
(daemon-reload of an unchanged tree: the generator's cache hits); burst <= 0.5x Podman.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.inside import QUADLET_REFERENCE_MS
from bench.stats import (
    Verdict,
    all_of,
    at_most,
    cell,
    median,
    number,
    ratio,
    ratio_cell,
    summary,
)

# Table columns: contender key -> heading, in this order.
COLUMNS = {
    "podunit": "podunit (runc)",
    "podman": "Podman 4.3.1 (runc)",
    "runc": "runc (floor)",
    "crun": "crun (floor)",
    "podunit-crun": "podunit (crun)",
}
ERROR_LENGTH = 240
# PSS differences below a page per container are accounting noise (a longer command
# line or environment), not a different design: the memory verdict allows one page.
PAGE_KIB = 4.0


def _scenarios(results: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    found: Mapping[str, Mapping[str, Any]] = results.get("scenarios", {})
    return found


def _rows(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(scenario key, row label, unit) of the main table."""
    sizes = results.get("meta", {}).get("sizes", {})
    density, burst = sizes.get("density", "N"), sizes.get("burst", "N")
    return [
        ("start", "start: `systemctl start` until active", "ms"),
        ("stop", "stop: `systemctl stop` (payload exits on SIGTERM)", "ms"),
        ("net-start", "start, bridge network + 1 published port", "ms"),
        ("net-stop", "stop, bridge network + 1 published port", "ms"),
        ("exec", "exec: `exec NAME true`", "ms"),
        ("ps", f"`ps` with {density} containers running", "ms"),
        ("burst", f"burst: {burst} units started at once until all active", "ms"),
        ("density", f"memory per running container (PSS, {density} running)", "KiB"),
    ]


def main_table(results: Mapping[str, Any]) -> list[str]:
    scenarios = _scenarios(results)
    present = [
        key for key in COLUMNS if any(key in scenarios.get(row, {}) for row, _, _ in _rows(results))
    ]
    heading = [
        "scenario",
        *(COLUMNS[key] for key in present),
        "podunit / Podman (medians)",
        "(minimums)",
    ]
    lines = [_row(heading), _row(["---"] * len(heading))]
    for key, label, unit in _rows(results):
        measurements = scenarios.get(key, {})
        if not measurements:
            continue
        cells = [label]
        for contender in present:
            measurement = measurements.get(contender)
            if measurement and measurement.get("error"):
                cells.append("failed")
            elif contender in ("runc", "crun") and key == "density":
                cells.append("0 (no monitor)")
            else:
                cells.append(cell(summary(measurement), unit))
        podunit, podman = summary(measurements.get("podunit")), summary(measurements.get("podman"))
        if podunit is None or podman is None:
            cells += ["-", "-"]
        else:
            cells.append(ratio_cell(ratio(podunit.median, podman.median)))
            cells.append(ratio_cell(ratio(podunit.low, podman.low)))
        lines.append(_row(cells))
    return lines


def generator_table(results: Mapping[str, Any]) -> list[str]:
    """Cold (`N`: no cache, the boot case) and warm (`warm-N`: daemon-reload of an
    unchanged tree, the cache hits) runs per number of definitions."""
    scenarios = _scenarios(results)
    saved = results.get("meta", {}).get("quadlet_reference_ms", QUADLET_REFERENCE_MS)
    reference = {int(count): float(ms) for count, ms in saved.items()}
    runs = scenarios.get("generator", {})
    counts = sorted(int(key) for key in runs if key.isdigit())
    if not counts:
        return []
    heading = [
        "definitions",
        "cold (boot, no cache)",
        "warm (daemon-reload, unchanged)",
        "cold per definition (all / beyond the first)",
        "peak RSS cold / warm",
        "Quadlet (issue's reference, not measured)",
    ]
    lines = [_row(heading), _row(["---"] * len(heading))]
    one = median(runs.get("1"))
    for count in counts:
        measurement = runs[str(count)]
        warm = runs.get(f"warm-{count}", {})
        found = summary(measurement)
        per_definition = "-" if found is None else f"{number(found.median / count)} ms"
        if found is not None and one is not None and count > 1:
            per_definition += f" / {number((found.median - one) / (count - 1))} ms"
        quadlet = f"{number(reference[count])} ms" if count in reference else "-"
        memory = f"{_kib(measurement.get('maxrss_kib'))} / {_kib(warm.get('maxrss_kib'))}"
        lines.append(
            _row(
                [
                    str(count),
                    "failed" if measurement.get("error") else cell(found),
                    "failed" if warm.get("error") else cell(summary(warm)),
                    per_definition,
                    memory,
                    quadlet,
                ]
            )
        )
    floor = runs.get("floor", {})
    if floor:
        lines.append(
            _row(
                [
                    "0: `python3 -I -S -c pass` (interpreter floor)",
                    cell(summary(floor)),
                    "-",
                    "-",
                    _kib(floor.get("maxrss_kib")),
                    "-",
                ]
            )
        )
    return lines


def _kib(value: Any) -> str:
    """KiB as MiB; a list (older result files) by its maximum."""
    if isinstance(value, list):
        value = max(value, default=None)
    return "-" if value is None else f"{number(float(value) / 1024)} MiB"


def verdicts(results: Mapping[str, Any]) -> list[Verdict]:
    scenarios = _scenarios(results)

    def med(scenario: str, key: str) -> float | None:
        return median(scenarios.get(scenario, {}).get(key))

    def versus_podman(target: str, scenario: str, factor: float) -> Verdict:
        value = ratio(med(scenario, "podunit"), med(scenario, "podman"))
        shown = None if value is None else f"{value:.2f}x Podman"
        return at_most(target, value, factor, shown)

    start, floor = med("start", "podunit"), med("start", "runc")
    gap = None if start is None or floor is None else start - floor
    podunit_memory, podman_memory = med("density", "podunit"), med("density", "podman")
    density = scenarios.get("density", {})
    podunit_density = density.get("podunit", {})
    resident = int(podunit_density.get("podunit_processes", 0)) + len(
        podunit_density.get("resident_elsewhere", [])
    )

    def generator(target: str, key: str, limit: float) -> Verdict:
        value = med("generator", key)
        return at_most(target, value, limit, None if value is None else f"{number(value)} ms")

    return [
        all_of(
            "start <= 0.6x Podman and within 40 ms of runc",
            [
                versus_podman("", "start", 0.6),
                at_most("", gap, 40.0, None if gap is None else f"{number(gap)} ms over runc"),
            ],
        ),
        versus_podman("exec <= 0.5x Podman", "exec", 0.5),
        versus_podman("stop <= Podman", "stop", 1.0),
        versus_podman("bridge network + port: start <= 0.8x Podman", "net-start", 0.8),
        versus_podman("bridge network + port: stop <= Podman", "net-stop", 1.0),
        all_of(
            "memory per container <= Podman's (to a page), no podunit process resident",
            [
                at_most(
                    "",
                    med("density", "podunit"),
                    None if podman_memory is None else podman_memory + PAGE_KIB,
                    None
                    if podman_memory is None or podunit_memory is None
                    else f"{number(podunit_memory)} vs {number(podman_memory)} KiB",
                ),
                at_most(
                    "",
                    float(resident) if podunit_density else None,
                    0.0,
                    f"{resident} podunit processes resident" if podunit_density else None,
                ),
            ],
        ),
        generator("generator <= 30 ms for 1 definition, cold (boot)", "1", 30.0),
        generator("generator <= 120 ms for 1000 definitions, cold (boot)", "1000", 120.0),
        generator("generator <= 30 ms for 1 definition, warm (daemon-reload)", "warm-1", 30.0),
        generator(
            "generator <= 120 ms for 1000 definitions, warm (daemon-reload)", "warm-1000", 120.0
        ),
        versus_podman("burst <= 0.5x Podman", "burst", 0.5),
    ]


def verdict_table(results: Mapping[str, Any]) -> list[str]:
    lines = [_row(["target", "measured", "verdict"]), _row(["---"] * 3)]
    lines += [_row([v.target, v.measured, v.mark]) for v in verdicts(results)]
    return lines


def errors(results: Mapping[str, Any]) -> list[str]:
    """One line per distinct failure, naming every scenario and contender it hit."""
    where: dict[str, list[str]] = {}
    for scenario, measurements in _scenarios(results).items():
        for key, measurement in measurements.items():
            text = measurement.get("error")
            if text:
                short = text if len(text) <= ERROR_LENGTH else text[: ERROR_LENGTH - 3] + "..."
                where.setdefault(short, []).append(f"{scenario}/{key}")
    return [f"- {', '.join(places)}: {text}" for text, places in where.items()]


def header(results: Mapping[str, Any]) -> list[str]:
    meta = results.get("meta", {})
    versions: Mapping[str, str] = meta.get("versions", {})
    sizes: Mapping[str, Any] = meta.get("sizes", {})
    machine = f"{versions.get('cpus', '?')} x {versions.get('cpu', '?')}, kernel " + versions.get(
        "kernel", "?"
    )
    software = ", ".join(
        versions[key] for key in ("systemd", "podman", "conmon", "runc", "crun") if key in versions
    )
    repeats = (
        f"{sizes.get('lifecycle_repeats')} start/stop cycles, {sizes.get('exec_repeats')} execs, "
        f"{sizes.get('ps_repeats')} ps, {sizes.get('burst_repeats')} bursts, "
        f"{sizes.get('generator_repeats')} generator runs per size"
    )
    truncated = [
        name
        for name, measurements in _scenarios(results).items()
        if measurements.get("_note", {}).get("truncated")
    ]
    lines = [
        f"- date: {meta.get('date', '?')}, podunit commit {meta.get('commit', '?')}, "
        f"run took {meta.get('seconds', '?')} s",
        f"- machine: {machine}, Python {versions.get('python', '?')}; one systemd-nspawn "
        "sandbox (systemd 252, cgroup v2 without controllers) on an overlay of Debian 12",
        f"- software: {software}",
        f"- repetitions: {repeats}; contenders alternate (rotated order each repetition); "
        "cells are median (min-max)",
    ]
    load = meta.get("load_average")
    if load:
        lines.append(
            "- load average (1/5/15 min) at start and end: "
            + " and ".join("/".join(f"{value:.1f}" for value in sample) for sample in load)
            + " (the machine is shared; ratios within the run are what count)"
        )
    if truncated:
        lines.append(f"- time budget spent: fewer repetitions in {', '.join(sorted(truncated))}")
    return lines


def render(results: Mapping[str, Any]) -> str:
    """The whole Markdown section: header, main table, generator table, verdicts, errors."""
    parts: list[Sequence[str]] = [
        header(results),
        main_table(results),
        generator_table(results),
        verdict_table(results),
    ]
    problems = errors(results)
    if problems:
        parts.append(["Failures:", *problems])
    return "\n\n".join("\n".join(part) for part in parts if part) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(text.replace("|", "\\|") for text in cells) + " |"

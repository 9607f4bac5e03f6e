"""Profiles of podunit's hot paths, run inside the sandbox: ``python -m bench.profile OUT``
(``scripts/bench --profile``). Writes a Markdown report to OUT.

- startup: minimum wall time of the layers every podunit process pays (interpreter,
  the venv's site with the editable-install finder, importing the verb's module,
  building the argparse grammar) next to `podman` and `runc`.
- imports: ``-X importtime`` of the generator's and the runtime's imports, minimum
  over several runs per module, largest cumulative first.
- `podunit run NAME` as a unit's ExecStart, `podunit exec NAME true` and the
  generator on 1000 definitions: sampled with py-spy (when installed in the venv:
  ``.venv/bin/pip install py-spy``; it is not a project dependency) and with
  cProfile (deterministic, always available).
"""

from __future__ import annotations

import contextlib
import io
import os
import pstats
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.inside import (
    GENERATOR,
    PODUNIT,
    WORK,
    Sizes,
    contender,
    log,
    setup,
    write_generator_definitions,
)
from toolkit import proc
from toolkit.errors import PodunitError
from toolkit.unitgen.escape import command_line

VENV = Path(PODUNIT).parent
PYTHON = str(VENV / "python")
PY_SPY = VENV / "py-spy"
SITE_PACKAGES = VENV.parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
REPO = str(Path(PODUNIT).parents[2])
DROP_IN = Path("/run/systemd/system")
LINE_NUMBER = re.compile(r":\d+\)$")
# What generators/podunit-generator does instead of site processing.
SYS_PATH = f"import sys; sys.path[:0] = [{REPO!r}, {str(SITE_PACKAGES / 'site-packages')!r}]"
RESULTS = Path("/run/podunit-bench-profile")
GENERATED = Path("/run/systemd/generator")
LAUNCHER = str(Path(REPO) / "bin" / "podunit")
# What `podunit run --plan FILE NAME` imports on a unit's start (split cgroups, notify conmon).
RUN_MODULES = (
    "toolkit.cli.main",
    "toolkit.cli.containers",
    "toolkit.runtime.launch",
    "toolkit.runtime.lifecycle",
    "toolkit.definitions.model",
    "toolkit.definitions.instances",
    "toolkit.runtime.oci",
    "toolkit.runtime.conmon",
    "toolkit.systemd.cgroups",
    "toolkit.systemd.notify",
    "toolkit.systemd.activation",
)


def min_wall_ms(argv: Sequence[str], runs: int) -> float:
    """The fastest of `runs` runs of `argv` (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        proc.run(argv, check=False)
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def import_times(stderr_runs: Sequence[str]) -> list[tuple[str, float, float]]:
    """(module, cumulative ms, self ms) from ``-X importtime`` outputs, the minimum of each
    over the runs (python(1): ``import time: self [us] | cumulative | imported package``)."""
    cumulative: dict[str, list[int]] = defaultdict(list)
    own: dict[str, list[int]] = defaultdict(list)
    for text in stderr_runs:
        for line in text.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            fields = line.removeprefix("import time:").split("|")
            if len(fields) != 3:
                continue
            module = fields[2].strip()
            own[module].append(int(fields[0]))
            cumulative[module].append(int(fields[1]))
    rows = [(name, min(cumulative[name]) / 1000, min(own[name]) / 1000) for name in cumulative]
    return sorted(rows, key=lambda row: -row[1])


def collapsed_inclusive(text: str, keep: str = "toolkit/") -> list[tuple[str, float]]:
    """Share of samples (%) in which each function whose file contains `keep` is on the
    stack, from py-spy's ``--format raw`` (collapsed stacks: ``frame;frame;... count``;
    line numbers dropped, so a function counts once however many of its lines appear)."""
    totals: dict[str, int] = defaultdict(int)
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        for frame in {LINE_NUMBER.sub(")", frame) for frame in stack.split(";")}:
            if keep in frame:
                totals[frame] += count
    if not samples:
        return []
    rows = [(frame, 100.0 * count / samples) for frame, count in totals.items()]
    return sorted(rows, key=lambda row: -row[1])


def pstats_text(path: Path, limit: int = 25) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(str(path), stream=stream)
    stats.strip_dirs().sort_stats("cumulative").print_stats(limit)
    lines = [
        line
        for line in stream.getvalue().splitlines()
        if "{built-in method builtins" not in line and "<frozen importlib" not in line
    ]
    return "\n".join(line.rstrip() for line in lines if line.strip())


def wrapped(argv: Sequence[str], name: str, sampler: str) -> list[str]:
    """`argv` (a Python script and its arguments) under cProfile or py-spy, writing
    RESULTS/NAME.{cprof,txt}."""
    if sampler == "cprofile":
        output = str(RESULTS / f"{name}.cprof")
        return [PYTHON, "-m", "bench.cprofile_harness", output, *argv]
    return [
        str(PY_SPY),
        "record",
        "--rate",
        "1000",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(RESULTS / f"{name}.txt"),
        "--",
        *argv,
    ]


@contextlib.contextmanager
def exec_start_replaced(unit: str, argv: Sequence[str]) -> Iterator[None]:
    """A runtime drop-in replacing the unit's ExecStart with `argv` (removed afterwards)."""
    directory = DROP_IN / f"{unit}.d"
    directory.mkdir(parents=True, exist_ok=True)
    drop_in = directory / "50-profile.conf"
    drop_in.write_text(f"[Service]\nExecStart=\nExecStart={command_line(list(argv))}\n")
    proc.run(["systemctl", "daemon-reload"])
    try:
        yield
    finally:
        drop_in.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()
        proc.run(["systemctl", "daemon-reload"])


def startup_section(runs: int) -> list[str]:
    sys_path = SYS_PATH
    layers = [
        (
            "`python3 -I -S -c pass` (bare interpreter)",
            ["/usr/bin/python3", "-I", "-S", "-c", "pass"],
        ),
        ("venv `python -c pass` (site and its .pth files)", [PYTHON, "-c", "pass"]),
        ("venv `python -S -c pass`", [PYTHON, "-S", "-c", "pass"]),
        (
            "`-S` + the modules `podunit run --plan` imports",
            [PYTHON, "-S", "-c", f"{sys_path}; import {', '.join(RUN_MODULES)}"],
        ),
        (
            "`-S` + `import toolkit.runtime.exec` (exec)",
            [PYTHON, "-S", "-c", f"{sys_path}; import toolkit.runtime.exec"],
        ),
        (
            "`-S` + `toolkit.cli.main.build_parser()` (argparse; the units' forms skip it)",
            [PYTHON, "-S", "-c", f"{sys_path}; import toolkit.cli.main as c; c.build_parser()"],
        ),
        (
            "`bin/podunit rm -f NAME` of nothing (a unit's ExecStopPost after stop)",
            [LAUNCHER, "rm", "-f", "bench-nothing"],
        ),
        ("`podunit ps` (no containers)", [PODUNIT, "ps"]),
        ("`podman ps` (no containers)", ["/usr/bin/podman", "ps"]),
        ("`runc list`", ["runc", "list"]),
    ]
    lines = [f"| layer | fastest of {runs} runs |", "| --- | --- |"]
    for label, argv in layers:
        lines.append(f"| {label} | {min_wall_ms(argv, runs):.1f} ms |")
    return lines


def imports_section(runs: int, limit: int = 18) -> list[str]:
    """Import times of the generator (started like generators/podunit-generator: system
    python3 -I -S, sys.path set by hand) and of `podunit run` (the venv's console script)."""
    generator = [
        "/usr/bin/python3",
        "-I",
        "-S",
        "-X",
        "importtime",
        "-c",
        f"{SYS_PATH}; import toolkit.unitgen.generator, toolkit.definitions.loader,"
        " toolkit.unitgen.render",
    ]
    runtime = [PYTHON, "-X", "importtime", "-c", f"import {', '.join(RUN_MODULES)}"]
    lines = []
    for label, argv in (
        ("the generator (`python3 -I -S`)", generator),
        ("`podunit run --plan` (venv python, site)", runtime),
    ):
        outputs = [proc.run(argv, check=False).stderr.decode() for _ in range(runs)]
        rows = import_times(outputs)
        lines += [
            f"{label}: minimum over {runs} runs, largest cumulative first",
            "",
            "| module | cumulative ms | self ms |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {name} | {cum:.1f} | {own:.1f} |" for name, cum, own in rows[:limit]]
        lines.append("")
    return lines


def sampled(name: str) -> list[str]:
    """The py-spy summary of RESULTS/NAME.txt and the cProfile of RESULTS/NAME.cprof."""
    lines = []
    raw = RESULTS / f"{name}.txt"
    if raw.exists():
        rows = collapsed_inclusive(raw.read_text())[:20]
        lines += [
            "py-spy (1000 Hz), share of samples with the frame on the stack:",
            "",
            "| frame | % |",
            "| --- | --- |",
        ]
        lines += [f"| {frame} | {share:.0f} |" for frame, share in rows]
        lines.append("")
    profile = RESULTS / f"{name}.cprof"
    if profile.exists():
        lines += ["cProfile, cumulative:", "", "```", pstats_text(profile), "```", ""]
    return lines


def generated_exec_start(unit: str) -> list[str]:
    """The ExecStart= words the generator wrote for `unit` (`podunit run --plan F NAME`)."""
    for line in (GENERATED / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise PodunitError(f"{GENERATED / unit} has no ExecStart=")


def profile_unit_start(unit_name: str, samplers: Sequence[str]) -> list[str]:
    exec_start = generated_exec_start(f"{unit_name}.service")
    lines = [f"### `{' '.join(exec_start[1:])}` as ExecStart (`systemctl start`)", ""]
    for sampler in samplers:
        argv = wrapped(exec_start, "run", sampler)
        with exec_start_replaced(f"{unit_name}.service", argv):
            proc.run(["systemctl", "start", f"{unit_name}.service"])
            time.sleep(0.5)  # py-spy writes its output after podunit exited
            proc.run(["systemctl", "stop", f"{unit_name}.service"], check=False)
    return lines + sampled("run")


def profile_exec(unit_name: str, samplers: Sequence[str]) -> list[str]:
    lines = [f"### `podunit exec {unit_name} true`", ""]
    proc.run(["systemctl", "start", f"{unit_name}.service"])
    try:
        for sampler in samplers:
            proc.run(wrapped([PODUNIT, "exec", unit_name, "true"], "exec", sampler))
    finally:
        proc.run(["systemctl", "stop", f"{unit_name}.service"], check=False)
    return lines + sampled("exec")


def profile_generator(count: int, samplers: Sequence[str]) -> list[str]:
    lines = [f"### the generator on {count} definitions (output on tmpfs)", ""]
    sources = WORK / f"definitions-{count}"
    write_generator_definitions(sources, count)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PODUNIT_DEFINITION_DIRS": str(sources)}
    output = Path("/run/podunit-bench-generator")
    for sampler in samplers:
        shutil.rmtree(output, ignore_errors=True)
        dirs = [str(output / kind) for kind in ("normal", "early", "late")]
        for directory in dirs:
            os.makedirs(directory)
        argv = [GENERATOR, *dirs]
        if sampler == "cprofile":  # the generator's own interpreter flags, under cProfile
            argv = [
                "/usr/bin/python3",
                "-I",
                "-S",
                "-m",
                "cProfile",
                "-o",
                str(RESULTS / "generator.cprof"),
                GENERATOR,
                *dirs,
            ]
        else:
            argv = wrapped(argv, "generator", sampler)
        proc.run(argv, env=env)
    shutil.rmtree(output, ignore_errors=True)
    return lines + sampled("generator")


def main(argv: Sequence[str]) -> int:
    out = Path(argv[0])
    runs = int(argv[1]) if len(argv) > 1 else 10
    shutil.rmtree(RESULTS, ignore_errors=True)
    RESULTS.mkdir(parents=True)
    samplers = ["cprofile"] + (["py-spy"] if PY_SPY.exists() else [])
    log(f"profile: setup; samplers: {', '.join(samplers)}")
    unit = contender("podunit")
    setup(Sizes(contenders=("podunit",), density=1, burst=1), [unit])
    name = unit.name(0)
    sections = [
        [
            "## Profiles",
            "",
            f"Samplers: {', '.join(samplers)}."
            + ("" if PY_SPY.exists() else " (py-spy not installed in the venv: cProfile only)"),
            "",
            "### startup layers",
            "",
        ],
        startup_section(runs),
        [""],
        ["### imports", ""],
        imports_section(max(3, runs // 2)),
    ]
    for step in (profile_unit_start, profile_exec):
        log(f"profile: {step.__name__}")
        sections.append(step(name, samplers))
    log("profile: generator")
    sections.append(profile_generator(1000, samplers))
    out.write_text("\n".join("\n".join(part) for part in sections) + "\n")
    subprocess.run(["rm", "-rf", str(RESULTS)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Host side of `scripts/bench`: boot one sandbox, run `bench.inside` in it, print the table.

``--quick`` is a smoke run (few repetitions, 5 containers); the default full run
is bounded by its time budget (``Sizes.budget_seconds``, about 13 minutes plus
boot). ``--write-results`` puts the rendered section between the markers of
``bench/RESULTS.md`` and the raw JSON next to it; ``--render JSON`` only renders
a saved run; ``--profile`` profiles podunit's hot paths instead (`bench.profile`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import report
from bench.inside import Sizes
from tests.support.sandbox import REPO_ROOT, VENV_PYTHON, Sandbox, inside_env
from toolkit import proc
from toolkit.errors import PodunitError

RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
RAW_RESULTS = REPO_ROOT / "bench" / "results.json"
PROFILES = REPO_ROOT / "bench" / "PROFILES.md"
INSIDE_OUTPUT = "/run/podunit-bench-results.json"
BEGIN, END = "<!-- bench:begin (scripts/bench --write-results) -->", "<!-- bench:end -->"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats, small N")
    parser.add_argument(
        "--contenders", help="comma-separated subset of " + ",".join(Sizes().contenders)
    )
    parser.add_argument(
        "--scenarios", help="comma-separated subset of " + ",".join(Sizes().scenarios)
    )
    parser.add_argument(
        "--write-results",
        action="store_true",
        help=f"update {RESULTS.relative_to(REPO_ROOT)} and the raw JSON",
    )
    parser.add_argument("--json", type=Path, help="also save the raw results here")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only render saved results")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile podunit's hot paths instead (bench/profile.py; with --write-results: "
        f"{PROFILES.relative_to(REPO_ROOT)})",
    )
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    changes: dict[str, Any] = {}
    for option in ("contenders", "scenarios"):
        text = getattr(args, option)
        if text:
            chosen = tuple(item.strip() for item in text.split(",") if item.strip())
            unknown = sorted(set(chosen) - set(getattr(Sizes(), option)))
            if unknown:
                raise PodunitError(f"unknown {option}: {', '.join(unknown)}")
            changes[option] = chosen
    return dataclasses.replace(sizes, **changes)


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise PodunitError("scripts/bench needs root (it boots a systemd sandbox)")
    for program in ("podman", "conmon", "runc"):
        proc.which(program)


def run_in_sandbox(sizes: Sizes) -> dict[str, Any]:
    """Boot one sandbox, run every scenario in it (progress on stderr), return the results."""
    # its own network namespace: the network scenario makes bridges and DNAT rules
    with Sandbox.booted(private_network=True) as sandbox:
        argv = [str(VENV_PYTHON), "-m", "bench.inside", json.dumps(sizes.to_json()), INSIDE_OUTPUT]
        proc.run(
            sandbox.nsenter_argv(argv),
            capture=False,
            env=inside_env({"PYTHONPATH": str(REPO_ROOT)}),
        )
        results: dict[str, Any] = json.loads(sandbox.read(INSIDE_OUTPUT))
    results["meta"]["commit"] = commit()
    return results


def profile_in_sandbox(runs: int) -> str:
    """Boot one sandbox, run `bench.profile` in it, return its Markdown."""
    with Sandbox.booted() as sandbox:
        argv = [str(VENV_PYTHON), "-m", "bench.profile", INSIDE_OUTPUT, str(runs)]
        proc.run(
            sandbox.nsenter_argv(argv),
            capture=False,
            env=inside_env({"PYTHONPATH": str(REPO_ROOT)}),
        )
        return sandbox.read(INSIDE_OUTPUT).decode()


def commit() -> str:
    try:
        head = proc.output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    except PodunitError:
        return "unknown"
    return head


def write_results(text: str, path: Path = RESULTS) -> None:
    """Replace the generated part of `path` (between the markers), keep the rest."""
    section = f"{BEGIN}\n{text}{END}"
    old = path.read_text() if path.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN in old and END in old:
        before, rest = old.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        path.write_text(before + section + after)
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + section + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.profile:
            check_prerequisites()
            text = profile_in_sandbox(3 if args.quick else 10)
            text = f"<!-- generated by scripts/bench --profile, commit {commit()} -->\n{text}"
            print(text)
            if args.write_results:
                PROFILES.write_text(text)
            return 0
        if args.render:
            results = json.loads(args.render.read_text())
        else:
            sizes = sizes_from(args)
            check_prerequisites()
            results = run_in_sandbox(sizes)
        text = report.render(results)
        print(text)
        raw = json.dumps(results, indent=1) + "\n"
        if args.json:
            args.json.write_text(raw)
        if args.write_results:
            write_results(text)
            RAW_RESULTS.write_text(raw)
    except PodunitError as error:
        hint = f" (hint: {error.hint})" if error.hint else ""
        print(f"bench: {error}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""podunit benchmarks against Podman and the raw OCI runtimes (issue 6).

`scripts/bench` is the one command: it boots one sandbox (`tests.support.sandbox`),
runs `bench.inside` in it (every contender in the same systemd, alternating)
and prints the table that `bench.report` renders (also written to
``bench/RESULTS.md`` with ``--write-results``).

- `bench.stats`: medians, ranges, ratios, target verdicts (pure).
- `bench.report`: the Markdown table and verdict lines (pure).
- `bench.inside`: the scenarios, run inside the sandbox; prints JSON.
- `bench.main`: the host side (sandbox, podman check, rendering).
"""

"""Micro-benchmark of `load_all`: `python -m toolkit.definitions.bench [COUNT]`.

Writes COUNT small definition files (default 1000) into a temporary directory
and prints the CPU time `load_all` takes over them, best of three runs. The
generator's budget (whole process) is 30 ms for 1 definition and 120 ms for 1000.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

DEFINITION = """\
containers:
  web{index}:
    image: docker.io/library/nginx:1.27
    command: [nginx, -g, "daemon off;"]
    ports: ["{port}:80"]
    environment: {{A: "1", B: two}}
    restart: always
    stop_timeout: 30s
    resources: {{memory: 512M}}
"""


def write_definitions(directory: Path, count: int) -> None:
    """COUNT files `cNNNN.yaml`, one small container each."""
    for index in range(count):
        text = DEFINITION.format(index=index, port=1024 + index % 60000)
        (directory / f"c{index:05d}.yaml").write_text(text)


def time_load_all(directory: Path, runs: int = 3) -> tuple[float, int]:
    """Best CPU time of `load_all` over `directory` in seconds, and the containers found."""
    from toolkit.definitions.loader import load_all

    best, found = float("inf"), 0
    for _ in range(runs):
        started = time.process_time()
        result = load_all([directory])
        best = min(best, time.process_time() - started)
        found = len(result.containers)
    return best, found


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 1000
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        write_definitions(directory, count)
        seconds, found = time_load_all(directory)
    per_file = seconds / max(count, 1) * 1e6
    summary = f"{count} files, {found} containers, {seconds * 1e3:.1f} ms"
    print(f"load_all: {summary} ({per_file:.0f} µs/file)")
    return 0 if found == count else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

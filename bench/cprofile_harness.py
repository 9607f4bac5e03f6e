"""cProfile around a Python script that may end with ``os._exit``:
``python -m bench.cprofile_harness OUTPUT SCRIPT ARGS...`` (used by bench/profile.py).

The CLI's fast forms (the exact command lines units run) end with ``os._exit`` once
their output is flushed, skipping the interpreter's shutdown and with it
``python -m cProfile``'s report. Here the profile is written before that exit.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import sys
from typing import NoReturn


def main() -> None:
    output, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    profile, exit_now = cProfile.Profile(), os._exit

    def dump_then_exit(status: int) -> NoReturn:
        profile.disable()
        profile.dump_stats(output)
        exit_now(status)

    os._exit = dump_then_exit
    profile.enable()
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        profile.disable()
        profile.dump_stats(output)


if __name__ == "__main__":
    main()

"""`podunit logs [-f] [--tail N] NAME` (spec §4): the command line of toolkit.runtime.logs."""

from __future__ import annotations

import argparse
import os
import sys

from toolkit.runtime.logs import lookup_log_target, show_logs
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.state import StateStore

EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a command killed by SIGPIPE


def cli_logs(args: argparse.Namespace) -> int:
    """Handler of `podunit logs`."""
    with StateStore(RuntimePaths.for_mode(args.user)) as store:
        target = lookup_log_target(store, args.names)
        try:
            show_logs(
                name=target.name,
                container_id=target.container_id,
                driver=target.driver,
                log_path=target.log_path,
                tail=args.tail,
                follow=args.follow,
                still_running=target.still_running,
            )
        except BrokenPipeError:  # `podunit logs NAME | head`: end like `cat` would
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_BROKEN_PIPE
    return 0

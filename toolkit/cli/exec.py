"""`podunit exec`: run a command in a running container, and manage its exec sessions.

Spec §4; the sessions are `toolkit.runtime.exec`'s. `--list NAME` prints them as JSON,
`--stop SESSION NAME` stops one, `--rm SESSION [-f] NAME` removes one
(docs/podunit-exec-logs-images.md). On the hot path: imports only what a plain
`podunit exec NAME CMD` uses (tests/unit/test_exec_light.py).
"""

from __future__ import annotations

import json
import os
import sys

from toolkit.runtime.exec import (
    find_session,
    list_sessions,
    parse_env_options,
    remove_session,
    run_attached,
    run_detached,
    stop_session,
)
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import ExecConfig
from toolkit.storage.state import StateStore

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import argparse


def cli_exec(args: argparse.Namespace) -> int:
    """Handler of `podunit exec` (and its --list/--stop/--rm session management)."""
    paths = RuntimePaths.for_mode(args.user)
    with StateStore(paths) as store:
        record = store.get(args.names)
        if getattr(args, "list", False):
            sessions = [s.describe() for s in list_sessions(store, record.id)]
            print(json.dumps(sessions, indent=2))
            return 0
        timeout = getattr(args, "time", None)
        if timeout is None:
            timeout = record.options.stop_timeout
        if getattr(args, "stop", None):
            session = find_session(store, record, args.stop)
            stopped = stop_session(
                store, session, stop_signal=record.options.stop_signal, timeout=timeout
            )
            print(stopped.id)
            return 0
        if getattr(args, "rm", None):
            session = find_session(store, record, args.rm)
            remove_session(
                store,
                session,
                force=args.force,
                stop_signal=record.options.stop_signal,
                timeout=timeout,
            )
            print(session.id)
            return 0
        config = ExecConfig(
            command=tuple(args.command),
            tty=args.tty,
            interactive=args.interactive,
            detach=args.detach,
            environment=parse_env_options(args.env, os.environ),
            user=args.exec_user,
            workdir=args.workdir,
        )
        if config.detach:
            print(run_detached(store, record, config, environ=os.environ).id)
            return 0
        sys.stdout.flush()
        return run_attached(store, record, config, environ=os.environ)

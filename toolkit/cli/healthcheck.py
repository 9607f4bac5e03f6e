"""`podunit healthcheck run [--scheduled] NAME` (spec §4; podunit.yaml(5) HEALTH CHECKS).

The work is `toolkit.runtime.healthcheck.check`; this is the verb's handler.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import argparse


def cli_healthcheck(args: argparse.Namespace) -> int:
    """Run the container's check once and record it: 0 passed, 1 failed, 125 error."""
    from toolkit.runtime.healthcheck import check
    from toolkit.storage.paths import RuntimePaths
    from toolkit.storage.state import StateStore

    with StateStore(RuntimePaths.for_mode(bool(args.user))) as store:
        return check(store, args.names, scheduled=bool(args.scheduled))

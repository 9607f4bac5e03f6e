"""Reporting a pull while it runs (podunit.yaml(5) IMAGES; docs/podunit-exec-logs-images.md).

`toolkit.storage.images` measures a pull (bytes and layers arrived so far); these
callbacks show it. On a terminal: one line rewritten in place. Under systemd (the
image's pull unit, `NOTIFY_SOCKET` set, `NotifyAccess=main`): while bytes keep
arriving, `EXTEND_TIMEOUT_USEC=` (EXTEND_SECONDS) so a slow but live pull outlives
the unit's `TimeoutStartSec=`, and `STATUS=` for `systemctl status`; once bytes
stop arriving no extension is sent, and a stalled pull times out EXTEND_SECONDS
after the last one (or at `TimeoutStartSec=`, whichever is later).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from toolkit.storage.images import ProgressCallback, PullProgress

EXTEND_SECONDS = 10
NOTIFY_INTERVAL = 1.0  # at most one notification a second


class TerminalProgress:
    """`pulling REF: 2/3 layers, 1.2 MB of 4.0 MB`, rewritten in place on a terminal."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.width = 0

    def __call__(self, progress: PullProgress) -> None:
        line = progress.describe()
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        if progress.done:
            self.stream.write("\n")
        self.stream.flush()


class NotifyProgress:
    """EXTEND_TIMEOUT_USEC= and STATUS= to systemd while bytes keep arriving."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.seen = -1
        self.last = 0.0

    def __call__(self, progress: PullProgress) -> None:
        from toolkit.systemd.notify import send_notification

        now = time.monotonic()
        grew = progress.bytes_done > self.seen
        if not progress.done and (not grew or now - self.last < NOTIFY_INTERVAL):
            return
        self.seen, self.last = progress.bytes_done, now
        lines = [f"STATUS={progress.describe()}"]
        if grew and not progress.done:
            lines.insert(0, f"EXTEND_TIMEOUT_USEC={EXTEND_SECONDS * 1_000_000}")
        send_notification("\n".join(lines), self.environ, barrier=False)


def reporter(*, quiet: bool = False, stream: TextIO = sys.stderr) -> ProgressCallback | None:
    """Progress for this process: systemd's when under a unit that listens, else the
    terminal's when `stream` is one, else none."""
    if os.environ.get("NOTIFY_SOCKET"):
        return NotifyProgress()
    if not quiet and stream.isatty():
        return TerminalProgress(stream)
    return None

"""The `health` table: one row per checked container (podunit.yaml(5) HEALTH CHECKS).

A row holds the `Health` of the container (its rules: `toolkit.systemd.health_state`): status,
failing streak, start-up progress and the last results as JSON. It goes away with
the container's row (``ON DELETE CASCADE``). `update` reads, changes and writes the
row in one ``BEGIN IMMEDIATE`` transaction, so a scheduled check and a
`podunit healthcheck run` at the same moment never lose a result.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from toolkit.storage.state import StateStore

T = TypeVar("T")

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
STATUSES = (STARTING, HEALTHY, UNHEALTHY)

LOG_ENTRIES = 5
OUTPUT_MAX = 4096  # characters of a check's output kept in the log (Docker: 4096 bytes)
LINE_OUTPUT_MAX = 200  # characters of output in a journal line or STATUS=
TIMED_OUT = -1  # the exit code recorded for a check killed at its timeout (Docker's too)


class Probe(NamedTuple):
    """One run of a check: wall-clock start/end, exit code (`TIMED_OUT`), output."""

    start: float
    end: float
    exit_code: int
    output: str = ""
    startup: bool = False  # the start-up check, not the regular one

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        """`exit 1: output` / `timed out`, on one bounded line."""
        what = "timed out" if self.exit_code == TIMED_OUT else f"exit {self.exit_code}"
        text = " ".join(self.output.split())
        if len(text) > LINE_OUTPUT_MAX:
            text = text[: LINE_OUTPUT_MAX - 1] + "…"
        return f"{what}: {text}" if text else what

    def to_json(self) -> dict[str, Any]:
        return {
            "Start": self.start,
            "End": self.end,
            "ExitCode": self.exit_code,
            "Output": self.output,
            "Startup": self.startup,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Probe:
        return cls(
            float(data["Start"]),
            float(data["End"]),
            int(data["ExitCode"]),
            str(data.get("Output", "")),
            bool(data.get("Startup", False)),
        )


class Health(NamedTuple):
    """The stored health of one container (one row of the `health` table)."""

    status: str = STARTING
    failing_streak: int = 0
    startup_passes: int = 0  # start-up check passes in a row
    startup_done: bool = False  # the start-up check has passed `success` times in a row
    log: tuple[Probe, ...] = ()
    changed_at: float | None = None  # when `status` last changed

    def status_text(self) -> str:
        """The unit's STATUS= (`systemctl status`): `health: unhealthy (exit 1: refused)`."""
        if self.status == UNHEALTHY and self.log:
            return f"health: {UNHEALTHY} ({self.log[-1].describe()})"
        return f"health: {self.status}"


def _from_row(row: sqlite3.Row | None) -> Health | None:
    if row is None:
        return None
    return Health(
        status=row["status"],
        failing_streak=row["failing_streak"],
        startup_passes=row["startup_passes"],
        startup_done=bool(row["startup_done"]),
        log=tuple(Probe.from_json(item) for item in json.loads(row["log"])),
        changed_at=row["changed_at"],
    )


def _write(db: sqlite3.Connection, container_id: str, health: Health) -> None:
    db.execute(
        "INSERT OR REPLACE INTO health (container_id, status, failing_streak, startup_passes,"
        " startup_done, log, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            container_id,
            health.status,
            health.failing_streak,
            health.startup_passes,
            int(health.startup_done),
            json.dumps([probe.to_json() for probe in health.log]),
            health.changed_at,
        ),
    )


def get(store: StateStore, container_id: str) -> Health | None:
    """The stored health of a container; None when it was never checked."""
    with store.transaction() as db:  # a read that sees every committed write
        row = db.execute("SELECT * FROM health WHERE container_id = ?", (container_id,)).fetchone()
    return _from_row(row)


def all_statuses(store: StateStore) -> dict[str, str]:
    """container id -> status, for `podunit ps`."""
    with store.transaction() as db:
        rows = db.execute("SELECT container_id, status FROM health").fetchall()
    return {row["container_id"]: row["status"] for row in rows}


def update(
    store: StateStore, container_id: str, change: Callable[[Health], tuple[Health, T]]
) -> tuple[Health, T] | None:
    """Apply `change` to the stored health (a fresh `Health()` if none) and save it, atomically.

    Returns the new health and what `change` returned besides; None when the container's
    row is gone (removed meanwhile: nothing is written).
    """
    with store.transaction() as db:
        if db.execute("SELECT 1 FROM containers WHERE id = ?", (container_id,)).fetchone() is None:
            return None
        row = db.execute("SELECT * FROM health WHERE container_id = ?", (container_id,)).fetchone()
        health, extra = change(_from_row(row) or Health())
        _write(db, container_id, health)
    return health, extra

"""The `health` table: one row per checked container (podunit.yaml(5) HEALTH CHECKS).

A row holds the `toolkit.systemd.health_state.Health` of the container: status,
failing streak, start-up progress and the last results as JSON. It goes away with
the container's row (``ON DELETE CASCADE``). `update` reads, changes and writes the
row in one ``BEGIN IMMEDIATE`` transaction, so a scheduled check and a
`podunit healthcheck run` at the same moment never lose a result.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from toolkit.storage.state import StateStore
from toolkit.systemd.health_state import Health, Probe

T = TypeVar("T")


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

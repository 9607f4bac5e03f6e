"""Networks and address leases in the state database (podunit.yaml(5) NETWORKS).

Two tables of their own, made on first use: `networks` (one row per network, its
record as JSON) and `network_leases` (network, address, container). Every change
runs in `StateStore.transaction()` (BEGIN IMMEDIATE), so concurrent starts take
turns: two containers never lease the same address, two networks never get the
same subnet or bridge. A lease is released with the rest of its container (stop,
`rm -f`, cleanup after conmon died); one whose container row is gone, or that was
made in an earlier boot (a reboot lost `/run`, and with it every namespace and
bridge), is taken back at the next allocation (the reconcile).

No `typing` here at run time: a unit's stop releases leases through this module.
"""

from __future__ import annotations

import json
import sqlite3

from toolkit.errors import PodunitError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from toolkit.storage.state import StateStore

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS networks (name TEXT PRIMARY KEY, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS network_leases (network TEXT NOT NULL, address TEXT NOT NULL,"
    " container_id TEXT NOT NULL, boot_id TEXT NOT NULL, PRIMARY KEY (network, address))",
    "CREATE INDEX IF NOT EXISTS network_leases_by_container ON network_leases (container_id)",
)
# Leases of containers that are gone, or made before the last reboot, are free again.
_STALE = "(container_id NOT IN (SELECT id FROM containers) OR boot_id != :boot)"


def _boot() -> dict[str, str]:
    from toolkit.storage.state import current_boot_id

    return {"boot": current_boot_id()}


def _ensure(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        db.execute(statement)


def _read(
    store: StateStore, query: str, args: tuple[Any, ...] | dict[str, Any] = ()
) -> list[sqlite3.Row]:
    with store.transaction() as db:
        _ensure(db)
        return db.execute(query, args).fetchall()


def find(store: StateStore, name: str) -> dict[str, Any] | None:
    rows = _read(store, "SELECT data FROM networks WHERE name = ?", (name,))
    return json.loads(rows[0]["data"]) if rows else None


def every(store: StateStore) -> list[dict[str, Any]]:
    return [json.loads(row["data"]) for row in _read(store, "SELECT data FROM networks")]


def create(
    store: StateStore,
    name: str,
    make: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """The network `name`, made by `make(every other network)` if it does not exist yet,
    in one transaction; (data, whether it was made now)."""
    with store.transaction() as db:
        _ensure(db)
        row = db.execute("SELECT data FROM networks WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return json.loads(row["data"]), False
        others = [json.loads(r["data"]) for r in db.execute("SELECT data FROM networks")]
        data = make(others)
        db.execute("INSERT INTO networks (name, data) VALUES (?, ?)", (name, json.dumps(data)))
        return data, True


def remove(store: StateStore, name: str) -> None:
    """Forget network `name`; refused while a live container holds an address in it."""
    with store.transaction() as db:
        _ensure(db)
        db.execute(
            f"DELETE FROM network_leases WHERE network = :name AND {_STALE}",
            {"name": name, **_boot()},
        )
        users = db.execute(
            "SELECT c.name FROM network_leases l JOIN containers c ON c.id = l.container_id "
            "WHERE l.network = ?",
            (name,),
        ).fetchall()
        if users:
            names = ", ".join(sorted({row["name"] for row in users}))
            raise PodunitError(
                f"network {name} is in use by {names}",
                hint="stop those containers first (podunit stop NAME)",
            )
        db.execute("DELETE FROM networks WHERE name = ?", (name,))


def leases(store: StateStore, network: str | None = None) -> list[tuple[str, str, str]]:
    """(network, address, container id) of every live lease (of one network)."""
    where = f"WHERE NOT {_STALE}" + (" AND network = :network" if network else "")
    rows = _read(
        store,
        f"SELECT network, address, container_id FROM network_leases {where} ORDER BY address",
        {"network": network, **_boot()},
    )
    return [(row["network"], row["address"], row["container_id"]) for row in rows]


def lease(
    store: StateStore,
    container_id: str,
    wanted: Iterable[tuple[str, str | None]],
    choose: Callable[[str, set[str]], str],
) -> list[str]:
    """Lease one address per (network, fixed address or None) for `container_id`, all in
    one transaction: a fixed address held by a live container is refused naming it,
    otherwise `choose(network, addresses in use)` picks one. Stale leases are freed first."""
    addresses: list[str] = []
    boot = _boot()
    with store.transaction() as db:
        _ensure(db)
        db.execute(f"DELETE FROM network_leases WHERE {_STALE}", boot)
        for network, fixed in wanted:
            rows = db.execute(
                "SELECT address, container_id FROM network_leases WHERE network = ?", (network,)
            ).fetchall()
            holders = {row["address"]: row["container_id"] for row in rows}
            if fixed is not None and fixed in holders:
                holder = db.execute(
                    "SELECT name FROM containers WHERE id = ?", (holders[fixed],)
                ).fetchone()
                raise PodunitError(
                    f"address {fixed} on network {network} is taken by container "
                    f"{holder['name'] if holder else holders[fixed][:12]}",
                    hint="choose another ipv4_address, or stop that container",
                )
            address = fixed if fixed is not None else choose(network, set(holders))
            db.execute(
                "INSERT INTO network_leases (network, address, container_id, boot_id) "
                "VALUES (?, ?, ?, ?)",
                (network, address, container_id, boot["boot"]),
            )
            addresses.append(address)
    return addresses


def release(store: StateStore, container_id: str) -> None:
    """Give back every address of `container_id` (idempotent)."""
    with store.transaction() as db:
        _ensure(db)
        db.execute("DELETE FROM network_leases WHERE container_id = ?", (container_id,))

"""Persistent container state: embedded SQLite plus per-boot files (spec §3.1).

* The database (`RuntimePaths.database`) is opened in WAL mode with
  `synchronous=NORMAL`, a busy timeout, and every write runs in `BEGIN IMMEDIATE`
  (`StateStore.transaction()`), so concurrent podunit processes serialise instead
  of failing with "database is locked". NORMAL, not FULL: in WAL mode it cannot
  corrupt the database, and a committed transaction survives any crash of a
  process; only a power loss or kernel crash may roll back the last commits
  (https://sqlite.org/pragma.html#pragma_synchronous) — and after such a reboot
  every container is reconciled to `exited` anyway (below). It saves an fsync per
  commit, of which a unit's start and stop make several (0.3 ms each here, far
  more on a rotating disk).
* Per-container locks are `flock(2)` locks on files under the run directory:
  they die with their holder, and a reboot wipes them.
* The run directory carries the kernel boot id it was made in. The first command
  that finds the stamp missing or different reconciles under the global lock:
  containers that were alive become `exited` with a reason, exec sessions are
  cleared.
* Exit codes are also written to `exit_codes`, which `rm` does not touch, so
  `podunit wait` answers after removal (for a week, and for the latest 20
  containers of a name: units restarting forever must not grow it without end).

Exec sessions (`toolkit.runtime.exec` runs them) live in the `exec_sessions` table;
its queries are here too (`StateStore.add_exec_session` and the methods after it).
Health check results live in `health` (queries in `toolkit.storage.health`); both go
with their container's row.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping

from toolkit.errors import ContainerNotFound, InvalidState, PodunitError
from toolkit.fs import read_text
from toolkit.record import Record
from toolkit.storage.paths import RuntimePaths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

BUSY_TIMEOUT_SECONDS = 60.0
# Exit codes of removed containers are kept this long, and at most this many per name
# (a unit with Restart=always makes a new container per restart).
EXIT_CODE_RETENTION_SECONDS = 7 * 24 * 3600.0
EXIT_CODES_PER_NAME = 20
SCHEMA_VERSION = 2  # 2: the health table

# Container statuses, as `ps` shows them.
CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
EXITED = "exited"
ALIVE_STATUSES = (CREATED, RUNNING, PAUSED)

# Exec session states (the `exec_sessions` table's CHECK constraint).
SESSION_CREATED = "created"
SESSION_RUNNING = "running"
SESSION_STOPPED = "stopped"

REBOOT_REASON = "the system was restarted while the container was running"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    runtime TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    pid_start_time INTEGER,
    conmon_pid INTEGER,
    conmon_start_time INTEGER,
    exit_code INTEGER,
    exit_reason TEXT,
    oom INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    spec TEXT NOT NULL,
    options TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exit_codes (
    container_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    reason TEXT,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS exit_codes_by_name ON exit_codes (name, finished_at);
CREATE TABLE IF NOT EXISTS health (
    container_id TEXT PRIMARY KEY REFERENCES containers (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    failing_streak INTEGER NOT NULL DEFAULT 0,
    startup_passes INTEGER NOT NULL DEFAULT 0,
    startup_done INTEGER NOT NULL DEFAULT 0,
    log TEXT NOT NULL DEFAULT '[]',
    changed_at REAL
);
CREATE TABLE IF NOT EXISTS exec_sessions (
    id TEXT PRIMARY KEY,
    container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    pid INTEGER,
    state TEXT NOT NULL CHECK (state IN ('created', 'running', 'stopped')),
    exit_code INTEGER,
    config TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
"""


class ContainerOptions(Record):
    """How a container runs, decided when it is created: the `options` column (JSON).

    Read as typed fields everywhere (`record.options.stop_timeout`); a new key is a new
    field here, with the default that rows written before it get.
    """

    log_driver: str = "journald"  # a toolkit.definitions.logdrivers name
    log_path: str | None = None  # k8s-file's file
    log_size_max: int | None = None
    tty: bool = False
    interactive: bool = False
    auto_remove: bool = False  # `run --rm`: forgotten once it exited
    stop_signal: int = 15  # SIGTERM
    stop_timeout: float = 10.0  # seconds
    notify: str | None = None  # a toolkit.definitions.model.Notify value
    ports: tuple[dict[str, Any], ...] = ()  # PortMapping._asdict() of each published port
    cgroup_placement: dict[str, Any] | None = None  # toolkit.runtime.placement's JSON
    runtime_args: tuple[str, ...] = ()  # the runtime's global options (--root, ...)
    own_pid_namespace: bool = True
    preserve_fds: int = 0  # socket-activation fds passed on
    image: str | None = None
    rootfs: str | None = None
    image_rootfs: str | None = None  # an image container: the unpacked image under its overlay
    labels: tuple[tuple[str, str], ...] = ()
    volumes: tuple[str, ...] = ()  # the volumes it uses (toolkit.storage.volumes)
    secrets: tuple[dict[str, Any], ...] = ()  # its secrets' files: where from, owner, mode
    health: dict[str, Any] | None = None  # toolkit.runtime.healthcheck's settings
    network_plan: dict[str, Any] | None = None  # toolkit.network.attach: what to join
    network: dict[str, Any] | None = None  # toolkit.network.attach: what was set up
    released: bool = False  # the run's resources are gone (status.release)
    fresh: bool = True  # False once started again after an exit

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerOptions:
        if "cgroup_plan" in data:  # its name before toolkit.runtime.placement
            data = {**data, "cgroup_placement": data["cgroup_plan"]}
        if isinstance(data.get("labels"), dict):  # stored as a mapping before
            data = {**data, "labels": [list(item) for item in data["labels"].items()]}
        return super().from_json(data)


class ContainerRecord(Record):
    """One row of `containers`: `spec` is the OCI config.json, `options` how it runs.

    The fields are the table's columns (`_fields` names them for the queries).
    """

    id: str
    name: str
    runtime: str  # absolute path of the OCI runtime binary
    status: str
    created_at: float
    spec: dict[str, Any]
    options: ContainerOptions = ContainerOptions()
    pid: int | None = None
    pid_start_time: int | None = None
    conmon_pid: int | None = None
    conmon_start_time: int | None = None
    exit_code: int | None = None
    exit_reason: str | None = None
    oom: bool = False
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.status in ALIVE_STATUSES


class ExecConfig(Record):
    """What the user asked for (libpod ExecConfig)."""

    command: tuple[str, ...]
    tty: bool = False
    interactive: bool = False
    detach: bool = False
    environment: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    workdir: str | None = None


class ExecProcesses(Record):
    """The processes of a running exec session: start times against pid reuse, its conmon,
    and the `podunit exec` attached to it (gone: nobody will remove the session)."""

    pid_start_time: int | None = None
    conmon_pid: int | None = None
    conmon_start_time: int | None = None
    owner_pid: int | None = None
    owner_start_time: int | None = None


class ExecSession(Record):
    """One row of `exec_sessions`."""

    id: str
    container_id: str
    state: str  # SESSION_CREATED, SESSION_RUNNING, SESSION_STOPPED
    config: ExecConfig
    created_at: float
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    processes: ExecProcesses = ExecProcesses()

    def describe(self) -> dict[str, Any]:
        """The session as `podunit exec --list` and `inspect` show it."""
        return {
            "ID": self.id,
            "ContainerID": self.container_id,
            "State": self.state,
            "Running": self.state == SESSION_RUNNING,
            "Pid": self.pid or 0,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "Entrypoint": self.config.command[0],
                "Arguments": list(self.config.command[1:]),
                "Tty": self.config.tty,
                "User": self.config.user or "",
                "WorkDir": self.config.workdir or "",
            },
            "OpenStdin": self.config.interactive,
            "Detached": self.config.detach,
            "CreatedAt": self.created_at,
            "StartedAt": self.started_at,
            "FinishedAt": self.finished_at,
        }


_COLUMNS = ContainerRecord._fields  # the columns of `containers`


def _record_from_row(row: sqlite3.Row) -> ContainerRecord:
    values = {column: row[column] for column in _COLUMNS}
    values["spec"] = json.loads(values["spec"])
    values["options"] = ContainerOptions.from_json(json.loads(values["options"]))
    values["oom"] = bool(values["oom"])
    return ContainerRecord(**values)


def _row_from_record(record: ContainerRecord) -> dict[str, Any]:
    values = {column: getattr(record, column) for column in _COLUMNS}
    values["spec"] = json.dumps(record.spec, sort_keys=True)
    values["options"] = json.dumps(record.options.to_json(), sort_keys=True)
    values["oom"] = int(record.oom)
    return values


_SESSION_COLUMNS = (
    "id, container_id, pid, state, exit_code, config, created_at, started_at, finished_at"
)


def _session_from_row(row: Any) -> ExecSession:
    stored = json.loads(row["config"])
    return ExecSession(
        id=row["id"],
        container_id=row["container_id"],
        state=row["state"],
        config=ExecConfig.from_json(stored["config"]),
        created_at=row["created_at"],
        pid=row["pid"],
        exit_code=row["exit_code"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        processes=ExecProcesses.from_json(stored.get("runtime", {})),
    )


def current_boot_id() -> str:
    """The kernel's boot id (random per boot), from /proc/sys/kernel/random/boot_id."""
    return read_text("/proc/sys/kernel/random/boot_id").strip()


@contextlib.contextmanager
def flocked(path: str, *, shared: bool = False) -> Iterator[None]:
    """Hold flock(2) on `path` (created if missing) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class StateStore:
    """The database of one mode plus its per-boot run directory."""

    def __init__(self, paths: RuntimePaths) -> None:
        self.paths = paths
        try:
            paths.ensure()
            self._db = sqlite3.connect(
                paths.database, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None
            )
            self._db.row_factory = sqlite3.Row
            os.chmod(paths.database, 0o600)
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            # Switching a new database to WAL and creating its schema can answer "database
            # is locked" at once to a concurrent opener (SQLite skips the busy handler there),
            # so the processes that open the database take turns for this part.
            with flocked(paths.database + ".lock"):
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")  # see the module docstring
                self._db.execute("PRAGMA foreign_keys = ON")
                self._create_schema()
                self._check_configuration()
            self._reconcile_after_reboot()
        except OSError as error:
            raise PodunitError(
                f"cannot use podunit's state in {error.filename or paths.state_dir}:"
                f" {error.strerror}",
                hint="run as root, or use --user",
            ) from None
        except sqlite3.Error as error:
            raise self._database_error(error) from None

    def _database_error(self, error: sqlite3.Error) -> PodunitError:
        return PodunitError(f"state database {self.paths.database}: {error}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions and locks --
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An exclusive write transaction (BEGIN IMMEDIATE), committed on success.

        A database that stays locked beyond the busy timeout, or fails to write,
        is a `PodunitError` naming the database.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise self._database_error(error) from None
        try:
            yield self._db
        except BaseException as error:
            self._db.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError):
                raise self._database_error(error) from None
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise self._database_error(error) from None

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """The rows of a read-only statement (for the modules that own tables of their own:
        toolkit.storage.volumes)."""
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise self._database_error(error) from None

    def container_lock(self, container_id: str) -> contextlib.AbstractContextManager[None]:
        """The per-container lock; never hold it while waiting for the container to exit."""
        return flocked(self.paths.lock_file(container_id))

    # -- setup --
    def _meta(self) -> dict[str, str]:
        try:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:  # no such table yet
            return {}

    def _create_schema(self) -> None:
        """Create the tables once (later opens only read, so they cost no fsync)."""
        if self._meta().get("schema_version") == str(SCHEMA_VERSION):
            return
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _check_configuration(self) -> None:
        """Refuse to use a database that was made for other directories."""
        wanted = {"state_dir": str(self.paths.state_dir), "run_dir": str(self.paths.run_dir)}
        stored = self._meta()
        if any(key not in stored for key in wanted):
            with self.transaction() as db:
                stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
                for key, value in wanted.items():
                    if key not in stored:
                        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        for key, value in wanted.items():
            if key in stored and stored[key] != value:
                raise PodunitError(
                    f"state database {self.paths.database} was created with {key} "
                    f"{stored[key]!r}, but this invocation uses {value!r}",
                    hint="use the same PODUNIT_STATE_DIR/PODUNIT_RUN_DIR as when it was created",
                )

    def _reconcile_after_reboot(self) -> None:
        """If the run directory is not from this boot, mark stale state (spec §3.1)."""
        boot_id = current_boot_id()
        if self._stamped_boot_id() == boot_id:
            return
        with flocked(self.paths.global_lock_file):
            if self._stamped_boot_id() == boot_id:
                return  # another process reconciled while we waited
            now = time.time()
            with self.transaction() as db:
                stale = db.execute(
                    "SELECT id, name FROM containers WHERE status IN (?, ?, ?)", ALIVE_STATUSES
                ).fetchall()
                for row in stale:
                    db.execute(
                        "UPDATE containers SET status = ?, exit_code = -1, exit_reason = ?, "
                        "finished_at = ?, pid = NULL, conmon_pid = NULL WHERE id = ?",
                        (EXITED, REBOOT_REASON, now, row["id"]),
                    )
                    _insert_exit_code(db, row["id"], row["name"], -1, REBOOT_REASON, now)
                db.execute("DELETE FROM exec_sessions")
            stamp = self.paths.boot_id_stamp
            temporary = stamp + ".tmp"
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(boot_id + "\n")
            os.replace(temporary, stamp)

    def _stamped_boot_id(self) -> str | None:
        try:
            return read_text(self.paths.boot_id_stamp).strip()
        except FileNotFoundError:
            return None

    # -- containers --
    def add(self, record: ContainerRecord) -> None:
        """Insert a new container; a name already in use is an error naming it."""
        values = _row_from_record(record)
        try:
            with self.transaction() as db:
                db.execute(
                    f"INSERT INTO containers ({', '.join(values)}) "
                    f"VALUES ({', '.join('?' for _ in values)})",
                    tuple(values.values()),
                )
        except sqlite3.IntegrityError as error:
            raise PodunitError(
                f"the container name {record.name!r} is already in use",
                hint=f"remove it first: podunit rm -f {record.name}",
            ) from error

    def save(self, record: ContainerRecord) -> None:
        """Write every field of an existing container."""
        values = _row_from_record(record)
        with self.transaction() as db:
            db.execute(
                f"UPDATE containers SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                (*values.values(), record.id),
            )

    def update(self, record: ContainerRecord, **changes: Any) -> ContainerRecord:
        """Save `record` with `changes` applied and return the new record."""
        updated = record._replace(**changes)
        self.save(updated)
        return updated

    def find(self, name_or_id: str) -> ContainerRecord | None:
        """The container with that name, full id, or unique id prefix (at least 4 chars)."""
        row = self._db.execute(
            "SELECT * FROM containers WHERE name = ? OR id = ?", (name_or_id, name_or_id)
        ).fetchone()
        if (
            row is None
            and len(name_or_id) >= 4
            and all(c in "0123456789abcdef" for c in name_or_id)
        ):
            rows = self._db.execute(
                "SELECT * FROM containers WHERE id LIKE ? LIMIT 2", (name_or_id + "%",)
            ).fetchall()
            row = rows[0] if len(rows) == 1 else None
        return _record_from_row(row) if row is not None else None

    def get(self, name_or_id: str) -> ContainerRecord:
        record = self.find(name_or_id)
        if record is None:
            raise ContainerNotFound(f"no such container: {name_or_id}")
        return record

    def reload(self, record: ContainerRecord) -> ContainerRecord:
        """The current row of `record` (it may have changed in another process)."""
        row = self._db.execute("SELECT * FROM containers WHERE id = ?", (record.id,)).fetchone()
        if row is None:
            raise ContainerNotFound(f"no such container: {record.name}")
        return _record_from_row(row)

    def all(self) -> list[ContainerRecord]:
        rows = self._db.execute("SELECT * FROM containers ORDER BY created_at").fetchall()
        return [_record_from_row(row) for row in rows]

    def remove(self, record: ContainerRecord) -> None:
        """Delete the container's row (its exit code stays in `exit_codes`)."""
        with self.transaction() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (record.id,))

    def record_exit(
        self,
        record: ContainerRecord,
        exit_code: int,
        *,
        reason: str | None,
        finished_at: float,
        oom: bool = False,
    ) -> ContainerRecord:
        """Mark the container exited, once: a second caller gets the first result back."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM containers WHERE id = ?", (record.id,)).fetchone()
            if row is None:
                raise ContainerNotFound(f"no such container: {record.name}")
            current = _record_from_row(row)
            if current.status == EXITED:
                return current
            db.execute(
                "UPDATE containers SET status = ?, exit_code = ?, exit_reason = ?, "
                "finished_at = ?, oom = ? WHERE id = ?",
                (EXITED, exit_code, reason, finished_at, int(oom), record.id),
            )
            _insert_exit_code(db, record.id, record.name, exit_code, reason, finished_at)
        return current._replace(
            status=EXITED,
            exit_code=exit_code,
            exit_reason=reason,
            finished_at=finished_at,
            oom=oom,
        )

    def exit_code(self, name_or_id: str) -> tuple[int, str | None] | None:
        """The latest recorded exit code (and reason) of a container, removed or not."""
        row = self._db.execute(
            "SELECT exit_code, reason FROM exit_codes WHERE container_id = ? OR name = ? "
            "ORDER BY finished_at DESC LIMIT 1",
            (name_or_id, name_or_id),
        ).fetchone()
        return (row["exit_code"], row["reason"]) if row is not None else None

    # -- exec sessions (run by toolkit.runtime.exec) --
    def add_exec_session(self, session: ExecSession) -> None:
        """The session's row; its container's row must still exist (removed meanwhile: error)."""
        stored = json.dumps(
            {"config": session.config.to_json(), "runtime": session.processes.to_json()}
        )
        try:
            with self.transaction() as db:
                db.execute(
                    f"INSERT INTO exec_sessions ({_SESSION_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session.id,
                        session.container_id,
                        session.pid,
                        session.state,
                        session.exit_code,
                        stored,
                        session.created_at,
                        session.started_at,
                        session.finished_at,
                    ),
                )
        except sqlite3.IntegrityError:  # the foreign key: `podunit rm` removed the container
            raise InvalidState(
                f"container {session.container_id[:12]} was removed while the exec started"
            ) from None

    def mark_exec_session_stopped(self, session: ExecSession) -> None:
        """Mark the row stopped (or give a stopped row its exit code, once conmon wrote it).

        An UPDATE: a row that its `podunit exec` removed meanwhile stays removed.
        """
        with self.transaction() as db:
            db.execute(
                "UPDATE exec_sessions SET state = ?, exit_code = ?, finished_at = ? "
                "WHERE id = ? AND (state = ? OR exit_code IS NULL)",
                (SESSION_STOPPED, session.exit_code, session.finished_at, session.id,
                 SESSION_RUNNING),
            )  # fmt: skip

    def remove_exec_session(self, session_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM exec_sessions WHERE id = ?", (session_id,))

    def exec_sessions(self, container_id: str) -> list[ExecSession]:
        """The container's session rows, oldest first."""
        with self.transaction() as db:
            rows = db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM exec_sessions WHERE container_id = ? "
                "ORDER BY created_at",
                (container_id,),
            ).fetchall()
        return [_session_from_row(row) for row in rows]


def _insert_exit_code(
    db: sqlite3.Connection,
    container_id: str,
    name: str,
    code: int,
    reason: str | None,
    finished_at: float,
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO exit_codes (container_id, name, exit_code, reason, finished_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (container_id, name, code, reason, finished_at),
    )
    removed = "container_id NOT IN (SELECT id FROM containers)"
    db.execute(
        f"DELETE FROM exit_codes WHERE {removed} AND finished_at < ?",
        (time.time() - EXIT_CODE_RETENTION_SECONDS,),
    )
    db.execute(
        f"DELETE FROM exit_codes WHERE name = ? AND {removed} AND container_id NOT IN "
        "(SELECT container_id FROM exit_codes WHERE name = ? ORDER BY finished_at DESC LIMIT ?)",
        (name, name, EXIT_CODES_PER_NAME),
    )

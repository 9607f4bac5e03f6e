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
* The run directory carries the kernel boot id it was made in (`boot-id`), and so
  does the database (`meta.boot_id`). The first command that finds the stamp
  missing or different reconciles under the global lock. A lost stamp, or a lost
  run directory, is not a reboot: only when the database's boot id is not the
  kernel's (/proc/sys/kernel/random/boot_id) were the containers' processes lost,
  and even then a container whose conmon is still alive (pid, start time and a
  command line naming the container) is kept. The others become `exited` with a
  reason and their exec sessions are cleared.
* A database that is lost (deleted, or moved aside because it was damaged) is
  made again empty; its first opener then adopts the containers still running
  from the run directory: each bundle holds `podunit.json` (`write_bundle_record`:
  the row without the spec, which is the bundle's config.json), and a container
  whose conmon is alive gets its row back, so its name is not reused while it runs.
* A row that cannot be decoded (bad JSON in a column) is `CorruptRecord`: `all()`
  skips it and lists it in `StateStore.skipped`, `find()` raises it naming the
  row, and `remove_id` deletes it by id (`rm -f`).
* A full file system is reported as such (`no space left on <state dir>`), not as
  SQLite's "disk I/O error"; `StateStore(paths, read_only=True)` then still reads
  the database (SQLite's `immutable` mode, which needs no -shm/-wal file), for
  `ps` and `inspect`.
* Exit codes are also written to `exit_codes`, which `rm` does not touch, so
  `podunit wait` answers after removal (for a week, and for the latest 20
  containers of a name: units restarting forever must not grow it without end).

The records (`ContainerRecord`, `ExecSession`, ...) and their row codecs are
`toolkit.storage.records`.

Exec sessions (`toolkit.runtime.exec` runs them) live in the `exec_sessions` table;
its queries are here too (`StateStore.add_exec_session` and the methods after it).
Health check results live in `health` (queries in `toolkit.storage.health`); both go
with their container's row.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator

from toolkit.errors import ContainerNotFound, InvalidState, PodunitError
from toolkit.fs import read_text
from toolkit.proc import same_process_alive
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.records import (
    ALIVE_STATUSES,
    COLUMNS,
    CREATED,
    EXITED,
    RUNNING,
    SESSION_RUNNING,
    SESSION_STOPPED,
    ContainerOptions,
    ContainerRecord,
    CorruptRecord,
    ExecSession,
    record_from_row,
    row_from_record,
    session_from_row,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

BUSY_TIMEOUT_SECONDS = 60.0
# Exit codes of removed containers are kept this long, and at most this many per name
# (a unit with Restart=always makes a new container per restart).
EXIT_CODE_RETENTION_SECONDS = 7 * 24 * 3600.0
EXIT_CODES_PER_NAME = 20
SCHEMA_VERSION = 2  # 2: the health table

REBOOT_REASON = "the system was restarted while the container was running"
ADOPTED_REASON = "the state database was lost; the container was adopted from the run directory"
BUNDLE_RECORD = "podunit.json"  # in the bundle: the row without the spec (write_bundle_record)
# Below this much free space (or no free inode) a write failure is "no space left".
LOW_SPACE_BYTES = 256 * 1024

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


_SESSION_COLUMNS = (
    "id, container_id, pid, state, exit_code, config, created_at, started_at, finished_at"
)


def no_space_left(directory: str) -> bool:
    """Whether the file system of `directory` is (nearly) full, in bytes or inodes."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < LOW_SPACE_BYTES or (
        stat.f_files > 0 and stat.f_favail == 0
    )


def write_bundle_record(paths: RuntimePaths, record: ContainerRecord) -> None:
    """`<bundle>/podunit.json`: the row without its spec (the bundle's config.json), from
    which a lost database adopts the running container (`StateStore` on a new database)."""
    values = {column: getattr(record, column) for column in COLUMNS if column != "spec"}
    values["options"] = record.options.to_json()
    path = os.path.join(paths.bundle_dir(record.id), BUNDLE_RECORD)
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        file.write(json.dumps(values, sort_keys=True))
    os.replace(path + ".tmp", path)


def conmon_of(container_id: str, pid: int | None, start_time: int | None) -> bool:
    """Whether `pid` (started at `start_time`) is alive and is the conmon of `container_id`:
    a reused pid, or a pid of another boot, does not name the container on its command line."""
    if pid is None or start_time is None or not same_process_alive(pid, start_time):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            words = file.read().split(b"\0")
    except OSError:
        return False
    return container_id.encode() in words


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

    def __init__(self, paths: RuntimePaths, *, read_only: bool = False) -> None:
        """Open (and if needed create) the database; reconcile after a reboot.

        `read_only`: for verbs that only read (ps, inspect). When the state's file
        system is full the database is then opened in SQLite's `immutable` mode
        (`self.read_only` is True, every write raises) instead of failing.
        """
        self.paths = paths
        self.read_only = False
        self.skipped: list[CorruptRecord] = []  # rows `all()` could not decode
        self._db: sqlite3.Connection | None = None
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
                created = self._create_schema()
                self._check_configuration()
                if created:
                    self._adopt_from_run_dir()
            self._reconcile_after_reboot()
        except OSError as error:
            if read_only and self._open_immutable():
                return
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._no_space_error() from None
            raise PodunitError(
                f"cannot use podunit's state in {error.filename or paths.state_dir}:"
                f" {error.strerror}",
                hint="run as root, or use --user",
            ) from None
        except sqlite3.Error as error:
            if read_only and self._full(error) and self._open_immutable():
                return
            raise self._database_error(error) from None

    def _full(self, error: sqlite3.Error) -> bool:
        """SQLite's error on a full disk: SQLITE_FULL, or an I/O error (growing the -shm or
        -wal file) while the state's file system has no space left."""
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        return code == 13 or (code == 10 and no_space_left(self.paths.state_dir))

    def _no_space_error(self) -> PodunitError:
        return PodunitError(
            f"no space left on {self.paths.state_dir} (the file system of podunit's state)",
            hint="free some space there; read-only commands (ps, inspect) still work",
        )

    def _open_immutable(self) -> bool:
        """Read the database without writing anything (no -shm/-wal file): SQLite's
        `immutable=1`. Only when its file system is full; False if even that fails."""
        if not no_space_left(self.paths.state_dir) or not os.path.exists(self.paths.database):
            return False
        with contextlib.suppress(sqlite3.Error):
            if self._db is not None:
                self._db.close()
        try:
            uri = "file:" + self.paths.database.replace("?", "%3f") + "?immutable=1"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("SELECT count(*) FROM containers").fetchone()
        except sqlite3.Error:
            return False
        self.read_only = True
        return True

    def _database_error(self, error: sqlite3.Error) -> PodunitError:
        if self._full(error):
            return self._no_space_error()
        name = getattr(error, "sqlite_errorname", "")
        database = self.paths.database
        if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or name.startswith("SQLITE_CORRUPT_"):
            return PodunitError(
                f"state database {database} is damaged: {error}",
                hint=f"move it aside (mv {database} {database}.broken); podunit then starts"
                f" a new one and adopts the running containers from {self.paths.run_dir}",
            )
        if self.read_only:
            return PodunitError(
                f"state database {database}: read-only, as its file system is full ({error})",
                hint=f"free some space on {self.paths.state_dir}",
            )
        return PodunitError(f"state database {database}: {error}")

    def close(self) -> None:
        if self._db is not None:
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
        db = self._connection
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise self._database_error(error) from None
        try:
            yield db
        except BaseException as error:
            with contextlib.suppress(sqlite3.Error):  # a failed write may have ended it
                db.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError):
                raise self._database_error(error) from None
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise self._database_error(error) from None

    @property
    def _connection(self) -> sqlite3.Connection:
        assert self._db is not None  # set by __init__, or __init__ raised
        return self._db

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read; a database error is a `PodunitError` naming the database."""
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise self._database_error(error) from None

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """The rows of a read-only statement (for the modules that own tables of their own:
        toolkit.storage.volumes)."""
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise self._database_error(error) from None

    def container_lock(self, container_id: str) -> contextlib.AbstractContextManager[None]:
        """The per-container lock; never hold it while waiting for the container to exit."""
        return flocked(self.paths.lock_file(container_id))

    # -- setup --
    def _meta(self) -> dict[str, str]:
        try:
            return dict(self._connection.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:  # no such table yet
            return {}

    def _create_schema(self) -> bool:
        """Create the tables once (later opens only read, so they cost no fsync).
        True when this made a new database (its boot id is this boot's)."""
        stored = self._meta().get("schema_version")
        if stored == str(SCHEMA_VERSION):
            return False
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            if stored is None:  # a new database (not one of an older schema)
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('boot_id', ?)",
                    (current_boot_id(),),
                )
        return stored is None

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
        """If the run directory is not from this boot, mark stale state (spec §3.1).

        Two facts must agree before containers are taken for lost: the database's
        boot id is not the kernel's, and the container's conmon is not alive. A
        missing `boot-id` file alone (the run directory deleted while containers run)
        is repaired without touching any container.
        """
        boot_id = current_boot_id()
        if self._stamped_boot_id() == boot_id:
            return
        with flocked(self.paths.global_lock_file):
            if self._stamped_boot_id() == boot_id:
                return  # another process reconciled while we waited
            if self._meta().get("boot_id") != boot_id:
                self._reconcile_reboot(boot_id)
            else:
                self._repair_run_dir()
            stamp = self.paths.boot_id_stamp
            temporary = stamp + ".tmp"
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(boot_id + "\n")
            os.replace(temporary, stamp)

    def _reconcile_reboot(self, boot_id: str) -> None:
        """The kernel was booted since the database was last used: every container whose
        conmon is not alive is `exited` (-1, `REBOOT_REASON`), its exec sessions cleared."""
        now = time.time()
        with self.transaction() as db:
            stale = db.execute(
                "SELECT id, name, conmon_pid, conmon_start_time FROM containers "
                "WHERE status IN (?, ?, ?)",
                ALIVE_STATUSES,
            ).fetchall()
            for row in stale:
                if conmon_of(row["id"], row["conmon_pid"], row["conmon_start_time"]):
                    continue  # not of another boot after all
                db.execute(
                    "UPDATE containers SET status = ?, exit_code = -1, exit_reason = ?, "
                    "finished_at = ?, pid = NULL, conmon_pid = NULL WHERE id = ?",
                    (EXITED, REBOOT_REASON, now, row["id"]),
                )
                _insert_exit_code(db, row["id"], row["name"], -1, REBOOT_REASON, now)
                db.execute("DELETE FROM exec_sessions WHERE container_id = ?", (row["id"],))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('boot_id', ?)", (boot_id,))

    def _repair_run_dir(self) -> None:
        """The run directory was lost while containers run: give each container whose
        conmon is alive its bundle directory back (conmon writes its exit file there,
        and fails the unit when it cannot), with config.json and `podunit.json`."""
        for row in self._query(
            "SELECT * FROM containers WHERE status IN (?, ?, ?)", ALIVE_STATUSES
        ):
            with contextlib.suppress(CorruptRecord, OSError):
                record = record_from_row(row)
                if not conmon_of(record.id, record.conmon_pid, record.conmon_start_time):
                    continue
                bundle = self.paths.bundle_dir(record.id)
                if os.path.isdir(bundle):
                    continue
                os.makedirs(bundle, mode=0o700)
                with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as file:
                    file.write(json.dumps(record.spec, indent=2))
                write_bundle_record(self.paths, record)

    def _adopt_from_run_dir(self) -> None:
        """A new database while containers may run (the old one was lost): give every
        container whose conmon is alive its row back, from its bundle's `podunit.json`
        and config.json; the status is then kept up to date as for any container."""
        try:
            ids = sorted(os.listdir(self.paths.containers_dir))
        except OSError:
            return
        for container_id in ids:
            record = _bundle_record(self.paths, container_id)
            if record is None or not conmon_of(
                record.id, record.conmon_pid, record.conmon_start_time
            ):
                continue
            with contextlib.suppress(PodunitError):  # a name taken meanwhile: not adopted
                self.add(record._replace(status=RUNNING if record.status == RUNNING else CREATED))

    def _stamped_boot_id(self) -> str | None:
        try:
            return read_text(self.paths.boot_id_stamp).strip()
        except FileNotFoundError:
            return None

    # -- containers --
    def add(self, record: ContainerRecord) -> None:
        """Insert a new container; a name already in use is an error naming it."""
        values = row_from_record(record)
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
        values = row_from_record(record)
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
        rows = self._query(
            "SELECT * FROM containers WHERE name = ? OR id = ?", (name_or_id, name_or_id)
        )
        row = rows[0] if rows else None
        if (
            row is None
            and len(name_or_id) >= 4
            and all(c in "0123456789abcdef" for c in name_or_id)
        ):
            rows = self._query(
                "SELECT * FROM containers WHERE id LIKE ? LIMIT 2", (name_or_id + "%",)
            )
            row = rows[0] if len(rows) == 1 else None
        return record_from_row(row) if row is not None else None

    def get(self, name_or_id: str) -> ContainerRecord:
        record = self.find(name_or_id)
        if record is None:
            raise ContainerNotFound(f"no such container: {name_or_id}")
        return record

    def reload(self, record: ContainerRecord) -> ContainerRecord:
        """The current row of `record` (it may have changed in another process)."""
        rows = self._query("SELECT * FROM containers WHERE id = ?", (record.id,))
        if not rows:
            raise ContainerNotFound(f"no such container: {record.name}")
        return record_from_row(rows[0])

    def all(self) -> list[ContainerRecord]:
        """Every container; a row that cannot be decoded is skipped and put in `skipped`."""
        records = []
        self.skipped = []
        for row in self._query("SELECT * FROM containers ORDER BY created_at"):
            try:
                records.append(record_from_row(row))
            except CorruptRecord as corrupt:
                self.skipped.append(corrupt)
        return records

    def remove(self, record: ContainerRecord) -> None:
        """Delete the container's row (its exit code stays in `exit_codes`)."""
        self.remove_id(record.id)

    def remove_id(self, container_id: str) -> None:
        """Delete a row by id (also one that cannot be decoded: `CorruptRecord`)."""
        with self.transaction() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

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
            current = record_from_row(row)
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
        rows = self._query(
            "SELECT exit_code, reason FROM exit_codes WHERE container_id = ? OR name = ? "
            "ORDER BY finished_at DESC LIMIT 1",
            (name_or_id, name_or_id),
        )
        return (rows[0]["exit_code"], rows[0]["reason"]) if rows else None

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
        return [session_from_row(row) for row in rows]


def _bundle_record(paths: RuntimePaths, container_id: str) -> ContainerRecord | None:
    """The record a bundle holds (`write_bundle_record` + config.json), None if unusable."""
    bundle = paths.bundle_dir(container_id)
    try:
        values = json.loads(read_text(os.path.join(bundle, BUNDLE_RECORD)))
        spec = json.loads(read_text(os.path.join(bundle, "config.json")))
        if not isinstance(values, dict) or not isinstance(spec, dict):
            return None
        values = {column: values[column] for column in COLUMNS if column != "spec"}
        values["options"] = ContainerOptions.from_json(values["options"])
        record = ContainerRecord(**values, spec=spec)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.id != container_id:
        return None
    return record._replace(exit_code=None, exit_reason=None, finished_at=None)


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

"""The records of podunit's state (spec §3.1): typed, immutable, and their row codecs.

`ContainerRecord` is one row of the `containers` table, `ContainerOptions` its
`options` column, `ExecSession` (with `ExecConfig`, `ExecProcesses`) one row of
`exec_sessions`. Every field is named once, here; reads are typed (mypy) and a new
key is a new field with the default that older rows get. The store that reads and
writes them is `toolkit.storage.state`; the `Record` base is `toolkit.record`.

No I/O here: decoding a damaged row raises `CorruptRecord`, which the store turns
into a skipped row (`ps`) or a named error (`inspect`, `rm`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from toolkit.errors import PodunitError
from toolkit.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import sqlite3
    from typing import Any

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
    # [pid, start time] of the podunit that creates it (toolkit.runtime.recovery): a row
    # without conmon whose creator is gone is half made
    creator: tuple[int, ...] | None = None

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


COLUMNS = ContainerRecord._fields  # the columns of `containers`


class CorruptRecord(PodunitError):
    """A row of `containers` that cannot be decoded; carries its plain columns."""

    def __init__(self, row: sqlite3.Row, column: str) -> None:
        self.container_id = str(row["id"])
        self.name = str(row["name"])
        self.column = column
        self.conmon_pid = row["conmon_pid"] if isinstance(row["conmon_pid"], int) else None
        self.conmon_start_time = (
            row["conmon_start_time"] if isinstance(row["conmon_start_time"], int) else None
        )
        self.runtime = str(row["runtime"])
        super().__init__(
            f"the state of container {self.name} ({self.container_id[:12]}) is damaged:"
            f" its {column} column is not valid JSON",
            hint=f"remove it: podunit rm -f {self.name}",
        )


def record_from_row(row: sqlite3.Row) -> ContainerRecord:
    """The record of a `containers` row; `CorruptRecord` when a JSON column is damaged."""
    values = {column: row[column] for column in COLUMNS}
    for column in ("spec", "options"):
        try:
            values[column] = json.loads(values[column])
        except (TypeError, ValueError):
            raise CorruptRecord(row, column) from None
        if not isinstance(values[column], dict):
            raise CorruptRecord(row, column)
    try:
        values["options"] = ContainerOptions.from_json(values["options"])
    except (TypeError, ValueError):
        raise CorruptRecord(row, "options") from None
    values["oom"] = bool(values["oom"])
    return ContainerRecord(**values)


def row_from_record(record: ContainerRecord) -> dict[str, Any]:
    """The column values of a record, JSON columns encoded."""
    values = {column: getattr(record, column) for column in COLUMNS}
    values["spec"] = json.dumps(record.spec, sort_keys=True)
    values["options"] = json.dumps(record.options.to_json(), sort_keys=True)
    values["oom"] = int(record.oom)
    return values


def session_from_row(row: Any) -> ExecSession:
    """The session of an `exec_sessions` row (its `config` column holds config + processes)."""
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

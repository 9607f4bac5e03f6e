"""`podunit healthcheck run NAME`: one health check, recorded and reported (podunit.yaml(5)
HEALTH CHECKS; docs/podunit-systemd-integration.md "Health checks").

`NAME-health.service` (started by its timers) runs ``podunit healthcheck run
--scheduled NAME``; an operator may run it by hand. One run:

1. reads the container's check from its record (``options.health``, written at
   creation from the definition: the check of the container that actually runs);
2. a scheduled run that is not due (`health_state.due`) stops the start-pace
   timer and ends; otherwise the start-up or the regular check runs in the
   container (`toolkit.systemd.health.run_check_in_container`), bounded by its timeout;
3. the result goes into the `health` table (`toolkit.storage.health.update`);
4. a transition is one journal entry attributed to the container's unit
   (``OBJECT_SYSTEMD_UNIT=NAME.service``: `journalctl -u NAME` and `systemctl status
   NAME` show it), and the unit's status text follows (``STATUS=`` sent for
   conmon, the unit's main process, see `send_status`);
5. on becoming unhealthy, `health_on_failure` acts: ``kill``/``restart`` kill the
   container (SIGKILL), so conmon exits 137, the unit fails and systemd's
   ``Restart=`` (``on-failure`` is implied for ``restart``), ``StartLimitBurst=``
   and ``OnFailure=`` apply; ``stop`` asks systemd to stop the unit
   (``systemctl --no-block stop``). Outside a unit ``stop`` sends the stop signal.

Exit status: 0 the check passed, 1 it failed, 125 it could not run. A scheduled
run exits 0 when there is nothing to check (the container is gone or stopping,
or the run is not due), so the check unit never shows as failed for that.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from toolkit import proc
from toolkit.definitions.model import Container, Healthcheck, HealthOnFailure, StartupCheck
from toolkit.errors import PodunitError
from toolkit.storage import health as health_store
from toolkit.storage.health import TIMED_OUT, UNHEALTHY, Health, Probe
from toolkit.storage.records import RUNNING, ContainerRecord
from toolkit.storage.state import StateStore
from toolkit.systemd import health_state as rules

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSTEM_NOTIFY_SOCKET = "/run/systemd/notify"
UNHEALTHY_EXIT = 1


class HealthConfig:
    """The health settings of a running container, as stored in its record."""

    __slots__ = ("check", "on_failure", "startup", "unit", "user")

    def __init__(
        self,
        check: Healthcheck,
        startup: StartupCheck | None,
        on_failure: HealthOnFailure,
        unit: str | None,
        user: bool,
    ) -> None:
        self.check = check
        self.startup = startup
        self.on_failure = on_failure
        self.unit = unit  # `NAME.service` when the container runs as a unit
        self.user = user


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


def health_options(container: Container, *, under_unit: bool, user: bool) -> dict[str, Any] | None:
    """What the container's record keeps in ``options.health`` (None without a check)."""
    check = container.healthcheck
    if check is None:
        return None
    data: dict[str, Any] = {
        "test": list(check.test),
        "interval": _seconds(check.interval),
        "timeout": _seconds(check.timeout),
        "retries": check.retries,
        "start_period": _seconds(check.start_period),
        "start_interval": _seconds(check.start_interval),
        "on_failure": container.health_on_failure.value,
        "unit": f"{container.unit_name}.service" if under_unit else None,
        "user": user,
    }
    startup = container.health_startup
    if startup is not None:
        data["startup"] = {
            "test": list(startup.test),
            "interval": _seconds(startup.interval),
            "timeout": _seconds(startup.timeout),
            "retries": startup.retries,
            "success": startup.success,
        }
    return data


def config_of(record: ContainerRecord) -> HealthConfig | None:
    """The record's health settings; None when the container has no check."""
    data = record.options.health
    if not data:
        return None
    check = Healthcheck(
        tuple(data["test"]),
        timedelta(seconds=data["interval"]),
        timedelta(seconds=data["timeout"]),
        int(data["retries"]),
        timedelta(seconds=data["start_period"]),
        timedelta(seconds=data["start_interval"]),
    )
    startup = None
    if data.get("startup"):
        s = data["startup"]
        startup = StartupCheck(
            tuple(s["test"]),
            timedelta(seconds=s["interval"]),
            timedelta(seconds=s["timeout"]),
            int(s["retries"]),
            int(s["success"]),
        )
    on_failure = HealthOnFailure(data.get("on_failure", "none"))
    return HealthConfig(check, startup, on_failure, data.get("unit"), bool(data.get("user")))


def run_probe(record: ContainerRecord, test: tuple[str, ...], timeout: timedelta, *,
              startup: bool, scratch_dir: str | None = None) -> Probe:  # fmt: skip
    """Run one check in the container (its timeout kills it) as a `Probe`."""
    from toolkit.systemd.health import run_check_in_container

    check = Healthcheck(test, timeout=timeout)
    start = time.time()
    result = run_check_in_container(
        record.runtime,
        list(record.options.runtime_args),
        record.id,
        check,
        scratch_dir=scratch_dir,
    )
    code = TIMED_OUT if result.exit_code is None else result.exit_code
    output = result.output
    if result.exit_code is None:
        output = f"the check ran longer than its timeout ({_seconds(timeout):g}s)\n" + output
    return Probe(start, time.time(), code, output, startup=startup)


def journal_line(record: ContainerRecord, config: HealthConfig, message: str, status: str) -> None:
    """One journal entry attributed to the container's unit (sd_journal_send's native
    protocol: one datagram of KEY=value lines); stderr when there is no journal."""
    fields = {
        "MESSAGE": message,
        "PRIORITY": "4" if status == UNHEALTHY else "5",
        "SYSLOG_IDENTIFIER": record.name,
        "CONTAINER_NAME": record.name,
        "CONTAINER_ID_FULL": record.id,
        "PODUNIT_HEALTH": status,
    }
    if config.unit is not None:
        if config.user:
            fields["OBJECT_SYSTEMD_USER_UNIT"] = config.unit
            fields["USER_UNIT"] = config.unit
        else:
            fields["OBJECT_SYSTEMD_UNIT"] = config.unit
    import socket

    payload = "".join(f"{key}={' '.join(value.splitlines())}\n" for key, value in fields.items())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload.encode(), JOURNAL_SOCKET)
    except OSError:
        print(f"podunit: {message}", file=sys.stderr, flush=True)


def send_status(
    record: ContainerRecord, config: HealthConfig, text: str, environ: Mapping[str, str]
) -> bool:
    """``STATUS=text`` for the container's unit, sent with conmon's pid as the sender.

    systemd attributes a notification to the unit of the sender's pid (its
    SCM_CREDENTIALS); conmon is that unit's main process, and the unit has
    ``NotifyAccess=all``. Naming another pid than one's own needs CAP_SYS_ADMIN, so
    this works for system units (root); for user units it is skipped (False).
    """
    if config.unit is None or not record.conmon_pid:
        return False
    import socket
    import struct

    address = environ.get("NOTIFY_SOCKET") or (None if config.user else SYSTEM_NOTIFY_SOCKET)
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    credentials = struct.pack("iII", record.conmon_pid, os.getuid(), os.getgid())
    message = "STATUS=" + " ".join(text.splitlines())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendmsg(
                [message.encode()],
                [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)],
            )
    except OSError:
        return False
    return True


def _systemctl(config: HealthConfig, *args: str) -> None:
    argv = ["systemctl", *(["--user"] if config.user else []), "--no-block", *args]
    proc.run(argv, check=False)


def action_text(config: HealthConfig) -> str:
    """What `act` will do, for the journal line of the transition to unhealthy."""
    action = config.on_failure
    if action is HealthOnFailure.NONE:
        return ""
    if action is HealthOnFailure.STOP:
        return "; health_on_failure stop: " + (
            f"stopping {config.unit}" if config.unit is not None else "sending the stop signal"
        )
    if action is HealthOnFailure.RESTART and config.unit is not None:
        return f"; health_on_failure restart: killing it, systemd restarts {config.unit}"
    return f"; health_on_failure {action.value}: killing it"


def act(record: ContainerRecord, config: HealthConfig) -> None:
    """Take the `health_on_failure` action (after the journal line: a kill ends this run's
    unit too, as it is `PartOf=` the container's)."""
    action = config.on_failure
    if action is HealthOnFailure.NONE:
        return
    runtime = [record.runtime, *record.options.runtime_args]
    if action is HealthOnFailure.STOP and config.unit is not None:
        _systemctl(config, "stop", config.unit)
    elif action is HealthOnFailure.STOP:
        signum = str(record.options.stop_signal)
        proc.run([*runtime, "kill", record.id, signum], check=False)
    else:
        proc.run([*runtime, "kill", record.id, "KILL"], check=False)


def _start_timer(config: HealthConfig) -> str | None:
    """The unit name of the start-pace timer, when the container runs as a unit with one."""
    from toolkit.definitions.health import start_pace, start_timer_of

    if config.unit is None or start_pace(config.check, config.startup) is None:
        return None
    return start_timer_of(config.unit)


def check(
    store: StateStore,
    name: str,
    *,
    scheduled: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """One run of `podunit healthcheck run [--scheduled] NAME` (see the module docstring)."""
    record = store.find(name)
    if record is None or record.status != RUNNING:
        if scheduled:
            return 0
        if record is None:
            raise PodunitError(f"no such container: {name}")
        raise PodunitError(
            f"container {name} is {record.status}: a health check needs it running",
            hint=f"podunit start {name}",
        )
    config = config_of(record)
    if config is None:
        if scheduled:
            return 0
        raise PodunitError(f"container {name} has no health check", hint="add a 'healthcheck'")
    started_at = record.started_at or record.created_at
    before = health_store.get(store, record.id) or Health()
    now = time.time()
    start_timer = _start_timer(config) if scheduled else None
    if scheduled and not rules.due(before, config.check, config.startup, started_at, now):
        if start_timer is not None:
            _systemctl(config, "stop", start_timer)
        return 0
    in_startup = rules.in_startup(before, config.startup)
    if in_startup and config.startup is not None:
        test, timeout = config.startup.test, config.startup.timeout
    else:
        test, timeout = config.check.test, config.check.timeout
    bundle = store.paths.bundle_dir(record.id)
    scratch = bundle if os.path.isdir(bundle) else None
    probe = run_probe(record, test, timeout, startup=in_startup, scratch_dir=scratch)

    def change(health: Health) -> tuple[Health, rules.Transition | None]:
        return rules.apply(health, probe, record.name, config.check, config.startup, started_at)

    outcome = health_store.update(store, record.id, change)
    if outcome is None:  # removed meanwhile
        return 0 if scheduled else (0 if probe.passed else UNHEALTHY_EXIT)
    after, transition = outcome
    if after.status_text() != before.status_text() or not before.log:
        send_status(record, config, after.status_text(), environ)
    if (
        start_timer is not None
        and rules.fast_phase(before, config.check, config.startup, started_at, probe.start)
        and not rules.fast_phase(after, config.check, config.startup, started_at, probe.end)
    ):
        _systemctl(config, "stop", start_timer)
    if not scheduled:
        print(after.status, flush=True)
    if transition is not None:
        done = action_text(config) if transition.unhealthy else ""
        journal_line(record, config, transition.message + done, transition.new)
        if transition.unhealthy:
            act(record, config)
    return 0 if probe.passed else UNHEALTHY_EXIT


def inspect_health(store: StateStore, record: ContainerRecord) -> dict[str, Any] | None:
    """`Health` of `podunit inspect` (Docker's shape): Status, FailingStreak, Log."""
    if config_of(record) is None:
        return None
    from datetime import UTC, datetime

    def iso(timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, UTC).isoformat()

    health = health_store.get(store, record.id) or Health()
    return {
        "Status": health.status,
        "FailingStreak": health.failing_streak,
        "Log": [
            {**probe.to_json(), "Start": iso(probe.start), "End": iso(probe.end)}
            for probe in health.log
        ],
    }

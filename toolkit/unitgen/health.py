"""The health units beside `NAME.service`, pure (podunit.yaml(5) HEALTH CHECKS;
docs/podunit-systemd-integration.md "Health checks").

For a container with a `healthcheck`:

- `NAME-health.service`: `Type=oneshot`, one `podunit healthcheck run --scheduled NAME`
  per run. `Requisite=` + `After=NAME.service` (a run never starts the container),
  `PartOf=` (a run in progress stops with it), `StartLimitIntervalSec=0` (a 1 s
  timer must never hit the start rate limit: that would silently end the checks),
  `NotifyAccess=all` (systemd then passes `NOTIFY_SOCKET`, which the run uses to
  set `NAME.service`'s STATUS=), `SuccessExitStatus=1 SIGTERM` (unhealthy is
  reported on `NAME.service`, not as a failed check unit; a run that the unit's
  stop ends is no failure either), `LogLevelMax=notice` with
  `SyslogLevel=warning` (PID 1's "Starting/Finished" lines for every run are
  dropped; what the run itself prints stays).
- `NAME-health.timer`: `OnUnitActiveSec=interval` (and `OnActiveSec=interval`
  when there is no start pace): the next check one interval after the previous
  one started.
- `NAME-health-start.timer`, when there is a start pace (`health_startup`, or
  `start_period` with a `start_interval` below `interval`): the same at that
  pace; the run stops it once the start phase is over. Both timers trigger the
  same service, so the regular timer's `OnUnitActiveSec=` keeps moving while the
  fast one runs, and takes over one interval after the last fast run.
- Both timers: `BindsTo=` + `After=NAME.service`, and `NAME.service` `Wants=` them,
  so they start once the container is ready (READY=1) and stop when the unit
  stops, fails or restarts (a restart starts them again).

Template `worker@` gets `worker-health@.service` and `worker-health@.timer`, each
instance bound to `worker@INSTANCE.service`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from toolkit.definitions.health import HEALTH_SUFFIX, START_SUFFIX, start_pace
from toolkit.definitions.model import Container, HealthOnFailure, Restart
from toolkit.unitgen.escape import environment_assignment, exec_word, plain_value

Lines = list[tuple[str, str]]
Sections = list[tuple[str, Lines]]

CHECK_TIMEOUT_MARGIN = timedelta(seconds=30)  # beyond the check's own timeout, for podunit
ACCURACY_MAX = timedelta(seconds=1)


def duration(value: timedelta) -> str:
    """A timespan systemd reads exactly: `30s`, `500ms`, `250us`."""
    micro = value // timedelta(microseconds=1)
    if micro % 1_000_000 == 0:
        return f"{micro // 1_000_000}s"
    if micro % 1000 == 0:
        return f"{micro // 1000}ms"
    return f"{micro}us"


def _names(container: Container) -> tuple[str, str, str, str]:
    """(main unit, check service, regular timer, start timer) names as written in units:
    for a template, the instance-bound forms with `%i`."""
    base, at = container.name, "@" if container.template else ""
    instance = "%i" if container.template else ""
    return (
        f"{base}{at}{instance}.service",
        f"{base}{HEALTH_SUFFIX}{at}{instance}.service",
        f"{base}{HEALTH_SUFFIX}{at}{instance}.timer",
        f"{base}{START_SUFFIX}{at}{instance}.timer",
    )


def file_names(container: Container) -> list[str]:
    """The unit files `health_units` writes for `container` (none without a check)."""
    check = container.healthcheck
    if check is None:
        return []
    at = "@" if container.template else ""
    names = [
        f"{container.name}{HEALTH_SUFFIX}{at}.service",
        f"{container.name}{HEALTH_SUFFIX}{at}.timer",
    ]
    if start_pace(check, container.health_startup) is not None:
        names.append(f"{container.name}{START_SUFFIX}{at}.timer")
    return names


def wants(container: Container) -> Lines:
    """`NAME.service`'s [Unit] lines that start the timers with it."""
    check = container.healthcheck
    if check is None:
        return []
    _, _, timer, start_timer = _names(container)
    timers = [timer]
    if start_pace(check, container.health_startup) is not None:
        timers.append(start_timer)
    return [("Wants", name) for name in timers]


def restarts_on_failure(container: Container) -> bool:
    """`health_on_failure: restart` with `restart: no`: the unit gets `Restart=on-failure`,
    so the kill that ends an unhealthy container makes systemd restart it."""
    return (
        container.healthcheck is not None
        and container.health_on_failure is HealthOnFailure.RESTART
        and container.restart is Restart.NO
    )


def _accuracy(interval: timedelta) -> str:
    return duration(max(min(interval / 10, ACCURACY_MAX), timedelta(milliseconds=1)))


def health_units(
    container: Container,
    *,
    podunit_words: str,
    source: str,
    environment: Sequence[tuple[str, str]] = (),
) -> dict[str, Sections]:
    """The health unit files of `container`: file name -> sections (empty without a check).

    `podunit_words` is the escaped podunit prefix of Exec lines (`/path/podunit [--user]`).
    """
    check = container.healthcheck
    if check is None:
        return {}
    main, service, _, _ = _names(container)
    names = file_names(container)
    label = container.unit_name + ("%i" if container.template else "")
    name_word = exec_word(container.unit_name) + ("%i" if container.template else "")
    source_path = plain_value(source, "definition path")
    startup = container.health_startup
    timeout = max(check.timeout, startup.timeout if startup is not None else check.timeout)
    units: dict[str, Sections] = {}
    units[names[0]] = [
        (
            "Unit",
            [
                ("Description", f"podunit health check of container {label}"),
                ("SourcePath", source_path),
                ("Requisite", main),
                ("After", main),
                ("PartOf", main),
                ("StartLimitIntervalSec", "0"),
            ],
        ),
        (
            "Service",
            [
                ("Type", "oneshot"),
                ("NotifyAccess", "all"),
                ("SyslogLevel", "warning"),
                ("LogLevelMax", "notice"),
                *[("Environment", environment_assignment(k, v)) for k, v in environment],
                ("ExecStart", f"{podunit_words} healthcheck run --scheduled {name_word}"),
                ("SuccessExitStatus", "1 SIGTERM"),  # a run the unit's stop ended: not a failure
                ("TimeoutStartSec", duration(timeout + CHECK_TIMEOUT_MARGIN)),
            ],
        ),
    ]
    pace = start_pace(check, startup)
    timer_unit: Lines = [("SourcePath", source_path), ("BindsTo", main), ("After", main)]
    regular: Lines = [("Unit", service)]
    if pace is None:
        regular.append(("OnActiveSec", duration(check.interval)))
    regular += [
        ("OnUnitActiveSec", duration(check.interval)),
        ("AccuracySec", _accuracy(check.interval)),
    ]
    units[names[1]] = [
        ("Unit", [("Description", f"podunit health checks of container {label}"), *timer_unit]),
        ("Timer", regular),
    ]
    if pace is not None:
        units[names[2]] = [
            (
                "Unit",
                [("Description", f"podunit start-up health checks of container {label}"),
                 *timer_unit],
            ),
            (
                "Timer",
                [
                    ("Unit", service),
                    ("OnActiveSec", duration(pace)),
                    ("OnUnitActiveSec", duration(pace)),
                    ("AccuracySec", _accuracy(pace)),
                ],
            ),
        ]  # fmt: skip
    return units

"""Health status for the container's whole life: the counting rules, pure (podunit.yaml(5)
HEALTH CHECKS; spec §1.1 `healthcheck`, `health_on_failure`).

`apply` folds one check result (`Probe`) into the stored `Health` and returns the
new value and the transition it caused, if any; `next_check` says which check a
run performs and whether a scheduled run is due. The rules are Docker's
(moby daemon/health.go), which Compose users expect:

- ``starting`` until the first pass; then ``healthy``; ``retries`` counted
  failures in a row make it ``unhealthy`` (``retries: 0`` means 3); a pass makes
  it ``healthy`` again.
- While ``starting``, a failure within ``start_period`` of the container's start
  does not count.
- With a start-up check (``health_startup``, Quadlet's HealthStartup*) it runs
  first, until it passes ``success`` times in a row; its failures count towards
  its own ``retries`` (0: no limit). Then the regular check takes over, from a
  failing streak of 0.
- The log keeps the last `LOG_ENTRIES` results (Docker keeps 5), each output cut
  to `OUTPUT_MAX` characters.

No I/O here: `toolkit.runtime.healthcheck` runs the checks, stores the result
(`toolkit.storage.health`) and reports transitions.
"""

from __future__ import annotations

from typing import NamedTuple

from toolkit.definitions.model import Healthcheck, StartupCheck
from toolkit.storage.health import (
    HEALTHY,
    LOG_ENTRIES,
    OUTPUT_MAX,
    STARTING,
    UNHEALTHY,
    Health,
    Probe,
)

DEFAULT_RETRIES = 3  # `retries: 0`, as Docker


class Transition(NamedTuple):
    """A change worth one journal line; `unhealthy` says the failure action is due."""

    old: str
    new: str
    message: str

    @property
    def unhealthy(self) -> bool:
        return self.new == UNHEALTHY and self.old != UNHEALTHY


def retries_of(check: Healthcheck) -> int:
    return check.retries if check.retries > 0 else DEFAULT_RETRIES


def clip_output(output: str) -> str:
    return output if len(output) <= OUTPUT_MAX else output[: OUTPUT_MAX - 1] + "…"


def in_startup(health: Health, startup: StartupCheck | None) -> bool:
    """Whether the next run is of the start-up check."""
    return startup is not None and not health.startup_done


def apply(
    health: Health,
    probe: Probe,
    name: str,
    check: Healthcheck,
    startup: StartupCheck | None,
    started_at: float,
) -> tuple[Health, Transition | None]:
    """`health` after `probe`, and the transition it caused (see the module docstring)."""
    log = (*health.log, probe._replace(output=clip_output(probe.output)))[-LOG_ENTRIES:]
    health = health._replace(log=log)
    if probe.startup:
        return _apply_startup(health, probe, name, startup)
    if probe.passed:
        return _set(health._replace(failing_streak=0), HEALTHY, probe, name)
    if health.status == STARTING and probe.start - started_at < check.start_period.total_seconds():
        return health, None  # within the start period: does not count
    streak = health.failing_streak + 1
    health = health._replace(failing_streak=streak)
    if streak >= retries_of(check):
        return _set(health, UNHEALTHY, probe, name)
    return health, None


def _apply_startup(
    health: Health, probe: Probe, name: str, startup: StartupCheck | None
) -> tuple[Health, Transition | None]:
    if probe.passed:
        passes = health.startup_passes + 1
        needed = startup.success if startup is not None else 1
        if passes < needed:
            return health._replace(startup_passes=passes, failing_streak=0), None
        health = health._replace(startup_passes=passes, failing_streak=0, startup_done=True)
        message = f"container {name} passed its start-up check; regular health checks begin"
        return health, Transition(health.status, health.status, message)
    streak = health.failing_streak + 1
    health = health._replace(startup_passes=0, failing_streak=streak)
    if startup is not None and startup.retries and streak >= startup.retries:
        return _set(health, UNHEALTHY, probe, name, what="start-up check")
    return health, None


def _set(
    health: Health, status: str, probe: Probe, name: str, *, what: str = "health check"
) -> tuple[Health, Transition | None]:
    old = health.status
    if old == status:
        return health, None
    health = health._replace(status=status, changed_at=probe.end)
    if status == HEALTHY:
        again = " again" if old == UNHEALTHY else ""
        message = f"container {name} is healthy{again}"
    else:
        message = (
            f"container {name} is unhealthy: its {what} failed {health.failing_streak} "
            f"times in a row (last: {probe.describe()})"
        )
    return health, Transition(old, status, message)


def fast_phase(
    health: Health,
    check: Healthcheck,
    startup: StartupCheck | None,
    started_at: float,
    now: float,
) -> bool:
    """Whether checks still run at the start-up pace (`NAME-health-start.timer`):
    the start-up check is not done, or the container is `starting` within its
    start period."""
    if startup is not None:
        return not health.startup_done
    return (
        bool(check.start_period)
        and health.status == STARTING
        and now - started_at < check.start_period.total_seconds()
    )


def due(
    health: Health,
    check: Healthcheck,
    startup: StartupCheck | None,
    started_at: float,
    now: float,
) -> bool:
    """Whether a timer-started run should check now.

    At the start-up pace every run checks. Afterwards `NAME-health.timer` fires
    one `interval` after the previous run; a run much sooner than that was started
    by the start-up timer just as its phase ended, and is skipped.
    """
    if fast_phase(health, check, startup, started_at, now) or not health.log:
        return True
    return now - health.log[-1].start >= check.interval.total_seconds() / 2

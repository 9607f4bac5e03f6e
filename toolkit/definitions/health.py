"""Facts of a health check definition shared by unit generation and the runtime
(podunit.yaml(5) HEALTH CHECKS): the names of the health units and the start pace."""

from __future__ import annotations

from datetime import timedelta

from toolkit.definitions.model import Healthcheck, StartupCheck

HEALTH_SUFFIX = "-health"  # NAME-health.service, NAME-health.timer
START_SUFFIX = "-health-start"  # NAME-health-start.timer


def start_pace(check: Healthcheck, startup: StartupCheck | None) -> timedelta | None:
    """The interval of `NAME-health-start.timer`, or None when there is no start-up pace:
    `health_startup`'s interval, or `start_interval` when there is a `start_period` and
    it is shorter than `interval`."""
    if startup is not None:
        return startup.interval
    if check.start_period and check.start_interval < check.interval:
        return check.start_interval
    return None


def start_timer_of(unit: str) -> str:
    """`web.service` -> `web-health-start.timer`, `w@a.service` -> `w-health-start@a.timer`."""
    base, at, instance = unit.removesuffix(".service").partition("@")
    return f"{base}{START_SUFFIX}{at}{instance}.timer"

"""The health status rules (toolkit.systemd.health_state; podunit.yaml(5) HEALTH CHECKS), pure."""

from __future__ import annotations

from datetime import timedelta

from toolkit.definitions.health import start_pace
from toolkit.definitions.model import Healthcheck, StartupCheck
from toolkit.storage.health import (
    HEALTHY,
    LOG_ENTRIES,
    OUTPUT_MAX,
    STARTING,
    TIMED_OUT,
    UNHEALTHY,
    Health,
    Probe,
)
from toolkit.systemd.health_state import Transition, apply, due, fast_phase, in_startup

CHECK = Healthcheck(("true",), interval=timedelta(seconds=10), retries=3)


def run(
    results: list[tuple[float, int]],
    check: Healthcheck = CHECK,
    startup: StartupCheck | None = None,
    health: Health | None = None,
) -> tuple[Health, list[Transition]]:
    """Apply (time, exit code) results in order; the start-up check while it is due."""
    health = health or Health()
    transitions: list[Transition] = []
    for at, code in results:
        probe = Probe(at, at + 0.1, code, "out", startup=in_startup(health, startup))
        health, transition = apply(health, probe, "web", check, startup, started_at=0.0)
        if transition is not None:
            transitions.append(transition)
    return health, transitions


def test_starting_then_healthy_on_the_first_pass() -> None:
    health, transitions = run([(10, 0)])
    assert health.status == HEALTHY and health.changed_at == 10.1
    assert transitions == [Transition(STARTING, HEALTHY, "container web is healthy")]
    assert health.status_text() == "health: healthy"


def test_retries_failures_in_a_row_make_it_unhealthy_once() -> None:
    health, transitions = run(
        [(10, 0), (20, 1), (30, 1), (40, 0), (50, 1), (60, 1), (70, 1), (80, 1)]
    )
    assert health.status == UNHEALTHY and health.failing_streak == 4
    assert [t.new for t in transitions] == [HEALTHY, UNHEALTHY]
    assert transitions[-1].unhealthy
    assert transitions[-1].message == (
        "container web is unhealthy: its health check failed 3 times in a row (last: exit 1: out)"
    )
    assert health.status_text() == "health: unhealthy (exit 1: out)"


def test_a_pass_makes_an_unhealthy_container_healthy_again() -> None:
    health, transitions = run([(10, 1), (20, 1), (30, 1), (40, 0)])
    assert health.status == HEALTHY and health.failing_streak == 0
    assert transitions[-1] == Transition(UNHEALTHY, HEALTHY, "container web is healthy again")
    assert not transitions[-1].unhealthy


def test_zero_retries_means_three() -> None:
    check = CHECK._replace(retries=0)
    assert run([(1, 1), (2, 1)], check)[0].status == STARTING
    assert run([(1, 1), (2, 1), (3, 1)], check)[0].status == UNHEALTHY


def test_failures_within_the_start_period_do_not_count() -> None:
    check = CHECK._replace(start_period=timedelta(seconds=30))
    health, _ = run([(5, 1), (10, 1), (15, TIMED_OUT), (20, 1), (25, 1)], check)
    assert health.status == STARTING and health.failing_streak == 0
    health, transitions = run([(5, 1), (31, 1), (41, 1), (51, 1)], check)
    assert health.status == UNHEALTHY and transitions[-1].unhealthy


def test_the_start_period_ends_with_the_first_pass() -> None:
    check = CHECK._replace(start_period=timedelta(seconds=60))
    health, _ = run([(5, 0), (10, 1), (15, 1), (20, 1)], check)
    assert health.status == UNHEALTHY  # healthy once: failures count from then on


def test_the_log_keeps_the_last_five_with_bounded_output() -> None:
    health = Health()
    for at in range(8):
        probe = Probe(at, at + 0.5, at % 2, "x" * (OUTPUT_MAX + 100))
        health, _ = apply(health, probe, "web", CHECK, None, 0.0)
    assert len(health.log) == LOG_ENTRIES
    assert [p.start for p in health.log] == [3, 4, 5, 6, 7]
    assert all(len(p.output) == OUTPUT_MAX for p in health.log)
    assert Probe.from_json(health.log[0].to_json()) == health.log[0]


def test_probe_descriptions() -> None:
    assert Probe(0, 1, TIMED_OUT).describe() == "timed out"
    assert Probe(0, 1, 2, "a\nb\n" + "y" * 500).describe().startswith("exit 2: a b yyy")
    assert len(Probe(0, 1, 2, "y" * 500).describe()) == len("exit 2: ") + 200


def test_startup_check_must_pass_success_times_in_a_row() -> None:
    startup = StartupCheck(("ready",), interval=timedelta(seconds=1), success=2)
    health, transitions = run([(1, 0), (2, 1), (3, 0)], startup=startup)
    assert health.log[-1].startup and not health.startup_done and health.status == STARTING
    health, transitions = run([(1, 0), (2, 1), (3, 0), (4, 0)], startup=startup)
    assert health.startup_done and health.status == STARTING and health.failing_streak == 0
    assert transitions == [
        Transition(
            STARTING,
            STARTING,
            "container web passed its start-up check; regular health checks begin",
        )
    ]
    health, transitions = run([(5, 0)], startup=startup, health=health)
    assert not health.log[-1].startup and health.status == HEALTHY


def test_startup_retries_make_it_unhealthy_and_zero_never_does() -> None:
    limited = StartupCheck(("ready",), retries=2)
    health, transitions = run([(1, 1), (2, 1)], startup=limited)
    assert health.status == UNHEALTHY and transitions[-1].unhealthy
    assert "its start-up check failed 2 times" in transitions[-1].message
    unlimited = StartupCheck(("ready",))
    health, _ = run([(t, 1) for t in range(50)], startup=unlimited)
    assert health.status == STARTING and health.failing_streak == 50


def test_pace_and_due() -> None:
    assert start_pace(CHECK, None) is None
    with_period = CHECK._replace(
        start_period=timedelta(seconds=30), start_interval=timedelta(seconds=1)
    )
    assert start_pace(with_period, None) == timedelta(seconds=1)
    slow_start = with_period._replace(start_interval=timedelta(seconds=20))
    assert start_pace(slow_start, None) is None  # no faster than the interval: one timer
    startup = StartupCheck(("x",), interval=timedelta(seconds=2))
    assert start_pace(CHECK, startup) == timedelta(seconds=2)

    fresh = Health()
    assert fast_phase(fresh, with_period, None, 0, 10) and not fast_phase(
        fresh, with_period, None, 0, 31
    )
    healthy = Health(HEALTHY, log=(Probe(100, 100.1, 0),))
    assert not fast_phase(healthy, with_period, None, 0, 10)
    assert fast_phase(fresh, CHECK, startup, 0, 1000)
    assert not fast_phase(fresh._replace(startup_done=True), CHECK, startup, 0, 1)

    assert due(fresh, CHECK, None, 0, 1)  # never checked
    assert due(healthy, CHECK, None, 0, 110)  # one interval after the last run
    assert not due(healthy, CHECK, None, 0, 101)  # the start timer's last tick

"""The readiness loop of ``notify: healthy`` (spec §3.2) on a scripted clock.

The check results are scripted here to pin the Compose counting rules
(start_period, retries); running real checks in a container is a system test.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from toolkit.definitions.model import Healthcheck
from toolkit.systemd.health import (
    CheckResult,
    ContainerExited,
    Unhealthy,
    poll_interval,
    wait_for_health,
)


class Script:
    """Plays the check results in order on a fake clock that `pause` advances."""

    def __init__(self, results: list[CheckResult], exits_after_pauses: int | None = None):
        self.results = list(results)
        self.now = 0.0
        self.pauses: list[float] = []
        self.lines: list[str] = []
        self.exits_after_pauses = exits_after_pauses

    def check(self) -> CheckResult:
        return self.results.pop(0)

    def pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        self.now += seconds
        return self.exits_after_pauses is not None and len(self.pauses) >= self.exits_after_pauses

    def run(self, check: Healthcheck) -> int:
        return wait_for_health(
            "web", check, self.check, self.pause, clock=lambda: self.now, log=self.lines.append
        )


FAIL = CheckResult(1, "connection refused\n")
PASS = CheckResult(0, "ok")


def test_first_passing_check_ends_the_wait_without_noise() -> None:
    script = Script([PASS])
    assert script.run(Healthcheck(test=("true",))) == 1
    assert script.lines == [] and script.pauses == []


def test_failures_are_logged_and_retried_at_the_poll_interval() -> None:
    script = Script([FAIL, FAIL, PASS])
    check = Healthcheck(test=("true",), interval=timedelta(milliseconds=300), retries=3)
    assert script.run(check) == 3
    assert script.pauses == [0.3, 0.3]
    assert script.lines == [
        "podunit: health check of web failed (1/3): exit 1: connection refused",
        "podunit: health check of web failed (2/3): exit 1: connection refused",
    ]


def test_long_intervals_do_not_delay_readiness() -> None:
    assert poll_interval(Healthcheck(test=("true",))) == 1.0  # Compose default interval 30 s
    assert poll_interval(Healthcheck(test=("true",), interval=timedelta(seconds=0.2))) == 0.2


def test_fast_polling_counts_a_failure_only_once_per_interval() -> None:
    # interval 30 s, polled every second: 61 failures are 3 counted ones (at 0, 30, 60 s)
    script = Script([FAIL] * 61 + [PASS])
    assert script.run(Healthcheck(test=("true",), retries=4)) == 62
    assert [line.split("(")[1].split(")")[0] for line in script.lines] == ["1/4", "2/4", "3/4"]


def test_retries_failures_in_a_row_make_the_container_unhealthy() -> None:
    script = Script([FAIL, FAIL])
    with pytest.raises(Unhealthy) as caught:
        script.run(Healthcheck(test=("true",), interval=timedelta(seconds=1), retries=2))
    assert str(caught.value) == (
        "container web is unhealthy: its health check failed 2 times in a row"
        " (exit 1: connection refused)"
    )
    assert len(script.lines) == 2


def test_failures_in_the_start_period_do_not_count_and_are_logged_once() -> None:
    results = [FAIL] * 5 + [CheckResult(None)] + [PASS]
    script = Script(results)
    check = Healthcheck(
        test=("true",), interval=timedelta(seconds=1), retries=2, start_period=timedelta(seconds=5)
    )
    assert script.run(check) == 7
    assert [line.split("(")[1].split(")")[0] for line in script.lines] == ["start period", "1/2"]
    assert script.lines[-1].endswith(": timed out")


def test_a_container_that_exits_while_waiting_ends_the_wait() -> None:
    script = Script([FAIL, FAIL], exits_after_pauses=1)
    with pytest.raises(ContainerExited, match="container web exited before its health check"):
        script.run(Healthcheck(test=("true",), retries=5))


def test_check_output_is_one_bounded_line() -> None:
    result = CheckResult(2, "line one\nline two\n" + "x" * 500)
    text = result.describe()
    assert text.startswith("exit 2: line one line two xxx")
    assert len(text) == len("exit 2: ") + 200
    assert "\n" not in text
    assert CheckResult(None, "").describe() == "timed out"
    assert CheckResult(0).passed and not CheckResult(None).passed


def test_zero_retries_means_the_default_of_three_like_docker() -> None:
    script = Script([FAIL, FAIL, FAIL])
    with pytest.raises(Unhealthy, match="failed 3 times in a row"):
        script.run(Healthcheck(test=("true",), interval=timedelta(seconds=1), retries=0))
    assert [line.split("(")[1].split(")")[0] for line in script.lines] == ["1/3", "2/3", "3/3"]

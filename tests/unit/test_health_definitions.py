"""The health keys of both forms (podunit.yaml(5) HEALTH CHECKS): healthcheck,
health_startup, health_on_failure; Compose's healthcheck fields and x-podunit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from toolkit.definitions.loader import load_paths
from toolkit.definitions.model import (
    Container,
    Healthcheck,
    HealthOnFailure,
    StartupCheck,
    container_from_json,
    container_to_json,
)


def load(tmp_path: Path, text: str, name: str = "c.yaml") -> tuple[dict[str, Container], list[str]]:
    path = tmp_path / name
    path.write_text(text)
    result = load_paths([path])
    return result.containers, [str(e).removeprefix(f"{path}:") for e in result.errors]


def own(tmp_path: Path, spec: str) -> tuple[Container | None, list[str]]:
    body = "".join(f"    {line}\n" for line in spec.splitlines())
    containers, errors = load(tmp_path, f"containers:\n  c:\n    image: x\n{body}")
    return containers.get("c"), errors


def test_every_healthcheck_field_and_the_defaults(tmp_path: Path) -> None:
    c, errors = own(
        tmp_path,
        "healthcheck: {test: [CMD, curl, -f, http://x/], interval: 10s, timeout: 2s,"
        " retries: 5, start_period: 1m, start_interval: 500ms}",
    )
    assert errors == [] and c is not None
    assert c.healthcheck == Healthcheck(
        ("curl", "-f", "http://x/"),
        interval=timedelta(seconds=10),
        timeout=timedelta(seconds=2),
        retries=5,
        start_period=timedelta(minutes=1),
        start_interval=timedelta(milliseconds=500),
    )
    assert c.health_on_failure is HealthOnFailure.NONE and c.health_startup is None
    c, _ = own(tmp_path, "healthcheck: {test: 'pg_isready -U x'}")
    assert c is not None and c.healthcheck == Healthcheck(("/bin/sh", "-c", "pg_isready -U x"))
    assert c.healthcheck.start_interval == timedelta(seconds=5)  # Docker's default


@pytest.mark.parametrize(
    ("test", "argv"),
    [
        ("[CMD, 'true']", ("true",)),
        ("[CMD-SHELL, 'exit 0']", ("/bin/sh", "-c", "exit 0")),
        ("[/bin/check, --quick]", ("/bin/check", "--quick")),
        ("'a && b'", ("/bin/sh", "-c", "a && b")),
    ],
)
def test_test_forms(tmp_path: Path, test: str, argv: tuple[str, ...]) -> None:
    c, errors = own(tmp_path, f"healthcheck: {{test: {test}}}")
    assert errors == [] and c is not None and c.healthcheck is not None
    assert c.healthcheck.test == argv


@pytest.mark.parametrize(
    "spec",
    [
        "healthcheck: {test: [NONE]}",
        "healthcheck: {test: [CMD, 'true'], disable: true}",
        "healthcheck: {disable: true}\nhealth_on_failure: restart",
    ],
)
def test_disabled_checks_are_no_check(tmp_path: Path, spec: str) -> None:
    c, errors = own(tmp_path, spec)
    assert errors == [] and c is not None and c.healthcheck is None


def test_health_startup_and_on_failure(tmp_path: Path) -> None:
    c, errors = own(
        tmp_path,
        "healthcheck: {test: [CMD, 'true']}\nhealth_on_failure: restart\n"
        "health_startup: {test: [CMD, ready], interval: 1s, timeout: 3s, retries: 20, success: 2}",
    )
    assert errors == [] and c is not None
    assert c.health_on_failure is HealthOnFailure.RESTART
    assert c.health_startup == StartupCheck(
        ("ready",), timedelta(seconds=1), timedelta(seconds=3), retries=20, success=2
    )
    c, _ = own(tmp_path, "healthcheck: {test: [CMD, 'true']}\nhealth_startup: {test: ready}")
    assert c is not None and c.health_startup == StartupCheck(("/bin/sh", "-c", "ready"))
    # round trip through the plan file
    assert c is not None and container_from_json(container_to_json(c)) == c


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("healthcheck: {test: [CMD, x], interval: 0}", "interval must be longer than 0"),
        ("healthcheck: {test: [CMD, x], timeout: 0s}", "timeout must be longer than 0"),
        ("healthcheck: {test: [CMD, x], start_intervall: 1s}", "did you mean 'start_interval'"),
        ("healthcheck: {test: [CMD, x], retries: -1}", "retries '-1' out of range"),
        ("health_on_failure: restart", "4:5: health_on_failure needs a healthcheck"),
        ("health_startup: {test: x}", "4:5: health_startup needs a healthcheck"),
        ("healthcheck: {test: x}\nhealth_on_failure: reboot", "invalid health_on_failure 'reboot'"),
        ("healthcheck: {test: x}\nhealth_startup: {interval: 1s}", "health_startup needs 'test'"),
        ("healthcheck: {test: x}\nhealth_startup: {test: x, sucess: 2}", "did you mean 'success'"),
    ],
)
def test_bad_health_keys(tmp_path: Path, spec: str, expected: str) -> None:
    c, errors = own(tmp_path, spec)
    assert c is None and len(errors) == 1 and expected in errors[0], errors


def test_compose_fields_and_x_podunit(tmp_path: Path) -> None:
    containers, errors = load(
        tmp_path,
        "services:\n  web:\n    image: nginx\n"
        "    healthcheck:\n      test: [CMD-SHELL, 'curl -f http://localhost/']\n"
        "      interval: 1m30s\n      timeout: 10s\n      retries: 3\n"
        "      start_period: 40s\n      start_interval: 5s\n"
        "    x-podunit:\n      health_on_failure: kill\n"
        "      health_startup: {test: [CMD, 'true'], interval: 2s}\n",
        "compose.yaml",
    )
    assert errors == []
    web = next(iter(containers.values()))
    assert web.healthcheck is not None and web.healthcheck.interval == timedelta(seconds=90)
    assert web.healthcheck.start_period == timedelta(seconds=40)
    assert web.health_on_failure is HealthOnFailure.KILL
    assert web.health_startup is not None and web.health_startup.test == ("true",)

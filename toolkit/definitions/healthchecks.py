"""The own form's health keys: `healthcheck` (Compose's) and `health_startup` (Quadlet's
HealthStartup*) (podunit.yaml(5) "healthcheck"; spec §1.1).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from toolkit.definitions.model import Healthcheck, StartupCheck
from toolkit.definitions.readers import (
    Context,
    Fields,
    argv,
    boolean,
    check_keys,
    duration,
    fail,
    integer,
    text,
)
from toolkit.definitions.tree import Node

HEALTHCHECK_KEYS = frozenset(
    {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
)
STARTUP_CHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "success"})


def _check_test(node: Node, what: str) -> tuple[str, ...] | None:
    """A check's `test` as an argv: `[CMD, ...]`, `[CMD-SHELL, "cmd"]`, a plain list,
    or a string (run by `/bin/sh -c`); None for `[NONE]` (disabled)."""
    if not node.is_sequence:
        return ("/bin/sh", "-c", text(node, what, multiline=True))
    test = argv(node, what)
    if not test:
        raise fail(node, f"{what} must not be empty")
    if test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        if len(test) != 2:
            raise fail(node, "CMD-SHELL takes exactly one command string")
        return ("/bin/sh", "-c", test[1])
    if test[0] == "CMD":
        if len(test) == 1:
            raise fail(node, f"{what.split()[0]} CMD needs a command")
        return test[1:]
    return test


def _positive_duration(node: Node, what: str) -> timedelta:
    result = duration(node, what)
    if not result:
        raise fail(node, f"{what} must be longer than 0")
    return result


def healthcheck(node: Node) -> Healthcheck | None:
    """Compose's healthcheck; None when disabled (`disable: true` or `test: [NONE]`)."""
    keys = check_keys(node, HEALTHCHECK_KEYS, "healthcheck")
    if "disable" in keys and boolean(keys["disable"].node, "disable"):
        return None
    if "test" not in keys:
        raise fail(node, "healthcheck needs 'test'")
    test = _check_test(keys["test"].node, "healthcheck test")
    if test is None:
        return None
    extra: dict[str, Any] = {}
    for key in ("interval", "timeout", "start_interval"):
        if key in keys:
            extra[key] = _positive_duration(keys[key].node, key)
    if "start_period" in keys:
        extra["start_period"] = duration(keys["start_period"].node, "start_period")
    if "retries" in keys:
        extra["retries"] = integer(keys["retries"].node, "retries", 0)
    return Healthcheck(test, **extra)


def health_startup(node: Node) -> StartupCheck | None:
    """`health_startup` (Quadlet's HealthStartup*); None for `test: [NONE]`."""
    keys = check_keys(node, STARTUP_CHECK_KEYS, "health_startup")
    if "test" not in keys:
        raise fail(node, "health_startup needs 'test'")
    test = _check_test(keys["test"].node, "health_startup test")
    if test is None:
        return None
    extra: dict[str, Any] = {}
    for key in ("interval", "timeout"):
        if key in keys:
            extra[key] = _positive_duration(keys[key].node, key)
    if "retries" in keys:
        extra["retries"] = integer(keys["retries"].node, "retries", 0)
    if "success" in keys:
        extra["success"] = max(1, integer(keys["success"].node, "success", 0))
    return StartupCheck(test, **extra)


def key_health_startup(node: Node, ctx: Context, out: Fields) -> None:
    out["health_startup"] = health_startup(node)


def key_healthcheck(node: Node, ctx: Context, out: Fields) -> None:
    out["healthcheck"] = healthcheck(node)

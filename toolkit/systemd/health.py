"""Health checks and ``notify: healthy`` (spec §1.1 ``healthcheck``, §3.2).

Design:

- `podunit run` (the unit's ExecStart) stays the unit's main process while it
  waits: it runs the check at once, then every ``interval`` (at most every
  `READINESS_POLL`, so a 30 s Compose default does not delay readiness), and only
  when a check passes does the run path send ``MAINPID=<conmon>`` + ``READY=1``.
  ``STATUS=`` tells `systemctl status` what is awaited.
- Each check is ``RUNTIME exec`` of the ``test`` argv in the container with the
  container's own process settings, bounded by ``timeout``: on expiry the checked
  process (``--pid-file``) is killed and the attempt counts as failed.
- Failures within ``start_period`` do not count; after it, a failure counts at
  most once per ``interval`` (polling faster does not make a container unhealthy
  sooner than Compose would), and ``retries`` counted failures in a row make the
  container unhealthy: `Unhealthy` (exit 125), so the unit
  fails and ``ExecStopPost=`` removes the container. If the container exits
  first, `ContainerExited`. ``TimeoutStartSec=`` (the generator sizes it for
  start_period + retries) bounds everything: systemd then kills `podunit run`.
- Every counted failure is one journal line on stderr (the unit's stream), and
  so is the first failure within the start period.
- A ``health_startup`` check runs first, until it passes ``success`` times in a
  row; its ``retries`` failures in a row (0: no limit) are `Unhealthy` too.
- The passing result is recorded in the health table (``healthy``), and from READY
  on the health timers (`toolkit.unitgen.health`, `toolkit.runtime.healthcheck`)
  keep checking for the container's whole life. Health gates readiness and
  ``depends_on: {x: {condition: service_healthy}}``, which the generator maps
  onto ``After=`` a ``notify: healthy`` unit.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

from toolkit import proc
from toolkit.definitions.model import Container, Healthcheck
from toolkit.errors import PodunitError
from toolkit.fs import read_text
from toolkit.storage.health import HEALTHY, LOG_ENTRIES, TIMED_OUT, Health, Probe
from toolkit.storage.records import ContainerRecord
from toolkit.storage.state import StateStore
from toolkit.systemd import notify
from toolkit.systemd.activation import environment_for_conmon

READINESS_POLL = timedelta(seconds=1)
DEFAULT_RETRIES = 3  # what Docker uses for `retries: 0`
OUTPUT_LIMIT = 200  # characters of a failed check's output shown in the journal


class Unhealthy(PodunitError):
    """The health check failed `retries` times in a row after the start period."""


class ContainerExited(PodunitError):
    """The container ended before its health check passed."""


class CheckResult:
    """One run of the check: its exit status (None: timed out) and combined output.

    A plain class: `dataclasses` would cost every scheduled check ~10 ms of imports.
    """

    __slots__ = ("exit_code", "output")

    def __init__(self, exit_code: int | None, output: str = "") -> None:
        self.exit_code = exit_code
        self.output = output

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckResult) and (self.exit_code, self.output) == (
            other.exit_code,
            other.output,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CheckResult({self.exit_code!r}, {self.output!r})"

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        """`exit 1: output` / `timed out`, on one line for the journal."""
        what = "timed out" if self.exit_code is None else f"exit {self.exit_code}"
        text = " ".join(self.output.split())
        if len(text) > OUTPUT_LIMIT:
            text = text[: OUTPUT_LIMIT - 1] + "…"
        return f"{what}: {text}" if text else what


def poll_interval(check: Healthcheck) -> float:
    """Seconds between attempts while waiting for readiness."""
    return min(check.interval, READINESS_POLL).total_seconds()


def wait_for_health(
    name: str,
    check: Healthcheck,
    run_check: Callable[[], CheckResult],
    pause: Callable[[float], bool],
    *,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> int:
    """Run `run_check` until it passes; returns the number of attempts.

    `pause(seconds)` waits and returns True if the container exited meanwhile.
    Raises `Unhealthy` after `retries` counted failures in a row, `ContainerExited`.
    """
    retries = check.retries if check.retries > 0 else DEFAULT_RETRIES
    count_from = clock() + check.start_period.total_seconds()
    attempts = counted_failures = 0
    start_period_logged = False
    while True:
        attempts += 1
        result = run_check()
        if result.passed:
            return attempts
        now = clock()
        if now >= count_from:
            counted_failures += 1
            count_from = now + check.interval.total_seconds()
            progress = f"{counted_failures}/{retries}"
            log(f"podunit: health check of {name} failed ({progress}): {result.describe()}")
        elif not start_period_logged and counted_failures == 0:
            start_period_logged = True
            log(f"podunit: health check of {name} failed (start period): {result.describe()}")
        if counted_failures >= retries:
            raise Unhealthy(
                f"container {name} is unhealthy: its health check failed"
                f" {counted_failures} times in a row ({result.describe()})",
                hint=f"see `journalctl -u {name}` and `podunit exec {name} -- ...`",
            )
        if pause(poll_interval(check)):
            raise ContainerExited(f"container {name} exited before its health check passed")


def run_check_in_container(
    runtime: str,
    runtime_args: list[str],
    container_id: str,
    check: Healthcheck,
    *,
    environ: Mapping[str, str] = os.environ,
    scratch_dir: str | None = None,
) -> CheckResult:
    """``RUNTIME exec`` of the check's argv; killed after ``timeout`` (then exit_code None).

    The checked process's pid file goes into `scratch_dir` (a directory only root
    writes, e.g. the container's bundle), else into a fresh temporary directory.
    """
    if scratch_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="podunit-health-") as scratch:
            return _run_check(runtime, runtime_args, container_id, check, environ, scratch)
    return _run_check(runtime, runtime_args, container_id, check, environ, scratch_dir)


def _run_check(
    runtime: str,
    runtime_args: list[str],
    container_id: str,
    check: Healthcheck,
    environ: Mapping[str, str],
    scratch: str,
) -> CheckResult:
    pidfile = os.path.join(scratch, f"health-{os.getpid()}.pid")
    try:
        argv = [runtime, *runtime_args, "exec", "--pid-file", pidfile, container_id]
        try:
            result = proc.run(
                [*argv, *check.test],
                check=False,
                env=environment_for_conmon(environ),
                timeout=check.timeout.total_seconds(),
            )
        except subprocess.TimeoutExpired as expired:
            _kill_checked_process(pidfile)
            output = (expired.stdout or b"") + (expired.stderr or b"")
            return CheckResult(None, output.decode(errors="replace"))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
    output = result.stdout + result.stderr
    return CheckResult(result.returncode, output.decode(errors="replace"))


def _kill_checked_process(pidfile: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(read_text(pidfile).strip()), signal.SIGKILL)


def pause_watching(pid: int | None) -> Callable[[float], bool]:
    """A `pause` for `wait_for_health` that returns early (True) when `pid` exits."""
    pidfd: int | None = None
    if pid:
        with contextlib.suppress(ProcessLookupError):
            pidfd = os.pidfd_open(pid)

    def pause(seconds: float) -> bool:
        if pidfd is None:
            return True
        readable, _, _ = select.select([pidfd], [], [], seconds)
        return bool(readable)

    return pause


def _probe(result: CheckResult, start: float, *, startup: bool = False) -> Probe:
    code = TIMED_OUT if result.exit_code is None else result.exit_code
    return Probe(start, time.time(), code, result.output, startup=startup)


def wait_until_healthy(
    store: StateStore,
    record: ContainerRecord,
    container: Container,
    *,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """``notify: healthy``: return once the container's check passes (see module docstring).

    A ``health_startup`` check runs first, until it passes ``success`` times in a row
    (the rules of `toolkit.systemd.health_state`). The passing result is recorded in the
    health table, so the container is ``healthy`` from READY on and the health timers
    continue from there.
    """
    from toolkit.storage import health as health_store
    from toolkit.systemd import health_state

    check = container.healthcheck
    if check is None:
        raise PodunitError(f"container {container.name}: notify 'healthy' needs a healthcheck")
    runtime_args = list(record.options.runtime_args)
    pause = pause_watching(record.conmon_pid)
    started_at = record.started_at or time.time()
    health = Health()
    startup = container.health_startup
    if startup is not None:
        notify.notify_status("waiting for the start-up check to pass", environ)
        startup_check = Healthcheck(startup.test, timeout=startup.timeout)
        while not health.startup_done:
            start = time.time()
            result = run_check_in_container(
                record.runtime, runtime_args, record.id, startup_check, environ=environ,
                scratch_dir=store.paths.bundle_dir(record.id),
            )  # fmt: skip
            health, transition = health_state.apply(
                health, _probe(result, start, startup=True), container.name, check, startup,
                started_at,
            )  # fmt: skip
            if transition is not None and transition.unhealthy:
                raise Unhealthy(transition.message, hint=f"see `journalctl -u {container.name}`")
            if transition is not None:  # the start-up check passed: one journal line
                print(f"podunit: {transition.message}", file=sys.stderr, flush=True)
            if not health.startup_done and pause(startup.interval.total_seconds()):
                raise ContainerExited(f"container {container.name} exited before it started up")
    notify.notify_status("waiting for the health check to pass", environ)
    last: list[Probe] = []

    def run_check() -> CheckResult:
        start = time.time()
        result = run_check_in_container(
            record.runtime, runtime_args, record.id, check, environ=environ,
            scratch_dir=store.paths.bundle_dir(record.id),
        )  # fmt: skip
        last[:] = [_probe(result, start)]
        return result

    wait_for_health(container.name, check, run_check, pause)
    passed = last[0]
    health = health._replace(
        status=HEALTHY,
        failing_streak=0,
        startup_done=startup is not None,
        log=(*health.log, passed)[-LOG_ENTRIES:],
        changed_at=passed.end,
    )
    health_store.update(store, record.id, lambda _: (health, None))
    print(f"podunit: container {container.name} is healthy", file=sys.stderr, flush=True)
    notify.notify_status(health.status_text(), environ)

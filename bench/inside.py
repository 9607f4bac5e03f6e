"""The benchmark scenarios, run inside the sandbox: ``python -m bench.inside SIZES_JSON OUT``
(``python -m bench.inside teardown`` removes everything it set up).

Every contender runs in the same booted systemd, in one run, alternating: each
repetition visits the contenders in a rotated order, so drift (other load on the
machine, caches) spreads over all of them. Results go to OUT as JSON:
``{"meta": {...}, "scenarios": {scenario: {contender: measurement}}}`` where a
measurement holds ``samples`` (milliseconds) or ``error``.

Contenders: ``podunit`` (generated units, runtime runc), ``podunit-crun`` (the
same with crun), ``podman`` (a unit shaped like Quadlet 4.4's output: ``podman
run --sdnotify=conmon --cgroups=split --rootfs``, Type=notify, KillMode=mixed,
Delegate=yes, runtime runc), and the floors ``runc`` and ``crun`` (``run -d``,
``exec``, ``kill`` + ``delete`` of an OCI bundle, no systemd). Every container is
the same busybox rootfs running a shell that exits 0 on SIGTERM, without network,
except in the ``network`` scenario: start/stop of one container on the default
bridge network with one published port, podunit (its `podunit` network, netavark)
against Podman (its `podman` network, the same netavark and aardvark-dns). The
sandbox has its own network namespace (`scripts/bench` boots it so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from toolkit import proc
from toolkit.errors import PodunitError
from toolkit.unitgen.escape import command_line

REPO = Path(__file__).resolve().parent.parent
PODUNIT = str(REPO / ".venv" / "bin" / "podunit")
GENERATOR = str(REPO / "generators" / "podunit-generator")
WORK = Path("/srv/podunit-bench")
ROOTFS = WORK / "rootfs"
PAYLOAD = ("sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait")
UNIT_DIR = Path("/etc/systemd/system")
DEFINITION = Path("/etc/podunit/podunit-bench.yaml")
PODMAN_STORAGE_CONF = """\
# podunit benchmark: vfs, because overlay cannot stack on the sandbox's overlayfs root
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""
# The reference numbers for Quadlet (podman >= 4.4), not measured here.
T = TypeVar("T")
QUADLET_REFERENCE_MS = {1: 3.0, 1000: 114.0}


@dataclass(frozen=True)
class Sizes:
    """How much to measure; `quick` for a smoke run, `full` (default) for the table."""

    lifecycle_repeats: int = 20
    exec_repeats: int = 30
    ps_repeats: int = 10
    generator_counts: tuple[int, ...] = (1, 100, 1000)
    generator_repeats: int = 10
    density: int = 100
    burst: int = 50
    burst_repeats: int = 3
    contenders: tuple[str, ...] = ("podunit", "podunit-crun", "podman", "runc", "crun")
    scenarios: tuple[str, ...] = (
        "generator", "lifecycle", "network", "exec", "density", "burst"
    )  # fmt: skip
    budget_seconds: float = 780.0  # the whole run; scenarios stop repeating when it is spent

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            lifecycle_repeats=3,
            exec_repeats=5,
            ps_repeats=3,
            generator_counts=(1, 100),
            generator_repeats=3,
            density=5,
            burst=5,
            burst_repeats=1,
            budget_seconds=150.0,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sizes:
        fields = {field.name for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in data.items()
            if key in fields
        }
        return cls(**values)


class BenchFailure(PodunitError):
    """A contender could not do what the scenario asks (its measurement becomes an error)."""


# ---------------------------------------------------------------------------
# Running and timing programs


def run_timed(argv: Sequence[str], *, env: dict[str, str] | None = None) -> float:
    """Milliseconds from spawning `argv` to its exit. Its stdio is /dev/null and a file
    (never a pipe: `runc run -d` hands its stdio to the container, which would keep a
    pipe open). Raises BenchFailure with the tail of its stderr if it fails."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = proc.spawn(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors.fileno())
        status = child.wait()
        elapsed = (time.perf_counter() - started) * 1000
        if status != 0:
            errors.seek(0)
            raise BenchFailure(f"{' '.join(argv)}: exit status {status}: {_tail(errors.read())}")
    return elapsed


GNU_TIME = "/usr/bin/time"


def peak_memory_kib(argv: Sequence[str], *, env: dict[str, str]) -> int | None:
    """Peak resident memory of one run of `argv` in KiB, from GNU time's %M (getrusage's
    ru_maxrss of a child forked by the small `time`: a child forked or vforked by this
    Python process would report this process's peak instead, maxrss survives exec).
    None without GNU time (Debian package `time`; scripts/bench installs it)."""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("r") as report:
        run_timed([GNU_TIME, "-f", "%M", "-o", report.name, *argv], env=env)
        return int(report.read().split()[-1])


def _tail(stderr: bytes, lines: int = 3) -> str:
    text = stderr.decode(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "no error output"


def quiet(argv: Sequence[str], *, check: bool = True) -> str:
    """Run an untimed helper command; its stdout (stripped)."""
    return proc.output(argv, check=check)


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """`items` rotated left by `turn`: each repetition starts with another contender."""
    if not items:
        return []
    shift = turn % len(items)
    return [*items[shift:], *items[:shift]]


# ---------------------------------------------------------------------------
# Contenders


class Contender(Protocol):
    key: str

    def prepare(self, count: int) -> None: ...
    def name(self, index: int) -> str: ...
    def start(self, names: Sequence[str]) -> None: ...
    def stop(self, names: Sequence[str]) -> None: ...
    def check_active(self, names: Sequence[str]) -> None: ...
    def exec_argv(self, name: str) -> list[str]: ...
    def ps_argv(self) -> list[str]: ...
    def resident_pids(self, names: Sequence[str]) -> list[int]: ...
    def payload_pids(self, names: Sequence[str]) -> list[int]: ...
    def cleanup(self, names: Sequence[str]) -> None: ...


SIGTERM_BIT = 1 << (15 - 1)  # SigCgt in /proc/PID/status is a mask of signals 1..64


def catches_sigterm(pid: int) -> bool:
    """Whether `pid` has a SIGTERM handler (proc(5): SigCgt)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    except (OSError, ValueError):
        pass
    return False


def wait_until_terminable(item: Contender, names: Sequence[str], timeout: float = 5.0) -> None:
    """Wait (untimed) until every container's shell has installed its SIGTERM trap:
    "started" means the process runs, not that it got that far, and a PID 1 without a
    handler ignores SIGTERM (the stop would then wait for the kill timeout)."""
    deadline = time.monotonic() + timeout
    while sum(map(catches_sigterm, item.payload_pids(names))) < len(names):
        if time.monotonic() > deadline:
            raise BenchFailure(f"{item.key}: {names[0]} never caught SIGTERM")
        time.sleep(0.002)


class UnitContender:
    """Containers as systemd services: start/stop are `systemctl start/stop`, which
    return once the job is done (Type=notify: when READY=1 arrived)."""

    key = ""
    prefix = ""

    def name(self, index: int) -> str:
        return f"{self.prefix}{index}"

    def start(self, names: Sequence[str]) -> None:
        try:
            run_timed(["systemctl", "start", *(f"{n}.service" for n in names)])
        except BenchFailure:
            raise BenchFailure(
                f"{self.key}: systemctl start failed; {names[0]}.service said: "
                + self.journal(names[0])
            ) from None

    def stop(self, names: Sequence[str]) -> None:
        run_timed(["systemctl", "stop", *(f"{n}.service" for n in names)])

    def check_active(self, names: Sequence[str]) -> None:
        result = proc.run(["systemctl", "is-active", *(f"{n}.service" for n in names)], check=False)
        states = result.stdout.decode().split()
        if any(state != "active" for state in states):
            raise BenchFailure(
                f"{self.key}: units not active after start: {sorted(set(states))}; "
                f"journal: {self.journal(names[0])}"
            )

    def journal(self, name: str) -> str:
        """The last lines the unit's own processes logged (not systemd's about it)."""
        text = quiet(
            ["journalctl", "-q", "-o", "cat", "-n", "3", f"_SYSTEMD_UNIT={name}.service"],
            check=False,
        )
        return " | ".join(text.splitlines()) or "nothing in the journal"

    def resident_pids(self, names: Sequence[str]) -> list[int]:
        """Processes in the units' cgroups that are not the container's (another pid
        namespace): what the contender leaves behind per container."""
        return self._unit_processes(names, payload=False)

    def payload_pids(self, names: Sequence[str]) -> list[int]:
        """The containers' processes: those in the units' cgroups in another pid namespace."""
        return self._unit_processes(names, payload=True)

    def _unit_processes(self, names: Sequence[str], *, payload: bool) -> list[int]:
        own_namespace = os.readlink("/proc/self/ns/pid")
        found: list[int] = []
        for name in names:
            group = quiet(["systemctl", "show", "-P", "ControlGroup", f"{name}.service"])
            if not group:
                continue
            for pid in cgroup_pids(Path("/sys/fs/cgroup") / group.lstrip("/")):
                with contextlib.suppress(OSError):
                    if (os.readlink(f"/proc/{pid}/ns/pid") != own_namespace) == payload:
                        found.append(pid)
        return found

    def cleanup(self, names: Sequence[str]) -> None:
        proc.run(["systemctl", "stop", *(f"{n}.service" for n in names)], check=False)
        proc.run(["systemctl", "reset-failed", *(f"{n}.service" for n in names)], check=False)


class PodunitUnits(UnitContender):
    """podunit's generated units (definitions in /etc/podunit, the generator installed)."""

    def __init__(self, runtime: str, *, bridge: bool = False) -> None:
        self.runtime = runtime
        self.key = "podunit" if runtime == "runc" else f"podunit-{runtime}"
        self.prefix = "bpu-" if runtime == "runc" else f"bpu{runtime[0]}-"
        self.bridge = bridge  # the default bridge network and one published port
        if bridge:
            self.prefix = "bpun-"

    def definition(self, count: int) -> str:
        command = json.dumps(list(PAYLOAD))
        lines = ["containers:"]
        for index in range(count):
            lines += [
                f"  {self.name(index)}:",
                f"    rootfs: {ROOTFS}",
                f"    command: {command}",
                *(
                    ["    network: bridge", f'    ports: ["{NETWORK_PORT}:80"]']
                    if self.bridge
                    else ["    network: none"]
                ),
                f"    runtime: {self.runtime}",
                "    log_driver: journald",
                "    install: {}",
            ]
        return "\n".join(lines) + "\n"

    def prepare(self, count: int) -> None:
        path = DEFINITION.with_name(f"{DEFINITION.stem}-{self.prefix.strip('-')}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.definition(count))

    def exec_argv(self, name: str) -> list[str]:
        return [PODUNIT, "exec", name, "true"]

    def ps_argv(self) -> list[str]:
        return [PODUNIT, "ps"]


class PodmanUnits(UnitContender):
    """Hand-written units shaped like Quadlet 4.4's (Podman 4.3.1 has no Quadlet)."""

    key = "podman"
    prefix = "bpm-"

    def __init__(self, *, bridge: bool = False) -> None:
        self.bridge = bridge  # Podman's default network and one published port
        if bridge:
            self.prefix = "bpm-net-"

    def unit(self, name: str) -> str:
        cidfile = f"/run/{name}.cid"
        run = [
            "/usr/bin/podman",
            "run",
            f"--name={name}",
            f"--cidfile={cidfile}",
            "--replace",
            "--rm",
            "-d",
            "--log-driver=journald",
            "--sdnotify=conmon",
            "--cgroups=split",
            *(
                ["--network=bridge", f"--publish={NETWORK_PORT + 1}:80"]
                if self.bridge
                else ["--network=none"]
            ),
            "--pids-limit=0",
            "--runtime",
            "runc",
            "--rootfs",
            str(ROOTFS),
            *PAYLOAD,
        ]
        remove = ["/usr/bin/podman", "rm", "-f", "-i", f"--cidfile={cidfile}"]
        return (
            f"[Unit]\nDescription=podunit benchmark: podman container {name}\n\n"
            "[Service]\nEnvironment=PODMAN_SYSTEMD_UNIT=%n\nKillMode=mixed\nDelegate=yes\n"
            "Type=notify\nNotifyAccess=all\nSyslogIdentifier=%N\n"
            f"ExecStart={command_line(run)}\n"
            f"ExecStop={command_line(remove)}\n"
            f"ExecStopPost={command_line(remove, prefix='-')}\n"
            f"ExecStopPost={command_line(['/bin/rm', '-f', cidfile], prefix='-')}\n"
        )

    def prepare(self, count: int) -> None:
        for index in range(count):
            name = self.name(index)
            (UNIT_DIR / f"{name}.service").write_text(self.unit(name))

    def exec_argv(self, name: str) -> list[str]:
        return ["/usr/bin/podman", "exec", name, "true"]

    def ps_argv(self) -> list[str]:
        return ["/usr/bin/podman", "ps"]


class RawRuntime:
    """The floor: the OCI runtime on a prepared bundle, no systemd, no monitor."""

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self.key = runtime
        self.binary = proc.which(runtime)
        self.bundles = WORK / f"bundles-{runtime}"

    def name(self, index: int) -> str:
        return f"br{self.runtime[0]}-{index}"

    def prepare(self, count: int) -> None:
        self.bundles.mkdir(parents=True, exist_ok=True)
        config = oci_config(self.binary)
        for index in range(count):
            bundle = self.bundles / self.name(index)
            bundle.mkdir(exist_ok=True)
            (bundle / "config.json").write_text(json.dumps(config))

    def start(self, names: Sequence[str]) -> None:
        """`run -d` of every container, all at once when there are several (burst)."""
        children = []
        with tempfile.TemporaryFile() as errors:
            for name in names:
                argv = [self.binary, "run", "-d", "-b", str(self.bundles / name), name]
                children.append(proc.spawn(argv, stdout=subprocess.DEVNULL, stderr=errors.fileno()))
            statuses = [child.wait() for child in children]
            if any(statuses):
                errors.seek(0)
                raise BenchFailure(f"{self.runtime} run -d failed: {_tail(errors.read())}")

    def stop(self, names: Sequence[str]) -> None:
        """SIGTERM, wait until the container process is gone (exited and reaped by the
        sandbox's PID 1: runc calls a zombie running), delete."""
        pids = [int(json.loads(quiet([self.binary, "state", name]))["pid"]) for name in names]
        for name in names:
            run_timed([self.binary, "kill", name, "TERM"])
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            if time.monotonic() > deadline:
                raise BenchFailure(f"{self.runtime}: {names[0]} did not exit on SIGTERM")
            time.sleep(0.0005)
        for name in names:
            run_timed([self.binary, "delete", name])

    def exec_argv(self, name: str) -> list[str]:
        return [self.binary, "exec", name, "true"]

    def ps_argv(self) -> list[str]:
        return [self.binary, "list"]

    def check_active(self, names: Sequence[str]) -> None:
        for name in names:
            status = json.loads(quiet([self.binary, "state", name]))["status"]
            if status != "running":
                raise BenchFailure(f"{self.runtime}: {name} is {status} after run -d")

    def resident_pids(self, names: Sequence[str]) -> list[int]:
        return []  # nothing but the container itself

    def payload_pids(self, names: Sequence[str]) -> list[int]:
        return [int(json.loads(quiet([self.binary, "state", name]))["pid"]) for name in names]

    def cleanup(self, names: Sequence[str]) -> None:
        for name in names:
            proc.run([self.binary, "delete", "-f", name], check=False)


def oci_config(runtime: str) -> dict[str, Any]:
    """`runtime spec`'s default config for the shared busybox rootfs and payload."""
    with tempfile.TemporaryDirectory() as directory:
        proc.run([runtime, "spec", "-b", directory])
        config: dict[str, Any] = json.loads((Path(directory) / "config.json").read_text())
    config["root"] = {"path": str(ROOTFS), "readonly": False}
    config["process"]["terminal"] = False
    config["process"]["args"] = list(PAYLOAD)
    return config


def cgroup_pids(group: Path) -> Iterator[int]:
    """Every pid in the cgroup `group` and below it (cgroups(7): cgroup.procs)."""
    for directory, _, _ in os.walk(group):
        with contextlib.suppress(OSError):
            for line in (Path(directory) / "cgroup.procs").read_text().split():
                yield int(line)


NETWORK_PORT = 18080  # podunit's published port; Podman's is the next one


def network_contenders(sizes: Sizes) -> list[Contender]:
    chosen: list[Contender] = []
    if "podunit" in sizes.contenders:
        chosen.append(PodunitUnits("runc", bridge=True))
    if "podman" in sizes.contenders:
        chosen.append(PodmanUnits(bridge=True))
    return chosen


def contender(key: str) -> Contender:
    if key == "podman":
        return PodmanUnits()
    if key.startswith("podunit"):
        return PodunitUnits("crun" if key == "podunit-crun" else "runc")
    if key in ("runc", "crun"):
        return RawRuntime(key)
    raise ValueError(f"unknown contender {key!r}")


# ---------------------------------------------------------------------------
# Scenarios


class Recorder:
    """Samples and errors per scenario and contender; a failing contender is skipped
    for the rest of that scenario. Repetitions stop when the run's budget is spent."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.results: dict[str, dict[str, dict[str, Any]]] = {}

    def entry(self, scenario: str, key: str) -> dict[str, Any]:
        return self.results.setdefault(scenario, {}).setdefault(key, {"samples": []})

    def add(self, scenario: str, key: str, value: float) -> None:
        self.entry(scenario, key)["samples"].append(round(value, 3))

    def fail(self, scenario: str | Sequence[str], key: str, error: BaseException) -> None:
        """Record `error` as the result of `key` in one or several scenarios."""
        names = [scenario] if isinstance(scenario, str) else list(scenario)
        for name in names:
            self.entry(name, key)["error"] = str(error)
        log(f"{'/'.join(names)}/{key}: FAILED: {error}")

    def failed(self, scenario: str, key: str) -> bool:
        return "error" in self.results.get(scenario, {}).get(key, {})

    def out_of_time(self, scenario: str) -> bool:
        if time.monotonic() < self.deadline:
            return False
        self.results.setdefault(scenario, {}).setdefault("_note", {})["truncated"] = True
        return True


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


K = TypeVar("K", bound=Keyed)


def alternate(
    recorder: Recorder,
    scenarios: Sequence[str],
    items: Sequence[K],
    repeats: int,
    measure: Callable[[K], Sequence[float]],
) -> None:
    """`repeats` repetitions of `measure(item)` over `items`, each in a rotated order;
    its values go to `scenarios` (in order). A failure is recorded in all of them and
    drops the item; repetitions stop when the run's time budget is spent."""
    for turn in range(repeats):
        if recorder.out_of_time(scenarios[0]):
            break
        for item in rotated(items, turn):
            if recorder.failed(scenarios[0], item.key):
                continue
            try:
                values = measure(item)
            except PodunitError as error:
                recorder.fail(scenarios, item.key, error)
                continue
            for scenario, value in zip(scenarios, values, strict=True):
                recorder.add(scenario, item.key, value)


@dataclass(frozen=True)
class GeneratorRun:
    """One generator input: `key` is the number of definitions (cold: no cache, the boot
    case), `warm-N` (daemon-reload of an unchanged tree: the cache hits), or "floor" for
    the bare interpreter started the same way."""

    key: str
    argv: tuple[str, ...]
    env: dict[str, str]
    expected_units: int
    warm: bool = False


GENERATOR_OUTPUT = Path("/run/podunit-bench-generator")


def scenario_generator(sizes: Sizes, recorder: Recorder) -> None:
    """The generator executable as systemd runs it: a fresh process with three output
    directories on a tmpfs (/run), for 1, 100, 1000 definition files, cold (its cache
    file removed first: the boot case, including writing the cache) and warm (an untimed
    run first, then the timed one hits the cache: a daemon-reload with nothing changed);
    plus the floor of a Python interpreter started the same way (``python3 -I -S -c
    pass``). Peak RSS is measured once per input (an extra, untimed run under GNU time)."""
    from toolkit.unitgen.cache import RACY_NS, cache_file

    dirs = tuple(str(GENERATOR_OUTPUT / kind) for kind in ("normal", "early", "late"))
    runs = [GeneratorRun("floor", ("/usr/bin/python3", "-I", "-S", "-c", "pass"), {}, 0)]
    for count in sizes.generator_counts:
        source = WORK / f"definitions-{count}"
        write_generator_definitions(source, count)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PODUNIT_DEFINITION_DIRS": str(source)}
        runs.append(GeneratorRun(str(count), (GENERATOR, *dirs), env, count))
        runs.append(GeneratorRun(f"warm-{count}", (GENERATOR, *dirs), env, count, warm=True))
    time.sleep(RACY_NS / 1e9 + 0.1)  # files changed within RACY_NS of a run are not cached

    def fresh_output() -> None:
        shutil.rmtree(GENERATOR_OUTPUT, ignore_errors=True)
        for directory in dirs:
            os.makedirs(directory)

    def measure(run: GeneratorRun) -> list[float]:
        cache = cache_file(user=False, environ=run.env) if run.env else None

        def cold_start() -> None:
            if cache is not None and not run.warm:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cache)

        cold_start()
        if run.warm:
            fresh_output()
            run_timed(run.argv, env=run.env)  # the previous daemon-reload fills the cache
            before = os.stat(cache) if cache is not None else None
        fresh_output()
        elapsed = run_timed(run.argv, env=run.env)
        # container units only: the registry image also gets its (shared) pull unit
        written = len(list(Path(dirs[0]).glob("app*.service")))
        if written != run.expected_units:
            raise BenchFailure(f"generator wrote {written} units for {run.expected_units}")
        if run.warm and cache is not None:
            after = os.stat(cache)
            if before is None or (after.st_ino, after.st_mtime_ns) != (
                before.st_ino,
                before.st_mtime_ns,
            ):
                raise BenchFailure(f"the warm generator run missed its cache {cache}")
        entry = recorder.entry("generator", run.key)
        if "maxrss_kib" not in entry:
            cold_start()
            entry["maxrss_kib"] = peak_memory_kib(run.argv, env=run.env)
        return [elapsed]

    try:
        alternate(recorder, ["generator"], runs, sizes.generator_repeats, measure)
    finally:
        shutil.rmtree(GENERATOR_OUTPUT, ignore_errors=True)


def write_generator_definitions(directory: Path, count: int) -> None:
    """`count` files with one typical container each (image, command, environment,
    volume, port, restart, stop timeout, memory limit)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for index in range(count):
        (directory / f"app{index}.yaml").write_text(
            "containers:\n"
            f"  app{index}:\n"
            "    image: docker.io/library/nginx:1.27\n"
            "    command: [nginx, -g, 'daemon off;']\n"
            "    environment: {TZ: UTC, WORKERS: '4'}\n"
            f"    volumes: ['/srv/app{index}:/usr/share/nginx/html:ro']\n"
            f"    ports: ['{10000 + index}:80']\n"
            "    restart: on-failure\n"
            "    stop_timeout: 5s\n"
            "    resources: {memory: 256M}\n"
        )


def scenario_lifecycle(contenders: Sequence[Contender], sizes: Sizes, recorder: Recorder) -> None:
    """Start (until active) and stop (SIGTERM, the payload exits 0) of one container,
    alternating the contenders; one untimed warm-up cycle each first."""

    def cycle(item: Contender) -> list[float]:
        name = [item.name(0)]
        try:
            started = timed(item.start, name)
            item.check_active(name)
            wait_until_terminable(item, name)
            return [started, timed(item.stop, name)]
        except PodunitError:
            item.cleanup(name)
            raise

    for item in contenders:
        item.cleanup([item.name(0)])
        with contextlib.suppress(PodunitError):  # a failure shows in the first repetition
            cycle(item)
    alternate(recorder, ["start", "stop"], contenders, sizes.lifecycle_repeats, cycle)


def scenario_network(contenders: Sequence[Contender], sizes: Sizes, recorder: Recorder) -> None:
    """Start and stop of one container on the default bridge network with one published
    port (netavark sets up the veth, DNAT and aardvark-dns for both), alternating."""

    def cycle(item: Contender) -> list[float]:
        name = [item.name(0)]
        try:
            started = timed(item.start, name)
            item.check_active(name)
            wait_until_terminable(item, name)
            return [started, timed(item.stop, name)]
        except PodunitError:
            item.cleanup(name)
            raise

    for item in contenders:
        item.cleanup([item.name(0)])
        with contextlib.suppress(PodunitError):
            cycle(item)
    alternate(recorder, ["net-start", "net-stop"], contenders, sizes.lifecycle_repeats, cycle)


def timed(action: Callable[[Sequence[str]], None], names: Sequence[str]) -> float:
    """Milliseconds `action(names)` takes."""
    started = time.perf_counter()
    action(names)
    return (time.perf_counter() - started) * 1000


def scenario_exec(contenders: Sequence[Contender], sizes: Sizes, recorder: Recorder) -> None:
    """`exec NAME true` in a running container, alternating the contenders."""
    running = []
    for item in contenders:
        name = [item.name(0)]
        try:
            item.cleanup(name)
            item.start(name)
            item.check_active(name)
            run_timed(item.exec_argv(name[0]))  # warm-up
            running.append(item)
        except PodunitError as error:
            recorder.fail("exec", item.key, error)
    try:
        alternate(
            recorder,
            ["exec"],
            running,
            sizes.exec_repeats,
            lambda item: [run_timed(item.exec_argv(item.name(0)))],
        )
    finally:
        for item in contenders:
            item.cleanup([item.name(0)])


def scenario_density(contenders: Sequence[Contender], sizes: Sizes, recorder: Recorder) -> None:
    """N containers of every unit contender running at once (started interleaved, in
    groups of 10): PSS of every process each leaves behind besides the containers, per
    container; then `ps` latency with them all running, alternating."""
    started: dict[str, list[str]] = {}
    groups = [range(first, min(first + 10, sizes.density)) for first in range(0, sizes.density, 10)]
    try:
        for group in groups:
            for item in contenders:
                if recorder.failed("density", item.key):
                    continue
                names = [item.name(index) for index in group]
                started.setdefault(item.key, []).extend(names)
                try:
                    item.start(names)
                    item.check_active(names)
                except PodunitError as error:
                    recorder.fail(["density", "ps"], item.key, error)
        for item in contenders:
            if recorder.failed("density", item.key):
                continue
            names = started[item.key]
            pids = item.resident_pids(names)
            usage = [process_memory(pid) for pid in pids]
            entry = recorder.entry("density", item.key)
            entry["containers"] = len(names)
            entry["processes"] = sorted({comm for comm, _, _ in usage})
            entry["process_count"] = len(usage)
            entry["podunit_processes"] = sum(1 for comm, _, _ in usage if comm == "podunit")
            entry["samples"] = [round(sum(pss for _, pss, _ in usage) / len(names), 1)]
            entry["rss_kib_per_container"] = round(sum(rss for _, _, rss in usage) / len(names), 1)
            entry["resident_elsewhere"] = stray_processes(item.key)
        measured = [item for item in contenders if not recorder.failed("ps", item.key)]
        for item in measured:
            run_timed(item.ps_argv())  # warm-up
        alternate(
            recorder, ["ps"], measured, sizes.ps_repeats, lambda item: [run_timed(item.ps_argv())]
        )
    finally:
        for item in contenders:
            item.cleanup(started.get(item.key, []) or [item.name(0)])


def process_memory(pid: int) -> tuple[str, float, float]:
    """(comm, PSS KiB, RSS KiB) of `pid` from /proc/PID/smaps_rollup (proc(5))."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        fields = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, value = line.partition(":")
            fields[key] = float(value.split()[0])
    except (OSError, ValueError, IndexError):
        return ("gone", 0.0, 0.0)
    return comm, fields.get("Pss", 0.0), fields.get("Rss", 0.0)


def stray_processes(key: str) -> list[str]:
    """Processes of the contender outside its units (a daemon, a leftover helper)."""
    marker = PODUNIT if key.startswith("podunit") else "/usr/bin/podman"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if any(word.decode(errors="replace") == marker for word in argv[:2]):
                found.append(f"{entry.name}: {b' '.join(argv).decode(errors='replace')[:120]}")
    return found


def scenario_burst(contenders: Sequence[Contender], sizes: Sizes, recorder: Recorder) -> None:
    """`systemctl start u1 ... uN` (the floors: N `run -d` at once) until all are
    active; stopped untimed after each."""

    def burst(item: Contender) -> list[float]:
        names = [item.name(index) for index in range(sizes.burst)]
        try:
            elapsed = timed(item.start, names)
            item.check_active(names)
            wait_until_terminable(item, names)  # so that the cleanup's stop is quick
            return [elapsed]
        finally:
            item.cleanup(names)

    alternate(recorder, ["burst"], contenders, sizes.burst_repeats, burst)


# ---------------------------------------------------------------------------
# Setup and entry point


def setup(sizes: Sizes, contenders: Sequence[Contender]) -> None:
    """The busybox rootfs, Podman's storage configuration, the generator, the units."""
    sys.path.insert(0, str(REPO / "tests"))
    rootfs = importlib.import_module("rootfs")  # tests/rootfs.py, the suite's busybox rootfs
    rootfs.busybox_rootfs(LocalShell(), str(ROOTFS))
    if any(item.key == "podman" for item in contenders):
        Path("/etc/containers/storage.conf").write_text(PODMAN_STORAGE_CONF)
    proc.run([str(REPO / "scripts" / "install-generator")])
    count = max(sizes.density, sizes.burst, 1)
    for item in contenders:
        item.prepare(count)
    if "network" in sizes.scenarios:
        for item in network_contenders(sizes):
            item.prepare(1)
    proc.run(["systemctl", "daemon-reload"])


def teardown() -> None:
    """Undo `setup` (for a shared sandbox, e.g. the smoke test): stop and remove every
    benchmark unit and definition, the bundles, the rootfs and Podman's storage.conf."""
    units = [p.name for p in Path("/run/systemd/generator").glob("bpu*-*.service")]
    units += [p.name for p in UNIT_DIR.glob("bpm-*.service")]
    if units:
        proc.run(["systemctl", "stop", *units], check=False)
        proc.run(["systemctl", "reset-failed", *units], check=False)
    for raw in ("runc", "crun"):
        if shutil.which(raw):
            for bundle in (WORK / f"bundles-{raw}").glob("*"):
                proc.run([raw, "delete", "-f", bundle.name], check=False)
    for path in [
        *DEFINITION.parent.glob(f"{DEFINITION.stem}-*.yaml"),
        *UNIT_DIR.glob("bpm-*.service"),
    ]:
        path.unlink()
    storage = Path("/etc/containers/storage.conf")
    if storage.exists() and storage.read_text() == PODMAN_STORAGE_CONF:
        storage.unlink()
    shutil.rmtree(WORK, ignore_errors=True)
    proc.run(["systemctl", "daemon-reload"])


class LocalShell:
    """`tests.rootfs`'s sandbox protocol, for scripts already running inside."""

    def sh(self, script: str, **kwargs: object) -> object:
        return proc.run(["sh", "-c", script])


def versions() -> dict[str, str]:
    found = {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                found["cpu"] = line.split(":", 1)[1].strip()
                break
    for program, argv in {
        "systemd": ["systemctl", "--version"],
        "podman": ["podman", "--version"],
        "conmon": ["conmon", "--version"],
        "runc": ["runc", "--version"],
        "crun": ["crun", "--version"],
    }.items():
        try:
            found[program] = quiet(argv).splitlines()[0]
        except PodunitError as error:
            found[program] = f"unavailable ({error})"
    return found


def main(argv: Sequence[str]) -> int:
    try:
        if list(argv) == ["teardown"]:
            teardown()
        else:
            run(Sizes.from_json(json.loads(argv[0])), Path(argv[1]))
    except PodunitError as error:  # setup failed: no table to make
        hint = f" (hint: {error.hint})" if error.hint else ""
        log(f"{error}{hint}")
        return 1
    return 0


def run(sizes: Sizes, out: Path) -> None:
    """Set up, run the chosen scenarios, write the results to `out`."""
    started = time.monotonic()
    recorder = Recorder(started + sizes.budget_seconds)
    items = [contender(key) for key in sizes.contenders]
    units = [item for item in items if isinstance(item, UnitContender)]
    load_at_start = os.getloadavg()
    log("setup: rootfs, podman storage, generator, units")
    setup(sizes, items)
    steps: dict[str, Callable[[], None]] = {
        "generator": lambda: scenario_generator(sizes, recorder),
        "lifecycle": lambda: scenario_lifecycle(items, sizes, recorder),
        "network": lambda: scenario_network(network_contenders(sizes), sizes, recorder),
        "exec": lambda: scenario_exec(items, sizes, recorder),
        "density": lambda: scenario_density(
            [item for item in units if item.key in ("podunit", "podman")], sizes, recorder
        ),
        "burst": lambda: scenario_burst(
            [item for item in items if item.key in ("podunit", "podman", "runc")],
            sizes,
            recorder,
        ),
    }
    for scenario in sizes.scenarios:
        if recorder.out_of_time(scenario):
            log(f"{scenario}: skipped, the time budget is spent")
            continue
        log(f"{scenario} ({time.monotonic() - started:.0f} s so far)")
        steps[scenario]()
    results = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": [load_at_start, os.getloadavg()],
            "versions": versions(),
            "sizes": sizes.to_json(),
            "seconds": round(time.monotonic() - started, 1),
            "quadlet_reference_ms": QUADLET_REFERENCE_MS,
        },
        "scenarios": recorder.results,
    }
    out.write_text(json.dumps(results, indent=1))
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

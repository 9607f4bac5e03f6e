"""What the hot paths may import: the rules of README "Hot paths", checked (the one test).

Every podunit action is a fresh Python process whose imports dominate its run time
(bench/RESULTS.md). The hot paths are the processes generated units run (`run --plan F N`,
`stop -t S N`, `rm -f N`, `kill -s SIG N`, `cleanup ID`) and `podunit exec NAME CMD`;
`ps`, `inspect`, `wait` are light too. Fresh interpreters import the modules and run the
verbs, so that what this test process already imported does not hide a regression. The
tables below name the modules each path must not load; the README explains why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.definitions import logdrivers
from toolkit.definitions.model import LogDriver

# The run machinery, which only run/create/start load (lazily). toolkit.definitions.* is
# heavy too (the model's enums and NamedTuples), except the empty package itself and its
# logdrivers (a few constants).
LIGHT_DEFINITIONS = ("toolkit.definitions", "toolkit.definitions.logdrivers")
HEAVY = (
    "toolkit.runtime.oci",
    "toolkit.systemd.notify",
    "toolkit.systemd.activation",
    "toolkit.systemd.health",
    "toolkit.storage.images",
    "toolkit.runtime.conmon",
    "toolkit.systemd.cgroups",
    "toolkit.unitgen.generator",
    "toolkit.unitgen.render",
    "secrets",
)

PROBE = """
import json, sys
import toolkit.cli.main
from toolkit.cli import containers, exec, logs
from toolkit.runtime import invoke, lifecycle, launch, placement, status
print(json.dumps(sorted(sys.modules)))
"""


def test_the_light_verbs_modules_import_nothing_heavy() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    heavy = [
        m
        for m in loaded
        if m in HEAVY or (m.startswith("toolkit.definitions") and m not in LIGHT_DEFINITIONS)
    ]
    assert heavy == []


def test_kill_parses_its_signal_without_the_model() -> None:
    probe = (
        "import sys; from toolkit.runtime import lifecycle; "
        "lifecycle.parse_signal('SIGRTMIN+3'); "
        "print('toolkit.definitions.model' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_log_driver_names_are_the_models() -> None:
    """exec, logs and conmon use logdrivers' strings (without the model); the model's enum
    has the same values."""
    names = {"JOURNALD", "K8S_FILE", "PASSTHROUGH", "NONE"}
    assert {driver.name: driver.value for driver in LogDriver} == {
        name: getattr(logdrivers, name) for name in names
    }


UNIT_FORMS = (["rm", "-f", "web"], ["stop", "-t", "10", "web"], ["cleanup", "0" * 64])
OTHER_LIGHT = (["ps", "-a"], ["inspect", "web"], ["wait", "web"])
# Not in any process of the light verbs (argparse and shutil: not in the units' forms either).
NEVER = ("dataclasses", "typing", "subprocess", "socket", "inspect", "ast", "pathlib")


def _modules_after(argv_list: tuple[list[str], ...], tmp_path: Path) -> list[str]:
    probe = (
        "import json, sys\n"
        "from toolkit.cli import main as cli\n"
        f"codes = [cli.main(argv) for argv in {json.dumps(argv_list)}]\n"
        "print(json.dumps([codes, sorted(sys.modules)]))\n"
    )
    env = {**os.environ, "PODUNIT_STATE_DIR": str(tmp_path / "s"),
           "PODUNIT_RUN_DIR": str(tmp_path / "r")}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    codes, loaded = json.loads(result.stdout.splitlines()[-1])
    assert all(code in (0, 125) for code in codes), result.stderr
    modules: list[str] = loaded
    return modules


def _heavy(loaded: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        m
        for m in loaded
        if (m in HEAVY or (m.startswith("toolkit.definitions") and m not in LIGHT_DEFINITIONS))
        and m not in allowed
    ]


@pytest.mark.parametrize("argv", UNIT_FORMS, ids=" ".join)
def test_a_units_stop_rm_and_cleanup_processes_stay_light(argv: list[str], tmp_path: Path) -> None:
    loaded = _modules_after((argv,), tmp_path)
    assert _heavy(loaded) == []
    assert [m for m in loaded if m in (*NEVER, "argparse", "shutil")] == []


def test_the_other_light_verbs_load_argparse_but_nothing_heavy(tmp_path: Path) -> None:
    loaded = _modules_after(OTHER_LIGHT, tmp_path)
    assert _heavy(loaded) == []
    assert [m for m in loaded if m in NEVER] == []
    # kill (ExecReload) parses its signal with the definitions' values, without the model
    killed = _modules_after((["kill", "-s", "HUP", "web"],), tmp_path)
    assert _heavy(killed, ("toolkit.definitions.values",)) == []
    assert [m for m in killed if m in (*NEVER, "argparse")] == []  # a fast form, no typing


def test_rm_f_of_a_stopped_units_container_stays_light(tmp_path: Path) -> None:
    """ExecStopPost after ExecStop: the container is released, only its row goes."""
    from toolkit.storage.paths import RuntimePaths
    from toolkit.storage.records import EXITED, ContainerOptions, ContainerRecord
    from toolkit.storage.state import StateStore

    paths = RuntimePaths(user=False, state_dir=tmp_path / "s", run_dir=tmp_path / "r")
    placement = {"manager": "cgroupfs", "mode": "split", "cgroups_path": "/gone/payload",
            "cgroup2_mount": str(tmp_path)}  # fmt: skip
    with StateStore(paths) as store:
        store.add(ContainerRecord(
            id="ab" * 32, name="web", runtime="/bin/true", status=EXITED, created_at=0.0,
            spec={}, options=ContainerOptions(released=True, cgroup_placement=placement),
        ))  # fmt: skip
    loaded = _modules_after((["rm", "-f", "web"],), tmp_path)
    assert _heavy(loaded) == []
    assert [m for m in loaded if m in (*NEVER, "argparse", "shutil")] == []
    with StateStore(paths) as store:
        assert store.find("web") is None


# What a unit's `podunit run --plan FILE NAME` loads (cli.containers.cli_run with a plan,
# a `notify: healthy` unit's health included); the cold verbs (images, checkpoint, logs,
# generate, sandbox) may use pathlib.
RUN_PATH_PROBE = """
import json, sys
import toolkit.cli.main
from toolkit.systemd import activation, cgroups, health, notify
from toolkit.cli import containers
from toolkit.runtime import attach, conmon, exec, launch, lifecycle, oci, placement, status
from toolkit.definitions import instances, model, plan
print(json.dumps(sorted(sys.modules)))
"""


def test_the_run_path_does_not_import_pathlib() -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUN_PATH_PROBE], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    assert "toolkit.systemd.health" in loaded
    assert [m for m in loaded if m in ("pathlib", "urllib.parse")] == []


# A start without networks (network: none or host, PODUNIT_DEFAULT_NETWORK=none) decides
# so with toolkit.network.plan alone: netavark, the addresses and the network store are
# the business of a container that joins a bridge.
NO_NETWORK_PROBE = """
import json, sys
from toolkit.errors import Location
from toolkit.definitions.model import Container
from toolkit.runtime import launch
from toolkit.network import plan
for network in ("none", "host", None):
    container = Container(name="web", source=Location("/x.yaml", 1, 1), rootfs="/r",
                          network=network)
    decided = plan.network_plan(container, user=False, environ={plan.DEFAULT_ENV: "none"})
    assert not plan.has_work(decided), decided
print(json.dumps(sorted(sys.modules)))
"""


def test_a_start_without_networks_loads_no_network_machinery() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_PROBE], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    network_machinery = ("toolkit.network.attach", "toolkit.network.config",
                         "toolkit.network.netavark", "toolkit.storage.networks")  # fmt: skip
    assert [m for m in loaded if m in network_machinery] == []


# What a plain `podunit exec NAME CMD` must not load: the status and run machinery
# (only for a container that is not plainly running), oci (only for -u), the terminal
# modules (only for -t), secrets (ids come from os.urandom), argparse (a fast form) and
# pathlib (storage.paths hands out str paths; conmon, imported for the session, is
# pathlib-free too).
NOT_ON_THE_EXEC_PATH = (
    "toolkit.runtime.status",
    "toolkit.runtime.launch",
    "toolkit.runtime.lifecycle",
    "toolkit.runtime.oci",
    "toolkit.systemd.cgroups",
    "toolkit.systemd.notify",
    "toolkit.systemd.activation",
    "toolkit.systemd.health",
    "toolkit.storage.images",
    "toolkit.unitgen.generator",
    "secrets",
    "tty",
    "termios",
    "argparse",
    "pathlib",
)

EXEC_PROBE = """
import json, sys
import toolkit.cli.main
from toolkit.cli import exec
print(json.dumps(sorted(sys.modules)))
"""

# What the exec modules add to the modules they build on (theirs are their owners' business).
EXEC_OWN_IMPORTS_PROBE = """
import json, sys
import toolkit.errors, toolkit.storage.paths, toolkit.proc, toolkit.storage.state
before = set(sys.modules)
from toolkit.cli import exec
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _fresh(script: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    modules: list[str] = json.loads(result.stdout)
    return modules


def test_the_exec_path_imports_nothing_it_does_not_need() -> None:
    loaded = set(_fresh(EXEC_PROBE))
    assert "toolkit.runtime.exec" in loaded
    assert sorted(loaded & set(NOT_ON_THE_EXEC_PATH)) == []


def test_the_exec_modules_themselves_need_neither_dataclasses_typing_nor_shutil() -> None:
    added = set(_fresh(EXEC_OWN_IMPORTS_PROBE))
    assert {"toolkit.cli.exec", "toolkit.runtime.exec", "toolkit.runtime.attach"} <= added
    assert sorted(added & {"dataclasses", "typing", "shutil", *NOT_ON_THE_EXEC_PATH}) == []


GC_PROBE = """
import gc, sys
from toolkit.cli import main as cli
def end(code):  # the fast forms' end
    print("collector", gc.isenabled(), code)
    raise SystemExit(code)
cli._exit_at_once = end
sys.argv = ["podunit", *sys.argv[1:]]
gc.disable()  # as bin/podunit starts
code = cli.main()
if code is not None:  # a verb that returns: not a fast form
    print("collector", gc.isenabled(), code)
"""


GC_CASES = {
    "rm -f web": False,  # the units' forms: off
    "stop -t 10 web": False,
    "ps -a": True,  # every other verb: on
    "rm web": True,
}


@pytest.mark.parametrize("command", GC_CASES)
def test_the_fast_forms_run_without_the_garbage_collector(command: str, tmp_path: Path) -> None:
    """README "Hot paths": bin/podunit starts with the collector off; the units' forms
    keep it off, every other verb turns it on again."""
    env = {**os.environ, "PODUNIT_STATE_DIR": str(tmp_path / "s"),
           "PODUNIT_RUN_DIR": str(tmp_path / "r")}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", GC_PROBE, *command.split()], capture_output=True, text=True,
        env=env,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    reports = [line.split()[1] for line in lines if line.startswith("collector ")]
    assert reports == [str(GC_CASES[command])], result.stderr


def test_the_launchers_start_podunit_without_the_garbage_collector() -> None:
    """bin/podunit and the installed podunit launcher turn it off before any import of
    podunit's; the generator's launcher leaves it on."""
    from toolkit.unitgen.install import launcher

    checkout = (Path(__file__).parents[2] / "bin" / "podunit").read_text()
    installed = launcher("podunit", "toolkit.cli.main", "main", "main()",
                         python="/usr/bin/python3", paths=["/x"])  # fmt: skip
    generator = launcher("the generator", "toolkit.unitgen.generator", "generator_main",
                         "generator_main([])", python="/usr/bin/python3", paths=["/x"])  # fmt: skip
    for text in (checkout, installed):
        assert -1 < text.index("gc.disable()") < text.index("from toolkit")
    assert "gc.disable()" not in generator

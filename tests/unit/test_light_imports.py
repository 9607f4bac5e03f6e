"""Start-up of the light verbs (stop, rm, kill, ps, inspect, wait, exec, logs).

Every podunit action is a fresh Python process whose imports dominate its run
time (bench/RESULTS.md). The modules of those verbs must not import, at module
level, what only run/create/start need: the definitions model (its dataclasses
and enums), oci, notify, activation, health, images, conmon, cgroups, secrets.
A fresh interpreter checks it, so that the gain cannot silently regress.
"""

from __future__ import annotations

import json
import subprocess
import sys

from toolkit import logs
from toolkit.definitions.model import LogDriver

HEAVY = (
    "toolkit.definitions",
    "toolkit.oci",
    "toolkit.notify",
    "toolkit.activation",
    "toolkit.health",
    "toolkit.images",
    "toolkit.conmon",
    "toolkit.cgroups",
    "toolkit.generator",
    "toolkit.units",
    "secrets",
)

PROBE = """
import json, sys
import toolkit.cli
from toolkit import exec_sessions, logs, operations
print(json.dumps(sorted(sys.modules)))
"""


def test_the_light_verbs_modules_import_nothing_heavy() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    heavy = [m for m in loaded if m in HEAVY or m.startswith("toolkit.definitions.")]
    assert heavy == []


def test_kill_parses_its_signal_without_the_model() -> None:
    probe = (
        "import sys; from toolkit import operations; operations.parse_signal('SIGRTMIN+3'); "
        "print('toolkit.definitions.model' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_log_driver_names_of_logs_are_the_models() -> None:
    assert LogDriver.JOURNALD.value == logs.JOURNALD
    assert LogDriver.K8S_FILE.value == logs.K8S_FILE
    assert LogDriver.PASSTHROUGH.value == logs.PASSTHROUGH

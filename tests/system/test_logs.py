"""`podunit logs` against the sandbox's real journald (toolkit.runtime.logs).

Entries are sent with the fields conmon's journald driver writes (CONTAINER_ID_FULL,
CONTAINER_NAME, PRIORITY 6/3, CONTAINER_PARTIAL_MESSAGE), for a container recorded
in an isolated state directory. Following a live container is in test_logs_conmon.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.sandbox import VENV_PYTHON, Sandbox

pytestmark = pytest.mark.system

PODUNIT = str(VENV_PYTHON.parent / "podunit")
BASE = "/var/tmp/podunit-logs-test"
ENV = {"PODUNIT_STATE_DIR": f"{BASE}/state", "PODUNIT_RUN_DIR": "/run/podunit-logs-test"}

# argv: name. Records an exited journald container, prints its id.
RECORD = """
import secrets, sys, time
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.state import StateStore
from toolkit.storage.records import ContainerOptions, ContainerRecord
cid = secrets.token_hex(32)
with StateStore(RuntimePaths.for_mode(False)) as store:
    store.add(ContainerRecord(
        id=cid, name=sys.argv[1], runtime="/usr/sbin/runc", status="exited",
        created_at=time.time(), spec={}, options=ContainerOptions(log_driver="journald")))
print(cid)
"""

# argv: container id, name, then MESSAGE:PRIORITY[:partial] items. Waits until indexed.
SEND = """
import subprocess, sys, time
from systemd import journal
cid, name, items = sys.argv[1], sys.argv[2], sys.argv[3:]
for item in items:
    message, priority, *partial = item.split(":")
    fields = {"CONTAINER_ID_FULL": cid, "CONTAINER_ID": cid[:12], "CONTAINER_NAME": name,
              "SYSLOG_IDENTIFIER": name, "PRIORITY": priority}
    if partial:
        fields["CONTAINER_PARTIAL_MESSAGE"] = "true"
    journal.send(message, **fields)
reader = journal.Reader()
reader.add_match(CONTAINER_ID_FULL=cid)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    reader.seek_head()
    if sum(1 for _ in reader) >= len(items):
        break
    time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def scripts(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    paths = {"record": f"{BASE}/record.py", "send": f"{BASE}/send.py"}
    sandbox.write(paths["record"], RECORD)
    sandbox.write(paths["send"], SEND)
    yield paths
    sandbox.run(["rm", "-rf", BASE, ENV["PODUNIT_RUN_DIR"]], check=False)


def inside(sandbox: Sandbox, script: str, *args: str) -> str:
    result = sandbox.run([str(VENV_PYTHON), script, *args], env=ENV)
    return result.stdout.decode().strip()


def test_journald_logs_split_streams_and_join_partials(
    sandbox: Sandbox, scripts: dict[str, str]
) -> None:
    name = f"logs-{secrets.token_hex(3)}"
    cid = inside(sandbox, scripts["record"], name)
    inside(
        sandbox,
        scripts["send"],
        cid,
        name,
        "first:6",
        "oops:3",
        "half :6:partial",
        "whole:6",
        "last:6",
    )
    result = sandbox.run([PODUNIT, "logs", name], env=ENV, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"first\nhalf whole\nlast\n"
    assert result.stderr == b"oops\n"
    tail = sandbox.run([PODUNIT, "logs", "--tail", "2", name], env=ENV)
    assert tail.stdout == b"half whole\nlast\n"
    assert tail.stderr == b""


def test_journald_logs_of_another_container_are_not_shown(
    sandbox: Sandbox, scripts: dict[str, str]
) -> None:
    one = f"logs-{secrets.token_hex(3)}"
    other = f"logs-{secrets.token_hex(3)}"
    one_id = inside(sandbox, scripts["record"], one)
    other_id = inside(sandbox, scripts["record"], other)
    inside(sandbox, scripts["send"], one_id, one, "mine:6")
    inside(sandbox, scripts["send"], other_id, other, "theirs:6")
    assert sandbox.run([PODUNIT, "logs", one], env=ENV).stdout == b"mine\n"

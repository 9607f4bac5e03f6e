"""`podunit logs` of containers that conmon really ran (`podunit run -d`), both log drivers."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import VENV_PYTHON, Sandbox

pytestmark = pytest.mark.system

PODUNIT = str(VENV_PYTHON.parent / "podunit")
BASE = "/var/tmp/podunit-logs-conmon"
ROOTFS = f"{BASE}/rootfs"
ENV = {
    "PODUNIT_STATE_DIR": f"{BASE}/state",
    "PODUNIT_RUN_DIR": "/run/podunit-logs-conmon",
    "PODUNIT_DEFINITION_DIRS": f"{BASE}/definitions",
}
# stdout, stderr, a 20000-byte line (conmon splits it into partial records), no final newline
SCRIPT = (
    "echo out; echo err >&2; head -c 20000 /dev/zero | tr '\\0' a; echo; "
    "sleep 0.1; printf no-newline"
)
K8S_LINE = re.compile(
    rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}[+-]\d\d:\d\d (stdout|stderr) [FP] .*$"
)


@pytest.fixture(scope="module")
def rootfs(sandbox: Sandbox) -> Iterator[str]:
    busybox_rootfs(sandbox, ROOTFS)
    yield ROOTFS
    sandbox.run(["rm", "-rf", BASE, ENV["PODUNIT_RUN_DIR"]], check=False)


def podunit(sandbox: Sandbox, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return sandbox.run([PODUNIT, *args], env=ENV, check=check, timeout=60)


def run_to_exit(sandbox: Sandbox, rootfs: str, driver: str) -> str:
    name = f"logs-{driver}-{secrets.token_hex(3)}"
    podunit(
        sandbox,
        "run",
        "-d",
        "--runtime",
        "runc",
        "--rootfs",
        rootfs,
        "--name",
        name,
        "--log-driver",
        driver,
        "--",
        "sh",
        "-c",
        SCRIPT,
    )
    assert podunit(sandbox, "wait", name).stdout.strip() == b"0"
    return name


def test_k8s_file(sandbox: Sandbox, rootfs: str) -> None:
    name = run_to_exit(sandbox, rootfs, "k8s-file")
    try:
        inspected = json.loads(podunit(sandbox, "inspect", name).stdout)[0]
        raw = sandbox.read(inspected["LogPath"])
        assert all(K8S_LINE.match(line) for line in raw.splitlines()), raw[:300]
        assert b" stdout P " in raw  # the long line really came in pieces
        shown = podunit(sandbox, "logs", name)
        assert shown.stdout == b"out\n" + b"a" * 20000 + b"\nno-newline\n"
        assert shown.stderr == b"err\n"
        assert podunit(sandbox, "logs", "--tail", "1", name).stdout == b"no-newline\n"
    finally:
        podunit(sandbox, "rm", "-f", name, check=False)


def test_journald(sandbox: Sandbox, rootfs: str) -> None:
    name = run_to_exit(sandbox, rootfs, "journald")
    try:
        entries = [
            json.loads(line)
            for line in sandbox.run(
                ["journalctl", "--all", "-o", "json", f"CONTAINER_NAME={name}", "--no-pager"]
            ).stdout.splitlines()
        ]
        priorities = {entry["MESSAGE"].strip(): entry["PRIORITY"] for entry in entries
                      if len(entry["MESSAGE"]) < 10}  # fmt: skip
        assert priorities["out"] == "6"
        assert priorities["err"] == "3"
        assert all(len(entry["CONTAINER_ID_FULL"]) == 64 for entry in entries)
        shown = podunit(sandbox, "logs", name)
        assert shown.stdout == b"out\n" + b"a" * 20000 + b"\nno-newline\n"
        assert shown.stderr == b"err\n"
        assert podunit(sandbox, "logs", "--tail", "2", name).stdout.endswith(b"a\nno-newline\n")
    finally:
        podunit(sandbox, "rm", "-f", name, check=False)


def test_journald_follow_ends_with_the_container(sandbox: Sandbox, rootfs: str) -> None:
    name = f"logs-follow-{secrets.token_hex(3)}"
    script = (
        f"P={PODUNIT}; $P run -d --runtime runc --rootfs {rootfs} --name {name} "
        "--log-driver journald -- sh -c 'echo before; sleep 2; echo during >&2; sleep 1' "
        f">/dev/null && exec $P logs -f {name}"
    )
    try:
        followed = sandbox.run(["sh", "-c", script], env=ENV, timeout=60)
        assert followed.stdout == b"before\n"
        assert followed.stderr == b"during\n"
    finally:
        podunit(sandbox, "rm", "-f", name, check=False)


ROTATING = """\
containers:
  {name}:
    rootfs: {rootfs}
    runtime: runc
    log_driver: k8s-file
    log_opt: {{max_size: 2k}}
    command:
      - sh
      - -c
      - sleep 3; i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); usleep 10000; done
"""


def test_follow_survives_conmons_log_rotation(sandbox: Sandbox, rootfs: str) -> None:
    name = f"rotating-{secrets.token_hex(3)}"
    definition = f"{ENV['PODUNIT_DEFINITION_DIRS']}/{name}.yaml"
    sandbox.write(definition, ROTATING.format(name=name, rootfs=rootfs))
    follow = f"P={PODUNIT}; $P run -d {name} >/dev/null && exec $P logs -f {name}"
    try:
        followed = sandbox.run(["sh", "-c", follow], env=ENV, timeout=60)
        numbers = [int(line.split(b"-")[1]) for line in followed.stdout.splitlines()]
        # 2 KiB hold about 45 such records: all 300 lines were seen across several rotations
        assert numbers == list(range(300))
        after = podunit(sandbox, "logs", name).stdout.splitlines()
        assert after[-1] == b"line-299"
        assert len(after) < 300  # conmon really replaced the file
    finally:
        podunit(sandbox, "rm", "-f", name, check=False)
        sandbox.run(["rm", "-f", definition])


def test_driver_none_has_no_logs(sandbox: Sandbox, rootfs: str) -> None:
    name = run_to_exit(sandbox, rootfs, "none")
    try:
        result = podunit(sandbox, "logs", name, check=False)
        assert result.returncode == 125
        assert b"output was discarded" in result.stderr
    finally:
        podunit(sandbox, "rm", "-f", name, check=False)

"""A Compose project end to end under systemd (spec §1.3; podunit.yaml(5) COMPOSE FILES):
one `systemctl start` of the project's target starts a database, a one-off migration
that waits for it to be healthy, and a web service that waits for the database to be
healthy and the migration to have exited 0; the web service finds the database by its
service name on the project's network; a variable comes from `.env`, the password from
a secret file; the database's named volume keeps its data across a restart of the
project; `podunit volume ls` shows it; one `systemctl stop` stops everything.

Its own sandbox with a private network namespace (`--private-network`): the project's
network is a bridge, which must never be made in the machine's namespace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

BUSYBOX = "/var/lib/podunit-compose/busybox"
PROJECT_DIR = "/etc/podunit/e2e"  # project e2e: units e2e-db, e2e-web, e2e-project.target
# `$$` is a literal `$` (interpolation happens first); ${GREETING} comes from .env.
COMPOSE = f"""\
services:
  db:
    command:
      - sh
      - -c
      - >-
        echo start >> /data/boots;
        echo "rows=$$(wc -l < /data/boots) pw=$$(cat /run/secrets/db_password)" > /data/index.html;
        touch /data/ready;
        trap 'exit 0' TERM; httpd -f -p 80 -h /data & wait
    volumes: ["dbdata:/data"]
    secrets: [db_password]
    healthcheck:
      test: ["CMD", "test", "-f", "/data/ready"]
      interval: 1s
      timeout: 2s
      retries: 30
    stop_grace_period: 3s
    x-podunit: {{rootfs: {BUSYBOX}, runtime: runc}}
  migrate:
    command: ["sh", "-c", "echo migrated >> /data/migrations"]
    volumes: ["dbdata:/data"]
    depends_on:
      db: {{condition: service_healthy}}
    x-podunit: {{rootfs: {BUSYBOX}, runtime: runc}}
  web:
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]
    environment:
      GREETING: ${{GREETING:?set in .env}}
    depends_on:
      db: {{condition: service_healthy}}
      migrate: {{condition: service_completed_successfully}}
    stop_grace_period: 3s
    x-podunit: {{rootfs: {BUSYBOX}, runtime: runc}}
volumes:
  dbdata: {{}}
secrets:
  db_password:
    file: ./db_password.txt
"""
UNITS = ("e2e-db.service", "e2e-web.service")


class Project:
    def __init__(self, sandbox: Sandbox, repo_root: Path) -> None:
        self.sandbox = sandbox
        self.podunit_bin = f"{repo_root}/bin/podunit"

    def ctl(self, *args: str, check: bool = True) -> str:
        return self.sandbox.run(["systemctl", *args], check=check, timeout=120).stdout.decode()

    def podunit(self, *args: str, check: bool = True) -> str:
        return self.sandbox.run([self.podunit_bin, *args], check=check).stdout.decode()

    def wait_active(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.ctl("is-active", *UNITS, check=False).split()
            if states == ["active", "active"]:
                return
            if "failed" in states:
                break
            time.sleep(0.2)
        status = self.ctl("status", "--no-pager", "-l", *UNITS, check=False)
        pytest.fail(f"the project did not start: {states}\n{status}")

    def web(self, *command: str) -> str:
        return self.podunit("exec", "e2e-web", "--", *command)


@pytest.fixture(scope="module")
def project(repo_root: Path) -> Iterator[Project]:
    with Sandbox.booted(private_network=True) as sandbox:
        busybox_rootfs(sandbox, BUSYBOX)
        sandbox.run([f"{repo_root}/scripts/install-generator"])
        sandbox.write(f"{PROJECT_DIR}/compose.yaml", COMPOSE)
        sandbox.write(
            f"{PROJECT_DIR}/.env", "# read by the generator\nGREETING='hello from .env'\n"
        )
        sandbox.write(f"{PROJECT_DIR}/db_password.txt", "s3cret-pw\n", mode=0o600)
        sandbox.run(["systemctl", "daemon-reload"])
        yield Project(sandbox, repo_root)


def test_one_start_runs_the_project_and_its_data_survives_a_restart(project: Project) -> None:
    assert project.podunit("validate") == ""
    try:
        project.ctl("start", "e2e-project.target")  # one start for the whole project
        project.wait_active()
        # web started only after db was healthy (service_healthy: db reports READY when
        # its health check passed, and web is ordered after it)
        db_ready = project.ctl("show", "e2e-db", "-p", "ExecMainStartTimestampMonotonic")
        web_start = project.ctl("show", "e2e-web", "-p", "ExecMainStartTimestampMonotonic")
        assert int(db_ready.split("=")[1]) < int(web_start.split("=")[1])
        assert project.ctl("show", "e2e-db", "-p", "Type").strip() == "Type=notify"
        # the variable from .env, the service name on the project's network, the secret
        assert project.web("sh", "-c", "echo $GREETING") == "hello from .env\n"
        page = project.web("wget", "-qO-", "http://db/")
        assert page == "rows=1 pw=s3cret-pw\n"
        # the one-off migrate ran to completion (exit 0) before web started
        assert project.web("wget", "-qO-", "http://db/migrations") == "migrated\n"
        migrate = project.ctl("show", "e2e-migrate", "-p", "ActiveState,Result")
        assert sorted(migrate.split()) == ["ActiveState=inactive", "Result=success"]
        # the unit says which variables it was generated with, not their values
        unit = project.sandbox.sh("cat /run/systemd/generator/e2e-web.service").stdout.decode()
        assert "# Variables: GREETING (.env)" in unit and "hello from .env" not in unit
        # the named volume, named after the project
        volumes = {
            v["Name"] for v in json.loads(project.podunit("volume", "ls", "--format", "json"))
        }
        assert "e2e_dbdata" in volumes
        assert "e2e_dbdata" in project.podunit("volume", "ls")
        # a restart of the project keeps the data: the second start appends a row
        project.ctl("restart", "e2e-project.target")
        project.wait_active()
        assert project.web("wget", "-qO-", "http://db/") == "rows=2 pw=s3cret-pw\n"
    finally:
        project.ctl("stop", "e2e-project.target")  # returns when both have stopped
    states = project.ctl("is-active", *UNITS, check=False).split()
    assert states == ["inactive", "inactive"]
    assert json.loads(project.podunit("ps", "-a", "--format", "json")) == []
    # the volume outlives its containers (removed only by podunit volume rm/prune)
    assert "e2e_dbdata" in project.podunit("volume", "ls")


def test_a_failed_one_off_dependency_fails_the_dependent(project: Project) -> None:
    """service_completed_successfully: a dependency that exits 3 fails the dependent's
    start, and the journal says why."""
    run = f"x-podunit: {{rootfs: {BUSYBOX}, runtime: runc}}"
    project.sandbox.write(
        "/etc/podunit/e2ebad/compose.yaml",
        "services:\n"
        f"  init:\n    command: [sh, -c, 'exit 3']\n    {run}\n"
        f"  app:\n    command: [sh, -c, 'sleep 60']\n    {run}\n"
        "    depends_on: {init: {condition: service_completed_successfully}}\n",
    )
    project.ctl("daemon-reload")
    try:
        started = project.sandbox.run(["systemctl", "start", "e2ebad-app"], check=False)
        assert started.returncode != 0
        assert project.ctl("is-active", "e2ebad-app", check=False).strip() == "failed"
        journal = project.sandbox.run(
            ["journalctl", "-u", "e2ebad-app", "-o", "cat", "--no-pager"]
        ).stdout.decode()
        assert "dependency e2ebad-init did not complete successfully (exit status 3)" in journal
    finally:
        project.ctl("stop", "e2ebad-project.target")
        project.ctl("reset-failed", check=False)
        project.sandbox.run(["rm", "-rf", "/etc/podunit/e2ebad"])
        project.ctl("daemon-reload")

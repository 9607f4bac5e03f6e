"""A container start does not invalidate the generator's daemon-reload cache (issue 15 item 14).

/run/podunit is both a search directory and the runtime's run directory. Before the
fix the walk went into `runtime-runc/` (runc's --root, one directory per container),
so every container start changed the walk's inputs and the next daemon-reload
regenerated everything. Here a unit is started once to create the runtime's
directories, the cache is written, the unit is started again, and the next
daemon-reload must serve the cache (the file is not rewritten).
"""

from __future__ import annotations

import time

import pytest

from tests.rootfs import busybox_rootfs
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.system

NAME = "relgen-cache"
DEFINITION = f"/etc/podunit/{NAME}.yaml"
ROOTFS = "/srv/relgen-cache-root"
RACY_SECONDS = 2.2  # unitgen.cache.RACY_NS: inputs younger than this are not cached


def cache_identity(sandbox: Sandbox) -> str:
    result = sandbox.sh("stat -c '%n %i %Y' /run/podunit/generator-cache/system-*.marshal")
    return result.stdout.decode()


def test_starting_a_container_keeps_the_generator_cache(
    sandbox: Sandbox, repo_root: object
) -> None:
    busybox_rootfs(sandbox, ROOTFS)
    sandbox.write(
        DEFINITION,
        f"containers:\n  {NAME}:\n    rootfs: {ROOTFS}\n    command: [sleep, '600']\n"
        "    network: none\n    runtime: runc\n    stop_timeout: 1s\n",
    )
    sandbox.run([f"{repo_root}/scripts/install-generator"])
    try:
        sandbox.run(["systemctl", "daemon-reload"])
        sandbox.run(["systemctl", "start", f"{NAME}.service"], timeout=60)  # run dir entries
        sandbox.run(["systemctl", "stop", f"{NAME}.service"], timeout=60)
        time.sleep(RACY_SECONDS)
        sandbox.run(["systemctl", "daemon-reload"])  # writes the cache
        sandbox.run(["systemctl", "daemon-reload"])  # served from it
        before = cache_identity(sandbox)
        assert before
        sandbox.run(["systemctl", "start", f"{NAME}.service"], timeout=60)
        runc_state = sandbox.sh("ls /run/podunit/runtime-runc").stdout.decode()
        assert runc_state.strip()  # the runtime's state is there, in the search directory
        time.sleep(RACY_SECONDS)
        sandbox.run(["systemctl", "daemon-reload"])
        assert cache_identity(sandbox) == before
        active = sandbox.run(["systemctl", "is-active", f"{NAME}.service"], check=False)
        assert active.stdout.decode().strip() == "active"
    finally:
        sandbox.run(["systemctl", "stop", f"{NAME}.service"], timeout=60, check=False)
        sandbox.run(["rm", "-f", DEFINITION])
        sandbox.run([f"{repo_root}/scripts/install-generator", "--uninstall"])
        sandbox.run(["systemctl", "daemon-reload"])

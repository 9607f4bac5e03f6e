"""Time to first start of a container whose image is not yet local (issue 13 item 6):
podunit (its pull unit, then the container unit) against Podman 4.3.1 (a unit shaped
like Quadlet 4.4's, whose `podman run` pulls), the same image from the same local
registry, in one throwaway systemd sandbox, alternating.

    .venv/bin/python -m bench.pull [--repeats N] [--json FILE]     (host, as root)

Inside the sandbox (`python -m bench.pull --inside OUT`): Debian's docker-registry on
127.0.0.1:5919 (a transient unit), declared insecure in registries.conf.d; an image of
two layers (busybox-static, and 8 MiB of incompressible noise) pushed with skopeo.
One repetition per contender: remove the image (`podunit rmi` after stopping the
pull unit; `podman rmi -f`), then time `systemctl start UNIT` until it returns (both
units are Type=notify: READY once the container runs), then stop it. Podman uses
vfs storage (overlay cannot stack on the sandbox's overlayfs root), podunit its own
OCI layout + umoci unpack + an overlay (or copy) per container.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from toolkit import proc
from toolkit.unitgen.escape import command_line

REGISTRY = "127.0.0.1:5919"
IMAGE = f"{REGISTRY}/bench/pull:v1"
WORK = Path("/srv/podunit-bench-pull")
DEFINITION = Path("/etc/podunit/podunit-bench-pull.yaml")
PODMAN_UNIT = Path("/etc/systemd/system/bench-pull-podman.service")
REGISTRY_CONF = Path("/etc/containers/registries.conf.d/podunit-bench-pull.conf")
STORAGE_CONF = Path("/etc/containers/storage.conf")
PAYLOAD = ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do /bin/busybox sleep 1; done"]
PODUNIT_UNIT = "bench-pull-podunit.service"


def sh(script: str) -> None:
    proc.run(["sh", "-c", script], timeout=600)


def setup(repo: Path) -> str:
    """Registry, image, units; returns the podunit pull unit's name."""
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "registry.yml").write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {WORK}/registry}}}}\n"
        f"http: {{addr: {REGISTRY}}}\n"
    )
    REGISTRY_CONF.parent.mkdir(parents=True, exist_ok=True)
    REGISTRY_CONF.write_text(f'[[registry]]\nlocation = "{REGISTRY}"\ninsecure = true\n')
    if not STORAGE_CONF.exists():
        STORAGE_CONF.write_text(
            '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\n'
            'graphroot = "/var/lib/containers/storage"\n'
        )
    layout, bundle = WORK / "layout", WORK / "bundle"
    sh(
        f"""
set -e
systemd-run -q --unit bench-pull-registry /usr/bin/docker-registry serve {WORK}/registry.yml
umoci init --layout {layout}
umoci new --image {layout}:base
umoci unpack --image {layout}:base {bundle}
mkdir -p {bundle}/rootfs/bin && cp /bin/busybox {bundle}/rootfs/bin/
umoci repack --image {layout}:base {bundle}
head -c 8388608 /dev/urandom > {bundle}/rootfs/noise
umoci repack --image {layout}:base {bundle}
umoci config --image {layout}:base --tag v1 --config.cmd /bin/busybox --config.cmd true
for i in $(seq 50); do
    python3 -c 'import urllib.request as u; u.urlopen("http://{REGISTRY}/v2/")' 2>/dev/null && break
    sleep 0.1
done
skopeo copy -q --dest-tls-verify=false oci:{layout}:v1 docker://{IMAGE}
"""
    )
    DEFINITION.parent.mkdir(parents=True, exist_ok=True)
    DEFINITION.write_text(json.dumps({"containers": {"bench-pull-podunit": {
        "image": IMAGE, "runtime": "runc", "network": "none", "command": PAYLOAD,
        "install": {},
    }}}))  # fmt: skip
    cidfile = "/run/bench-pull-podman.cid"
    run = [
        "/usr/bin/podman", "run", "--name=bench-pull-podman", f"--cidfile={cidfile}",
        "--replace", "--rm", "-d", "--log-driver=journald", "--sdnotify=conmon",
        "--cgroups=split", "--network=none", "--pids-limit=0", "--runtime", "runc",
        "--pull=missing", IMAGE, *PAYLOAD,
    ]  # fmt: skip
    remove = ["/usr/bin/podman", "rm", "-f", "-i", f"--cidfile={cidfile}"]
    PODMAN_UNIT.write_text(
        "[Unit]\nDescription=podunit benchmark: podman pulls then runs\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\nEnvironment=PODMAN_SYSTEMD_UNIT=%n\nKillMode=mixed\nDelegate=yes\n"
        "Type=notify\nNotifyAccess=all\nSyslogIdentifier=%N\nTimeoutStartSec=900\n"
        f"ExecStart={command_line(run)}\n"
        f"ExecStop={command_line(remove)}\n"
        f"ExecStopPost={command_line(remove, prefix='-')}\n"
        f"ExecStopPost={command_line(['/bin/rm', '-f', cidfile], prefix='-')}\n"
    )
    proc.run([str(repo / "scripts" / "install-generator")])
    proc.run(["systemctl", "daemon-reload"])
    from toolkit.unitgen.images import pull_unit_name

    return str(pull_unit_name(IMAGE))


def timed_start(unit: str) -> float:
    started = time.perf_counter()
    try:
        proc.run(["systemctl", "start", unit], timeout=900)
    except proc.CommandFailed:
        journal = proc.run(["journalctl", "-u", unit, "-n", "25", "--no-pager"], check=False)
        sys.stderr.write(journal.stdout.decode(errors="replace"))
        raise
    return (time.perf_counter() - started) * 1000


def forget_podunit(pull_unit: str, podunit: str) -> None:
    proc.run(["systemctl", "stop", PODUNIT_UNIT, pull_unit], timeout=300)
    proc.run([podunit, "rmi", IMAGE], check=False)


def forget_podman() -> None:
    proc.run(["systemctl", "stop", PODMAN_UNIT.name], timeout=300)
    proc.run(["podman", "rmi", "-f", IMAGE], check=False)


def teardown(repo: Path, pull_unit: str, podunit: str) -> None:
    units = [PODUNIT_UNIT, pull_unit, PODMAN_UNIT.name, "bench-pull-registry.service"]
    proc.run(["systemctl", "stop", *units], check=False)
    proc.run([podunit, "rmi", IMAGE], check=False)
    proc.run(["podman", "rmi", "-f", IMAGE], check=False)
    for path in (DEFINITION, PODMAN_UNIT, REGISTRY_CONF):
        path.unlink(missing_ok=True)
    proc.run(["rm", "-rf", str(WORK)])
    proc.run([str(repo / "scripts" / "install-generator"), "--uninstall"], check=False)
    proc.run(["systemctl", "daemon-reload"])


def inside(out: Path, repeats: int) -> None:
    repo = Path(__file__).resolve().parent.parent
    podunit = str(repo / "bin" / "podunit")
    pull_unit = setup(repo)
    samples: dict[str, list[float]] = {"podunit": [], "podman": []}
    try:
        forget_podunit(pull_unit, podunit)
        forget_podman()
        for turn in range(repeats):
            order = ["podunit", "podman"] if turn % 2 == 0 else ["podman", "podunit"]
            for key in order:
                unit = PODUNIT_UNIT if key == "podunit" else PODMAN_UNIT.name
                samples[key].append(timed_start(unit))
                if key == "podunit":
                    forget_podunit(pull_unit, podunit)
                else:
                    forget_podman()
            print(f"bench.pull: turn {turn + 1}: "
                  + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in samples.items()),
                  file=sys.stderr, flush=True)  # fmt: skip
    finally:
        teardown(repo, pull_unit, podunit)
    out.write_text(json.dumps({"image": IMAGE, "samples_ms": samples}))


def report(results: dict[str, Any]) -> str:
    medians = {key: statistics.median(values) for key, values in results["samples_ms"].items()}
    lines = [
        f"first start of a container whose image must be pulled ({results['image']}, "
        f"busybox + 8 MiB layer, local registry), {len(results['samples_ms']['podunit'])} runs:",
    ]
    for key, values in results["samples_ms"].items():
        lines.append(f"  {key:8} median {medians[key]:7.0f} ms  (min {min(values):.0f}, "
                     f"max {max(values):.0f})")  # fmt: skip
    lines.append(f"  ratio podunit/podman: {medians['podunit'] / medians['podman']:.2f}x "
                 "(target <= 1.0x)")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pull", description=__doc__)
    parser.add_argument("--inside", type=Path, metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also save the raw samples here")
    args = parser.parse_args(argv)
    if args.inside:
        inside(args.inside, args.repeats)
        return 0
    from tests.support.sandbox import REPO_ROOT, VENV_PYTHON, Sandbox, inside_env

    output = "/run/podunit-bench-pull.json"
    with Sandbox.booted() as sandbox:
        argv_inside = [str(VENV_PYTHON), "-m", "bench.pull", "--inside", output,
                       "--repeats", str(args.repeats)]  # fmt: skip
        proc.run(sandbox.nsenter_argv(argv_inside), capture=False, timeout=3600,
                 env=inside_env({"PYTHONPATH": str(REPO_ROOT)}))  # fmt: skip
        results = json.loads(sandbox.read(output))
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

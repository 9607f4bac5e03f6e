"""The good and bad definition corpus under tests/data/definitions/ (spec §1.1, §1.2).

Each bad file starts with `# expect: LINE:COLUMN: message fragment` and must
produce exactly that one error. The Compose files of the corpus are checked
against the official Compose schema in test_compose.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from toolkit.definitions.loader import load_paths
from toolkit.definitions.model import (
    CgroupMode,
    Container,
    Dependency,
    DependencyCondition,
    Healthcheck,
    Install,
    LogDriver,
    Mount,
    MountType,
    Notify,
    PortMapping,
    Reload,
    Resources,
    Restart,
    SocketSpec,
    SocketType,
    Ulimit,
)
from toolkit.errors import Location

DATA = Path(__file__).resolve().parent.parent / "data" / "definitions"
BAD = sorted((DATA / "bad").glob("*.yaml"))


def _header(path: Path, key: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {key}: "):
            return line.removeprefix(f"# {key}: ")
    return None


def test_the_bad_corpus_is_large_enough() -> None:
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_bad_definition(path: Path) -> None:
    expected = _header(path, "expect")
    assert expected, f"{path.name} has no '# expect:' header"
    place, fragment = expected.split(": ", 1)
    result = load_paths([path])
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    error = result.errors[0]
    assert str(error).startswith(f"{path}:{place}: "), str(error)
    assert fragment in error.message, str(error)


def _loc(line: int, column: int = 3) -> Location:
    return Location(str(DATA / "good" / "full.yaml"), line, column)


def test_every_key_parsed_into_the_model() -> None:
    good = str(DATA / "good")
    result = load_paths([DATA / "good" / "full.yaml"])
    assert result.errors == []
    assert set(result.containers) == {"web", "db", "worker@"}
    assert result.containers["web"] == Container(
        name="web",
        source=_loc(6),
        image="docker.io/library/nginx:1.27",
        command=("nginx", "-g", "daemon off;"),
        entrypoint=("/docker-entrypoint.sh",),
        environment=(
            ("PLAIN", "value"),
            ("NUMBER", "8080"),
            ("YES_WORD", "yes"),
            ("SPECIAL", "%i $HOME; \\ 'q' ünï"),
        ),
        env_files=(f"{good}/web.env", "/etc/podunit/common.env"),
        working_dir="/srv",
        user="33:33",  # unquoted: YAML 1.1 reads the base-60 integer 1983
        group_add=("audio", "44"),
        hostname="web-1",
        mounts=(
            Mount(MountType.BIND, "/usr/share/nginx/html", f"{good}/html", read_only=True),
            Mount(MountType.VOLUME, "/var/cache/nginx", "cache"),
            Mount(MountType.TMPFS, "/scratch", size=64 << 20),
            Mount(MountType.BIND, "/etc/nginx/conf.d", str(DATA / "conf"), read_only=True),
            Mount(MountType.TMPFS, "/run"),
            Mount(MountType.TMPFS, "/tmp", size=64 << 20, options=("mode=1777",)),
        ),
        read_only=True,
        network="host",
        ports=(
            PortMapping(8080, 80),
            PortMapping(8443, 443, "tcp", "127.0.0.1"),
            PortMapping(5353, 53, "udp", "::1"),
            PortMapping(22, 22),
        ),
        sockets=(
            SocketSpec("8080", SocketType.STREAM, "http"),
            SocketSpec("/run/web.sock"),
        ),
        notify=Notify.HEALTHY,
        healthcheck=Healthcheck(
            ("/bin/sh", "-c", "curl -f http://localhost/"),
            timedelta(seconds=5),
            timedelta(seconds=2),
            5,
            timedelta(seconds=90),
        ),
        stop_signal=3,
        stop_timeout=timedelta(seconds=90),
        restart=Restart.NO,
        resources=Resources(512 << 20, 256 << 20, 1.5, 200, 100),
        cap_add=("CAP_NET_ADMIN", "CAP_SYS_TIME"),
        cap_drop=("ALL",),
        privileged=False,
        no_new_privileges=False,
        seccomp="unconfined",
        devices=("/dev/fuse", "/dev/null:/dev/mynull:rw"),
        sysctls=(("net.core.somaxconn", "1024"),),
        ulimits=(Ulimit("nofile", 1024, 2048), Ulimit("nproc", 512, 512)),
        security_opt=("label=disable",),
        labels=(("tier", "web"),),  # from the YAML merge key `<<: *common`
        annotations=(("org.example.key", "value"),),
        init=True,
        cgroups=CgroupMode.ENABLED,
        log_driver=LogDriver.K8S_FILE,
        log_max_size=10 << 20,
        depends_on=(
            Dependency("db", DependencyCondition.HEALTHY),
            Dependency("worker@1", DependencyCondition.STARTED),
        ),
        reload=Reload(signal=1),
        unit_extra=(
            ("Description", "The web server"),
            ("After", "network-online.target"),
            ("After", "db.service"),
        ),
        service_extra=(("TimeoutStartSec", "900"), ("Delegate", "yes")),
        socket_extra=(("Backlog", "64"),),
        install=Install(("multi-user.target",), ("graphical.target",), ("www.service",)),
        runtime="crun",
    )
    db = result.containers["db"]
    assert db.rootfs == f"{good}/dbroot" and db.image is None
    assert db.reload == Reload(command=("pg_ctl", "reload"))
    assert db.restart is Restart.ON_FAILURE
    assert db.healthcheck == Healthcheck(("/bin/sh", "-c", "pg_isready"))
    assert db.stop_signal == 15 and db.stop_timeout == timedelta(seconds=10)
    assert db.no_new_privileges is True and db.network is None
    worker = result.containers["worker@"]
    assert worker.template and worker.name == "worker" and worker.unit_name == "worker@"
    assert result.sources["web"] == [str(DATA / "good" / "full.yaml")]

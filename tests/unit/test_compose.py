"""Compose files (spec §1.3): mapping onto the model, refusal by name, schema validity.

Every Compose document these tests feed to podunit is first validated against
the official schema (tests/data/definitions/compose-spec/), read the
way Compose reads YAML (1.2: `no` and `22:22` are strings), so that the corpus
is real Compose. A few inputs are invalid Compose on purpose and say so.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.definitions.compose import (
    COMPOSE_KEYS,
    TOP_LEVEL_KEYS,
    UNSUPPORTED_KEYS,
    UNSUPPORTED_TOP_LEVEL,
    X_PODUNIT_KEYS,
)
from toolkit.definitions.loader import LoadResult, load_paths
from toolkit.definitions.model import (
    CgroupMode,
    Dependency,
    DependencyCondition,
    Healthcheck,
    Install,
    Mount,
    MountType,
    Notify,
    PortMapping,
    Reload,
    Resources,
    Restart,
    SocketSpec,
    Ulimit,
)
from toolkit.definitions.parse import CONTAINER_KEYS

DATA = Path(__file__).resolve().parent.parent / "data" / "definitions"
SCHEMA_PATH = DATA / "compose-spec" / "compose-spec.json"  # copy of compose-spec 170098b


class _Yaml12Loader(yaml.SafeLoader):
    """Booleans are only true/false and there are no base-60 integers, as in YAML 1.2."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
for _first in "0123456789-+":
    _Yaml12Loader.yaml_implicit_resolvers[_first] = [
        (tag, regexp)
        for tag, regexp in _Yaml12Loader.yaml_implicit_resolvers.get(_first, [])
        if tag != "tag:yaml.org,2002:int"
    ]
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def compose_errors(text: str) -> list[str]:
    """Schema violations of a Compose document (empty when it is valid Compose)."""
    document = yaml.load(text, Loader=_Yaml12Loader)
    validator = jsonschema.Draft7Validator(_schema())
    return [error.message for error in validator.iter_errors(document)]


def load_compose(tmp_path: Path, text: str, *, valid: bool = True) -> LoadResult:
    """Write a Compose file, check its validity against the schema, load it."""
    errors = compose_errors(text)
    assert (errors == []) is valid, errors or "expected invalid Compose"
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    return load_paths([path])


def services(result: LoadResult) -> dict[str, Any]:
    """The containers of a Compose file by service name (their units are PROJECT-SERVICE)."""
    return {str(c.service): c for c in result.containers.values()}


def messages(result: LoadResult, path: Path) -> list[str]:
    return [str(e).removeprefix(f"{path}:") for e in result.errors]


# ---------------------------------------------------------------- corpus and key sets


GOLDEN = DATA.parent.parent / "golden"
# Every Compose file the tests accept: the definitions corpus, the golden files and the
# Compose project corpus (tests/golden/compose/, without the projects' own YAML files).
CORPUS = sorted(
    p
    for p in [*DATA.rglob("*.yaml"), *GOLDEN.glob("*.yaml"), *GOLDEN.glob("compose/*/*.y*ml")]
    if "\nservices:" in "\n" + p.read_text()
)


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_every_compose_file_of_the_corpus_is_checked_against_the_schema(path: Path) -> None:
    text = path.read_text()
    errors = compose_errors(text)
    if "# compose-schema: invalid" in text:
        assert errors, f"{path.name} is marked invalid but the schema accepts it"
    else:
        assert errors == [], errors


def test_the_corpus_has_compose_files() -> None:
    assert len(CORPUS) >= 12


def test_every_compose_service_key_is_either_mapped_or_refused_by_name() -> None:
    schema_keys = set(_schema()["definitions"]["service"]["properties"])
    accepted = COMPOSE_KEYS - {"x-podunit"}
    assert accepted | UNSUPPORTED_KEYS == schema_keys
    assert accepted & UNSUPPORTED_KEYS == set()


def test_every_compose_top_level_key_is_either_accepted_or_refused_by_name() -> None:
    schema_keys = set(_schema()["properties"])
    assert schema_keys == TOP_LEVEL_KEYS | UNSUPPORTED_TOP_LEVEL


def test_x_podunit_keys_are_podunit_keys() -> None:
    assert X_PODUNIT_KEYS <= CONTAINER_KEYS


# ---------------------------------------------------------------- mapping


def test_full_compose_file_maps_onto_the_model() -> None:
    path = DATA / "good" / "compose-full.yaml"
    good = str(path.parent)
    result = load_paths([path])
    assert result.errors == []
    web, db, batch = (result.containers[n] for n in ("demo-web", "demo-db", "demo-batch"))
    assert web.name == "demo-web" and web.image == "docker.io/library/nginx:1.27"
    assert (web.project, web.service) == ("demo", "web")
    assert web.restart is Restart.UNLESS_STOPPED  # from the merge key
    assert web.command == ("nginx", "-g", "daemon off;")
    assert web.entrypoint == ("/docker-entrypoint.sh",)
    assert web.environment == (("A", "1"), ("B", "two words"))
    assert web.env_files == (f"{good}/web.env", f"{good}/more.env")
    assert (web.working_dir, web.user, web.group_add, web.hostname) == (
        "/srv",
        "101:101",
        ("audio",),
        "web",
    )
    assert web.mounts == (
        Mount(
            MountType.BIND,
            "/usr/share/nginx/html",
            f"{good}/html",
            True,
            None,
            ("create_host_path",),
        ),  # the short syntax implies it (Compose specification)
        Mount(MountType.BIND, "/etc/nginx/conf.d", f"{good}/conf", True, None, ("rprivate",)),
        Mount(MountType.TMPFS, "/scratch", None, False, 64 << 20, ("mode=1777",)),
        Mount(MountType.VOLUME, "/data", "demo_data", options=("nocopy",)),  # PROJECT_VOLUME
        Mount(MountType.TMPFS, "/run"),
    )
    assert web.read_only and web.network == "host"
    assert web.ports == (PortMapping(8080, 80), PortMapping(8443, 443, "tcp", "127.0.0.1"))
    assert web.healthcheck == Healthcheck(
        ("curl", "-f", "http://localhost/"),
        timedelta(seconds=10),
        timedelta(seconds=3),
        2,
        timedelta(seconds=5),
    )
    assert (web.stop_signal, web.stop_timeout) == (2, timedelta(minutes=1))
    assert (web.cap_add, web.cap_drop, web.privileged) == (
        ("CAP_NET_ADMIN",),
        ("CAP_MKNOD",),
        False,
    )
    assert web.devices == ("/dev/fuse:/dev/fuse:rwm",)
    assert web.sysctls == (("net.core.somaxconn", "1024"),)
    assert web.ulimits == (Ulimit("nofile", 1024, 2048), Ulimit("nproc", 65535, 65535))
    assert web.security_opt == ("no-new-privileges:true",)
    assert web.labels == (("com.example.tier", "frontend"),)
    assert web.annotations == (("com.example.note", "hello"),)
    assert web.init
    assert web.depends_on == (Dependency("demo-db", DependencyCondition.HEALTHY),)
    assert web.resources == Resources(512 << 20, 128 << 20, 0.5, 50, 100)
    assert web.log_max_size == 10 << 20
    # x-podunit
    assert (web.notify, web.cgroups, web.runtime) == (Notify.HEALTHY, CgroupMode.DISABLED, "runc")
    assert web.sockets == (SocketSpec("8080"),)
    assert web.reload == Reload(signal=1)
    assert web.service_extra == (("TimeoutStartSec", "60"),)
    assert web.install == Install(("default.target",))
    assert web.no_new_privileges and web.seccomp == "default"

    assert db.restart is Restart.NO
    assert db.resources == Resources(1 << 30, 256 << 20, 1.5, 1 + (510 * 9999) // 262142, 200)
    assert db.stop_timeout == timedelta(seconds=30)
    assert db.healthcheck == Healthcheck(("/bin/sh", "-c", "pg_isready"))
    assert batch.restart is Restart.NO  # an unquoted `no` (a YAML 1.1 boolean) as well
    assert batch.healthcheck is None and batch.command == ("echo", "hello")


def test_container_name_is_ignored_in_favour_of_the_service_key(tmp_path: Path) -> None:
    result = load_compose(tmp_path, "services:\n  web:\n    image: x\n    container_name: other\n")
    assert list(services(result)) == ["web"]
    assert services(result)["web"].name == f"{tmp_path.name.lower()}-web"


def test_healthcheck_none_and_string_forms(tmp_path: Path) -> None:
    result = load_compose(
        tmp_path,
        "services:\n"
        "  a: {image: x, healthcheck: {test: [NONE]}}\n"
        "  b: {image: x, healthcheck: {test: 'curl -f localhost', retries: 1}}\n"
        "  c: {image: x, healthcheck: {test: [CMD-SHELL, 'exit 0']}}\n",
    )
    assert result.errors == []
    assert services(result)["a"].healthcheck is None
    check_b = services(result)["b"].healthcheck
    assert check_b is not None and check_b.test == ("/bin/sh", "-c", "curl -f localhost")
    check_c = services(result)["c"].healthcheck
    assert check_c is not None and check_c.test == ("/bin/sh", "-c", "exit 0")


def test_ulimits_and_ports_long_form_and_top_level_names(tmp_path: Path) -> None:
    result = load_compose(
        tmp_path,
        "name: app\nversion: '3.9'\n"
        "services:\n  a:\n    image: x\n    ulimits: {core: 0}\n"
        "    ports: [{target: 53, published: 5353, protocol: udp, host_ip: '::1'}]\n"
        "volumes:\n  data:\n",
    )
    assert result.errors == []
    a = result.containers["app-a"]
    assert a.ulimits == (Ulimit("core", 0, 0),)
    assert a.ports == (PortMapping(5353, 53, "udp", "::1"),)


# ---------------------------------------------------------------- refusal by name

UNSUPPORTED_SAMPLES: dict[str, str] = {
    "links": "[db]",
    "pid": "host",
    "ipc": "host",
    "extends": "{service: base}",
    "volumes_from": "[other]",
    "oom_score_adj": "-500",
    "mem_swappiness": "10",
    "runtime": "runc",
    "scale": "2",
    "cgroup_parent": "m.slice",
    "userns_mode": "host",
    "cpuset": "0-1",
}


@pytest.mark.parametrize("key", sorted(UNSUPPORTED_SAMPLES))
def test_unsupported_service_keys_are_refused_by_name(tmp_path: Path, key: str) -> None:
    text = f"services:\n  web:\n    image: nginx\n    {key}: {UNSUPPORTED_SAMPLES[key]}\n"
    result = load_compose(tmp_path, text)
    path = tmp_path / "compose.yaml"
    assert messages(result, path) == [f"4:5: Compose key '{key}' is not supported by podunit"]
    assert result.errors[0].hint  # each refusal says what to do instead
    assert result.containers == {}


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "    deploy: {resources: {reservations: {cpus: '0.5'}}}\n",
            "4:41: Compose key 'deploy.resources.reservations.cpus' is not supported by podunit",
        ),
        (
            "    deploy: {restart_policy: {window: 1m}}\n",
            "4:31: Compose key 'deploy.restart_policy.window' is not supported by podunit",
        ),
        (
            "    logging: {driver: journald, options: {max-file: '3'}}\n",
            "4:43: Compose key 'logging.options.max-file' is not supported by podunit",
        ),
        ("    network_mode: 'service:db'\n", "4:19: network_mode 'service:db' is not supported"),
        ("    restart: on-failure:x\n", "4:14: restart 'on-failure:x': the retry count"),
        (
            "    depends_on: {dbb: {condition: service_started}}\n",
            "5:18: depends_on 'dbb': project 'p' has no service 'dbb' (did you mean 'db'?)",
        ),
        ("    platform: linux/s390x\n", "4:15: platform 'linux/s390x' is not this host's"),
        ("    expose: ['http']\n", "4:14: invalid expose port 'http'"),
        ("    x-podunit: {notfy: container}\n", "4:17: unknown key 'notfy' in x-podunit"),
        ("    mem_limit: 1g\n    deploy: {resources: {limits: {memory: 2g}}}\n", "set twice"),
        ("    cpu_shares: 1\n", "4:17: cpu_shares '1' must be an integer 2..262144"),
        (
            "    volumes: [{type: bind, source: /x, target: /y, bind: {recursive: disabled}}]\n",
            "4:59: unknown key 'recursive' in bind",
        ),
        (
            "    healthcheck: {test: [CMD, 'true'], start_interval: soon}\n",
            "4:56: invalid duration 'soon'",
        ),
    ],
)
def test_compose_values_without_a_podunit_meaning(
    tmp_path: Path, snippet: str, expected: str
) -> None:
    services = "  db: {image: postgres}\n" if "depends_on" in snippet else ""
    text = f"name: p\nservices:\n{services}  web:\n    image: nginx\n{snippet}"
    result = load_compose(tmp_path, text)
    found = [m.replace(":", ":", 1) for m in messages(result, tmp_path / "compose.yaml")]
    found = [re.sub(r"^(\d+):", lambda m: f"{int(m.group(1)) - 1}:", m) for m in found]
    found = [m for m in found if "'db'" not in m or "depends_on" in m]
    assert len(found) == 1 and expected in found[0], found
    assert "p-web" not in result.containers


@pytest.mark.parametrize(
    ("top_level", "expected"),
    [
        ("configs:\n  c: {external: true}\n", "external configs live in a Swarm"),
        ("secrets:\n  s: {driver: vault}\n", "secret key 'driver' needs a Swarm"),
        ("volumes:\n  data: {driver: nfs}\n", "volume driver 'nfs' is not supported"),
        ("volumes:\n  data: {external: true, driver: local}\n", "volume 'data' is external"),
    ],
)
def test_top_level_compose_keys_refused_by_name(
    tmp_path: Path, top_level: str, expected: str
) -> None:
    result = load_compose(tmp_path, f"services:\n  web: {{image: x}}\n{top_level}")
    found = messages(result, tmp_path / "compose.yaml")
    assert len(found) == 1 and expected in found[0], found


def test_invalid_compose_is_refused_too(tmp_path: Path) -> None:
    result = load_compose(tmp_path, "services:\n  web:\n    image: x\n    imagee: y\n", valid=False)
    assert messages(result, tmp_path / "compose.yaml") == [
        "4:5: unknown Compose key 'imagee' (did you mean 'image'?)"
    ]


@pytest.mark.parametrize("key", ["runtime", "notify"])
def test_podunit_keys_outside_x_podunit_get_a_hint(tmp_path: Path, key: str) -> None:
    result = load_compose(
        tmp_path, f"services:\n  web:\n    image: x\n    {key}: runc\n", valid=key == "runtime"
    )
    assert len(result.errors) == 1
    assert (
        result.errors[0].hint
        == f"podunit's own '{key}' goes under 'x-podunit:' in a Compose service"
    )


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**20), 2**20),
    st.sampled_from(["", "x", "1m", "512m", "SIGINT", "8080:80", "/abs", "./rel", "A=b", "host"]),
    st.text(max_size=6),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["resources", "limits", "memory", "cpus", "driver", "options", "test"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(sorted(COMPOSE_KEYS | UNSUPPORTED_KEYS)), _VALUES, max_size=4)
)
def test_any_compose_service_gives_a_result_or_located_errors(service: dict[str, Any]) -> None:
    """Whatever the service holds, loading never raises: a container or located errors.

    The one test whose input is not schema-checked: it is arbitrary on purpose (robustness).
    """
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "compose.yaml")
        path.write_text(yaml.safe_dump({"services": {"s": service}}))
        result = load_paths([path])
    assert bool(result.containers) != bool(result.errors)
    for error in result.errors:
        assert error.location is not None and error.location.path == str(path)

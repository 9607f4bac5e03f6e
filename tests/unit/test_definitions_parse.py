"""Single keys of podunit's own form (spec §1.1): forms and errors not covered by the corpus."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.definitions.model import (
    Container,
    Healthcheck,
    Mount,
    MountType,
    Reload,
    SocketSpec,
    SocketType,
)
from toolkit.definitions.parse import CONTAINER_KEYS


def load(tmp_path: Path, spec: str) -> tuple[Container | None, list[str]]:
    """Load `containers: {c: {image: x, <spec>}}`; the container (or None) and the errors.

    Without `image: x` when the spec sets the image itself.
    """
    from toolkit.definitions.loader import load_paths

    path = tmp_path / "c.yaml"
    body = "".join(f"    {line}\n" for line in spec.splitlines())
    image = "" if spec.startswith("image:") else "    image: x\n"
    path.write_text(f"containers:\n  c:\n{image}{body}")
    result = load_paths([path])
    return result.containers.get("c"), [str(e).removeprefix(f"{path}:") for e in result.errors]


def loaded(tmp_path: Path, spec: str) -> Container:
    container, errors = load(tmp_path, spec)
    assert errors == [] and container is not None
    return container


def test_unit_sections(tmp_path: Path) -> None:
    c = loaded(
        tmp_path,
        "unit: {X-Owner: me, x-note: ignored, After: [a.service, b.service], Wants: []}\n"
        "service: {Environment: ~, Nice: 5}",
    )
    assert c.unit_extra == (("X-Owner", "me"), ("After", "a.service"), ("After", "b.service"))
    assert c.service_extra == (("Environment", ""), ("Nice", "5"))
    _, errors = load(tmp_path, "unit: {After_: x}")
    assert errors == ["4:12: invalid [Unit] key 'After_'"]
    _, errors = load(tmp_path, "service: [TimeoutStartSec=5]")
    assert errors == ["4:14: service must be a mapping of [Service] keys"]


def test_pairs_keep_data_keys(tmp_path: Path) -> None:
    c = loaded(tmp_path, "labels: {x-team: a, b: c}\nenvironment: [x-y=1, 'E=a=b', 'N=']")
    assert c.labels == (("x-team", "a"), ("b", "c"))
    assert c.environment == (("x-y", "1"), ("E", "a=b"), ("N", ""))
    _, errors = load(tmp_path, "environment: ['=v']")
    assert errors == ["4:19: invalid environment name ''"]


def test_multiline_values_allowed_where_no_unit_file_sees_them(tmp_path: Path) -> None:
    c = loaded(tmp_path, 'command: [sh, -c, "echo a\\necho b"]\nenvironment: {TEXT: "l1\\nl2"}')
    assert c.command == ("sh", "-c", "echo a\necho b")
    assert c.environment == (("TEXT", "l1\nl2"),)


def test_sockets(tmp_path: Path) -> None:
    c = loaded(
        tmp_path,
        "sockets:\n"
        "  - {listen: 8080}\n"
        "  - {listen: '127.0.0.1:53', type: datagram, name: dns}\n"
        "  - {listen: '[::]:443'}\n"
        "  - {listen: /run/c.sock, type: seqpacket}\n"
        "  - {listen: '@abstract'}",
    )
    assert c.sockets == (
        SocketSpec("8080"),
        SocketSpec("127.0.0.1:53", SocketType.DATAGRAM, "dns"),
        SocketSpec("[::]:443"),
        SocketSpec("/run/c.sock", SocketType.SEQPACKET),
        SocketSpec("@abstract"),
    )


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("sockets: [{listen: 0}]", "5:24: port '0' out of range 1..65535 in socket '0'"),
        ("sockets: [{listen: ./rel.sock}]", "5:24: socket path './rel.sock' must be absolute"),
        ("sockets: [{type: stream}]", "5:15: a socket needs 'listen'"),
        (
            "sockets: [{listen: 1, type: raw}]",
            "5:33: invalid socket type 'raw' (one of: stream, datagram, seqpacket)",
        ),
        (
            "sockets: [{listen: 1, nme: a}]",
            "5:27: unknown key 'nme' in socket (did you mean 'name'?)",
        ),
    ],
)
def test_socket_errors(tmp_path: Path, spec: str, error: str) -> None:
    _, errors = load(tmp_path, f"x-pad: 1\n{spec}")
    assert errors == [error]


def test_healthcheck_forms(tmp_path: Path) -> None:
    assert loaded(tmp_path, "healthcheck: {test: [true]}").healthcheck == Healthcheck(("true",))
    assert loaded(tmp_path, "healthcheck: {test: [CMD, a, b]}").healthcheck == Healthcheck(
        ("a", "b")
    )
    assert loaded(tmp_path, "healthcheck: {test: [NONE]}").healthcheck is None
    assert loaded(tmp_path, "healthcheck: {disable: true, test: x}").healthcheck is None
    for spec, error in [
        ("healthcheck: {test: []}", "must not be empty"),
        ("healthcheck: {test: [CMD]}", "healthcheck CMD needs a command"),
        ("healthcheck: {test: [CMD-SHELL, a, b]}", "CMD-SHELL takes exactly one command string"),
        ("healthcheck: {interval: 5s}", "healthcheck needs 'test'"),
        ("healthcheck: {test: x, retries: -1}", "retries '-1' out of range >= 0"),
        ("healthcheck: {test: x, timeout: -3}", "timeout '-3' must not be negative"),
    ]:
        _, errors = load(tmp_path, spec)
        assert len(errors) == 1 and error in errors[0], (spec, errors)


def test_reload(tmp_path: Path) -> None:
    assert loaded(tmp_path, "reload: {signal: USR1}").reload == Reload(signal=10)
    assert loaded(tmp_path, "reload: {command: nginx -s reload}").reload == Reload(
        command=("nginx", "-s", "reload")
    )
    _, errors = load(tmp_path, "reload: {signal: HUP, command: [x]}")
    assert errors == ["4:13: reload needs exactly one of 'signal' or 'command'"]
    _, errors = load(tmp_path, "reload: {command: ''}")
    assert errors == ["4:23: reload command must not be empty"]


def test_long_volumes(tmp_path: Path) -> None:
    c = loaded(
        tmp_path,
        "volumes:\n"
        "  - {type: volume, source: data, target: /data, read_only: 'true'}\n"
        "  - {type: tmpfs, target: /t, tmpfs: {size: 1k, mode: 0700}}",
    )
    assert c.mounts == (
        Mount(MountType.VOLUME, "/data", "data", read_only=True),
        Mount(MountType.TMPFS, "/t", size=1024, options=("mode=0700",)),
    )
    for spec, error in [
        ("volumes: [{type: bind, target: /x}]", "a bind volume needs 'source'"),
        ("volumes: [{type: tmpfs, source: a, target: /x}]", "a tmpfs volume has no 'source'"),
        ("volumes: [{type: bind, source: /a, target: /x, size: 1M}]", "applies only to tmpfs"),
        ("volumes: [{type: nfs, source: a, target: /x}]", "invalid volume type 'nfs'"),
        ("volumes: [{type: bind, source: /a}]", "needs 'type' and 'target'"),
        ("volumes: [{type: bind, source: /a, target: /b, tmpfs: {size: 1}}]", "'tmpfs' options"),
    ]:
        _, errors = load(tmp_path, spec)
        assert len(errors) == 1 and error in errors[0], (spec, errors)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("image: ''", "image must not be empty"),
        ("command: {a: b}", "command must be a string, not a mapping"),
        ('command: "echo \'unclosed"', "cannot split command"),
        ("network: 'bad name'", "invalid network name 'bad name'"),
        ("runtime: kata", "invalid runtime 'kata' (one of: runc, crun)"),
        ("cgroups: none", "invalid cgroups 'none'"),
        ("log_driver: syslog", "invalid log_driver 'syslog'"),
        ("log_opt: {max_file: 3}", "unknown key 'max_file' in log_opt (did you mean 'max_size'?)"),
        ("resources: {memroy: 1G}", "did you mean 'memory'?"),
        ("resources: {pids: 0}", "pids '0' out of range >= 1"),
        ("resources: {cpus: lots}", "cpus 'lots' must be a number"),
        ("ulimits: {nofiles: 5}", "unknown ulimit 'nofiles' (did you mean 'nofile'?)"),
        ("ulimits: {nofile: {soft: 5}}", "needs both 'soft' and 'hard'"),
        ("devices: ['/dev/a:/dev/b:xyz']", "invalid device permissions"),
        ("devices: ['/dev/a:b']", "device container path in '/dev/a:b' must be absolute"),
        ("sysctls: {'a b': 1}", "invalid sysctl name 'a b'"),
        ("depends_on: [web]", "names a container that is not defined"),
        ("depends_on: ['bad name']", "invalid container name 'bad name'"),
        ("depends_on: {db: {condition: x}}", "invalid condition 'x'"),
        ("install: {wanted_by: [a/b.target]}", "invalid unit name 'a/b.target'"),
        ("install: {wanted: [a.target]}", "did you mean 'wanted_by'?"),
        ("env_file: [{required: true}]", "env_file entry needs 'path'"),
        ("group_add: [{a: b}]", "group_add must be a string, not a mapping"),
        ("cap_add: NET_ADMIN", "cap_add must be a list, not 'NET_ADMIN'"),
        ("security_opt: label=disable", "security_opt must be a list"),
        ("ports: [{target: 80}]", "needs 'published'"),
        ("ports: [{published: 80}]", "needs 'target'"),
        ("ports: [{target: 80, published: 8080, mode: ingress}]", "invalid port mode 'ingress'"),
        ("stop_signal: 0", "signal number '0' out of range 1..64"),
        ("stop_timeout: [1]", "stop_timeout must be a string, not a list"),
        ("stop_timeout: 1.0e+99", "stop_timeout: duration '1.0e+99' is out of range"),
        ("stop_timeout: .nan", "stop_timeout: duration '.nan' is out of range"),
        ("stop_timeout: 99999999999999d", "duration '99999999999999d' is out of range"),
        ("privileged: 1", "privileged must be true or false, not '1'"),
        ("hostname: -bad", "invalid hostname '-bad'"),
        ('image: "a\\tb"', "image 'a\\tb' contains a control character"),
        ("rootfs: /r", "has both 'image' and 'rootfs'"),
        ("notify: healthy\nhealthcheck: {test: [NONE]}", "notify 'healthy' needs a healthcheck"),
    ],
)
def test_errors(tmp_path: Path, spec: str, fragment: str) -> None:
    container, errors = load(tmp_path, spec)
    assert container is None
    assert len(errors) == 1 and fragment in errors[0], errors


def test_container_must_be_a_mapping(tmp_path: Path) -> None:
    from toolkit.definitions.loader import load_paths

    path = tmp_path / "c.yaml"
    path.write_text("containers:\n  c: nginx\n  d: {image: x}\n")
    result = load_paths([path])
    assert [str(e) for e in result.errors] == [
        f"{path}:2:6: container 'c' must be a mapping, not 'nginx'"
    ]
    assert list(result.containers) == ["d"]


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.sampled_from(["", "x", "10s", "1G", "SIGTERM", "80:80", "/abs", "rel", "a=b", "%i"]),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["test", "type", "target", "source", "soft", "listen", "x-a", "z"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(CONTAINER_KEYS)), _VALUES, max_size=4))
def test_any_value_of_any_key_gives_a_result_or_located_errors(spec: dict[str, Any]) -> None:
    """Whatever the values, loading never raises: a container or `FILE:LINE:COLUMN` errors."""
    from toolkit.definitions.loader import load_paths

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "c.yaml")
        path.write_text(yaml.safe_dump({"containers": {"c": spec}}))
        result = load_paths([path])
    assert bool(result.containers) != bool(result.errors) or not spec
    for error in result.errors:
        assert error.location is not None and error.location.path == str(path)

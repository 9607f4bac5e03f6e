"""Pure parts of exec sessions: the process spec, -e parsing, the attach protocol."""

from __future__ import annotations

import pytest

from toolkit.errors import PodunitError
from toolkit.runtime.attach import attach_packet, resize_message
from toolkit.runtime.exec import exec_process_spec, parse_env_options
from toolkit.runtime.oci import ResolvedUser
from toolkit.storage.records import ExecConfig, ExecSession

CONTAINER_SPEC = {
    "process": {
        "terminal": False,
        "user": {"uid": 1000, "gid": 1000},
        "args": ["sleep", "infinity"],
        "env": ["PATH=/usr/bin:/bin", "HOSTNAME=abc", "APP=1"],
        "cwd": "/srv",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
        "consoleSize": {"height": 10, "width": 10},
    }
}


def test_process_inherits_the_containers_security_settings() -> None:
    process = exec_process_spec(CONTAINER_SPEC, ExecConfig(command=("ls", "-l")), None)
    assert process["args"] == ["ls", "-l"]
    assert process["terminal"] is False
    assert process["user"] == {"uid": 1000, "gid": 1000}
    assert process["cwd"] == "/srv"
    assert process["capabilities"] == CONTAINER_SPEC["process"]["capabilities"]
    assert process["rlimits"] == CONTAINER_SPEC["process"]["rlimits"]
    assert process["noNewPrivileges"] is True
    assert "consoleSize" not in process
    assert process["env"] == ["PATH=/usr/bin:/bin", "HOSTNAME=abc", "APP=1"]


def test_session_overrides() -> None:
    config = ExecConfig(
        command=("sh",), tty=True, environment=(("APP", "2"), ("NEW", "a=b")), workdir="/tmp"
    )
    user = ResolvedUser(uid=65534, gid=65534, additional_gids=(10,))
    process = exec_process_spec(CONTAINER_SPEC, config, user)
    assert process["terminal"] is True
    assert "consoleSize" not in process
    assert exec_process_spec(CONTAINER_SPEC, config, user, (24, 80))["consoleSize"] == {
        "height": 24,
        "width": 80,
    }
    assert "consoleSize" not in exec_process_spec(
        CONTAINER_SPEC, ExecConfig(command=("ls",)), None, (24, 80)
    )
    assert process["cwd"] == "/tmp"
    assert process["user"] == {"uid": 65534, "gid": 65534, "additionalGids": [10]}
    assert process["env"] == [
        "PATH=/usr/bin:/bin",
        "HOSTNAME=abc",
        "APP=2",
        "TERM=xterm",
        "NEW=a=b",
    ]


def test_spec_without_process_gets_defaults() -> None:
    process = exec_process_spec({}, ExecConfig(command=("true",)), None)
    assert process["cwd"] == "/"
    assert process["env"] == []


def test_env_options() -> None:
    environ = {"HOME": "/root"}
    assert parse_env_options(["A=1", "B=", "C=x=y", "HOME", "UNSET"], environ) == (
        ("A", "1"),
        ("B", ""),
        ("C", "x=y"),
        ("HOME", "/root"),
    )
    with pytest.raises(PodunitError, match="invalid -e '=x'"):
        parse_env_options(["=x"], environ)


def test_attach_packets_and_resize() -> None:
    assert attach_packet(b"\x02hello") == (2, b"hello")
    assert attach_packet(b"\x03oops") == (3, b"oops")
    assert attach_packet(b"") == (0, b"")
    assert resize_message(24, 80) == b"1 24 80\n"


def test_config_and_session_round_trip() -> None:
    config = ExecConfig(
        command=("sh", "-c", "x"),
        tty=True,
        interactive=True,
        environment=(("A", "1"),),
        user="nobody",
        workdir="/w",
    )
    assert ExecConfig.from_json(config.to_json()) == config
    shown = ExecSession(
        id="a" * 64,
        container_id="b" * 64,
        state="running",
        config=config,
        created_at=1.0,
        pid=42,
    ).describe()
    assert shown["Running"] is True
    assert shown["ProcessConfig"] == {
        "Entrypoint": "sh",
        "Arguments": ["-c", "x"],
        "Tty": True,
        "User": "nobody",
        "WorkDir": "/w",
    }

"""Socket activation (spec §3.3, sd_listen_fds(3)) against real sockets in a child process.

`inherited_sockets` reads fds 3, 4, ...; a fresh child process is the only place
where those numbers are free, so each case runs a small Python child that
moves real sockets (or other files) to 3.. and reports what it found.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.systemd.activation import (
    ActivationFds,
    container_environment,
    environment_for_conmon,
    runtime_preserve_fds_args,
)

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from toolkit.systemd.activation import inherited_sockets
    from toolkit.errors import PodunitError
    sources = [int(fd) for fd in sys.argv[1].split(",") if fd]
    for target, source in enumerate(sources, start=3):
        os.dup2(source, target)
    env = json.loads(sys.argv[2])
    if env.get("LISTEN_PID") == "self":
        env["LISTEN_PID"] = str(os.getpid())
    try:
        found = inherited_sockets(env)
    except PodunitError as error:
        print(json.dumps({"error": str(error)}))
    else:
        print(json.dumps({"fds": found.fds, "names": found.names}))
    """
)


def inherit(files: list[int], env: dict[str, str]) -> dict[str, object]:
    """Run `inherited_sockets` in a child that has `files` at fd 3, 4, ..."""
    # move the sources above the target range so dup2 never overwrites one still needed
    high = [os.dup2(fd, 100 + index, inheritable=False) for index, fd in enumerate(files)]
    try:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, ",".join(map(str, high)), json.dumps(env)],
            pass_fds=high,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=30,
        )
    finally:
        for fd in high:
            os.close(fd)
    return dict(json.loads(result.stdout))


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made = [
        socket.socket(socket.AF_INET, socket.SOCK_STREAM),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET),
    ]
    yield made
    for sock in made:
        sock.close()


@pytest.mark.parametrize("count", [1, 2, 3])
def test_accepts_exactly_the_announced_sockets_with_names(
    sockets: list[socket.socket], count: int
) -> None:
    names = ["http", "dns", "ctl"][:count]
    env = {"LISTEN_PID": "self", "LISTEN_FDS": str(count), "LISTEN_FDNAMES": ":".join(names)}
    found = inherit([s.fileno() for s in sockets[:count]], env)
    assert found == {"fds": list(range(3, 3 + count)), "names": names}


def test_names_default_to_unknown_like_sd_listen_fds_with_names(
    sockets: list[socket.socket],
) -> None:
    found = inherit([s.fileno() for s in sockets[:2]], {"LISTEN_PID": "self", "LISTEN_FDS": "2"})
    assert found == {"fds": [3, 4], "names": ["unknown", "unknown"]}


def test_fds_meant_for_another_process_are_ignored(sockets: list[socket.socket]) -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
    assert inherit([sockets[0].fileno()], env) == {"fds": [], "names": []}


def test_no_activation_variables_means_no_fds() -> None:
    assert inherit([], {}) == {"fds": [], "names": []}


def test_a_regular_file_announced_as_socket_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "plain", "w") as plain:
        found = inherit([plain.fileno()], {"LISTEN_PID": "self", "LISTEN_FDS": "1"})
    assert found == {"error": "socket activation: fd 3 announced by LISTEN_FDS is not a socket"}


def test_an_announced_fd_that_is_not_open_is_refused(sockets: list[socket.socket]) -> None:
    found = inherit([sockets[0].fileno()], {"LISTEN_PID": "self", "LISTEN_FDS": "2"})
    assert "fd 4 announced by LISTEN_FDS is not open" in str(found["error"])


@pytest.mark.parametrize(
    ("variable", "value"), [("LISTEN_FDS", "two"), ("LISTEN_FDS", "0"), ("LISTEN_PID", "-5")]
)
def test_malformed_numbers_are_refused_naming_the_variable(
    sockets: list[socket.socket], variable: str, value: str
) -> None:
    env = {"LISTEN_PID": "self", "LISTEN_FDS": "1", variable: value}
    found = inherit([sockets[0].fileno()], env)
    assert found == {"error": f"socket activation: {variable}={value!r} is not a positive number"}


def test_name_count_must_match_fd_count(sockets: list[socket.socket]) -> None:
    env = {"LISTEN_PID": "self", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "only-one"}
    found = inherit([s.fileno() for s in sockets[:2]], env)
    assert found == {
        "error": "socket activation: LISTEN_FDNAMES='only-one' names 1 fds but LISTEN_FDS=2"
    }


def test_container_environment_tells_the_payload_it_is_pid_1() -> None:
    fds = ActivationFds(fds=(3, 4), names=("http", "https"))
    assert container_environment(fds) == {
        "LISTEN_FDS": "2",
        "LISTEN_PID": "1",
        "LISTEN_FDNAMES": "http:https",
    }


def test_no_sockets_add_no_environment_and_no_runtime_options() -> None:
    assert container_environment(ActivationFds()) == {}
    assert runtime_preserve_fds_args(ActivationFds()) == []


def test_runtime_preserves_exactly_the_passed_count() -> None:
    fds = ActivationFds(fds=(3, 4, 5), names=("a", "b", "c"))
    assert runtime_preserve_fds_args(fds) == [
        "--runtime-opt",
        "--preserve-fds",
        "--runtime-opt",
        "3",
    ]


def test_conmon_never_sees_activation_or_notify_variables() -> None:
    environ = {
        "PATH": "/usr/bin",
        "LISTEN_PID": "7",
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "x",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "1000",
        "WATCHDOG_PID": "7",
        "INVOCATION_ID": "abc",
    }
    assert environment_for_conmon(environ) == {"PATH": "/usr/bin", "INVOCATION_ID": "abc"}

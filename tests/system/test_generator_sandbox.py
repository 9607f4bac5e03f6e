"""The generator inside a real systemd (spec §2), and the escaping round trip through systemd.

Definitions go to /etc/podunit in the shared sandbox, the generator is installed
with scripts/install-generator, `systemctl daemon-reload` runs it, and systemd's
own view of the units (`systemctl show`, `list-sockets`, D-Bus) is checked.
The round trip renders arbitrary strings as Exec arguments and Environment=
values, lets systemd parse and execute them, and compares what the process got.
Everything created is removed again (files, generator, daemon-reload).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.sandbox import Sandbox
from toolkit.unitgen.escape import command_line, environment_assignment

pytestmark = pytest.mark.system

PREFIX = "gentest"
DEFINITION = f"/etc/podunit/{PREFIX}.yaml"
BROKEN = f"/etc/podunit/{PREFIX}-broken.yaml"
COMPOSE = f"/etc/podunit/{PREFIX}-compose.yaml"
DEFINITIONS = f"""\
containers:
  {PREFIX}-web:
    image: docker.io/library/nginx:1.27
    stop_timeout: 5s
    restart: on-failure
    reload: {{command: ["/bin/sh", "-c", "echo '100% $HOME'; kill -HUP 1"]}}
    resources: {{memory: 64M, cpus: 0.5, pids: 50}}
    service: {{TimeoutStartSec: 77}}
  {PREFIX}-echo:
    rootfs: /srv/echo
    sockets:
      - {{listen: "127.0.0.1:7781", name: echo}}
      - {{listen: "/run/{PREFIX}-echo.sock", name: echo}}
  {PREFIX}-worker@:
    rootfs: /srv/worker
    notify: ignore
    install: {{}}
"""
COMPOSE_FILE = f"""\
name: {PREFIX}
services:
  cache:
    image: docker.io/library/redis:7
    stop_grace_period: 3s
"""
BROKEN_FILE = f"""\
containers:
  {PREFIX}-broken:
    image: x
    stop_timeout: forever
"""


def show(sandbox: Sandbox, unit: str, *properties: str) -> dict[str, str]:
    result = sandbox.run(["systemctl", "show", unit, "-p", ",".join(properties)])
    found: dict[str, str] = {}
    for line in result.stdout.decode().splitlines():  # repeated properties (Listen=) joined
        key, _, value = line.partition("=")
        found[key] = f"{found[key]}\n{value}" if key in found else value
    return found


@pytest.fixture(scope="module")
def generated(sandbox: Sandbox, repo_root: object) -> Iterator[Sandbox]:
    sandbox.write(DEFINITION, DEFINITIONS)
    sandbox.write(COMPOSE, COMPOSE_FILE)
    sandbox.write(BROKEN, BROKEN_FILE)
    sandbox.run([f"{repo_root}/scripts/install-generator"])
    try:
        sandbox.run(["systemctl", "daemon-reload"])
        yield sandbox
    finally:
        sandbox.run(["systemctl", "stop", f"{PREFIX}-echo.socket"], check=False)
        sandbox.run(["rm", "-f", DEFINITION, COMPOSE, BROKEN])
        sandbox.run([f"{repo_root}/scripts/install-generator", "--uninstall"])
        sandbox.run(["systemctl", "daemon-reload"])


def test_generated_service_properties(generated: Sandbox, repo_root: object) -> None:
    podunit = f"{repo_root}/bin/podunit"  # the launcher (generator.podunit_executable)
    props = show(
        generated, f"{PREFIX}-web.service",
        "LoadState", "Type", "NotifyAccess", "KillMode", "Delegate", "SourcePath", "FragmentPath",
        "SyslogIdentifier", "Restart", "TimeoutStopUSec", "TimeoutStartUSec", "MemoryMax",
        "CPUQuotaPerSecUSec", "TasksMax", "ExecStart", "ExecStop", "ExecStopPost", "ExecReload",
        "WantedBy",
    )  # fmt: skip
    assert props["LoadState"] == "loaded"
    assert props["FragmentPath"] == f"/run/systemd/generator/{PREFIX}-web.service"
    assert props["SourcePath"] == DEFINITION
    assert (props["Type"], props["NotifyAccess"], props["KillMode"], props["Delegate"]) == (
        "notify", "all", "mixed", "yes",
    )  # fmt: skip
    assert props["SyslogIdentifier"] == f"{PREFIX}-web"
    assert props["Restart"] == "on-failure"
    assert props["TimeoutStopUSec"] == "35s"
    assert props["TimeoutStartUSec"] == "1min 17s"
    assert props["MemoryMax"] == str(64 << 20)
    assert props["CPUQuotaPerSecUSec"] == "500ms"
    assert props["TasksMax"] == "50"
    plan = f"/run/systemd/generator/podunit/{PREFIX}-web.json"
    assert f"argv[]={podunit} run --plan {plan} {PREFIX}-web ;" in props["ExecStart"]
    assert generated.run(["test", "-s", plan], check=False).returncode == 0
    assert f"argv[]={podunit} stop -t 5 {PREFIX}-web ;" in props["ExecStop"]
    assert f"argv[]={podunit} rm -f {PREFIX}-web ; ignore_errors=yes" in props["ExecStopPost"]
    # D-Bus shows argv before $-substitution, so `$$` is still doubled here.
    assert (
        f"exec {PREFIX}-web -- /bin/sh -c echo '100% $$HOME'; kill -HUP 1 ;" in props["ExecReload"]
    )
    assert props["WantedBy"] == "multi-user.target"


def test_socket_unit_is_wanted_by_sockets_target_and_listens(generated: Sandbox) -> None:
    socket = f"{PREFIX}-echo.socket"
    props = show(
        generated, socket, "LoadState", "Listen", "FileDescriptorName", "WantedBy", "Triggers"
    )
    assert props["LoadState"] == "loaded"
    assert "127.0.0.1:7781 (Stream)" in props["Listen"]
    assert f"/run/{PREFIX}-echo.sock (Stream)" in props["Listen"]
    assert props["FileDescriptorName"] == "echo"
    assert props["WantedBy"] == "sockets.target"
    assert props["Triggers"] == f"{PREFIX}-echo.service"
    service = show(generated, f"{PREFIX}-echo.service", "Requires", "After", "WantedBy")
    assert socket in service["Requires"].split() and socket in service["After"].split()
    assert service["WantedBy"] == ""  # with sockets only the socket is installed
    # What boot does: sockets.target pulls in the generated Wants= symlink.
    generated.run(["systemctl", "start", "sockets.target"])
    listing = generated.run(["systemctl", "list-sockets", "--no-legend", "--full"]).stdout.decode()
    ours = [line.split() for line in listing.splitlines() if socket in line]
    assert sorted(fields[0] for fields in ours) == [f"/run/{PREFIX}-echo.sock", "127.0.0.1:7781"]


def test_template_instances_get_their_name(generated: Sandbox, repo_root: object) -> None:
    props = show(
        generated, f"{PREFIX}-worker@a-b.service", "LoadState", "Type", "PIDFile", "ExecStart"
    )
    assert props["LoadState"] == "loaded"
    assert props["Type"] == "forking"
    assert props["PIDFile"] == f"/run/podunit/pidfiles/{PREFIX}-worker@a-b.pid"
    plan = f"/run/systemd/generator/podunit/{PREFIX}-worker@.json"
    assert (
        f"argv[]={repo_root}/bin/podunit run --plan {plan} {PREFIX}-worker@a-b ;"
        in props["ExecStart"]
    )
    # %i is the instance exactly as in the unit name: the container is named like its unit.
    escaped = show(generated, f"{PREFIX}-worker@a\\x2db.service", "ExecStart")
    assert f"@.json {PREFIX}-worker@a\\x2db ;" in escaped["ExecStart"]


def test_compose_file_is_generated(generated: Sandbox) -> None:
    """Project `gentest`, service `cache`: unit gentest-cache.service, part of the project's
    target, which multi-user.target wants."""
    props = show(generated, f"{PREFIX}-cache.service", "LoadState", "SourcePath", "TimeoutStopUSec")
    assert props == {"LoadState": "loaded", "SourcePath": COMPOSE, "TimeoutStopUSec": "33s"}
    target = show(generated, f"{PREFIX}-project.target", "LoadState", "Wants", "WantedBy")
    assert target["LoadState"] == "loaded"
    assert target["Wants"] == f"{PREFIX}-cache.service"
    assert "multi-user.target" in target["WantedBy"].split()
    part_of = show(generated, f"{PREFIX}-cache.service", "PartOf")["PartOf"]
    assert part_of == f"{PREFIX}-project.target"


def test_broken_definition_is_skipped_and_reported_with_its_location(
    generated: Sandbox, repo_root: object
) -> None:
    props = show(generated, f"{PREFIX}-broken.service", "LoadState")
    assert props["LoadState"] == "not-found"
    # systemd 252 reports the exit status; the message itself goes to /dev/kmsg, which
    # systemd-nspawn does not provide, or to stderr, which 252 does not collect.
    journal = generated.run(["journalctl", "-b", "-o", "cat", "--no-pager"]).stdout.decode()
    assert "system-generators/podunit-generator failed with exit status 1." in journal
    manual = generated.run([f"{repo_root}/generators/podunit-generator"], check=False)
    assert manual.returncode == 1
    assert f"{BROKEN}:4:19: invalid duration 'forever'" in manual.stderr.decode()
    assert f"---{PREFIX}-web.service---" in manual.stdout.decode()


def test_user_generator_in_a_user_manager(generated: Sandbox, repo_root: object) -> None:
    """podunit-user-generator runs in root's user manager and reads /etc/podunit/users/0."""
    definition = f"/etc/podunit/users/0/{PREFIX}-user.yaml"
    generated.write(definition, f"containers:\n  {PREFIX}-user:\n    image: x\n")
    user_env = {"XDG_RUNTIME_DIR": "/run/user/0"}
    try:
        generated.run(["systemctl", "start", "user@0.service"], timeout=60)
        result = generated.run(
            [
                "systemctl",
                "--user",
                "show",
                f"{PREFIX}-user.service",
                "-p",
                "LoadState,SourcePath,ExecStart,WantedBy",
            ],
            env=user_env,
        )
        props = dict(line.partition("=")[::2] for line in result.stdout.decode().splitlines())
        assert props["LoadState"] == "loaded"
        assert props["SourcePath"] == definition
        assert props["WantedBy"] == "default.target"  # a user manager has no multi-user.target
        # The system manager does not make the user's file a system service (issue 15 item 3).
        generated.run(["systemctl", "daemon-reload"])
        system = show(generated, f"{PREFIX}-user.service", "LoadState")
        assert system["LoadState"] == "not-found"
        plan = f"/run/user/0/systemd/generator/podunit/{PREFIX}-user.json"
        assert (
            f"argv[]={repo_root}/bin/podunit --user run --plan {plan} {PREFIX}-user ;"
            in props["ExecStart"]
        )
    finally:
        generated.run(["systemctl", "stop", "user@0.service"], check=False, timeout=60)
        generated.run(["rm", "-rf", "/etc/podunit/users/0"])


# --- escaping round trip through systemd's parser and exec ------------------------------------

TRICKY = [
    ";", "", " ", "$", "$$", "${HOME}", "$HOME", "%", "%%", "%i", "%n", "\\", "\\;", '"', "'",
    "\\x41", "\\n", "a b", "#", "=", "-", "@", "\u0085", "\u00a0", "\u2028", "ü", "😀", "{}",
]  # fmt: skip
BAD = set(map(chr, range(32))) | {"\x7f"} | {chr(c) for c in range(0xFDD0, 0xFDF0)}
_characters = st.characters(
    blacklist_categories=["Cs"],
    blacklist_characters="".join(BAD) + "\ufffe\uffff",
).filter(lambda c: (ord(c) & 0xFFFE) != 0xFFFE)
_text = st.lists(
    st.one_of(st.sampled_from(TRICKY), st.text(_characters, max_size=6)), max_size=4
).map("".join)
_commands = st.lists(st.lists(_text, max_size=5), min_size=1, max_size=10)
_environment = st.lists(_text, max_size=8)
DUMP = (  # one line: unit files cannot hold newlines
    "import json, os, sys; env = {k: v for k, v in os.environ.items() if k.startswith('RT_')}; "
    "open(sys.argv[1], 'a').write(json.dumps([sys.argv[2:], env]) + '\\n')"
)


class RoundTrip:
    counter = 0


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(commands=_commands, env_values=_environment)
def test_exec_words_and_environment_reach_the_process_unchanged(
    sandbox: Sandbox, commands: list[list[str]], env_values: list[str]
) -> None:
    """Rendered with unitgen.escape, parsed and executed by systemd 252: bytes in == bytes out."""
    RoundTrip.counter += 1
    name = f"{PREFIX}-roundtrip-{RoundTrip.counter}"
    output = f"/run/{name}.jsonl"
    environment = {f"RT_{index}": value for index, value in enumerate(env_values)}
    lines = ["[Service]", "Type=oneshot"]
    lines += [f"Environment={environment_assignment(k, v)}" for k, v in environment.items()]
    lines += [
        "ExecStart=" + command_line(["/usr/bin/python3", "-I", "-S", "-c", DUMP, output, *words])
        for words in commands
    ]
    unit = f"/run/systemd/system/{name}.service"
    sandbox.write(unit, "\n".join(lines) + "\n")
    try:
        # A unit name systemd has never seen is loaded from disk on demand: no daemon-reload.
        result = sandbox.run(["systemctl", "start", f"{name}.service"], check=False)
        assert result.returncode == 0, result.stderr.decode()
        records = [json.loads(line) for line in sandbox.read(output).decode().splitlines()]
        assert records == [[words, environment] for words in commands]
        dbus = sandbox.run([
            "busctl", "get-property", "--json=short", "org.freedesktop.systemd1",
            f"/org/freedesktop/systemd1/unit/{bus_path(name + '.service')}",
            "org.freedesktop.systemd1.Service", "Environment",
        ])  # fmt: skip
        assert json.loads(dbus.stdout)["data"] == [f"{k}={v}" for k, v in environment.items()]
    finally:
        sandbox.run(["rm", "-f", unit, output])


def bus_path(unit: str) -> str:
    """sd_bus_path_encode(): every byte outside [A-Za-z0-9] becomes _XX."""
    keep = set(string.ascii_letters + string.digits)
    return "".join(c if c in keep else "".join(f"_{b:02x}" for b in c.encode()) for c in unit)


def test_roundtrip_cleanup(sandbox: Sandbox) -> None:
    """After the round trip: its units are gone from disk and from systemd's memory."""
    sandbox.run(["systemctl", "daemon-reload"])
    listing = sandbox.run(
        ["systemctl", "list-units", "--all", "--no-legend", f"{PREFIX}-roundtrip-*"]
    )
    assert listing.stdout.decode().strip() == ""

"""config.json generation (toolkit.runtime.oci): schema validity and the defaults that matter."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from toolkit.definitions import logdrivers
from toolkit.definitions.model import (
    Container,
    Mount,
    MountType,
    Ulimit,
)
from toolkit.errors import CannotInvoke, CommandNotFoundInContainer, Location, PodunitError
from toolkit.runtime import conmon, oci

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "data" / "oci-runtime-spec"  # vendored
CID = "ab" * 32
HARD = {"RLIMIT_NOFILE": 20000, "RLIMIT_NPROC": -1, "RLIMIT_CORE": 0}


def _validator() -> jsonschema.Draft4Validator:
    resources = []
    for path in SCHEMA_DIR.glob("*.json"):
        document = json.loads(path.read_text())
        resources.append(
            (path.name, Resource.from_contents(document, default_specification=DRAFT4))
        )
    registry: Registry[Any] = Registry().with_resources(resources)
    schema = json.loads((SCHEMA_DIR / "config-schema.json").read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def container(**overrides: Any) -> Container:
    values: dict[str, Any] = {
        "name": "web",
        "source": Location("/etc/podunit/web.yaml", 1, 1),
        "rootfs": "/srv/rootfs",
        "command": ("sh", "-c", "echo hi"),
    }
    values.update(overrides)
    return Container(**values)


def spec_of(c: Container, **inputs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"container_id": CID, "rootfs": "/srv/rootfs", "hard_limits": HARD}
    values.update(inputs)
    return oci.build_spec(c, oci.SpecInputs(**values))


VARIED = [
    container(),
    container(network="host", read_only=True, entrypoint=("/init",), command=("--flag",)),
    container(
        privileged=True,
        hostname="box",
        environment=(("A", "1"), ("PATH", "/custom")),
        working_dir="/srv",
        mounts=(
            Mount(MountType.BIND, "/data", "/srv/data", read_only=True),
            Mount(MountType.TMPFS, "/tmp", size=64 << 20),
        ),
        sysctls=(("net.ipv4.ip_forward", "1"),),
        annotations=(("org.example/key", "value"),),
        ulimits=(Ulimit("nofile", 1024, 999999),),
        seccomp="unconfined",
    ),
    container(cap_add=("CAP_NET_ADMIN",), cap_drop=("CAP_CHOWN",), no_new_privileges=False),
    container(cap_drop=("ALL",), network="none", stop_timeout=timedelta(seconds=3)),
]


@pytest.mark.parametrize("c", VARIED, ids=lambda c: str(id(c)))
def test_generated_specs_validate_against_the_runtime_spec_schema(c: Container) -> None:
    devices = (oci.DeviceNode("/dev/fuse", "c", 10, 229),)
    extra = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}
    spec = spec_of(c, devices=devices, extra_env=extra, cgroups_path="/podunit/x", tty=True)
    errors = sorted(_validator().iter_errors(spec), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_an_invalid_spec_is_rejected_by_the_validator() -> None:
    spec = spec_of(container())
    spec["process"]["user"]["uid"] = "root"
    assert list(_validator().iter_errors(spec))


def test_process_defaults() -> None:
    spec = spec_of(container(environment=(("FOO", "bar"),)))
    process = spec["process"]
    assert process["args"] == ["sh", "-c", "echo hi"]
    assert process["noNewPrivileges"] is True
    assert process["terminal"] is False
    assert process["cwd"] == "/"
    env = dict(item.split("=", 1) for item in process["env"])
    assert env["PATH"] == oci.DEFAULT_PATH
    assert env["FOO"] == "bar"
    assert env["HOSTNAME"] == CID[:12] == spec["hostname"]
    assert "TERM" not in env
    caps = process["capabilities"]
    assert caps["bounding"] == list(oci.DEFAULT_CAPABILITIES)
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert caps["inheritable"] == caps["ambient"] == []


def test_environment_order_files_then_definition_then_podunit() -> None:
    spec = spec_of(
        container(environment=(("A", "definition"),)),
        env_file_vars=(("A", "file"), ("B", "file")),
        extra_env={"NOTIFY_SOCKET": "/run/notify/notify.sock"},
        tty=True,
    )
    env = dict(item.split("=", 1) for item in spec["process"]["env"])
    assert env["A"] == "definition" and env["B"] == "file"
    assert env["NOTIFY_SOCKET"] == "/run/notify/notify.sock"
    assert env["TERM"] == "xterm"


def test_rlimits_are_clamped_to_the_hard_limits() -> None:
    spec = spec_of(container(ulimits=(Ulimit("core", 100, 200), Ulimit("nofile", 50000, 60000))))
    limits = {r["type"]: (r["soft"], r["hard"]) for r in spec["process"]["rlimits"]}
    assert limits["RLIMIT_NOFILE"] == (20000, 20000)
    assert limits["RLIMIT_CORE"] == (0, 0)
    assert limits["RLIMIT_NPROC"] == (4194304, 4194304)  # hard limit unlimited (-1)


def test_unknown_ulimit_and_capability_are_errors() -> None:
    with pytest.raises(PodunitError, match="ulimit 'bogus'"):
        spec_of(container(ulimits=(Ulimit("bogus", 1, 1),)))
    with pytest.raises(PodunitError, match="CAP_FLY"):
        spec_of(container(cap_add=("CAP_FLY",)))


def test_capabilities_add_drop_and_privileged() -> None:
    caps = spec_of(container(cap_add=("CAP_NET_ADMIN",), cap_drop=("CAP_KILL",)))["process"][
        "capabilities"
    ]["bounding"]
    assert "CAP_NET_ADMIN" in caps and "CAP_KILL" not in caps and "CAP_CHOWN" in caps
    dropped = spec_of(container(cap_drop=("ALL",), cap_add=("CAP_CHOWN",)))
    assert dropped["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]
    held = ("CAP_CHOWN", "CAP_SYS_ADMIN")
    privileged = spec_of(container(privileged=True), held_capabilities=held)
    assert privileged["process"]["capabilities"]["bounding"] == list(held)
    assert privileged["process"]["noNewPrivileges"] is False
    assert "maskedPaths" not in privileged["linux"]
    assert "seccomp" not in privileged["linux"]


def test_namespaces_mounts_and_paths() -> None:
    private = spec_of(container())
    types = [ns["type"] for ns in private["linux"]["namespaces"]]
    assert sorted(types) == ["cgroup", "ipc", "mount", "network", "pid", "uts"]
    assert set(oci.MASKED_PATHS) == set(private["linux"]["maskedPaths"])
    assert "/proc/kcore" in private["linux"]["maskedPaths"]
    assert "/proc/sys" in private["linux"]["readonlyPaths"]
    mounts = {m["destination"]: m for m in private["mounts"]}
    assert {
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    } <= set(mounts)
    assert mounts["/sys"]["type"] == "sysfs" and "ro" in mounts["/sys"]["options"]
    assert "ro" in mounts["/sys/fs/cgroup"]["options"]
    assert "pids" not in private["linux"]["resources"]  # no default pids limit
    host = spec_of(container(network="host"))
    host_types = [ns["type"] for ns in host["linux"]["namespaces"]]
    assert "network" not in host_types and "uts" not in host_types
    assert {m["destination"]: m for m in host["mounts"]}["/sys"]["type"] == "bind"
    none = spec_of(container(network="none"))
    assert "network" in [ns["type"] for ns in none["linux"]["namespaces"]]


def test_volumes_and_tmpfs() -> None:
    spec = spec_of(
        container(
            read_only=True,
            mounts=(
                Mount(MountType.BIND, "/data", "/srv/data", read_only=True, options=("nocopy",)),
                Mount(MountType.BIND, "/rw", "/srv/rw"),
                Mount(MountType.TMPFS, "/run", size=1 << 20),
            ),
        )
    )
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/data"] == {
        "destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"],
    }  # fmt: skip
    assert "rw" in mounts["/rw"]["options"]
    assert mounts["/run"]["type"] == "tmpfs" and "size=1048576" in mounts["/run"]["options"]
    assert spec["root"] == {"path": "/srv/rootfs", "readonly": True}
    with pytest.raises(PodunitError, match="named volume"):
        spec_of(container(mounts=(Mount(MountType.VOLUME, "/v", "myvolume"),)))


def test_seccomp_default_profile_denies_dangerous_calls() -> None:
    seccomp = spec_of(container())["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = seccomp["syscalls"][0]["names"]
    assert "kexec_load" in denied and "read" not in denied
    profile = {"defaultAction": "SCMP_ACT_ERRNO"}
    custom = spec_of(container(seccomp="/etc/profile.json"), seccomp_profile=profile)
    assert custom["linux"]["seccomp"] == profile


def test_devices_are_created_and_allowed() -> None:
    node = oci.DeviceNode("/dev/fuse", "c", 10, 229, access="rw")
    linux = spec_of(container(), devices=(node,))["linux"]
    assert linux["devices"][0]["path"] == "/dev/fuse"
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"} in linux[
        "resources"
    ]["devices"]


def test_no_command_is_an_error() -> None:
    with pytest.raises(PodunitError, match="no command"):
        spec_of(container(command=None))


PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:\napp:x:1001:\n"


@pytest.mark.parametrize(
    ("user", "groups", "expected"),
    [
        (None, (), oci.ResolvedUser(0, 0)),
        ("app", (), oci.ResolvedUser(1000, 1001)),
        ("1000", (), oci.ResolvedUser(1000, 1001)),
        ("4242", (), oci.ResolvedUser(4242, 0)),
        ("app:staff", ("root", "7"), oci.ResolvedUser(1000, 50, (0, 7))),
        ("0:50", (), oci.ResolvedUser(0, 50)),
    ],
)
def test_resolve_user(
    user: str | None, groups: tuple[str, ...], expected: oci.ResolvedUser
) -> None:
    assert oci.resolve_user(user, groups, PASSWD, GROUP) == expected


def test_resolve_user_unknown_names() -> None:
    with pytest.raises(PodunitError, match=r"user 'ghost' not found.*passwd"):
        oci.resolve_user("ghost", (), PASSWD, GROUP)
    with pytest.raises(PodunitError, match=r"group 'ghosts' not found.*group"):
        oci.resolve_user("app:ghosts", (), PASSWD, GROUP)


def test_env_files_and_devices_parsing() -> None:
    assert oci.parse_env_file("# c\n\nA=1\nB= two = 2 \n", "f") == [("A", "1"), ("B", " two = 2")]
    with pytest.raises(PodunitError, match="f:2: not a KEY=VALUE line"):
        oci.parse_env_file("A=1\nnonsense\n", "f")
    assert oci.parse_device("/dev/fuse") == ("/dev/fuse", "/dev/fuse", "rwm")
    assert oci.parse_device("/dev/a:/dev/b:r") == ("/dev/a", "/dev/b", "r")
    for bad in ("dev/x", "/dev/a:/dev/b:rx", "/a:/b:r:w"):
        with pytest.raises(PodunitError):
            oci.parse_device(bad)


def test_held_capabilities_from_status() -> None:
    assert oci.held_capabilities("CapBnd:\t0000000000000003\n") == (
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
    )


# --- conmon's command line and messages (pure parts of toolkit.runtime.conmon) ---


def conmon_options(**overrides: Any) -> conmon.ConmonOptions:
    values: dict[str, Any] = {
        "container_id": CID,
        "name": "web",
        "runtime": "/usr/sbin/runc",
        "bundle_dir": Path("/run/podunit/containers/x"),
        "exit_dir": Path("/run/podunit/exits"),
        "persist_dir": Path("/run/podunit/containers/x"),
        "socket_dir": Path("/run/podunit/sockets"),
        "container_pidfile": Path("/run/podunit/containers/x/pidfile"),
        "conmon_pidfile": Path("/run/podunit/containers/x/conmon.pid"),
    }
    values.update(overrides)
    return conmon.ConmonOptions(**values)


def test_conmon_argv_always_sets_the_directories() -> None:
    argv = conmon.conmon_argv(conmon_options(preserve_fds=2, log_tag="web"))
    joined = " ".join(argv)
    assert argv[:3] == ["conmon", "--api-version", "1"]
    for flag in ("--exit-dir", "-0", "--socket-dir-path", "-p", "-P", "-b", "-r", "-c", "-u", "-n"):
        assert flag in argv
    assert "-l journald" in joined and "--log-tag web" in joined
    assert "--runtime-opt --preserve-fds --runtime-opt 2" in joined
    assert "-i" not in argv and "-t" not in argv and "-e" not in argv


def test_conmon_log_argument_of_each_driver() -> None:
    assert conmon.log_argument(logdrivers.JOURNALD, None) == "journald"
    assert conmon.log_argument(logdrivers.NONE, None) == "none"
    assert conmon.log_argument(logdrivers.PASSTHROUGH, None) == "passthrough"
    assert conmon.log_argument(logdrivers.K8S_FILE, "/l.log") == "k8s-file:/l.log"


def test_conmon_argv_variants() -> None:
    k8s = conmon.conmon_argv(
        conmon_options(log_driver=logdrivers.K8S_FILE, log_path=Path("/l.log"), log_size_max=1024,
                       stdin=True, exit_command=("/bin/podunit", "cleanup", CID),
                       runtime_log=Path("/b/runtime.log"))
    )  # fmt: skip
    joined = " ".join(k8s)
    assert "-l k8s-file:/l.log" in joined and "--log-size-max 1024" in joined
    assert "--exit-command /bin/podunit --exit-command-arg cleanup" in joined
    assert "--runtime-arg --log --runtime-arg /b/runtime.log" in joined
    assert "-i" in k8s
    tty = conmon.conmon_argv(conmon_options(tty=True, stdin=True))
    assert "-t" in tty and "-i" not in tty
    exec_argv = conmon.conmon_argv(
        conmon_options(exec_process_spec=Path("/p.json"), exec_attach=True, exec_session_id="s1")
    )
    assert "-e --exec-process-spec /p.json --exec-attach" in " ".join(exec_argv)
    assert exec_argv[exec_argv.index("-u") + 1] == "s1"
    with pytest.raises(PodunitError, match="log path"):
        conmon.conmon_argv(conmon_options(log_driver=logdrivers.K8S_FILE))
    restore = conmon.conmon_argv(conmon_options(restore_path=Path("/var/lib/podunit/ckpt")))
    assert restore[restore.index("--restore") + 1] == "/var/lib/podunit/ckpt"
    assert "--restore" not in conmon.conmon_argv(conmon_options())


def test_fd_table_places_preserved_fds_then_pipes_then_extras() -> None:
    assert conmon.fd_table([10, 11], 20, 21, [30]) == {3: 10, 4: 11, 5: 20, 6: 21, 7: 30}
    assert conmon.fd_table([], 20, 21, []) == {3: 20, 4: 21}


def test_sync_records_and_runtime_errors() -> None:
    data = b'{"data": 1234}\n{"data": -1, "message": "boom"}\nnot json\n{"da'
    assert conmon.parse_sync_records(data) == [{"data": 1234}, {"data": -1, "message": "boom"}]
    log = '{"level":"warning","msg":"w"}\n{"level":"error","msg":"runc create failed: x"}\n'
    assert conmon.last_runtime_error(log) == "runc create failed: x"
    assert conmon.last_runtime_error("garbage\n") is None
    runc = conmon.classify_runtime_error(
        'runc create failed: exec: "nosuch": executable file not found in $PATH', "/usr/sbin/runc"
    )
    assert isinstance(runc, CommandNotFoundInContainer) and runc.exit_code == 127
    crun = conmon.classify_runtime_error("executable file `x` not found in $PATH", "/usr/bin/crun")
    assert isinstance(crun, CommandNotFoundInContainer)
    denied = conmon.classify_runtime_error('exec: "/etc/passwd": permission denied', "runc")
    assert isinstance(denied, CannotInvoke) and denied.exit_code == 126
    assert isinstance(conmon.classify_runtime_error("open executable: Permission denied", "crun"),
                      CannotInvoke)  # fmt: skip
    other = conmon.classify_runtime_error("cgroup: permission denied", "runc")
    assert type(other) is conmon.RuntimeFailed and other.exit_code == 125
    assert str(other) == "runc: cgroup: permission denied"


def test_security_opts_fold_into_the_spec() -> None:
    spec = spec_of(container(security_opt=("no-new-privileges:false", "seccomp=unconfined")))
    assert spec["process"]["noNewPrivileges"] is False
    assert "seccomp" not in spec["linux"]
    noop = spec_of(container(security_opt=("label=disable", "apparmor=unconfined")))
    assert noop["process"]["noNewPrivileges"] is True and "seccomp" in noop["linux"]
    for bad in ("label=type:foo", "seccomp=relative.json", "unmask=ALL", "bogus"):
        with pytest.raises(PodunitError, match="unsupported security_opt"):
            spec_of(container(security_opt=(bad,)))


def test_init_wraps_the_command_with_a_bind_mounted_init() -> None:
    spec = spec_of(container(init=True), init_binary="/usr/bin/catatonit")
    assert spec["process"]["args"] == ["/run/podunit-init", "--", "sh", "-c", "echo hi"]
    mount = {m["destination"]: m for m in spec["mounts"]}["/run/podunit-init"]
    assert mount["source"] == "/usr/bin/catatonit" and "ro" in mount["options"]
    assert not list(_validator().iter_errors(spec))
    with pytest.raises(PodunitError, match="catatonit"):
        spec_of(container(init=True))


def test_find_init_binary(tmp_path: Path) -> None:
    present = tmp_path / "tini"
    present.write_text("#!/bin/sh\n")
    present.chmod(0o755)
    assert oci.find_init_binary([str(tmp_path / "missing"), str(present)]) == str(present)
    assert oci.find_init_binary([str(tmp_path / "missing")]) is None


def test_rootless_specs_map_root_to_the_caller() -> None:
    spec = spec_of(container(), rootless_ids=(1001, 1002))
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1001, "size": 1}]
    assert spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 1002, "size": 1}]
    devpts = {m["destination"]: m for m in spec["mounts"]}["/dev/pts"]
    assert not [o for o in devpts["options"] if o.startswith("gid=")]
    assert not list(_validator().iter_errors(spec))
    assert "uidMappings" not in spec_of(container())["linux"]
    with pytest.raises(PodunitError, match="rootless container runs as root only"):
        spec_of(container(), rootless_ids=(1001, 1002), user=oci.ResolvedUser(1000, 1000))

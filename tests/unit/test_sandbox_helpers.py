"""The pure parts of tests/support/sandbox.py: names, masking, /proc parsing, command lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.sandbox import (
    ALWAYS_MASKED,
    INSIDE_PATH,
    NEVER_MASKED,
    REPO_ROOT,
    Sandbox,
    cgroup_parents,
    inside_env,
    mountpoints_under,
    new_name,
    nspawn_argv,
    units_to_mask,
    valid_name,
)
from toolkit.errors import SandboxError
from toolkit.proc import proc_stat_fields

HYBRID_CGROUP = """9:name=systemd:/
4:memory:/process_api/87aee4
1:cpu:/
0::/
"""
HYBRID_MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
36 23 0:30 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
37 23 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
38 23 0:32 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
"""


@pytest.mark.parametrize("name", ["podunit-sandbox", "pu-123-abcdef", "a", "a.b_c", "x" * 64])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "-x", ".hidden", "a..b", "x" * 65, "a b"])
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)
    with pytest.raises(SandboxError, match="invalid sandbox name"):
        Sandbox(name=name or "\0")


def test_new_names_are_unique_valid_and_carry_the_pid() -> None:
    names = {new_name() for _ in range(50)}
    assert len(names) == 50
    assert all(valid_name(n) and n.startswith(f"pu-{os.getpid()}-") for n in names)


def test_units_to_mask_takes_host_units_and_templates_but_keeps_the_bus_and_journal() -> None:
    masked = units_to_mask(
        ["postgresql.service", "getty@tty1.service", "dbus.service", "remote-fs.target", "x.timer"]
    )
    assert {"postgresql.service", "getty@tty1.service", "getty@.service", "x.timer"} <= set(masked)
    assert "remote-fs.target" not in masked  # targets are never masked
    assert not set(masked) & NEVER_MASKED
    assert set(ALWAYS_MASKED) - NEVER_MASKED <= set(masked)
    assert masked == sorted(masked)


def test_proc_stat_fields_survive_spaces_and_parentheses_in_the_command_name() -> None:
    fields = ["S", "41"] + ["0"] * 17 + ["987654"] + ["0"] * 10
    stat = "1234 (evil) name) " + " ".join(fields)
    assert proc_stat_fields(stat) == ("S", 41, 987654)


def test_proc_stat_fields_of_this_process() -> None:
    state, ppid, start = proc_stat_fields(Path("/proc/self/stat").read_text())
    assert state == "R" and ppid == os.getppid() and start > 0


def test_cgroup_parents_on_a_hybrid_host() -> None:
    assert cgroup_parents(HYBRID_CGROUP, HYBRID_MOUNTINFO) == [
        Path("/sys/fs/cgroup/systemd"),
        Path("/sys/fs/cgroup/unified"),
    ]


def test_cgroup_parents_below_the_root_and_on_a_pure_v2_host() -> None:
    mountinfo = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    cgroup = "0::/user.slice/session-1.scope\n"
    assert cgroup_parents(cgroup, mountinfo) == [Path("/sys/fs/cgroup/user.slice/session-1.scope")]


def test_cgroup_parents_ignore_cgroups_outside_our_namespace_and_unmounted_hierarchies() -> None:
    assert cgroup_parents("0::/..\n9:name=systemd:/x\n", HYBRID_MOUNTINFO) == [
        Path("/sys/fs/cgroup/systemd/x")
    ]
    assert cgroup_parents("0::/a\n", "27 1 254:0 / / rw - ext4 /dev/vda rw\n") == []


def test_mountpoints_under_lists_deepest_first_and_only_below_the_directory() -> None:
    mountinfo = """\
40 27 0:39 / /var/lib/podunit-sandbox/a/rw rw - tmpfs tmpfs rw
41 27 0:40 / /var/lib/podunit-sandbox/a/root rw - overlay overlay rw
42 41 0:41 / /var/lib/podunit-sandbox/a/root/mnt\\040x rw - tmpfs tmpfs rw
43 27 0:42 / /var/lib/podunit-sandbox/ab/root rw - overlay overlay rw
"""
    points = mountpoints_under(mountinfo, Path("/var/lib/podunit-sandbox/a"))
    assert points[0] == Path("/var/lib/podunit-sandbox/a/root/mnt x")
    assert set(points[1:]) == {
        Path("/var/lib/podunit-sandbox/a/rw"),
        Path("/var/lib/podunit-sandbox/a/root"),
    }


def test_nspawn_argv_boots_with_the_keyring_calls_and_binds() -> None:
    argv = nspawn_argv("sb", Path("/var/lib/podunit-sandbox/sb/root"), ["/work/x", "/a:/b"])
    assert argv[:4] == ["systemd-nspawn", "-q", "-D", "/var/lib/podunit-sandbox/sb/root"]
    assert {"-b", "--register=no", "--keep-unit", "--capability=all"} <= set(argv)
    assert argv[argv.index("-M") + 1] == "sb"
    [filter_option] = [a for a in argv if a.startswith("--system-call-filter=")]
    assert {"@keyring", "keyctl", "add_key", "request_key", "bpf"} <= set(
        filter_option.split("=", 1)[1].split()
    )
    assert argv[-2:] == ["--bind=/work/x", "--bind=/a:/b"]


def test_inside_env_is_clean_with_the_callers_additions_on_top() -> None:
    env = inside_env({"PATH": "/bin", "EXTRA": "1"})
    assert env["PATH"] == "/bin" and env["EXTRA"] == "1" and env["HOME"] == "/root"
    assert inside_env(None)["PATH"] == INSIDE_PATH
    assert "PYTHONPATH" not in inside_env(None)


def test_the_checkout_is_bound_by_default_once() -> None:
    sandbox = Sandbox(binds=[REPO_ROOT, "/srv"])
    assert sandbox.binds == (str(REPO_ROOT), "/srv")
    assert (REPO_ROOT / "pyproject.toml").is_file()


def test_running_inside_a_sandbox_that_is_not_up_is_a_sandbox_error() -> None:
    with pytest.raises(SandboxError, match="not running"):
        Sandbox().run(["true"])

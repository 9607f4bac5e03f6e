"""One bad entry on the search path never stops the others (issue 15 items 2, 3, 14).

Every hostile entry found by the fault probe is put next to a good definition: the
walk and the loader must not raise, must not block or walk the file system, must
report the entry once, located, and must still load the good definition. The real
generator executable is run on all of them at once (as daemon-reload would).
Before the fix: a symlink loop crashed the walk (OSError from DirEntry.is_dir), a
FIFO blocked the generator, /dev/zero exhausted its memory, a link to /proc walked
the whole file system through /proc/PID/root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.definitions import search
from toolkit.definitions.loader import load_all, load_paths, scan_all
from toolkit.unitgen import cache as generator_cache
from toolkit.unitgen.generator import generate

GOOD = "containers:\n  good:\n    rootfs: /srv/good\n"


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError("the walk or a read blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def defs(tmp_path: Path) -> Path:
    directory = tmp_path / "defs"
    directory.mkdir()
    (directory / "good.yaml").write_text(GOOD)
    return directory


def messages(directory: Path) -> tuple[list[str], list[str]]:
    result = load_all([directory], environ={})
    return sorted(result.containers), [str(error) for error in result.errors]


def test_symlink_loop_named_like_a_definition(defs: Path) -> None:
    (defs / "a.yaml").symlink_to("b.yaml")
    (defs / "b.yaml").symlink_to("a.yaml")
    names, errors = messages(defs)
    assert names == ["good"]
    assert errors == [
        f"{defs}/a.yaml:1:1: cannot read: Too many levels of symbolic links",
        f"{defs}/b.yaml:1:1: cannot read: Too many levels of symbolic links",
    ]


def test_symlink_loop_with_another_name(defs: Path) -> None:
    (defs / "loop").symlink_to("loop")
    names, errors = messages(defs)
    assert names == ["good"]
    assert errors == [
        f"{defs}/loop: cannot tell what it is: Too many levels of symbolic links; skipped"
    ]


def test_symlink_to_an_unreadable_target(defs: Path) -> None:
    (defs / "mem.yaml").symlink_to("/proc/self/mem")  # unreadable, even for root
    (defs / "dangling.yaml").symlink_to("/nonexistent/x.yaml")
    names, errors = messages(defs)
    assert names == ["good"]
    assert errors == [
        f"{defs}/dangling.yaml:1:1: cannot read: No such file or directory",
        f"{defs}/mem.yaml:1:1: cannot read: Input/output error",
    ]


@pytest.mark.parametrize("target", ["/proc", "/proc/1", "/sys", "/dev", "/"])
def test_symlink_to_a_kernel_file_system_or_root_is_not_walked(defs: Path, target: str) -> None:
    (defs / "linked").symlink_to(target)
    started = time.monotonic()
    scan = scan_all([defs], environ={})
    assert time.monotonic() - started < 1
    assert [path for path in scan.sources.values()] == [f"{defs}/good.yaml"]
    assert len(scan.inputs) == 3  # defs, good.yaml, the refused link
    names, errors = messages(defs)
    assert names == ["good"]
    assert len(errors) == 1 and errors[0].startswith(f"{defs}/linked: is a symbolic link")
    assert "not searched" in errors[0]


def test_a_fifo_named_like_a_definition_does_not_block(defs: Path) -> None:
    os.mkfifo(defs / "fifo.yaml")
    names, errors = messages(defs)
    assert names == ["good"]
    assert errors == [f"{defs}/fifo.yaml:1:1: cannot read: not a regular file (a FIFO)"]


def test_dev_zero_as_a_definition_and_as_a_dropin(defs: Path) -> None:
    (defs / "zero.yaml").symlink_to("/dev/zero")
    (defs / "other.yaml").write_text("containers:\n  other:\n    rootfs: /srv/other\n")
    (defs / "other.yaml.d").mkdir()
    (defs / "other.yaml.d" / "10-zero.yaml").symlink_to("/dev/zero")
    result = load_all([defs], environ={})
    # A container is never generated without one of its drop-ins (it could hold a limit).
    assert sorted(result.containers) == ["good"]
    assert [(str(error), error.hint) for error in result.errors] == [
        (
            f"{defs}/other.yaml.d/10-zero.yaml:1:1: cannot read: "
            "not a regular file (a character device)",
            f"{defs}/other.yaml is not generated without its drop-ins",
        ),
        (f"{defs}/zero.yaml:1:1: cannot read: not a regular file (a character device)", None),
    ]


def test_a_huge_definition_is_refused_with_the_limit(defs: Path) -> None:
    with open(defs / "huge.yaml", "wb") as file:
        file.truncate(5 << 20)  # sparse: 5 MiB of NULs
    names, errors = messages(defs)
    assert names == ["good"]
    assert errors == [f"{defs}/huge.yaml:1:1: cannot read: larger than the limit of 4 MiB"]


def test_the_walk_has_a_depth_limit(defs: Path) -> None:
    deep = defs
    for level in range(search.MAX_DEPTH + 2):
        deep = deep / f"d{level}"
    deep.mkdir(parents=True)
    (deep / "deep.yaml").write_text("containers:\n  deep:\n    rootfs: /srv\n")
    names, errors = messages(defs)
    assert names == ["good"]
    assert len(errors) == 1 and errors[0].endswith(
        f"more than {search.MAX_DEPTH} directory levels deep: not searched"
    )


def test_validate_paths_report_the_same(defs: Path) -> None:
    os.mkfifo(defs / "fifo.yaml")
    result = load_paths([defs / "fifo.yaml", defs / "good.yaml"])
    assert sorted(result.containers) == ["good"]
    assert [str(error) for error in result.errors] == [
        f"{defs}/fifo.yaml:1:1: cannot read: not a regular file (a FIFO)"
    ]


def test_the_generator_writes_the_good_units_and_logs_every_bad_entry(
    repo_root: Path, tmp_path: Path, defs: Path
) -> None:
    """All of the hostile entries at once, through the real generator executable."""
    (defs / "a.yaml").symlink_to("b.yaml")
    (defs / "b.yaml").symlink_to("a.yaml")
    (defs / "proc").symlink_to("/proc")
    (defs / "mem.yaml").symlink_to("/proc/self/mem")
    os.mkfifo(defs / "fifo.yaml")
    (defs / "zero.yaml").symlink_to("/dev/zero")
    normal = tmp_path / "normal"
    normal.mkdir()
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PODUNIT_")}
    env.update(
        PODUNIT_DEFINITION_DIRS=str(defs),
        PODUNIT_RUN_DIR=str(tmp_path / "run"),
        PODUNIT_KMSG=str(kmsg),
    )
    for _ in range(2):  # cold, then from the generator's cache
        started = time.monotonic()
        result = subprocess.run(
            [str(repo_root / "generators" / "podunit-generator"), str(normal)],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert time.monotonic() - started < 10
        assert result.returncode == 1 and result.stderr == ""
        assert (normal / "good.service").is_file()
        assert (normal / "multi-user.target.wants" / "good.service").is_symlink()
    records = kmsg.read_text().splitlines()
    assert len(records) == 12  # six entries, logged by both runs
    assert all(record.startswith("<3>podunit-generator[") for record in records)
    logged = sorted({record.partition("]: ")[2] for record in records})
    assert [line.partition(": ")[0] for line in logged] == [
        f"{defs}/a.yaml:1:1",
        f"{defs}/b.yaml:1:1",
        f"{defs}/fifo.yaml:1:1",
        f"{defs}/mem.yaml:1:1",
        f"{defs}/proc",
        f"{defs}/zero.yaml:1:1",
    ]


# ---------------------------------------------------------------- the users directory (item 3)


def test_system_search_never_includes_the_users_directory(tmp_path: Path) -> None:
    """/etc/podunit/users/<UID> is the user generator's: in system mode its files neither
    become system services nor hide system definitions of the same name."""
    users = Path(search.USERS_DIR)
    if not os.access(users.parent.parent, os.W_OK):
        pytest.skip(f"needs write access to {users.parent.parent} (run as root)")
    created = [path for path in (users.parent, users, users / "4242") if not path.exists()]
    for path in created:
        path.mkdir()
    try:
        (users / "4242" / "relgen-probe.yaml").write_text(
            "containers:\n  relgen-probe-user:\n    rootfs: /srv/user\n"
        )
        lower = tmp_path / "lower"
        lower.mkdir()
        (lower / "relgen-probe.yaml").write_text(
            "containers:\n  relgen-probe-system:\n    rootfs: /srv/system\n"
        )
        environ = {"PODUNIT_DEFINITION_DIRS": f"{users.parent}:{lower}"}
        rendered, errors = generate(user=False, podunit="/usr/bin/podunit", environ=environ)
        names = [name for name in rendered if name.startswith("relgen-probe")]
        assert names == ["relgen-probe-system"] and errors == []
        # The other direction: the user generator of that uid still finds its file.
        user_scan = search.Scan.of_mode(user=True, environ={})
        user_scan.walk(str(users / "4242"), shadow=True)
        assert list(user_scan.sources) == ["relgen-probe.yaml"]
    finally:
        (users / "4242" / "relgen-probe.yaml").unlink(missing_ok=True)
        for path in reversed(created):
            path.rmdir()


def test_the_users_directory_is_excluded_by_identity_also_through_a_link(tmp_path: Path) -> None:
    users = tmp_path / "users"
    (users / "1000").mkdir(parents=True)
    (users / "1000" / "mine.yaml").write_text(GOOD.replace("good", "mine"))
    top = tmp_path / "top"
    top.mkdir()
    (top / "good.yaml").write_text(GOOD)
    (top / "via-link").symlink_to(users)
    scan = search.Scan(exclude=[str(users)])
    scan.walk(str(top), shadow=True)
    assert list(scan.sources) == ["good.yaml"] and scan.problems == []


# ---------------------------------------------------------------- the run directory (item 14)


def test_the_runtimes_state_in_the_run_directory_is_not_walked(tmp_path: Path) -> None:
    """runc's --root (`/run/podunit/runtime-runc`) changes at every container start;
    walking it made every daemon-reload after a start miss the generator's cache."""
    run = tmp_path / "run"
    state = run / "runtime-runc" / "0123abcd"
    state.mkdir(parents=True)
    (run / "runtime-crun").mkdir()
    (run / "web.yaml").write_text(GOOD)
    environ = {"PODUNIT_RUN_DIR": str(run), "PODUNIT_DEFINITION_DIRS": str(run)}

    def key() -> object:
        scan = scan_all([str(run)], environ=environ)
        return generator_cache.make_key(
            user=False, podunit="/p", dirs=[str(run)], environ=environ, inputs=scan.inputs
        )

    before = key()
    (state / "state.json").write_text("{}")
    (run / "runtime-runc" / "4567ef").mkdir()
    (run / "runtime-crun" / "x.yaml").write_text(GOOD)
    assert key() == before
    walked = [item[1] for item in scan_all([str(run)], environ=environ).inputs]
    assert walked == [str(run), str(run / "web.yaml")]

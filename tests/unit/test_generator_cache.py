"""The generator's per-boot output cache (toolkit/unitgen/cache.py): a hit writes
byte-identical output and the same messages; every change of an input invalidates it;
a corrupt or foreign cache is ignored; the warm path imports no PyYAML.

The generator runs in-process (`generator_main`, as the executables call it) with its
run directory (`PODUNIT_RUN_DIR`) and kernel log (`PODUNIT_KMSG`) in a temporary
directory. Definition files written by a test are brand new, so most tests set
`RACY_NS` to 0 (otherwise their output is never cached, see `test_racy_inputs_*`), and
give changed files a distinct mtime: the clock of file time stamps is coarse.
"""

from __future__ import annotations

import marshal
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from toolkit.unitgen import cache as generator_cache
from toolkit.unitgen.generator import generator_main

WEB = "containers:\n  web:\n    image: docker.io/library/nginx:1.27\n"
DB = "containers:\n  db:\n    image: docker.io/library/postgres:16\n"
BROKEN = "containers:\n  broken:\n    image: x\n    restrat: always\n"
PODUNIT = "/opt/podunit/bin/podunit"


class Setup:
    """Definitions, a run directory and a kernel log under `tmp_path`."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.defs = tmp_path / "defs"
        self.defs.mkdir()
        self.run_dir = tmp_path / "run"
        self.kmsg = tmp_path / "kmsg"
        self.env = {
            "PODUNIT_DEFINITION_DIRS": str(self.defs),
            "PODUNIT_RUN_DIR": str(self.run_dir),
            "PODUNIT_KMSG": str(self.kmsg),
            "HOME": "/root",
        }

    def generate(self, **extra: str) -> tuple[int, dict[str, str], str]:
        """One generator run into an emptied output directory (systemd gives the same
        one every time): status, output, messages."""
        out = self.root / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        self.kmsg.write_text("")
        status = generator_main(
            [str(out)] * 3, user=False, podunit=PODUNIT, environ=self.env | extra
        )
        return status, snapshot(out), strip_pids(self.kmsg.read_text())

    def uncached(self) -> tuple[int, dict[str, str], str]:
        return self.generate(PODUNIT_GENERATOR_CACHE="0")

    def caches(self) -> list[Path]:
        return sorted((self.run_dir / "generator-cache").glob("*.marshal"))

    def cache_identity(self) -> tuple[int, int] | None:
        """The cache file's inode and mtime: a store replaces the file (new inode)."""
        found = self.caches()
        if not found:
            return None
        assert len(found) == 1, found
        status = found[0].stat()
        return status.st_ino, status.st_mtime_ns


def snapshot(directory: Path) -> dict[str, str]:
    """Every file's bytes and every symlink's target under `directory`."""
    found = {}
    for path in sorted(directory.rglob("*")):
        relative = str(path.relative_to(directory))
        if path.is_symlink():
            found[relative] = "-> " + os.readlink(path)
        elif path.is_file():
            found[relative] = path.read_text()
    return found


def strip_pids(log: str) -> str:
    return "\n".join(line.split("]: ", 1)[-1] for line in log.splitlines())


def later(path: Path) -> None:
    """Give `path` an mtime clearly different from any it had (coarse clocks); in the
    past, as a time stamp in the future is never trusted (racy)."""
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns - 5_000_000_000))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.setattr(generator_cache, "RACY_NS", 0)
    return Setup(tmp_path)


def test_a_hit_writes_byte_identical_output(setup: Setup) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    (setup.defs / "db.yaml").write_text(DB.replace("db:", "db:\n    ports: ['5432:5432']"))
    first = setup.generate()
    stored = setup.cache_identity()
    assert stored is not None and first[0] == 0
    second = setup.generate()
    assert setup.cache_identity() == stored  # a hit does not store again
    assert second == first == setup.uncached()
    assert set(first[1]) == {
        "db.service",
        "multi-user.target.wants/db.service",
        "multi-user.target.wants/web.service",
        "podunit/db.json",
        "podunit/web.json",
        "web.service",
        "podunit-pull-docker.io-library-nginx\\x3a1.27.service",
        "podunit-pull-docker.io-library-postgres\\x3a16.service",
    }


def test_error_messages_and_status_are_repeated_on_a_hit(setup: Setup) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    (setup.defs / "broken.yaml").write_text(BROKEN)
    first = setup.generate()
    stored = setup.cache_identity()
    second = setup.generate()
    assert setup.cache_identity() == stored
    assert first == second
    status, output, messages = second
    assert status == 1 and "web.service" in output
    assert (
        messages == f"{setup.defs}/broken.yaml:4:5: unknown key 'restrat' (did you mean 'restart'?)"
    )


def _edit_same_size(setup: Setup) -> None:
    path = setup.defs / "web.yaml"
    path.write_text(WEB.replace("1.27", "1.28"))
    later(path)


def _touch(setup: Setup) -> None:
    later(setup.defs / "web.yaml")


def _replace(setup: Setup) -> None:
    new = setup.root / "new.yaml"
    new.write_text(WEB.replace("nginx", "caddy"))
    os.rename(new, setup.defs / "web.yaml")


def _delete(setup: Setup) -> None:
    (setup.defs / "web.yaml").unlink()


def _add(setup: Setup) -> None:
    (setup.defs / "db.yaml").write_text(DB)


def _add_in_subdirectory(setup: Setup) -> None:
    (setup.defs / "sub" / "db.yaml").write_text(DB)


def _add_dropin(setup: Setup) -> None:
    (setup.defs / "web.yaml.d").mkdir(exist_ok=True)
    (setup.defs / "web.yaml.d" / "20-restart.yaml").write_text(
        "containers:\n  web:\n    restart: always\n"
    )


def _edit_dropin(setup: Setup) -> None:
    path = setup.defs / "web.yaml.d" / "10-mem.yaml"
    path.write_text(path.read_text().replace("64M", "96M"))
    later(path)


def _delete_dropin(setup: Setup) -> None:
    (setup.defs / "web.yaml.d" / "10-mem.yaml").unlink()


CHANGES: dict[str, Callable[[Setup], None]] = {
    "edit (same size)": _edit_same_size,
    "touch": _touch,
    "replace": _replace,
    "delete": _delete,
    "add a file": _add,
    "add a file in a subdirectory": _add_in_subdirectory,
    "add a drop-in": _add_dropin,
    "edit a drop-in": _edit_dropin,
    "delete a drop-in": _delete_dropin,
}


@pytest.mark.parametrize("change", CHANGES)
def test_every_change_of_a_definition_invalidates(setup: Setup, change: str) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    (setup.defs / "sub").mkdir()
    (setup.defs / "web.yaml.d").mkdir()
    (setup.defs / "web.yaml.d" / "10-mem.yaml").write_text(
        "containers:\n  web:\n    resources: {memory: 64M}\n"
    )
    setup.generate()
    stored = setup.cache_identity()
    assert stored is not None
    CHANGES[change](setup)
    after = setup.generate()
    assert setup.cache_identity() != stored  # regenerated and stored again
    assert after == setup.uncached()


def test_environment_and_search_path_are_part_of_the_key(setup: Setup) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    other = setup.root / "other"
    other.mkdir()
    (other / "web.yaml").write_text(WEB.replace("nginx", "httpd"))
    first = setup.generate()
    both = setup.generate(PODUNIT_DEFINITION_DIRS=f"{other}:{setup.defs}")
    assert "httpd" in both[1]["web.service"] and both != first
    assert setup.generate() == first  # each search path has its own cache file
    assert len(setup.caches()) == 2
    home = setup.generate(HOME="/home/someone")  # `~` in volumes resolves against HOME
    assert home[1] == first[1]
    assert len(setup.caches()) == 3


def test_the_podunit_executable_and_the_output_directory_are_part_of_the_key(
    setup: Setup,
) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    setup.generate()
    other = setup.generate(PODUNIT_EXECUTABLE="/usr/bin/podunit")
    plan = f"{setup.root}/out/podunit/web.json"
    assert f"ExecStart=/usr/bin/podunit run --plan {plan} web\n" in other[1]["web.service"]
    elsewhere = setup.root / "elsewhere"
    elsewhere.mkdir()
    generator_main([str(elsewhere)], user=False, podunit=PODUNIT, environ=setup.env)
    moved = (elsewhere / "web.service").read_text()
    assert f"ExecStart={PODUNIT} run --plan {elsewhere}/podunit/web.json web\n" in moved


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", marshal.dumps(("not", "a", "cache")), marshal.dumps((None, None))],
)
def test_a_corrupt_or_foreign_cache_is_ignored_and_overwritten(
    setup: Setup, content: bytes
) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    first = setup.generate()
    (cache,) = setup.caches()
    cache.write_bytes(content)
    assert setup.generate() == first
    assert cache.read_bytes() != content


def test_a_cache_others_could_write_is_ignored(setup: Setup) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    first = setup.generate()
    (cache,) = setup.caches()
    key, (units, messages, status) = marshal.loads(cache.read_bytes())
    units[0][0]["web.service"] = "[Service]\nExecStart=/bin/evil\n"
    cache.write_bytes(marshal.dumps((key, (units, messages, status))))
    assert "/bin/evil" in setup.generate()[1]["web.service"]  # the own file is trusted
    cache.chmod(0o666)
    assert setup.generate() == first  # ignored, regenerated and stored again
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_a_cache_with_the_right_key_but_a_malformed_output_is_ignored(setup: Setup) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    first = setup.generate()
    (cache,) = setup.caches()
    key, output = marshal.loads(cache.read_bytes())
    _, messages, status = output
    cache.write_bytes(marshal.dumps((key, ([({"web.service": 1}, {}, {})], messages, status))))
    assert setup.generate() == first


def test_the_run_directory_is_made_with_the_runtimes_mode(setup: Setup) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    setup.generate()
    assert stat.S_IMODE(setup.run_dir.stat().st_mode) == 0o711  # as toolkit.storage.paths makes it
    assert stat.S_IMODE((setup.run_dir / "generator-cache").stat().st_mode) == 0o700
    (cache,) = setup.caches()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_a_cache_that_cannot_be_written_only_costs_speed(setup: Setup) -> None:
    """As in a read-only /run: the output is still complete and right."""
    (setup.defs / "web.yaml").write_text(WEB)
    blocker = setup.root / "not-a-directory"
    blocker.write_text("")
    unwritable = setup.generate(PODUNIT_RUN_DIR=f"{blocker}/run")
    assert unwritable == setup.uncached() and unwritable[0] == 0 and unwritable[1]


def test_cache_disabled_writes_nothing(setup: Setup) -> None:
    (setup.defs / "web.yaml").write_text(WEB)
    assert setup.uncached()[0] == 0
    assert setup.caches() == []


def test_racy_inputs_are_not_cached(tmp_path: Path) -> None:
    """A file changed less than RACY_NS ago may change again within the same time stamp."""
    setup = Setup(tmp_path)
    (setup.defs / "web.yaml").write_text(WEB)
    assert setup.generate()[0] == 0
    assert setup.caches() == []
    assert generator_cache.racy([("f", "/x", 1, 2, 3, 10, 10)], 10 + generator_cache.RACY_NS)
    assert not generator_cache.racy([("f", "/x", 1, 2, 3, 9, 9)], 10 + generator_cache.RACY_NS)


def test_the_runtime_entries_of_the_run_directory_are_not_walked(setup: Setup) -> None:
    """/run/podunit is a search directory and the runtime's run directory: container root
    file systems (rootfs/<id>), the generator's cache and every other subdirectory of it
    are not definitions; its own *.yaml files are."""
    (setup.defs / "web.yaml").write_text(WEB)
    (setup.run_dir / "rootfs" / "abc" / "etc").mkdir(parents=True)
    (setup.run_dir / "rootfs" / "abc" / "etc" / "db.yaml").write_text(DB)
    (setup.run_dir / "mine").mkdir()
    (setup.run_dir / "mine" / "other.yaml").write_text(DB.replace("db", "other"))
    (setup.run_dir / "top.yaml").write_text(DB.replace("db", "top"))
    env = {"PODUNIT_DEFINITION_DIRS": f"{setup.run_dir}:{setup.defs}"}
    status, output, _ = setup.generate(**env)
    assert status == 0
    containers = [n for n in output if not n.startswith("podunit-pull-") and "/" not in n]
    assert sorted(name for name in containers if name.endswith(".service")) == [
        "top.service",
        "web.service",
    ]
    # The first run makes the cache directory inside the run directory, after its start
    # time: the run directory's mtime is then racy or not depending on the clock's tick,
    # so that run may or may not store. The second run stores; the third must hit.
    assert setup.generate(**env)[1] == output
    first = setup.cache_identity()
    assert first is not None
    assert setup.generate(**env)[1] == output
    assert setup.cache_identity() == first  # writing the cache did not invalidate it


def test_the_warm_path_imports_no_yaml(repo_root: Path, tmp_path: Path) -> None:
    """The generator executable, started as systemd starts it, twice on an unchanged tree."""
    setup = Setup(tmp_path)
    (setup.defs / "web.yaml").write_text(WEB)
    time.sleep(generator_cache.RACY_NS / 1e9 + 0.1)  # older than the racy window
    out = tmp_path / "out"
    out.mkdir()
    argv = [
        "/usr/bin/python3",
        "-X",
        "importtime",
        "-I",
        "-S",
        str(repo_root / "generators" / "podunit-generator"),
        str(out),
    ]
    imports = []
    for _ in range(2):
        result = subprocess.run(
            argv, env=setup.env, capture_output=True, text=True, timeout=60, check=True
        )
        imports.append({line.split("|")[-1].strip() for line in result.stderr.splitlines()})
    assert "yaml" in imports[0] and "toolkit.definitions.model" in imports[0]
    assert not {"yaml", "toolkit.definitions.model", "typing", "re"} & imports[1], imports[1]
    assert (out / "web.service").is_file()


def test_where_the_cache_lives() -> None:
    system = generator_cache.cache_file(user=False, environ={})
    assert system is not None and system.startswith("/run/podunit/generator-cache/system-")
    user = generator_cache.cache_file(user=True, environ={"XDG_RUNTIME_DIR": "/run/user/7"})
    assert user is not None and user.startswith("/run/user/7/podunit/generator-cache/user-")
    assert generator_cache.cache_file(user=True, environ={"XDG_RUNTIME_DIR": "relative"}) is None
    for off in ("0", "no", "false", "OFF"):
        assert (
            generator_cache.cache_file(user=False, environ={"PODUNIT_GENERATOR_CACHE": off}) is None
        )


def test_per_run_variables_do_not_change_the_key() -> None:
    """systemd gives every generator run its own SYSTEMD_EXEC_PID (issue 15 item 14: with
    it in the key, no daemon-reload ever hit the cache); anything else still counts."""
    base = {"HOME": "/root", "SYSTEMD_EXEC_PID": "57", "SYSTEMD_SCOPE": "system"}
    digest = generator_cache.environment_digest(base)
    for volatile in ({"SYSTEMD_EXEC_PID": "79"}, {"INVOCATION_ID": "ab"}, {"_": "/bin/x"}):
        assert generator_cache.environment_digest(base | volatile) == digest
    assert generator_cache.environment_digest(base | {"DB_HOST": "x"}) != digest
    assert generator_cache.environment_digest(base | {"SYSTEMD_SCOPE": "user"}) != digest

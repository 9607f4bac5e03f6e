"""Search path, precedence, drop-ins, templates, cross-file checks (spec §1)."""

from __future__ import annotations

import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.definitions.instances import instantiate
from toolkit.definitions.loader import (
    find_definition,
    load_all,
    load_paths,
    search_dirs,
    substitute,
)
from toolkit.definitions.model import Notify, Restart
from toolkit.errors import ContainerNotFound, DefinitionError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def simple(name: str, image: str = "busybox", extra: str = "") -> str:
    return f"containers:\n  {name}:\n    image: {image}\n{extra}"


# ---------------------------------------------------------------- search path


def test_system_search_path() -> None:
    assert search_dirs(environ={}) == [
        "/run/podunit",
        "/etc/podunit",
        "/usr/local/share/podunit",
        "/usr/share/podunit",
    ]


def test_user_search_path() -> None:
    environ = {"XDG_RUNTIME_DIR": "/run/user/1000", "XDG_CONFIG_HOME": "/home/u/cfg"}
    assert search_dirs(user=True, environ=environ) == [
        "/run/user/1000/podunit",
        "/home/u/cfg/podunit",
        f"/etc/podunit/users/{os.getuid()}",
    ]


def test_user_search_path_defaults_to_dot_config() -> None:
    assert search_dirs(user=True, environ={"HOME": "/home/u"}) == [
        "/home/u/.config/podunit",
        f"/etc/podunit/users/{os.getuid()}",
    ]


def test_podunit_definition_dirs_replaces_the_search_path() -> None:
    environ = {"PODUNIT_DEFINITION_DIRS": "/a:/b::/c"}
    assert search_dirs(environ=environ) == ["/a", "/b", "/c"]
    assert search_dirs(user=True, environ=environ) == ["/a", "/b", "/c"]
    # written as pathlib writes it: no empty or `.` parts, `..` kept (it may follow a symlink)
    environ = {"PODUNIT_DEFINITION_DIRS": "/a/../b//./c/:/"}
    assert search_dirs(environ=environ) == ["/a/../b/c", "/"]


def test_relative_podunit_definition_dirs_is_an_error() -> None:
    with pytest.raises(DefinitionError, match="'relative/dir' is not an absolute path"):
        search_dirs(environ={"PODUNIT_DEFINITION_DIRS": "/a:relative/dir"})


def test_first_file_name_wins_across_search_dirs(tmp_path: Path) -> None:
    high, low = tmp_path / "run", tmp_path / "etc"
    write(high / "web.yaml", simple("web", "high"))
    write(low / "web.yaml", simple("web", "low") + simple("other")[len("containers:\n") :])
    write(low / "db.yml", simple("db", "postgres"))
    result = load_all([high, low])
    assert result.errors == []
    assert result.containers["web"].image == "high"
    assert "other" not in result.containers  # the whole shadowed file is ignored
    assert result.containers["db"].image == "postgres"
    assert result.sources["web"] == [str(high / "web.yaml")]


def test_subdirectories_walked_d_and_hidden_directories_skipped(tmp_path: Path) -> None:
    write(tmp_path / "group" / "deep" / "a.yaml", simple("a"))
    write(tmp_path / "conf.d" / "b.yaml", simple("b"))
    write(tmp_path / "notes.txt", "not yaml")
    write(tmp_path / "group" / "c.yml", simple("c"))
    write(tmp_path / ".git" / "d.yaml", simple("d"))
    write(tmp_path / ".e.yaml", simple("e"))
    result = load_all([tmp_path, tmp_path / "missing"])
    assert result.errors == []
    assert sorted(result.containers) == ["a", "c"]


def test_a_file_name_in_a_subdirectory_shadows_too(tmp_path: Path) -> None:
    write(tmp_path / "one" / "sub" / "web.yaml", simple("web", "first"))
    write(tmp_path / "two" / "web.yaml", simple("web", "second"))
    result = load_all([tmp_path / "one", tmp_path / "two"])
    assert result.containers["web"].image == "first" and result.errors == []


def test_symlink_loops_terminate(tmp_path: Path) -> None:
    write(tmp_path / "a" / "web.yaml", simple("web"))
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    assert list(load_all([tmp_path]).containers) == ["web"]


# ---------------------------------------------------------------- drop-ins


def test_dropins_merge_in_lexical_order_from_any_search_dir(tmp_path: Path) -> None:
    high, low = tmp_path / "etc", tmp_path / "usr"
    main = write(
        low / "web.yaml",
        simple(
            "web",
            "nginx",
            "    environment: {A: '1', B: '2'}\n"
            "    ports: ['80:80', '443:443']\n"
            "    restart: always\n"
            "    hostname: old\n",
        ),
    )
    d20 = write(
        high / "web.yaml.d" / "20-env.yaml",
        "containers:\n  web:\n    environment: {B: overridden, C: '3'}\n    hostname: ~\n",
    )
    d10 = write(
        low / "web.yaml.d" / "10-ports.yaml",
        "containers:\n  web:\n    ports: ['8080:80']\n    restart: ~\n    hostname: mid\n",
    )
    write(low / "web.yaml.d" / "README", "ignored")
    result = load_all([high, low])
    assert result.errors == []
    web = result.containers["web"]
    assert web.environment == (("A", "1"), ("B", "overridden"), ("C", "3"))  # merged by key
    assert [p.host_port for p in web.ports] == [8080]  # lists replace
    assert web.restart is Restart.NO  # null deleted the key: the default applies
    assert web.hostname is None  # set by 10-, deleted by 20-
    assert result.sources["web"] == [str(main), str(d10), str(d20)]


def test_a_dropin_of_the_same_name_in_a_higher_dir_replaces_the_lower(tmp_path: Path) -> None:
    write(tmp_path / "low" / "web.yaml", simple("web"))
    write(tmp_path / "low" / "web.yaml.d" / "x.yaml", "containers: {web: {hostname: low}}\n")
    write(tmp_path / "high" / "web.yaml.d" / "x.yaml", "containers: {web: {hostname: high}}\n")
    result = load_all([tmp_path / "high", tmp_path / "low"])
    assert result.containers["web"].hostname == "high"


def test_errors_in_dropins_point_into_the_dropin(tmp_path: Path) -> None:
    write(tmp_path / "web.yaml", simple("web"))
    dropin = write(
        tmp_path / "web.yaml.d" / "10.yaml", "containers:\n  web:\n    stop_timeout: soon\n"
    )
    write(tmp_path / "db.yaml", simple("db"))
    result = load_all([tmp_path])
    assert [str(e) for e in result.errors] == [
        f"{dropin}:3:19: invalid duration 'soon' (use e.g. 10s, 1m30s, 500ms)"
    ]
    assert list(result.containers) == ["db"]


def test_a_dropin_with_a_syntax_error_disables_its_file_only(tmp_path: Path) -> None:
    write(tmp_path / "web.yaml", simple("web"))
    dropin = write(tmp_path / "web.yaml.d" / "10.yaml", "containers: [\n")
    write(tmp_path / "db.yaml", simple("db"))
    result = load_all([tmp_path])
    assert len(result.errors) == 1 and str(result.errors[0]).startswith(f"{dropin}:2:1: ")
    assert list(result.containers) == ["db"]


# ---------------------------------------------------------------- cross-file checks


def test_duplicate_name_names_both_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", simple("web"))
    second = write(tmp_path / "b.yaml", "containers:\n  db: {image: x}\n  web: {image: y}\n")
    third = write(tmp_path / "c.yaml", "containers:\n  web: {image: z, init: 2}\n")
    result = load_all([tmp_path])
    assert [str(e) for e in result.errors] == [
        f"{second}:3:3: container 'web' is already defined in {first}:2",
        f"{third}:2:3: container 'web' is already defined in {first}:2",
        f"{third}:2:25: init must be true or false, not '2'",  # its own problems are shown too
    ]
    assert result.containers["web"].image == "busybox"
    assert "db" in result.containers


def test_template_and_plain_name_do_not_clash(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", simple("worker") + simple("worker@")[len("containers:\n") :])
    assert sorted(load_all([tmp_path]).containers) == ["worker", "worker@"]


def test_depends_on_targets(tmp_path: Path) -> None:
    write(tmp_path / "db.yaml", simple("db"))
    write(tmp_path / "t.yaml", simple("worker@"))
    write(tmp_path / "web.yaml", simple("web", extra="    depends_on: [db, worker@3]\n"))
    broken = write(tmp_path / "x.yaml", "containers:\n  broken: {image: x, init: maybe}\n")
    write(tmp_path / "y.yaml", simple("uses-broken", extra="    depends_on: [broken]\n"))
    lonely = write(tmp_path / "z.yaml", simple("lonely", extra="    depends_on: [ghost]\n"))
    selfish = write(tmp_path / "s.yaml", simple("selfish", extra="    depends_on: [selfish]\n"))
    result = load_all([tmp_path])
    messages = sorted(str(e) for e in result.errors)
    assert messages == sorted(
        [
            f"{broken}:2:28: init must be true or false, not 'maybe'",
            f"{lonely}:2:3: depends_on 'ghost' names a container that is not defined",
            f"{selfish}:2:3: depends_on 'selfish' names itself",
        ]
    )
    # a dependency on a defined-but-broken container is not a second error
    assert sorted(result.containers) == ["db", "uses-broken", "web", "worker@"]


def test_service_healthy_targets_report_ready_when_healthy(tmp_path: Path) -> None:
    """A `service_healthy` dependency with a healthcheck and default notify gets notify=healthy."""
    write(
        tmp_path / "app.yaml",
        "containers:\n"
        "  db: {image: db, healthcheck: {test: [CMD, 'true']}}\n"
        "  cache: {image: cache, healthcheck: {test: [CMD, 'true']}, notify: container}\n"
        "  plain: {image: plain, healthcheck: {test: [CMD, 'true']}}\n"
        "  web:\n"
        "    image: web\n"
        "    depends_on: {db: {condition: service_healthy}, cache: {condition: service_healthy},\n"
        "                 plain: {condition: service_started}}\n",
    )
    result = load_all([tmp_path])
    assert result.errors == []
    assert result.containers["db"].notify is Notify.HEALTHY
    assert result.containers["cache"].notify is Notify.CONTAINER  # explicit modes are kept
    assert result.containers["plain"].notify is Notify.CONMON  # only awaited ones change
    assert result.containers["web"].notify is Notify.CONMON


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", simple("a"))
    write(tmp_path / "b.yaml", "containers:\n  b: {image: [unclosed\n")
    write(
        tmp_path / "c.yaml", "containers:\n  c1: {image: x, stop_signal: NOPE}\n  c2: {image: y}\n"
    )
    write(tmp_path / "d.yaml", "")  # empty: nothing defined, no error
    write(tmp_path / "e.yaml", "just a string")
    (tmp_path / "f.yaml").write_bytes(b'containers:\n  f: {image: "\xff"}\n')
    result = load_all([tmp_path])
    assert sorted(result.containers) == ["a", "c2"]
    assert len(result.errors) == 4, [str(e) for e in result.errors]
    assert {e.location.path for e in result.errors if e.location} == {
        str(tmp_path / n) for n in ("b.yaml", "c.yaml", "e.yaml", "f.yaml")
    }


def test_several_errors_in_one_container_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yaml",
        "containers:\n  a:\n    image: x\n    stop_timeout: later\n"
        "    notify: loud\n    bogus: 1\n",
    )
    assert [str(e) for e in load_paths([path]).errors] == [
        f"{path}:4:19: invalid duration 'later' (use e.g. 10s, 1m30s, 500ms)",
        f"{path}:5:13: invalid notify 'loud' (one of: conmon, container, healthy, ignore)",
        f"{path}:6:5: unknown key 'bogus'",
    ]


def test_load_paths_checks_every_file_without_shadowing(tmp_path: Path) -> None:
    a = write(tmp_path / "one" / "web.yaml", simple("web"))
    b = write(tmp_path / "two" / "web.yaml", simple("web"))
    write(tmp_path / "one" / "web.yaml.d" / "x.yaml", "containers: {web: {hostname: dropped}}\n")
    result = load_paths([a, b, tmp_path / "nope.yaml"])
    assert [str(e) for e in result.errors] == [
        f"{tmp_path / 'nope.yaml'}:1:1: no such file",
        f"{b}:2:3: container 'web' is already defined in {a}:2",
    ]
    assert result.containers["web"].hostname == "dropped"
    assert sorted(load_paths([tmp_path]).containers) == ["web"]


def test_relative_host_paths_resolve_against_the_file(tmp_path: Path) -> None:
    write(
        tmp_path / "sub" / "web.yaml",
        "containers:\n  web:\n    rootfs: ./root\n    env_file: ../env\n"
        "    volumes: ['data:/data', './d:/d']\n    seccomp: prof.json\n",
    )
    web = load_all([tmp_path]).containers["web"]
    assert web.rootfs == str(tmp_path / "sub" / "root")
    assert web.env_files == (str(tmp_path / "env"),)
    assert [m.source for m in web.mounts] == ["data", str(tmp_path / "sub" / "d")]
    assert web.seccomp == str(tmp_path / "sub" / "prof.json")


# ---------------------------------------------------------------- YAML 1.1 quirks and safety


def test_yaml_11_quirks_are_undone(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        "containers:\n  a:\n    image: x\n    restart: no\n    ports: [22:22, 8080:80]\n"
        "    user: 33:33\n    environment: {ON: on, OCT: 0755, HEX: 0x1F}\n"
        "    labels: [version=1.10]\n",
    )
    a = load_all([tmp_path]).containers["a"]
    assert a.restart is Restart.NO
    assert [(p.host_port, p.container_port) for p in a.ports] == [(22, 22), (8080, 80)]
    assert a.user == "33:33"
    assert a.environment == (("ON", "on"), ("OCT", "0755"), ("HEX", "0x1F"))
    assert a.labels == (("version", "1.10"),)


def test_anchors_aliases_and_merge_keys(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        "x-base: &base {image: busybox, stop_timeout: 3s}\n"
        "x-more: &more {stop_timeout: 4s, init: true}\n"
        "containers:\n"
        "  a: {<<: *base, command: &cmd [sleep, '1']}\n"
        "  b: {<<: [*more, *base], command: *cmd, stop_timeout: 5s}\n",
    )
    result = load_all([tmp_path])
    a, b = result.containers["a"], result.containers["b"]
    assert (a.image, a.stop_timeout, a.command) == ("busybox", timedelta(seconds=3), ("sleep", "1"))
    assert (b.image, b.stop_timeout, b.init) == ("busybox", timedelta(seconds=5), True)


def test_alias_bomb_is_cheap(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    write(tmp_path / "bomb.yaml", "x-bomb:\n" + "".join(f"  {line}\n" for line in lines))
    started = time.monotonic()
    result = load_all([tmp_path])
    assert result.errors == [] and time.monotonic() - started < 2


# ---------------------------------------------------------------- templates


def test_substitute() -> None:
    assert substitute("w-%i", "3") == "w-3"
    assert substitute("100%%", "3") == "100%"
    assert substitute("%%i", "3") == "%i"
    assert substitute("%n %", "3") == "%n %"
    assert substitute("plain", "3") == "plain"


def test_instantiate_fills_every_string(tmp_path: Path) -> None:
    write(
        tmp_path / "w.yaml",
        "containers:\n  worker@:\n    image: busybox\n    hostname: w-%i\n"
        "    command: [echo, '%i', '100%%']\n    environment: [N=%i]\n"
        "    volumes: ['/srv/%i:/data']\n    labels: {instance: '%i'}\n",
    )
    template = load_all([tmp_path]).containers["worker@"]
    worker = instantiate(template, "7")
    assert (worker.name, worker.unit_name, worker.template) == ("worker@7", "worker@7", False)
    assert worker.hostname == "w-7" and worker.command == ("echo", "7", "100%")
    assert worker.environment == (("N", "7"),) and worker.labels == (("instance", "7"),)
    assert worker.mounts[0].source == "/srv/7" and worker.source == template.source
    with pytest.raises(DefinitionError, match="invalid hostname 'w-a_b'"):
        instantiate(template, "a_b")
    with pytest.raises(ContainerNotFound, match="invalid instance name"):
        instantiate(template, "a/b")
    with pytest.raises(ContainerNotFound, match="not a template"):
        instantiate(worker, "x")


def test_find_definition(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", simple("web") + simple("worker@")[len("containers:\n") :])
    write(tmp_path / "b.yaml", "containers:\n  bad: {image: x, restart: sometimes}\n")
    environ = {"PODUNIT_DEFINITION_DIRS": str(tmp_path)}
    assert find_definition("web", environ=environ).image == "busybox"
    assert find_definition("worker@x", environ=environ).name == "worker@x"
    with pytest.raises(ContainerNotFound, match="no definition of 'ghost'") as caught:
        find_definition("ghost", environ=environ)
    assert caught.value.hint and "validate" in caught.value.hint
    with pytest.raises(DefinitionError, match="invalid restart 'sometimes'"):
        find_definition("bad", environ=environ)
    with pytest.raises(ContainerNotFound, match="invalid container name"):
        find_definition("../etc", environ=environ)
    with pytest.raises(ContainerNotFound):
        find_definition("web@1", environ=environ)  # web is not a template


def test_pure_python_loader_gives_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from toolkit.definitions import tree

    write(tmp_path / "a.yaml", simple("a", extra="    restart: no\n    ports: [22:22]\n"))
    write(tmp_path / "b.yaml", "containers:\n  b: {image: [x\n")
    write(tmp_path / "c.yaml", "containers:\n  c: {image: !!python/name:os.system x}\n")
    with_c = load_all([tmp_path])
    monkeypatch.setattr(tree, "_Loader", tree.loader_class(yaml.SafeLoader))
    pure = load_all([tmp_path])
    assert pure.containers == with_c.containers and list(pure.containers) == ["a"]
    assert [e.location for e in pure.errors] == [e.location for e in with_c.errors]
    assert len(pure.errors) == 2 and pure.errors[1].message == with_c.errors[1].message
    assert pure.errors[0].message.startswith("YAML syntax error: ")  # libyaml words it differently


def test_file_names_with_control_characters_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "bad\nname.yaml", simple("a"))
    write(tmp_path / "good.yaml", simple("b"))
    result = load_all([tmp_path])
    assert list(result.containers) == ["b"]
    assert [str(e) for e in result.errors] == [
        f"file name '{tmp_path}/bad\\nname.yaml' contains a control character"
    ]


_YAMLISH = st.lists(
    st.sampled_from(
        ["containers:", "services:", "\n", "  ", "a:", " image: x", "- ", "[", "]", "{", "}",
         "&a ", "*a", "<<: ", "!!str ", "!!python/none ", "~", "22:22", "no", "'", '"', ",",
         "\t", "\xff", "#", "---\n", "x-y:", "%YAML 1.1\n"]
    ),
    max_size=25,
).map("".join)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.one_of(_YAMLISH, st.binary(max_size=40)))
def test_arbitrary_input_never_raises(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "a.yaml")
        if isinstance(content, str):
            path.write_bytes(content.encode("utf-8", "surrogateescape"))
        else:
            path.write_bytes(content)
        result = load_all([Path(directory)])
    for error in result.errors:
        assert error.location is not None and error.location.path == str(path)


def test_the_runtimes_run_directory_entries_are_all_skipped(tmp_path: Path) -> None:
    """No directory toolkit.storage.paths (or anything else) keeps in the run directory is
    walked: only its own *.yaml files and *.d drop-in directories are definitions (the
    search walk must not read container root file systems as definitions)."""
    from toolkit.definitions.loader import scan_all
    from toolkit.storage.paths import RuntimePaths

    paths = RuntimePaths(user=False, state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    paths.ensure()
    for directory in (
        paths.bundle_dir("c"), paths.exec_dir("c"), paths.rootfs_mount("c"),
        f"{paths.run_dir}/runtime-runc/c", f"{paths.run_dir}/netns", f"{paths.run_dir}/networks",
        f"{paths.run_dir}/generator-cache", f"{paths.run_dir}/anything-new",
    ):  # fmt: skip
        os.makedirs(directory, exist_ok=True)
        Path(directory, "inside.yaml").write_text(simple("inside"))
    write(Path(paths.run_dir, "transient.yaml"), simple("transient"))
    write(Path(paths.run_dir, "transient.yaml.d", "10-x.yaml"), simple("transient", "other"))
    environ = {"PODUNIT_RUN_DIR": paths.run_dir}
    scan = scan_all([paths.run_dir], environ=environ)
    assert list(scan.sources.values()) == [f"{paths.run_dir}/transient.yaml"]
    assert scan.dropins_for(f"{paths.run_dir}/transient.yaml") == [
        f"{paths.run_dir}/transient.yaml.d/10-x.yaml"
    ]
    assert [item[1] for item in scan.inputs] == [
        paths.run_dir,
        f"{paths.run_dir}/transient.yaml",
        f"{paths.run_dir}/transient.yaml.d",
        f"{paths.run_dir}/transient.yaml.d/10-x.yaml",
    ]

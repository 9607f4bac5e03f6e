"""Compose files as projects (spec §1.3, podunit.yaml(5) "Compose projects"): names,
units and the project target, depends_on, profiles, variables from `.env` and the
environment, files of the same name in different directories, collisions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from toolkit.definitions.loader import LoadResult, load_all, load_paths
from toolkit.definitions.model import NetworkAttachment, NetworkSpec
from toolkit.definitions.project import default_name, normalise_name
from toolkit.definitions.search import Scan
from toolkit.unitgen.cache import environment_digest
from toolkit.unitgen.render import UnitFiles, render_all

from .test_units import parse_unit, verify

PODUNIT = str(Path(__file__).resolve().parents[2] / "bin" / "podunit")  # executable: verify


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def render(result: LoadResult) -> tuple[dict[str, UnitFiles], list[str]]:
    rendered, errors = render_all(
        result.containers,
        podunit=PODUNIT,
        sources=result.sources,
        notes=result.notes,
        projects=result.projects,
    )
    return rendered, [str(e) for e in [*result.errors, *errors]]


def generated(rendered: dict[str, UnitFiles]) -> list[str]:
    """The containers' and projects' units (not the image pull units)."""
    return sorted(name for name in rendered if not name.startswith("podunit-pull-"))


def unit(rendered: dict[str, UnitFiles], name: str) -> dict[str, list[tuple[str, str]]]:
    for units in rendered.values():
        if name in units.files:
            return parse_unit(units.files[name])
    raise AssertionError(f"no {name} in {sorted(rendered)}")


def values(rendered: dict[str, UnitFiles], name: str, section: str, key: str) -> list[str]:
    found = [v for k, v in unit(rendered, name)[section] if k == key]
    return [v for v in found if not v.startswith("podunit-pull-")]  # the image's pull unit


SHOP = """\
services:
  web:
    image: nginx:${TAG:-1.27}
    environment:
      PASSWORD: ${POSTGRES_PASSWORD:?the database password}
    depends_on:
      db: {condition: service_healthy, restart: true}
      cache: {condition: service_started, required: false}
  db:
    image: postgres:16
    healthcheck: {test: [CMD-SHELL, "pg_isready -U $${POSTGRES_USER}"], start_interval: 1s}
  cache:
    image: redis:7
    profiles: [cache]
"""


def test_a_project_is_named_after_its_directory_and_namespaces_its_units(tmp_path: Path) -> None:
    write(tmp_path / "Shop.App" / "compose.yaml", SHOP)
    write(tmp_path / "Shop.App" / ".env", "POSTGRES_PASSWORD='s3cret'\n")
    result = load_all([tmp_path], environ={"TAG": "1.25"})
    assert result.errors == []
    assert sorted(result.containers) == ["shopapp-cache", "shopapp-db", "shopapp-web"]
    web = result.containers["shopapp-web"]
    assert (web.project, web.service, web.image) == ("shopapp", "web", "nginx:1.25")
    assert web.environment == (("PASSWORD", "s3cret"),)
    db = result.containers["shopapp-db"]
    assert db.healthcheck is not None
    assert db.healthcheck.test == ("/bin/sh", "-c", "pg_isready -U ${POSTGRES_USER}")
    rendered, errors = render(result)
    assert errors == []
    assert generated(rendered) == [
        "shopapp-cache",
        "shopapp-db",
        "shopapp-project.target",
        "shopapp-web",
    ]
    # depends_on: restart: true -> BindsTo, required: false -> Wants; all ordered After
    assert values(rendered, "shopapp-web.service", "Unit", "BindsTo") == ["shopapp-db.service"]
    assert values(rendered, "shopapp-web.service", "Unit", "Wants") == ["shopapp-cache.service"]
    assert values(rendered, "shopapp-web.service", "Unit", "Requires") == []
    assert values(rendered, "shopapp-web.service", "Unit", "After") == [
        "shopapp-db.service",
        "shopapp-cache.service",
        "shopapp-project.target",  # so that stopping the target waits for the services
    ]
    for service in ("web", "db", "cache"):
        assert values(rendered, f"shopapp-{service}.service", "Unit", "PartOf") == [
            "shopapp-project.target"
        ]
    # the target wants the enabled services (cache's profile is not active)
    links = {k: v for units in rendered.values() for k, v in units.symlinks.items()}
    assert links == {
        "shopapp-project.target.wants/shopapp-db.service": "../shopapp-db.service",
        "shopapp-project.target.wants/shopapp-web.service": "../shopapp-web.service",
        "multi-user.target.wants/shopapp-project.target": "../shopapp-project.target",
    }
    assert values(rendered, "shopapp-project.target", "Unit", "After") == []
    # the unit names the variables it was generated with, never their values
    text = rendered["shopapp-web"].files["shopapp-web.service"]
    assert "# Compose project shopapp, service web\n" in text
    assert f"# Variables: POSTGRES_PASSWORD (.env), TAG (environment); .env: {tmp_path}" in text
    assert "s3cret" not in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_a_projects_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    write(tmp_path / "defs" / "shop" / "compose.yaml", SHOP)
    result = load_all([tmp_path / "defs"], environ={"POSTGRES_PASSWORD": "x"})
    rendered, errors = render(result)
    assert errors == []
    out = tmp_path / "units"
    out.mkdir()
    for units in rendered.values():
        for name, text in units.files.items():
            (out / name).write_text(text)
    assert verify(out) == ""


def test_profiles_are_enabled_by_compose_profiles(tmp_path: Path) -> None:
    write(tmp_path / "shop" / "compose.yaml", SHOP)
    for active, enabled in (("cache", True), ("other, cache", True), ("*", True), ("x", False)):
        result = load_all(
            [tmp_path], environ={"POSTGRES_PASSWORD": "x", "COMPOSE_PROFILES": active}
        )
        rendered, _ = render(result)
        assert bool(rendered["shop-cache"].symlinks) is enabled, active
    write(tmp_path / "shop" / ".env", "POSTGRES_PASSWORD=x\nCOMPOSE_PROFILES=cache\n")
    rendered, _ = render(load_all([tmp_path], environ={}))
    assert rendered["shop-cache"].symlinks  # .env may activate profiles too


def test_a_missing_required_variable_is_located_at_its_value(tmp_path: Path) -> None:
    path = write(tmp_path / "shop" / "compose.yaml", SHOP)
    result = load_all([tmp_path], environ={})
    messages = [str(e) for e in result.errors]
    assert messages == [
        f"{path}:5:17: required variable POSTGRES_PASSWORD is unset: the database password"
    ]
    # web fails, so nothing that needs it... and db and cache are still generated
    rendered, _ = render(result)
    assert generated(rendered) == ["shop-cache", "shop-db", "shop-project.target"]


def test_the_environment_wins_over_dotenv(tmp_path: Path) -> None:
    write(tmp_path / "p" / "compose.yaml", "services:\n  a: {image: 'x:${TAG}'}\n")
    write(tmp_path / "p" / ".env", "TAG=file\n")
    assert load_all([tmp_path], environ={"TAG": "env"}).containers["p-a"].image == "x:env"
    assert load_all([tmp_path], environ={}).containers["p-a"].image == "x:file"


def test_a_bad_dotenv_is_located_and_the_project_not_generated(tmp_path: Path) -> None:
    write(tmp_path / "p" / "compose.yaml", "services:\n  a: {image: x}\n")
    dotenv = write(tmp_path / "p" / ".env", "GOOD=1\n2BAD=x\n")
    result = load_all([tmp_path], environ={})
    assert [str(e) for e in result.errors] == [
        f"{dotenv}:2:1: invalid variable name '2BAD' (expected KEY=VALUE)"
    ]
    assert result.containers == {}


def test_a_dotenv_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "p" / "compose.yaml", "services:\n  a: {image: x}\n")
    (tmp_path / "p" / ".env").mkdir()
    result = load_all([tmp_path], environ={})
    assert "cannot read: not a regular file (a directory)" in str(result.errors[0])


def test_compose_files_of_one_name_in_different_directories_are_all_read(tmp_path: Path) -> None:
    high, low = tmp_path / "etc", tmp_path / "usr"
    write(high / "shop" / "compose.yaml", "services:\n  db: {image: postgres:17}\n")
    write(high / "blog" / "compose.yaml", "services:\n  db: {image: mariadb}\n")
    write(low / "shop" / "compose.yaml", "services:\n  db: {image: postgres:15}\n")
    write(low / "wiki" / "docker-compose.yml", "services:\n  db: {image: mysql}\n")
    result = load_all([high, low], environ={})
    assert result.errors == []
    images = {name: c.image for name, c in result.containers.items()}
    # the same path below a higher search directory hides the lower one (as for other files)
    assert images == {"shop-db": "postgres:17", "blog-db": "mariadb", "wiki-db": "mysql"}


def test_drop_ins_of_a_compose_file_are_its_own(tmp_path: Path) -> None:
    write(tmp_path / "shop" / "compose.yaml", "services:\n  db: {image: postgres}\n")
    write(tmp_path / "blog" / "compose.yaml", "services:\n  db: {image: mariadb}\n")
    write(tmp_path / "shop" / "compose.yaml.d" / "10-tag.yaml", "services:\n  db: {image: pg:17}\n")
    result = load_all([tmp_path], environ={})
    assert result.containers["shop-db"].image == "pg:17"
    assert result.containers["blog-db"].image == "mariadb"


def test_a_unit_name_made_twice_is_an_error_naming_both_files(tmp_path: Path) -> None:
    compose = write(tmp_path / "shop" / "compose.yaml", "services:\n  db: {image: postgres}\n")
    own = write(tmp_path / "zz.yaml", "containers:\n  shop-db: {image: other}\n")
    result = load_all([tmp_path], environ={})
    assert [str(e) for e in result.errors] == [
        f"{own}:2:3: container 'shop-db' is already defined in {compose}:2"
    ]
    assert result.containers["shop-db"].image == "postgres"


def test_a_project_name_used_twice_is_an_error_naming_both_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "compose.yaml", "name: shop\nservices:\n  db: {image: x}\n")
    second = write(tmp_path / "b" / "compose.yaml", "name: shop\nservices:\n  web: {image: x}\n")
    result = load_all([tmp_path], environ={})
    assert [str(e) for e in result.errors] == [
        f"{second}:1:7: Compose project 'shop' is already defined in {first}"
    ]
    assert list(result.containers) == ["shop-db"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Shop", "project name 'Shop' must be lower case letters"),
        ("-x", "project name '-x' must be lower case letters"),
        ("${NAME:?no name}", "required variable NAME is unset: no name"),
    ],
)
def test_bad_project_names(tmp_path: Path, name: str, message: str) -> None:
    path = write(tmp_path / "compose.yaml", f"name: '{name}'\nservices:\n  a: {{image: x}}\n")
    result = load_paths([path], environ={})
    assert [str(e) for e in result.errors] == [f"{path}:1:7: {message}"] or str(
        result.errors[0]
    ).startswith(f"{path}:1:7: {message}")
    assert len(result.errors) == 1


def test_project_names_from_directories_and_files() -> None:
    assert normalise_name("My.Shop-2") == "myshop-2"
    assert normalise_name("__x") == "x"
    assert default_name("/srv/Blog/compose.yaml") == "blog"
    assert default_name("/etc/podunit/shop.yaml") == "shop"
    assert default_name("/etc/podunit/shop.v2.yml") == "shopv2"


def test_no_unit_depends_on_a_unit_that_was_not_generated(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p" / "compose.yaml",
        "services:\n"
        "  web: {image: x, depends_on: [api]}\n"
        "  api: {image: x, depends_on: [db]}\n"
        "  db: {image: x, shm_size: lots}\n"
        "  other: {image: x}\n",
    )
    rendered, errors = render(load_all([tmp_path], environ={}))
    assert generated(rendered) == ["p-other", "p-project.target"]
    assert errors == [
        f"{path}:4:28: invalid size 'lots' (use e.g. 512M, 1G, 64k or bytes)",
        f"{path}:3:3: container 'p-api': not generated, its dependency service 'db' was not "
        "generated (see its errors)",
        f"{path}:2:3: container 'p-web': not generated, its dependency service 'api' was not "
        "generated (see its errors)",
    ]


def test_service_completed_successfully_waits_for_a_zero_exit(tmp_path: Path) -> None:
    write(
        tmp_path / "p" / "compose.yaml",
        "services:\n"
        "  web: {image: x, depends_on: {init: {condition: service_completed_successfully}}}\n"
        "  init: {image: x}\n",
    )
    rendered, errors = render(load_all([tmp_path], environ={}))
    assert errors == []
    assert values(rendered, "p-web.service", "Unit", "Requires") == ["p-init.service"]
    (pre,) = values(rendered, "p-web.service", "Service", "ExecStartPre")
    assert pre.startswith('/bin/sh -c "code=$$(') and f"{PODUNIT} wait p-init" in pre
    assert 'test \\"$$code\\" = 0' in pre


def test_services_join_the_projects_network_under_their_names(tmp_path: Path) -> None:
    write(
        tmp_path / "p" / "compose.yaml",
        "services:\n"
        "  web: {image: x}\n"
        "  api: {image: x, networks: [default, back]}\n"
        "  host: {image: x, network_mode: host}\n"
        "networks:\n  back: {}\n",
    )
    result = load_all([tmp_path], environ={})
    assert result.errors == []
    web, api, host = (result.containers[f"p-{s}"] for s in ("web", "api", "host"))
    assert web.networks == (NetworkAttachment("p_default", ("web",)),)
    assert web.network_specs == (NetworkSpec("p_default"),)
    assert api.networks == (
        NetworkAttachment("p_default", ("api",)),
        NetworkAttachment("p_back", ("api",)),  # PROJECT_KEY, as Compose names it
    )
    assert (host.network, host.networks) == ("host", ())


def test_restart_on_failure_with_a_count_limits_the_restarts(tmp_path: Path) -> None:
    write(tmp_path / "p" / "compose.yaml", "services:\n  a: {image: x, restart: 'on-failure:3'}\n")
    rendered, errors = render(load_all([tmp_path], environ={}))
    assert errors == []
    assert values(rendered, "p-a.service", "Service", "Restart") == ["on-failure"]
    assert values(rendered, "p-a.service", "Unit", "StartLimitBurst") == ["4"]
    assert values(rendered, "p-a.service", "Unit", "StartLimitIntervalSec") == ["infinity"]


def test_cost_free_keys_are_recorded(tmp_path: Path) -> None:
    write(
        tmp_path / "p" / "compose.yaml",
        "services:\n"
        "  a:\n"
        "    image: x\n"
        "    expose: ['80', '9000-9001/udp']\n"
        "    stdin_open: true\n"
        "    tty: true\n"
        "    shm_size: 128m\n"
        "    domainname: example.org\n"
        "    platform: linux/amd64\n"
        "    env_file: [{path: missing.env, required: false}, present.env]\n"
        "    healthcheck: {test: [CMD, 'true'], start_interval: 2s}\n"
        "    x-anything: {ignored: true}\n"
        "version: '3.9'\n"
        "x-top: ignored\n",
    )
    import os

    if os.uname().machine != "x86_64":
        pytest.skip("the file says platform linux/amd64")
    result = load_all([tmp_path], environ={})
    assert result.errors == []
    a = result.containers["p-a"]
    assert a.expose == ("80", "9000-9001/udp") and a.stdin_open and a.tty
    assert (a.shm_size, a.domainname) == (128 << 20, "example.org")
    assert a.env_files == (f"-{tmp_path}/p/missing.env", f"{tmp_path}/p/present.env")
    assert a.healthcheck is not None and a.healthcheck.start_interval.total_seconds() == 2


def test_the_generator_cache_sees_dotenv_and_the_environment(tmp_path: Path) -> None:
    write(tmp_path / "p" / "compose.yaml", "services:\n  a: {image: x}\n")
    scan = Scan()
    scan.walk(str(tmp_path), shadow=True)
    assert not any(str(item[1]).endswith(".env") for item in scan.inputs)
    write(tmp_path / "p" / ".env", "A=1\n")
    scan = Scan()
    scan.walk(str(tmp_path), shadow=True)
    assert any(item[0] == "f" and str(item[1]).endswith("/p/.env") for item in scan.inputs)
    assert environment_digest({"A": "1"}) != environment_digest({"A": "2"})
    assert environment_digest({"A": "1"}) == environment_digest({"A": "1"})


def test_a_projects_other_yaml_files_are_not_definitions(tmp_path: Path) -> None:
    """Below a search directory, a directory with a Compose file is that project's: its
    prometheus.yml and config/ subdirectory are the project's files, not definitions."""
    write(tmp_path / "mon" / "compose.yaml", "services:\n  prom: {image: prom}\n")
    write(tmp_path / "mon" / "prometheus.yml", "global: {scrape_interval: 15s}\n")
    write(tmp_path / "mon" / "config" / "grafana.yaml", "apiVersion: 1\n")
    write(tmp_path / "mon" / "docker-compose.yml", "services:\n  other: {image: x}\n")
    result = load_all([tmp_path], environ={})
    assert result.errors == []
    assert list(result.containers) == ["mon-prom"]  # compose.yaml first, as Compose reads
    # podunit validate DIR treats DIR itself the same way
    assert list(load_paths([tmp_path / "mon"], environ={}).containers) == ["mon-prom"]


def test_a_compose_file_in_a_search_directory_hides_nothing(tmp_path: Path) -> None:
    write(tmp_path / "compose.yaml", "name: top\nservices:\n  a: {image: x}\n")
    write(tmp_path / "web.yaml", "containers:\n  web: {image: x}\n")
    result = load_all([tmp_path], environ={})
    assert result.errors == []
    assert sorted(result.containers) == ["top-a", "web"]


def test_every_problem_of_a_service_is_reported_in_one_run(tmp_path: Path) -> None:
    """Refused keys, unknown keys, bad values and a missing variable: all at once, in
    the order of the file, each naming the key as written (pids_limit, not pids)."""
    path = write(
        tmp_path / "p" / "compose.yaml",
        "services:\n"
        "  web:\n"
        "    image: nginx\n"
        "    stop_grace_period: forever\n"
        "    mem_limit: lots\n"
        "    pids_limit: -3\n"
        "    links: [db]\n"
        "    ports: ['99999:80']\n"
        "    environment: {A: '${B:?need B}'}\n"
        "    tty: maybe\n"
        "    pre_start: x\n",
    )
    result = load_all([tmp_path], environ={})
    assert [str(e).removeprefix(f"{path}:") for e in result.errors] == [
        "4:24: invalid duration 'forever' (use e.g. 10s, 1m30s, 500ms)",
        "5:16: invalid size 'lots' (use e.g. 512M, 1G, 64k or bytes)",
        "6:17: pids_limit '-3' out of range >= 1",
        "7:5: Compose key 'links' is not supported by podunit",
        "8:13: port '99999' out of range 1..65535",
        "9:22: required variable B is unset: need B",
        "10:10: tty must be true or false, not 'maybe'",
        "11:5: unknown Compose key 'pre_start'",  # no "did you mean 'restart'"
    ]
    assert result.containers == {}


def test_pids_limit_minus_one_is_unlimited(tmp_path: Path) -> None:
    write(tmp_path / "p" / "compose.yaml", "services:\n  a: {image: x, pids_limit: -1}\n")
    result = load_all([tmp_path], environ={})
    assert result.errors == [] and result.containers["p-a"].resources.pids is None


def test_environment_names_without_values_come_from_the_project(tmp_path: Path) -> None:
    """`environment: [NAME]` / `{NAME: }`: passed from the environment or `.env` as
    Compose does; left out when unset; named in the unit's header."""
    write(
        tmp_path / "p" / "compose.yaml",
        "services:\n"
        "  a: {image: x, environment: [FROM_ENV, FROM_DOTENV, UNSET, SET=1]}\n"
        "  b: {image: x, environment: {FROM_ENV: null, UNSET: null, SET: '1'}}\n",
    )
    write(tmp_path / "p" / ".env", "FROM_DOTENV=d\n")
    result = load_all([tmp_path], environ={"FROM_ENV": "e"})
    assert result.errors == []
    assert result.containers["p-a"].environment == (
        ("FROM_ENV", "e"),
        ("FROM_DOTENV", "d"),
        ("SET", "1"),
    )
    assert result.containers["p-b"].environment == (("FROM_ENV", "e"), ("SET", "1"))
    assert result.notes["p-a"][1].startswith(
        "Variables: FROM_DOTENV (.env), FROM_ENV (environment), UNSET (unset)"
    )


def test_env_files_use_the_dotenv_syntax_unless_raw(tmp_path: Path) -> None:
    from toolkit.runtime.oci import read_env_files

    write(
        tmp_path / "p" / "compose.yaml",
        "services:\n"
        "  a: {image: x, env_file: [a.env]}\n"
        "  b: {image: x, env_file: [{path: b.env, format: raw}]}\n"
        "  c: {image: x, env_file: [{path: a.env, format: raw}, a.env]}\n"
        "  d: {image: x, env_file: [{path: a.env, format: yaml}]}\n",
    )
    env = write(tmp_path / "p" / "a.env", "export A=\"quoted ${B:-x}\" # comment\nB='$lit'\n")
    result = load_all([tmp_path], environ={})
    a, b = result.containers["p-a"], result.containers["p-b"]
    assert (a.env_file_syntax, b.env_file_syntax) == ("dotenv", "plain")
    assert read_env_files(a.env_files, a.env_file_syntax) == (("A", "quoted x"), ("B", "$lit"))
    write(tmp_path / "p" / "b.env", "B='$lit'\n")
    assert read_env_files(b.env_files, b.env_file_syntax) == (("B", "'$lit'"),)  # as written
    assert [str(e).split(": ", 1)[1] for e in result.errors] == [
        "env_file: all files or none have 'format: raw' in podunit",
        "env_file format 'yaml' is not supported by podunit (raw)",
    ]
    assert env.exists()


def test_deploy_restart_policy_maps_onto_restart(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p" / "compose.yaml",
        "services:\n"
        "  a:\n"
        "    image: x\n"
        "    deploy:\n"
        "      replicas: 1\n"
        "      restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s}\n"
        "  b:\n"
        "    image: x\n"
        "    restart: always\n"
        "    deploy: {restart_policy: {condition: any, window: 2m}}\n",
    )
    result = load_all([tmp_path], environ={})
    rendered, _ = render(result)
    assert values(rendered, "p-a.service", "Service", "Restart") == ["on-failure"]
    assert values(rendered, "p-a.service", "Service", "RestartSec") == ["5"]
    assert values(rendered, "p-a.service", "Unit", "StartLimitBurst") == ["4"]
    assert [str(e).removeprefix(f"{path}:") for e in result.errors] == [
        "10:31: restart is set twice (restart and deploy.restart_policy)",
        "10:47: Compose key 'deploy.restart_policy.window' is not supported by podunit",
    ]

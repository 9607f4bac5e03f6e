"""Named and anonymous volumes, secrets and configs in definitions (podunit.yaml(5)
VOLUMES, SECRETS AND CONFIGS), in both forms: what they parse into, and every bad
value reported, located, in one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_compose import load_compose, messages
from toolkit.definitions.instances import instantiate
from toolkit.definitions.loader import load_all, load_paths
from toolkit.definitions.model import (
    Mount,
    MountType,
    Secret,
    Volume,
    container_from_json,
    container_to_json,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- volumes, own form


def test_own_form_declared_undeclared_and_anonymous_volumes(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    path = write(
        tmp_path / "db.yaml",
        "containers:\n"
        "  db:\n"
        "    image: postgres\n"
        "    volumes:\n"
        "      - pgdata:/var/lib/postgresql/data:Z\n"
        "      - cache:/cache:ro,nocopy\n"
        "      - /anon\n"
        "      - {type: volume, target: /anon2}\n"
        "      - {type: volume, source: media, target: /media, volume: {nocopy: true}}\n"
        "      - {type: volume, source: mem, target: /mem, read_only: true}\n"
        "      - {type: bind, source: ./media, target: /m2, bind: {create_host_path: true,"
        " selinux: z}, consistency: cached}\n"
        "volumes:\n"
        "  pgdata: {driver: local, labels: {tier: db}}\n"
        "  media: {driver_opts: {type: none, o: bind, device: ./media}}\n"
        "  mem: {driver_opts: {type: tmpfs, device: tmpfs, o: 'size=64m,mode=1777'}}\n"
        "  unused: {name: other}\n",
    )
    result = load_paths([path])
    assert result.errors == []
    db = result.containers["db"]
    assert db.mounts == (
        Mount(MountType.VOLUME, "/var/lib/postgresql/data", "pgdata"),
        Mount(MountType.VOLUME, "/cache", "cache", True, None, ("nocopy",)),
        Mount(MountType.VOLUME, "/anon"),
        Mount(MountType.VOLUME, "/anon2"),
        Mount(MountType.VOLUME, "/media", "media", options=("nocopy",)),
        Mount(MountType.VOLUME, "/mem", "mem", read_only=True),
        Mount(MountType.BIND, "/m2", str(tmp_path / "media"), options=("create_host_path",)),
    )
    assert db.volumes == (
        Volume("pgdata", labels=(("tier", "db"),)),
        Volume("media", "bind", str(tmp_path / "media")),
        Volume("mem", "tmpfs", None, ("size=64m", "mode=1777")),
    )
    assert container_from_json(container_to_json(db)) == db


def test_own_form_short_bind_syntax_does_not_create_the_host_path(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "containers:\n  a:\n    image: x\n    volumes: ['./d:/d']\n")
    (a,) = load_all([tmp_path]).containers.values()
    assert a.mounts == (Mount(MountType.BIND, "/d", str(tmp_path / "d")),)


def test_a_template_may_name_a_volume_per_instance(tmp_path: Path) -> None:
    write(
        tmp_path / "w.yaml",
        "containers:\n  worker@:\n    image: x\n"
        "    volumes: ['cache-%i:/cache', {type: volume, source: 'w-%i', target: /w}]\n"
        "  plain:\n    image: x\n    volumes: ['cache-%i:/cache']\n",
    )
    result = load_all([tmp_path])
    assert [str(e).split(": ", 1)[1] for e in result.errors] == ["invalid volume name 'cache-%i'"]
    worker = instantiate(result.containers["worker@"], "7")
    assert [m.source for m in worker.mounts] == ["cache-7", "w-7"]


def test_one_volume_one_declaration_across_files(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "containers:\n  a: {image: x, volumes: ['d:/d']}\n"
          "volumes:\n  d: {driver_opts: {type: tmpfs}}\n")  # fmt: skip
    write(tmp_path / "b.yaml", "containers:\n  b: {image: x, volumes: ['d:/d']}\n"
          "volumes: {d: {}}\n")  # fmt: skip
    write(tmp_path / "c.yaml", "containers:\n  c: {image: x, volumes: ['d:/d']}\n"
          "volumes: {d: {external: true}}\n")  # fmt: skip
    write(tmp_path / "e.yaml", "containers:\n  e: {image: x, volumes: ['d:/d']}\n")
    result = load_all([tmp_path])
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/b.yaml:2:3: volume 'd' is declared otherwise for container 'a' "
        f"({tmp_path}/a.yaml:2); one volume has one set of settings"
    ]
    assert sorted(result.containers) == ["a", "c", "e"]


def test_volume_name_overrides_and_external(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        "containers:\n  a:\n    image: x\n    volumes: ['v:/v', 'e:/e', 'l:/l']\n"
        "volumes:\n  v: {name: real-v}\n  e: {external: true}\n  l: {external: {name: legacy}}\n",
    )
    (a,) = load_all([tmp_path]).containers.values()
    assert [m.source for m in a.mounts] == ["real-v", "e", "legacy"]
    assert a.volumes == (Volume("real-v"), Volume("e", external=True),
                         Volume("legacy", external=True))  # fmt: skip


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        ("v: {driver: nfs}", "4:15: volume driver 'nfs' is not supported by podunit"),
        ("v: {drivr: local}", "4:7: unknown key 'drivr' in volume 'v' (did you mean 'driver'?)"),
        ("v: {external: true, labels: {a: b}}", "4:23: volume 'v' is external: 'labels'"),
        ("v: {driver_opts: {type: nfs, o: addr=1}}", "4:27: volume type 'nfs' is not supported"),
        ("v: {driver_opts: {type: none, device: /x}}", "4:20: driver_opts type none needs o: bind"),
        ("v: {driver_opts: {type: none, o: bind}}", "4:20: driver_opts o: bind needs 'device'"),
        ("v: {driver_opts: {type: tmpfs, o: 'size=x'}}", "4:37: invalid size 'x'"),
        ("v: {driver_opts: {type: tmpfs, o: 'foo=1'}}", "4:37: unknown tmpfs option 'foo=1'"),
        ("v: {driver_opts: {o: bind}}", "4:20: driver_opts needs 'type'"),
        ("-v: {}", "4:3: invalid volume name '-v'"),
        ("v: {name: 'a b'}", "4:13: invalid volume name 'a b'"),
    ],
)
def test_bad_volume_declarations_are_located(
    tmp_path: Path, declaration: str, expected: str
) -> None:
    path = write(
        tmp_path / "a.yaml",
        f"containers:\n  a: {{image: x, volumes: ['v:/v']}}\nvolumes:\n  {declaration}\n",
    )
    result = load_paths([path])
    found = messages(result, path)
    assert found[0] == expected or found[0].startswith(expected), found
    if declaration.startswith("v:"):  # the container that uses it is not generated
        assert found[1:] == ["2:27: volume 'v' cannot be used: its declaration has errors"]
        assert result.containers == {}


def test_every_bad_volume_of_a_file_is_reported_in_one_run(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yaml",
        "containers:\n  a: {image: x}\n"
        "volumes:\n  v: {driver: nfs}\n  w: {external: maybe}\n  x: {driver_opts: {type: cifs}}\n",
    )
    assert [m.split(":")[0] for m in messages(load_paths([path]), path)] == ["4", "5", "6"]


# ---------------------------------------------------------------- volumes, Compose


def test_compose_volumes_are_named_after_the_project(tmp_path: Path) -> None:
    result = load_compose(
        tmp_path,
        "name: shop\n"
        "services:\n"
        "  db:\n"
        "    image: postgres\n"
        "    volumes: ['data:/data', 'ext:/ext', 'named:/n', ./host:/host, /anon]\n"
        "volumes:\n  data:\n  ext: {external: true}\n  named: {name: exact}\n",
    )
    assert result.errors == []
    db = result.containers["shop-db"]
    assert db.mounts == (
        Mount(MountType.VOLUME, "/data", "shop_data"),
        Mount(MountType.VOLUME, "/ext", "ext"),
        Mount(MountType.VOLUME, "/n", "exact"),
        Mount(MountType.BIND, "/host", str(tmp_path / "host"), options=("create_host_path",)),
        Mount(MountType.VOLUME, "/anon"),
    )
    assert [v.name for v in db.volumes] == ["shop_data", "ext", "exact"]


def test_compose_project_defaults_to_the_normalised_directory(tmp_path: Path) -> None:
    directory = tmp_path / "My.Shop-2"
    directory.mkdir()
    result = load_compose(
        directory, "services:\n  db: {image: x, volumes: ['data:/d']}\nvolumes: {data: {}}\n"
    )
    assert result.containers["myshop-2-db"].mounts[0].source == "myshop-2_data"


def test_compose_undeclared_volume_is_a_located_error(tmp_path: Path) -> None:
    result = load_compose(
        tmp_path,
        "services:\n  db:\n    image: x\n    volumes:\n      - date:/d\nvolumes:\n  data: {}\n",
    )
    path = tmp_path / "compose.yaml"
    assert messages(result, path) == [
        "5:9: volume 'date' is not declared under the top-level 'volumes:' (did you mean 'data'?)"
    ]
    assert result.errors[0].hint == "add it: volumes: {date: {}}"


# ---------------------------------------------------------------- secrets and configs


def test_secrets_and_configs_both_syntaxes(tmp_path: Path) -> None:
    write(tmp_path / "pw.txt", "hunter2\n")
    result = load_compose(
        tmp_path,
        "services:\n"
        "  web:\n"
        "    image: x\n"
        "    secrets:\n"
        "      - pw\n"
        "      - {source: token, target: api, uid: '33', gid: '33', mode: 0400}\n"
        "      - {source: pw, target: /etc/pw}\n"
        "    configs:\n"
        "      - site\n"
        "      - {source: inline, target: /etc/inline.conf, mode: 0640}\n"
        "secrets:\n"
        "  pw: {file: ./pw.txt}\n"
        "  token: {environment: API_TOKEN}\n"
        "configs:\n"
        "  site: {file: site.conf}\n"
        "  inline: {content: 'a = 1'}\n",
    )
    path = tmp_path / "compose.yaml"
    # validate checks the files: site.conf is missing
    assert messages(result, path) == [f"2:3: config 'site': no such file '{tmp_path}/site.conf'"]
    (web,) = result.containers.values()  # unit PROJECT-web, the project its directory
    pw = str(tmp_path / "pw.txt")
    assert web.secrets == (
        Secret("pw", "/run/secrets/pw", file=pw),
        Secret("token", "/run/secrets/api", environment="API_TOKEN", uid=33, gid=33, mode=0o400),
        Secret("pw", "/etc/pw", file=pw),
        Secret("site", "/site", file=str(tmp_path / "site.conf"), config=True),
        Secret("inline", "/etc/inline.conf", content="a = 1", mode=0o640, config=True),
    )
    assert container_from_json(container_to_json(web)) == web
    # the generator does not look at the files (a file made after daemon-reload counts)
    assert load_all([tmp_path]).errors == []


def test_own_form_secrets(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        "containers:\n  a:\n    image: x\n    secrets: [{source: s, mode: '0o440'}]\n"
        "secrets:\n  s: {environment: S}\n",
    )
    (a,) = load_all([tmp_path]).containers.values()
    assert a.secrets == (Secret("s", "/run/secrets/s", environment="S", mode=0o440),)


@pytest.mark.parametrize(
    ("service", "top", "expected"),
    [
        ("secrets: [nope]", "secrets: {s: {environment: S}}",
         "3:15: secret 'nope' is not declared under the top-level 'secrets:'"),
        ("secrets: [{target: x}]", "secrets: {s: {environment: S}}",
         "3:15: a secret reference needs 'source'"),
        ("secrets: [{source: s, mode: rw}]", "secrets: {s: {environment: S}}",
         "3:33: mode 'rw' must be an octal number such as 0440"),
        ("secrets: [{source: s, uid: abc}]", "secrets: {s: {environment: S}}",
         "3:32: uid must be a number 0..4294967294, not 'abc'"),
        ("secrets: [{source: s, target: ../x}]", "secrets: {s: {environment: S}}",
         "3:15: secret target '/run/secrets/../x' must be a plain absolute path"),
        ("configs: [c]", "configs: {c: {file: a, content: b}}",
         "5:24: config 'c' needs exactly one of 'file', 'environment' or 'content'"),
        ("secrets: [s]", "secrets: {s: {content: b}}", "5:15: unknown key 'content' in secret 's'"),
        ("secrets: [s]", "secrets: {s: {}}",
         "5:11: secret 's' needs exactly one of 'file' or 'environment'"),
        ("secrets: [s]", "secrets: {s: {external: true}}",
         "5:15: external secrets live in a Swarm and are not supported by podunit"),
        ("secrets: [s]", "secrets: {s: {template_driver: golang, file: x}}",
         "5:15: secret key 'template_driver' needs a Swarm"),
    ],
)  # fmt: skip
def test_bad_secrets_are_located(tmp_path: Path, service: str, top: str, expected: str) -> None:
    valid = "s: {content" not in top  # the others are valid Compose, refused by podunit
    result = load_compose(
        tmp_path, f"services:\n  web:\n    {service}\n    image: x\n{top}\n", valid=valid
    )
    found = messages(result, tmp_path / "compose.yaml")
    assert found[0].startswith(expected), found
    if len(found) > 1:  # the declaration is bad: its user says so too, and is not generated
        user = f"3:15: {top[:6]} {top.split('{')[1][0]!r} cannot be used"
        assert found[1:] == [f"{user}: its declaration has errors"]
    assert result.containers == {}

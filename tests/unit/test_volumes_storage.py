"""Volumes in the state store (storage.volumes) and made concrete at start (runtime.mounts):
real SQLite and real directories in a temp state dir, no root needed (chown to the
caller's own ids only)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.definitions.model import Container, Mount, MountType, Secret, Volume
from toolkit.errors import Location, PodunitError
from toolkit.runtime import mounts
from toolkit.storage import records
from toolkit.storage import state as st
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.volumes import VolumeInUse, VolumeNotFound, VolumeStore

UID, GID = os.getuid(), os.getgid()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[st.StateStore]:
    env = {"PODUNIT_STATE_DIR": str(tmp_path / "state"), "PODUNIT_RUN_DIR": str(tmp_path / "run")}
    with st.StateStore(RuntimePaths.for_mode(False, env)) as opened:
        yield opened


def add_user(store: st.StateStore, name: str, volumes: list[str]) -> records.ContainerRecord:
    record = records.ContainerRecord(
        id=os.urandom(32).hex(), name=name, runtime="/usr/sbin/runc", status=records.EXITED,
        created_at=time.time(), spec={}, options=records.ContainerOptions(volumes=tuple(volumes)),
    )  # fmt: skip
    store.add(record)
    return record


def container(**fields: object) -> Container:
    return Container(name="web", source=Location("/d/web.yaml", 2, 3), rootfs="/r", **fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the store


def test_create_find_list_and_remove(store: st.StateStore) -> None:
    volumes = VolumeStore(store)
    data = volumes.create("data", labels={"tier": "db"})
    assert data.mountpoint == f"{store.paths.state_dir}/volumes/data/_data"
    assert os.path.isdir(data.mountpoint) and data.needs_copy_up and not data.anonymous
    assert stat.S_IMODE(os.stat(data.mountpoint).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(store.paths.volumes_dir).st_mode) == 0o700
    with pytest.raises(PodunitError, match="volume data already exists"):
        volumes.create("data")
    assert volumes.create("data", exist_ok=True) == data
    described = data.describe(["web"])
    assert described["Name"] == "data" and described["Driver"] == "local"
    assert described["Labels"] == {"tier": "db"} and described["UsedBy"] == ["web"]
    random = volumes.create()
    assert len(random.name) == 64
    assert [v.name for v in volumes.all()] == sorted(["data", random.name])
    # a second store over the same database sees them (the table is made once)
    assert VolumeStore(store).get("data") == data
    volumes.remove("data")
    assert not os.path.exists(os.path.dirname(data.mountpoint))
    with pytest.raises(VolumeNotFound, match="no such volume: data"):
        volumes.get("data")
    with pytest.raises(PodunitError, match="invalid volume name"):
        volumes.create("../x")


def test_bind_and_tmpfs_kinds(store: st.StateStore, tmp_path: Path) -> None:
    volumes = VolumeStore(store)
    device = tmp_path / "media"
    with pytest.raises(PodunitError, match="is not a directory"):
        volumes.create("media", kind="bind", device=str(device))
    device.mkdir()
    (device / "keep").write_text("x")
    media = volumes.create("media", kind="bind", device=str(device))
    assert media.mountpoint == str(device)
    assert media.describe()["Options"] == {"type": "none", "o": "bind", "device": str(device)}
    volumes.remove("media")
    assert (device / "keep").read_text() == "x"  # the user's directory is never deleted
    mem = volumes.create("mem", kind="tmpfs", options=("size=1m",))
    assert mem.mountpoint is None
    assert mem.describe()["Options"]["o"] == "size=1m"


def test_in_use_volumes_cannot_be_removed_and_prune(store: st.StateStore) -> None:
    volumes = VolumeStore(store)
    volumes.create("used")
    volumes.create("idle")
    anon_used = volumes.create(owner="web", target="/a")
    anon_idle = volumes.create(owner="old", target="/b")
    user = add_user(store, "web", ["used", anon_used.name])
    with pytest.raises(VolumeInUse, match="volume used is in use by container web") as caught:
        volumes.remove("used")
    assert caught.value.hint == "remove the container first: podunit rm web"
    assert volumes.prune() == [anon_idle.name]  # Docker's rule: anonymous ones only
    assert volumes.prune(everything=True) == ["idle"]
    assert volumes.remove_anonymous_of("web") == []  # still used by its container
    store.remove(user)
    assert volumes.anonymous_of("web", "/a") == anon_used
    assert volumes.remove_anonymous_of("web") == [anon_used.name]
    assert [v.name for v in volumes.all()] == ["used"]


# ---------------------------------------------------------------- resolving at start


def rootfs_with_data(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "var/lib/app").mkdir(parents=True)
    (root / "var/lib/app/seed.txt").write_text("from the image\n")
    (root / "var/lib/app/.hidden").write_text("h")
    os.chmod(root / "var/lib/app", 0o750)
    (root / "link").symlink_to("/var/lib/app")  # absolute: resolved inside the root
    (root / "escape").symlink_to("../../../../etc")
    return root


def test_named_volume_is_created_and_populated_once(store: st.StateStore, tmp_path: Path) -> None:
    root = rootfs_with_data(tmp_path)
    web = container(mounts=(Mount(MountType.VOLUME, "/var/lib/app", "appdata"),))
    resolved = mounts.resolve(store, web, rootfs=str(root), bundle=str(tmp_path / "b"))
    data = f"{store.paths.state_dir}/volumes/appdata/_data"
    assert resolved.volumes == ("appdata",)
    assert resolved.container.mounts == (Mount(MountType.BIND, "/var/lib/app", data),)
    assert sorted(os.listdir(data)) == [".hidden", "seed.txt"]
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o750  # the mount point's mode
    # the container changes the data; the next start copies nothing again
    os.unlink(f"{data}/seed.txt")
    mounts.resolve(store, web, rootfs=str(root), bundle=str(tmp_path / "b"))
    assert os.listdir(data) == [".hidden"]
    assert not VolumeStore(store).get("appdata").needs_copy_up


def test_copy_up_rules(store: st.StateStore, tmp_path: Path) -> None:
    root = rootfs_with_data(tmp_path)
    nocopy = container(mounts=(Mount(MountType.VOLUME, "/var/lib/app", "n", options=("nocopy",)),))
    mounts.resolve(store, nocopy, rootfs=str(root), bundle=str(tmp_path / "b"))
    assert os.listdir(VolumeStore(store).get("n").mountpoint or "") == []
    # an existing volume that is not empty is left alone even when new
    volumes = VolumeStore(store)
    full = volumes.create("full")
    Path(full.mountpoint or "", "mine").write_text("x")
    assert not mounts.copy_up(str(root), "/var/lib/app", full.mountpoint or "")
    # symbolic links resolve inside the root, never outside it
    assert mounts.path_in_root(str(root), "/link/seed.txt") == f"{root}/var/lib/app/seed.txt"
    assert (
        mounts.path_in_root(str(root), "/escape") == f"{root}/etc"
        or mounts.path_in_root(str(root), "/escape") is None
    )
    assert mounts.path_in_root(str(root), "/nothing/here") is None
    empty = volumes.create("empty")
    assert mounts.copy_up(str(root), "/link", empty.mountpoint or "")
    assert os.listdir(empty.mountpoint or "") != []


def test_anonymous_volumes_belong_to_the_container_name(
    store: st.StateStore, tmp_path: Path
) -> None:
    web = container(mounts=(Mount(MountType.VOLUME, "/scratch"),))
    first = mounts.resolve(store, web, rootfs=str(tmp_path), bundle=str(tmp_path / "b"))
    again = mounts.resolve(store, web, rootfs=str(tmp_path), bundle=str(tmp_path / "b"))
    assert first.volumes == again.volumes and len(first.volumes[0]) == 64
    other = container(mounts=(Mount(MountType.VOLUME, "/scratch"),))._replace(name="other")
    assert mounts.resolve(store, other, rootfs=str(tmp_path), bundle=str(tmp_path / "b")).volumes \
        != first.volumes  # fmt: skip


def test_declared_volumes_external_mismatch_and_tmpfs(store: st.StateStore, tmp_path: Path) -> None:
    def run(mount: Mount, volume: Volume) -> mounts.Resolved:
        c = container(mounts=(mount,), volumes=(volume,))
        return mounts.resolve(store, c, rootfs=str(tmp_path), bundle=str(tmp_path / "b"))

    with pytest.raises(PodunitError, match="external volume ext does not exist") as caught:
        run(Mount(MountType.VOLUME, "/e", "ext"), Volume("ext", external=True))
    assert caught.value.hint == "create it first: podunit volume create ext"
    VolumeStore(store).create("ext")
    assert run(Mount(MountType.VOLUME, "/e", "ext"), Volume("ext", external=True)).volumes == (
        "ext",
    )
    tmpfs = Volume("mem", "tmpfs", None, ("size=1m",))
    mem = run(Mount(MountType.VOLUME, "/m", "mem", True), tmpfs)
    assert mem.container.mounts == (Mount(MountType.TMPFS, "/m", None, True, None, ("size=1m",)),)
    with pytest.raises(PodunitError, match="volume mem exists with other settings") as caught:
        run(Mount(MountType.VOLUME, "/m", "mem"), Volume("mem"))
    assert caught.value.hint == "to recreate it (its data is lost): podunit volume rm mem"


def test_bind_sources(store: st.StateStore, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    plain = container(mounts=(Mount(MountType.BIND, "/x", missing),))
    with pytest.raises(PodunitError, match=f"bind mount source {missing} for /x does not exist"):
        mounts.resolve(store, plain, rootfs=str(tmp_path), bundle=str(tmp_path / "b"))
    made = container(mounts=(Mount(MountType.BIND, "/x", missing, options=("create_host_path",)),))
    assert mounts.needs_resolving(made) and mounts.needs_resolving(plain)
    assert not mounts.needs_resolving(container(mounts=(Mount(MountType.TMPFS, "/t"),)))
    resolved = mounts.resolve(store, made, rootfs=str(tmp_path), bundle=str(tmp_path / "b"))
    assert os.path.isdir(missing)
    assert resolved.container.mounts == (Mount(MountType.BIND, "/x", missing),)


def test_secrets_are_written_with_owner_and_mode(store: st.StateStore, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    secrets = (
        Secret("pw", "/run/secrets/pw", file=str(tmp_path / "pw"), uid=UID, gid=GID, mode=0o400),
        Secret("token", "/run/secrets/token", environment="TOKEN"),
        Secret("conf", "/etc/app.conf", content="a = 1", config=True),
    )
    bundle = tmp_path / "bundle"
    resolved = mounts.resolve(store, container(secrets=secrets), rootfs=str(tmp_path),
                              bundle=str(bundle), environ={"TOKEN": "t0k"})  # fmt: skip
    files = [bundle / "secrets" / name for name in ("0-pw", "1-token", "2-conf")]
    assert resolved.container.mounts == tuple(
        Mount(MountType.BIND, s.target, str(f), True, None, ("nosuid", "nodev", "noexec"))
        for s, f in zip(secrets, files, strict=True)
    )
    # the record keeps where each value comes from, never the value of a secret
    assert "hunter2" not in json.dumps(resolved.secrets) and "t0k" not in json.dumps(
        resolved.secrets
    )
    assert not bundle.exists()  # written at launch
    mounts.write_secrets(resolved.secrets, {"TOKEN": "t0k"}, user_mode=False)
    assert [f.read_text() for f in files] == ["hunter2\n", "t0k", "a = 1"]
    assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o400, 0o444, 0o444]
    assert stat.S_IMODE((bundle / "secrets").stat().st_mode) == 0o700
    # a restart writes them again, with the environment of the process that starts it
    mounts.write_secrets(resolved.secrets, {"TOKEN": "new"}, user_mode=False)
    assert files[1].read_text() == "new"
    with pytest.raises(PodunitError, match="secret token: the variable TOKEN is not set"):
        mounts.resolve(store, container(secrets=secrets), rootfs=str(tmp_path),
                       bundle=str(bundle), environ={})  # fmt: skip
    with pytest.raises(PodunitError, match="secret token: the variable TOKEN is not set"):
        mounts.write_secrets(resolved.secrets, {}, user_mode=False)
    gone = (Secret("gone", "/run/secrets/gone", file=str(tmp_path / "nope")),)
    with pytest.raises(PodunitError, match="secret gone: cannot read"):
        mounts.resolve(store, container(secrets=gone), rootfs=str(tmp_path), bundle=str(bundle))


# ---------------------------------------------------------------- podunit volume


def test_volume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from toolkit.cli import main as cli

    monkeypatch.setenv("PODUNIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PODUNIT_RUN_DIR", str(tmp_path / "run"))

    def podunit(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    assert podunit("volume", "create", "-l", "a=b", "data") == (0, "data\n", "")
    assert podunit("volume", "create", "-o", "type=tmpfs", "-o", "o=size=1m", "mem")[0] == 0
    code, out, _ = podunit("volume", "ls")
    assert code == 0 and out.splitlines()[1:] == [
        f"local    {'data':<40} ",
        f"local    {'mem':<40} ",
    ]
    code, out, _ = podunit("volume", "inspect", "data")
    (data,) = json.loads(out)
    assert data["Labels"] == {"a": "b"} and data["Mountpoint"].endswith("/volumes/data/_data")
    code, _, err = podunit("volume", "create", "--driver", "nfs", "x")
    assert code == 125 and "volume driver 'nfs' is not supported by podunit" in err
    code, _, err = podunit("volume", "create", "-o", "type=cifs", "x")
    assert code == 125 and "volume type 'cifs' is not supported" in err
    with st.StateStore(RuntimePaths.for_mode(False)) as store:
        user = add_user(store, "web", ["data"])
        code, out, _ = podunit("volume", "ls", "--format", "json")
        assert [v["UsedBy"] for v in json.loads(out)] == [["web"], []]
        code, _, err = podunit("volume", "rm", "data")
        assert code == 125 and "volume data is in use by container web" in err
        store.remove(user)
    assert podunit("volume", "rm", "data", "mem") == (0, "data\nmem\n", "")
    code, _, err = podunit("volume", "rm", "data")
    assert code == 125 and "no such volume: data" in err
    assert podunit("volume", "rm", "-f", "data") == (0, "", "")
    assert podunit("volume", "prune", "--format", "json") == (0, "[]\n", "")


def test_where_volumes_live() -> None:
    system = RuntimePaths.for_mode(False, {})
    assert system.volume_data("db") == "/var/lib/podunit/volumes/db/_data"
    user = RuntimePaths.for_mode(True, {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7"})
    assert user.volume_data("db") == "/home/u/.local/share/podunit/volumes/db/_data"

"""The image keys (`pull`, `build`, `auto_update`), pull/build unit names, build digests,
pull progress reports and the image catalog's helpers (podunit.yaml(5) IMAGES)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from toolkit.definitions.loader import load_paths
from toolkit.definitions.model import AutoUpdate, Build, PullPolicy
from toolkit.definitions.parse import built_image_name
from toolkit.runtime.builds import build_digest
from toolkit.runtime.pulling import EXTEND_SECONDS, NotifyProgress, TerminalProgress
from toolkit.storage.image_catalog import digest_of_root, users_by_digest
from toolkit.storage.images import PullProgress, parse_image_reference
from toolkit.storage.records import ContainerOptions, ContainerRecord
from toolkit.unitgen.images import pull_unit_name, stronger


def load(tmp_path: Path, text: str, name: str = "defs.yaml") -> tuple[dict[str, Any], list[str]]:
    path = tmp_path / name
    path.write_text(text)
    loaded = load_paths([str(path)])
    return loaded.containers, [str(error) for error in loaded.errors]


def test_own_form_keys(tmp_path: Path) -> None:
    containers, errors = load(
        tmp_path,
        "containers:\n"
        "  a: {image: x, pull: newer, auto_update: registry}\n"
        "  b:\n"
        "    build: {context: ctx, dockerfile: Containerfile.prod, args: [V=1], target: t,\n"
        "            labels: {k: v}}\n"
        "  c: {build: ., image: localhost/c:1}\n",
    )
    assert errors == []
    assert (containers["a"].pull, containers["a"].auto_update) == (
        PullPolicy.NEWER, AutoUpdate.REGISTRY
    )  # fmt: skip
    assert containers["b"].build == Build(
        context=f"{tmp_path}/ctx", dockerfile=f"{tmp_path}/ctx/Containerfile.prod",
        args=(("V", "1"),), target="t", labels=(("k", "v"),),
    )  # fmt: skip
    assert containers["b"].image == built_image_name("b") == "localhost/podunit/b:latest"
    assert containers["c"].build == Build(context=str(tmp_path))
    assert containers["c"].image == "localhost/c:1"


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("{image: x, pull: sometimes}", "2:23: invalid pull 'sometimes' (one of: missing, always"),
        ("{build: {dockerfile: D}}", "2:14: build needs 'context'"),
        ("{build: ., rootfs: /r}", "has both 'build' and 'rootfs'"),
        ("{build: {context: ., cache_from: [x]}}", "unknown key 'cache_from' in build"),
        ("{image: x, labels: {io.containers.autoupdate: daily}}", "must be 'registry' or 'local'"),
        (
            "{image: x, auto_update: local, labels: {io.containers.autoupdate: registry}}",
            "auto_update 'local' contradicts the label",
        ),
    ],
)
def test_own_form_errors(tmp_path: Path, snippet: str, message: str) -> None:
    _, errors = load(tmp_path, f"containers:\n  a: {snippet}\n")
    assert len(errors) == 1 and message in errors[0], errors


def test_compose_build_pull_policy_and_autoupdate_label(tmp_path: Path) -> None:
    containers, errors = load(
        tmp_path,
        "services:\n"
        "  web:\n"
        "    build: {context: app, args: {A: '1'}}\n"
        "    image: localhost/web:1\n"
        "    pull_policy: build\n"
        "  api:\n"
        "    image: quay.io/x/api\n"
        "    pull_policy: if_not_present\n"
        "    labels: [io.containers.autoupdate=registry]\n"
        "  job: {image: quay.io/x/job, pull_policy: always}\n",
        "compose.yaml",
    )
    assert errors == []
    containers = {c.service: c for c in containers.values()}  # units are PROJECT-SERVICE
    assert containers["web"].build == Build(context=f"{tmp_path}/app", args=(("A", "1"),))
    assert containers["api"].pull is PullPolicy.MISSING
    assert containers["api"].auto_update is AutoUpdate.REGISTRY
    assert containers["job"].pull is PullPolicy.ALWAYS


def test_compose_periodic_pull_policies_point_to_auto_update(tmp_path: Path) -> None:
    _, errors = load(tmp_path, "services:\n  a: {image: x, pull_policy: daily}\n", "c.yaml")
    assert errors == [f"{tmp_path}/c.yaml:2:30: pull_policy 'daily' is not supported by podunit"]
    loaded = load_paths([str(tmp_path / "c.yaml")])
    assert "podunit-auto-update.timer" in (loaded.errors[0].hint or "")


def test_pull_unit_names() -> None:
    assert pull_unit_name("nginx") == r"podunit-pull-docker.io-library-nginx\x3alatest.service"
    assert pull_unit_name("docker://nginx:1") == pull_unit_name("docker.io/library/nginx:1")
    assert pull_unit_name("oci-archive:/srv/a.tar") is None
    assert pull_unit_name("oci:/srv/layout:v1") is None
    long = pull_unit_name("registry.example.com/" + "a/" * 130 + "b")
    assert long is not None and len(long) <= 255 and long.endswith(".service")
    assert stronger(PullPolicy.MISSING, PullPolicy.ALWAYS) is PullPolicy.ALWAYS
    assert stronger(PullPolicy.NEWER, PullPolicy.MISSING) is PullPolicy.NEWER


def test_repository_drops_tag_and_digest() -> None:
    digest = "sha256:" + "a" * 64
    assert parse_image_reference("127.0.0.1:5000/app:v1").repository == "127.0.0.1:5000/app"
    assert parse_image_reference(f"nginx@{digest}").repository == "docker.io/library/nginx"
    assert parse_image_reference("localhost:5000/a/b").repository == "localhost:5000/a/b"


def test_build_digest_follows_the_context_and_the_arguments(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    (context / "sub").mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM scratch\n")
    (context / "sub" / "file").write_text("one")
    build = Build(context=str(context))
    first = build_digest(build)
    assert build_digest(build) == first
    (context / "sub" / "file").write_text("two")
    second = build_digest(build)
    assert second != first
    os.chmod(context / "sub" / "file", 0o600)
    assert build_digest(build) != second
    assert build_digest(build._replace(args=(("A", "1"),))) != build_digest(build)
    assert build_digest(build._replace(target="t")) != build_digest(build)
    outside = tmp_path / "Dockerfile.other"
    outside.write_text("FROM scratch\n")
    with_file = build_digest(build._replace(dockerfile=str(outside)))
    outside.write_text("FROM scratch\nLABEL a=b\n")
    assert build_digest(build._replace(dockerfile=str(outside))) != with_file
    with pytest.raises(Exception, match="is not a directory"):
        build_digest(Build(context=str(tmp_path / "missing")))


def test_terminal_progress_rewrites_one_line(tmp_path: Path) -> None:
    out = (tmp_path / "out").open("w+", newline="")
    report = TerminalProgress(out)
    progress = PullProgress("r/app:v1", 2, 3_000_000)
    progress.bytes_done, progress.layers_done = 1_500_000, 1
    report(progress)
    progress.done, progress.bytes_done, progress.layers_done = True, 3_000_000, 2
    report(progress)
    out.seek(0)
    assert out.read() == (
        "\rpulling r/app:v1: 1/2 layers, 1.5 MB of 3.0 MB"
        "\rpulled r/app:v1: 2/2 layers, 3.0 MB of 3.0 MB \n"
    )


def test_notify_progress_extends_only_while_bytes_arrive(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(1)
    report = NotifyProgress({"NOTIFY_SOCKET": address})
    progress = PullProgress("r/app:v1", None, None)
    progress.bytes_done = 10
    report(progress)
    first = listener.recv(4096).decode()
    assert first.splitlines() == [
        f"EXTEND_TIMEOUT_USEC={EXTEND_SECONDS * 1_000_000}",
        "STATUS=pulling r/app:v1: 0 blobs, 0.0 MB",
    ]
    report.last -= 5  # a second later, nothing new arrived: no extension
    report(progress)
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.recv(4096)
    progress.done = True
    report(progress)
    assert listener.recv(4096).decode() == "STATUS=pulled r/app:v1: 0 blobs, 0.0 MB"
    listener.close()


def test_users_by_digest_reads_the_records_image_roots() -> None:
    def record(name: str, image_rootfs: str | None) -> ContainerRecord:
        return ContainerRecord(
            id=name,
            name=name,
            runtime="/r",
            status="exited",
            created_at=0.0,
            spec={},
            options=ContainerOptions(image_rootfs=image_rootfs),
        )

    root = "/s/images/rootfs/sha256_ab/rootfs"
    records = [record("a", root), record("b", root), record("c", None)]
    assert users_by_digest(records) == {"sha256:ab": ["a", "b"]}
    assert digest_of_root("/srv/rootfs") is None


def test_install_script_installs_the_shipped_units(tmp_path: Path, repo_root: Path) -> None:
    import subprocess

    script = str(repo_root / "scripts" / "install-generator")
    env = {**os.environ, "PODUNIT_EXECUTABLE": "/opt/podunit/bin/podunit"}
    subprocess.run([script, "--root", str(tmp_path)], check=True, env=env)
    system = tmp_path / "usr/local/lib/systemd/system"
    user = tmp_path / "usr/local/lib/systemd/user"
    shipped = sorted(path.name for path in (repo_root / "units").iterdir())
    assert shipped == ["podunit-auto-update.service", "podunit-auto-update.timer"]
    assert sorted(path.name for path in system.iterdir()) == shipped
    assert (
        "ExecStart=/opt/podunit/bin/podunit auto-update\n"
        in (system / "podunit-auto-update.service").read_text()
    )
    assert (
        "ExecStart=/opt/podunit/bin/podunit --user auto-update\n"
        in (user / "podunit-auto-update.service").read_text()
    )
    timer = (system / "podunit-auto-update.timer").read_text()
    assert "OnCalendar=daily\n" in timer and "Persistent=true\n" in timer
    subprocess.run([script, "--root", str(tmp_path), "--uninstall"], check=True, env=env)
    assert list(system.iterdir()) == [] and list(user.iterdir()) == []


def test_a_pull_unit_waits_for_the_network_only_when_a_pull_is_needed(tmp_path: Path) -> None:
    from toolkit.definitions.imageref import store_name, stored_names
    from toolkit.definitions.model import Container
    from toolkit.errors import Location
    from toolkit.unitgen.render import render_all

    location = "127.0.0.1:5000/app:v1"
    assert store_name(location) == parse_image_reference(location).store_name
    index = tmp_path / "index.json"
    index.write_text(
        '{"manifests": [{"digest": "sha256:x", "annotations": '
        f'{{"org.opencontainers.image.ref.name": "{store_name(location)}"}}}}]}}'
    )
    stored, identity = stored_names(str(index))
    assert stored == {store_name(location)} and identity is not None
    assert stored_names(str(tmp_path / "missing.json")) == (frozenset(), None)
    source = Location(str(tmp_path / "d.yaml"), 1, 1)

    def pull_unit(policy: PullPolicy, present: frozenset[str]) -> str:
        web = Container(name="web", source=source, image=location, pull=policy)
        rendered, errors = render_all({"web": web}, podunit="/p", stored_images=present)
        assert errors == []
        [text] = [t for u in rendered.values() for n, t in u.files.items() if "pull" in n]
        return text

    assert "network-online.target" in pull_unit(PullPolicy.MISSING, frozenset())
    assert "network-online.target" not in pull_unit(PullPolicy.MISSING, stored)
    assert "network-online.target" in pull_unit(PullPolicy.ALWAYS, stored)
    assert "network-online.target" in pull_unit(PullPolicy.NEWER, stored)

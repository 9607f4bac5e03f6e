"""Plan files: a container as JSON and back (model.container_to_json/_from_json).

`podunit run --plan FILE NAME` starts a generated unit's container from the JSON
the generator wrote, so the round trip must be exact for every container a
definition can produce: records, enums, durations, locations, templates.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from toolkit.definitions.instances import instantiate
from toolkit.definitions.loader import load_paths
from toolkit.definitions.model import (
    Container,
    Healthcheck,
    Mount,
    MountType,
    container_from_json,
    container_to_json,
)
from toolkit.errors import Location, PodunitError

TESTS = Path(__file__).resolve().parent.parent
SOURCES = sorted(
    [
        *(TESTS / "golden").glob("*.yaml"),
        *(TESTS / "data" / "definitions").glob("*.yaml"),
        *(TESTS / "data" / "definitions" / "good").glob("*.y*ml"),
    ]
)


def _containers() -> list[Container]:
    found: list[Container] = []
    for path in SOURCES:
        found += load_paths([path]).containers.values()
    return found


CONTAINERS = _containers()


def _round_trip(container: Container) -> Container:
    return container_from_json(json.loads(json.dumps(container_to_json(container))))


def test_the_corpus_is_large_enough() -> None:
    assert len(CONTAINERS) >= 30
    assert any(c.template for c in CONTAINERS)
    assert any(c.healthcheck is not None for c in CONTAINERS)
    assert any(c.mounts for c in CONTAINERS)


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: f"{c.source}:{c.name}")
def test_every_container_survives_the_round_trip_exactly(container: Container) -> None:
    back = _round_trip(container)
    assert back == container
    assert repr(back) == repr(container)  # same classes, enums and durations, not just tuples


def test_an_instantiated_template_survives_the_round_trip() -> None:
    template = next(c for c in CONTAINERS if c.template)
    assert repr(_round_trip(instantiate(_round_trip(template), "x"))) == repr(
        instantiate(template, "x")
    )


def test_durations_locations_and_records_are_written_as_json_values() -> None:
    container = Container(
        name="web",
        source=Location("/etc/podunit/web.yaml", 3, 5),
        mounts=(Mount(MountType.TMPFS, "/tmp", size=1 << 20, options=("noexec",)),),
        healthcheck=Healthcheck(("true",), interval=timedelta(seconds=1.5)),
        stop_timeout=timedelta(seconds=20),
    )
    data = container_to_json(container)
    assert data["source"] == ["/etc/podunit/web.yaml", 3, 5]
    assert data["stop_timeout"] == 20_000_000
    assert data["healthcheck"] == {"test": ["true"], "interval": 1_500_000}
    assert data["mounts"] == [
        {"type": "tmpfs", "target": "/tmp", "size": 1 << 20, "options": ["noexec"]}
    ]
    assert _round_trip(container) == container


def test_fields_at_their_default_are_left_out_and_come_back() -> None:
    """A plan holds what differs from the model's defaults; reading fills them in."""
    container = Container(name="web", source=Location("/etc/podunit/web.yaml", 3, 5))
    assert container_to_json(container) == {
        "name": "web",
        "source": ["/etc/podunit/web.yaml", 3, 5],
    }
    assert _round_trip(container) == container
    # Equal to the default but of another type is written (0 is not False, 1.0 not 1).
    odd = container._replace(read_only=0, stop_signal=15.0)  # type: ignore[arg-type]
    assert container_to_json(odd)["read_only"] == 0
    assert container_to_json(odd)["stop_signal"] == 15.0


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"notify": "sometimes"}, "'sometimes' is not a valid Notify"),
        ({"bogus": 1}, "bogus"),
        ({"stop_timeout": 1.5}, "whole microseconds"),
        ({"mounts": [{"type": "bind"}]}, "target"),
        ({"resources": [1, 2]}, "Resources must be an object"),
        ({"command": {"a": 1}}, "unexpected object"),
        ({"source": "web.yaml"}, "unpack"),
    ],
)
def test_a_malformed_plan_is_one_clear_error(change: dict[str, object], fragment: str) -> None:
    data = {**container_to_json(CONTAINERS[0]), **change}
    with pytest.raises(PodunitError, match="not a podunit container plan") as raised:
        container_from_json(data)
    assert fragment in str(raised.value)


def test_a_plan_without_its_name_is_an_error() -> None:
    data = container_to_json(CONTAINERS[0])
    del data["name"]
    with pytest.raises(PodunitError, match="name"):
        container_from_json(data)


def _write_plan(tmp_path: Path, plan_of: Container, **envelope: object) -> str:
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}-{plan_of.unit_name}.json"
    data = {"podunit-plan": 1, "container": container_to_json(plan_of), **envelope}
    path.write_text(json.dumps(data))
    return str(path)


def test_run_plan_gives_the_container_and_instantiates_templates(tmp_path: Path) -> None:
    from toolkit.definitions.plan import container_from_plan

    plain = next(c for c in CONTAINERS if not c.template)
    assert repr(container_from_plan(_write_plan(tmp_path, plain), plain.name)) == repr(plain)
    template = next(c for c in CONTAINERS if c.template)
    path = _write_plan(tmp_path, template)
    instance = container_from_plan(path, f"{template.name}@7")
    assert repr(instance) == repr(instantiate(template, "7"))


@pytest.mark.parametrize(
    ("plan", "name", "fragment"),
    [
        ("missing", "web", "cannot read plan .*: No such file or directory"),
        ("text", "web", "is not valid JSON"),
        ("version", "web", "is not a podunit plan of version 1"),
        ("malformed", "web", "not a podunit container plan"),
        ("plain", "other", "is the plan of 'web', not of 'other'"),
        ("plain", "web@1", "is the plan of 'web', not of 'web@1'"),
        ("template", "worker", "is the plan of 'worker@', not of 'worker'"),
        ("template", "other@1", "is the plan of 'worker@', not of 'other@1'"),
    ],
)
def test_run_plan_problems_are_one_error_suggesting_daemon_reload(
    tmp_path: Path, plan: str, name: str, fragment: str
) -> None:
    from toolkit.definitions.plan import container_from_plan

    web = Container(name="web", source=Location("/etc/podunit/web.yaml", 2, 3))
    path = {
        "missing": str(tmp_path / "gone.json"),
        "plain": _write_plan(tmp_path, web),
        "template": _write_plan(tmp_path, web._replace(name="worker", template=True)),
        "version": _write_plan(tmp_path, web, **{"podunit-plan": 2}),
        "malformed": _write_plan(tmp_path, web, container={"name": "web"}),
    }.get(plan)
    if path is None:
        path = str(tmp_path / "text.json")
        Path(path).write_text("[1, 2")
    with pytest.raises(PodunitError, match=fragment) as raised:
        container_from_plan(path, name)
    assert raised.value.hint is not None and "systemctl daemon-reload" in raised.value.hint

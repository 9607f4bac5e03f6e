"""The one record class of the hot paths (toolkit/record.py) and the typed container record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolkit.record import Record
from toolkit.storage.records import ContainerOptions, ContainerRecord, ExecConfig, ExecSession


class Point(Record):
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


class Line(Record):
    start: Point
    end: Point = Point(x=1)


def test_fields_come_from_the_annotations_once() -> None:
    assert Point._fields == ("x", "y", "tags")
    assert Point.__slots__ == ("x", "y", "tags")
    assert Point(x=1) == Point(x=1, y=0, tags=())
    assert not hasattr(Point(x=1), "__dict__")


def test_construction_is_keyword_only_and_complete() -> None:
    with pytest.raises(TypeError, match="missing field 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="no field z"):
        Point(x=1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[call-arg]


def test_records_are_immutable_values() -> None:
    point = Point(x=1, tags=("a",))
    with pytest.raises(AttributeError, match="Point is immutable: cannot set x"):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot delete"):
        del point.x
    moved = point._replace(y=5)
    assert (point.y, moved.y, moved.tags) == (0, 5, ("a",))
    assert hash(point) == hash(Point(x=1, tags=("a",))) and point != moved
    assert Point(x=1) != Line(start=Point(x=1))  # another type is never equal
    assert repr(moved) == "Point(x=1, y=5, tags=('a',))"
    with pytest.raises(TypeError):
        point._replace(nope=1)


def test_the_json_form_round_trips_tuples_and_ignores_unknown_keys() -> None:
    point = Point(x=1, tags=("a", "b"))
    assert point.to_json() == {"x": 1, "y": 0, "tags": ["a", "b"]}
    text = json.dumps(point.to_json())
    assert Point.from_json(json.loads(text)) == point
    assert Point.from_json({"x": 2, "written_by_a_newer_podunit": True}) == Point(x=2)
    assert Line(start=point).to_json()["end"] == {"x": 1, "y": 0, "tags": []}


def test_defaults_must_be_immutable() -> None:
    with pytest.raises(TypeError, match="a default must be immutable"):

        class Bad(Record):
            items: list[int] = []  # noqa: RUF012


def test_the_container_options_are_typed_and_read_rows_of_older_podunits() -> None:
    options = ContainerOptions(stop_timeout=3.0, runtime_args=("--root", "/run/x"))
    stored = json.loads(json.dumps(options.to_json()))
    assert ContainerOptions.from_json(stored) == options
    older = ContainerOptions.from_json(
        {"cgroup_plan": {"manager": "none"}, "labels": {"a": "1"}, "bundle_dir": "/x"}
    )
    assert older.cgroup_placement == {"manager": "none"}
    assert older.labels == (("a", "1"),)
    record = ContainerRecord(id="c", name="web", runtime="/r", status="created",
                             created_at=0.0, spec={})  # fmt: skip
    assert record.options == ContainerOptions() and record.options.stop_signal == 15


def test_exec_records_nest() -> None:
    config = ExecConfig(command=("sh", "-c", "x"), environment=(("A", "1"),))
    assert ExecConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    session = ExecSession(id="s", container_id="c", state="created", config=config,
                          created_at=0.0)  # fmt: skip
    assert session._replace(pid=3).config is config


def test_importing_the_records_loads_neither_typing_nor_dataclasses() -> None:
    probe = (
        "import json, sys; import toolkit.storage.state, toolkit.runtime.conmon; "
        "print(json.dumps([m in sys.modules for m in ('typing', 'dataclasses')]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == [False, False]

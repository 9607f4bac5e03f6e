"""Plan files: the parsed definition the generator writes next to a unit (spec §3.2).

`podunit run --plan FILE NAME` (a generated unit's ExecStart) reads the container from
here, with no YAML, no search-path scan and no parser on the start path. The file is
`{"podunit-plan": 1, "container": ...}` (`toolkit.definitions.model` writes and reads the
container's JSON); a template's plan holds the template and `NAME` names the instance.
"""

from __future__ import annotations

import json

from toolkit.errors import PodunitError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from toolkit.definitions.model import Container


PLAN_HINT = "run 'systemctl daemon-reload' (with --user for user units) to write it again"


def container_from_plan(path: str, name: str) -> Container:
    """The container of a generated unit's plan file (`podunit run --plan FILE NAME`).

    The generator writes `{"podunit-plan": 1, "container": ...}` next to the unit
    (toolkit.definitions.model, "plan files"); no definition is read or searched.
    A template's plan holds the template: `NAME` (`worker@foo`) names the instance.
    """
    from toolkit.definitions.instances import instantiate
    from toolkit.definitions.model import PLAN_KEY, PLAN_VERSION, container_from_json

    try:
        with open(path, "rb") as file:
            data = json.loads(file.read())
    except OSError as error:
        raise PodunitError(f"cannot read plan {path}: {error.strerror}", hint=PLAN_HINT) from None
    except ValueError:
        raise PodunitError(f"plan {path} is not valid JSON", hint=PLAN_HINT) from None
    if (
        not isinstance(data, dict)
        or data.get(PLAN_KEY) != PLAN_VERSION
        or not isinstance(data.get("container"), dict)
    ):
        raise PodunitError(
            f"{path} is not a podunit plan of version {PLAN_VERSION}", hint=PLAN_HINT
        )
    try:
        container = container_from_json(data["container"])
    except PodunitError as error:
        raise PodunitError(f"plan {path}: {error}", hint=PLAN_HINT) from None
    base, at, instance = name.partition("@")
    if container.template != bool(at) or (base if at else name) != container.name:
        raise PodunitError(
            f"plan {path} is the plan of {container.unit_name!r}, not of {name!r}", hint=PLAN_HINT
        )
    return instantiate(container, instance) if at else container

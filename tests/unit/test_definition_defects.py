"""Defects where the definitions and the runtime or systemd disagreed (issue 10 item 6).

- `security_opt: ["apparmor=x"]` passed `validate` and failed only at start, unlocated;
- `devices: ["/dev/null:rw"]` was permissions to the definition parser and a
  container path `rw` to the OCI device parser;
- user units were wanted by multi-user.target, which a user manager does not have.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.definitions import values
from toolkit.definitions.loader import load_paths
from toolkit.definitions.model import Container
from toolkit.errors import Location, PodunitError
from toolkit.runtime import oci
from toolkit.unitgen.render import render

SOURCE = Location("/etc/podunit/web.yaml", 2, 3)


def loaded(tmp_path: Path, extra: str) -> list[str]:
    (tmp_path / "web.yaml").write_text(f"containers:\n  web:\n    rootfs: /srv\n{extra}")
    return [str(error) for error in load_paths([tmp_path / "web.yaml"]).errors]


@pytest.mark.parametrize("option", ["apparmor=x", "label=type:foo", "seccomp=relative.json",
                                    "unmask=ALL", "bogus", "no-new-privileges=maybe"])  # fmt: skip
def test_validate_refuses_a_security_opt_the_runtime_cannot_apply(
    tmp_path: Path, option: str
) -> None:
    errors = loaded(tmp_path, f'    security_opt: ["{option}"]\n')
    assert errors == [
        f"{tmp_path}/web.yaml:4:20: unsupported security_opt '{option}' (supported: "
        f"{values.SECURITY_OPTS_HINT})"
    ]
    container = Container(name="web", source=SOURCE, rootfs="/srv", security_opt=(option,))
    with pytest.raises(PodunitError, match="unsupported security_opt"):
        oci.apply_security_opts(container)  # a plan or ad-hoc run says the same


@pytest.mark.parametrize(
    ("option", "field", "value"),
    [
        ("no-new-privileges", "no_new_privileges", True),
        ("no-new-privileges:false", "no_new_privileges", False),
        ("no-new-privileges=true", "no_new_privileges", True),
        ("seccomp=unconfined", "seccomp", "unconfined"),
        ("seccomp:/etc/profile.json", "seccomp", "/etc/profile.json"),
        ("label=disable", None, None),
        ("label:disable", None, None),
        ("apparmor=unconfined", None, None),
    ],
)
def test_accepted_security_opts_are_the_ones_the_runtime_applies(
    tmp_path: Path, option: str, field: str | None, value: object
) -> None:
    assert loaded(tmp_path, f'    security_opt: ["{option}"]\n') == []
    base = Container(name="web", source=SOURCE, rootfs="/srv", no_new_privileges=False)
    applied = oci.apply_security_opts(base._replace(security_opt=(option,)))
    if field is not None:
        assert getattr(applied, field) == value


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/dev/null:rw", ("/dev/null", "/dev/null", "rw")),
        ("/dev/fuse", ("/dev/fuse", "/dev/fuse", "rwm")),
        ("/dev/fuse:m", ("/dev/fuse", "/dev/fuse", "m")),
        ("/dev/a:/dev/b", ("/dev/a", "/dev/b", "rwm")),
        ("/dev/a:/dev/b:r", ("/dev/a", "/dev/b", "r")),
        ("/dev/a::r", ("/dev/a", "/dev/a", "r")),
    ],
)
def test_one_reading_of_a_device(tmp_path: Path, spec: str, expected: tuple[str, str, str]) -> None:
    assert values.parse_device(spec) == expected
    assert oci.parse_device(spec) == expected
    assert loaded(tmp_path, f'    devices: ["{spec}"]\n') == []


@pytest.mark.parametrize("spec", ["dev/x", "/dev/a:/dev/b:rx", "/a:/b:r:w", "/dev/a:rel", "/a:/b:"])
def test_bad_devices_are_refused_by_both(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ValueError):
        values.parse_device(spec)
    with pytest.raises(PodunitError):
        oci.parse_device(spec)
    [error] = loaded(tmp_path, f'    devices: ["{spec}"]\n')
    assert error.startswith(f"{tmp_path}/web.yaml:4:15: ")


def test_the_oci_device_of_dev_null_rw_is_dev_null() -> None:
    [node] = oci.gather_devices(["/dev/null:rw"])
    assert (node.path, node.access, node.type) == ("/dev/null", "rw", "c")


def test_user_units_are_wanted_by_default_target() -> None:
    container = Container(name="web", source=SOURCE, rootfs="/srv")
    assert render(container, podunit="/usr/bin/podunit", user=True).symlinks == {
        "default.target.wants/web.service": "../web.service"
    }
    assert render(container, podunit="/usr/bin/podunit").symlinks == {
        "multi-user.target.wants/web.service": "../web.service"
    }

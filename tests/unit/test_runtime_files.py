"""Files a definition names, read at run time: `env_file:` and `seccomp:` (issue 15 items 2, 15).

Before: a FIFO as env_file hung `podunit run`, /dev/zero as a seccomp profile
exhausted memory (a traceback), and a bad env_file line was quoted in the error,
which goes to the journal: env files hold secrets.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolkit.definitions.model import Container
from toolkit.errors import Location, PodunitError
from toolkit.runtime import oci


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError("the read blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(5)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def inputs_error(tmp_path: Path, **fields: Any) -> str:
    container = Container(
        name="web", source=Location("/etc/podunit/web.yaml", 3, 3), rootfs=str(tmp_path), **fields
    )
    with pytest.raises(PodunitError) as caught:
        oci.gather_inputs(container, "0" * 64, rootfs=str(tmp_path))
    return str(caught.value)


def test_env_file_that_is_a_fifo_or_a_device(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.env")
    assert inputs_error(tmp_path, env_files=(f"{tmp_path}/fifo.env",)) == (
        f"env_file {tmp_path}/fifo.env: not a regular file (a FIFO)"
    )
    assert inputs_error(tmp_path, env_files=("/dev/zero",)) == (
        "env_file /dev/zero: not a regular file (a character device)"
    )
    assert inputs_error(tmp_path, env_files=(f"{tmp_path}/missing.env",)) == (
        f"env_file {tmp_path}/missing.env: No such file or directory"
    )


def test_seccomp_profile_that_is_a_device_a_fifo_or_not_json(tmp_path: Path) -> None:
    assert inputs_error(tmp_path, seccomp="/dev/zero") == (
        "seccomp profile /dev/zero: not a regular file (a character device)"
    )
    os.mkfifo(tmp_path / "fifo.json")
    assert inputs_error(tmp_path, seccomp=f"{tmp_path}/fifo.json") == (
        f"seccomp profile {tmp_path}/fifo.json: not a regular file (a FIFO)"
    )
    (tmp_path / "bad.json").write_text("{SECRET")
    message = inputs_error(tmp_path, seccomp=f"{tmp_path}/bad.json")
    assert message.startswith(f"seccomp profile {tmp_path}/bad.json: ") and "SECRET" not in message


def test_env_file_errors_name_the_line_not_its_text(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("A=1\nexport PASSWORD hunter2\n")
    message = inputs_error(tmp_path, env_files=(f"{tmp_path}/app.env",))
    assert message == (
        f"env_file {tmp_path}/app.env:2: not a KEY=VALUE line "
        "(its text is not shown: it may hold a secret)"
    )
    assert "hunter2" not in message and "PASSWORD" not in message
    (tmp_path / "binary.env").write_bytes(b"TOKEN=s3cr3t\xff\n")
    message = inputs_error(tmp_path, env_files=(f"{tmp_path}/binary.env",))
    assert message == f"env_file {tmp_path}/binary.env: not UTF-8 text (byte 13)"


def test_the_rootfs_user_database_is_read_safely(tmp_path: Path) -> None:
    """An image's /etc/passwd is untrusted: a FIFO hung `podunit run`, a link to
    /dev/zero exhausted its memory."""
    (tmp_path / "etc").mkdir()
    assert oci.read_rootfs_file(str(tmp_path), "/etc/passwd") == ""  # missing: no users
    os.mkfifo(tmp_path / "etc" / "passwd")
    (tmp_path / "etc" / "group").symlink_to("/dev/zero")
    assert inputs_error(tmp_path, user="app") == (
        f"/etc/passwd of the root file system {tmp_path}: not a regular file (a FIFO)"
    )
    with pytest.raises(PodunitError, match="not a regular file \\(a character device\\)"):
        oci.read_rootfs_file(str(tmp_path), "/etc/group")


def test_a_dockerfile_that_is_a_fifo_or_a_device(tmp_path: Path) -> None:
    """`build: {dockerfile: ...}` is read through safefile too (issue 15 item 2)."""
    from toolkit.definitions.imageref import ImageError
    from toolkit.definitions.model import Build
    from toolkit.runtime.builds import build_digest

    os.mkfifo(tmp_path / "Dockerfile")
    for dockerfile, kind in ((tmp_path / "Dockerfile", "a FIFO"),
                             (Path("/dev/zero"), "a character device")):  # fmt: skip
        build = Build(context=str(tmp_path), dockerfile=str(dockerfile))
        with pytest.raises(ImageError, match=f"not a regular file \\({kind}\\)"):
            build_digest(build)

"""toolkit.safefile: reading files that definitions name, never blocking, bounded (issue 15 item 2).

Each case failed before the helper existed: a FIFO blocked the reader forever, /dev/zero
ran out of memory, symlink loops and unreadable targets raised tracebacks.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit import safefile
from toolkit.errors import UnreadableFile


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A read that blocks fails the test after 5 s instead of hanging the suite."""

    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError("the read blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(5)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refused(path: Path | str, **kwargs: int) -> str:
    with pytest.raises(UnreadableFile) as caught:
        safefile.read_bytes(str(path), **kwargs)
    assert caught.value.path == str(path)
    assert str(caught.value) == f"cannot read {path}: {caught.value.reason}"
    return caught.value.reason


def test_regular_files_are_read_whole(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 200_000)
    assert safefile.read_bytes(str(tmp_path / "a")) == b"x" * 200_000
    (tmp_path / "link").symlink_to("a")
    assert safefile.read_text(str(tmp_path / "link")) == "x" * 200_000
    (tmp_path / "empty").write_bytes(b"")
    assert safefile.read_bytes(str(tmp_path / "empty")) == b""


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    assert refused(tmp_path / "fifo.yaml") == "not a regular file (a FIFO)"


def test_devices_are_refused_without_reading_them(tmp_path: Path) -> None:
    assert refused("/dev/zero") == "not a regular file (a character device)"
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    assert refused(tmp_path / "zero.yaml") == "not a regular file (a character device)"
    assert refused("/dev/null") == "not a regular file (a character device)"


def test_directories_sockets_loops_and_dangling_links(tmp_path: Path) -> None:
    assert refused(tmp_path) == "not a regular file (a directory)"
    (tmp_path / "a.yaml").symlink_to("b.yaml")
    (tmp_path / "b.yaml").symlink_to("a.yaml")
    assert refused(tmp_path / "a.yaml") == "Too many levels of symbolic links"
    (tmp_path / "dangling.yaml").symlink_to("nowhere")
    assert refused(tmp_path / "dangling.yaml") == "No such file or directory"
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.yaml"))
        assert refused(tmp_path / "sock.yaml") == "not a regular file (a socket)"


def test_unreadable_targets(tmp_path: Path) -> None:
    # Root reads mode-0 files; /proc/self/mem is a regular file nobody can read from 0.
    (tmp_path / "mem.yaml").symlink_to("/proc/self/mem")
    assert refused(tmp_path / "mem.yaml") == "Input/output error"
    if os.geteuid() != 0:
        target = tmp_path / "secret"
        target.write_text("x")
        target.chmod(0)
        (tmp_path / "link.yaml").symlink_to(target)
        assert refused(tmp_path / "link.yaml") == "Permission denied"


def test_the_size_limit_is_clear_and_holds_for_files_that_lie_about_their_size(
    tmp_path: Path,
) -> None:
    (tmp_path / "big").write_bytes(b"x" * 1025)
    assert refused(tmp_path / "big", limit=1024) == "larger than the limit of 1 KiB"
    (tmp_path / "fits").write_bytes(b"x" * 1024)
    assert safefile.read_bytes(str(tmp_path / "fits"), limit=1024) == b"x" * 1024
    # /proc files report size 0 and may be long: the count of bytes read is what counts
    assert os.stat("/proc/self/maps").st_size == 0
    assert refused("/proc/self/maps", limit=10) == "larger than the limit of 10 bytes"
    assert safefile.MAX_BYTES == 4 << 20
    assert safefile.limit_text(safefile.MAX_BYTES) == "4 MiB"


def test_text_that_is_not_utf8_is_refused_without_quoting_it(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(b"ok\nSECRET\xff")
    with pytest.raises(UnreadableFile, match=r"not UTF-8 text \(byte 10\)") as caught:
        safefile.read_text(str(tmp_path / "bin"))
    assert "SECRET" not in str(caught.value)

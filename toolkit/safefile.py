"""Reading a file that a definition names, safely: regular files only, bounded, never blocking.

Every file podunit reads because a definition or a search directory points at it
(definition files and drop-ins, `env_file:`, `seccomp:` profiles, Compose's
`.env`) goes through `read_bytes` / `read_text`, so that one bad entry cannot
hang or exhaust the generator or the runtime (podunit.yaml(5), "FILES AND
SEARCH PATH"):

- only regular files (after following symbolic links) are read: a FIFO would
  block the reader (a daemon-reload waits 90 s), a device such as /dev/zero never
  ends, and opening some devices has side effects; the file is checked with
  stat(2) before it is opened, and again with fstat(2) on the open descriptor;
- the open is non-blocking (`O_NONBLOCK`, so a FIFO swapped in between the two
  checks cannot block it) and `O_NOCTTY`;
- at most `limit` bytes are read (`MAX_BYTES`, 4 MiB, unless the caller says
  otherwise): a larger file is refused with the limit in the message, also when
  its size lies (files under /proc report 0).

Failures raise `toolkit.errors.UnreadableFile`, whose `reason` says why in a few
words (never the file's contents); callers add the location (a definition error
is `FILE:1:1: cannot read: REASON`).

Only `os` and `stat` are imported: the generator reads definitions with this.
"""

from __future__ import annotations

import os
import stat

from toolkit.errors import UnreadableFile

MAX_BYTES = 4 << 20  # 4 MiB: the largest definition, drop-in, env_file or seccomp profile
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a character device", ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _refuse_irregular(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise UnreadableFile(path, f"not a regular file ({kind(mode)})")


def limit_text(limit: int) -> str:
    """A size limit for messages: `4 MiB`, `64 KiB`, `100 bytes`."""
    if limit >= 1 << 20 and limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit >= 1 << 10 and limit % (1 << 10) == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"


def read_bytes(path: str, *, limit: int = MAX_BYTES) -> bytes:
    """The whole content of the regular file `path` (symbolic links followed).

    Raises `UnreadableFile` for anything that cannot be read or is not a regular
    file, and for a file larger than `limit` bytes.
    """
    try:
        _refuse_irregular(path, os.stat(path).st_mode)
        fd = os.open(path, _FLAGS)
    except OSError as error:
        raise UnreadableFile(path, error.strerror or str(error)) from None
    try:
        status = os.fstat(fd)
        _refuse_irregular(path, status.st_mode)
        too_big = UnreadableFile(path, f"larger than the limit of {limit_text(limit)}")
        if status.st_size > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise too_big
    except OSError as error:
        raise UnreadableFile(path, error.strerror or str(error)) from None
    finally:
        os.close(fd)


def read_text(path: str, *, limit: int = MAX_BYTES) -> str:
    """`read_bytes` decoded as UTF-8; text that is not UTF-8 is `UnreadableFile` too
    (with the byte offset, not the bytes)."""
    data = read_bytes(path, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(path, f"not UTF-8 text (byte {error.start + 1})") from None

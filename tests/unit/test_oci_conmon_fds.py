"""The explicit fd table conmon is started with (`proc.spawn(fd_table=...)`, runtime.conmon)."""

from __future__ import annotations

import os
import socket
import sys

from toolkit import proc

VISIBLE_FDS = """
import os
fds = []
for fd in range(256):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
print(fds, flush=True)
os.write(4, b"via fd 4")
"""


def test_child_gets_exactly_stdio_and_the_table() -> None:
    leaked = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaked, True)  # an inherited fd podunit did not mean to pass
    ours, theirs = socket.socketpair()
    other_ours, other_theirs = socket.socketpair()
    out_read, out_write = os.pipe()
    try:
        child = proc.spawn(
            [sys.executable, "-c", VISIBLE_FDS],
            stdout=out_write,
            fd_table={3: other_theirs.fileno(), 4: theirs.fileno()},
        )
        os.close(out_write)
        assert child.wait(30) == 0
        with os.fdopen(out_read) as output:
            assert output.read().strip() == "[0, 1, 2, 3, 4]"
        assert ours.recv(100) == b"via fd 4"
    finally:
        os.close(leaked)
        for sock in (ours, theirs, other_ours, other_theirs):
            sock.close()


def test_sources_that_collide_with_targets_are_not_clobbered() -> None:
    # the source of target 3 sits at fd 4 and vice versa: parking makes the swap safe
    a_ours, a_theirs = socket.socketpair()
    b_ours, b_theirs = socket.socketpair()
    script = "import os; os.write(3, b'three'); os.write(4, b'four')"
    child = proc.spawn([sys.executable, "-c", script],
                       fd_table={3: b_theirs.fileno(), 4: a_theirs.fileno()})  # fmt: skip
    assert child.wait(30) == 0
    assert b_ours.recv(10) == b"three"
    assert a_ours.recv(10) == b"four"
    for sock in (a_ours, a_theirs, b_ours, b_theirs):
        sock.close()

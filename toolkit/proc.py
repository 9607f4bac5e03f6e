"""The one subprocess wrapper: every external program podunit runs goes through here.

It resolves the binary first (a missing one is `ExecutableNotFound`, exit 127,
naming the program), never uses a shell, and turns a non-zero exit into
`CommandFailed` carrying the program's stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from toolkit.errors import CommandFailed, ExecutableNotFound


def which(program: str) -> str:
    """Absolute path of `program` (searched on PATH unless it contains a slash)."""
    if "/" in program:
        if os.access(program, os.X_OK):
            return program
        raise ExecutableNotFound(f"{program}: not found or not executable")
    found = shutil.which(program)
    if found is None:
        raise ExecutableNotFound(
            f"{program}: not found on PATH", hint=f"install the Debian package providing {program}"
        )
    return found


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` to completion; raise `CommandFailed` on non-zero exit if `check`."""
    args = [which(argv[0]), *argv[1:]]
    result = subprocess.run(
        args,
        input=input,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        stdin=None if input is not None else subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        pass_fds=tuple(pass_fds),
        check=False,
    )
    if check and result.returncode != 0:
        stderr = result.stderr.decode(errors="replace") if result.stderr else ""
        raise CommandFailed(list(argv), result.returncode, stderr)
    return result


def output(argv: Sequence[str], **kwargs: object) -> str:
    """Run `argv` and return its stdout as text (stripped of the final newline)."""
    result = run(argv, **kwargs)  # type: ignore[arg-type]
    return result.stdout.decode(errors="replace").rstrip("\n")


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = None,
    stderr: int | None = None,
    start_new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `argv` without waiting; the caller owns the returned process."""
    args = [which(argv[0]), *argv[1:]]
    return subprocess.Popen(
        args,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        pass_fds=tuple(pass_fds),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=start_new_session,
        close_fds=True,
    )

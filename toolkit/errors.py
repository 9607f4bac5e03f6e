"""The one error hierarchy of podunit.

Library code raises these; only the CLI (`toolkit.cli.main`) and the generator turn
them into messages and exit codes. Exit codes follow the spec, section 4:
125 for an error of podunit itself, 126 when a command cannot be invoked,
127 when it is not found.
"""

from __future__ import annotations

EXIT_PODUNIT_ERROR = 125
EXIT_CANNOT_INVOKE = 126
EXIT_NOT_FOUND = 127


class PodunitError(Exception):
    """Base of every expected failure: one line, optionally a hint."""

    exit_code: int = EXIT_PODUNIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class Location:
    """A place in a definition file; line and column count from 1. Immutable.

    A plain class rather than a dataclass: this module is imported by every podunit
    process, and `dataclasses` alone costs them about 10 ms of start-up.
    """

    __slots__ = ("column", "line", "path")
    path: str
    line: int
    column: int

    def __init__(self, path: str, line: int, column: int) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "line", line)
        object.__setattr__(self, "column", column)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Location is immutable: cannot set {name}")

    def _key(self) -> tuple[str, int, int]:
        return (self.path, self.line, self.column)

    def __reduce__(self) -> tuple[type[Location], tuple[str, int, int]]:
        return (Location, self._key())  # copy, deepcopy and pickle

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Location(path={self.path!r}, line={self.line!r}, column={self.column!r})"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class DefinitionError(PodunitError):
    """A problem in a definition file, reported as ``FILE:LINE:COLUMN: message``."""

    def __init__(self, location: Location | None, message: str, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class UnreadableFile(PodunitError):
    """A file a definition names cannot be read safely (toolkit.safefile): `reason` says
    why in a few words ("not a regular file (a FIFO)"), never quoting its contents."""

    def __init__(self, path: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"cannot read {path}: {reason}", hint=hint)
        self.path = path
        self.reason = reason


class ExecutableNotFound(PodunitError):
    """A program podunit needs (conmon, runc, ...) is not installed."""

    exit_code = EXIT_NOT_FOUND


class CommandFailed(PodunitError):
    """An external program exited non-zero; the message carries its stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str, *, hint: str | None = None):
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {returncode}"
        super().__init__(f"{argv[0]} failed: {detail}", hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class ContainerNotFound(PodunitError):
    """No container (or definition) of that name."""


class InvalidState(PodunitError):
    """The container is not in a state that allows the operation."""


class CannotInvoke(PodunitError):
    """The container's command exists but cannot be executed (exit 126)."""

    exit_code = EXIT_CANNOT_INVOKE


class CommandNotFoundInContainer(PodunitError):
    """The container's command does not exist (exit 127)."""

    exit_code = EXIT_NOT_FOUND


class SandboxError(PodunitError):
    """The throwaway systemd sandbox could not be booted, used or torn down."""

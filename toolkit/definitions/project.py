"""A Compose file as a project (spec §1.3; the Compose specification, "Project",
"Interpolation"; podunit.yaml(5), "Compose projects").

- The project name: the file's top-level `name:`, else the name of the directory
  holding a file with a Compose file name (`compose.yaml`, `docker-compose.yml`, ...),
  else the file's own name without its suffix (`/etc/podunit/shop.yaml` -> `shop`:
  files in one search directory would otherwise all be one project). A name from a
  directory or file is normalised as Compose normalises directory names (lower case,
  only `a-z0-9_-`, starting with a letter or digit); a `name:` must already be one.
  `COMPOSE_PROJECT_NAME` is not used: one generator run reads many projects.
- The variables: the generator's environment over the `.env` file beside the
  Compose file (Compose's precedence: the shell over `.env`). Every string value of
  the file is interpolated (keys never are); each problem is located at its value.
- Which variables a project used is kept by name only (values may be secrets), with
  where each came from, for the units' header comments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from toolkit import safefile
from toolkit.definitions import dotenv
from toolkit.definitions.interpolate import InterpolationError, interpolate
from toolkit.definitions.search import COMPOSE_FILE_NAMES, DOTENV
from toolkit.definitions.tree import Entry, Node
from toolkit.errors import DefinitionError, Location, UnreadableFile

DOTENV_LIMIT = 1 << 20  # a .env of 1 MiB is already absurd

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def normalise_name(text: str) -> str:
    """Compose's normalisation of a directory name: lower case, only [a-z0-9_-],
    leading `_`/`-` dropped ("" when nothing is left)."""
    kept = "".join(c for c in text.lower() if c in _NAME_CHARS)
    return kept.lstrip("_-")


def is_project_name(name: str) -> bool:
    return bool(name) and name[0] not in "_-" and set(name) <= _NAME_CHARS


def default_name(source: str) -> str:
    """The project name when the file has no `name:` (see the module docstring)."""
    base = os.path.basename(source)
    if base in COMPOSE_FILE_NAMES:
        return normalise_name(os.path.basename(os.path.dirname(os.path.abspath(source))))
    return normalise_name(base.rsplit(".", 1)[0])


class Variables:
    """The lookup of one project: the environment over its `.env`; records what was used."""

    def __init__(self, environ: Mapping[str, str], dotenv_values: Mapping[str, str]) -> None:
        self.environ = environ
        self.dotenv = dotenv_values
        self.used: dict[str, bool] = {}

    def get(self, name: str) -> str | None:
        value = self.environ.get(name)
        return self.dotenv.get(name) if value is None else value

    def origins(self) -> list[str]:
        """`NAME (environment)`, `NAME (.env)`, `NAME (unset)` for every variable used."""
        result = []
        for name in sorted(self.used):
            if name in self.environ:
                where = "environment"
            elif name in self.dotenv:
                where = ".env"
            else:
                where = "unset"
            result.append(f"{name} ({where})")
        return result


def read_dotenv(directory: str, environ: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """The `.env` of a project directory (empty when there is none) and its path if read.

    Raises `DefinitionError` located in the `.env` file for a bad line or an unreadable file.
    """
    path = os.path.join(directory, DOTENV)
    if not os.path.lexists(path):
        return {}, None
    try:
        text = safefile.read_text(path, limit=DOTENV_LIMIT)
    except UnreadableFile as error:
        raise DefinitionError(Location(path, 1, 1), f"cannot read: {error.reason}") from None
    try:
        return dotenv.parse(text, environ.get), path
    except dotenv.DotenvError as error:
        raise DefinitionError(Location(path, error.line, 1), str(error)) from None


def interpolate_tree(node: Node, variables: Variables, errors: list[DefinitionError]) -> Node:
    """The tree with every string value interpolated (keys are not); a value that cannot
    be interpolated is an error located at it, and is kept as written."""
    value = node.value
    if isinstance(value, str):
        if "$" not in value:
            return node
        try:
            result = interpolate(value, variables.get, variables.used)
        except InterpolationError as error:
            errors.append(DefinitionError(node.loc, str(error)))
            return node
        return Node(result, node.path, node.line, node.column, result)
    if isinstance(value, list):
        return Node(
            [interpolate_tree(item, variables, errors) for item in value],
            node.path,
            node.line,
            node.column,
        )
    if isinstance(value, dict):
        return Node(
            {
                key: Entry(entry.key, interpolate_tree(entry.node, variables, errors))
                for key, entry in value.items()
            },
            node.path,
            node.line,
            node.column,
        )
    return node

"""One Compose file read as a project (spec §1.3): its name, its variables, and its
services interpolated, translated (`toolkit.definitions.compose`) and parsed.

The loader (`toolkit.definitions.loader`) calls `ComposeFile.open` for a document
with `services:`, then `service` for each service. Naming (podunit.yaml(5),
"Compose projects"): service `db` of project `shop` is the container and unit
`shop-db` (`shop-db.service`); the project's unit is `shop-project.target`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from toolkit.definitions import values as v
from toolkit.definitions.compose import Project, translate_service
from toolkit.definitions.model import Container, Declarations, NetworkAttachment, NetworkSpec
from toolkit.definitions.parse import parse_container
from toolkit.definitions.project import (
    Variables,
    default_name,
    interpolate_tree,
    is_project_name,
    read_dotenv,
)
from toolkit.definitions.readers import fail, text
from toolkit.definitions.tree import Entry, Node
from toolkit.errors import DefinitionError, Location


class ComposeFile:
    """A Compose document with its project; see the module docstring."""

    def __init__(
        self, project: Project, source: str, variables: Variables, dotenv_path: str | None,
        name_loc: Location, document: Node,
    ) -> None:  # fmt: skip
        self.project = project
        self.document = document  # top-level values interpolated; services as written
        self.source = source
        self.variables = variables
        self.dotenv_path = dotenv_path
        self.name_loc = name_loc  # `name:`, or the top of the file
        self._used: dict[str, dict[str, bool]] = {}

    @classmethod
    def open(
        cls,
        document: Node,
        source: str,
        environ: Mapping[str, str],
        errors: list[DefinitionError],
        machine: str | None = None,
    ) -> ComposeFile | None:
        """The project of a Compose document; None (errors noted) when it has no valid
        name or its `.env` cannot be read."""
        directory = os.path.dirname(os.path.abspath(source))
        try:
            dotenv_values, dotenv_path = read_dotenv(directory, environ)
        except DefinitionError as error:
            errors.append(error)
            return None
        variables = Variables(environ, dotenv_values)
        name_entry = document.value.get("name")
        if name_entry is not None:
            count = len(errors)
            node = interpolate_tree(name_entry.node, variables, errors)
            if len(errors) > count:
                return None
            try:
                name = text(node, "name")
            except DefinitionError as error:
                errors.append(error)
                return None
            if not is_project_name(name):
                errors.append(
                    fail(
                        node,
                        f"project name {v.quote(name)} must be lower case letters, digits, "
                        "'_' and '-', starting with a letter or digit",
                    )
                )
                return None
            name_loc = node.loc
        else:
            name = default_name(source)
            name_loc = Location(source, document.line, document.column)
            if not name:
                errors.append(
                    fail(name_loc, f"cannot name the Compose project of {source}; set 'name:'")
                )
                return None
        services_entry = document.value.get("services")
        services = (
            [key for key in services_entry.node.value if not key.startswith("x-")]
            if services_entry is not None and services_entry.node.is_mapping
            else []
        )
        active = variables.get("COMPOSE_PROFILES") or ""
        profiles = [item.strip() for item in active.split(",") if item.strip()]
        if machine is None:
            machine = os.uname().machine
        project = Project(name, services, profiles, machine)
        variables.used = {}  # the top level's variables are not a service's
        top = {
            key: entry
            if key in ("services", "name")
            else Entry(entry.key, interpolate_tree(entry.node, variables, errors))
            for key, entry in document.value.items()
        }
        document = Node(top, document.path, document.line, document.column)
        return cls(project, source, variables, dotenv_path, name_loc, document)

    def service(
        self, name: str, key_loc: Location, spec: Node, declarations: Declarations,
        errors: list[DefinitionError],
    ) -> Container | None:  # fmt: skip
        """One service, interpolated, translated and parsed; None (errors noted) if bad."""
        count = len(errors)
        try:
            v.check_name(name, "service name")
        except ValueError as error:
            errors.append(fail(key_loc, str(error)))
            return None
        self.variables.used = self._used.setdefault(name, {})
        spec = interpolate_tree(spec, self.variables, errors)
        spec = self._pass_environment(spec)
        # Every problem of the service in one run: a value that could not be interpolated
        # is reported once (not again by the key that reads it), a refused key does not
        # stop the other keys from being checked.
        reported = {(e.location.line, e.location.column) for e in errors[count:] if e.location}
        found: list[DefinitionError] = []
        translated = translate_service(name, spec, self.project, found)
        container = None
        if translated is not None:
            node, extra = translated
            base_dir = os.path.dirname(os.path.abspath(self.source))
            container_name = self.project.container(name)
            container = parse_container(
                container_name, key_loc, node, base_dir, found, declarations, extra,
                whole=not found,
            )  # fmt: skip
        errors += [
            e
            for e in found
            if e.location is None or (e.location.line, e.location.column) not in reported
        ]
        errors[count:] = sorted(  # in the order of the file
            errors[count:],
            key=lambda e: (e.location.line, e.location.column) if e.location else (0, 0),
        )
        return container if len(errors) == count else None

    def _pass_environment(self, spec: Node) -> Node:
        """`environment: [NAME]` or `{NAME: }` (no value): the project's variable of that
        name (the environment over `.env`), as Compose passes it; left out when unset."""
        entry = spec.value.get("environment") if spec.is_mapping else None
        if entry is None:
            return spec
        node = entry.node

        def lookup(name: str) -> str | None:
            value = self.variables.get(name)
            self.variables.used[name] = self.variables.used.get(name, False) or value is not None
            return value

        if node.is_mapping:
            pairs = {}
            for key, item in node.value.items():
                if item.node.is_scalar and item.node.value is None:
                    value = lookup(key)
                    if value is None:
                        continue
                    item = Entry(item.key, Node.at(value, item.node.loc, value))
                pairs[key] = item
            replaced = Node(pairs, node.path, node.line, node.column)
        elif node.is_sequence:
            items = []
            for item in node.value:
                name = item.value
                if isinstance(name, str) and name and "=" not in name:
                    value = lookup(name)
                    if value is None:
                        continue
                    item = Node.at(f"{name}={value}", item.loc, f"{name}={value}")
                items.append(item)
            replaced = Node(items, node.path, node.line, node.column)
        else:
            return spec
        top = dict(spec.value)
        top["environment"] = Entry(entry.key, replaced)
        return Node(top, spec.path, spec.line, spec.column)

    def join_project_network(
        self, container: Container, declared: Mapping[str, object]
    ) -> Container:
        """A service on the project's networks (spec §1.3; Compose's "default network"):
        the network `default` (or no `networks:` and no `network_mode`) is the project's
        own `PROJECT_default`, declared here so it is made on first use, and the service's
        name is a DNS alias on every network it joins, so services reach each other by
        name. (`networks.attach_networks` made an undeclared `default` the bridge
        network; `network_mode: bridge`, `host` and `none` are left as they are.)"""
        if container.network is not None and not container.networks:
            return container
        service = container.service or container.name
        default = self.project.default_network
        joined = container.networks or (NetworkAttachment("bridge"),)
        attachments = []
        uses_default = False
        for attachment in joined:
            if attachment.name == "bridge" and "bridge" not in declared:
                attachment = attachment._replace(name=default)
                uses_default = True
            if service not in attachment.aliases:
                attachment = attachment._replace(aliases=(*attachment.aliases, service))
            attachments.append(attachment)
        specs = container.network_specs
        if uses_default and all(spec.name != default for spec in specs):
            specs = (NetworkSpec(default), *specs)
        return container._replace(network=None, networks=tuple(attachments), network_specs=specs)

    def notes(self, name: str) -> list[str]:
        """Header comment lines of a service's unit: its project and the variables it was
        generated with (names and where each came from, never values)."""
        lines = [f"Compose project {self.project.name}, service {name}"]
        used = self._used.get(name)
        if used:
            saved = self.variables.used
            self.variables.used = used
            try:
                origins = self.variables.origins()
            finally:
                self.variables.used = saved
            where = f"; .env: {self.dotenv_path}" if self.dotenv_path else ""
            lines.append(f"Variables: {', '.join(origins)}{where}")
        return lines

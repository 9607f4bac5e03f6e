"""The layers of toolkit/ and the import rule (README, "How it is built").

Every module's imports are read with `ast`: module level, inside functions and under
`if TYPE_CHECKING:` alike. A package may import its own modules and those of the layers
listed as below it here, nothing else; no module imports another in a circle (a
function-level import does not make a circle acceptable); the package `__init__.py`
files import nothing (every podunit process would pay for it). The layer order is
defined here and nowhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TOOLKIT = Path(__file__).resolve().parents[2] / "toolkit"

# layer -> the modules and packages in it (a package stands for everything below it)
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": ("toolkit", "toolkit.errors", "toolkit.proc", "toolkit.fs", "toolkit.safefile"),
    "definitions": ("toolkit.definitions",),
    "unitgen": ("toolkit.unitgen",),
    "storage": ("toolkit.storage",),
    "systemd": ("toolkit.systemd",),
    "network": ("toolkit.network",),
    "runtime": ("toolkit.runtime",),
    "cli": ("toolkit.cli",),
}

# layer -> the layers it may import (besides itself). Lowest first:
#   foundation < definitions < {unitgen, storage}; storage < systemd < network < runtime;
#   cli above all. Unit generation is pure and never touches the run-time layers.
BELOW: dict[str, set[str]] = {
    "foundation": set(),
    "definitions": {"foundation"},
    "unitgen": {"foundation", "definitions"},
    "storage": {"foundation", "definitions"},
    "systemd": {"foundation", "definitions", "storage"},
    "network": {"foundation", "definitions", "storage", "systemd"},
    "runtime": {"foundation", "definitions", "storage", "systemd", "network"},
    "cli": {"foundation", "definitions", "unitgen", "storage", "systemd", "network", "runtime"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(TOOLKIT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(TOOLKIT.rglob("*.py"))}


def layer_of(module: str) -> str:
    best = ("", "")
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[1]):
                best = (layer, prefix)
    return best[0]


def imports_of(module: str) -> set[str]:
    """The toolkit modules `module` imports anywhere in its text (packages as themselves)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name == "toolkit" or name.startswith("toolkit.")}


GRAPH: dict[str, set[str]] = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer() -> None:
    assert [module for module in MODULES if not layer_of(module)] == []


def test_every_import_names_an_existing_module() -> None:
    missing = {m: sorted(i - MODULES.keys()) for m, i in GRAPH.items() if i - MODULES.keys()}
    assert missing == {}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_to_the_same_or_a_lower_layer(module: str) -> None:
    layer = layer_of(module)
    upward = sorted(
        f"{imported} ({layer_of(imported)})"
        for imported in GRAPH[module]
        if layer_of(imported) != layer and layer_of(imported) not in BELOW[layer]
    )
    assert upward == [], f"{module} ({layer}) imports upward or sideways"


def test_no_import_cycles() -> None:
    """Depth-first search over every import, function-level and TYPE_CHECKING ones included."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(GRAPH[module]):
            if imported == module:
                continue
            if state.get(imported) == 1:
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert [" -> ".join(cycle) for cycle in cycles] == []


def test_package_init_files_import_nothing() -> None:
    importing = [
        module
        for module, path in MODULES.items()
        if path.name == "__init__.py"
        and any(
            isinstance(node, (ast.Import, ast.ImportFrom))
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert importing == []


def test_the_product_does_not_import_the_tooling() -> None:
    tooling = [
        f"{module}: {name}"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
        if name.split(".")[0] in ("tests", "bench")
    ]
    assert tooling == []


def test_the_checker_sees_function_level_and_type_checking_imports() -> None:
    """The graph is not only module level: known lazy and annotation-only edges are in it."""
    assert "toolkit.runtime.exec" in GRAPH["toolkit.runtime.lifecycle"]  # inside remove_container
    assert "toolkit.systemd.cgroups" in GRAPH["toolkit.runtime.placement"]  # TYPE_CHECKING + lazy
    assert "toolkit.definitions.plan" in GRAPH["toolkit.cli.containers"]  # inside _container_for

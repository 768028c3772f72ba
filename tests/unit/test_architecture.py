"""The package's shape: no import cycles between its modules, wherever the import is written."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import nexus_ingest

PACKAGE_ROOT = Path(nexus_ingest.__file__).parent


def module_name(path: Path) -> str:
    """`nexus_ingest.worker.loop` for src/nexus_ingest/worker/loop.py; a package is its __init__."""
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}


def imported_modules(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every module of the package that `path` imports, at any depth of its code (functions too).

    `from a.b import c` names `a.b.c` when that is a module, else `a.b`.
    """
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        yield from (name for name in names if name in modules)


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: set(imported_modules(path, modules)) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    """No module of nexus_ingest imports, directly or through others, a module that imports it."""
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check itself can fail: a graph with a loop through three modules is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_imports_inside_functions_count() -> None:
    """An import written inside a function is an edge of the graph like any other."""
    graph = import_graph()

    assert "nexus_ingest.runtime" in graph["nexus_ingest.cli"]  # imported inside cmd_up

"""The package's import graph: one-way layers, no cycles, few imports hidden in function bodies.

Read from the source (``ast``), so an import inside a function counts as an edge too: a cycle
hidden by a deferred import is still a cycle. ``if TYPE_CHECKING:`` blocks are not imports.

Layers, lowest first (a module may import its own layer and the ones below):
``exceptions`` < ``core`` < ``conf``/``api``/``models`` < ``site`` < entry points (everything else:
admin, rest, management, tasks, middleware, model_hooks, forms, checks, audit, apps, testing).
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "course_plugins"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

MAX_DEFERRED = 15
"""Own-package imports inside function bodies, allowed only where Django's app loading needs
them (models before the registry is ready, the app's ``ready()``) or a process must import little
(the sandbox's zygote)."""

# Lower number = lower layer. The first matching prefix decides.
LAYERS: tuple[tuple[str, int], ...] = (
    ("course_plugins.exceptions", 0),
    ("course_plugins.core", 1),
    ("course_plugins.conf", 2),
    ("course_plugins.api", 2),
    ("course_plugins.models", 2),
    ("course_plugins.site", 3),
)
ENTRY = 4


def layer(module: str) -> int:
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    return ENTRY


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, path: Path, known: set[str]):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    found = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.append(sub if sub in known else base)
    return [t for t in dict.fromkeys(found) if t in known]


def imports() -> Iterator[tuple[str, str, int, bool]]:
    """``(importer, imported, line, deferred)`` for every own-package import."""
    known = modules()
    names = set(known)
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        yield from _visit(tree, False, module, path, names)


def _visit(
    node: ast.AST, deferred: bool, module: str, path: Path, names: set[str]
) -> Iterator[tuple[str, str, int, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            for target in _targets(child, module, path, names):
                if target != module:
                    yield module, target, child.lineno, deferred
        inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        yield from _visit(child, inner, module, path, names)


EDGES = list(imports())


def test_the_graph_is_read():
    assert len(modules()) > 50 and len(EDGES) > 100


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for importer, imported, _, _ in EDGES:
        # A package's __init__ runs before its submodules; only explicit imports are edges.
        graph.setdefault(importer, set()).add(imported)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_imports_run_one_way():
    upward = [
        f"{importer}:{line} imports {imported}"
        for importer, imported, line, _ in EDGES
        if layer(imported) > layer(importer) and importer != PACKAGE
    ]
    assert upward == []


def test_the_core_imports_nothing_above_it():
    # The package root hands the loader its API factory; nothing in core names api or Django's
    # side of the package.
    leaks = [
        f"{importer}:{line} imports {imported}"
        for importer, imported, line, _ in EDGES
        if importer.startswith("course_plugins.core") and layer(imported) > 1
    ]
    assert leaks == []


def test_few_imports_are_deferred():
    statements = sorted({(importer, line) for importer, _, line, deferred in EDGES if deferred})
    listing = "\n".join(f"{importer}:{line}" for importer, line in statements)
    assert len(statements) <= MAX_DEFERRED, listing

"""The shape of the package, read from its code: imports (lazy ones inside functions included) and sizes.

* ``transport.py`` is the only module that imports httpx (DESIGN.md: "the only module that touches httpx");
* no import circle anywhere in the package, so every module stands on a floor above everything it imports;
* no module over ~800 lines (one job per file).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aisearch_ingest"
MAX_LINES = 800


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module name ``name`` imports (absolute), with the line, TYPE_CHECKING blocks included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            # ``from . import x`` of a submodule x imports the module x, not a name of the package's __init__
            if len(submodules) < len(node.names):
                yield target, node.lineno
            for submodule in submodules:
                yield submodule, node.lineno


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for target, _ in _imports(name, path):
            # the module itself, or the closest package that holds it
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("aisearch_ingest"):
                deps.add(target)
        graph[name] = deps
    return graph


def test_the_walk_sees_the_package() -> None:
    # A guard against a test that checks nothing: the walk finds the modules and their imports.
    graph = _graph()
    assert {"aisearch_ingest.transport", "aisearch_ingest.engine", "aisearch_ingest.aisearch"} <= set(graph)
    assert "aisearch_ingest.transport" in graph["aisearch_ingest.engine"]
    assert "aisearch_ingest.engine" in graph["aisearch_ingest.aisearch"]


def test_only_transport_imports_httpx() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for name, path in MODULES.items()
        for target, line in _imports(name, path)
        if (target == "httpx" or target.startswith(("httpx.", "httpcore"))) and name != "aisearch_ingest.transport"
    ]
    assert offenders == [], "httpx is transport.py's alone; these modules import it too"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other in a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_import_circle() -> None:
    # A package's __init__ hands on the names of its modules: it stands above them, and a module importing a name
    # through its own package's __init__ would close a loop -- which this counts as one.
    assert _strongly_connected(_graph()) == []


def test_circle_detection_finds_a_circle() -> None:
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    "name",
    sorted(MODULES),
)
def test_no_room_over_800_lines(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(PACKAGE.parent)} has {lines} lines (one job per file)"

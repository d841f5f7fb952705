"""The house's load-bearing walls, read from the source (``ast``), not from a run.

The emulator stands apart from the client: it shares only the wire vocabulary (``protocol/``) and the ground-floor
pdfium lock (``_pdfium``), so an emulator bug and a client bug cannot hide each other behind shared code. Note that
this is about the source: importing ``aisearch_ingest.emulator`` still runs ``aisearch_ingest/__init__.py``, as any
import of a subpackage does.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "aisearch_ingest"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: Where each part of the emulator's world may reach, as module-name prefixes (``pkg.`` covers ``pkg`` itself).
ALLOWED = {
    f"{PACKAGE}.emulator": (f"{PACKAGE}.emulator.", f"{PACKAGE}.protocol.", f"{PACKAGE}._pdfium"),
    f"{PACKAGE}.protocol": (f"{PACKAGE}.protocol.",),
    f"{PACKAGE}._pdfium": (),
}


def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` of the package, or None when it is not one."""
    parts = name.split(".")[1:]
    base = SRC.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module of the package that the file ``path`` imports, as ``(line, module)``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """Every module of the package that ``source`` (a module of ``package``) imports: ``import``, ``from ... import``
    (relative ones resolved, ``from pkg import submodule`` as the submodule), at any depth (function bodies and
    ``TYPE_CHECKING`` blocks included), and ``importlib.import_module("...")`` with a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _module_file(sub) is not None else base))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return [(line, target) for line, target in found if target == PACKAGE or target.startswith(PACKAGE + ".")]


def _part(module: str) -> str | None:
    for part in ALLOWED:
        if module == part or module.startswith(part + "."):
            return part
    return None


def _crossings(start: list[str]) -> tuple[set[str], list[str]]:
    """Follow imports from ``start`` through every module the rules allow; returns the modules reached and each
    import that breaks a rule, as ``file:line: importer -> target``. A forbidden target is reported, not followed."""
    seen: set[str] = set()
    broken: list[str] = []
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        assert path is not None, module
        part = _part(module)
        assert part is not None, module
        for line, target in _imports(path):
            if not any(target == p.rstrip(".") or target.startswith(p) for p in ALLOWED[part]):
                broken.append(f"{path.relative_to(SRC.parent)}:{line}: {module} -> {target}")
            elif _module_file(target) is not None:
                todo.append(target)
    return seen, broken


def test_emulator_imports_nothing_from_the_client_side() -> None:
    emulator = sorted(_module_name(p) for p in (SRC / "emulator").rglob("*.py"))
    reached, broken = _crossings(emulator)
    assert not broken, "the emulator reaches the client side:\n" + "\n".join(sorted(broken))
    # the walk really went somewhere: the emulator speaks the protocol and shares the pdfium lock
    assert f"{PACKAGE}.protocol.qwen_tasks" in reached and f"{PACKAGE}._pdfium" in reached


def test_the_reader_sees_every_kind_of_import() -> None:
    """The reader behind the rule above finds relative, absolute, nested and importlib imports."""
    source = "\n".join(
        [
            "import json, aisearch_ingest.pages",
            "from ..sources import sniff_type",
            "from .. import cli, errors",
            "from ._sniff import sniff",
            "if TYPE_CHECKING:",
            "    from ..results import Page",
            "def f():",
            "    from ..engine import X",
            "    return importlib.import_module('aisearch_ingest.transport')",
        ]
    )
    assert [target for _, target in _imports_in(source, f"{PACKAGE}.emulator")] == [
        "aisearch_ingest.pages",
        "aisearch_ingest.sources",
        "aisearch_ingest.cli",
        "aisearch_ingest.errors",
        "aisearch_ingest.emulator._sniff",
        "aisearch_ingest.results",
        "aisearch_ingest.engine",
        "aisearch_ingest.transport",
    ]

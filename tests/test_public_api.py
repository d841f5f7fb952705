"""The public surface: ``__all__`` sorted and complete, and no framework imported where it is not needed."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import types

import pytest

PUBLIC_MODULES = ["aisearch_ingest", "aisearch_ingest.langchain", "aisearch_ingest.llama_index"]


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a user can import from the module: everything bound in it but private names and submodules."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType) or name == "annotations":
            continue
        names.add(name)
    return names


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    assert len(exported) == len(set(exported))
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module does not have: {missing}"
    unlisted = _public_names(module) - set(exported)
    assert not unlisted, f"{name} has public names missing from __all__: {sorted(unlisted)}"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_classes_and_functions_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        value = getattr(module, attr)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attr} has no docstring"


def test_the_framework_modules_export_their_classes() -> None:
    from aisearch_ingest import langchain, llama_index

    assert {"DocumentAnalyzeLoader", "ImageAnalyzeLoader", "QwenOCRLoader"} <= set(langchain.__all__)
    assert {"DocumentAnalyzeParser", "ImageAnalyzeParser", "QwenOCRParser", "StructuredTextSplitter"} <= set(
        langchain.__all__
    )
    assert {"DocumentAnalyzeReader", "ImageAnalyzeReader", "QwenOCRReader", "StructuredNodeParser"} <= set(
        llama_index.__all__
    )


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importing_the_core_imports_no_framework() -> None:
    roots = _roots(_modules_after("import aisearch_ingest"))
    assert "aisearch_ingest" in roots
    assert not roots & {"langchain_core", "langchain", "langchain_community", "llama_index"}


def test_importing_the_langchain_module_does_not_import_llama_index() -> None:
    roots = _roots(_modules_after("import aisearch_ingest.langchain"))
    assert "langchain_core" in roots
    assert "llama_index" not in roots


def test_importing_the_llama_index_module_does_not_import_langchain() -> None:
    roots = _roots(_modules_after("import aisearch_ingest.llama_index"))
    assert "llama_index" in roots
    assert not roots & {"langchain_core", "langchain", "langchain_community"}

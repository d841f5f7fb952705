"""The notebooks in ``notebooks/`` run from a clean state, offline, and their saved copies carry their outputs.

Each notebook is executed top to bottom in a fresh ``python3`` kernel (``nbclient``), with ``notebooks/`` as the working
directory and every ``AISEARCH_*`` / ``DASHSCOPE_*`` variable removed, so they always run against the local emulator.
The retrieval notebooks assert, for every question, that the top chunk comes from the right file and page, and that
re-indexing a persistent Chroma store after editing and deleting files keeps exactly the current chunks; a failing
``assert`` (or any exception) fails the test.

Refresh the saved outputs after editing a notebook (same clean, offline execution; timing metadata dropped); this
also writes the picture of each notebook shown in the README (the PNG output of its cell tagged ``readme-image``) to
``notebooks/images/<name>.png``::

    python tests/test_notebooks.py                    # all three
    python tests/test_notebooks.py qwen_ocr_tasks     # one
"""

from __future__ import annotations

import base64
import os
import re
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

from aisearch_ingest.cache import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
IMAGE_DIR = NOTEBOOK_DIR / "images"
README_TAG = "readme-image"
WIDGET = "application/vnd.jupyter.widget-view+json"
NOTEBOOKS = ("langchain_retrieval", "llamaindex_retrieval", "qwen_ocr_tasks")
RETRIEVAL = ("langchain_retrieval", "llamaindex_retrieval")
KERNEL = "python3"
CELL_TIMEOUT = 300  # seconds per cell; the slowest cell (first OCR call, model load) takes well under a minute
MAX_SAVED_BYTES = 400_000  # saved outputs stay small: downscaled 64-colour PNGs
TASKS = (
    "text_recognition",
    "multi_lan",
    "document_parsing",
    "formula_recognition",
    "key_information_extraction",
    "table_parsing",
    "advanced_recognition",
)
ANSWERED = re.compile(r"(\d+) of (\d+) questions answered from the right file and page")


def offline_env() -> dict[str, str]:
    """The environment of the kernel: ours without any service key, endpoint or base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISEARCH_", "DASHSCOPE_")) or k == CACHE_ENV}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    return env


def ensure_kernel() -> None:
    """Make sure a ``python3`` kernel spec exists; if not, install one into this environment (never into $HOME)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(prefix=sys.prefix)


def execute(name: str) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>.ipynb`` from a clean state and return the executed notebook (nothing is written)."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
        record_timing=False,
    )
    client.execute(env=offline_env())
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    """All stream, text/plain and text/html output of a notebook, joined."""
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.extend(out.data.get(kind, "") for kind in ("text/plain", "text/html"))
    return "\n".join(parts)


def readme_image(nb: nbformat.NotebookNode) -> bytes:
    """The first PNG output of the cell tagged ``readme-image`` (``b""`` if there is none)."""
    for cell in nb.cells:
        if README_TAG in cell.metadata.get("tags", []):
            for out in cell.get("outputs", []):
                if "image/png" in out.get("data", {}):
                    return base64.b64decode(out.data["image/png"])
    return b""


def check_outputs(name: str, nb: nbformat.NotebookNode) -> None:
    """What a good run of each notebook shows (on top of the notebook's own asserts)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not run top to bottom"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = text_of(nb)
    assert "local emulator" in text, "ran against a real service"
    assert "IProgress not found" not in text, "progress bars fell back to text: ipywidgets is missing"
    kinds = {kind for c in code for o in c.outputs for kind in o.get("data", {})}
    assert readme_image(nb), f"no PNG output in the cell tagged {README_TAG!r}"
    if name in RETRIEVAL:
        assert {"image/png", "text/html", "text/markdown", WIDGET} <= kinds  # pictures, tables, progress bars
        found = ANSWERED.search(text)
        assert found is not None, "the summary line is missing"
        answered, asked = int(found.group(1)), int(found.group(2))
        assert answered == asked >= 3
    else:
        assert {"image/png", "text/html", "text/markdown"} <= kinds
        for task in TASKS:
            assert f"<td>{task}</td>" in text, f"{task} missing from the usage table"


@pytest.fixture(scope="module", autouse=True)
def _kernel() -> None:
    ensure_kernel()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_offline_from_a_clean_state(name: str) -> None:
    nb = execute(name)
    check_outputs(name, nb)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_saved_notebook_carries_its_outputs(name: str) -> None:
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    check_outputs(name, nb)
    assert path.stat().st_size < MAX_SAVED_BYTES
    for cell in nb.cells:
        assert "execution" not in cell.metadata, "timing metadata saved"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_readme_shows_the_picture_of_each_notebook(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    picture = IMAGE_DIR / f"{name}.png"
    assert picture.read_bytes() == readme_image(nb), "stale picture: refresh with python tests/test_notebooks.py"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Notebooks", 1)[1].split("\n## ", 1)[0]
    assert f"(notebooks/images/{name}.png)" in section


def coalesce_streams(outputs: list[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    """Merge consecutive stdout (or stderr) outputs, so how the kernel flushed does not change the saved file."""
    merged: list[nbformat.NotebookNode] = []
    for out in outputs:
        last = merged[-1] if merged else None
        if last is not None and out.output_type == last.output_type == "stream" and out.name == last.name:
            last.text += out.text
        else:
            merged.append(out)
    return merged


def save(name: str) -> float:
    """Execute one notebook and write it back with its outputs; returns the seconds it took."""
    start = time.perf_counter()
    nb = execute(name)
    seconds = time.perf_counter() - start
    check_outputs(name, nb)
    nb.metadata["language_info"] = {"name": "python"}  # no interpreter version: the same file on every machine
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK_DIR / f"{name}.ipynb")
    IMAGE_DIR.mkdir(exist_ok=True)
    (IMAGE_DIR / f"{name}.png").write_bytes(readme_image(nb))
    return seconds


if __name__ == "__main__":
    ensure_kernel()
    for nb_name in sys.argv[1:] or NOTEBOOKS:
        print(f"{nb_name}: executed and saved in {save(nb_name.removesuffix('.ipynb')):.1f} s")

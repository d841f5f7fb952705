"""Every ```python block of README.md runs as written.

Each block is written to a file and run by a fresh interpreter in a temporary folder that holds what the snippets
name (``report.pdf``, ``docs/``, ``reports/``, ``scans/``..., copies of ``notebooks/data``), with
``AISEARCH_ENDPOINT``/``AISEARCH_API_KEY``/``DASHSCOPE_BASE_URL``/``DASHSCOPE_API_KEY`` pointing at the session's
emulator. A block that cannot run offline says so in the README, on the line before it:
``<!-- not-run: the reason -->``; those are listed (skipped with their reason), and a marker must carry a reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from aisearch_ingest.cache import CACHE_ENV
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.testing import EMULATOR_API_KEY

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DATA = ROOT / "notebooks" / "data"
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(.*?)\s*-->$")

#: Where the snippets' file names come from (relative path in the run folder -> sample in notebooks/data).
FILES = {
    "report.pdf": "annual_report.pdf",
    "invoice.png": "invoice.png",
    "a.pdf": "annual_report.pdf",
    "b.docx": "product_faq.docx",
    "docs/annual_report.pdf": "annual_report.pdf",
    "docs/product_faq.docx": "product_faq.docx",
    "docs/invoice.png": "invoice.png",
    "reports/annual_report.pdf": "annual_report.pdf",
    "scans/contract.pdf": "annual_report.pdf",
    "scans/report.pdf": "annual_report.pdf",
    "scans/scan_page.png": "scan_page.png",
    "scans/invoice.png": "invoice.png",
}


@dataclass(frozen=True)
class Snippet:
    line: int  # of the opening fence, 1-based
    heading: str  # the section it is in
    code: str
    not_run: str | None  # the reason given, or None


def snippets(text: str) -> list[Snippet]:
    """Every ```python block of ``text``, with its section and its not-run reason (the line before it)."""
    found: list[Snippet] = []
    lines = text.splitlines()
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.match(before)
            found.append(Snippet(i + 1, heading, "\n".join(lines[i + 1 : end]) + "\n", marker and marker.group(1)))
            i = end
        elif line.strip().startswith("```"):
            i = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")  # another language's block
        i += 1
    return found


SNIPPETS = snippets(README.read_text(encoding="utf-8"))


def test_the_readme_has_snippets_and_every_marker_gives_a_reason() -> None:
    assert len(SNIPPETS) >= 8
    assert all(s.not_run is None or s.not_run for s in SNIPPETS)
    text = README.read_text(encoding="utf-8").splitlines()
    markers = [n for n, line in enumerate(text, 1) if NOT_RUN.match(line.strip())]
    assert len(markers) == sum(s.not_run is not None for s in SNIPPETS), "a not-run marker not before a block"


def test_the_parser_sees_markers_and_other_languages() -> None:
    text = "# A\n```bash\nx\n```\n<!-- not-run: needs a GPU -->\n```python\nprint(1)\n```\n## B\n```python\nok\n```\n"
    found = snippets(text)
    assert [(s.heading, s.code, s.not_run) for s in found] == [("A", "print(1)\n", "needs a GPU"), ("B", "ok\n", None)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    for name, sample in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / sample, root / name)
    shutil.copytree(DATA, root / "notebooks" / "data")
    return root


def _env(emu: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISEARCH_", "DASHSCOPE_")) or k == CACHE_ENV}
    key = emu.expected_key("aisearch") or EMULATOR_API_KEY
    env.update(
        AISEARCH_ENDPOINT=emu.aisearch_endpoint,
        AISEARCH_API_KEY=key,
        DASHSCOPE_BASE_URL=emu.dashscope_base_url,
        DASHSCOPE_API_KEY=emu.expected_key("dashscope") or EMULATOR_API_KEY,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONIOENCODING="utf-8",
    )
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"line{s.line}-{s.heading[:30]}" for s in SNIPPETS])
def test_the_snippet_runs_as_written(snippet: Snippet, folder: Path, emu: Emulator, tmp_path: Path) -> None:
    if snippet.not_run is not None:
        pytest.skip(f"README line {snippet.line} is marked not-run: {snippet.not_run}")
    script = tmp_path / f"snippet_{snippet.line}.py"
    script.write_text(snippet.code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=_env(emu),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"README line {snippet.line} ({snippet.heading}) failed:\n{proc.stdout}\n{proc.stderr}"


def test_the_inline_emulator_hints_run_even_with_real_keys_in_the_environment(folder: Path, tmp_path: Path) -> None:
    """The one-liners the README gives for trying things offline (``with Emulator(...) as emu: ...``) work as
    written, also for a user whose environment holds real keys; a Qwen-OCR hint never says ``endpoint=``."""
    text = README.read_text(encoding="utf-8").replace("\n", " ")
    hints = re.findall(r"`(with Emulator\([^`]*\) as emu: [^`]+)`", text)
    assert hints, "the README's emulator hint is gone"
    assert not re.search(r"QwenOCR\w*\([^)`]*\bendpoint=", text), "Qwen-OCR takes base_url=, not endpoint="
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISEARCH_", "DASHSCOPE_")) or k == CACHE_ENV}
    env.update(AISEARCH_API_KEY="sk-a-real-key", DASHSCOPE_API_KEY="sk-another-real-key")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    for n, hint in enumerate(hints):
        script = tmp_path / f"hint_{n}.py"
        script.write_text(f"from aisearch_ingest.emulator import Emulator\nfrom aisearch_ingest.langchain import *\n"
                          f"{hint}\n", encoding="utf-8")  # fmt: skip
        proc = subprocess.run([sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=240)  # fmt: skip
        assert proc.returncode == 0, f"{hint}\n{proc.stderr}"

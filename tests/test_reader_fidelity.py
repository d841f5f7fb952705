"""Alibaba's own LlamaIndex reader (``llama-index-readers-alibabacloud-aisearch`` 0.5.0) against the emulator.

An independent client in every sense: written by Alibaba, on the 1.x ``alibabacloud-searchplat20240529`` SDK
(the test environment has 2.x), over its aiohttp transport, in its own process and virtualenv
(``tests/independent/reader_env.py``), configured only through its documented ``AISEARCH_ENDPOINT`` /
``AISEARCH_API_KEY`` variables. ``tests/independent/reader_driver.py`` runs it and prints what it read.

What the reader does (read from its 0.5.0 source, ``llama_index/readers/alibabacloud_aisearch/base.py``):
``Config(bearer_token, endpoint, protocol="http")``; create the task with ``output.image_storage="url"``, then
poll task-status every ``check_interval`` seconds (an int, default 3) until ``SUCCESS``; anything other than
``PENDING``/``SUCCESS`` raises. Only the *create* is retried on ``Throttling.RateQuota`` (a fixed 1 s sleep); a
throttled *status poll* is not retried and aborts the whole ``aload_data``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aisearch_ingest.emulator import Emulator
from independent import reader_env
from samples import png

pytest.importorskip("rapidocr", reason="image/PDF parsing needs the `local` extra")

KEY = "test-key-reader"
DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
#: runs of the throttled scenario spoiled by a throttled status poll are repeated up to this many times
ATTEMPTS = 5
INVOICE_MARKERS = ("Invoice No: INV-2024-0815", "Total: EUR 3,310.00", "AquaSense Pro 3 sensor")


@pytest.fixture(scope="session")
def reader_python() -> Path:
    return reader_env.reader_python()


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh(emu: Emulator) -> Iterator[None]:
    emu.reset()
    yield
    emu.reset()


def run_reader(python: Path, emu: Emulator, reader: str, files: list[str], **reader_kwargs: Any) -> dict[str, Any]:
    """The reader in its own venv: ``{"versions", "service_id", "documents": [{"text"}]}`` or ``"error"``."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # the emulator is on loopback
    env.update(AISEARCH_ENDPOINT=emu.endpoint, AISEARCH_API_KEY=KEY, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)  # nothing of ours on the reader's path
    spec = {"reader": reader, "files": files, "reader_kwargs": reader_kwargs}
    done = subprocess.run(
        [str(python), str(reader_env.DRIVER), json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout)
    assert out["versions"]["llama-index-readers-alibabacloud-aisearch"] == "0.5.0"
    assert out["versions"]["alibabacloud-searchplat20240529"].startswith("1."), out["versions"]
    return out


def _texts(out: dict[str, Any]) -> list[str]:
    assert "error" not in out, out["error"]
    return [d["text"] for d in out["documents"]]


def test_reader_parses_a_pdf_and_a_docx(reader_python: Path, emu: Emulator) -> None:
    # one aload_data over two files: the reader runs them as concurrent jobs (num_workers=4), order kept
    out = run_reader(
        reader_python,
        emu,
        "document",
        [str(DATA / "annual_report.pdf"), str(DATA / "product_faq.docx")],
        check_interval=1,
    )
    assert out["service_id"] == "ops-document-analyze-001"
    pdf, docx = _texts(out)
    # PDF -> markdown, every page in order
    assert pdf.startswith("# Brightwater Instruments Annual Report 2024")
    markers = [
        "Brightwater Instruments designs",
        "## Financial Performance",
        "Revenue for the full year 2024 reached",
        "Trondheim",
    ]
    positions = [pdf.find(m) for m in markers]
    assert -1 not in positions and positions == sorted(positions), positions
    assert "|" in pdf  # the revenue table of page 2, as a markdown table
    # DOCX -> HTML (the service answers HTML for non-PDF types), its FAQ headings, answers and table
    assert "AquaSense Pro 3 - Frequently Asked Questions" in docx
    assert "How do I reset my password?" in docx and "Settings &gt; Account &gt; Reset password" in docx
    assert "<table" in docx and "<h" in docx
    stats = emu.stats
    assert stats.calls_by_action["CreateDocumentAnalyzeTask"] == 2 and stats.tasks_created == 2
    assert stats.responses_by_status == {200: stats.total_calls}


@pytest.mark.parametrize("service_id", ["ops-image-analyze-vlm-001", "ops-image-analyze-ocr-001"])
def test_reader_parses_a_png_on_both_image_services(reader_python: Path, emu: Emulator, service_id: str) -> None:
    data = (DATA / "invoice.png").read_bytes()
    # a path and a data: URL (the image reader's own branch: file_type from the media type)
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    out = run_reader(
        reader_python, emu, "image", [str(DATA / "invoice.png"), data_url], service_id=service_id, check_interval=1
    )
    assert out["service_id"] == service_id
    from_path, from_url = _texts(out)
    assert from_path == from_url
    for marker in INVOICE_MARKERS:
        assert marker in from_path
    stats = emu.stats
    assert stats.calls_by_route["image-analyze/async"] == 2 and stats.tasks_created == 2
    assert "document-analyze/async" not in stats.calls_by_route


def test_reader_retries_throttled_creates_and_finishes(reader_python: Path, emu: Emulator, tmp_path: Path) -> None:
    """QPS 2 and one worker: a create that follows a finished file's create + poll within the second is a 429
    ``Throttling.RateQuota``; the reader sleeps 1 s on it, retries, and reads every file.

    The reader does NOT retry its status poll, so the run is shaped to keep polls under the limit: one worker
    (concurrent jobs get polls throttled) and tasks done at their first poll (the parses are computed
    beforehand through the sync route, so a task is SUCCESS as soon as the emulator's parse pool has looked
    it up). That look-up races the reader's immediate first poll: now and then the poll wins, sees PENDING,
    and the reader's next create + poll land in the same second as its finishing poll, whose 429 the reader
    gives up on. Such an attempt proves nothing about create retries either way, so it is run again (at most
    :data:`ATTEMPTS` times); any other outcome is final."""
    n = 3
    files = []
    for i in range(n):
        path = tmp_path / f"page{i}.png"
        path.write_bytes(png(f"Throttled page {i} OK"))
        files.append(str(path))
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        for name in files:
            content = base64.b64encode(Path(name).read_bytes()).decode()
            warm = http.post(
                "/v3/openapi/workspaces/default/image-analyze/ops-image-analyze-ocr-001/sync",
                json={"document": {"content": content, "file_name": "warm.png"}},
            )
            assert warm.status_code == 200, warm.text
    spoiled = []
    for _attempt in range(ATTEMPTS):
        emu.reset()
        emu.set_qps(2)
        out = run_reader(reader_python, emu, "image", files, check_interval=1, num_workers=1)
        stats = emu.stats
        refused_creates = stats.calls_by_route["image-analyze/async"] - stats.tasks_created
        refused_polls = stats.throttled - refused_creates
        if "error" in out and out["error"]["code"] == "Throttling.RateQuota" and refused_polls > 0:
            spoiled.append(stats)
            continue
        break
    assert [t.strip() for t in _texts(out)] == [f"Throttled page {i} OK" for i in range(n)], spoiled
    assert stats.throttled > 0, stats  # the limit really bit
    assert stats.responses_by_status[429] == stats.throttled
    # every refused call was a create the reader retried: one create per task plus one per 429
    assert stats.tasks_created == n and refused_creates == stats.throttled and refused_polls == 0
    assert stats.calls_by_route["image-analyze/task-status"] == stats.responses_by_status[200] - n
    assert stats.max_calls_in_any_window(1.0) <= 3  # 2 admitted + the one refused create


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_reader_venv_build_failure_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    def no_index(venv: Path) -> None:
        raise subprocess.CalledProcessError(1, ["pip", "install"], stderr="ERROR: No matching distribution found")

    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("AISEARCH_INGEST_READER_VENV_ROOT", str(tmp_path))
    monkeypatch.setattr(reader_env, "_build", no_index)
    with pytest.raises(outcome, match="No matching distribution found"):
        reader_env.reader_python()

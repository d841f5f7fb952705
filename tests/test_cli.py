"""The main job: `aisearch-ingest ingest` (offline, through the embedded emulator) and `aisearch-ingest estimate`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aisearch_ingest.cache import CACHE_ENV
from aisearch_ingest.cli import main

DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
pytest.importorskip("rapidocr", reason="offline parsing needs the `local` extra")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISEARCH_", "DASHSCOPE_")) or k == CACHE_ENV}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Quickstart line 1, as a user runs it: the installed console script, offline, over notebooks/data."""
    out = tmp_path_factory.mktemp("quickstart") / "chunks.jsonl"
    exe = Path(sys.executable).with_name("aisearch-ingest")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "aisearch_ingest.cli"]
    proc = subprocess.run(
        [*command, "ingest", str(DATA), "--offline", "--out", str(out)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=240,
    )
    return proc, out


def test_quickstart_writes_chunks_with_pages_usage_and_headings(
    quickstart: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, out = quickstart
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].startswith("offline: using the built-in emulator at http://127.0.0.1:")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    sources = {Path(rec["metadata"]["source"]).name for rec in lines}
    assert {"annual_report.pdf", "product_faq.docx", "invoice.png", "meeting_notes.md"} <= sources
    for rec in lines:
        assert set(rec) == {"id", "text", "metadata"} and rec["text"].strip()
        meta = rec["metadata"]
        assert all(isinstance(v, (str, int, float, bool)) for v in meta.values()), meta
        assert any(k.startswith("usage_") for k in meta), meta
        assert "headings" in meta and "chunk_index" in meta and "chunk_tokens" in meta
        assert meta["chunk_tokens"] <= 512
    pdf = [r["metadata"] for r in lines if r["metadata"]["source"].endswith("annual_report.pdf")]
    assert {m["page_start"] for m in pdf} == {1, 2, 3}
    assert all("page" in m for m in pdf if m["page_start"] == m["page_end"])
    assert any(m["headings"] for m in pdf)
    assert len({r["id"] for r in lines}) == len(lines)
    for label in ("files parsed:", "files failed:      0", "documents written:", "pages:", "usage ", "wall time:"):
        assert label in proc.stdout


def test_ids_are_stable_across_runs(quickstart: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    _, first = quickstart
    subset = tmp_path / "data"
    subset.mkdir()
    shutil.copy(DATA / "annual_report.pdf", subset / "annual_report.pdf")
    out = tmp_path / "again.jsonl"
    # the same source (the path as given, here relative to the same working directory) on a second run
    lines = first.read_text(encoding="utf-8").splitlines()
    given = next(json.loads(line)["metadata"]["source"] for line in lines if "annual_report.pdf" in line)
    assert main(["ingest", given, "--offline", "--out", str(out), "--no-progress"]) == 0
    again = {json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()}
    before = {
        json.loads(line)["id"] for line in lines if json.loads(line)["metadata"]["source"].endswith("annual_report.pdf")
    }
    assert again == before
    # the same bytes at another path are another source: other ids
    renamed = tmp_path / "out-renamed.jsonl"
    assert main(["ingest", str(subset), "--offline", "--out", str(renamed), "--no-progress"]) == 0
    elsewhere = {json.loads(line)["id"] for line in renamed.read_text(encoding="utf-8").splitlines()}
    assert not elsewhere & before


def test_a_corrupt_file_is_reported_and_the_rest_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)  # notebooks/data plus a corrupt PDF and an empty one
    good = {p.name for p in data.iterdir()}
    (data / "broken.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2048))
    (data / "empty.pdf").write_bytes(b"")
    out = tmp_path / "out" / "chunks.jsonl"
    code = main(["ingest", str(data), "--offline", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    written = {Path(json.loads(line)["metadata"]["source"]).name for line in out.read_text().splitlines()}
    assert written == good
    failures = [json.loads(line) for line in (out.parent / "chunks.failures.jsonl").read_text().splitlines()]
    assert {Path(f["source"]).name for f in failures} == {"broken.pdf", "empty.pdf"}
    assert all(f["error"] for f in failures)
    assert "files failed:      2" in captured.out and "broken.pdf" in captured.out and "empty" in captured.out


def test_without_keys_it_explains_how_to_configure_or_go_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AISEARCH_API_KEY", "AISEARCH_ENDPOINT", "DASHSCOPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code = main(["ingest", str(DATA / "meeting_notes.md"), "--out", str(tmp_path / "x.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    assert "AISEARCH_API_KEY" in err and "AISEARCH_ENDPOINT" in err and "--offline" in err
    assert not (tmp_path / "x.jsonl").exists()


def test_page_mode_and_qwen_service(tmp_path: Path) -> None:
    out = tmp_path / "pages.jsonl"
    code = main(
        ["ingest", str(DATA / "annual_report.pdf"), "--offline", "--out", str(out), "--mode", "page", "--no-progress"]
    )
    assert code == 0
    pages = [json.loads(line)["metadata"]["page"] for line in out.read_text().splitlines()]
    assert pages == [1, 2, 3] or sorted(pages) == [1, 2, 3]
    out_q = tmp_path / "qwen.jsonl"
    code = main(
        [
            "ingest",
            str(DATA / "invoice.png"),
            "--offline",
            "--service",
            "qwen-ocr",
            "--ocr-task",
            "key_information_extraction",
            "--mode",
            "document",
            "--out",
            str(out_q),
            "--no-progress",
        ]
    )
    assert code == 0
    (record,) = [json.loads(line) for line in out_q.read_text().splitlines()]
    assert (
        record["metadata"]["service"] == "qwen-ocr" and record["metadata"]["ocr_task"] == "key_information_extraction"
    )
    assert record["metadata"]["content_type"] == "json" and record["metadata"]["usage_image_tokens"] > 0


def test_estimate_prints_calls_and_tokens_without_sending(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["estimate", str(DATA / "annual_report.pdf"), str(DATA / "invoice.png")])
    out = capsys.readouterr().out
    assert code == 0
    assert "annual_report.pdf" in out and "document-analyze" in out and "image-analyze" in out
    assert "nothing was sent" in out
    pdf_row = next(line for line in out.splitlines() if "annual_report.pdf" in line)
    assert " 3 " in pdf_row  # three pages → three Qwen-OCR calls


def test_emulator_command_serves_until_stopped() -> None:
    import re

    import httpx

    exe = Path(sys.executable).with_name("aisearch-ingest")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "aisearch_ingest.cli"]
    proc = subprocess.Popen(
        [*command, "emulator", "--port", "0", "--api-key", "cli-secret-key"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first
        assert "cli-secret-key" not in first
        url = match.group(0)
        path = "/v3/openapi/workspaces/default/document-analyze/ops-document-analyze-001/async/task-status"
        ok = httpx.get(url + path, params={"task_id": "nope"}, headers={"Authorization": "Bearer cli-secret-key"})
        assert ok.status_code == 404 and ok.json()["code"] == "BadRequest.TaskNotExist"
        wrong = httpx.get(url + path, params={"task_id": "nope"}, headers={"Authorization": "Bearer other"})
        assert wrong.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_inputs_stay_on_disk_until_their_turn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tracemalloc

    data = tmp_path / "batch"
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("*.pdf", "*.docx", "*.pptx", "*.png", "*.jpg"))
    good = {p.name for p in data.iterdir()}
    with (data / "huge.pdf").open("wb") as f:  # 3 GB, sparse: costs no disk, but reading it would cost 3 GB of RAM
        f.write(b"%PDF-1.7\n")
        f.truncate(3 * 1024**3)
    out = tmp_path / "chunks.jsonl"
    tracemalloc.start()
    try:
        code = main(["ingest", str(data), "--offline", "--out", str(out), "--no-progress"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    captured = capsys.readouterr()
    assert code == 1
    assert {Path(json.loads(x)["metadata"]["source"]).name for x in out.read_text().splitlines()} == good
    assert "huge.pdf is 3.0 GiB" in captured.out and "limit" in captured.out
    assert peak < 512 * 1024**2, f"peak {peak / 2**20:.0f} MiB: a file was read whole"

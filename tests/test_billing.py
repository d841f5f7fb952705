"""Knowing what was billed: a billed call (task create, sync call, Qwen-OCR generation) whose request reached the
service but whose answer was lost is re-sent, and counted as "possibly billed twice" in the result, the outcome, the
loaders, the readers and the CLI summary. The emulator's ``drop_after`` fault does the work (creates the task,
bills the call), then closes the connection without the answer, so its own counters show the duplicate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aisearch_ingest import DocumentAnalyzer, ImageAnalyzer, PollPolicy, QwenOCR
from aisearch_ingest.cli import main
from aisearch_ingest.emulator import Emulator
from samples import pdf as _pdf
from samples import png as _png

pytest.importorskip("rapidocr", reason="the emulator's image OCR needs the `local` extra")

KEY = "test-key-billing"
POLL = PollPolicy(min_interval=0.05, max_interval=0.2, timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[Emulator]:
    with Emulator(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture
def emu(server: Emulator) -> Iterator[Emulator]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return _pdf(["Billing page one.", "Billing page two."])


def test_lost_create_answer_is_counted_and_the_duplicate_task_is_real(emu: Emulator, pdf: bytes) -> None:
    emu.inject("drop_after", route="document-analyze/async")
    with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, poll=POLL) as client:
        result = client.parse(pdf, file_name="report.pdf")
    assert "Billing page two" in result.content
    assert result.possibly_billed_twice == 1
    assert emu.stats.tasks_created == 2  # the service really did the work twice
    assert emu.stats.dropped == 1


def test_a_lost_poll_answer_costs_nothing_and_is_not_counted(emu: Emulator, pdf: bytes) -> None:
    emu.inject("drop_after", route="document-analyze/task-status")
    with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, poll=POLL) as client:
        result = client.parse(pdf, file_name="report.pdf")
    assert emu.stats.dropped == 1 and emu.stats.tasks_created == 1
    assert result.possibly_billed_twice == 0


def test_a_connection_that_fails_before_sending_is_not_counted(pdf: bytes) -> None:
    with Emulator(api_key=KEY) as emulator:
        url = emulator.url
    # the emulator is gone: every attempt fails to connect, so nothing reached a service
    with DocumentAnalyzer(api_key=KEY, endpoint=url, max_retries=1) as client:
        outcomes = list(client.parse_many([pdf]))
    assert not outcomes[0].ok
    assert outcomes[0].possibly_billed_twice == 0


def test_sync_image_and_qwen_calls(emu: Emulator) -> None:
    png = _png("Billed 7")
    emu.inject("drop_after", route="image-analyze/sync")
    with ImageAnalyzer(api_key=KEY, endpoint=emu.url) as images:
        (outcome,) = list(images.parse_many([png]))
    assert outcome.ok and outcome.possibly_billed_twice == 1
    assert outcome.result is not None and "Billed" in outcome.result.content

    emu.inject("drop_after", route="dashscope/generation")
    with QwenOCR(api_key=KEY, base_url=emu.url) as qwen:
        result = qwen.parse(png, file_name="b.png")
    assert result.possibly_billed_twice == 1
    assert emu.stats.calls_by_route.get("dashscope/generation") == 2


def test_a_file_that_fails_still_reports_what_may_have_been_billed(emu: Emulator, pdf: bytes) -> None:
    emu.inject("drop_after", count=3, route="document-analyze/async")
    with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, poll=POLL, max_retries=2) as client:
        (outcome,) = list(client.parse_many([pdf]))
    assert not outcome.ok
    assert outcome.possibly_billed_twice == 3 and emu.stats.tasks_created == 3


def test_loaders_and_readers_report_it(emu: Emulator, pdf: bytes, tmp_path: Path) -> None:
    from aisearch_ingest.langchain import DocumentAnalyzeLoader
    from aisearch_ingest.llama_index import DocumentAnalyzeReader

    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    emu.inject("drop_after", route="document-analyze/async")
    loader = DocumentAnalyzeLoader(str(path), api_key=KEY, endpoint=emu.url, poll=POLL)
    try:
        docs = loader.load()
    finally:
        loader.close()
    assert docs and loader.possibly_billed_twice == {str(path): 1}
    assert loader.failures == []

    emu.inject("drop_after", route="document-analyze/async")
    reader = DocumentAnalyzeReader(api_key=KEY, endpoint=emu.url)
    try:
        nodes = reader.load_data(str(path))
    finally:
        reader.close()
    assert nodes and reader.possibly_billed_twice == {str(path): 1}


def test_cli_summary_names_it(
    emu: Emulator, pdf: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(pdf)
    (folder / "b.pdf").write_bytes(_pdf(["Another billed file."]))
    monkeypatch.setenv("AISEARCH_API_KEY", KEY)
    monkeypatch.setenv("AISEARCH_ENDPOINT", emu.url)
    emu.inject("drop_after", route="document-analyze/async")
    code = main(["ingest", str(folder), "--out", str(tmp_path / "out.jsonl"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "possibly billed twice: 1 call(s) of 1 file(s)" in out
    assert emu.stats.tasks_created == 3


def test_loaders_and_readers_are_context_managers_that_close(emu: Emulator, pdf: bytes, tmp_path: Path) -> None:
    from aisearch_ingest.langchain import DocumentAnalyzeLoader
    from aisearch_ingest.llama_index import DocumentAnalyzeReader

    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    with DocumentAnalyzeLoader(str(path), api_key=KEY, endpoint=emu.url, poll=POLL) as loader:
        assert loader.load()
        assert loader.client._engine.portal.started  # the blocking API's private loop ran
    assert not loader.client._engine.portal.started  # closed on exit: no thread, no open sockets
    with DocumentAnalyzeReader(api_key=KEY, endpoint=emu.url) as reader:
        assert reader.load_data(str(path))
        client = reader.client
    assert not client._engine.portal.started

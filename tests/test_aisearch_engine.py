"""The AI Search engine (document-analyze, image-analyze) against the emulator, over real sockets.

No part of our transport or engine is patched: every fault is injected by the emulator.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aisearch_ingest import (
    AuthenticationError,
    BadRequestError,
    DocumentAnalyzer,
    ImageAnalyzer,
    InvalidInputError,
    NotFoundError,
    PollPolicy,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
)
from aisearch_ingest.emulator import Emulator, Faults, Latency
from samples import pdf as _pdf
from samples import png as _png

pytest.importorskip("rapidocr", reason="the emulator's image OCR needs the `local` extra")

KEY = "test-key-8f2a9c"
DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"


@pytest.fixture(scope="module")
def png() -> bytes:
    return _png()


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return _pdf(["First page about revenue.", "Second page about costs.", "Third page about outlook."])


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY, seed=7) as emulator:
        yield emulator


def _doc(emu: Emulator, **kwargs: object) -> DocumentAnalyzer:
    kwargs.setdefault("poll", PollPolicy(min_interval=0.05, max_interval=0.2, timeout=30))
    return DocumentAnalyzer(api_key=KEY, endpoint=emu.url, **kwargs)  # type: ignore[arg-type]


def _img(emu: Emulator, **kwargs: object) -> ImageAnalyzer:
    return ImageAnalyzer(api_key=KEY, endpoint=emu.url, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("route", ["async", "sync"])
def test_pdf_through_both_routes(emu: Emulator, pdf: bytes, route: str) -> None:
    with _doc(emu, route=route) as analyzer:
        result = analyzer.parse(pdf, file_name="report.pdf")
    assert result.content_type == "markdown"
    assert result.page_num == 3
    assert [p.number for p in result.pages] == [1, 2, 3]
    assert "Second page about costs" in result.pages[1].content
    assert "revenue" in result.content and "outlook" in result.content
    assert result.usage["token_count"] > 0
    assert result.request_id
    assert result.service == "document-analyze" and result.service_id == "ops-document-analyze-001"
    routes = dict(emu.stats.calls_by_route)
    if route == "async":
        assert result.task_id and result.calls >= 2
        assert routes.get("document-analyze/async") == 1 and routes.get("document-analyze/task-status", 0) >= 1
    else:
        assert result.task_id is None and result.calls == 1
        assert routes == {"document-analyze/sync": 1}


@pytest.mark.parametrize("route", ["async", "sync"])
@pytest.mark.parametrize("service_id", ["ops-image-analyze-vlm-001", "ops-image-analyze-ocr-001"])
def test_image_through_both_routes(emu: Emulator, png: bytes, route: str, service_id: str) -> None:
    with _img(emu, route=route, service_id=service_id) as analyzer:
        result = analyzer.parse(png, file_name="hello.png")
    assert "Hello" in result.content
    assert result.page_num == 1
    key = "token_count" if service_id.endswith("vlm-001") else "pv_count"
    assert result.usage[key] >= 1
    assert (result.task_id is not None) == (route == "async")


def test_auto_route_spends_one_call_per_image(emu: Emulator, png: bytes) -> None:
    with _img(emu) as analyzer:
        result = analyzer.parse(png, file_name="a.png")
    assert result.calls == 1
    assert emu.stats.total_calls == 1


@pytest.mark.parametrize("header", ["Retry-After", "x-acs-retry-after"])
def test_429_retry_after_is_obeyed(emu: Emulator, png: bytes, header: str) -> None:
    emu.inject(429, count=1, retry_after=1.0, retry_after_header=header)
    with _img(emu) as analyzer:
        started = time.monotonic()
        result = analyzer.parse(png, file_name="a.png")
        waited = time.monotonic() - started
    assert "Hello" in result.content
    assert result.calls == 2
    assert 1.0 <= waited < 3.0, waited
    assert emu.stats.throttled == 1


@pytest.mark.parametrize("kind", [500, 503, "drop"])
def test_5xx_and_dropped_connections_are_retried(emu: Emulator, png: bytes, kind: object) -> None:
    emu.inject(kind, count=2)  # type: ignore[arg-type]
    with _img(emu) as analyzer:
        result = analyzer.parse(png, file_name="a.png")
    assert "Hello" in result.content
    assert result.calls == 3


def test_retries_are_bounded(emu: Emulator, png: bytes) -> None:
    emu.inject(503, count=50)
    with _img(emu, max_retries=2) as analyzer, pytest.raises(ServerError) as info:
        analyzer.parse(png, file_name="a.png")
    assert info.value.status_code == 503
    assert emu.stats.total_calls == 3


def test_400_is_not_retried(emu: Emulator) -> None:
    # Text named .pdf: our client sends it as a pdf (the bytes don't say otherwise); the service refuses it.
    with _doc(emu) as analyzer, pytest.raises(BadRequestError) as info:
        analyzer.parse(b"plain words, not a PDF", file_name="fake.pdf")
    assert info.value.status_code == 400 and info.value.code == "InvalidParameter"
    assert emu.stats.total_calls == 1


def test_wrong_key_is_an_authentication_error_without_the_key(emu: Emulator, png: bytes) -> None:
    secret = "OS-wrong-secret-key-123456"
    with ImageAnalyzer(api_key=secret, endpoint=emu.url) as analyzer, pytest.raises(AuthenticationError) as info:
        analyzer.parse(png, file_name="a.png")
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert emu.stats.total_calls == 1


def test_failed_and_hanging_tasks_do_not_sink_the_batch(tmp_path: Path, png: bytes) -> None:
    for name in ("good1.png", "bad-fail.png", "slow-hang.png", "good2.png"):
        (tmp_path / name).write_bytes(png)
    with Emulator(api_key=KEY, faults=Faults(fail_names=["-fail"], hang_names=["-hang"])) as emu:
        poll = PollPolicy(min_interval=0.05, max_interval=0.2, timeout=1.5)
        with _img(emu, route="async", poll=poll) as analyzer:
            outcomes = {Path(o.source).name: o for o in analyzer.parse_many(tmp_path)}
    assert set(outcomes) == {"good1.png", "bad-fail.png", "slow-hang.png", "good2.png"}
    assert outcomes["good1.png"].ok and outcomes["good2.png"].ok
    failed = outcomes["bad-fail.png"].error
    assert isinstance(failed, TaskFailedError) and failed.status in ("FAIL", "FAILED") and failed.error
    assert failed.task_id and failed.source and failed.source.endswith("bad-fail.png")
    hung = outcomes["slow-hang.png"].error
    assert isinstance(hung, TaskTimeoutError) and hung.task_id and hung.waited >= 1.5


def test_ctrl_c_during_a_blocking_parse_stops_the_work(tmp_path: Path, png: bytes) -> None:
    (tmp_path / "slow-hang.png").write_bytes(png)
    with Emulator(api_key=KEY, faults=Faults(hang_names=["-hang"])) as emu:
        poll = PollPolicy(min_interval=0.05, max_interval=0.05, timeout=60)
        with _img(emu, route="async", poll=poll) as analyzer:
            # Python's own Ctrl-C handler, as in a terminal or Jupyter (a job started in the background by a shell
            # inherits SIGINT ignored).
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            ctrl_c = threading.Timer(1.0, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
            ctrl_c.start()
            started = time.monotonic()
            try:
                with pytest.raises(KeyboardInterrupt):
                    analyzer.parse(tmp_path / "slow-hang.png")
            finally:
                ctrl_c.cancel()
                signal.signal(signal.SIGINT, previous)
            assert time.monotonic() - started < 10
            polls = emu.stats.total_calls
            assert polls >= 3  # it was polling the hung task
            time.sleep(0.5)
            assert emu.stats.total_calls == polls  # and stopped when interrupted


def test_unknown_task_is_not_found(emu: Emulator) -> None:
    with _doc(emu) as analyzer, pytest.raises(NotFoundError) as info:
        asyncio.run(analyzer.await_task("00000000-0000-0000-0000-000000000000"))
    assert info.value.code == "BadRequest.TaskNotExist"


def test_oversized_and_empty_files_rejected_before_any_request(emu: Emulator, tmp_path: Path) -> None:
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.7\n" + b"0" * (7 * 1024 * 1024))
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with _doc(emu) as analyzer:
        outcomes = {Path(o.source).name: o for o in analyzer.parse_many([big, empty])}
    assert isinstance(outcomes["big.pdf"].error, InvalidInputError)
    assert outcomes["big.pdf"].error.limit == "max_body_bytes"
    assert "big.pdf" in str(outcomes["big.pdf"].error) and "8.0 MiB" in str(outcomes["big.pdf"].error)
    assert isinstance(outcomes["empty.pdf"].error, InvalidInputError)
    assert outcomes["empty.pdf"].error.limit == "empty"
    assert emu.stats.total_calls == 0


def test_blocking_api_inside_a_running_event_loop(emu: Emulator, png: bytes) -> None:
    analyzer = _img(emu)

    async def main() -> str:
        # As in Jupyter: a loop is running in this thread, and we call the blocking API anyway.
        return analyzer.parse(png, file_name="a.png").content

    try:
        inside = asyncio.run(main())
        outside = analyzer.parse(png, file_name="a.png").content
    finally:
        analyzer.close()
    assert inside == outside and "Hello" in inside


async def test_async_api_runs_sources_concurrently(png: bytes) -> None:
    with Emulator(api_key=KEY, latency=Latency(fixed=1.0)) as emu:
        analyzer = _doc(emu)
        started = time.monotonic()
        results = [o async for o in analyzer.aparse_many([b"# a\n\nx", b"# b\n\ny"])]
        elapsed = time.monotonic() - started
        await analyzer.aclose()
    assert all(o.ok for o in results), [o.error for o in results]
    assert elapsed < 1.8, elapsed


def test_client_rate_limit_prevents_429(png: bytes) -> None:
    with Emulator(api_key=KEY, qps=20) as emu, _img(emu, qps=20, max_concurrency=8) as analyzer:
        outcomes = list(analyzer.parse_many([png] * 30))
        stats = emu.stats
    assert all(o.ok for o in outcomes)
    assert stats.throttled == 0
    assert stats.max_calls_in_any_window(1.0) <= 20


def test_no_key_in_logs(emu: Emulator, png: bytes, caplog: pytest.LogCaptureFixture) -> None:
    emu.inject(503, count=1)
    with caplog.at_level(logging.DEBUG, logger="aisearch_ingest"), _img(emu) as analyzer:
        analyzer.parse(png, file_name="a.png")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "retry 1/5" in text
    assert KEY not in text


def test_stop_on_error_starts_nothing_new_but_settles_in_flight(tmp_path: Path) -> None:
    (tmp_path / "a-empty.md").write_bytes(b"")  # fails before sending, first in order
    for i in range(6):
        (tmp_path / f"b{i}.md").write_bytes(f"# doc {i}\n\ntext".encode())
    with Emulator(api_key=KEY, latency=Latency(fixed=0.3)) as emu:
        with _doc(emu, max_concurrency=2) as analyzer:
            outcomes = list(analyzer.parse_many(tmp_path, stop_on_error=True))
        with _doc(emu, max_concurrency=2) as analyzer:
            everything = list(analyzer.parse_many(tmp_path))
    assert [o.ok for o in outcomes].count(False) == 1
    assert len(outcomes) < 7  # sources queued behind the failure were never started
    assert all(o.ok for o in outcomes if not o.source.endswith("a-empty.md"))
    assert len(everything) == 7


def test_an_unclosed_client_does_not_hang_interpreter_exit(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "unclosed.py"
    script.write_text(
        "from aisearch_ingest import DocumentAnalyzer\n"
        "from aisearch_ingest.emulator import Emulator\n"
        "emu = Emulator().start()\n"
        "client = DocumentAnalyzer(endpoint=emu.url, api_key='k')\n"
        "print(client.parse(b'# hi', file_name='a.md').content_type)\n"
        "emu.stop()\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "html"


# --- ops-document-analyze-002: PDFs and images (CHANGES-2026.md §D) ------------------------------------------------


@pytest.mark.parametrize("route", ["async", "sync"])
def test_document_analyze_002_takes_images_and_pdfs(emu: Emulator, png: bytes, pdf: bytes, route: str) -> None:
    with _doc(emu, service_id="ops-document-analyze-002", route=route) as analyzer:
        image = analyzer.parse(png, file_name="scan.png")
        document = analyzer.parse(pdf, file_name="report.pdf")
    assert image.service_id == "ops-document-analyze-002" and image.file_type == "png"
    assert image.content_type == "markdown" and "Hello" in image.content  # read by the emulator's OCR
    assert image.page_num == 1 and image.usage["token_count"] > 0
    assert document.content_type == "markdown" and document.page_num == 3


def test_document_analyze_001_still_refuses_images(emu: Emulator, png: bytes) -> None:
    with _doc(emu) as analyzer, pytest.raises(InvalidInputError) as info:
        analyzer.parse(png, file_name="scan.png")
    assert info.value.limit == "file_type"
    # and the emulator refuses an image under -001 on the wire
    body = {"document": {"content": base64.b64encode(png).decode(), "file_name": "scan.png"}}
    headers = {"Authorization": f"Bearer {KEY}"}
    for sid, status in (("ops-document-analyze-001", 400), ("ops-document-analyze-002", 200)):
        r = httpx.post(
            f"{emu.url}/v3/openapi/workspaces/default/document-analyze/{sid}/async", json=body, headers=headers
        )
        assert r.status_code == status, (sid, r.text)


def test_document_types_are_the_pages_list_plus_known_extras() -> None:
    from aisearch_ingest.limits import DOCUMENT_ANALYZE_002_TYPES, DOCUMENT_TYPES, IMAGE_TYPES

    # the EN page (Aug 05, 2025): TXT, PDF, HTML, DOC, DOCX, PPT, PPTX
    assert {"txt", "pdf", "html", "doc", "docx", "ppt", "pptx"} <= DOCUMENT_TYPES
    assert DOCUMENT_TYPES - {"txt", "pdf", "html", "doc", "docx", "ppt", "pptx"} == {"htm", "md", "markdown"}
    assert DOCUMENT_ANALYZE_002_TYPES == DOCUMENT_TYPES | IMAGE_TYPES


def test_a_bug_inside_a_batch_is_an_unexpected_error_not_a_service_error(emu: Emulator) -> None:
    # A client whose result mapping has a bug for one file: that file's outcome says so (not an API or connection
    # error that would send a user to the service's status page), the other files finish.
    from aisearch_ingest import APIError, UnexpectedError

    class Buggy(DocumentAnalyzer):
        def _result(self, source, view, **kwargs):  # type: ignore[no-untyped-def]
            if source is not None and source.file_name == "bad.md":
                raise KeyError("a bug")
            return super()._result(source, view, **kwargs)

    inputs = [(b"# Good\n\nfine", "good.md"), (b"# Bad\n\nboom", "bad.md"), (b"# Also\n\nfine", "also.md")]
    with Buggy(api_key=KEY, endpoint=emu.url, route="sync") as analyzer:
        sources = [analyzer._prepare(data, name) for data, name in inputs]
        outcomes = {o.source: o for o in analyzer.parse_many(sources)}
    by_name = {Path(k).name if "/" in k else k: v for k, v in outcomes.items()}
    assert len(outcomes) == 3
    bad = [o for o in outcomes.values() if o.error is not None]
    assert len(bad) == 1 and len([o for o in outcomes.values() if o.ok]) == 2, by_name
    error = bad[0].error
    assert isinstance(error, UnexpectedError) and not isinstance(error, APIError)
    assert isinstance(error.__cause__, KeyError) and "KeyError" in str(error)

"""The emulator is safe to share and never answers a bare 500 for a file it cannot parse (issue 14, part c).

* ``document.url`` / Qwen-OCR image URLs: only the emulator's own files, or URLs under ``allow_urls``; no redirects;
* a non-loopback ``host`` without a key is refused before anything is bound;
* a backend failure (a 1x3000 PNG, any exception) is a failed task with its reason, after one call;
* a PDF with no pages is refused by the clients before sending, and failed by the emulator with its own reason.

Over real sockets: a tiny ``http.server`` on 127.0.0.1 plays "another local service" holding a secret.
"""

from __future__ import annotations

import base64
import importlib
import io
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from aisearch_ingest import (
    BadRequestError,
    DocumentAnalyzer,
    ImageAnalyzer,
    InvalidInputError,
    PollPolicy,
    QwenOCR,
    TaskFailedError,
)
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.emulator import cli as emulator_cli
from aisearch_ingest.emulator import server as emulator_server

KEY = "test-key-hardening"
WS = "default"
DOC = f"/v3/openapi/workspaces/{WS}/document-analyze/ops-document-analyze-001"
GEN = "/api/v1/services/aigc/multimodal-generation/generation"
SECRET = b"SECRET-TOKEN-" + uuid.uuid4().hex.encode()
HTML = b"<html><body><h1>Shared notes</h1><p>Nothing secret here.</p></body></html>"


def _needs_backends() -> None:
    pytest.importorskip("rapidocr", reason="image/PDF parsing needs the `local` extra")


# --- another local service, with a secret


class _LocalService:
    """``/secret.txt`` (the secret), ``/docs/page.html``, ``/docs/redirect`` (302 to the secret), ``/docs/image``
    (302 to the secret, for image URLs); records every path asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                service.paths.append(self.path)
                if self.path == "/secret.txt":
                    self._send(200, SECRET, "text/plain")
                elif self.path == "/docs/page.html":
                    self._send(200, HTML, "text/html")
                elif self.path.startswith("/docs/redirect"):
                    self.send_response(302)
                    self.send_header("Location", "/secret.txt")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def local() -> Iterator[_LocalService]:
    service = _LocalService()
    yield service
    service.close()


def _http(emu: Emulator) -> httpx.Client:
    return httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False, timeout=30)


def _poll(client: httpx.Client, base: str, task_id: str) -> dict[str, Any]:
    for _ in range(500):
        body: dict[str, Any] = client.get(f"{base}/async/task-status", params={"task_id": task_id}).json()
        if body["result"]["status"] != "PENDING":
            return body
        time.sleep(0.01)
    raise AssertionError("the task did not finish")


def _qwen_body(image: str) -> dict[str, Any]:
    return {
        "model": "qwen-vl-ocr",
        "input": {"messages": [{"role": "user", "content": [{"image": image}]}]},
        "parameters": {},
    }


# --- 1. URLs


def test_url_of_another_local_service_is_refused_and_own_files_still_work(local: _LocalService) -> None:
    secret_url = f"{local.base}/secret.txt"
    with Emulator(api_key=KEY) as emu, _http(emu) as client:
        answers: list[str] = []
        sync = client.post(f"{DOC}/sync", json={"document": {"url": secret_url}})
        answers.append(sync.text)
        assert sync.status_code == 200 and sync.json()["result"]["status"] == "FAIL"
        assert "serve_file" in sync.json()["result"]["error"] and "--allow-url" in sync.json()["result"]["error"]
        created = client.post(f"{DOC}/async", json={"document": {"url": secret_url, "file_type": "txt"}})
        status = _poll(client, DOC, created.json()["result"]["task_id"])
        answers.append(str(status))
        assert status["result"]["status"] == "FAIL" and "download document failed" in status["result"]["error"]
        qwen = client.post(GEN, json=_qwen_body(f"{local.base}/secret.txt"))
        answers.append(qwen.text)
        assert qwen.status_code == 400 and qwen.json()["code"] == "InvalidParameter"
        # The emulator's own file is fetched as before.
        own = client.post(f"{DOC}/sync", json={"document": {"url": emu.serve_file(HTML, "shared.html", "text/html")}})
        assert own.json()["result"]["status"] == "SUCCESS" and "Shared notes" in own.json()["result"]["data"]["content"]
    assert all(SECRET.decode() not in text for text in answers)
    assert local.paths == []  # refused before any connection


def test_allowed_prefix_fetches_but_never_follows_a_redirect(local: _LocalService) -> None:
    with Emulator(api_key=KEY, allow_urls=(f"{local.base}/docs/",)) as emu, _http(emu) as client:
        ok = client.post(f"{DOC}/sync", json={"document": {"url": f"{local.base}/docs/page.html"}}).json()
        assert ok["result"]["status"] == "SUCCESS" and "Shared notes" in ok["result"]["data"]["content"]
        answers = []
        for url in (f"{local.base}/docs/redirect.txt", f"{local.base}/docs/../secret.txt", f"{local.base}/secret.txt"):
            r = client.post(f"{DOC}/sync", json={"document": {"url": url, "file_type": "txt"}})
            answers.append(r.text)
            assert r.json()["result"]["status"] == "FAIL", r.text
        redirected = client.post(f"{DOC}/sync", json={"document": {"url": f"{local.base}/docs/redirect.txt"}}).json()
        assert "redirect" in redirected["result"]["error"] and "follows no redirects" in redirected["result"]["error"]
        qwen = client.post(GEN, json=_qwen_body(f"{local.base}/docs/redirect.png"))
        answers.append(qwen.text)
        assert qwen.status_code == 400 and "redirect" in qwen.json()["message"]
    assert all(SECRET.decode() not in text for text in answers)
    assert "/secret.txt" not in local.paths and "/docs/page.html" in local.paths


def test_allow_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="offline"):
        Emulator(allow_urls=("http://192.0.2.1:9000/",))
    with pytest.raises(ValueError, match="http"):
        Emulator(allow_urls=("ftp://127.0.0.1/",))
    with pytest.raises(TypeError, match="sequence"):
        Emulator(allow_urls="http://127.0.0.1:9000/")  # type: ignore[arg-type]


class _Bound(Exception):
    pass


def _no_bind(*args: Any, **kwargs: Any) -> Any:
    raise _Bound("the emulator tried to bind")


def test_non_loopback_host_needs_a_key_before_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AISEARCH_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.setattr(emulator_server, "Server", _no_bind)
    emu = Emulator(host="0.0.0.0", allow_non_loopback=True)
    with pytest.raises(ValueError, match="without an API key") as info:
        emu.start()
    assert "AISEARCH_API_KEY and DASHSCOPE_API_KEY" in str(info.value)
    assert not emu.running
    monkeypatch.setenv("AISEARCH_API_KEY", "only-one")
    with pytest.raises(ValueError, match="DASHSCOPE_API_KEY"):
        emu.start()
    # with a key it goes on to bind (stopped there by the fake server)
    with pytest.raises(_Bound):
        Emulator("team-key", host="0.0.0.0", allow_non_loopback=True).start()


def test_cli_refuses_a_public_host_without_a_key(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("AISEARCH_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.setattr(emulator_server, "Server", _no_bind)
    assert emulator_cli.main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "without an API key" in capsys.readouterr().out


# --- 2. backend failures


def _thin_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 3000), "white").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("route", ["sync", "async"])
def test_image_the_ocr_cannot_read_fails_once_with_a_reason(route: str) -> None:
    _needs_backends()
    with Emulator(api_key=KEY) as emu:
        analyzer = ImageAnalyzer(
            api_key=KEY,
            endpoint=emu.url,
            service_id="ops-image-analyze-ocr-001",
            route=route,  # type: ignore[arg-type]
            poll=PollPolicy(min_interval=0.05, max_interval=0.2, timeout=30),
        )
        started = time.monotonic()
        with analyzer, pytest.raises(TaskFailedError) as info:
            analyzer.parse(_thin_png(), file_name="thin.png")
        elapsed = time.monotonic() - started
        stats = emu.stats
    assert "thin.png" in str(info.value) and info.value.error and "could not be parsed" in info.value.error
    assert stats.calls_by_route.get(f"image-analyze/{route}") == 1
    assert 500 not in stats.responses_by_status
    assert elapsed < 5


@pytest.fixture
def broken_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_backends()
    offline = importlib.import_module("aisearch_ingest.emulator.offline")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("backend exploded")

    for name in ("analyze_document", "analyze_image", "qwen_ocr"):
        monkeypatch.setattr(offline, name, boom)


@pytest.mark.parametrize("route", ["sync", "async"])
def test_any_backend_exception_is_a_failed_task(broken_backends: None, route: str, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="aisearch_ingest.emulator")
    data = HTML + uuid.uuid4().hex.encode()  # new bytes: nothing memoised
    with Emulator(api_key=KEY) as emu:
        analyzer = DocumentAnalyzer(
            api_key=KEY,
            endpoint=emu.url,
            route=route,  # type: ignore[arg-type]
            poll=PollPolicy(min_interval=0.05, max_interval=0.2, timeout=30),
        )
        started = time.monotonic()
        with analyzer, pytest.raises(TaskFailedError) as info:
            analyzer.parse(data, file_name="notes.html")
        elapsed = time.monotonic() - started
        stats = emu.stats
    # the reason names the file and the exception, and the traceback is logged at DEBUG (not as an error)
    assert info.value.error == "'notes.html' could not be parsed: RuntimeError: backend exploded"
    assert "notes.html" in str(info.value)
    assert stats.calls_by_route.get(f"document-analyze/{route}") == 1 and 500 not in stats.responses_by_status
    assert elapsed < 5
    logged = [r for r in caplog.records if r.exc_info and "backend exploded" in str(r.exc_info[1])]
    assert logged and all(r.levelno == logging.DEBUG for r in logged)


def test_qwen_backend_exception_is_a_400_with_the_reason(broken_backends: None) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    colour = tuple(uuid.uuid4().bytes[:3])  # new bytes: nothing memoised
    Image.new("RGB", (64, 48), colour).save(buffer, format="PNG")
    with Emulator(api_key=KEY) as emu, QwenOCR(api_key=KEY, base_url=emu.url) as ocr:
        started = time.monotonic()
        with pytest.raises(BadRequestError) as info:
            ocr.parse(buffer.getvalue(), file_name="scan.png")
        elapsed = time.monotonic() - started
        stats = emu.stats
    assert "scan.png" in str(info.value) and "backend exploded" in str(info.value)
    assert stats.calls_by_route.get("dashscope/generation") == 1 and elapsed < 5


# --- 3. PDFs with no pages


def _zero_page_pdf() -> bytes:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    buffer = io.BytesIO()
    pdf.save(buffer)
    pdf.close()
    return buffer.getvalue()


def test_zero_page_pdf_is_refused_by_the_clients_before_sending() -> None:
    data = _zero_page_pdf()
    with Emulator(api_key=KEY) as emu:
        with DocumentAnalyzer(api_key=KEY, endpoint=emu.url) as analyzer, pytest.raises(InvalidInputError) as info:
            analyzer.parse(data, file_name="blank.pdf")
        assert info.value.limit == "pages" and info.value.value == 0 and "blank.pdf" in str(info.value)
        with QwenOCR(api_key=KEY, base_url=emu.url) as ocr, pytest.raises(InvalidInputError) as qinfo:
            ocr.parse(data, file_name="blank.pdf")
        assert qinfo.value.limit == "pages" and qinfo.value.value == 0 and "blank.pdf" in str(qinfo.value)
        assert emu.stats.total_calls == 0


def test_emulator_fails_a_zero_page_pdf_with_its_own_reason() -> None:
    _needs_backends()
    body = {"document": {"content": base64.b64encode(_zero_page_pdf()).decode(), "file_name": "blank.pdf"}}
    with Emulator(api_key=KEY) as emu, _http(emu) as client:
        result = client.post(f"{DOC}/sync", json=body).json()["result"]
        task = client.post(f"{DOC}/async", json=body).json()["result"]["task_id"]
        status = _poll(client, DOC, task)["result"]
    for answer in (result, status):
        assert answer["status"] == "FAIL" and "no pages" in answer["error"], answer
        assert "password" not in answer["error"].lower()

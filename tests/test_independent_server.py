"""Acceptance: against an independent server that throttles the first billed call with ``Retry-After: 1`` and
``x-acs-retry-after: 1000``, every loader waits about one second, retries once and succeeds.

The server below is written from the vendor's pages (``/work/shared/api-docs``: ``opensearch-image-analyze.en.txt``,
``opensearch-document-analyze.zh.txt``, ``qwen-ocr.en.txt``, ``PROTOCOL.md``), not from this project's emulator, and
it imports nothing of ``aisearch_ingest``: paths, bodies and the example response JSON follow the pages literally.
``x-acs-retry-after`` is integer milliseconds, as Alibaba's SDK core (``alibabacloud_tea_openapi``) reads it.

Every billed kind (an async create, a ``/sync`` call, a Qwen-OCR generation) answers its first request 429; task-status
polls are free and never throttled. The server records the arrival time of every request and when each 429 left, so
the tests measure the client's wait on the wire. Each load runs in a daemon thread joined with a deadline: a client
that obeyed a hint to the letter (600 s) or misread ``1000`` as seconds fails the test instead of hanging it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from samples import pdf as make_pdf
from samples import png as make_png

API_KEY = "independent-test-key"
WORKSPACE = "ws-independent"
DOC_CONTENT = "# Independent server\n\nDocument parsed by the fake vendor."
IMAGE_CONTENT = "A white card with the words Hello OCR 2026, described by the fake vendor."
QWEN_TEXT = "Hello OCR 2026 (fake DashScope)"

#: Margins for a shared 2-core machine: the hint is 1 s; the lower bound is what matters (no early retry).
MIN_WAIT = 0.9
MAX_WAIT = 5.0
#: How long one load may take before the test gives up on it (a client obeying a 600 s hint would hang).
LOAD_DEADLINE = 20.0


# -- the fake vendor ------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    """One request as the server saw it."""

    arrived: float  # time.monotonic() when the request line and headers had been read
    method: str
    path: str
    kind: str  # "document-analyze/async", "image-analyze/sync", "image-analyze/task-status", "qwen", ...
    billed: bool
    status: int = 0
    answered: float = 0.0  # time.monotonic() after the response was written
    request_id: str = ""
    task_id: str | None = None


@dataclass
class Vendor:
    """State of the fake vendor: which billed kinds were already throttled, the tasks, every request."""

    throttle_headers: dict[str, str] = field(default_factory=lambda: {"Retry-After": "1", "x-acs-retry-after": "1000"})
    hits: list[Hit] = field(default_factory=list)
    throttled: set[str] = field(default_factory=set)
    tasks: dict[str, str] = field(default_factory=dict)  # task_id -> service
    problems: list[str] = field(default_factory=list)  # requests the server refused as malformed
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def billed(self) -> list[Hit]:
        return [h for h in self.hits if h.billed]

    def throttles(self) -> list[Hit]:
        return [h for h in self.hits if h.status == 429]


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


def _handler(vendor: Vendor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoints and httpx use it

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        # -- plumbing

        def _body(self) -> Any:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                return None

        def _send(self, hit: Hit, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            if hit.kind != "qwen":
                self.send_header("x-acs-request-id", hit.request_id)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            with vendor.lock:
                hit.status = status
                hit.answered = time.monotonic()

        def _aisearch_error(
            self, hit: Hit, status: int, code: str, message: str, headers: dict[str, str] | None = None
        ) -> None:
            # opensearch-*-analyze pages, "Abnormal response example"
            body = {"request_id": hit.request_id, "latency": 0.0, "http_code": status, "code": code, "message": message}
            self._send(hit, status, body, headers)

        def _dashscope_error(
            self, hit: Hit, status: int, code: str, message: str, headers: dict[str, str] | None = None
        ) -> None:
            # PROTOCOL.md C: documented error body {"code","message","request_id"}
            self._send(hit, status, {"code": code, "message": message, "request_id": hit.request_id}, headers)

        def _start(self, kind: str, billed: bool) -> Hit:
            hit = Hit(time.monotonic(), self.command, self.path, kind, billed, request_id=_request_id())
            with vendor.lock:
                vendor.hits.append(hit)
            return hit

        def _throttle_first(self, hit: Hit, error: Callable[..., None]) -> bool:
            """Answer the first request of a billed kind 429 (True when it did)."""
            with vendor.lock:
                first = hit.kind not in vendor.throttled
                vendor.throttled.add(hit.kind)
            if first:
                message = "Requests rate limit exceeded, please try again later."
                error(hit, 429, "Throttling.RateQuota", message, dict(vendor.throttle_headers))
            return first

        def _refuse(self, hit: Hit, error: Callable[..., None], problem: str) -> None:
            with vendor.lock:
                vendor.problems.append(f"{hit.method} {hit.path}: {problem}")
            error(hit, 400, "InvalidParameter", problem)

        def _authorized(self, hit: Hit, error: Callable[..., None]) -> bool:
            if self.headers.get("authorization") != f"Bearer {API_KEY}":
                error(hit, 401, "InvalidApiKey", "Invalid API-key provided.")
                return False
            return True

        # -- routes

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            segments = parts.path.strip("/").split("/")
            if parts.path == "/api/v1/services/aigc/multimodal-generation/generation":
                hit = self._start("qwen", billed=True)
                self._qwen(hit, self._body())
                return
            # /v3/openapi/workspaces/{ws}/{service}/{service_id}/(async|sync)
            if (
                len(segments) == 7
                and segments[:3] == ["v3", "openapi", "workspaces"]
                and segments[6] in ("async", "sync")
            ):
                service, route = segments[4], segments[6]
                hit = self._start(f"{service}/{route}", billed=True)
                body = self._body()
                if not self._authorized(hit, self._aisearch_error):
                    return
                if segments[3] != WORKSPACE or service not in ("document-analyze", "image-analyze"):
                    self._aisearch_error(hit, 404, "NotFound", f"no such route {parts.path}")
                    return
                if self._throttle_first(hit, self._aisearch_error):
                    return
                problem = _document_problem(body, service)
                if problem:
                    self._refuse(hit, self._aisearch_error, problem)
                    return
                if route == "async":
                    task_id = str(uuid.uuid4())
                    with vendor.lock:
                        vendor.tasks[task_id] = service
                        hit.task_id = task_id
                    # "Normal response example" of the async create
                    self._send(
                        hit,
                        200,
                        {
                            "request_id": hit.request_id,
                            "latency": 5.0,
                            "http_code": 200,
                            "usage": {},
                            "result": {"task_id": task_id},
                        },
                    )
                else:
                    self._send(hit, 200, _analyze_success(service, hit.request_id, task_id=None))
                return
            hit = self._start("unknown", billed=False)
            self._body()
            self._aisearch_error(hit, 404, "NotFound", f"no such route {parts.path}")

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            segments = parts.path.strip("/").split("/")
            if (
                len(segments) == 8
                and segments[:3] == ["v3", "openapi", "workspaces"]
                and segments[6:]
                == [
                    "async",
                    "task-status",
                ]
            ):
                service = segments[4]
                hit = self._start(f"{service}/task-status", billed=False)
                if not self._authorized(hit, self._aisearch_error):
                    return
                task_id = (parse_qs(parts.query).get("task_id") or [""])[0]
                with vendor.lock:
                    known = vendor.tasks.get(task_id) == service
                    hit.task_id = task_id
                if not known:
                    self._aisearch_error(hit, 404, "BadRequest.TaskNotExist", f"task[{task_id}] not exist")
                    return
                self._send(hit, 200, _analyze_success(service, hit.request_id, task_id=task_id))
                return
            hit = self._start("unknown", billed=False)
            self._aisearch_error(hit, 404, "NotFound", f"no such route {parts.path}")

        def _qwen(self, hit: Hit, body: Any) -> None:
            if not self._authorized(hit, self._dashscope_error):
                return
            if self._throttle_first(hit, self._dashscope_error):
                return
            problem = _qwen_problem(body)
            if problem:
                self._refuse(hit, self._dashscope_error, problem)
                return
            # qwen-ocr.en.txt, native "Response example"
            self._send(
                hit,
                200,
                {
                    "output": {
                        "choices": [
                            {
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": [{"text": QWEN_TEXT}]},
                            }
                        ]
                    },
                    "usage": {"total_tokens": 765, "output_tokens": 159, "input_tokens": 606, "image_tokens": 427},
                    "request_id": hit.request_id,
                },
            )

    return Handler


def _document_problem(body: Any, service: str) -> str | None:
    """What is wrong with an AI Search create/sync body (document.content base64 or document.url), if anything."""
    if not isinstance(body, dict) or not isinstance(body.get("document"), dict):
        return "document required"
    document = body["document"]
    if ("content" in document) == ("url" in document):
        return "document.content or document.url required, and both cannot be present at the same time"
    if "content" in document:
        try:
            data = base64.b64decode(document["content"], validate=True)
        except ValueError:
            return "document.content is not base64"
        expected = b"%PDF" if service == "document-analyze" else b"\x89PNG"
        if not data.startswith(expected):
            return f"document.content is not the file sent (starts {data[:8]!r})"
    if service == "document-analyze" and not document.get("file_name") and not document.get("file_type"):
        return "document.file_name required"
    return None


def _analyze_success(service: str, request_id: str, *, task_id: str | None) -> dict[str, Any]:
    """The pages' "Normal response example" of task-status (and of /sync, which has no task_id)."""
    if service == "document-analyze":
        result: dict[str, Any] = {
            "status": "SUCCESS",
            "data": {"content": DOC_CONTENT, "content_type": "markdown", "page_num": 1},
        }
        usage: dict[str, Any] = {"token_count": 31867, "table_count": 4, "image_count": 8}
    else:
        result = {"status": "SUCCESS", "data": {"content": IMAGE_CONTENT, "content_type": "plain"}}
        usage = {"token_count": 95}
    if task_id is not None:
        result["task_id"] = task_id
    return {"request_id": request_id, "latency": 13.0, "http_code": 200, "result": result, "usage": usage}


def _qwen_problem(body: Any) -> str | None:
    """What is wrong with a DashScope native multimodal-generation body, if anything."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "Model not specified"
    try:
        content = body["input"]["messages"][0]["content"]
    except (KeyError, IndexError, TypeError):
        return "input.messages required"
    images = [part.get("image") for part in content if isinstance(part, dict) and "image" in part]
    if len(images) != 1 or not str(images[0]).startswith("data:image/png;base64,"):
        return f"one image expected as a data URL, got {images!r:.80}"
    return None


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    state = Vendor()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-vendor", daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx honours the proxy variables (trust_env): make sure 127.0.0.1 is reached directly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# -- running a loader under a deadline ------------------------------------------------------------------------------


def _within(deadline: float, work: Callable[[], Any]) -> Any:
    """Run ``work`` in a daemon thread; fail (without hanging the run) when it takes longer than ``deadline``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="load-under-deadline", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        pytest.fail(f"the load did not finish within {deadline:.0f}s (a server hint obeyed uncapped or misread?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -- the loaders ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("independent")
    pdf = folder / "report.pdf"
    pdf.write_bytes(make_pdf(["Quarterly report", "Page two"]))
    png = folder / "card.png"
    png.write_bytes(make_png())
    return {"pdf": pdf, "png": png}


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # "langchain" or "llama_index"
    cls: str
    file: str  # key of ``files``
    service: str  # "document-analyze", "image-analyze", "qwen"
    route: str  # the billed route the client should use: "async", "sync", or "" for Qwen
    content: str
    kwargs: tuple[tuple[str, Any], ...] = ()


CASES = [
    Case("lc-document", "langchain", "DocumentAnalyzeLoader", "pdf", "document-analyze", "async", DOC_CONTENT),
    Case("lc-image", "langchain", "ImageAnalyzeLoader", "png", "image-analyze", "sync", IMAGE_CONTENT),
    Case(
        "lc-image-async",
        "langchain",
        "ImageAnalyzeLoader",
        "png",
        "image-analyze",
        "async",
        IMAGE_CONTENT,
        (("route", "async"),),
    ),
    Case("lc-qwen", "langchain", "QwenOCRLoader", "png", "qwen", "", QWEN_TEXT),
    Case("li-document", "llama_index", "DocumentAnalyzeReader", "pdf", "document-analyze", "async", DOC_CONTENT),
    Case("li-image", "llama_index", "ImageAnalyzeReader", "png", "image-analyze", "sync", IMAGE_CONTENT),
    Case("li-qwen", "llama_index", "QwenOCRReader", "png", "qwen", "", QWEN_TEXT),
]


def _load(case: Case, url: str, path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Build the loader/reader through its public arguments, load ``path``, return (texts, metadata)."""
    if case.service == "qwen":
        target: dict[str, Any] = {"base_url": url, "api_key": API_KEY}
    else:
        target = {"endpoint": url, "api_key": API_KEY, "workspace": WORKSPACE}
    target.update(case.kwargs)
    if case.family == "langchain":
        pytest.importorskip("langchain_core")
        from aisearch_ingest import langchain as module

        loader = getattr(module, case.cls)(str(path), **target)
        try:
            docs = _within(LOAD_DEADLINE, loader.load)
        finally:
            loader.close()
        return [d.page_content for d in docs], [dict(d.metadata) for d in docs]
    pytest.importorskip("llama_index.core")
    from aisearch_ingest import llama_index as module

    reader = getattr(module, case.cls)(**target)
    try:
        docs = _within(LOAD_DEADLINE, lambda: reader.load_data(str(path)))
    finally:
        reader.close()
    return [d.text for d in docs], [dict(d.metadata) for d in docs]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_loader_waits_for_the_hint_then_succeeds(case: Case, vendor: Vendor, files: dict[str, Path]) -> None:
    texts, metadata = _load(case, vendor.url, files[case.file])

    assert vendor.problems == []
    # The documents are the fake vendor's.
    assert len(texts) == 1
    assert case.content in texts[0]
    accepted = [h for h in vendor.billed() if h.status == 200]
    assert len(accepted) == 1
    assert metadata[0]["request_id"] in {h.request_id for h in vendor.hits if h.status == 200}

    # Exactly one 429, on the billed route the client uses, and exactly one accepted billed request after it.
    throttles = vendor.throttles()
    assert len(throttles) == 1, [(h.kind, h.status) for h in vendor.hits]
    billed_kind = "qwen" if case.service == "qwen" else f"{case.service}/{case.route}"
    assert [h.kind for h in vendor.billed()] == [billed_kind, billed_kind]
    retry = accepted[0]
    assert retry is vendor.billed()[1]

    # The retry waited for the hint: about 1 s after the 429 left the server.
    waited = retry.arrived - throttles[0].answered
    assert MIN_WAIT <= waited < MAX_WAIT, f"retried {waited:.3f}s after the 429"

    if case.route == "async":
        # The task created by the accepted create is the one polled and reported.
        polls = [h for h in vendor.hits if h.kind == f"{case.service}/task-status"]
        assert polls and all(p.task_id == retry.task_id and p.status == 200 for p in polls)
        assert metadata[0]["task_id"] == retry.task_id
        assert polls[0].arrived >= retry.answered
    if case.service == "document-analyze":
        assert metadata[0]["content_type"] == "markdown"
        assert metadata[0]["usage_token_count"] == 31867
    if case.service == "qwen":
        assert metadata[0]["usage_image_tokens"] == 427
    assert all(h.kind != "unknown" for h in vendor.hits)


# -- a hint longer than max_retry_after -----------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["document-analyze", "qwen"])
def test_a_huge_hint_is_capped_not_fatal(service: str, vendor: Vendor) -> None:
    """``x-acs-retry-after: 600000`` (600 s) under ``RetryPolicy(max_retry_after=1.5)``: the retry comes after ≈1.5 s.

    ``max_retry_after`` is not a public argument of the clients (only ``max_retries`` is), so the unit under test is
    :class:`~aisearch_ingest.transport.Transport`. The computed backoff is made tiny (≤ 0.1 s) so that a client
    ignoring the hint, one capping it, and one obeying it (600 s: the deadline fails the test) are told apart.
    """
    from aisearch_ingest.config import SecretStr
    from aisearch_ingest.transport import RetryPolicy, Transport

    vendor.throttle_headers = {"x-acs-retry-after": "600000", "Retry-After": "600"}
    cap = 1.5
    transport = Transport(
        vendor.url,
        SecretStr(API_KEY),
        timeout=10.0,
        retry=RetryPolicy(max_retries=2, initial_delay=0.05, max_delay=0.1, max_retry_after=cap),
    )
    if service == "qwen":
        path = "/api/v1/services/aigc/multimodal-generation/generation"
        image = "data:image/png;base64," + base64.b64encode(make_png()).decode("ascii")
        body: dict[str, Any] = {
            "model": "qwen-vl-ocr-latest",
            "parameters": {"ocr_options": {"task": "text_recognition"}},
            "input": {"messages": [{"role": "user", "content": [{"image": image}]}]},
        }
    else:
        path = f"/v3/openapi/workspaces/{WORKSPACE}/document-analyze/ops-document-analyze-001/async"
        pdf = make_pdf(["capped"])
        body = {
            "document": {"content": base64.b64encode(pdf).decode("ascii"), "file_name": "c.pdf", "file_type": "pdf"}
        }

    async def call() -> Any:
        try:
            return await transport.request("POST", path, json_body=body)
        finally:
            await transport.aclose()

    response = _within(LOAD_DEADLINE, lambda: anyio.run(call))

    assert vendor.problems == []
    assert response.status_code == 200
    if service == "qwen":
        assert response.body["output"]["choices"][0]["message"]["content"][0]["text"] == QWEN_TEXT
    else:
        assert response.body["result"]["task_id"] in vendor.tasks
    throttles = vendor.throttles()
    assert len(throttles) == 1
    assert len(vendor.billed()) == 2
    waited = vendor.billed()[1].arrived - throttles[0].answered
    assert cap - 0.1 <= waited < cap + MAX_WAIT - 1.0, f"retried {waited:.3f}s after the 429 (cap {cap}s)"

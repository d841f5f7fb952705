"""AI Search Open Platform image-analyze and document-analyze: async create, task-status, sync (PROTOCOL.md A, B).

Choices where the vendor's pages are silent (documented in the emulator's module docstring too):

* an unknown service id, or one of the other service (an image id under ``document-analyze``), is a
  400 ``InvalidParameter``, not a 404: a 404 would look like ``BadRequest.TaskNotExist`` to a poller;
* a task id is only known under the workspace, service and service id it was created with;
* a failed task reports ``FAIL`` (``task_status_on_fail``), with ``result.error`` set and no ``data``/``usage``;
* the declared ``file_type`` must match the content (a PNG sent as ``pdf`` is a 400 for ``content``, a
  ``FAIL`` for ``url``, whose bytes are only seen by the task);
* ``ops-document-analyze-002`` takes images as well as documents ("PDFs and images", CHANGES-2026.md §D): an image
  is read by the OCR backend into markdown, one page; ``-001`` refuses image types with a 400;
* a file the offline engine cannot parse (whatever it raises, the ``local`` extra missing included) is a failed task
  with the reason in ``result.error``, on ``/sync`` too (HTTP 200: "请求成功,包括任务失败场景"), never a 500;
* ``document.url`` is downloaded only when it is one of the emulator's own files or under an allowed prefix, with no
  redirects (:class:`~aisearch_ingest.emulator._runtime.UrlPolicy`); any other URL fails the task
  ("download document failed: ..."), as a URL the service cannot download does, before any connection is made.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from html import escape
from typing import Any

from ._control import Latency
from ._http import DropReply, JsonReply, Reply, Request
from ._runtime import (
    Runtime,
    acs_request_id,
    count_tokens,
    error_reply,
    load_offline,
    memo,
    missing_extra_message,
    sha256_hex,
)
from ._sniff import DOCUMENT_TYPES, IMAGE_TYPES, content_matches, infer_file_type, normalize_type, sniff

__all__ = ["MAX_BODY_BYTES", "SERVICE_IDS", "AISearchService"]

logger = logging.getLogger("aisearch_ingest.emulator")

#: "请求body最大不能超过8MB": request bodies over 8 MiB are refused with 400 InvalidParameter.
MAX_BODY_BYTES = 8 * 1024 * 1024
SERVICE_IDS: Mapping[str, tuple[str, ...]] = {
    "image-analyze": ("ops-image-analyze-vlm-001", "ops-image-analyze-ocr-001"),
    "document-analyze": ("ops-document-analyze-001", "ops-document-analyze-002"),
}
_ALLOWED_TYPES = {"image-analyze": IMAGE_TYPES, "document-analyze": DOCUMENT_TYPES}
#: ``ops-document-analyze-002`` takes "PDFs and images" (CHANGES-2026.md §D, the ID page of Jan 16, 2026): the
#: document types and the image types; images are read with the OCR backend.
_IMAGE_DOCUMENT_SERVICES = frozenset({"ops-document-analyze-002"})


def _allowed_types(kind: str, service_id: str) -> frozenset[str]:
    if kind == "document-analyze" and service_id in _IMAGE_DOCUMENT_SERVICES:
        return DOCUMENT_TYPES | IMAGE_TYPES
    return _ALLOWED_TYPES[kind]


_WORKSPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MAX_TASKS = 20_000
#: Finished tasks are forgotten this long after their creation (the pages give no retention period; image links
#: are documented to last 3 days). Old tasks answer ``TaskNotExist`` then, as an expired task does on the service,
#: so the emulator's memory does not grow with the number of tasks a long run creates.
TASK_TTL = 3600.0
_BOTH_OR_NEITHER = "document.content or document.url required, and both cannot be present at the same time"
_DATA_IMAGE_RE = re.compile(r"data:image/(png|jpe?g|gif|bmp|webp|tiff?);base64,([A-Za-z0-9+/=]+)")


class _BadRequest(Exception):
    pass


@dataclass(frozen=True)
class _Document:
    kind: str
    service_id: str
    content: bytes | None
    url: str | None
    file_type: str
    file_name: str
    image_storage: str
    enable_semantic: bool


@dataclass(frozen=True)
class _Outcome:
    error: str | None = None
    data: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    pages: int = 1
    tokens: int = 0


@dataclass
class _Task:
    task_id: str
    created: float
    latency: Latency
    hang: bool
    future: Future[_Outcome] = field(default_factory=Future)


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


def _decode_base64(text: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _BadRequest("document.content is not valid base64") from exc


def _fallback_document(data: bytes, file_type: str) -> tuple[str, str, list[str], int, dict[str, int]]:
    """Text documents without the ``local`` extra: HTML out, like the service does for non-PDF types."""
    text = data.decode("utf-8-sig", errors="replace")
    if file_type == "html":
        html = text
    elif file_type == "md":
        from markdown_it import MarkdownIt

        html = MarkdownIt("commonmark").enable("table").render(text)
    else:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        html = "\n".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    usage = {"token_count": len(text), "table_count": html.count("<table"), "image_count": html.count("<img")}
    return html, "html", [html], 1, usage


class AISearchService:
    """The six AI Search routes. One instance per emulator; tasks live in memory."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._lock = threading.Lock()
        self._tasks: OrderedDict[tuple[str, str, str, str], _Task] = OrderedDict()
        self.task_ttl = TASK_TTL

    # --- entry point

    def handle(self, request: Request, route: str, kind: str, workspace: str, service_id: str, op: str) -> Reply:
        """Serve one AI Search request (auth, QPS and transport faults are already handled)."""
        t0 = request.received
        if not _WORKSPACE_RE.match(workspace):
            return error_reply("aisearch", 400, f"workspace_name[{workspace}] is invalid", latency_ms=_ms(t0))
        if service_id not in SERVICE_IDS[kind]:
            return error_reply(
                "aisearch",
                400,
                f"service_id[{service_id}] is not supported by {kind}; expected one of {', '.join(SERVICE_IDS[kind])}",
                latency_ms=_ms(t0),
            )
        if op == "task-status":
            return self._status(request, kind, workspace, service_id)
        if request.body_too_large or request.body_size > MAX_BODY_BYTES:
            return error_reply(
                "aisearch",
                400,
                f"request body is {request.body_size} bytes; the maximum is {MAX_BODY_BYTES} bytes (8MB)",
                latency_ms=_ms(t0),
                close=request.body_too_large,
            )
        declared = request.header("x-acs-content-sha256").strip().lower()
        if declared and not hmac.compare_digest(declared, sha256_hex(request.body)):
            return error_reply(
                "aisearch", 400, "x-acs-content-sha256 does not match the request body", latency_ms=_ms(t0)
            )
        try:
            document = self._parse_body(request.body, kind, service_id)
        except _BadRequest as exc:
            return error_reply("aisearch", 400, str(exc), latency_ms=_ms(t0))
        fault = self._task_fault(route, document.file_name)
        if op == "async":
            return self._create(request, document, workspace, fault)
        return self._sync(request, document, fault)

    # --- request parsing

    def _parse_body(self, raw: bytes, kind: str, service_id: str) -> _Document:
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _BadRequest(f"JSON parse error: {exc}") from exc
        if not isinstance(body, dict):
            raise _BadRequest("JSON parse error: the request body must be a JSON object")
        doc = body.get("document")
        if doc is None:
            raise _BadRequest(_BOTH_OR_NEITHER)
        if not isinstance(doc, dict):
            raise _BadRequest("JSON parse error: document must be an object")
        content, url = doc.get("content"), doc.get("url")
        if (content in (None, "")) == (url in (None, "")):
            raise _BadRequest(_BOTH_OR_NEITHER)
        for key in ("content", "url", "file_name", "file_type"):
            if doc.get(key) is not None and not isinstance(doc.get(key), str):
                raise _BadRequest(f"JSON parse error: document.{key} must be a string")
        if url is not None and url != "" and not re.match(r"^https?://", url, re.IGNORECASE):
            raise _BadRequest("document.url must be an http or https URL")
        file_type, file_name = infer_file_type(doc.get("file_type"), doc.get("file_name"), url or None)
        if not file_type:
            if content and not file_name:
                raise _BadRequest("document.file_name required")
            raise _BadRequest("document.file_type required: it cannot be inferred from the file name or url")
        allowed = _allowed_types(kind, service_id)
        if file_type not in allowed:
            raise _BadRequest(
                f"document.file_type[{file_type}] is not supported by {kind} {service_id}; "
                f"supported types: {', '.join(sorted(allowed))}"
            )
        data: bytes | None = None
        if content:
            data = _decode_base64(content)
            if not data:
                raise _BadRequest("document.content is empty")
            if not content_matches(file_type, data):
                raise _BadRequest(
                    f"document.content is not a valid {file_type} file (it looks like {sniff(data) or 'unknown data'})"
                )
        image_storage = "base64"
        enable_semantic = False
        if kind == "document-analyze":
            output = body.get("output")
            if output is not None:
                if not isinstance(output, dict):
                    raise _BadRequest("JSON parse error: output must be an object")
                storage = output.get("image_storage")
                if storage is not None:
                    if storage not in ("base64", "url"):
                        raise _BadRequest(
                            "JSON parse error: Cannot deserialize value of type `ImageStorage` from String "
                            f'"{storage}": not one of the values accepted for Enum class: [base64, url]'
                        )
                    image_storage = storage
            strategy = body.get("strategy")
            if strategy is not None:
                if not isinstance(strategy, dict):
                    raise _BadRequest("JSON parse error: strategy must be an object")
                semantic = strategy.get("enable_semantic")
                if semantic is not None and not isinstance(semantic, bool):
                    raise _BadRequest("JSON parse error: strategy.enable_semantic must be a boolean")
                enable_semantic = bool(semantic)
        return _Document(
            kind=kind,
            service_id=service_id,
            content=data,
            url=url or None,
            file_type=file_type,
            file_name=file_name,
            image_storage=image_storage,
            enable_semantic=enable_semantic,
        )

    def _task_fault(self, route: str, file_name: str) -> tuple[str, str] | None:
        """``("hang", why)``, ``("fail", error message)`` or None."""
        injected = self.rt.injections.take(route, ("task_fail", "task_hang"))
        if injected is not None:
            if injected.kind == "task_hang":
                return ("hang", "injected")
            return ("fail", "Task failed (emulated fault: injected task_fail)")
        faults = self.rt.faults
        marker = faults.hang_marker(file_name)
        if marker is not None:
            return ("hang", f"file name matches {marker!r}")
        marker = faults.fail_marker(file_name)
        if marker is not None:
            return ("fail", f"Task failed (emulated fault: file name {file_name!r} matches {marker!r})")
        if self.rt.rng.chance(faults.rate_task_hang):
            return ("hang", "rate_task_hang")
        if self.rt.rng.chance(faults.rate_task_fail):
            return ("fail", "Task failed (emulated fault: rate_task_fail)")
        return None

    # --- routes

    def _create(self, request: Request, document: _Document, workspace: str, fault: tuple[str, str] | None) -> Reply:
        task_id = acs_request_id().lower()
        task = _Task(task_id=task_id, created=request.received, latency=self.rt.latency, hang=False)
        if fault is not None and fault[0] == "hang":
            task.hang = True
        elif fault is not None:
            task.future.set_result(_Outcome(error=fault[1]))
        else:
            future = self.rt.submit(lambda: self._run(document))
            future.add_done_callback(lambda f: _chain(f, task.future))
        key = (workspace, document.kind, document.service_id, task_id)
        with self._lock:
            self._tasks[key] = task
            while len(self._tasks) > _MAX_TASKS:
                self._tasks.popitem(last=False)
            # Oldest first: stop at the first task that is young enough or still running.
            while self._tasks:
                oldest = next(iter(self._tasks.values()))
                if request.received - oldest.created < self.task_ttl or not oldest.future.done():
                    break
                self._tasks.popitem(last=False)
        self.rt.recorder.task_created()
        rid = acs_request_id()
        body = {"request_id": rid, "latency": _ms(request.received), "http_code": 200, "result": {"task_id": task_id}}
        return JsonReply(200, body, {"x-acs-request-id": rid})

    def _status(self, request: Request, kind: str, workspace: str, service_id: str) -> Reply:
        task_id = request.query_value("task_id")
        if not task_id:
            return error_reply("aisearch", 400, "task_id required", latency_ms=_ms(request.received))
        with self._lock:
            task = self._tasks.get((workspace, kind, service_id, task_id))
        if task is None:
            return error_reply(
                "aisearch",
                404,
                f"task[{task_id}] not exist",
                code="BadRequest.TaskNotExist",
                latency_ms=_ms(request.received),
            )
        status, outcome = "PENDING", None
        if not task.hang and task.future.done():
            outcome = task.future.result()
            due = task.created + (
                task.latency.fixed if outcome.error else task.latency.total(outcome.pages, outcome.tokens)
            )
            if time.monotonic() >= due:
                status = self.rt.task_status_on_fail if outcome.error else "SUCCESS"
            else:
                outcome = None
        return self._result_reply(request, status, outcome, task_id)

    def _sync(self, request: Request, document: _Document, fault: tuple[str, str] | None) -> Reply:
        latency = self.rt.latency
        if fault is not None and fault[0] == "hang":
            # a sync call that never finishes: hold the connection until the client gives up or we stop
            self.rt.sleep(3600.0)
            return DropReply()
        # A parse that fails is a 200 with result.status FAIL and the reason in result.error, on /sync as on
        # task-status: "200 请求成功,包括任务失败场景,实际任务状态需从result.status中判断" (the sync section of the
        # document-analyze page; the image-analyze page says the same). Never a 500: a client would retry it.
        outcome = _Outcome(error=fault[1]) if fault is not None else self._run(document)
        total = latency.fixed if outcome.error else latency.total(outcome.pages, outcome.tokens)
        if self.rt.sleep(request.received + total - time.monotonic()):
            return DropReply()
        status = self.rt.task_status_on_fail if outcome.error else "SUCCESS"
        return self._result_reply(request, status, outcome, None)

    def _result_reply(self, request: Request, status: str, outcome: _Outcome | None, task_id: str | None) -> Reply:
        result: dict[str, Any] = {}
        if task_id is not None:
            result["task_id"] = task_id
        result["status"] = status
        result["error"] = (outcome.error or "") if outcome is not None else ""
        rid = acs_request_id()
        body: dict[str, Any] = {"request_id": rid, "latency": _ms(request.received), "http_code": 200}
        if outcome is not None and outcome.error is None:
            result["data"] = outcome.data
            body["result"] = result
            body["usage"] = outcome.usage
        else:
            body["result"] = result
        return JsonReply(200, body, {"x-acs-request-id": rid})

    # --- the work of a task

    def _run(self, document: _Document) -> _Outcome:
        try:
            data = document.content
            if data is None:
                assert document.url is not None
                try:
                    data = self.rt.fetch(document.url)
                except OSError as exc:
                    return _Outcome(error=f"download document failed: {document.url}: {exc}")
                if not data:
                    return _Outcome(error=f"download document failed: {document.url} returned no data")
                if not content_matches(document.file_type, data):
                    return _Outcome(
                        error=f"the file at document.url is not a valid {document.file_type} file "
                        f"(it looks like {sniff(data) or 'unknown data'})"
                    )
            if document.kind == "image-analyze":
                return self._run_image(document, data)
            return self._run_document(document, data)
        except Exception as exc:
            # Whatever a backend raises (a 1x3000 PNG makes the OCR engine fail inside its resize) ends the task as
            # a failure with the reason, never as a 500 a client would retry: the same bytes fail the same way.
            logger.debug("emulator: %s of %r failed", document.kind, document.file_name, exc_info=True)
            return _Outcome(error=f"{_what(document)} could not be parsed: {_describe(exc)}")

    def _run_image(self, document: _Document, data: bytes) -> _Outcome:
        sid = document.service_id

        def compute() -> Any:
            return load_offline().analyze_image(data, sid)

        try:
            analysis = memo.get(("image-analyze", sid, sha256_hex(data)), compute, lambda a: len(a.content))
        except ImportError as exc:
            return _Outcome(error=missing_extra_message(f"{document.file_type} images", exc))
        except ValueError as exc:
            return _Outcome(error=str(exc) or type(exc).__name__)
        content = str(analysis.content)
        backend_usage: Mapping[str, Any] = analysis.usage or {}
        if sid.endswith("-ocr-001"):
            usage: dict[str, Any] = {"pv_count": 1}
            tokens = count_tokens(content)
        else:
            tokens = int(backend_usage.get("token_count") or count_tokens(content))
            usage = {"token_count": tokens}
        data_out = {"content": content, "content_type": str(analysis.content_type or "plain"), "page_num": 1}
        return _Outcome(data=data_out, usage=usage, pages=1, tokens=tokens)

    def _run_document(self, document: _Document, data: bytes) -> _Outcome:
        file_type = normalize_type(document.file_type)

        images = document.service_id in _IMAGE_DOCUMENT_SERVICES

        def compute() -> Any:
            return load_offline().analyze_document(data, file_type, images=images)

        try:
            analysis = memo.get(("document-analyze", file_type, sha256_hex(data)), compute, _weigh_document)
            content = str(analysis.content)
            content_type = str(analysis.content_type)
            pages = [str(p) for p in (analysis.pages or [])]
            page_num = int(analysis.page_num or len(pages) or 1)
            backend_usage: Mapping[str, Any] = analysis.usage or {}
        except ImportError as exc:
            if file_type not in ("html", "md", "txt"):
                return _Outcome(error=missing_extra_message(f"{file_type} documents", exc))
            logger.debug("emulator: offline engine unavailable (%s); using the plain-text fallback", exc)
            content, content_type, pages, page_num, backend_usage = _fallback_document(data, file_type)
        except ValueError as exc:
            return _Outcome(error=str(exc) or type(exc).__name__)
        usage: dict[str, Any] = {
            "token_count": int(backend_usage.get("token_count", len(content))),
            "table_count": int(backend_usage.get("table_count", 0)),
            "image_count": int(backend_usage.get("image_count", 0)),
        }
        if document.enable_semantic:
            usage["semantic_token_count"] = int(backend_usage.get("semantic_token_count") or count_tokens(content))
        if document.image_storage == "url":
            content = self._externalise_images(content)
            pages = [self._externalise_images(p) for p in pages]
        data_out = {"content": content, "content_type": content_type, "page_num": page_num, "pages": pages}
        return _Outcome(data=data_out, usage=usage, pages=page_num, tokens=usage["token_count"])

    def _externalise_images(self, text: str) -> str:
        """``output.image_storage=url``: inline base64 images become URLs served by the emulator."""

        def replace(match: re.Match[str]) -> str:
            ext = {"jpeg": "jpg", "tif": "tiff"}.get(match.group(1), match.group(1))
            try:
                raw = base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                return match.group(0)
            name = f"{sha256_hex(raw)[:32]}.{ext}"
            self.rt.files.put(name, raw, f"image/{'jpeg' if ext == 'jpg' else ext}")
            return self.rt.file_url(name)

        return _DATA_IMAGE_RE.sub(replace, text)


def _what(document: _Document) -> str:
    """How a failure message names the file."""
    return repr(document.file_name) if document.file_name else f"the {document.file_type} file"


def _describe(exc: BaseException) -> str:
    """``Type: message``, the message of its cause when it has none (rapidocr's ``ResizeImgError()`` is bare)."""
    text = str(exc) or (str(exc.__cause__) if exc.__cause__ is not None else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _weigh_document(analysis: Any) -> int:
    return len(analysis.content) + sum(len(p) for p in analysis.pages or ())


def _chain(source: Future[_Outcome], target: Future[_Outcome]) -> None:
    if source.cancelled():
        target.set_result(_Outcome(error="the emulator stopped before the task ran"))
        return
    exc = source.exception()
    if exc is not None:
        target.set_result(_Outcome(error=f"the task could not be run: {_describe(exc)}"))
    else:
        target.set_result(source.result())

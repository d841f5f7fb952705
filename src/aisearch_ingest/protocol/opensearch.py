"""AI Search Open Platform document-analyze and image-analyze: pure functions, no I/O.

Paths, bodies and responses follow ``PROTOCOL.md`` sections A and B and the vendor pages.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from ..errors import TaskFailedError
from ..results import Page, flatten_usage
from ..sources import Source

__all__ = [
    "DOCUMENT_SERVICE_IDS",
    "IMAGE_SERVICE_IDS",
    "StatusView",
    "build_body",
    "create_path",
    "interpret",
    "status_path",
    "sync_path",
]

Kind = Literal["document-analyze", "image-analyze"]

DOCUMENT_SERVICE_IDS = ("ops-document-analyze-001", "ops-document-analyze-002")
IMAGE_SERVICE_IDS = ("ops-image-analyze-vlm-001", "ops-image-analyze-ocr-001")


def _base(kind: Kind, workspace: str, service_id: str) -> str:
    return f"/v3/openapi/workspaces/{quote(workspace, safe='')}/{kind}/{quote(service_id, safe='')}"


def create_path(kind: Kind, workspace: str, service_id: str) -> str:
    """``POST`` path that creates an asynchronous task."""
    return _base(kind, workspace, service_id) + "/async"


def status_path(kind: Kind, workspace: str, service_id: str) -> str:
    """``GET`` path of task-status (``task_id`` goes in the query)."""
    return _base(kind, workspace, service_id) + "/async/task-status"


def sync_path(kind: Kind, workspace: str, service_id: str) -> str:
    """``POST`` path of the synchronous call."""
    return _base(kind, workspace, service_id) + "/sync"


def build_body(
    source: Source,
    *,
    image_storage: Literal["base64", "url"] | None = None,
    enable_semantic: bool | None = None,
) -> dict[str, Any]:
    """The request body: ``document`` (url or base64 content, file_name, file_type) plus document-analyze's
    ``output.image_storage`` and ``strategy.enable_semantic`` when given."""
    document: dict[str, Any] = {}
    if source.url is not None:
        document["url"] = source.url
    else:
        assert source.data is not None
        document["content"] = base64.b64encode(source.data).decode("ascii")
    if source.file_name:
        document["file_name"] = source.file_name
    if source.file_type:
        document["file_type"] = source.file_type
    body: dict[str, Any] = {"document": document}
    if image_storage is not None:
        body["output"] = {"image_storage": image_storage}
    if enable_semantic is not None:
        body["strategy"] = {"enable_semantic": enable_semantic}
    return body


@dataclass(frozen=True)
class StatusView:
    """A task-status (or sync) body, read."""

    status: str
    task_id: str | None
    content: str
    content_type: str
    page_num: int
    pages: list[Page]
    usage: dict[str, int | float]
    error: str | None
    request_id: str | None
    server_latency: float | None

    @property
    def pending(self) -> bool:
        return self.status == "PENDING"


def interpret(body: Mapping[str, Any], *, default_content_type: str = "plain") -> StatusView:
    """Read a task-status/sync body. Unknown fields are ignored; missing ones get neutral defaults."""
    result = body.get("result") or {}
    if not isinstance(result, Mapping):
        result = {}
    data = result.get("data") or {}
    if not isinstance(data, Mapping):
        data = {}
    raw_pages = data.get("pages") or []
    pages: list[Page] = []
    if isinstance(raw_pages, list):
        for i, item in enumerate(raw_pages, start=1):
            if isinstance(item, str):
                pages.append(Page(number=i, content=item))
            elif isinstance(item, Mapping):  # tolerate {"page": n, "content": "..."} shapes
                number = item.get("page") or item.get("page_num") or item.get("index") or i
                pages.append(Page(number=int(number), content=str(item.get("content") or "")))
    content = data.get("content")
    if not isinstance(content, str):
        content = "\n\n".join(p.content for p in pages) if pages else ""
    raw_page_num = data.get("page_num")
    page_num = int(raw_page_num) if isinstance(raw_page_num, (int, float)) and raw_page_num else 0
    if not page_num:
        page_num = len(pages) or 1
    latency = body.get("latency")
    error = result.get("error")
    return StatusView(
        status=str(result.get("status") or ("SUCCESS" if "data" in result else "PENDING")).upper(),
        task_id=result.get("task_id"),
        content=content,
        content_type=str(data.get("content_type") or default_content_type),
        page_num=page_num,
        pages=pages,
        usage=flatten_usage(body.get("usage") if isinstance(body.get("usage"), Mapping) else None),
        error=str(error) if error not in (None, "") else None,
        request_id=body.get("request_id"),
        server_latency=float(latency) if isinstance(latency, (int, float)) else None,
    )


def raise_for_status(view: StatusView, *, task_id: str | None, source: str) -> None:
    """``SUCCESS`` returns; ``PENDING`` is the caller's to poll; every other status raises TaskFailedError."""
    if view.status in ("SUCCESS", "PENDING"):
        return
    detail = view.error or "no error message"
    raise TaskFailedError(
        f"{source}: task {task_id or '(sync)'} ended with status {view.status}: {detail}",
        task_id=task_id,
        status=view.status,
        error=view.error,
        request_id=view.request_id,
        source=source,
    )

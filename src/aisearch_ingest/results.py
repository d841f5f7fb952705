"""Plain result types shared by every service, the adapters and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import AISearchIngestError

__all__ = ["Outcome", "Page", "ParseResult", "flatten_usage"]

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Page:
    """One page of a parsed document.

    Attributes:
        number: 1-based page number in the source file.
        content: the page's text in the result's ``content_type``.
        extra: structured outputs for this page (Qwen-OCR ``words_info`` boxes, ``kv_result``...).
    """

    number: int
    content: str
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ParseResult:
    """What a service made of one source.

    Attributes:
        source: the path or URL as given (or the file name for bytes).
        file_name: the file name sent to the service.
        file_type: the file type sent to the service (``pdf``, ``png``, ``docx``...).
        service: ``document-analyze``, ``image-analyze`` or ``qwen-ocr``.
        service_id: ``ops-document-analyze-001``, ``ops-image-analyze-vlm-001``, or the Qwen model name.
        content: the whole text.
        content_type: ``markdown``, ``html``, ``plain``, ``latex`` or ``json``.
        page_num: number of pages the service reported (1 for an image).
        pages: per-page content when the service gave it (document-analyze ``data.pages``, Qwen-OCR page images).
        usage: every usage field the service returned, flattened (``token_count``, ``image_tokens``, ...).
            For multi-call results (a PDF sent page by page) the fields are summed.
        request_id: the service's request id of the call that returned the content.
        task_id: the asynchronous task id, when the async-task route was used.
        latency: wall time in seconds spent on this source, retries and polling included.
        calls: HTTP calls spent on this source (create + polls, or one sync call per page...).
        source_sha256: hex sha256 of the bytes sent, or of the URL when a URL was sent.
        ocr_task: the Qwen-OCR task (``text_recognition``..., or ``custom``), else None.
        extra: structured outputs (``words_info``, ``kv_result``, raw ``ocr_result``...), never flattened into metadata.
    """

    source: str
    file_name: str
    file_type: str
    service: str
    service_id: str
    content: str
    content_type: str
    page_num: int = 1
    pages: list[Page] = field(default_factory=list)
    usage: dict[str, int | float] = field(default_factory=dict)
    request_id: str | None = None
    task_id: str | None = None
    latency: float = 0.0
    calls: int = 0
    source_sha256: str = ""
    ocr_task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """One source's outcome in a batch: a result or an error, never both."""

    source: str
    result: ParseResult | None = None
    error: AISearchIngestError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def flatten_usage(usage: Mapping[str, Any] | None, prefix: str = "") -> dict[str, int | float]:
    """Flatten a usage object.

    ``{"input_tokens_details": {"image_tokens": 3}}`` becomes ``{"input_tokens_details_image_tokens": 3}``.

    Only numbers are kept (booleans and strings are dropped); nested mappings are joined with ``_``.
    """
    out: dict[str, int | float] = {}
    if not usage:
        return out
    for key, value in usage.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_usage(value, prefix=f"{name}_"))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)):
            out[name] = value
    return out

"""Plain result types shared by every service, the adapters and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import AISearchIngestError
from .sources import safe_name

__all__ = ["RESULT_SCHEMA_VERSION", "Outcome", "Page", "ParseResult", "flatten_usage"]

Scalar = str | int | float | bool | None

#: Version of the dictionary layout of :meth:`ParseResult.to_dict`; :meth:`ParseResult.from_dict` refuses others.
RESULT_SCHEMA_VERSION = 1


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

    def to_dict(self) -> dict[str, Any]:
        """The page as plain JSON-ready data (``extra`` copied as it is)."""
        return {"number": self.number, "content": self.content, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Page:
        """The page back from :meth:`to_dict`.

        Raises:
            ValueError: ``data`` is not a page's dictionary.
        """
        try:
            return cls(int(data["number"]), str(data["content"]), dict(data.get("extra") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a Page dictionary: {exc!r}") from exc


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
        cached: True when the result came from a :class:`~aisearch_ingest.cache.ResultCache` instead of the
            service (then ``calls`` is 0 and ``latency`` is the look-up's; ``usage``, ``request_id`` and ``task_id``
            are those of the original call).
        possibly_billed_twice: billed calls for this source (a task create, a sync call, a Qwen-OCR page) whose
            request reached the service but whose answer was lost, and that were therefore sent again: the
            service may have done and billed that work twice (``usage`` counts only the answer received).
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
    cached: bool = False
    possibly_billed_twice: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data, with ``"schema"`` (:data:`RESULT_SCHEMA_VERSION`); ``json.dumps`` takes it
        as it is when ``extra`` holds JSON values, as the clients' results do. ``source`` and ``file_name`` are
        written as :func:`~aisearch_ingest.sources.safe_name` writes them.

        Example:
            >>> r = ParseResult(source="a.md", file_name="a.md", file_type="md", service="document-analyze",
            ...                 service_id="ops-document-analyze-001", content="<h1>A</h1>", content_type="html",
            ...                 pages=[Page(1, "<h1>A</h1>")], usage={"token_count": 3})
            >>> ParseResult.from_dict(r.to_dict()) == r
            True
        """
        return {
            "schema": RESULT_SCHEMA_VERSION,
            "source": safe_name(self.source),  # JSON-safe: bytes of a name that are not UTF-8 as \xNN
            "file_name": safe_name(self.file_name),
            "file_type": self.file_type,
            "service": self.service,
            "service_id": self.service_id,
            "content": self.content,
            "content_type": self.content_type,
            "page_num": self.page_num,
            "pages": [page.to_dict() for page in self.pages],
            "usage": dict(self.usage),
            "request_id": self.request_id,
            "task_id": self.task_id,
            "latency": self.latency,
            "calls": self.calls,
            "source_sha256": self.source_sha256,
            "ocr_task": self.ocr_task,
            "extra": dict(self.extra),
            "cached": self.cached,
            "possibly_billed_twice": self.possibly_billed_twice,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParseResult:
        """The result back from :meth:`to_dict` (or from its JSON).

        Raises:
            ValueError: another schema version, or not a result's dictionary.
        """
        schema = data.get("schema") if isinstance(data, Mapping) else None
        if schema != RESULT_SCHEMA_VERSION:
            raise ValueError(f"unsupported ParseResult schema {schema!r} (this version reads {RESULT_SCHEMA_VERSION})")
        try:
            usage = data.get("usage") or {}
            return cls(
                source=str(data["source"]),
                file_name=str(data["file_name"]),
                file_type=str(data["file_type"]),
                service=str(data["service"]),
                service_id=str(data["service_id"]),
                content=str(data["content"]),
                content_type=str(data["content_type"]),
                page_num=int(data.get("page_num", 1)),
                pages=[Page.from_dict(page) for page in data.get("pages") or ()],
                usage={str(k): v for k, v in usage.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                request_id=data.get("request_id"),
                task_id=data.get("task_id"),
                latency=float(data.get("latency", 0.0)),
                calls=int(data.get("calls", 0)),
                source_sha256=str(data.get("source_sha256", "")),
                ocr_task=data.get("ocr_task"),
                extra=dict(data.get("extra") or {}),
                cached=bool(data.get("cached", False)),
                possibly_billed_twice=int(data.get("possibly_billed_twice", 0)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a ParseResult dictionary: {exc!r}") from exc


@dataclass(frozen=True)
class Outcome:
    """One source's outcome in a batch: a result or an error, never both."""

    source: str
    result: ParseResult | None = None
    error: AISearchIngestError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def possibly_billed_twice(self) -> int:
        """Billed calls of this source whose answer was lost and that were sent again (see
        :attr:`ParseResult.possibly_billed_twice`); counted for failed sources too."""
        if self.result is not None:
            return self.result.possibly_billed_twice
        return getattr(self.error, "possibly_billed_twice", 0)


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

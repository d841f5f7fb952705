"""Parse results and chunks → framework-neutral records: flat metadata and deterministic ids.

Shared by :mod:`aisearch_ingest.langchain` and :mod:`aisearch_ingest.llama_index`; imports neither framework.

Metadata holds flat scalars only (``str``, ``int``, ``float``, ``bool``; keys whose value is unknown are left out
rather than set to ``None``), so every vector store accepts it as is. The keys follow ``DESIGN.md``: ``source``,
``file_name``, ``file_type``, ``service``, ``service_id`` (and ``model`` for Qwen-OCR), ``ocr_task``,
``content_type``, ``page_num``, ``page``/``page_start``/``page_end``, ``usage_*``, ``request_id``, ``task_id``,
``source_sha256``, and for chunks ``chunk_index``, ``chunk_count``, ``chunk_tokens``, ``headings``, ``chunk_kind``.

Ids are UUIDs (accepted by every vector store, Qdrant included) derived from the bytes' sha256, the service, the
service id, the options that change the output, the mode and the position (page or chunk) -- never from the path or
from per-call values -- so the same file parsed the same way gets the same ids on every run, from any path.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .results import ParseResult
from .sources import safe_name

__all__ = [
    "BOOKKEEPING_KEYS",
    "MODES",
    "VOLATILE_KEYS",
    "ChunkLike",
    "Chunker",
    "Mode",
    "Record",
    "Scalar",
    "bookkeeping_keys",
    "document_id",
    "records_from_result",
    "result_metadata",
    "stable_key",
]

Scalar = str | int | float | bool
Mode = Literal["document", "page", "chunk"]
MODES: tuple[Mode, ...] = ("document", "page", "chunk")

#: Values that change on every call (new request, new task) although the output does not.
VOLATILE_KEYS = frozenset({"request_id", "task_id"})

#: Keys that mean nothing to an embedding model or an LLM (LlamaIndex excludes them from both texts).
BOOKKEEPING_KEYS = frozenset(
    {
        "service",
        "service_id",
        "model",
        "ocr_task",
        "content_type",
        "file_type",
        "page_num",
        "request_id",
        "task_id",
        "source_sha256",
        "chunk_index",
        "chunk_count",
        "chunk_tokens",
        "chunk_kind",
    }
)

# uuid5 namespace of this package's ids (fixed for ever: changing it changes every id).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/aisearch-ingest/aisearch-ingest/documents")


class ChunkLike(Protocol):
    """What :func:`records_from_result` reads from a chunk (``aisearch_ingest.chunking.Chunk`` satisfies it)."""

    @property
    def text(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    @property
    def headings(self) -> tuple[str, ...]: ...
    @property
    def page_start(self) -> int | None: ...
    @property
    def page_end(self) -> int | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def count(self) -> int: ...


class Chunker(Protocol):
    """Anything with ``chunk_result(result) -> list[chunk]`` (``StructuredChunker`` satisfies it)."""

    def chunk_result(self, result: ParseResult) -> Iterable[ChunkLike]: ...


@dataclass(frozen=True)
class Record:
    """One framework-neutral document: its deterministic ``id``, its ``text`` and flat ``metadata``."""

    id: str
    text: str
    metadata: dict[str, Scalar] = field(default_factory=dict)


def _scalar(value: Any) -> Scalar | None:
    if isinstance(value, (str, bool, int, float)):
        return value
    return None


def result_metadata(result: ParseResult) -> dict[str, Scalar]:
    """The metadata every document of ``result`` carries (no page or chunk keys).

    Example:
        >>> from aisearch_ingest import ParseResult
        >>> r = ParseResult(source="a.png", file_name="a.png", file_type="png", service="image-analyze",
        ...                 service_id="ops-image-analyze-ocr-001", content="hi", content_type="plain",
        ...                 usage={"pv_count": 1}, source_sha256="ab")
        >>> result_metadata(r)["usage_pv_count"]
        1
    """
    meta: dict[str, Any] = {
        # A name with bytes that are not UTF-8 would break every JSON writer downstream: they become \xNN.
        "source": safe_name(result.source),
        "file_name": safe_name(result.file_name),
        "file_type": result.file_type,
        "service": result.service,
        "service_id": result.service_id,
    }
    if result.service == "qwen-ocr":
        meta["model"] = result.service_id
    if result.ocr_task:
        meta["ocr_task"] = result.ocr_task
    meta["content_type"] = result.content_type
    meta["page_num"] = result.page_num
    for key, value in sorted(result.usage.items()):
        meta[f"usage_{key}"] = value
    meta["request_id"] = result.request_id
    meta["task_id"] = result.task_id
    meta["source_sha256"] = result.source_sha256
    return {k: v for k, v in ((k, _scalar(v)) for k, v in meta.items()) if v is not None}


def document_id(
    result: ParseResult, *, mode: Mode, position: str | int, options: Mapping[str, Any] | None = None
) -> str:
    """The deterministic id of one document: a UUID string.

    Args:
        result: the parse result (its ``source_sha256``, ``service``, ``service_id``, ``ocr_task`` count).
        mode: ``document``, ``page`` or ``chunk``.
        position: ``0`` for a whole document, the page number, or the chunk index.
        options: the options that change the output (task, schema, prompt, chunk size...). ``None`` values are
            ignored, so adding an option that defaults to ``None`` does not change existing ids.

    Example:
        >>> from aisearch_ingest import ParseResult
        >>> r = ParseResult(source="x/a.md", file_name="a.md", file_type="md", service="document-analyze",
        ...                 service_id="ops-document-analyze-001", content="", content_type="html",
        ...                 source_sha256="ab")
        >>> document_id(r, mode="document", position=0) == document_id(
        ...     ParseResult(**{**r.__dict__, "source": "elsewhere/b.md"}), mode="document", position=0)
        True
    """
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    if result.ocr_task:
        opts.setdefault("task", result.ocr_task)
    key = json.dumps(
        [result.source_sha256, result.service, result.service_id, opts, mode, str(position)],
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )
    return str(uuid.uuid5(_NAMESPACE, key))


def stable_key(record_id: str, text: str, metadata: Mapping[str, Any]) -> str:
    """A UUID over the id, the text and the metadata minus :data:`VOLATILE_KEYS`.

    It changes when the content or the caller's metadata changes, not when only the request or task id does: the
    right key for LangChain's ``index(..., key_encoder=...)``.
    """
    stable = {k: v for k, v in metadata.items() if k not in VOLATILE_KEYS}
    digest = hashlib.sha256(
        json.dumps([record_id, text, stable], sort_keys=True, default=str, ensure_ascii=False).encode()
    ).hexdigest()
    return str(uuid.uuid5(_NAMESPACE, digest))


def bookkeeping_keys(metadata: Iterable[str]) -> list[str]:
    """The keys of ``metadata`` to keep out of embedding and LLM text: ``usage_*``, ids, hashes, counters."""
    return [k for k in metadata if k in BOOKKEEPING_KEYS or k.startswith("usage_")]


def records_from_result(
    result: ParseResult,
    *,
    mode: Mode = "document",
    options: Mapping[str, Any] | None = None,
    chunker: Chunker | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> list[Record]:
    """Turn one parse result into records.

    Args:
        result: what the service returned.
        mode: ``document`` (one record), ``page`` (one per page the service gave; one record when it gave none) or
            ``chunk`` (one per chunk of ``chunker``).
        options: the options that change the output (part of the ids).
        chunker: required for ``mode="chunk"``.
        extra_metadata: the caller's metadata (``extra_info``, a blob's metadata), added to every record. On a
            clash the keys of the table above keep their meaning: ``SimpleDirectoryReader``'s MIME ``file_type``
            does not replace the service's ``pdf``.

    Raises:
        ValueError: unknown mode, or ``mode="chunk"`` without a chunker.

    Example:
        >>> from aisearch_ingest import Page, ParseResult
        >>> r = ParseResult(source="r.pdf", file_name="r.pdf", file_type="pdf", service="document-analyze",
        ...                 service_id="ops-document-analyze-001", content="a\\n\\nb", content_type="markdown",
        ...                 page_num=2, pages=[Page(1, "a"), Page(2, "b")], source_sha256="ab")
        >>> [(rec.text, rec.metadata["page"]) for rec in records_from_result(r, mode="page")]
        [('a', 1), ('b', 2)]
    """
    base = result_metadata(result)
    extra = dict(extra_metadata or {})

    def make(text: str, position: str | int, local: Mapping[str, Any]) -> Record:
        meta = {**extra, **base, **{k: v for k, v in local.items() if v is not None}}
        return Record(document_id(result, mode=mode, position=position, options=options), text, meta)

    if mode == "document":
        return [make(result.content, 0, {})]
    if mode == "page":
        if not result.pages:
            only = {"page": 1} if result.page_num == 1 else {}
            return [make(result.content, "all", only)]
        return [make(page.content, page.number, {"page": page.number}) for page in result.pages]
    if mode == "chunk":
        if chunker is None:
            raise ValueError("mode='chunk' needs a chunker")
        records = []
        for chunk in chunker.chunk_result(result):
            local: dict[str, Any] = {
                "page_start": chunk.page_start,
                "page_end": chunk.page_end,
                "chunk_index": chunk.index,
                "chunk_count": chunk.count,
                "chunk_tokens": chunk.tokens,
                "headings": " > ".join(chunk.headings),
                "chunk_kind": chunk.kind,
            }
            if chunk.page_start is not None and chunk.page_start == chunk.page_end:
                local["page"] = chunk.page_start
            records.append(make(chunk.text, chunk.index, local))
        return records
    raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")

"""Parse results and chunks → framework-neutral records: flat metadata and deterministic ids.

Shared by :mod:`aisearch_ingest.langchain` and :mod:`aisearch_ingest.llama_index`; imports neither framework.

Metadata holds flat scalars only (``str``, ``int``, ``float``, ``bool``; keys whose value is unknown are left out
rather than set to ``None``), so every vector store accepts it as is. The keys follow ``DESIGN.md``: ``source``,
``file_name``, ``file_type``, ``service``, ``service_id`` (and ``model`` for Qwen-OCR), ``ocr_task``,
``content_type``, ``page_num``, ``page``/``page_start``/``page_end``, ``usage_*``, ``request_id``, ``task_id``,
``source_sha256``, and for chunks ``chunk_index``, ``chunk_count``, ``chunk_tokens``, ``headings``, ``chunk_kind``.

Every record of every route is built here: the loaders' and readers' modes and the CLI (:func:`records_from_result`),
the LangChain splitter and the LlamaIndex node parser (:func:`split_record`). Ids are UUIDs (accepted by every vector
store, Qdrant included):

* a document or page: :func:`document_id`, from the source's identity (:func:`source_identity`: the path or URL as
  given, as in ``metadata["source"]``; the content's sha256 for bytes that came with no name), the service, the
  service id, the options that change the output, the mode and the position -- never from per-call values. So a
  re-run gives a file the same ids, and an *edited* file keeps them: a LlamaIndex docstore sees the same document
  with a new hash and replaces its nodes, instead of adding a second document next to the old one;
* a chunk: :func:`chunk_id`, from its parent's id, the content it was cut from (``source_sha256``), the chunker's
  settings, the content type and the chunk's index -- content + position, so an edited file's chunks are new
  chunks. In ``mode="chunk"`` the parent is the ``mode="document"`` record of the same file, so a loader's or
  reader's chunk mode, the CLI's ``--mode chunk`` and document mode followed by ``StructuredTextSplitter`` or
  ``StructuredNodeParser`` give the same chunks the same ids, for the same chunker settings. Page-mode records split
  afterwards are chunked per page: other chunks, other ids.

:data:`BOOKKEEPING_KEYS` (with ``usage_*``, see :func:`bookkeeping_keys`) are the keys both frameworks keep out of
embedding and LLM text, and :func:`embed_hidden_keys` / :func:`llm_hidden_keys` add the paths (``source``, LlamaIndex's
``file_path``...): the text a model reads is content, never where the file lay.

Metadata of the caller or the framework (``extra_info``, ``SimpleDirectoryReader``'s ``file_path``/``file_type``, a
blob's metadata) is never overwritten: where one of our keys would replace a different value, ours is stored as
``aisearch_<key>`` instead (``SimpleDirectoryReader``'s MIME ``file_type`` stays, ours is ``aisearch_file_type``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .results import ParseResult
from .sources import safe_name

__all__ = [
    "BOOKKEEPING_KEYS",
    "CLASH_PREFIX",
    "MODES",
    "PATH_KEYS",
    "VOLATILE_KEYS",
    "ChunkLike",
    "Chunker",
    "Mode",
    "Record",
    "Scalar",
    "bookkeeping_keys",
    "chunk_id",
    "chunk_metadata",
    "document_id",
    "embed_hidden_keys",
    "llm_hidden_keys",
    "merge_metadata",
    "records_from_result",
    "result_metadata",
    "source_identity",
    "split_record",
    "stable_key",
]

Scalar = str | int | float | bool
Mode = Literal["document", "page", "chunk"]
MODES: tuple[Mode, ...] = ("document", "page", "chunk")

#: Values that change on every call (new request, new task) although the output does not.
VOLATILE_KEYS = frozenset({"request_id", "task_id"})

#: Keys that mean nothing to an embedding model or an LLM (LlamaIndex excludes them from both texts, on documents
#: and on the nodes of :class:`~aisearch_ingest.llama_index.StructuredNodeParser` alike). ``page`` stays visible (an
#: LLM can cite it); the page span and the counters are for filtering.
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
        "page_start",
        "page_end",
    }
)

#: Keys that hold where a file lay (ours, LlamaIndex's ``SimpleDirectoryReader``'s, LangChain blobs'): never part of
#: the text an embedding model or an LLM reads. ``file_name`` stays visible to the LLM (it can cite it).
PATH_KEYS = frozenset({"source", "file_path", "file_size", "creation_date", "last_modified_date", "last_accessed_date"})
_EMBED_ONLY_HIDDEN = frozenset({"file_name"})

#: Prefix of our key when the caller's or the framework's metadata already holds a different value under it.
CLASH_PREFIX = "aisearch_"

# uuid5 namespaces of this package's ids (fixed for ever: changing one changes every id made under it).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/aisearch-ingest/aisearch-ingest/documents")
_CHUNK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/aisearch-ingest/aisearch-ingest/chunks")


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
    """What the record builders call on a chunker (``aisearch_ingest.chunking.StructuredChunker`` satisfies it)."""

    def settings_key(self) -> str:
        """Everything besides the text that decides the chunks, as a stable string (part of every chunk id)."""
        ...

    def chunk_result(self, result: ParseResult) -> Iterable[ChunkLike]: ...
    def chunk_text(self, text: str, content_type: str = ...) -> Iterable[ChunkLike]: ...
    def chunk_pages(self, pages: Sequence[tuple[int, str]], content_type: str = ...) -> Iterable[ChunkLike]: ...


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
    result: ParseResult,
    *,
    mode: Literal["document", "page"],
    position: str | int,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The deterministic id of one document or page: a UUID string (chunks get :func:`chunk_id`).

    Args:
        result: the parse result (its :func:`source_identity`, ``service``, ``service_id``, ``ocr_task`` count).
        mode: ``document`` or ``page``.
        position: ``0`` for a whole document, the page number (``"all"`` when the service gave no pages).
        options: the service's options that change the output (task, schema, prompt...; never the chunker's).
            ``None`` values are ignored, so adding an option that defaults to ``None`` does not change existing ids.

    Raises:
        ValueError: ``mode="chunk"``: a chunk's id is :func:`chunk_id` of its document's.

    Example:
        >>> from aisearch_ingest import ParseResult
        >>> r = ParseResult(source="x/a.md", file_name="a.md", file_type="md", service="document-analyze",
        ...                 service_id="ops-document-analyze-001", content="", content_type="html",
        ...                 source_sha256="ab")
        >>> same_file_edited = ParseResult(**{**r.__dict__, "source_sha256": "cd"})
        >>> document_id(r, mode="document", position=0) == document_id(same_file_edited, mode="document", position=0)
        True
        >>> document_id(r, mode="document", position=0) == document_id(
        ...     ParseResult(**{**r.__dict__, "source": "elsewhere/a.md"}), mode="document", position=0)
        False
    """
    if mode not in ("document", "page"):
        raise ValueError(f"document_id takes mode 'document' or 'page' (chunks get chunk_id); got {mode!r}")
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    if result.ocr_task:
        opts.setdefault("task", result.ocr_task)
    key = json.dumps(
        [source_identity(result), result.service, result.service_id, opts, mode, str(position)],
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )
    return str(uuid.uuid5(_NAMESPACE, key))


#: The file name :func:`~aisearch_ingest.sources.load_source` gives bytes that came with none (``upload.pdf``).
_ANONYMOUS_STEM = "upload"


def source_identity(result: ParseResult) -> str:
    """What a document's id says it is: the path or URL as given (``metadata["source"]``: a URL without its query),
    or, for bytes that came with no name (``upload.<type>``) or a ``data:`` URI, the content's sha256.

    The identity stays when the file is edited (the content goes into the document's hash, and into the chunks' ids),
    so a re-index replaces the file's old records. Give the same path form on every run (both relative to the same
    directory, or both absolute): ``docs/a.pdf`` and ``/home/me/docs/a.pdf`` are two sources.

    Example:
        >>> from aisearch_ingest import ParseResult
        >>> r = ParseResult(source="docs/a.md", file_name="a.md", file_type="md", service="document-analyze",
        ...                 service_id="ops-document-analyze-001", content="", content_type="html",
        ...                 source_sha256="ab")
        >>> anonymous = ParseResult(**{**r.__dict__, "source": "upload.md", "file_name": "upload.md"})
        >>> source_identity(r), source_identity(anonymous)
        ('docs/a.md', 'sha256:ab')
    """
    source = safe_name(result.source)
    anonymous = source.startswith("data:") or (
        source == result.file_name and source.rpartition(".")[0] == _ANONYMOUS_STEM
    )
    return f"sha256:{result.source_sha256}" if anonymous or not source else source


def chunk_id(parent_id: str, settings: str, content_type: str, index: int, *, content: str) -> str:
    """The deterministic id of one chunk: ``uuid5`` of its parent's id, the content it was cut from, the chunker's
    settings, the content type it was chunked as and its index -- the one scheme of every route (see the module
    docstring).

    Args:
        parent_id: the id of the record that was split (in ``mode="chunk"``: the file's ``mode="document"`` id).
        settings: :meth:`StructuredChunker.settings_key() <aisearch_ingest.chunking.StructuredChunker.settings_key>`.
        content_type: ``markdown``, ``html``...: what the text was parsed as.
        index: the chunk's position in its parent.
        content: a digest of what was split: the file's ``source_sha256`` (the parent's metadata), else the sha256
            of the parent's text (:func:`split_record`). An edited file's chunks get new ids.

    Returns:
        The id, a UUID string.

    Example:
        >>> a = chunk_id("doc-1", "StructuredChunker(max_tokens=512)", "markdown", 0, content="ab")
        >>> a == chunk_id("doc-1", "StructuredChunker(max_tokens=512)", "markdown", 0, content="ab"), a == chunk_id(
        ...     "doc-1", "StructuredChunker(max_tokens=512)", "markdown", 1, content="ab")
        (True, False)
    """
    key = f"{parent_id}#{content}#{settings}, content_type={content_type}#chunk={index}"
    return str(uuid.uuid5(_CHUNK_NAMESPACE, key))


def chunk_metadata(chunk: ChunkLike) -> dict[str, Scalar]:
    """The flat metadata of one chunk, added to its parent's: ``chunk_index``, ``chunk_count``, ``chunk_tokens``,
    ``headings`` (``"A > B > C"``), ``chunk_kind``, and where known ``page_start``/``page_end`` (and ``page`` when
    both are the same page).

    Example:
        >>> from aisearch_ingest.chunking import Chunk
        >>> meta = chunk_metadata(Chunk("x", 1, ("A", "B"), 2, 2, "text", 0, 1))
        >>> meta["headings"], meta["page"]
        ('A > B', 2)
    """
    meta: dict[str, Scalar] = {
        "chunk_index": chunk.index,
        "chunk_count": chunk.count,
        "chunk_tokens": chunk.tokens,
        "headings": " > ".join(chunk.headings),
        "chunk_kind": chunk.kind,
    }
    if chunk.page_start is not None:
        meta["page_start"] = chunk.page_start
    if chunk.page_end is not None:
        meta["page_end"] = chunk.page_end
    if chunk.page_start is not None and chunk.page_start == chunk.page_end:
        meta["page"] = chunk.page_start
    return meta


def _page_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def split_record(parent: Record, chunker: Chunker, *, content_type: str = "markdown") -> list[Record]:
    """Split one record (a document of any mode, or any text with metadata) into chunk records.

    Used by ``StructuredTextSplitter`` and ``StructuredNodeParser``. Each chunk keeps the parent's metadata plus
    :func:`chunk_metadata`; its id is :func:`chunk_id` of the parent's. The text is parsed as the parent's
    ``metadata["content_type"]`` (set by this package's loaders and readers), else ``content_type``. Pages: a parent
    with a ``page`` (page mode) gives chunks on that page; one whose ``page_num`` is 1 gives chunks on page 1 (as
    ``mode="chunk"`` does); a multi-page document has no page boundaries left, so its chunks have no page span
    (``mode="chunk"`` chunks the pages the service returned and has them) but the same texts and ids.

    Example:
        >>> from aisearch_ingest.chunking import StructuredChunker
        >>> [c] = split_record(Record("doc-1", "# A\\n\\nSome text.", {"source": "a.md"}), StructuredChunker())
        >>> c.text, c.metadata["source"], c.metadata["headings"]
        ('# A\\n\\nSome text.', 'a.md', 'A')
    """
    meta = parent.metadata
    ctype = str(meta.get("content_type") or content_type)
    page = _page_number(meta.get("page"))
    if page is None and _page_number(meta.get("page_num")) == 1:
        page = 1
    if page is not None:
        chunks = chunker.chunk_pages([(page, parent.text)], ctype)
    else:
        chunks = chunker.chunk_text(parent.text, ctype)
    settings = chunker.settings_key()
    content = meta.get("source_sha256")
    if not isinstance(content, str) or not content:
        content = hashlib.sha256(parent.text.encode("utf-8", "surrogatepass")).hexdigest()
    return [
        Record(
            chunk_id(parent.id, settings, ctype, chunk.index, content=content),
            chunk.text,
            {**meta, **chunk_metadata(chunk)},
        )
        for chunk in chunks
    ]


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
    """The keys of ``metadata`` to keep out of embedding and LLM text: :data:`BOOKKEEPING_KEYS` and ``usage_*``.

    Example:
        >>> bookkeeping_keys(["source", "usage_pv_count", "chunk_index", "page"])
        ['usage_pv_count', 'chunk_index']
    """
    return [k for k in metadata if _plain(k) in BOOKKEEPING_KEYS or _plain(k).startswith("usage_")]


def _plain(key: str) -> str:
    return key[len(CLASH_PREFIX) :] if key.startswith(CLASH_PREFIX) else key


def llm_hidden_keys(metadata: Iterable[str]) -> list[str]:
    """The keys of ``metadata`` an LLM never reads: :func:`bookkeeping_keys` and the paths (:data:`PATH_KEYS`).

    Example:
        >>> llm_hidden_keys(["source", "file_path", "file_name", "page", "chunk_index", "team"])
        ['source', 'file_path', 'chunk_index']
    """
    return [k for k in metadata if _plain(k) in PATH_KEYS or k in bookkeeping_keys([k])]


def embed_hidden_keys(metadata: Iterable[str]) -> list[str]:
    """The keys of ``metadata`` an embedding model never reads: :func:`llm_hidden_keys` and ``file_name``.

    What is left is content: ``page``, ``headings`` and the caller's own keys.

    Example:
        >>> embed_hidden_keys(["source", "file_path", "file_name", "page", "headings", "usage_pv_count"])
        ['source', 'file_path', 'file_name', 'usage_pv_count']
    """
    return [k for k in metadata if _plain(k) in _EMBED_ONLY_HIDDEN or k in llm_hidden_keys([k])]


def merge_metadata(extra: Mapping[str, Any], ours: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` (the caller's or the framework's metadata) with ``ours`` added, never replacing a value of
    ``extra``: our key whose value differs goes in as ``aisearch_<key>``.

    Example:
        >>> merge_metadata({"file_type": "application/pdf", "source": "a.pdf"}, {"file_type": "pdf", "source": "a.pdf"})
        {'file_type': 'application/pdf', 'source': 'a.pdf', 'aisearch_file_type': 'pdf'}
    """
    merged = dict(extra)
    for key, value in ours.items():
        if key in extra and extra[key] != value:
            merged[CLASH_PREFIX + key] = value
        else:
            merged[key] = value
    return merged


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
            ``chunk`` (one per chunk of ``chunker``, with :func:`chunk_metadata`; ids: :func:`chunk_id` of the
            ``mode="document"`` id, so they equal those of :func:`split_record` over the document record).
        options: the service's options that change the output (part of the ids; not the chunker's settings, which
            enter chunk ids through ``chunker.settings_key()``).
        chunker: required for ``mode="chunk"``.
        extra_metadata: the caller's metadata (``extra_info``, a blob's metadata), added to every record and never
            overwritten: on a clash with a different value ours is ``aisearch_<key>`` (:func:`merge_metadata`), so
            ``SimpleDirectoryReader``'s MIME ``file_type`` stays and the service's ``pdf`` is ``aisearch_file_type``.

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

    def make(record_id: str, text: str, local: Mapping[str, Any]) -> Record:
        return Record(record_id, text, merge_metadata(extra, {**base, **local}))

    if mode == "document":
        return [make(document_id(result, mode="document", position=0, options=options), result.content, {})]
    if mode == "page":
        if not result.pages:
            only = {"page": 1} if result.page_num == 1 else {}
            return [make(document_id(result, mode="page", position="all", options=options), result.content, only)]
        return [
            make(
                document_id(result, mode="page", position=page.number, options=options),
                page.content,
                {"page": page.number},
            )
            for page in result.pages
        ]
    if mode == "chunk":
        if chunker is None:
            raise ValueError("mode='chunk' needs a chunker")
        parent = document_id(result, mode="document", position=0, options=options)
        settings = chunker.settings_key()
        return [
            make(
                chunk_id(parent, settings, result.content_type, chunk.index, content=result.source_sha256),
                chunk.text,
                chunk_metadata(chunk),
            )
            for chunk in chunker.chunk_result(result)
        ]
    raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")

"""LangChain document loaders and blob parsers for document-analyze, image-analyze and Qwen-OCR.

Thin adapters: every service call goes through the client's engine (``parse_many`` / ``aparse_many``); results
become :class:`~langchain_core.documents.Document` objects with flat metadata and deterministic ids
(:mod:`aisearch_ingest.documents`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from langchain_core.document_loaders import BaseBlobParser, BaseLoader
from langchain_core.documents import Document
from langchain_core.documents.base import Blob

from .._adapters import (
    Batch,
    Failure,
    OnError,
    Shaper,
    aiter_records,
    check_choices,
    check_names,
    client_parameters,
    expand,
    iter_records,
    name_of,
    source_from_bytes,
)
from ..aisearch import DocumentAnalyzer, ImageAnalyzer
from ..config import as_secret
from ..documents import Mode, Record, stable_key
from ..engine import ParserEngine
from ..qwen import QwenOCR
from ..results import Outcome
from ..sources import SourceLike

__all__ = [
    "DocumentAnalyzeLoader",
    "DocumentAnalyzeParser",
    "ImageAnalyzeLoader",
    "ImageAnalyzeParser",
    "QwenOCRLoader",
    "QwenOCRParser",
    "index_key",
]


def _document(record: Record) -> Document:
    return Document(id=record.id, page_content=record.text, metadata=dict(record.metadata))


def index_key(document: Document) -> str:
    """Key encoder for ``langchain_core.indexing.index(..., key_encoder=index_key)``.

    LangChain's default key hashes the text and *all* metadata, and ``request_id``/``task_id`` are new on every
    call, so a re-run would re-add everything. This key covers our deterministic id, the text and the metadata minus
    those two: a re-run over unchanged files skips every document; changed content or metadata still updates.

    Example:
        >>> from langchain_core.documents import Document
        >>> a = Document(id="1", page_content="x", metadata={"source": "a.pdf", "request_id": "r1"})
        >>> b = Document(id="1", page_content="x", metadata={"source": "a.pdf", "request_id": "r2"})
        >>> index_key(a) == index_key(b), index_key(a) == index_key(Document(id="1", page_content="y"))
        (True, False)
    """
    return stable_key(document.id or "", document.page_content, document.metadata)


def _hide_key(client_kwargs: dict[str, Any]) -> None:
    """Wrap ``api_key`` in a SecretStr in place, first thing: no frame of ours keeps the raw key as a local (in the
    keyword dict) if building the client raises."""
    if "api_key" in client_kwargs:
        client_kwargs["api_key"] = as_secret(client_kwargs["api_key"])


_S = TypeVar("_S", bound="_Service")


class _Service:
    """Client construction and output options shared by loaders and parsers.

    Each public class names its client class; the keywords it passes on are exactly that class's constructor
    arguments (:func:`~aisearch_ingest._adapters.client_parameters`), checked here: a misspelled one is a
    ``TypeError`` naming the nearest valid argument, and client keywords next to ``client=`` (which would be ignored)
    are refused.

    A loader or parser is not picklable (its client holds the API key, an event-loop thread and connections):
    ``pickle.dumps`` raises ``TypeError``; build one per process."""

    _client_class: ClassVar[type[ParserEngine]]

    def _setup(
        self,
        client: ParserEngine | None,
        client_kwargs: Mapping[str, Any],
        mode: Mode,
        on_error: OnError,
        chunk_max_tokens: int,
        include_headings: bool,
        html_to_markdown: bool,
    ) -> None:
        check_choices(mode, on_error)
        owner = type(self).__name__
        # The class's own arguments cannot land in client_kwargs; they are valid names for the suggestion.
        params = inspect.signature(type(self).__init__).parameters.items()
        own = [n for n, p in params if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        check_names(owner, client_kwargs, {*client_parameters(self._client_class), *own})
        if client is not None and client_kwargs:
            raise TypeError(
                f"{owner} got client= and client keywords ({', '.join(client_kwargs)}), which it would ignore: "
                "set them on the client"
            )
        self.client: ParserEngine = client if client is not None else self._client_class(**client_kwargs)
        self.mode: Mode = mode
        self.on_error: OnError = on_error
        self.failures: list[Failure] = []
        #: source -> billed calls whose answer was lost and that were sent again (the service may have billed
        #: them twice); filled like ``failures``, for succeeded and failed files alike.
        self.possibly_billed_twice: dict[str, int] = {}
        self._shaper = Shaper(
            self.client,
            mode=mode,
            max_tokens=chunk_max_tokens,
            include_headings=include_headings,
            html_to_markdown=html_to_markdown,
        )

    def close(self) -> None:
        """Close the client's private event loop and connections (a client given as ``client=`` too: it opens them
        again if used afterwards)."""
        self.client.close()

    async def aclose(self) -> None:
        """Close the connections the async methods (``aload``, ``alazy_load``) opened on the running event loop."""
        await self.client.aclose()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _ServiceLoader(_Service, BaseLoader):
    def __init__(
        self,
        file_path: SourceLike | Iterable[SourceLike],
        *,
        glob: str = "**/*",
        recursive: bool = True,
        mode: Mode = "document",
        chunk_max_tokens: int = 512,
        include_headings: bool = False,
        html_to_markdown: bool = True,
        on_error: OnError = "raise",
        show_progress: bool = False,
        client: ParserEngine | None = None,
        **client_kwargs: Any,
    ) -> None:
        _hide_key(client_kwargs)
        self.file_path = file_path
        self.glob, self.recursive, self.show_progress = glob, recursive, show_progress
        self._setup(client, client_kwargs, mode, on_error, chunk_max_tokens, include_headings, html_to_markdown)

    def _start(self) -> tuple[list[Any], Batch]:
        items = expand(self.file_path, glob=self.glob, recursive=self.recursive)
        self.failures = []
        self.possibly_billed_twice = {}
        batch = Batch(
            self._shaper,
            on_error=self.on_error,
            failures=self.failures,
            billed_twice=self.possibly_billed_twice,
            total=len(items),
            show_progress=self.show_progress,
            desc=type(self).__name__,
        )
        return items, batch

    def lazy_load(self) -> Iterator[Document]:
        """Yield documents as files finish (blocking; safe inside Jupyter and a running event loop)."""
        items, batch = self._start()
        for record in iter_records(self.client, items, batch):
            yield _document(record)

    async def alazy_load(self) -> AsyncIterator[Document]:
        """Yield documents as files finish, parsing them concurrently on the running event loop."""
        items, batch = self._start()
        async for record in aiter_records(self.client, items, batch):
            yield _document(record)


class _ServiceParser(_Service, BaseBlobParser):
    def __init__(
        self,
        *,
        mode: Mode = "document",
        chunk_max_tokens: int = 512,
        include_headings: bool = False,
        html_to_markdown: bool = True,
        on_error: OnError = "raise",
        client: ParserEngine | None = None,
        **client_kwargs: Any,
    ) -> None:
        _hide_key(client_kwargs)
        self._setup(client, client_kwargs, mode, on_error, chunk_max_tokens, include_headings, html_to_markdown)

    def lazy_parse(self, blob: Blob) -> Iterator[Document]:
        """Parse one blob; its metadata (``source``...) is kept. Failures accumulate in ``failures``."""
        origin = str(blob.source or blob.path or "blob")
        made = source_from_bytes(blob.as_bytes(), origin=origin, file_name=name_of(blob.path))
        items, done = ([], [made]) if isinstance(made, Outcome) else ([made], [])
        batch = Batch(
            self._shaper,
            on_error=self.on_error,
            failures=self.failures,
            billed_twice=self.possibly_billed_twice,
            total=1,
            extra=blob.metadata,
        )
        for record in iter_records(self.client, items, batch, done=done):
            yield _document(record)


class DocumentAnalyzeLoader(_ServiceLoader):
    """Load PDFs, Office files, HTML, Markdown and text through AI Search document-analyze.

    Args:
        file_path: a path, a directory (expanded with ``glob``), an ``http(s)`` URL, bytes, or a list of these.
        glob: pattern for directories (``"**/*.pdf"``...); ``recursive=False`` looks at the top level only.
        mode: ``"document"`` (one per file), ``"page"`` (one per page the service returned) or ``"chunk"``
            (``StructuredChunker(max_tokens=chunk_max_tokens, include_headings=include_headings)``, its other
            settings at their defaults: the chunks and ids of ``mode="document"`` followed by
            ``StructuredTextSplitter(max_tokens=chunk_max_tokens, include_headings=include_headings)``).
        html_to_markdown: the service's HTML (DOC/DOCX/PPT/PPTX/HTML/TXT files) becomes markdown in every mode
            (headings, lists, links, tables as pipe tables; ``content_type="markdown"``); ``False`` keeps the HTML
            as the service returned it (chunk mode then chunks the HTML). PDF markdown is never touched.
        on_error: ``"raise"`` (default): every file is still attempted, then the first error is raised;
            ``"skip"``: a WARNING per failed file. Either way ``loader.failures`` lists ``(source, error)``.
        show_progress: a tqdm progress bar (terminal or notebook).
        client: a ready :class:`~aisearch_ingest.DocumentAnalyzer`; otherwise the remaining keyword arguments
            build one, and they are exactly its constructor's (``api_key``, ``endpoint``, ``workspace``,
            ``service_id``, ``image_storage``, ``max_pages``, ``qps``, ``request_timeout``, ``cache``...: all of
            them, at its defaults); an unknown one raises ``TypeError`` naming the nearest valid one, and so do
            client keywords next to ``client=``. ``max_pages=N`` refuses a PDF of more pages before sending it (the
            file is listed in ``failures``, the other files go on).

    Example:
        >>> from aisearch_ingest.emulator import Emulator
        >>> from aisearch_ingest.langchain import DocumentAnalyzeLoader
        >>> with Emulator() as emu:
        ...     loader = DocumentAnalyzeLoader(b"# Hello\\n\\nWorld", endpoint=emu.url, api_key="test")
        ...     docs = loader.load()
        >>> docs[0].metadata["service"], "World" in docs[0].page_content
        ('document-analyze', True)
    """

    _client_class = DocumentAnalyzer


class ImageAnalyzeLoader(_ServiceLoader):
    """Load images (description + OCR, or OCR only) through AI Search image-analyze.

    Takes the arguments of :class:`DocumentAnalyzeLoader`; client keywords go to
    :class:`~aisearch_ingest.ImageAnalyzer` (``service_id="ops-image-analyze-ocr-001"`` for OCR only).

    Example:
        >>> from aisearch_ingest.emulator import Emulator
        >>> from aisearch_ingest.langchain import ImageAnalyzeLoader
        >>> with Emulator() as emu:
        ...     docs = ImageAnalyzeLoader("notebooks/data/scan_page.png", endpoint=emu.url, api_key="test").load()
        >>> docs[0].metadata["service_id"]
        'ops-image-analyze-vlm-001'
    """

    _client_class = ImageAnalyzer


class QwenOCRLoader(_ServiceLoader):
    """Load images and PDFs (page by page) through Model Studio Qwen-OCR.

    Takes the arguments of :class:`DocumentAnalyzeLoader`; client keywords go to ``aisearch_ingest.qwen.QwenOCR``
    (``api_key``, ``base_url`` or ``region``, ``model``, ``task``, ``result_schema``, ``prompt``, ``temperature``,
    ``stream``, ``incremental_output``, ``on_delta``, ``max_pages``...: every argument it takes).

    Example:
        >>> from aisearch_ingest.emulator import Emulator
        >>> from aisearch_ingest.langchain import QwenOCRLoader
        >>> with Emulator() as emu:
        ...     docs = QwenOCRLoader("notebooks/data/scan_page.png", base_url=emu.url, api_key="test").load()
        >>> docs[0].metadata["model"]
        'qwen-vl-ocr'
    """

    _client_class = QwenOCR


class DocumentAnalyzeParser(_ServiceParser):
    """A blob parser for ``GenericLoader``: each blob goes through AI Search document-analyze.

    Takes ``mode``, ``chunk_max_tokens``, ``include_headings``, ``html_to_markdown``, ``on_error`` and ``client`` or
    client keywords as
    :class:`DocumentAnalyzeLoader` does. Failures accumulate in ``parser.failures`` over the parser's life.

    Example:
        >>> from langchain_community.document_loaders.generic import GenericLoader
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu:
        ...     parser = DocumentAnalyzeParser(endpoint=emu.url, api_key="test", on_error="skip")
        ...     docs = GenericLoader.from_filesystem("notebooks/data", glob="*.md", parser=parser).load()
        >>> docs[0].metadata["file_name"]
        'meeting_notes.md'
    """

    _client_class = DocumentAnalyzer


class ImageAnalyzeParser(_ServiceParser):
    """A blob parser for ``GenericLoader``: each blob goes through AI Search image-analyze.

    Example:
        >>> from langchain_community.document_loaders.generic import GenericLoader
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu:
        ...     parser = ImageAnalyzeParser(endpoint=emu.url, api_key="test")
        ...     docs = GenericLoader.from_filesystem("notebooks/data", glob="scan_page.png", parser=parser).load()
        >>> docs[0].metadata["service"]
        'image-analyze'
    """

    _client_class = ImageAnalyzer


class QwenOCRParser(_ServiceParser):
    """A blob parser for ``GenericLoader``: each blob goes through Qwen-OCR.

    Example:
        >>> from langchain_community.document_loaders.generic import GenericLoader
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu:
        ...     parser = QwenOCRParser(base_url=emu.url, api_key="test", mode="page")
        ...     docs = GenericLoader.from_filesystem("notebooks/data", glob="scan_page.png", parser=parser).load()
        >>> docs[0].metadata["page"]
        1
    """

    _client_class = QwenOCR

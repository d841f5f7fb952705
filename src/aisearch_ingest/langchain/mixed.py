"""One LangChain loader and one blob parser for a mixed folder: each file goes to the service its sniffed type calls
for (:mod:`aisearch_ingest.routing`): documents to document-analyze, images to image-analyze or Qwen-OCR.

The records are those of the single-service loaders for the same file (same ids, same metadata): each service's
records are shaped by the same code with that service's client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from langchain_core.document_loaders import BaseBlobParser, BaseLoader
from langchain_core.documents import Document
from langchain_core.documents.base import Blob

from .._adapters import (
    Batch,
    Failure,
    Group,
    OnError,
    aiter_groups,
    check_choices,
    expand,
    iter_groups,
    name_of,
    source_from_bytes,
)
from .._mixed import MixedClients, check_keywords
from ..config import as_secret
from ..documents import Mode
from ..engine import ParserEngine
from ..results import Outcome
from ..routing import ImageService
from ..sources import SourceLike
from .loaders import _document

__all__ = ["AISearchLoader", "AISearchParser"]

_M = TypeVar("_M", bound="_Mixed")

#: The keywords of both classes besides the inputs (``file_path``, ``glob``, ``recursive``, ``show_progress``).
_COMMON = (
    "images",
    "mode",
    "chunk_max_tokens",
    "include_headings",
    "on_error",
    "api_key",
    "endpoint",
    "workspace",
    "document_options",
    "image_options",
    "document_client",
    "image_client",
)


class _Mixed:
    """The clients, options and failures shared by :class:`AISearchLoader` and :class:`AISearchParser`."""

    def _setup(self, settings: dict[str, Any], unknown: Mapping[str, Any], own: Iterable[str]) -> None:
        owner = type(self).__name__
        check_keywords(owner, unknown, [*own, *_COMMON])
        check_choices(settings["mode"], settings["on_error"])
        self.images: ImageService = settings["images"]
        self.mode: Mode = settings["mode"]
        self.on_error: OnError = settings["on_error"]
        self.clients = MixedClients(
            owner,
            images=settings["images"],
            mode=settings["mode"],
            chunk_max_tokens=settings["chunk_max_tokens"],
            include_headings=settings["include_headings"],
            connection={name: settings[name] for name in ("api_key", "endpoint", "workspace")},
            document_options=settings["document_options"],
            image_options=settings["image_options"],
            document_client=settings["document_client"],
            image_client=settings["image_client"],
        )
        self.failures: list[Failure] = []
        #: source -> billed calls whose answer was lost and that were sent again (the service may have billed
        #: them twice), for succeeded and failed files alike.
        self.possibly_billed_twice: dict[str, int] = {}

    @property
    def document_client(self) -> ParserEngine:
        """The document-analyze client (built on first use)."""
        return self.clients.client("document-analyze")

    @property
    def image_client(self) -> ParserEngine:
        """The image client, ``ImageAnalyzer`` or ``QwenOCR`` after ``images`` (built on first use)."""
        return self.clients.client(self.images)

    def close(self) -> None:
        """Close the clients' private event loops and connections."""
        self.clients.close()

    def __enter__(self: _M) -> _M:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} cannot be pickled (its clients hold API keys and connections)")


class AISearchLoader(_Mixed, BaseLoader):
    """Load a mixed folder: each file through the service its type (sniffed from its bytes) calls for.

    Documents (PDF, DOC/DOCX, PPT/PPTX, HTML, Markdown, text) go to AI Search document-analyze; images to AI Search
    image-analyze (``images="image-analyze"``, the default) or to Model Studio Qwen-OCR (``images="qwen-ocr"``). Each
    file gives exactly the documents the single-service loader gives it (same ids, same metadata, ``service`` naming
    the service); the services work at the same time. A file no service takes is a failure naming it, never dropped.

    Args:
        file_path, glob, recursive, mode, chunk_max_tokens, include_headings, on_error, show_progress: as for
            :class:`~aisearch_ingest.langchain.DocumentAnalyzeLoader`; ``loader.failures`` lists ``(source, error)``.
        images: ``"image-analyze"`` or ``"qwen-ocr"``.
        api_key, endpoint, workspace: the AI Search connection, for document-analyze and image-analyze (else the
            ``AISEARCH_*`` environment variables).
        document_options: arguments of :class:`~aisearch_ingest.DocumentAnalyzer` (``max_pages``,
            ``image_storage``, ``qps``, ``cache``...); an entry wins over the shared connection.
        image_options: arguments of :class:`~aisearch_ingest.ImageAnalyzer` (``service_id``...) or, with
            ``images="qwen-ocr"``, of ``QwenOCR`` -- its own connection too (``api_key``, ``region`` or
            ``base_url``; else ``DASHSCOPE_*``) and ``task``, ``model``...
        document_client, image_client: ready clients instead (then without that service's options).

    Unknown keywords and options raise ``TypeError`` naming the nearest valid one (a client argument given as a
    keyword names the options dict it belongs in). A client is built when its first file comes.

    Example:
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu, AISearchLoader("notebooks/data", endpoint=emu.url, api_key="test") as loader:
        ...     docs = loader.load()
        >>> sorted({d.metadata["service"] for d in docs}), loader.failures
        (['document-analyze', 'image-analyze'], [])
    """

    def __init__(
        self,
        file_path: SourceLike | Iterable[SourceLike],
        *,
        glob: str = "**/*",
        recursive: bool = True,
        images: ImageService = "image-analyze",
        mode: Mode = "document",
        chunk_max_tokens: int = 512,
        include_headings: bool = False,
        on_error: OnError = "raise",
        show_progress: bool = False,
        api_key: Any = None,
        endpoint: str | None = None,
        workspace: str | None = None,
        document_options: Mapping[str, Any] | None = None,
        image_options: Mapping[str, Any] | None = None,
        document_client: ParserEngine | None = None,
        image_client: ParserEngine | None = None,
        **unknown: Any,
    ) -> None:
        api_key = as_secret(api_key)  # first: no frame of ours keeps the raw key as a local
        self.file_path = file_path
        self.glob, self.recursive, self.show_progress = glob, recursive, show_progress
        settings = dict(locals())
        self._setup(settings, unknown, ("file_path", "glob", "recursive", "show_progress"))

    def _start(self) -> tuple[list[Group], list[Outcome], Batch]:
        items = expand(self.file_path, glob=self.glob, recursive=self.recursive)
        groups, done = self.clients.route(items)
        self.failures = []
        self.possibly_billed_twice = {}
        batch = Batch(
            None,
            on_error=self.on_error,
            failures=self.failures,
            billed_twice=self.possibly_billed_twice,
            total=len(items),
            show_progress=self.show_progress,
            desc=type(self).__name__,
        )
        return groups, done, batch

    def lazy_load(self) -> Iterator[Document]:
        """Yield documents as files finish, every service at once (blocking; safe inside Jupyter and a running
        event loop)."""
        groups, done, batch = self._start()
        for record in iter_groups(groups, batch, done=done):
            yield _document(record)

    async def alazy_load(self) -> AsyncIterator[Document]:
        """Yield documents as files finish, parsing them concurrently on the running event loop, every service at
        once."""
        groups, done, batch = self._start()
        async for record in aiter_groups(groups, batch, done=done):
            yield _document(record)


class AISearchParser(_Mixed, BaseBlobParser):
    """A blob parser for ``GenericLoader``: each blob through the service its type calls for (see
    :class:`AISearchLoader`, whose keywords it takes but the inputs'). Failures accumulate in ``parser.failures``.

    Example:
        >>> from langchain_community.document_loaders.generic import GenericLoader
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu:
        ...     parser = AISearchParser(endpoint=emu.url, api_key="test")
        ...     docs = GenericLoader.from_filesystem("notebooks/data", glob="*.p*", parser=parser).load()
        >>> sorted((d.metadata["file_name"], d.metadata["service"]) for d in docs)  # doctest: +NORMALIZE_WHITESPACE
        [('annual_report.pdf', 'document-analyze'), ('formula.png', 'image-analyze'),
         ('invoice.png', 'image-analyze'), ('scan_page.png', 'image-analyze')]
    """

    def __init__(
        self,
        *,
        images: ImageService = "image-analyze",
        mode: Mode = "document",
        chunk_max_tokens: int = 512,
        include_headings: bool = False,
        on_error: OnError = "raise",
        api_key: Any = None,
        endpoint: str | None = None,
        workspace: str | None = None,
        document_options: Mapping[str, Any] | None = None,
        image_options: Mapping[str, Any] | None = None,
        document_client: ParserEngine | None = None,
        image_client: ParserEngine | None = None,
        **unknown: Any,
    ) -> None:
        api_key = as_secret(api_key)
        settings = dict(locals())
        self._setup(settings, unknown, ())

    def lazy_parse(self, blob: Blob) -> Iterator[Document]:
        """Parse one blob; its metadata (``source``...) is kept. Failures accumulate in ``failures``."""
        origin = str(blob.source or blob.path or "blob")
        made = source_from_bytes(blob.as_bytes(), origin=origin, file_name=name_of(blob.path))
        groups, done = ([], [made]) if isinstance(made, Outcome) else self.clients.route([made])
        batch = Batch(
            None,
            on_error=self.on_error,
            failures=self.failures,
            billed_twice=self.possibly_billed_twice,
            total=1,
            extra=blob.metadata,
        )
        for record in iter_groups(groups, batch, done=done):
            yield _document(record)

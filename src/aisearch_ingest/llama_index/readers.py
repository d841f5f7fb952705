"""LlamaIndex readers for document-analyze, image-analyze and Qwen-OCR.

Thin adapters: settings are plain pydantic fields (the API key is a ``SecretStr`` kept out of ``to_dict()``), the
service client is built on first use, and every call goes through its engine; results become
:class:`~llama_index.core.schema.Document` objects with flat metadata and deterministic ids.

A reader's client fields are its client's constructor arguments, with the same names and defaults, but for
:data:`NOT_FIELDS`; the client is built from every one of them (the list comes from the client's signature, and
``tests/test_adapter_arguments.py`` fails when a client argument has no field). An unknown field is a ``TypeError``
naming the nearest valid one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal, TypeVar

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SecretStr
from llama_index.core.readers.base import BasePydanticReader
from llama_index.core.schema import Document

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
from ..documents import Mode, Record, embed_hidden_keys, llm_hidden_keys, stable_key
from ..engine import ParserEngine
from ..errors import InvalidInputError
from ..pages import DEFAULT_DPI
from ..protocol.qwen_models import DEFAULT_MODEL
from ..qwen import QwenOCR
from ..results import Outcome

__all__ = ["NOT_FIELDS", "DocumentAnalyzeReader", "ImageAnalyzeReader", "QwenOCRReader"]

#: Client arguments that are no reader field: objects and callables, which a serialisable (``to_dict``, pickle)
#: reader cannot hold. Pass a ready ``client=`` to use them.
NOT_FIELDS = frozenset(
    {
        "poll",  # a PollPolicy (its deadline is the ``timeout`` field)
        "rate_limiter",  # a shared RateLimiter object
        "http_client_factory",  # a callable building an httpx client
        "sleep",  # an awaitable callable, for tests
        "on_delta",  # a streaming callback
    }
)


class _Document(Document):
    """A Document whose ``hash`` leaves out the per-call ``request_id``/``task_id``: re-running an
    ``IngestionPipeline`` with a docstore over unchanged files then skips them instead of re-embedding them."""

    def __init__(self, **data: Any) -> None:  # Document's own (it maps ``text``), for type checkers
        super().__init__(**data)

    @property
    def hash(self) -> str:
        return stable_key(self.id_, self.text, self.metadata)


def _is_local(fs: Any) -> bool:
    """Whether an fsspec filesystem is the local one (``SimpleDirectoryReader`` passes it by default)."""
    protocol = getattr(fs, "protocol", ())
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol or ())
    return "file" in protocols or "local" in protocols


def gather(file: Any, fs: Any) -> tuple[list[Any], list[Outcome]]:
    """The inputs of one ``load_data`` call, directories expanded; paths of a non-local fsspec ``fs`` are read
    through it (as ``SimpleDirectoryReader`` passes them), and one that cannot be read is a failed outcome."""
    files = [file] if isinstance(file, (str, bytes, os.PathLike)) else list(file)
    items: list[Any] = []
    done: list[Outcome] = []
    for f in files:
        if fs is None or _is_local(fs) or not isinstance(f, (str, PurePath)) or "://" in str(f):
            items.append(f)  # read as a local path: checked to be a regular file first (a FIFO never blocks)
            continue
        try:  # a non-local filesystem: read through it
            with fs.open(str(f), "rb") as handle:
                data = handle.read()
        except OSError as exc:
            done.append(Outcome(str(f), error=InvalidInputError(f"{f}: cannot read ({exc})", source=str(f))))
            continue
        made = source_from_bytes(data, origin=str(f), file_name=name_of(f))
        if isinstance(made, Outcome):
            done.append(made)
        else:
            items.append(made)
    return expand(items), done


def _document(record: Record) -> Document:
    return _Document(
        id_=record.id,
        text=record.text,
        metadata=dict(record.metadata),
        excluded_embed_metadata_keys=embed_hidden_keys(record.metadata),
        excluded_llm_metadata_keys=llm_hidden_keys(record.metadata),
    )


_R = TypeVar("_R", bound="_ServiceReader")


class AsyncDocuments:
    """What :meth:`alazy_load_data` returns: ``async for`` yields documents as files finish, ``await`` gives the list
    (LlamaIndex's ``alazy_load_data`` contract, a coroutine of documents). Either way the files are parsed
    concurrently on the running event loop, which never blocks on them.

    Example:
        >>> import asyncio
        >>> from aisearch_ingest.emulator import Emulator
        >>> async def main(url):
        ...     async with DocumentAnalyzeReader(endpoint=url, api_key="test") as reader:
        ...         async for doc in reader.alazy_load_data("notebooks/data/meeting_notes.md"):
        ...             print(doc.metadata["file_name"])
        ...         return len(await reader.alazy_load_data("notebooks/data/meeting_notes.md"))
        >>> with Emulator() as emu:
        ...     asyncio.run(main(emu.url))
        meeting_notes.md
        1
    """

    def __init__(self, documents: AsyncIterator[Document]) -> None:
        self._documents = documents

    def __aiter__(self) -> AsyncIterator[Document]:
        return self._documents

    def __await__(self) -> Generator[Any, None, list[Document]]:
        return self._collect().__await__()

    async def _collect(self) -> list[Document]:
        return [doc async for doc in self._documents]


class _ServiceReader(BasePydanticReader):
    """Fields and loading shared by the three readers; subclasses name their client class and add its fields."""

    model_config = ConfigDict(extra="forbid")  # pydantic ignores unknown fields by default: a typo went unnoticed
    _client_class: ClassVar[type[ParserEngine]]

    is_remote: bool = True
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False, description="else the env var")
    mode: Mode = "document"
    chunk_max_tokens: int = 512
    include_headings: bool = False
    html_to_markdown: bool = Field(
        default=True, description="HTML results become markdown in every mode; False keeps the service's HTML"
    )
    on_error: OnError = "raise"
    show_progress: bool = False
    qps: float | None = None
    max_concurrency: int | None = None
    max_retries: int = 5
    cache: bool | str | Path | None = Field(
        default=None,
        description="True (the default file, $AISEARCH_INGEST_CACHE or the user cache directory) or the path of a "
        "ResultCache SQLite file: parsed files cost no second call",
    )
    _client: ParserEngine | None = PrivateAttr(default=None)
    _failures: list[Failure] = PrivateAttr(default_factory=list)
    _billed_twice: dict[str, int] = PrivateAttr(default_factory=dict)

    def __init__(self, *, client: ParserEngine | None = None, **data: Any) -> None:
        if isinstance(data.get("api_key"), str):  # first: no frame of ours keeps the raw key as a local
            data["api_key"] = SecretStr(data["api_key"])
        owner = type(self).__name__
        objects = sorted(NOT_FIELDS.intersection(data))
        if objects:
            hint = "a reader holds no objects: build the client with it and pass client="
            raise TypeError(f"{owner} has no field {objects[0]!r} ({hint})")
        check_names(owner, data, [*type(self).model_fields, "client"], what="field")
        given = [name for name in data if name in self.client_fields()]
        if client is not None and given:
            raise TypeError(f"{owner} got client= and client fields ({', '.join(given)}), which it would ignore")
        super().__init__(**data)
        check_choices(self.mode, self.on_error)
        self._client = client

    @classmethod
    def client_fields(cls) -> list[str]:
        """The fields the client is built from: its constructor's arguments that are fields here, in its order."""
        return [name for name in client_parameters(cls._client_class) if name in cls.model_fields]

    @property
    def client(self) -> ParserEngine:
        """The service client (built from the fields on first use)."""
        if self._client is None:
            self._client = self._client_class(**{name: getattr(self, name) for name in self.client_fields()})
        return self._client

    @property
    def failures(self) -> list[Failure]:
        """``(source, error)`` for every file that failed, over the reader's life (``SimpleDirectoryReader`` hands
        files over one call at a time, so nothing is reset between calls; ``failures.clear()`` to start afresh)."""
        return self._failures

    @property
    def possibly_billed_twice(self) -> dict[str, int]:
        """source -> billed calls whose answer was lost and that were sent again (the service may have billed them
        twice), over the reader's life like :attr:`failures`."""
        return self._billed_twice

    def close(self) -> None:
        """Close the client's private event loop and connections (a client given as ``client=`` too: it opens them
        again if used afterwards)."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the connections the async methods opened on the running event loop."""
        if self._client is not None:
            await self._client.aclose()

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self: _R) -> _R:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __getstate__(self) -> dict[Any, Any]:
        # Neither the client (its loop thread, its connections) nor the key is pickled: an unpickled copy
        # (SimpleDirectoryReader workers) builds its own client from the fields and the environment.
        client, self._client = self._client, None
        try:
            state = super().__getstate__()
        finally:
            self._client = client
        state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k != "api_key"}
        return state

    def _start(self, file: Any, extra_info: dict[str, Any] | None, fs: Any) -> tuple[list[Any], list[Outcome], Batch]:
        items, done = gather(file, fs)
        shaper = Shaper(
            self.client,
            mode=self.mode,
            max_tokens=self.chunk_max_tokens,
            include_headings=self.include_headings,
            html_to_markdown=self.html_to_markdown,
        )
        batch = Batch(
            shaper,
            on_error=self.on_error,
            failures=self._failures,
            billed_twice=self._billed_twice,
            total=len(items) + len(done),
            show_progress=self.show_progress,
            desc=self.class_name(),
            extra=extra_info,
        )
        return items, done, batch

    def lazy_load_data(self, file: Any, extra_info: dict[str, Any] | None = None, fs: Any = None) -> Iterator[Document]:
        """Yield documents as files finish (blocking; safe inside Jupyter and a running event loop).

        Args:
            file: a path, URL, bytes or directory, or a list of them.
            extra_info: metadata added to every document (the keys of DESIGN's table keep their meaning).
            fs: an fsspec filesystem to read paths through, as ``SimpleDirectoryReader`` passes it.
        """
        items, done, batch = self._start(file, extra_info, fs)
        for record in iter_records(self.client, items, batch, done=done):
            yield _document(record)

    def load_data(self, file: Any, extra_info: dict[str, Any] | None = None, fs: Any = None) -> list[Document]:
        """All documents of :meth:`lazy_load_data` (the ``SimpleDirectoryReader(file_extractor=...)`` contract)."""
        return list(self.lazy_load_data(file, extra_info=extra_info, fs=fs))

    async def aload_data(self, file: Any, extra_info: dict[str, Any] | None = None, fs: Any = None) -> list[Document]:
        """Native async :meth:`load_data`: the files are parsed concurrently on the running event loop."""
        return [doc async for doc in self._alazy(file, extra_info, fs)]

    # LlamaIndex's own runs lazy_load_data's generator on the event loop's thread, blocking it for every file.
    def alazy_load_data(  # type: ignore[override]  # an awaitable as the base's coroutine is, and async-iterable
        self, file: Any, extra_info: dict[str, Any] | None = None, fs: Any = None
    ) -> AsyncDocuments:
        """Native async :meth:`lazy_load_data`: ``async for doc in reader.alazy_load_data(...)`` yields documents as
        files finish, parsed concurrently on the running event loop (which stays free); ``await`` it for the list.
        """
        return AsyncDocuments(self._alazy(file, extra_info, fs))

    async def _alazy(self, file: Any, extra_info: dict[str, Any] | None, fs: Any) -> AsyncIterator[Document]:
        items, done, batch = self._start(file, extra_info, fs)
        async for record in aiter_records(self.client, items, batch, done=done):
            yield _document(record)


class _AISearchReader(_ServiceReader):
    endpoint: str | None = Field(default=None, description="else AISEARCH_ENDPOINT")
    workspace: str | None = Field(default=None, description="else AISEARCH_WORKSPACE, else 'default'")
    service_id: str | None = None
    route: Literal["auto", "async", "sync"] = "auto"
    timeout: float = Field(default=900.0, description="overall deadline per task, seconds")
    request_timeout: float = Field(default=60.0, description="timeout of one HTTP exchange, seconds")


class DocumentAnalyzeReader(_AISearchReader):
    """Read PDFs, Office files, HTML, Markdown and text through AI Search document-analyze.

    Fields: the arguments of :class:`~aisearch_ingest.DocumentAnalyzer`, with its defaults: ``api_key``,
    ``endpoint``, ``workspace`` (else the ``AISEARCH_*`` environment variables), ``service_id``, ``route``,
    ``image_storage``, ``enable_semantic``, ``max_pages`` (a PDF with more pages is refused before sending),
    ``qps``, ``max_concurrency``, ``max_retries``, ``timeout``, ``request_timeout``, ``cache`` (``True`` for the
    default file, :func:`~aisearch_ingest.cache.default_cache_path`, or the path of a
    :class:`~aisearch_ingest.cache.ResultCache` file) -- all but :data:`NOT_FIELDS`; and ``mode`` (``"document"``,
    ``"page"``, ``"chunk"`` with ``chunk_max_tokens`` and ``include_headings``: the chunks and ids of
    ``mode="document"`` followed by ``StructuredNodeParser(max_tokens=chunk_max_tokens, include_headings=...)``),
    ``html_to_markdown`` (``True``: the service's HTML for DOC/DOCX/PPT/PPTX/HTML/TXT becomes markdown in every mode,
    ``content_type="markdown"``; ``False`` keeps the HTML),
    ``on_error`` (``"raise"``: every file is attempted, then the first error raises; ``"skip"``: a WARNING per
    file), ``show_progress``. ``reader.failures`` collects ``(source, error)`` of every failed file. Pass ``client=`` to
    reuse a :class:`~aisearch_ingest.DocumentAnalyzer` (then without client fields). An unknown field raises
    ``TypeError``.

    Example:
        >>> from llama_index.core import SimpleDirectoryReader
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu:
        ...     reader = DocumentAnalyzeReader(endpoint=emu.url, api_key="test", mode="page")
        ...     docs = SimpleDirectoryReader("notebooks/data", required_exts=[".pdf"],
        ...                                  file_extractor={".pdf": reader}).load_data()
        >>> docs[0].metadata["page"], docs[0].metadata["file_name"]
        (1, 'annual_report.pdf')
    """

    _client_class = DocumentAnalyzer

    image_storage: Literal["base64", "url"] | None = None
    enable_semantic: bool | None = None
    max_pages: int | None = Field(default=None, description="page budget per file: a longer PDF is refused unsent")

    @classmethod
    def class_name(cls) -> str:
        return "AISearchDocumentAnalyzeReader"


class ImageAnalyzeReader(_AISearchReader):
    """Read images (description + OCR, or OCR only) through AI Search image-analyze.

    Fields as :class:`DocumentAnalyzeReader` (no ``image_storage``/``enable_semantic``/``max_pages``: the arguments
    of :class:`~aisearch_ingest.ImageAnalyzer`); ``service_id="ops-image-analyze-ocr-001"`` for OCR only.

    Example:
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu:
        ...     docs = ImageAnalyzeReader(endpoint=emu.url, api_key="test").load_data("notebooks/data/scan_page.png")
        >>> docs[0].metadata["service"]
        'image-analyze'
    """

    _client_class = ImageAnalyzer

    @classmethod
    def class_name(cls) -> str:
        return "AISearchImageAnalyzeReader"


class QwenOCRReader(_ServiceReader):
    """Read images and PDFs (page by page) through Model Studio Qwen-OCR.

    Fields: the arguments of :class:`~aisearch_ingest.qwen.QwenOCR`, with its defaults: ``api_key`` (else
    ``DASHSCOPE_API_KEY``), ``region`` or ``base_url``, ``model``, ``api``, ``task``, ``result_schema``, ``prompt``,
    ``min_pixels``, ``max_pixels``, ``enable_rotate``, ``max_tokens`` (the model's output limit), ``temperature``,
    ``stream``, ``incremental_output``, ``pdf_dpi``, ``max_pages`` (a PDF or TIFF with more pages is refused before
    sending), ``qps``, ``max_concurrency``, ``max_retries``, ``request_timeout``, ``cache`` -- all but
    :data:`NOT_FIELDS`; and the common ``mode``, ``chunk_max_tokens``, ``include_headings``, ``on_error``,
    ``show_progress`` as in :class:`DocumentAnalyzeReader`.

    Example:
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu:
        ...     reader = QwenOCRReader(base_url=emu.url, api_key="test", task="text_recognition")
        ...     docs = reader.load_data("notebooks/data/scan_page.png")
        >>> docs[0].metadata["ocr_task"]
        'text_recognition'
    """

    _client_class = QwenOCR

    region: Literal["intl", "us", "cn"] | None = Field(
        default=None, description="'intl' (Singapore), 'us' (Virginia) or 'cn' (Beijing)"
    )
    base_url: str | None = Field(default=None, description="else DASHSCOPE_BASE_URL, else the region's")
    model: str = DEFAULT_MODEL
    api: Literal["native", "openai"] = "native"
    task: str | None = "text_recognition"
    result_schema: dict[str, Any] | None = None
    prompt: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    enable_rotate: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    incremental_output: bool = True
    pdf_dpi: int = DEFAULT_DPI
    max_pages: int | None = Field(default=None, description="page budget per file: a longer PDF is refused unsent")
    request_timeout: float = Field(default=120.0, description="timeout of one HTTP exchange, seconds")

    @classmethod
    def class_name(cls) -> str:
        return "AISearchQwenOCRReader"

"""One LlamaIndex reader for a mixed folder, and :func:`file_extractor`: a ready ``SimpleDirectoryReader`` mapping.

Each file goes to the service its sniffed type calls for (:mod:`aisearch_ingest.routing`): documents to
document-analyze, images to image-analyze or Qwen-OCR; its documents are those of the single-service reader (same
ids, same metadata).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SecretStr
from llama_index.core.readers.base import BasePydanticReader, BaseReader
from llama_index.core.schema import Document

from .._adapters import Batch, Failure, Group, OnError, aiter_groups, check_choices, iter_groups
from .._mixed import MixedClients, check_keywords
from ..documents import Mode
from ..engine import ParserEngine
from ..results import Outcome
from ..routing import ImageService, extensions
from .readers import NOT_FIELDS, _document, gather

__all__ = ["AISearchReader", "file_extractor"]

_OPTION_FIELDS = ("document_options", "image_options")


class AISearchReader(BasePydanticReader):
    """Read a mixed folder: each file through the service its type (sniffed from its bytes) calls for.

    Documents go to AI Search document-analyze, images to image-analyze (``images="image-analyze"``, the default) or
    Qwen-OCR (``images="qwen-ocr"``); each file gives the documents the single-service reader gives it. A file no
    service takes is a failure naming it (``reader.failures``), never dropped.

    Fields: ``api_key`` (a ``SecretStr``, never in ``to_dict()`` or a pickle), ``endpoint``, ``workspace`` (the AI
    Search connection, for document-analyze and image-analyze; else the ``AISEARCH_*`` environment variables),
    ``images``, ``document_options`` (arguments of :class:`~aisearch_ingest.DocumentAnalyzer`), ``image_options``
    (of :class:`~aisearch_ingest.ImageAnalyzer`, or of ``QwenOCR`` with ``images="qwen-ocr"``: its ``api_key``,
    ``region`` or ``base_url``, ``task``...), and ``mode``, ``chunk_max_tokens``, ``include_headings``, ``on_error``,
    ``show_progress`` as in :class:`~aisearch_ingest.llama_index.DocumentAnalyzeReader`. An ``api_key`` in an
    options dict is kept out of the field (and so of ``to_dict()`` and pickles). Option dicts hold values only
    (the client arguments of ``NOT_FIELDS`` are objects): pass ready clients as ``document_client=`` /
    ``image_client=`` instead. Unknown fields and option names raise ``TypeError`` naming the nearest valid one.

    Example:
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu, AISearchReader(endpoint=emu.url, api_key="test") as reader:
        ...     docs = reader.load_data("notebooks/data")
        >>> sorted({d.metadata["service"] for d in docs}), reader.failures
        (['document-analyze', 'image-analyze'], [])
    """

    model_config = ConfigDict(extra="forbid")

    is_remote: bool = True
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False, description="else AISEARCH_API_KEY")
    endpoint: str | None = Field(default=None, description="else AISEARCH_ENDPOINT")
    workspace: str | None = Field(default=None, description="else AISEARCH_WORKSPACE, else 'default'")
    images: ImageService = "image-analyze"
    mode: Mode = "document"
    chunk_max_tokens: int = 512
    include_headings: bool = False
    on_error: OnError = "raise"
    show_progress: bool = False
    document_options: dict[str, Any] = Field(default_factory=dict, description="DocumentAnalyzer arguments")
    image_options: dict[str, Any] = Field(default_factory=dict, description="ImageAnalyzer or QwenOCR arguments")
    _clients: MixedClients | None = PrivateAttr(default=None)
    _keys: dict[str, SecretStr] = PrivateAttr(default_factory=dict)
    _failures: list[Failure] = PrivateAttr(default_factory=list)
    _billed_twice: dict[str, int] = PrivateAttr(default_factory=dict)

    def __init__(
        self, *, document_client: ParserEngine | None = None, image_client: ParserEngine | None = None, **data: Any
    ) -> None:
        if isinstance(data.get("api_key"), str):  # first: no frame of ours keeps the raw key as a local
            data["api_key"] = SecretStr(data["api_key"])
        keys: dict[str, SecretStr] = {}
        for name in _OPTION_FIELDS:
            options = dict(data.get(name) or {})
            key = options.pop("api_key", None)
            if key is not None:
                keys[name] = key if isinstance(key, SecretStr) else SecretStr(str(key))
            objects = sorted(NOT_FIELDS.intersection(options))
            if objects:
                place = name.removesuffix("_options")
                raise TypeError(
                    f"{type(self).__name__}: {name} cannot hold {objects[0]!r} (a reader holds no objects: build the "
                    f"client with it and pass {place}_client=)"
                )
            if name in data:
                data[name] = options
        check_keywords(type(self).__name__, data, [*type(self).model_fields], what="field")
        super().__init__(**data)
        check_choices(self.mode, self.on_error)
        self._keys = keys
        self._clients = self._make_clients(document_client, image_client)  # checks the options now

    def _make_clients(
        self, document_client: ParserEngine | None = None, image_client: ParserEngine | None = None
    ) -> MixedClients:
        options = {
            name: {**getattr(self, name), **({"api_key": self._keys[name]} if name in self._keys else {})}
            for name in _OPTION_FIELDS
        }
        return MixedClients(
            type(self).__name__,
            images=self.images,
            mode=self.mode,
            chunk_max_tokens=self.chunk_max_tokens,
            include_headings=self.include_headings,
            connection={"api_key": self.api_key, "endpoint": self.endpoint, "workspace": self.workspace},
            document_client=document_client,
            image_client=image_client,
            **options,
        )

    @classmethod
    def class_name(cls) -> str:
        return "AISearchMixedReader"

    @property
    def clients(self) -> MixedClients:
        """The services' clients (each built on first use)."""
        if self._clients is None:
            self._clients = self._make_clients()
        return self._clients

    @property
    def failures(self) -> list[Failure]:
        """``(source, error)`` for every file that failed, over the reader's life (``failures.clear()`` to start
        afresh)."""
        return self._failures

    @property
    def possibly_billed_twice(self) -> dict[str, int]:
        """source -> billed calls whose answer was lost and that were sent again, over the reader's life."""
        return self._billed_twice

    def close(self) -> None:
        """Close the clients' private event loops and connections."""
        if self._clients is not None:
            self._clients.close()

    def __enter__(self) -> AISearchReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[Any, Any]:
        # Neither the clients nor any key is pickled: an unpickled copy builds its clients from the fields and the
        # environment.
        clients, keys = self._clients, self._keys
        self._clients, self._keys = None, {}
        try:
            state = super().__getstate__()
        finally:
            self._clients, self._keys = clients, keys
        state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k != "api_key"}
        return state

    def _start(self, file: Any, extra_info: dict[str, Any] | None, fs: Any) -> tuple[list[Group], list[Outcome], Batch]:
        items, done = gather(file, fs)
        groups, unrouted = self.clients.route(items)
        batch = Batch(
            None,
            on_error=self.on_error,
            failures=self._failures,
            billed_twice=self._billed_twice,
            total=len(items) + len(done),
            show_progress=self.show_progress,
            desc=self.class_name(),
            extra=extra_info,
        )
        return groups, [*done, *unrouted], batch

    def lazy_load_data(self, file: Any, extra_info: dict[str, Any] | None = None, fs: Any = None) -> Iterator[Document]:
        """Yield documents as files finish, every service at once (blocking; safe inside Jupyter).

        Args:
            file: a path, URL, bytes or directory, or a list of them.
            extra_info: metadata added to every document.
            fs: an fsspec filesystem to read paths through, as ``SimpleDirectoryReader`` passes it.
        """
        groups, done, batch = self._start(file, extra_info, fs)
        for record in iter_groups(groups, batch, done=done):
            yield _document(record)

    def load_data(self, file: Any, extra_info: dict[str, Any] | None = None, fs: Any = None) -> list[Document]:
        """All documents of :meth:`lazy_load_data` (the ``SimpleDirectoryReader(file_extractor=...)`` contract)."""
        return list(self.lazy_load_data(file, extra_info=extra_info, fs=fs))

    async def aload_data(self, file: Any, extra_info: dict[str, Any] | None = None, fs: Any = None) -> list[Document]:
        """Native async :meth:`load_data`: the files are parsed concurrently on the running event loop."""
        return [doc async for doc in self._alazy(file, extra_info, fs)]

    async def _alazy(self, file: Any, extra_info: dict[str, Any] | None, fs: Any) -> AsyncIterator[Document]:
        groups, done, batch = self._start(file, extra_info, fs)
        async for record in aiter_groups(groups, batch, done=done):
            yield _document(record)


def file_extractor(reader: AISearchReader | None = None, /, **fields: Any) -> dict[str, BaseReader]:
    """A ready ``SimpleDirectoryReader(file_extractor=...)`` mapping: every suffix a service takes (documents and
    images of either image service) to one :class:`AISearchReader` -- ``reader``, or one built from ``fields``.
    Each file is still routed by its bytes.

    Example:
        >>> from llama_index.core import SimpleDirectoryReader
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu:
        ...     mapping = file_extractor(endpoint=emu.url, api_key="test", on_error="skip")
        ...     docs = SimpleDirectoryReader("notebooks/data", file_extractor=mapping).load_data()
        >>> sorted({d.metadata["service"] for d in docs}), mapping[".pdf"] is mapping[".png"]
        (['document-analyze', 'image-analyze'], True)
    """
    if reader is not None and fields:
        raise TypeError(f"file_extractor got a reader and fields ({', '.join(fields)}): set them on the reader")
    if reader is None:
        reader = AISearchReader(**fields)
    return dict.fromkeys(extensions(), reader)

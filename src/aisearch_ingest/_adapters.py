"""What the LangChain and LlamaIndex adapters share: option checks, the client's constructor arguments, input
expansion, outcome → records with the ``on_error`` policy, the failures list and the progress bar. Imports neither
framework.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import queue
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import PurePath
from types import TracebackType
from typing import Any, Literal, NamedTuple

import anyio

from .documents import MODES, Chunker, Mode, Record, records_from_result
from .engine import ParserEngine
from .errors import AISearchIngestError
from .markup import markdown_result
from .results import Outcome
from .sources import Source, SourceLike, expand_inputs, load_source, redact_url

__all__ = [
    "Batch",
    "Failure",
    "Group",
    "OnError",
    "Shaper",
    "aiter_groups",
    "aiter_records",
    "check_choices",
    "check_names",
    "client_parameters",
    "expand",
    "iter_groups",
    "iter_records",
    "name_of",
    "output_options",
    "source_from_bytes",
]

logger = logging.getLogger("aisearch_ingest")

OnError = Literal["raise", "skip"]
#: One failed input: the path or URL as given, and the error (which names it too).
Failure = tuple[str, AISearchIngestError]


def check_choices(mode: str, on_error: str) -> None:
    """Raise ``ValueError`` for an unknown ``mode`` or ``on_error``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")


def client_parameters(client_class: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``client_class(...)`` accepts, by name, in signature order.

    A constructor that passes ``**kwargs`` on to its base (``DocumentAnalyzer`` to the AI Search base) is followed up
    the MRO, so the names are complete. The adapters derive what they accept and pass on from this, so a new client
    argument reaches them with no list to update.

    Example:
        >>> from aisearch_ingest import DocumentAnalyzer
        >>> params = client_parameters(DocumentAnalyzer)
        >>> "image_storage" in params, "endpoint" in params, params["route"].default
        (True, True, 'auto')
    """
    params: dict[str, inspect.Parameter] = {}
    for klass in client_class.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        passes_on = False
        for param in list(inspect.signature(init).parameters.values())[1:]:  # [0] is self
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                passes_on = True
            elif param.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
                params.setdefault(param.name, param)
        if not passes_on:
            break
    return params


def check_names(owner: str, given: Iterable[str], valid: Collection[str], *, what: str = "keyword argument") -> None:
    """Raise ``TypeError`` for the first name of ``given`` not in ``valid``, suggesting the nearest valid one.

    Example:
        >>> check_names("QwenOCRReader", ["max_page"], ["max_pages", "mode"], what="field")
        Traceback (most recent call last):
        ...
        TypeError: QwenOCRReader got an unknown field 'max_page'; did you mean 'max_pages'?
    """
    for name in given:
        if name in valid:
            continue
        near = difflib.get_close_matches(name, list(valid), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"valid: {', '.join(sorted(valid))}"
        raise TypeError(f"{owner} got an unknown {what} {name!r}; {hint}")


def expand(inputs: SourceLike | Iterable[SourceLike], *, glob: str = "**/*", recursive: bool = True) -> list[Any]:
    """Inputs with directories expanded (sorted, hidden files skipped); paths, URLs, bytes and sources as given."""
    return list(expand_inputs(inputs, glob=glob, recursive=recursive))


def source_from_bytes(data: bytes, *, origin: str, file_name: str | None = None) -> Source | Outcome:
    """A :class:`Source` for bytes that came from ``origin`` (a blob, an fsspec file), or a failed outcome."""
    try:
        source = load_source(data, file_name=file_name)
    except AISearchIngestError as exc:
        exc.source = origin = redact_url(origin)  # a blob's source URL without its query, as Source.origin is
        return Outcome(origin, error=exc)
    return dataclasses.replace(source, origin=origin)


def output_options(client: ParserEngine) -> dict[str, Any]:
    """The client's settings that change the output (its one declaration, :meth:`ParserEngine.output_options`, which
    the cache key reads too): they go into the document ids. ``None`` values (not sent) are left out."""
    return {name: value for name, value in client.output_options().items() if value is not None}


class Shaper:
    """Turns results into records for one adapter configuration (mode, chunking, id options, HTML or markdown).

    With ``html_to_markdown`` (the default) an HTML result (document-analyze's answer for DOC/DOCX/PPT/PPTX/HTML/TXT,
    Qwen-OCR's ``table_parsing``) becomes markdown first (:func:`~aisearch_ingest.markup.markdown_result`), in every
    mode: documents and pages are readable text with ``content_type="markdown"``, and chunk mode chunks that
    markdown, so ``mode="chunk"`` and ``mode="document"`` + a splitter still agree. ``html_to_markdown=False`` keeps
    the service's HTML (chunked by the HTML chunker).

    In ``mode="chunk"`` the chunker is ``StructuredChunker(max_tokens=max_tokens, include_headings=...)`` with its
    other settings at their defaults -- the defaults of ``StructuredTextSplitter`` and ``StructuredNodeParser`` too,
    so the ids of the routes agree. Its settings enter the chunk ids through ``settings_key()``, not ``options``
    (which stay the service's output options: the parent's ``mode="document"`` id is made from them alone).
    """

    def __init__(
        self,
        client: ParserEngine,
        *,
        mode: Mode,
        max_tokens: int = 512,
        include_headings: bool = False,
        html_to_markdown: bool = True,
    ) -> None:
        self.mode = mode
        self.html_to_markdown = html_to_markdown
        self.options = output_options(client)
        self.chunker: Chunker | None = None
        if mode == "chunk":
            from .chunking import StructuredChunker

            self.chunker = StructuredChunker(max_tokens=max_tokens, include_headings=include_headings)

    def records(self, outcome: Outcome, extra: Mapping[str, Any] | None = None) -> list[Record]:
        assert outcome.result is not None
        result = markdown_result(outcome.result) if self.html_to_markdown else outcome.result
        return records_from_result(
            result, mode=self.mode, options=self.options, chunker=self.chunker, extra_metadata=extra
        )


class Batch:
    """One load call: applies ``on_error``, fills ``failures``, drives the progress bar.

    Use it as a context manager around the outcome loop, then call :meth:`raise_first`.
    """

    def __init__(
        self,
        shaper: Shaper | None,
        *,
        on_error: OnError,
        failures: list[Failure],
        total: int,
        billed_twice: dict[str, int] | None = None,
        show_progress: bool = False,
        desc: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.shaper = shaper
        self.on_error = on_error
        self.failures = failures
        self.billed_twice = billed_twice if billed_twice is not None else {}
        self.extra = extra
        self.first_error: AISearchIngestError | None = None
        self._bar: Any = None
        if show_progress:
            from tqdm.auto import tqdm  # renders as a widget in notebooks, as text in terminals

            self._bar = tqdm(total=total, desc=desc or None, unit="file")

    def records(self, outcome: Outcome, shaper: Shaper | None = None) -> list[Record]:
        """The records of a finished source (through ``shaper``, else the batch's); ``[]`` for a failure (recorded,
        and logged when skipping)."""
        if self._bar is not None:
            self._bar.update(1)
        if outcome.possibly_billed_twice:
            self.billed_twice[outcome.source] = self.billed_twice.get(outcome.source, 0) + outcome.possibly_billed_twice
        if outcome.error is not None:
            self.failures.append((outcome.source, outcome.error))
            if self.first_error is None:
                self.first_error = outcome.error
            if self.on_error == "skip":
                message = str(outcome.error)  # errors name their file; the key is never in a message
                if outcome.source not in message:
                    message = f"{outcome.source}: {message}"
                logger.warning("skipped %s", message)
            return []
        shaper = shaper or self.shaper
        assert shaper is not None, "a batch of several services shapes each outcome with its group's shaper"
        return shaper.records(outcome, self.extra)

    def raise_first(self) -> None:
        """With ``on_error="raise"``, raise the first failure (after every source of the batch has settled)."""
        if self.on_error == "raise" and self.first_error is not None:
            raise self.first_error

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()


def iter_records(
    client: ParserEngine, items: list[Any], batch: Batch, *, done: Iterable[Outcome] = ()
) -> Iterator[Record]:
    """Records as sources finish, through the blocking engine (works inside a running loop); then ``raise_first``.

    ``done`` are outcomes already known (inputs that failed before reaching the engine).
    """
    with batch:
        for outcome in done:
            yield from batch.records(outcome)
        if items:
            outcomes = client.parse_many(items, stop_on_error=batch.on_error == "raise")
            try:
                for outcome in outcomes:
                    yield from batch.records(outcome)
            finally:  # stopping early cancels the work still in flight
                close = getattr(outcomes, "close", None)
                if close is not None:
                    close()
    batch.raise_first()


async def aiter_records(
    client: ParserEngine, items: list[Any], batch: Batch, *, done: Iterable[Outcome] = ()
) -> AsyncIterator[Record]:
    """The native-async :func:`iter_records`: sources run concurrently on the caller's event loop."""
    with batch:
        for outcome in done:
            for record in batch.records(outcome):
                yield record
        if items:
            outcomes = client.aparse_many(items, stop_on_error=batch.on_error == "raise")
            try:
                async for outcome in outcomes:
                    for record in batch.records(outcome):
                        yield record
            finally:  # stopping early cancels the work still in flight
                aclose = getattr(outcomes, "aclose", None)
                if aclose is not None:
                    await aclose()
    batch.raise_first()


class Group(NamedTuple):
    """One service's share of a mixed batch: its client, its inputs and the shaper of its records."""

    client: ParserEngine
    items: list[Any]
    shaper: Shaper


def iter_groups(groups: Sequence[Group], batch: Batch, *, done: Iterable[Outcome] = ()) -> Iterator[Record]:
    """:func:`iter_records` over several clients at once: every group runs on its client's own loop, all at the same
    time, and records come as sources finish, whichever the service. ``batch`` (one for the call: ``on_error``,
    ``failures``, the progress bar) shapes each outcome with its group's shaper; then ``raise_first``.

    With ``on_error="raise"`` each group stops starting sources after its own first failure, as a single-service
    loader does; closing the iterator early cancels the work in flight in every group.
    """
    with batch:
        for outcome in done:
            yield from batch.records(outcome)
        live = [group for group in groups if group.items]
        out: queue.Queue[tuple[int, Outcome | BaseException | None]] = queue.Queue()
        futures = []
        try:
            for index, group in enumerate(live):

                def put(item: Outcome | BaseException | None, index: int = index) -> None:
                    out.put((index, item))

                futures.append(group.client.submit_many(group.items, put, stop_on_error=batch.on_error == "raise"))
            running = len(live)
            while running:
                index, item = out.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield from batch.records(item, live[index].shaper)
        finally:  # stopping early cancels the work still in flight
            for future in futures:
                if not future.done():
                    future.cancel()
    batch.raise_first()


async def aiter_groups(groups: Sequence[Group], batch: Batch, *, done: Iterable[Outcome] = ()) -> AsyncIterator[Record]:
    """The native-async :func:`iter_groups`: every group's sources run concurrently on the caller's event loop."""
    with batch:
        for outcome in done:
            for record in batch.records(outcome):
                yield record
        live = [group for group in groups if group.items]
        if live:
            send, receive = anyio.create_memory_object_stream[tuple[int, Outcome]](max_buffer_size=1)

            async def pump(index: int, group: Group, send: Any) -> None:
                outcomes = group.client.aparse_many(group.items, stop_on_error=batch.on_error == "raise")
                async with send:
                    try:
                        async for outcome in outcomes:
                            await send.send((index, outcome))
                    finally:
                        await outcomes.aclose()  # type: ignore[attr-defined]

            async with anyio.create_task_group() as tg:
                try:
                    for index, group in enumerate(live):
                        tg.start_soon(pump, index, group, send.clone())
                    send.close()
                    async with receive:
                        async for index, outcome in receive:
                            for record in batch.records(outcome, live[index].shaper):
                                yield record
                finally:  # stopping early (or an error) cancels the work still in flight
                    tg.cancel_scope.cancel()
    batch.raise_first()


def name_of(path: str | PurePath | None) -> str | None:
    """The last part of a path or URL, for naming bytes."""
    if path is None:
        return None
    text = str(path).rstrip("/")
    return text.rsplit("/", 1)[-1] or None

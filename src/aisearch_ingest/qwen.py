"""Qwen-OCR (Model Studio ``qwen-vl-ocr*``): every built-in task and custom prompts, the native and the
OpenAI-compatible API, streaming, and PDFs / multi-page TIFFs sent as page images.

Wire details and the choices made where the documentation leaves room are in :mod:`aisearch_ingest.protocol.dashscope`;
page rendering and the image limits in :mod:`aisearch_ingest.pages`; the token estimate in
:mod:`aisearch_ingest.estimate`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, Literal

import anyio
import anyio.to_thread

from .cache import CacheLike
from .config import DashScopeSettings, SecretStr, as_secret, resolve_dashscope
from .engine import Engine, ParserEngine, SourceContext
from .errors import AISearchIngestError, APIConnectionError, ConfigurationError, StreamError
from .limits import check_image, check_max_pages_arg, check_page_budget
from .pages import DEFAULT_DPI, PageDocument, is_multipage, open_pages
from .protocol import dashscope as proto
from .protocol import qwen_models
from .results import Page, ParseResult
from .sources import Source, SourceLike, load_source
from .transport import CallCounter, HttpClientFactory

__all__ = ["QwenOCR"]

logger = logging.getLogger("aisearch_ingest.qwen")

Api = Literal["native", "openai"]


class _OrderedRelay:
    """Passes the deltas of concurrently streamed pages to one callback in page order.

    The page at the head of the order streams live; the others are buffered until every page before them has
    finished. Every page after the first is preceded by ``"\\n\\n"`` (the content separator), so the deltas joined
    are the pages' raw texts joined by blank lines.
    """

    def __init__(self, emit: Callable[[str], None], numbers: list[int]) -> None:
        self._emit = emit
        self._order = numbers
        self._pos = 0
        self._buffers: dict[int, list[str]] = {}
        self._done: set[int] = set()
        self._opened: set[int] = set()

    def _open(self, number: int) -> None:
        if number != self._order[0]:
            self._emit("\n\n")
        self._opened.add(number)

    def _out(self, number: int, delta: str) -> None:
        if not delta:
            return
        if number not in self._opened:
            self._open(number)
        self._emit(delta)

    def sink(self, number: int) -> Callable[[str], None]:
        def push(delta: str) -> None:
            if self._pos < len(self._order) and self._order[self._pos] == number:
                self._out(number, delta)
            else:
                self._buffers.setdefault(number, []).append(delta)

        return push

    def finish(self, number: int) -> None:
        self._done.add(number)
        while self._pos < len(self._order):
            current = self._order[self._pos]
            for delta in self._buffers.pop(current, ()):
                self._out(current, delta)
            if current not in self._done:
                break
            if current not in self._opened:  # a page without text still gets its separator
                self._open(current)
            self._pos += 1


class QwenOCR(ParserEngine):
    """Extract text, tables, formulas, key-values or located text lines from images and PDFs with Qwen-OCR.

    One image is one call. PDFs and multi-page TIFFs are cut into page images (PDFs rendered at ``pdf_dpi``,
    capped so a page stays within ``max_pixels``), sent concurrently under the rate limit and merged in page order:
    ``pages`` has one :class:`~aisearch_ingest.results.Page` per page image, ``content`` is their contents joined by
    a blank line (JSON stays one document: the merged ``kv_result``, or an array of the pages' values), ``usage`` is
    summed over the pages and ``request_id`` is the last page's.

    Structured outputs are in ``result.extra`` and, per page, in ``Page.extra``:

    * ``words_info`` (``advanced_recognition``): a list of ``{"text", "location", "rotate_rect"}`` boxes in the page
      image's pixels; for a multi-page file each box also has ``"page"``.
    * ``kv_result`` (``key_information_extraction``): a dict. For a multi-page file the pages' objects are merged:
      per key the first non-empty value in page order wins and lists are concatenated
      (:func:`~aisearch_ingest.protocol.dashscope.merge_kv_results`); each page keeps its own in ``Page.extra``.
    * ``processed_text``: the service's post-processed text (repeated fragments removed) where it sends one
      (``qwen3.5-ocr``, native API); for a multi-page file the pages' joined by a blank line. ``content`` stays the
      model's own text.

    Every limit of the vendor page is checked before anything is sent (:class:`InvalidInputError` naming the file and
    the limit). A stream that breaks off is a :class:`StreamError` carrying the partial text, never a short result.

    Args:
        api_key: else ``DASHSCOPE_API_KEY``.
        region: ``intl`` (Singapore, the default), ``us`` (Virginia) or ``cn`` (Beijing); keys are region-specific.
            When the region decides the host, a model its table does not list is refused
            (:mod:`~aisearch_ingest.protocol.qwen_models`).
        base_url: scheme and host (``https://dashscope-intl.aliyuncs.com``), else ``DASHSCOPE_BASE_URL``, else the
            region's host. The API paths are appended. Another host than a region's (the emulator, a proxy) skips the
            region check.
        model: ``qwen-vl-ocr`` (default; listed in every region), ``qwen3.5-ocr``, ``qwen-vl-ocr-latest`` or a dated
            snapshot. A model the table does not know is sent as given, with the current models' (32-px) defaults.
        api: ``native`` (DashScope ``multimodal-generation``, all features) or ``openai`` (the OpenAI-compatible
            chat completions: the task's documented prompt is sent as text and the answer parsed the same way;
            ``enable_rotate`` is not available).
        task: ``text_recognition`` (default), ``multi_lan``, ``advanced_recognition``,
            ``key_information_extraction``, ``table_parsing``, ``document_parsing``, ``formula_recognition``, or
            None for a custom ``prompt``.
        result_schema: the fields for ``key_information_extraction`` (at most 3 nested levels, checked here);
            None for full-field extraction.
        prompt: a custom prompt (``ocr_task="custom"``). Giving one with the default task switches to custom; with
            another task it goes with the task on ``qwen3.5-ocr`` and later (native only; the task's result comes
            from ``ocr_result``), and is an error on older models (built-in tasks use their fixed prompts).
        min_pixels: images below are scaled up by the service (the model's default and minimum: 3,072 for the
            32-px models, 3,136 for the 28-px snapshots).
        max_pixels: images above are scaled down by the service (default 8,388,608, at most 30,720,000 for the 32-px
            models; default 6,422,528, at most 23,520,000 for the 28-px snapshots).
        enable_rotate: automatic rotation correction (native only).
        max_tokens: cap on output tokens, at most the model's limit (32,768 for ``qwen3.5-ocr``, 8,192 for
            ``qwen-vl-ocr`` / ``-latest`` / ``2025-11-20``, 4,096 for the older snapshots).
        temperature: sampling temperature.
        stream: stream answers (SSE) and assemble them; partial text goes to ``on_delta``.
        incremental_output: native streaming: ask for deltas (True) or cumulative text (False); either way the
            same result comes out.
        on_delta: called with each piece of text as it streams (``stream=True``). For a multi-page file the pages
            stream concurrently but the deltas arrive in page order, every page after the first preceded by
            ``"\\n\\n"``. Deltas are the model's raw text (fences included), so for unfenced tasks they join to
            ``content``.
        pdf_dpi: PDF rendering resolution.
        max_pages: the page budget per file: a PDF or multi-page TIFF with more pages (each one a billed call) is
            refused before anything is sent (:class:`InvalidInputError` with ``limit="max_pages"``, ``value`` its
            pages, ``maximum`` this). Default None: no budget (the vendor documents no page limit for page images).
        qps: the ceiling in calls per second (default 10). The pace is set by one adaptive budget per endpoint and
            key, shared by every client of it in this process: it slows down on 429 and climbs back to the ceiling.
            ``0`` disables rate limiting.
        max_concurrency: files in flight in ``parse_many`` (default: as many as keep the rate budget busy, learned
            as files finish), and page calls in flight per file (default 10).
        max_retries: retries per call on 429, 5xx and connection errors (before a stream starts).
        request_timeout: timeout of one HTTP exchange (for a stream: between two reads).
        http_client_factory: builds the ``httpx.AsyncClient`` (proxies, TLS...).
        sleep: awaited for every wait (backoff, rate limit); injectable in tests.
        cache: a :class:`~aisearch_ingest.cache.ResultCache`, its path, or True (the default file,
            :func:`~aisearch_ingest.cache.default_cache_path`): a file already parsed with the same
            model, endpoint and options comes from it with no call (``result.cached``; a streaming client then
            calls no ``on_delta``). :meth:`astream` never uses it.

    Raises:
        ConfigurationError: no API key, unknown region, a model not listed in the chosen region, malformed base URL,
            a ``cache`` path that cannot be opened.
        ValueError: an unknown task or API, a schema nested too deep, conflicting options, ``max_tokens`` or pixel
            bounds outside the model's limits.

    Example:
        >>> from aisearch_ingest.qwen import QwenOCR
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu, QwenOCR(api_key="test", base_url=emu.url, task="table_parsing") as ocr:
        ...     result = ocr.parse("notebooks/data/invoice.png")  # doctest: +SKIP
        >>> result.content_type  # doctest: +SKIP
        'html'
    """

    service = "qwen-ocr"

    def __init__(
        self,
        *,
        api_key: str | SecretStr | None = None,
        region: Literal["intl", "us", "cn"] | None = None,
        base_url: str | None = None,
        model: str = qwen_models.DEFAULT_MODEL,
        api: Api = "native",
        task: str | None = "text_recognition",
        result_schema: Mapping[str, Any] | None = None,
        prompt: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        enable_rotate: bool | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stream: bool = False,
        incremental_output: bool = True,
        on_delta: Callable[[str], None] | None = None,
        pdf_dpi: int = DEFAULT_DPI,
        max_pages: int | None = None,
        qps: float | None = None,
        max_concurrency: int | None = None,
        max_retries: int = 5,
        request_timeout: float = 120.0,
        http_client_factory: HttpClientFactory | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        cache: CacheLike = None,
    ) -> None:
        api_key = as_secret(api_key)  # first: no frame of ours keeps the raw key as a local if anything raises
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1 (or None: as many as keep the rate budget busy)")
        if api not in ("native", "openai"):
            raise ValueError(f"api must be 'native' or 'openai', got {api!r}")
        if prompt is not None and task == "text_recognition":
            task = None  # a prompt with the default task means a custom prompt
        if enable_rotate is not None and api == "openai":
            raise ValueError(
                "enable_rotate is only available with api='native' (the compatible API has no such option)"
            )
        if prompt is not None and task is not None and api == "openai":
            raise ValueError("a built-in task with a custom prompt needs api='native' (the compatible API has no task)")
        known = qwen_models.lookup(model)
        if known is None:
            logger.debug("model %r is not in the Qwen-OCR model table; sent with the current models' rules", model)
        self.spec = spec = known or qwen_models.fallback_model(model)
        for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if max_pixels is not None and max_pixels > spec.max_pixels_limit:
            raise ValueError(
                f"max_pixels can be at most {spec.max_pixels_limit:,} for {model} (30,000 tokens of "
                f"{spec.patch}x{spec.patch} pixels, the documented upper limit)"
            )
        if min_pixels is not None and known is not None and min_pixels < spec.min_pixels:
            raise ValueError(f"min_pixels must be at least {spec.min_pixels:,} for {model} (its documented minimum)")
        if min_pixels is not None and min_pixels > (max_pixels or spec.default_max_pixels):
            raise ValueError("min_pixels must not exceed max_pixels")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if max_tokens is not None and known is not None and max_tokens > spec.max_output:
            raise ValueError(
                f"max_tokens={max_tokens:,} is above the limit of {model}: at most {spec.max_output:,} output tokens"
            )
        if pdf_dpi <= 0:
            raise ValueError("pdf_dpi must be positive")
        self.max_pages = check_max_pages_arg(max_pages)
        self.request = proto.OcrRequest(
            model=model,
            task=task,
            result_schema=result_schema,
            prompt=prompt,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            enable_rotate=enable_rotate,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        self.settings: DashScopeSettings = resolve_dashscope(api_key, region=region, base_url=base_url)
        if known is not None and self.settings.region is not None and self.settings.region not in known.regions:
            code = self.settings.region
            raise ConfigurationError(
                f"model {model!r} is not offered in region {code!r} ({qwen_models.REGION_NAMES[code]}); it is listed "
                f"for {qwen_models.regions_listing(known)}. Pick one of those regions (and its API key), or a model "
                f"of this region such as {qwen_models.DEFAULT_MODEL!r}."
            )
        self.model = model
        self.api: Api = api
        self.stream = stream
        self.incremental_output = incremental_output
        self.on_delta = on_delta
        self.pdf_dpi = pdf_dpi
        self._engine = Engine(  # last: a client whose settings are refused opens no cache file
            service=self.service,
            base_url=self.settings.base_url,
            api_key=self.settings.api_key,
            qps=qps,
            max_retries=max_retries,
            request_timeout=request_timeout,
            http_client_factory=http_client_factory,
            sleep=sleep,
            cache=cache,
            max_concurrency=max_concurrency,
            identity=self._identity,
            headers={"x-dashscope-workspace": self.settings.workspace} if self.settings.workspace else None,
        )

    def __repr__(self) -> str:
        if "stream" not in self.__dict__:  # a constructor that raised (a traceback's frame locals show it)
            return "QwenOCR(<not configured>)"
        return (
            f"QwenOCR(base_url={self.settings.base_url!r}, model={self.model!r}, api={self.api!r}, "
            f"task={self.request.ocr_task!r}, stream={self.stream!r})"
        )

    @property
    def ocr_task(self) -> str:
        """The built-in task, or ``custom``."""
        return self.request.ocr_task

    @property
    def _page_max_pixels(self) -> int:
        return self.request.max_pixels or self.spec.default_max_pixels

    # -- engine hooks ----------------------------------------------------------------------------------------------

    def output_options(self) -> dict[str, Any]:
        """The options that change the answer (``None``: not sent): part of every cache key and document id.
        ``stream`` and ``incremental_output`` are not: they change how the answer travels, not the answer."""
        request = self.request
        return {
            "api": self.api,
            "task": request.task,
            "result_schema": dict(request.result_schema) if request.result_schema else None,
            "prompt": request.prompt,
            "min_pixels": request.min_pixels,
            "max_pixels": request.max_pixels,
            "enable_rotate": request.enable_rotate,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "pdf_dpi": self.pdf_dpi,
        }

    def _scope(self) -> dict[str, Any]:
        return {"model": self.model, "workspace": self.settings.workspace}

    def _prepare(self, obj: SourceLike, file_name: str | None = None) -> Source:
        source = load_source(obj, file_name=file_name)
        if is_multipage(source):
            check_page_budget(source, self.max_pages)  # counted from the page tree, before any page is laid out
            with self._open_pages(source) as doc:
                doc.check()
        else:
            check_image(source, max_pixels=self.request.max_pixels, pixel_upper=self.spec.max_pixels_limit)
        return source

    def _open_pages(self, source: Source) -> PageDocument:
        return open_pages(
            source, dpi=self.pdf_dpi, max_pixels=self._page_max_pixels, pixel_upper=self.spec.max_pixels_limit
        )

    async def _parse(self, ctx: SourceContext) -> ParseResult:
        source, counter = ctx.source, ctx.counter
        multipage = is_multipage(source)
        if multipage:
            answers = await self._parse_pages(source, counter)
        else:
            answer = await self._call_image(source, counter, self.on_delta if self.stream else None)
            answers = [(1, answer)]
        return self._result(source, answers, multipage=multipage)

    # -- calls ---------------------------------------------------------------------------------------------------

    def _image_ref(self, image: Source) -> str:
        return image.url if image.url is not None else image.data_uri()

    def _body(self, image: Source, *, stream: bool) -> dict[str, Any]:
        return proto.build_body(
            self.api, self.request, self._image_ref(image), stream=stream, incremental_output=self.incremental_output
        )

    async def _call_image(
        self, image: Source, counter: CallCounter, on_delta: Callable[[str], None] | None
    ) -> proto.OcrAnswer:
        """One call for one image: a JSON exchange, or a stream assembled (deltas to ``on_delta``)."""
        if not self.stream:
            where = f"{image.origin} page {image.page}" if image.page else image.origin
            logger.debug("qwen-ocr %s call for %s (%s)", self.api, where, self.request.ocr_task)
            response = await self._transport.request(
                "POST",
                proto.request_path(self.api),
                json_body=self._body(image, stream=False),
                headers=proto.request_headers(self.api, stream=False),
                source=image.origin,
                counter=counter,
                billed=True,
            )
            return proto.parse_response(self.api, response.body, request_id=response.request_id)
        answer: proto.OcrAnswer | None = None
        async with aclosing(self._stream_call(image, counter)) as items:
            async for item in items:
                if isinstance(item, str):
                    if on_delta is not None:
                        on_delta(item)
                else:
                    answer = item
        assert answer is not None
        return answer

    async def _stream_call(self, image: Source, counter: CallCounter) -> AsyncGenerator[str | proto.OcrAnswer, None]:
        """Stream one image: yields text deltas, then the assembled :class:`OcrAnswer` last."""
        path = proto.request_path(self.api)
        what = f"POST {path}"
        where = f"{image.origin} page {image.page}" if image.page else image.origin
        logger.debug("qwen-ocr %s stream for %s (%s)", self.api, where, self.request.ocr_task)
        async with self._transport.stream(
            "POST",
            path,
            json_body=self._body(image, stream=True),
            headers=proto.request_headers(self.api, stream=True),
            source=image.origin,
            counter=counter,
            billed=True,
        ) as response:
            header_rid = response.headers.get("x-request-id") or response.headers.get("x-dashscope-request-id")
            if "event-stream" not in response.content_type:
                # A server (or proxy) that ignored the SSE switch: a plain JSON answer is still a whole answer.
                answer = proto.parse_response(self.api, await response.json(), request_id=header_rid)
                if answer.text:
                    yield answer.text
                yield answer
                return
            assembler = proto.StreamAssembler(self.api, incremental=self.incremental_output)
            assembler.request_id = header_rid
            decoder = proto.SSEDecoder()
            try:
                async for line in response.lines():
                    event = decoder.feed(line)
                    if event is None:
                        continue
                    delta = assembler.feed(event)
                    if delta:
                        yield delta
            except APIConnectionError as exc:
                raise StreamError(
                    f"{what}: the stream broke off after {len(assembler.text)} characters ({exc.message})",
                    request_id=assembler.request_id,
                    source=image.origin,
                    partial_text=assembler.text,
                ) from exc
            answer = assembler.result()
        if answer.finish_reason == "length":
            logger.warning("%s: the answer was cut at max_tokens (finish_reason 'length')", where)
        yield answer

    async def _parse_pages(self, source: Source, counter: CallCounter) -> list[tuple[int, proto.OcrAnswer]]:
        """Render pages one at a time in a worker thread and send them concurrently; answers in page order."""
        doc: PageDocument = await anyio.to_thread.run_sync(lambda: self._open_pages(source))
        try:
            numbers = [layout.number for layout in doc.layouts]
            relay = _OrderedRelay(self.on_delta, numbers) if (self.stream and self.on_delta) else None
            answers: dict[int, proto.OcrAnswer] = {}
            errors: list[BaseException] = []
            slots = anyio.Semaphore(self.max_concurrency or 10)

            async with anyio.create_task_group() as tg:

                async def run(page: Source) -> None:
                    number = page.page or 0
                    try:
                        answers[number] = await self._call_image(
                            page, counter, relay.sink(number) if relay is not None else None
                        )
                        if relay is not None:
                            relay.finish(number)
                    except Exception as exc:
                        errors.append(exc)
                        tg.cancel_scope.cancel()
                    finally:
                        slots.release()

                for number in numbers:
                    await slots.acquire()
                    if errors:
                        slots.release()
                        break
                    try:
                        page = await anyio.to_thread.run_sync(doc.render, number)
                    except Exception as exc:
                        slots.release()
                        errors.append(exc)
                        tg.cancel_scope.cancel()
                        break
                    tg.start_soon(run, page)
            if errors:
                raise errors[0]
        finally:
            await anyio.to_thread.run_sync(doc.close)
        return [(number, answers[number]) for number in numbers]

    async def astream(self, source: SourceLike, *, file_name: str | None = None) -> AsyncIterator[str]:
        """Stream the text of an image as it is generated (the model's raw text, fences included).

        Uses streaming whatever ``stream=`` says. A multi-page file is streamed page after page, pages separated by
        ``"\\n\\n"``. Use :meth:`aparse` with ``stream=True`` and ``on_delta`` to get the assembled result as well.

        Raises:
            InvalidInputError: rejected before sending.
            StreamError: the stream broke off or carried an error after text had arrived.
            APIError: the call failed.

        Example:
            >>> async def show(ocr: QwenOCR) -> None:
            ...     async for delta in ocr.astream("notebooks/data/scan_page.png"):
            ...         print(delta, end="", flush=True)
        """
        prepared = self._prepare(source, file_name)
        try:
            async with aclosing(self._astream_source(prepared)) as deltas:
                async for delta in deltas:
                    yield delta
        except AISearchIngestError as exc:
            if exc.source is None:
                exc.source = prepared.origin
            raise

    async def _astream_source(self, prepared: Source) -> AsyncGenerator[str, None]:
        counter = CallCounter()
        if not is_multipage(prepared):
            async with aclosing(self._stream_call(prepared, counter)) as items:
                async for item in items:
                    if isinstance(item, str):
                        yield item
            return
        doc = await anyio.to_thread.run_sync(lambda: self._open_pages(prepared))
        try:
            for index, layout in enumerate(doc.layouts):
                page = await anyio.to_thread.run_sync(doc.render, layout.number)
                if index:
                    yield "\n\n"
                async with aclosing(self._stream_call(page, counter)) as items:
                    async for item in items:
                        if isinstance(item, str) and item:
                            yield item
        finally:
            await anyio.to_thread.run_sync(doc.close)

    # -- results -------------------------------------------------------------------------------------------------

    def _result(self, source: Source, answers: list[tuple[int, proto.OcrAnswer]], *, multipage: bool) -> ParseResult:
        pages: list[Page] = []
        words: list[dict[str, Any]] = []
        kvs: list[Mapping[str, Any]] = []
        kinds: list[str] = []
        processed: list[str] = []
        for number, answer in answers:
            if answer.processed_text is not None:
                processed.append(answer.processed_text)
            interpreted = proto.page_content(self.request, answer)
            extra = dict(interpreted.extra)
            if answer.request_id:
                extra["request_id"] = answer.request_id
            if answer.usage:
                extra["usage"] = dict(answer.usage)
            pages.append(Page(number, interpreted.content, extra))
            kinds.append(interpreted.content_type)
            for word in interpreted.extra.get("words_info", ()):
                words.append({**word, "page": number} if multipage else dict(word))
            if "kv_result" in interpreted.extra:
                kvs.append(interpreted.extra["kv_result"])
        result_extra: dict[str, Any] = {}
        if self.request.task == "advanced_recognition":
            result_extra["words_info"] = words
        kv_result: dict[str, Any] | None = None
        if self.request.task == "key_information_extraction":
            kv_result = dict(kvs[0]) if len(kvs) == 1 else proto.merge_kv_results(kvs)
            result_extra["kv_result"] = kv_result
        if self.request.result_schema:
            result_extra["result_schema"] = dict(self.request.result_schema)
        if processed and len(processed) == len(answers):
            # the service's de-duplicated text (qwen3.5-ocr, native), pages joined like the content
            result_extra["processed_text"] = "\n\n".join(processed)
        result_extra["api"] = self.api
        content_type = kinds[0] if kinds and all(kind == kinds[0] for kind in kinds) else self.request.content_type
        content, content_type = proto.join_pages([page.content for page in pages], content_type, kv_result=kv_result)
        return ParseResult(
            source=source.origin,
            file_name=source.file_name,
            file_type=source.file_type,
            service=self.service,
            service_id=self.model,
            content=content,
            content_type=content_type,
            page_num=len(pages),
            pages=pages,
            usage=proto.sum_usage(answer.usage for _, answer in answers),
            request_id=_last_request_id(answers),
            source_sha256=source.sha256,
            ocr_task=self.request.ocr_task,
            extra=result_extra,
        )


def _last_request_id(answers: list[tuple[int, proto.OcrAnswer]]) -> str | None:
    for _, answer in reversed(answers):
        if answer.request_id:
            return answer.request_id
    return None

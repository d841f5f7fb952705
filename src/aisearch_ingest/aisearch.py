"""AI Search Open Platform clients: :class:`DocumentAnalyzer` (``ops-document-analyze-001`` / ``-002``) and
:class:`ImageAnalyzer` (``ops-image-analyze-vlm-001`` / ``ops-image-analyze-ocr-001``).

Both speak the async-task flow (create → task-status) and the ``/sync`` call. ``route="auto"`` picks the route that
spends the fewest calls where it is safe: one ``/sync`` call per image; create + polls for documents, whose parsing
can outlast an HTTP exchange.

With ``cache=``, a task's id is recorded as soon as the create call answers: a later run over the same input resumes
polling that task instead of creating another; a task the service no longer knows (tasks expire) or that failed is
forgotten and the input submitted afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio

from .cache import CacheLike
from .config import AISearchSettings, SecretStr, as_secret, resolve_aisearch
from .engine import Engine, ParserEngine, SourceContext
from .errors import TaskFailedError
from .limits import (
    DOCUMENT_ANALYZE_002_TYPES,
    DOCUMENT_TYPES,
    IMAGE_TYPES,
    check_aisearch_body,
    check_max_pages_arg,
    check_page_budget,
    precheck_aisearch_size,
)
from .protocol import opensearch as proto
from .ratelimit import RateLimiter
from .results import ParseResult
from .sources import Source, SourceLike, load_source
from .tasks import PollPolicy, TaskRoute, run_task
from .tasks import await_task as _await_task
from .transport import CallCounter, HttpClientFactory

__all__ = ["DocumentAnalyzer", "ImageAnalyzer", "PollPolicy", "Route"]

logger = logging.getLogger("aisearch_ingest")

Route = Literal["auto", "async", "sync"]


class _AISearchService(ParserEngine):
    service: Literal["document-analyze", "image-analyze"]
    default_service_id: str
    allowed_types: frozenset[str]
    default_content_type: str
    auto_route: Literal["async", "sync"]

    def __init__(
        self,
        *,
        api_key: str | SecretStr | None = None,
        endpoint: str | None = None,
        workspace: str | None = None,
        service_id: str | None = None,
        route: Route = "auto",
        qps: float | None = None,
        max_concurrency: int | None = None,
        max_retries: int = 5,
        timeout: float = 900.0,
        request_timeout: float = 60.0,
        poll: PollPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        http_client_factory: HttpClientFactory | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        cache: CacheLike = None,
    ) -> None:
        api_key = as_secret(api_key)  # first: no frame of ours keeps the raw key as a local if anything raises
        if route not in ("auto", "async", "sync"):
            raise ValueError(f"route must be 'auto', 'async' or 'sync', got {route!r}")
        self.settings: AISearchSettings = resolve_aisearch(api_key, endpoint, workspace)
        self.service_id = service_id or self.default_service_id
        self.route: Route = route
        self.poll = poll or PollPolicy(timeout=timeout)
        self._engine = Engine(  # last: a client whose settings are refused opens no cache file
            service=self.service,
            base_url=self.settings.base_url,
            api_key=self.settings.api_key,
            qps=qps,
            rate_limiter=rate_limiter,
            max_retries=max_retries,
            request_timeout=request_timeout,
            http_client_factory=http_client_factory,
            sleep=sleep,
            cache=cache,
            max_concurrency=max_concurrency,
            identity=self._identity,
            # An async task mostly waits on the service: keep enough in flight that the rate budget, not the count
            # of files, is what binds from the start.
            initial_in_flight=64 if self.effective_route == "async" else None,
        )

    def __repr__(self) -> str:
        if "route" not in self.__dict__:  # a constructor that raised (a traceback's frame locals show it)
            return f"{type(self).__name__}(<not configured>)"
        return (
            f"{type(self).__name__}(endpoint={self.settings.base_url!r}, workspace={self.settings.workspace!r}, "
            f"service_id={self.service_id!r}, route={self.route!r})"
        )

    @property
    def effective_route(self) -> Literal["async", "sync"]:
        return self.auto_route if self.route == "auto" else self.route

    def output_options(self) -> dict[str, Any]:
        """The options that change the answer (``None``: not sent): part of every cache key and document id. The
        route is not one: ``/sync`` and create + poll give the same answer."""
        return {}

    def _scope(self) -> dict[str, Any]:
        return {"service_id": self.service_id, "workspace": self.settings.workspace}

    def _route(self) -> TaskRoute:
        ws = self.settings.workspace
        return TaskRoute(
            create_path=proto.create_path(self.service, ws, self.service_id),
            status_path=proto.status_path(self.service, ws, self.service_id),
            read=self._read_status,
        )

    def _read_status(self, body: Any) -> proto.StatusView:
        return proto.interpret(body, default_content_type=self.default_content_type)

    def _prepare(self, obj: SourceLike, file_name: str | None = None) -> Source:
        precheck_aisearch_size(obj, service=self.service)  # a huge file is refused without being read
        source = load_source(obj, file_name=file_name)
        check_aisearch_body(source, allowed=self.allowed_types, service=self.service)
        return source

    async def _parse(self, ctx: SourceContext) -> ParseResult:
        source = ctx.source
        body = proto.build_body(source, **self.output_options())
        if self.effective_route == "async":
            done = await run_task(ctx, self._route(), body, self.poll)
            return self._result(source, done.view, task_id=done.task_id, request_id=done.request_id)
        response = await ctx.transport.request(
            "POST",
            proto.sync_path(self.service, self.settings.workspace, self.service_id),
            json_body=body,
            source=source.origin,
            counter=ctx.counter,
            billed=True,
        )
        view = self._read_status(response.body)
        if view.pending:
            raise TaskFailedError(
                f"{source.origin}: the sync call answered PENDING without a task id; use route='async'",
                task_id=None,
                status=view.status,
                request_id=view.request_id,
                source=source.origin,
            )
        proto.raise_for_status(view, task_id=None, source=source.origin)
        return self._result(source, view, task_id=None, request_id=view.request_id or response.request_id)

    async def await_task(
        self, task_id: str, *, source: Source | None = None, counter: CallCounter | None = None
    ) -> ParseResult:
        """Poll an existing task until it ends (use it to resume after a :class:`TaskTimeoutError`)."""
        done = await _await_task(
            self._engine.transport,
            self._route(),
            task_id,
            self.poll,
            origin=source.origin if source is not None else task_id,
            size=source.size if source is not None else 0,
            counter=counter,
            sleep=self._engine.sleep,
        )
        return self._result(source, done.view, task_id=done.task_id, request_id=done.request_id)

    def _result(
        self, source: Source | None, view: proto.StatusView, *, task_id: str | None, request_id: str | None
    ) -> ParseResult:
        return ParseResult(
            source=source.origin if source else (task_id or ""),
            file_name=source.file_name if source else "",
            file_type=source.file_type if source else "",
            service=self.service,
            service_id=self.service_id,
            content=view.content,
            content_type=view.content_type,
            page_num=view.page_num,
            pages=view.pages,
            usage=view.usage,
            request_id=request_id,
            task_id=task_id,
            source_sha256=source.sha256 if source else "",
        )


class DocumentAnalyzer(_AISearchService):
    """Parse PDFs, Office files, HTML, Markdown and text with AI Search ``ops-document-analyze-001``, and images too
    with ``ops-document-analyze-002``.

    PDFs come back as markdown, other types as HTML; ``pages`` holds per-page content when the service returns
    ``data.pages``. ``-002`` ("PDFs and images; complex tables, formulas and charts", CHANGES-2026.md §D) also takes
    the image types of :data:`~aisearch_ingest.sources.IMAGE_TYPES`.

    Args:
        api_key: else ``AISEARCH_API_KEY``.
        endpoint: host or URL, else ``AISEARCH_ENDPOINT`` (a bare host means HTTPS).
        workspace: else ``AISEARCH_WORKSPACE``, else ``default``.
        service_id: ``ops-document-analyze-001`` (default) or ``ops-document-analyze-002`` (takes images too).
        route: ``auto``/``async`` (create + poll) or ``sync`` (one call; only for small files).
        image_storage: ``base64`` (default on the service) or ``url`` (links valid 3 days).
        enable_semantic: the service's semantic strategy (``strategy.enable_semantic``).
        max_pages: the page budget per file: a PDF (or, for ``-002``, a multi-page TIFF) with more pages is refused
            before it is sent (:class:`~aisearch_ingest.errors.InvalidInputError`, ``limit="max_pages"``, ``value``
            its pages, ``maximum`` this), counted from the PDF's page tree without rendering. Office and text files
            are not counted. Default None: no budget (the pages document no page limit, only the 8 MB body).
        qps: this service's ceiling in calls per second (default: the documented 10). The pace is set by one adaptive
            budget per endpoint and key, shared by every client and service of it in this process: it slows down
            on 429 and climbs back to the ceiling. ``0`` disables rate limiting.
        rate_limiter: a :class:`~aisearch_ingest.ratelimit.RateLimiter` to use as the endpoint budget instead
            (to share one budget by hand, e.g. across endpoints of one account).
        max_concurrency: files in flight at once in ``parse_many``; default None: as many as keep the rate budget
            busy (the budget's rate over the calls per file, times the service's time per file, learned as files
            finish; 10 at first, at most 64).
        max_retries: retries per HTTP call for 429/5xx/connection errors.
        timeout: overall deadline per task in seconds.
        request_timeout: timeout of one HTTP exchange.
        cache: a :class:`~aisearch_ingest.cache.ResultCache`, its path, or True (the default file,
            :func:`~aisearch_ingest.cache.default_cache_path`): results of the same bytes with the same
            options come from it with no call, and tasks in flight are recorded so a later run resumes them.

    Example:
        >>> from aisearch_ingest import DocumentAnalyzer
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu, DocumentAnalyzer(endpoint=emu.url, api_key="test") as analyzer:
        ...     result = analyzer.parse(b"# Title\\n\\nHello", file_name="hello.md")
        >>> result.content_type
        'html'
    """

    service = "document-analyze"
    default_service_id = "ops-document-analyze-001"
    allowed_types = DOCUMENT_TYPES
    default_content_type = "markdown"
    auto_route = "async"

    def __init__(
        self,
        *,
        image_storage: Literal["base64", "url"] | None = None,
        enable_semantic: bool | None = None,
        max_pages: int | None = None,
        **kwargs: Any,
    ) -> None:
        if "api_key" in kwargs:  # first: no frame of ours keeps the raw key as a local if anything raises
            kwargs["api_key"] = as_secret(kwargs["api_key"])
        if image_storage not in (None, "base64", "url"):
            raise ValueError("image_storage must be 'base64' or 'url'")
        self.max_pages = check_max_pages_arg(max_pages)
        super().__init__(**kwargs)
        if self.service_id == "ops-document-analyze-002":
            self.allowed_types = DOCUMENT_ANALYZE_002_TYPES
        self.image_storage = image_storage
        self.enable_semantic = enable_semantic

    def output_options(self) -> dict[str, Any]:
        return {"image_storage": self.image_storage, "enable_semantic": self.enable_semantic}

    def _prepare(self, obj: SourceLike, file_name: str | None = None) -> Source:
        source = super()._prepare(obj, file_name)
        check_page_budget(source, self.max_pages)  # max_pages is no option of the service: not in the cache key
        return source


class ImageAnalyzer(_AISearchService):
    """Describe and OCR images with AI Search ``ops-image-analyze-vlm-001`` (default) or ``-ocr-001``.

    ``route="auto"`` uses the ``/sync`` call: one HTTP call per image, the cheapest under the 10 QPS limit. The
    arguments are those of :class:`DocumentAnalyzer` but ``image_storage`` and ``enable_semantic``; with ``cache=``,
    ``route="async"`` tasks are recorded and resumed as there.

    Example:
        >>> from aisearch_ingest import ImageAnalyzer
        >>> from aisearch_ingest.emulator import Emulator
        >>> with Emulator() as emu, ImageAnalyzer(endpoint=emu.url, api_key="test",
        ...                                       service_id="ops-image-analyze-ocr-001") as analyzer:
        ...     result = analyzer.parse("notebooks/data/invoice.png")  # doctest: +SKIP
    """

    service = "image-analyze"
    default_service_id = "ops-image-analyze-vlm-001"
    allowed_types = IMAGE_TYPES
    default_content_type = "plain"
    auto_route = "sync"

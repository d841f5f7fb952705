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
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import httpx

from .cache import ResultCache, endpoint_host
from .config import AISearchSettings, SecretStr, as_secret, resolve_aisearch
from .engine import ParserEngine
from .errors import AISearchIngestError, APIStatusError, NotFoundError, TaskFailedError, TaskTimeoutError
from .pages import check_max_pages_arg, check_page_budget
from .protocol import opensearch as proto
from .ratelimit import RateLimiter, limiters_for
from .results import ParseResult
from .sources import (
    DOCUMENT_ANALYZE_002_TYPES,
    DOCUMENT_TYPES,
    IMAGE_TYPES,
    Source,
    SourceLike,
    check_aisearch_body,
    load_source,
    precheck_aisearch_size,
    redact_url_in,
)
from .transport import CallCounter, RetryPolicy, Transport

__all__ = ["DocumentAnalyzer", "ImageAnalyzer", "PollPolicy", "Route"]

logger = logging.getLogger("aisearch_ingest")

Route = Literal["auto", "async", "sync"]


class PollPolicy:
    """When to poll a pending task: where it is likely done, learned per client from the tasks that finished.

    A task's duration is modelled as ``a + b · size`` (bytes sent): each finished task tells that it ended between
    the last poll that answered PENDING and the one that found it done, and a least-squares fit with forgetting
    (weight 0.9 per task) follows those midpoints. The first poll goes just after the predicted end; a task still
    pending then is polled at short, growing intervals (from a tenth of the prediction, ``× factor``, up to
    ``max_interval``). Until anything is learned: ``min_interval``, then ``× factor``. Everything runs under one
    deadline.

    Args:
        min_interval: shortest wait between polls (seconds).
        max_interval: longest wait between polls.
        factor: growth of the interval after each pending answer.
        timeout: overall deadline per task, from its creation.
    """

    #: How far past the predicted end the first poll goes.
    SLACK = 1.08

    def __init__(
        self,
        *,
        min_interval: float = 0.2,
        max_interval: float = 5.0,
        factor: float = 1.6,
        timeout: float = 900.0,
    ) -> None:
        if min_interval <= 0 or max_interval < min_interval or factor < 1.0 or timeout <= 0:
            raise ValueError("need 0 < min_interval <= max_interval, factor >= 1 and timeout > 0")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.factor = factor
        self.timeout = timeout
        self._lock = threading.Lock()
        # Weighted sums of the fit: weight, x, y, x², xy (x in MB).
        self._w = self._sx = self._sy = self._sxx = self._sxy = 0.0
        self._pending_age = 0.0  # the oldest age at which a task was seen PENDING, before any finished

    def __repr__(self) -> str:
        return (
            f"PollPolicy(min_interval={self.min_interval}, max_interval={self.max_interval}, factor={self.factor}, "
            f"timeout={self.timeout})"
        )

    def predict(self, size: int = 0) -> float | None:
        """The expected duration of a task for ``size`` bytes, or None before any task finished."""
        with self._lock:
            w, sx, sy, sxx, sxy = self._w, self._sx, self._sy, self._sxx, self._sxy
        if w <= 0:
            return None
        mean_x, mean_y = sx / w, sy / w
        var = sxx / w - mean_x * mean_x
        if var <= 1e-12 * max(1.0, mean_x * mean_x):
            return max(0.0, mean_y)
        slope = max(0.0, (sxy / w - mean_x * mean_y) / var)  # bigger inputs never take less time
        return max(0.0, mean_y + slope * (size / 1e6 - mean_x))

    def first_delay(self, size: int = 0) -> float:
        """The wait before the first poll of a task of ``size`` bytes."""
        return self.delay(0.0, size, previous=0.0, late=0)

    def delay(self, elapsed: float, size: int, *, previous: float, late: int) -> float:
        """The wait before the next poll.

        Args:
            elapsed: seconds since the task was created.
            size: bytes sent.
            previous: the last wait (0 before the first poll).
            late: PENDING answers already received after the predicted end.
        """
        predicted = self.predict(size)
        if predicted is None:
            wait = self.min_interval if previous <= 0 else previous * self.factor
            with self._lock:
                floor = self._pending_age
            wait = max(wait, floor * self.SLACK - elapsed)  # another task was still pending at that age
        elif late == 0 and elapsed + self.min_interval <= predicted * self.SLACK:
            wait = predicted * self.SLACK - elapsed
        else:
            wait = 0.1 * predicted * self.factor**late
        return min(self.max_interval, max(self.min_interval, wait))

    def observe(self, duration: float, size: int = 0) -> None:
        """Learn that a task of ``size`` bytes took about ``duration`` seconds."""
        x, y = size / 1e6, max(0.0, duration)
        with self._lock:
            k = 0.9
            self._w = k * self._w + 1.0
            self._sx = k * self._sx + x
            self._sy = k * self._sy + y
            self._sxx = k * self._sxx + x * x
            self._sxy = k * self._sxy + x * y

    def observe_task(self, *, last_pending: float | None, done_by: float, size: int = 0) -> float:
        """Learn from a finished task what it told us: it ended after ``last_pending`` (seconds from its creation
        to the last PENDING answer; None: the first poll found it done) and by ``done_by``. Returns the duration
        estimate it learned."""
        # With only an upper bound, "a little before" drifts the prediction down slowly until a poll comes too early.
        estimate = 0.9 * done_by if last_pending is None else (last_pending + done_by) / 2.0
        self.observe(estimate, size)
        return estimate

    def observe_pending(self, age: float) -> None:
        """A task was still PENDING ``age`` seconds after its creation. Before any task has finished, the tasks in
        flight then skip polls they know would be too early."""
        with self._lock:
            self._pending_age = max(self._pending_age, age)


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
        http_client_factory: Callable[[], httpx.AsyncClient] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        cache: ResultCache | str | os.PathLike[str] | None = None,
    ) -> None:
        api_key = as_secret(api_key)  # first: no frame of ours keeps the raw key as a local if anything raises
        super().__init__(max_concurrency=max_concurrency)
        if route not in ("auto", "async", "sync"):
            raise ValueError(f"route must be 'auto', 'async' or 'sync', got {route!r}")
        self.settings: AISearchSettings = resolve_aisearch(api_key, endpoint, workspace)
        self.service_id = service_id or self.default_service_id
        self.route: Route = route
        self.poll = poll or PollPolicy(timeout=timeout)
        self.limiters = limiters_for(
            self.settings.base_url, self.settings.api_key, self.service, qps, budget=rate_limiter
        )
        #: The endpoint's adaptive budget, shared with every client of this endpoint and key in the process.
        self.rate_limiter: RateLimiter | None = self.limiters[-1] if self.limiters else None
        self._sleep = sleep
        self._transport = Transport(
            self.settings.base_url,
            self.settings.api_key,
            timeout=httpx.Timeout(request_timeout, connect=10.0),
            retry=RetryPolicy(max_retries=max_retries),
            limiter=self.limiters,
            sleep=sleep,
            http_client_factory=http_client_factory,
        )
        self._set_cache(cache)  # last: a client whose settings are refused opens no cache file

    def __repr__(self) -> str:
        if "route" not in self.__dict__:  # a constructor that raised (a traceback's frame locals show it)
            return f"{type(self).__name__}(<not configured>)"
        return (
            f"{type(self).__name__}(endpoint={self.settings.base_url!r}, workspace={self.settings.workspace!r}, "
            f"service_id={self.service_id!r}, route={self.route!r})"
        )

    def _initial_in_flight(self) -> int:
        # An async task mostly waits on the service: keep enough in flight that the rate budget, not the count of
        # files, is what binds from the start (each file in flight holds its bytes: at most 32 x 8 MB).
        return 64 if self.effective_route == "async" else super()._initial_in_flight()

    @property
    def effective_route(self) -> Literal["async", "sync"]:
        return self.auto_route if self.route == "auto" else self.route

    def _options(self) -> dict[str, Any]:
        return {}

    def _cache_identity(self) -> dict[str, Any]:
        # The route is left out: /sync and create + poll give the same answer.
        return {
            "service": self.service,
            "service_id": self.service_id,
            "endpoint": endpoint_host(self.settings.base_url),
            "workspace": self.settings.workspace,
            "options": self._options(),
        }

    def _prepare(self, obj: SourceLike, file_name: str | None = None) -> Source:
        precheck_aisearch_size(obj, service=self.service)  # a huge file is refused without being read
        source = load_source(obj, file_name=file_name)
        check_aisearch_body(source, allowed=self.allowed_types, service=self.service)
        return source

    async def _aclose_transports(self) -> None:
        await self._transport.aclose()

    async def _aparse_source(self, source: Source, counter: CallCounter) -> ParseResult:
        body = proto.build_body(source, **self._options())
        ws = self.settings.workspace
        if self.effective_route == "sync":
            response = await self._transport.request(
                "POST",
                proto.sync_path(self.service, ws, self.service_id),
                json_body=body,
                source=source.origin,
                counter=counter,
                billed=True,
            )
            view = proto.interpret(response.body, default_content_type=self.default_content_type)
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
        return await self._run_task(source, body, counter)

    async def _run_task(self, source: Source, body: dict[str, Any], counter: CallCounter) -> ParseResult:
        key = self._cache_key(source)
        recorded = await self._cache_task(key)
        if recorded is not None:
            resumed = await self._resume(recorded.task_id, key, source, counter)
            if resumed is not None:
                return resumed
        ws = self.settings.workspace
        created = await self._transport.request(
            "POST",
            proto.create_path(self.service, ws, self.service_id),
            json_body=body,
            source=source.origin,
            counter=counter,
            billed=True,
        )
        result = created.body.get("result") or {}
        task_id = result.get("task_id") if isinstance(result, dict) else None
        if not task_id:
            raise TaskFailedError(
                f"{source.origin}: the service accepted the task but returned no task_id",
                task_id=None,
                status=None,
                request_id=created.request_id,
                source=source.origin,
            )
        await self._cache_record_task(key, task_id)
        try:
            # On success the engine stores the result and forgets the task in one transaction.
            return await self.await_task(task_id, source=source, counter=counter)
        except AISearchIngestError as exc:
            # A failed or vanished task is forgotten (the next run submits afresh); a task still running
            # (our deadline passed, the connection broke...) stays recorded so the next run resumes it.
            if isinstance(exc, TaskFailedError) or _task_gone(exc):
                await self._cache_forget_task(key, task_id)
            raise

    async def _resume(self, task_id: str, key: str | None, source: Source, counter: CallCounter) -> ParseResult | None:
        """Poll a task recorded by an earlier run; None when it is gone or failed (forgotten: submit afresh)."""
        logger.info("%s: resuming task %s recorded in the result cache", source.origin, task_id)
        try:
            return await self.await_task(task_id, source=source, counter=counter)
        except TaskFailedError as exc:
            logger.warning(
                "%s: recorded task %s failed (%s); submitting afresh",
                source.origin,
                task_id,
                redact_url_in(exc.message, source.url),
            )
        except APIStatusError as exc:
            if not _task_gone(exc):
                raise
            logger.info(
                "%s: recorded task %s no longer exists on the service; submitting afresh", source.origin, task_id
            )
        await self._cache_forget_task(key, task_id)
        return None

    async def await_task(
        self, task_id: str, *, source: Source | None = None, counter: CallCounter | None = None
    ) -> ParseResult:
        """Poll an existing task until it ends (use it to resume after a :class:`TaskTimeoutError`)."""
        origin = source.origin if source is not None else task_id
        counter = counter if counter is not None else CallCounter()
        started = time.monotonic()
        deadline = started + self.poll.timeout
        size = source.size if source is not None else 0
        delay = self.poll.first_delay(size)
        last_pending: float | None = None
        late = 0  # PENDING answers at or after the predicted end
        path = proto.status_path(self.service, self.settings.workspace, self.service_id)
        while True:
            now = time.monotonic()
            if now + delay > deadline:
                # Sleep what is left, poll one last time, then give up.
                delay = max(0.0, deadline - now)
            await self._sleep(delay)
            # Polls finish work already paid for: they go ahead of new creates in the rate budget.
            asked, waited = time.monotonic(), counter.waited
            response = await self._transport.request(
                "GET", path, params={"task_id": task_id}, source=origin, counter=counter
            )
            # When the service saw this poll: after any wait for the rate budget (not when the answer came back,
            # or the learned duration would grow with the queue).
            seen = asked + (counter.waited - waited) - started
            view = proto.interpret(response.body, default_content_type=self.default_content_type)
            proto.raise_for_status(view, task_id=task_id, source=origin)
            if not view.pending:
                counter.task_time = self.poll.observe_task(last_pending=last_pending, done_by=seen, size=size)
                return self._result(source, view, task_id=task_id, request_id=view.request_id or response.request_id)
            last_pending = seen
            self.poll.observe_pending(seen)
            elapsed = time.monotonic() - started
            predicted = self.poll.predict(size)
            if predicted is not None and elapsed >= predicted * self.poll.SLACK - self.poll.min_interval:
                late += 1
            if time.monotonic() >= deadline:
                waited = time.monotonic() - started
                raise TaskTimeoutError(
                    f"{origin}: task {task_id} still PENDING after {waited:.1f}s (timeout {self.poll.timeout:g}s); "
                    "resume it with await_task(task_id) or raise the timeout",
                    task_id=task_id,
                    waited=waited,
                    source=origin,
                )
            delay = self.poll.delay(elapsed, size, previous=delay, late=late - 1 if late else 0)

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


def _task_gone(exc: BaseException) -> bool:
    """Whether the service said the task does not exist (unknown or expired task id)."""
    if isinstance(exc, NotFoundError):
        return True
    return isinstance(exc, APIStatusError) and "TaskNotExist" in (exc.code or "")


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
        cache: a :class:`~aisearch_ingest.cache.ResultCache` or its path: results of the same bytes with the same
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

    def _options(self) -> dict[str, Any]:
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

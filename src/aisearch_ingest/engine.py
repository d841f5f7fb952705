"""The engine: one per client, composed of the transport, the rate budget, the result cache and the in-flight
journal; it runs parse one / parse many for every service.

A client declares what is its own -- how to load and check an input (``_prepare``), what the options that change its
output are (:meth:`ParserEngine.output_options`, read by the cache key and the document ids alike), and how one source
becomes a result (``_parse``, given a :class:`SourceContext`) -- and the engine does the rest: bounded, adaptive
concurrency under the shared rate limit, outcomes yielded as they complete (one failure never cancels the others),
the cache look-up and store around each source, and a blocking API driven from a private event loop
(:mod:`aisearch_ingest._portal`), so it works inside a running event loop and inside Jupyter.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ._portal import Portal
from .cache import CacheLike, InFlightTask, ResultCache, cache_key, endpoint_host, open_cache
from .config import SecretStr
from .errors import AISearchIngestError, UnexpectedError
from .ratelimit import RateLimiter, limiters_for
from .results import Outcome, ParseResult
from .sources import Source, SourceLike, expand_inputs, redact_url, redact_url_in
from .transport import CallCounter, HttpClientFactory, RetryPolicy, Transport

__all__ = ["Engine", "Journal", "ParserEngine", "ProgressCallback", "SourceContext"]

logger = logging.getLogger("aisearch_ingest")

T = TypeVar("T")

#: Called after each source finishes: ``(done, total_or_None, outcome)``.
ProgressCallback = Callable[[int, "int | None", Outcome], None]

Sleep = Callable[[float], Awaitable[None]]


#: What a cache read or write may raise: SQLite and file errors, and a result JSON cannot represent.
_CACHE_ERRORS = (sqlite3.Error, OSError, ValueError, TypeError)


#: The most sources ``parse_many`` keeps in flight on its own (a user's ``max_concurrency`` may go higher).
MAX_CONCURRENCY = 64
_DEFAULT_IN_FLIGHT = 10


class _Flow:
    """What the engine learned about one client's sources: service time and calls per source (moving averages)."""

    def __init__(self) -> None:
        self.service_time: float | None = None
        self.calls: float | None = None
        self._lock = threading.Lock()

    def observe(self, service_time: float, calls: int) -> None:
        if calls <= 0:
            return  # a cache hit says nothing about the service
        with self._lock:
            t = max(0.0, service_time)
            self.service_time = t if self.service_time is None else 0.8 * self.service_time + 0.2 * t
            # Calls per source fall quickly once polling has learned the task times: follow them fast.
            self.calls = calls if self.calls is None else 0.5 * self.calls + 0.5 * calls

    def target(self, rate: float | None, initial: int = _DEFAULT_IN_FLIGHT) -> int:
        with self._lock:
            service_time, calls = self.service_time, self.calls
        if rate is None:
            return _DEFAULT_IN_FLIGHT
        if service_time is None or calls is None:
            return initial
        needed = 2.0 * rate / max(calls, 1.0) * service_time + 2
        return max(2, min(MAX_CONCURRENCY, math.ceil(needed)))


class _Gate:
    """A semaphore whose size can change while it is held (one event loop)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.active = 0
        self._waiters: collections.deque[anyio.Event] = collections.deque()

    async def acquire(self) -> None:
        while self.active >= self.size:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            except BaseException:
                self._wake()  # a cancelled waiter may have been woken: pass its turn on
                raise
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._wake()

    def resize(self, size: int) -> None:
        self.size = max(1, size)
        self._wake()

    def _wake(self) -> None:
        free = self.size - self.active
        while free > 0 and self._waiters:
            self._waiters.popleft().set()
            free -= 1


class _CacheGuard:
    """The engine's use of a :class:`ResultCache`: every operation in a worker thread (SQLite may wait on another
    process's lock; the event loop must not), and a cache that fails is logged once and then bypassed."""

    def __init__(self, cache: ResultCache | None, owned: bool) -> None:
        self.cache = cache
        self.owned = owned
        self._warned = False

    def warn(self, what: str, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "result cache %s failed (%s: %s); going on without it for this call "
                "(further cache errors of this client are logged at DEBUG level)",
                what,
                type(exc).__name__,
                exc,
            )
        else:
            logger.debug("result cache %s failed (%s: %s)", what, type(exc).__name__, exc)

    async def call(self, what: str, func: Callable[..., T], *args: Any) -> T | None:
        try:
            return await anyio.to_thread.run_sync(func, *args)
        except _CACHE_ERRORS as exc:
            self.warn(what, exc)
            return None

    def close(self) -> None:
        if self.owned and self.cache is not None:
            try:
                self.cache.close()
            except sqlite3.Error as exc:  # pragma: no cover - closing a connection hardly fails
                logger.debug("closing the result cache failed: %s", exc)


class Journal:
    """The in-flight task record of one source (a no-op without a cache): the task a create call started is recorded
    at once, so a later run resumes polling it instead of paying for another."""

    def __init__(self, guard: _CacheGuard | None = None, key: str | None = None) -> None:
        self._guard = guard if key is not None else None
        self._key = key

    async def recorded(self) -> str | None:
        """The id of the task an earlier run recorded for this source, if any."""
        if self._guard is None or self._guard.cache is None or self._key is None:
            return None
        task: InFlightTask | None = await self._guard.call("read", self._guard.cache.get_task, self._key)
        return task.task_id if task is not None else None

    async def record(self, task_id: str) -> None:
        """Record ``task_id`` as in flight for this source."""
        if self._guard is not None and self._guard.cache is not None and self._key is not None:
            await self._guard.call("write", self._guard.cache.put_task, self._key, task_id)

    async def forget(self, task_id: str) -> None:
        """Remove the record of ``task_id`` (it failed, or the service no longer knows it)."""
        if self._guard is not None and self._guard.cache is not None and self._key is not None:
            await self._guard.call("write", self._guard.cache.forget_task, self._key, task_id)


@dataclass
class SourceContext:
    """What a client's per-source code is handed: the prepared source, the transport to send with, the counter of
    its calls, the journal of its in-flight task, its cache key (None without a cache) and the sleep to wait with."""

    source: Source
    transport: Transport
    counter: CallCounter = field(default_factory=CallCounter)
    journal: Journal = field(default_factory=Journal)
    cache_key: str | None = None
    sleep: Sleep = anyio.sleep


class Engine:
    """Transport, rate budget, cache and concurrency for one client, built from its settings.

    Args:
        service: the service's name (``document-analyze``, ``image-analyze``, ``qwen-ocr``...): the rate budget's
            per-service ceiling and part of the cache key.
        base_url: the endpoint (scheme, host, port).
        api_key: sent as a bearer token, never logged.
        qps: the service's ceiling in calls per second (None: the documented default; 0: unlimited).
        rate_limiter: a budget to use instead of the endpoint's shared one.
        max_retries: retries per HTTP call.
        request_timeout: timeout of one HTTP exchange (seconds).
        http_client_factory: builds the ``httpx.AsyncClient``.
        sleep: awaited for every wait; injectable in tests.
        cache: a :class:`ResultCache`, its path or True (the default file; opened here and closed with the
            engine), or None.
        max_concurrency: sources in flight in ``parse_many`` (None: adaptive).
        identity: the client's part of every cache key (service id or model, workspace, output options).
        initial_in_flight: sources in flight before anything is learned (default 10).
        headers: default headers of every call (a workspace header...).
    """

    def __init__(
        self,
        *,
        service: str,
        base_url: str,
        api_key: SecretStr,
        qps: float | None = None,
        rate_limiter: RateLimiter | None = None,
        max_retries: int = 5,
        request_timeout: float = 60.0,
        http_client_factory: HttpClientFactory | None = None,
        sleep: Sleep = anyio.sleep,
        cache: CacheLike = None,
        max_concurrency: int | None = None,
        identity: Callable[[], Mapping[str, Any]] | None = None,
        initial_in_flight: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1 (or None: as many as keep the rate budget busy)")
        self.service = service
        self.max_concurrency = max_concurrency
        self.sleep = sleep
        self._identity = identity
        self._initial_in_flight = initial_in_flight or _DEFAULT_IN_FLIGHT
        #: What a call waits for: the service's cap, then the endpoint's adaptive budget.
        self.limiters = limiters_for(base_url, api_key, service, qps, budget=rate_limiter)
        #: The endpoint's adaptive budget, shared with every client of this endpoint and key in the process.
        self.rate_limiter: RateLimiter | None = self.limiters[-1] if self.limiters else None
        self.transport = Transport(
            base_url,
            api_key,
            timeout=request_timeout,
            retry=RetryPolicy(max_retries=max_retries),
            limiter=self.limiters,
            headers=headers,
            sleep=sleep,
            http_client_factory=http_client_factory,
        )
        self.endpoint = endpoint_host(base_url)
        self.portal = Portal()
        self._flow = _Flow()
        self._cache = _CacheGuard(*open_cache(cache))  # last: nothing below can fail and leave the file open

    def __repr__(self) -> str:
        return f"Engine(service={self.service!r}, endpoint={self.endpoint!r})"

    def __reduce__(self) -> Any:
        raise TypeError("an Engine (an API key, an event-loop thread and connections) cannot be pickled")

    @property
    def cache(self) -> ResultCache | None:
        return self._cache.cache

    # -- one source ----------------------------------------------------------------------------------------------

    def cache_key(self, source: Source) -> str | None:
        """The cache key of ``source`` under this client's identity, or None (no cache, or an option JSON cannot
        represent: that source goes uncached)."""
        if self._cache.cache is None or self._identity is None:
            return None
        try:
            return cache_key(self._identity(), source)
        except (TypeError, ValueError) as exc:
            self._cache.warn("key", exc)
            return None

    def context(self, source: Source) -> SourceContext:
        """A fresh context for one source: its own counter, and its journal under its cache key."""
        key = self.cache_key(source)
        return SourceContext(
            source=source,
            transport=self.transport,
            journal=Journal(self._cache, key),
            cache_key=key,
            sleep=self.sleep,
        )

    async def run(self, source: Source, parse: Callable[[SourceContext], Awaitable[ParseResult]]) -> ParseResult:
        """Parse one prepared source: from the cache when it holds the answer, else through ``parse`` (then stored).

        A failure carries the source's name and the count of calls that may have been billed twice.
        """
        started = time.monotonic()
        ctx = self.context(source)
        cache = self._cache.cache
        if ctx.cache_key is not None and cache is not None:
            hit = await self._cache.call("read", cache.get, ctx.cache_key)
            if hit is not None:
                # The service's answer is the stored one; the input's own name is this call's (same bytes, other path).
                hit.source, hit.file_name = source.origin, source.file_name
                hit.cached, hit.calls = True, 0
                hit.latency = time.monotonic() - started
                logger.debug("%s: result from the cache (%s…)", source.origin, ctx.cache_key[:12])
                return hit
        counter = ctx.counter
        try:
            result = await parse(ctx)
        except AISearchIngestError as exc:
            if exc.source is None:
                exc.source = source.origin
            exc.possibly_billed_twice = counter.unconfirmed
            _hide_url(exc, source.url)
            raise
        result.latency = time.monotonic() - started
        result.calls = counter.calls
        result.possibly_billed_twice = counter.unconfirmed
        # The service's own time: waiting for the budget left out, but not the task's processing (which the waits
        # may have overlapped).
        self._flow.observe(max(result.latency - counter.waited, counter.task_time or 0.0), counter.calls)
        if ctx.cache_key is not None and cache is not None:
            # Stores the result and forgets its in-flight task in one transaction.
            await self._cache.call("write", cache.put, ctx.cache_key, result)
        return result

    # -- many sources --------------------------------------------------------------------------------------------

    async def run_many(
        self,
        sources: SourceLike | Iterable[SourceLike],
        prepare: Callable[[SourceLike], Source],
        parse: Callable[[SourceContext], Awaitable[ParseResult]],
        *,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        stop_on_error: bool = False,
    ) -> AsyncIterator[Outcome]:
        """Outcomes of many inputs as they finish (see :meth:`ParserEngine.aparse_many`)."""
        items = list(expand_inputs(sources))
        total = len(items)
        fixed = max_concurrency or self.max_concurrency
        gate = _Gate(fixed or self.concurrency_target())
        send, receive = anyio.create_memory_object_stream[Outcome](max_buffer_size=total or 1)
        done = 0
        failed = anyio.Event()

        async def run_one(item: SourceLike) -> None:
            origin = _origin_of(item)
            try:
                try:
                    prepared = prepare(item)
                    origin = prepared.origin
                    outcome = Outcome(origin, result=await self.run(prepared, parse))
                except AISearchIngestError as exc:
                    if exc.source is None:
                        exc.source = origin
                    outcome = Outcome(origin, error=exc)
                except Exception as exc:  # a bug of ours must not take the batch down, nor pass for a service error
                    logger.exception("unexpected error while parsing %s", origin)
                    err = UnexpectedError(
                        f"{origin}: unexpected {type(exc).__name__} inside aisearch-ingest: {exc} (please report it)",
                        source=origin,
                    )
                    err.__cause__ = exc
                    outcome = Outcome(origin, error=err)
            finally:
                if not fixed:
                    gate.resize(self.concurrency_target())
                gate.release()
            if outcome.error is not None:
                failed.set()
            await send.send(outcome)

        async def produce() -> None:
            # A source becomes a task only when it may start: a batch of any size holds only what is in flight.
            async with send, anyio.create_task_group() as tg:
                for item in items:
                    await gate.acquire()
                    if stop_on_error and failed.is_set():
                        gate.release()
                        break
                    tg.start_soon(run_one, item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with receive:
                async for outcome in receive:
                    done += 1
                    if on_progress is not None:
                        on_progress(done, total, outcome)
                    yield outcome

    def concurrency_target(self) -> int:
        """How many sources ``parse_many`` keeps in flight when ``max_concurrency`` is None.

        Little's law: enough to keep the rate budget busy -- the sources per second it allows (its current rate over
        the calls one source takes) times how long the service takes with one (the time spent waiting for the
        budget left out, else the estimate would feed on itself) -- with a 25 % margin plus two, between
        2 and :data:`MAX_CONCURRENCY`. Before anything is learned: the client's initial figure (10, or 64 for
        async tasks, which mostly wait on the service); with no budget limiting this client: 10.
        """
        rate = self.rate_limiter.rate if self.rate_limiter is not None else None
        return self._flow.target(rate, self._initial_in_flight)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the private loop and its HTTP connections, and the cache opened from a path."""
        portal = self.portal
        try:
            if portal.started:
                try:
                    portal.call(self.transport.aclose)
                finally:
                    portal.close()
        finally:
            self._cache.close()

    async def aclose(self) -> None:
        """Close the HTTP connections bound to the running loop, and the cache opened from a path."""
        try:
            await self.transport.aclose()
        finally:
            self._cache.close()


class ParserEngine:
    """Base of every service client: the public parse API over an :class:`Engine`.

    A client builds its engine last in its constructor (``self._engine = Engine(...)``, once its settings are
    checked) and declares:

    * :attr:`service`;
    * :meth:`output_options`: the options that change the output (one declaration, read by the cache key and by
      the document ids alike);
    * ``_scope()``: its part of the cache key besides the options (service id or model, workspace);
    * ``_prepare(obj, file_name)``: load and check one input before anything is sent;
    * ``async _parse(ctx)``: one prepared source → :class:`ParseResult`, all HTTP through ``ctx.transport``.
    """

    #: ``document-analyze``, ``image-analyze`` or ``qwen-ocr``
    service: str = ""
    _engine: Engine

    def __reduce__(self) -> Any:
        # Explicit, so the message says why (and pickle never reaches the settings' key).
        raise TypeError(
            f"{type(self).__name__} cannot be pickled: it holds an API key, an event-loop thread and connections. "
            "Build a client in each process (the key from its arguments or environment); the LlamaIndex readers "
            "pickle without their key and client and build one on first use."
        )

    # -- to declare ----------------------------------------------------------------------------------------------

    def output_options(self) -> dict[str, Any]:
        """The settings of this client that change what the service returns: part of every cache key and of every
        document id (``None`` values mean "not sent" and are left out of both)."""
        return {}

    def _scope(self) -> dict[str, Any]:
        """This client's part of a cache key besides ``service``, the endpoint and the options. Never the key."""
        return {}

    def _identity(self) -> dict[str, Any]:
        return {
            "service": self.service,
            **self._scope(),
            "endpoint": self._engine.endpoint,
            "options": self.output_options(),
        }

    def _prepare(self, obj: SourceLike, file_name: str | None = None) -> Source:
        """Load and validate one input (raise InvalidInputError before anything is sent)."""
        raise NotImplementedError

    async def _parse(self, ctx: SourceContext) -> ParseResult:
        """Parse a prepared source (all HTTP goes through ``ctx.transport``)."""
        raise NotImplementedError

    def _prepare_one(self, obj: SourceLike) -> Source:
        return self._prepare(obj)

    # -- the engine's parts --------------------------------------------------------------------------------------

    @property
    def cache(self) -> ResultCache | None:
        """The result cache, or None."""
        return self._engine.cache

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The endpoint's adaptive budget, shared with every client of this endpoint and key in the process."""
        return self._engine.rate_limiter

    @property
    def limiters(self) -> tuple[RateLimiter, ...]:
        """What every call waits for: the service's cap, then the endpoint's budget."""
        return self._engine.limiters

    @property
    def _transport(self) -> Transport:
        return self._engine.transport

    @property
    def max_concurrency(self) -> int | None:
        """A fixed number of sources in flight, or None: adaptive (see :meth:`concurrency_target`)."""
        return self._engine.max_concurrency

    def concurrency_target(self) -> int:
        """How many sources ``parse_many`` keeps in flight when ``max_concurrency`` is None
        (:meth:`Engine.concurrency_target`)."""
        return self._engine.concurrency_target()

    # -- async API -----------------------------------------------------------------------------------------------

    async def aparse(self, source: SourceLike, *, file_name: str | None = None) -> ParseResult:
        """Parse one file, URL, ``data:`` URI or bytes.

        Raises:
            InvalidInputError: rejected before sending.
            APIError: the service or the connection failed after the retries.
            TaskError: the task failed or did not finish in time.
        """
        prepared = self._prepare(source, file_name)
        return await self._engine.run(prepared, self._parse)

    async def aparse_many(
        self,
        sources: SourceLike | Iterable[SourceLike],
        *,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        stop_on_error: bool = False,
    ) -> AsyncIterator[Outcome]:
        """Parse many inputs concurrently; yield an :class:`Outcome` per input as each finishes.

        Directories are expanded. An input that fails (bad file, service error, failed task...) yields an outcome
        with ``error`` set; the others go on. At most ``max_concurrency`` sources are in flight; the rate limit
        applies to every HTTP call. With ``stop_on_error=True`` no new source is started after the first failure,
        while the ones already in flight finish (and are yielded); the sources never started yield nothing.
        """
        async for outcome in self._engine.run_many(
            sources,
            self._prepare_one,
            self._parse,
            max_concurrency=max_concurrency,
            on_progress=on_progress,
            stop_on_error=stop_on_error,
        ):
            yield outcome

    # -- blocking API --------------------------------------------------------------------------------------------

    def _portal_call(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return self._engine.portal.call(func, *args)

    def parse(self, source: SourceLike, *, file_name: str | None = None) -> ParseResult:
        """Blocking :meth:`aparse`. Safe inside Jupyter and inside a running event loop."""

        async def run() -> ParseResult:
            return await self.aparse(source, file_name=file_name)

        result: ParseResult = self._portal_call(run)
        return result

    def parse_many(
        self,
        sources: SourceLike | Iterable[SourceLike],
        *,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        stop_on_error: bool = False,
    ) -> Iterator[Outcome]:
        """Blocking :meth:`aparse_many`: yields outcomes as they complete."""
        out: queue.Queue[Any] = queue.Queue()
        future = self.submit_many(
            sources, out.put, max_concurrency=max_concurrency, on_progress=on_progress, stop_on_error=stop_on_error
        )
        try:
            while True:
                item = out.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not future.done():
                future.cancel()

    def submit_many(
        self,
        sources: SourceLike | Iterable[SourceLike],
        put: Callable[[Outcome | BaseException | None], object],
        *,
        max_concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        stop_on_error: bool = False,
    ) -> Future[None]:
        """Start :meth:`aparse_many` on the private loop and return at once: ``put`` is called (on the loop's
        thread) with each outcome as it completes, with the exception that ended the run if one did, then with
        ``None``. Cancelling the future cancels the work in flight. :meth:`parse_many` is this and a queue; the
        mixed-folder loaders run several clients at once with it, each on its own loop.
        """

        async def drain() -> None:
            try:
                async for outcome in self.aparse_many(
                    sources, max_concurrency=max_concurrency, on_progress=on_progress, stop_on_error=stop_on_error
                ):
                    put(outcome)
            except BaseException as exc:  # surfaced in the caller's thread
                put(exc)
                raise
            finally:
                put(None)

        return self._engine.portal.submit(drain)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the private loop and its HTTP connections, and the cache this client opened from a path
        (async users: ``await aclose()``)."""
        engine = self.__dict__.get("_engine")
        if engine is not None:
            engine.close()

    async def aclose(self) -> None:
        """Close the HTTP connections bound to the running loop, and the cache this client opened from a path
        (used again, both open again)."""
        engine = self.__dict__.get("_engine")
        if engine is not None:
            await engine.aclose()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:  # pragma: no cover - best effort
        engine = self.__dict__.get("_engine")
        portal = engine.portal if engine is not None else None
        if portal is not None and portal.started:
            # Never block in a finalizer: at interpreter exit the loop thread may already be frozen.
            portal.close(wait=not sys.is_finalizing())


def _origin_of(item: SourceLike) -> str:
    if isinstance(item, Source):
        return item.origin
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    try:
        text = os.fspath(item)
        return redact_url(text) if isinstance(text, str) else repr(text)
    except TypeError:
        return repr(item)


def _hide_url(exc: AISearchIngestError, url: str | None) -> None:
    """Replace the full ``url`` (a presigned URL's query) in everything ``exc`` carries -- its message, ``args``,
    ``source``, the service's echoed ``error`` and ``body`` -- with its redacted form
    (:func:`~aisearch_ingest.sources.redact_url`). A service may echo the URL it failed to fetch."""
    if not url or redact_url(url) == url:
        return
    exc.args = tuple(_hide_in(arg, url) for arg in exc.args)
    for name, value in list(vars(exc).items()):
        setattr(exc, name, _hide_in(value, url))


def _hide_in(value: Any, url: str) -> Any:
    if isinstance(value, str):
        return redact_url_in(value, url)
    if isinstance(value, dict):
        return {k: _hide_in(v, url) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_hide_in(v, url) for v in value)
    return value

"""Parse one / parse many, for every service: bounded concurrency under the shared rate limit, outcomes yielded as
they complete (one failure never cancels the others), and a blocking API that works inside a running event loop and
inside Jupyter; with ``cache=``, results come from (and go to) a :class:`~aisearch_ingest.cache.ResultCache`.

The blocking methods drive the async engine on a private event loop that runs on a worker thread owned by the
service object (anyio's blocking portal), so they never call ``asyncio.run()`` over the caller's loop and never need
``nest_asyncio``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import queue
import sqlite3
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .cache import InFlightTask, ResultCache, cache_key, open_cache
from .errors import AISearchIngestError, APIConnectionError
from .results import Outcome, ParseResult
from .sources import Source, SourceLike, expand_inputs, redact_url, redact_url_in
from .transport import CallCounter

__all__ = ["ParserEngine", "ProgressCallback"]

logger = logging.getLogger("aisearch_ingest")

T = TypeVar("T")

#: Called after each source finishes: ``(done, total_or_None, outcome)``.
ProgressCallback = Callable[[int, "int | None", Outcome], None]

_SENTINEL = object()

#: What a cache read or write may raise: SQLite and file errors, and a result JSON cannot represent.
_CACHE_ERRORS = (sqlite3.Error, OSError, ValueError, TypeError)


class _Portal:
    """A private event loop on a daemon thread, started on first use and owned by one service object.

    A daemon thread (not a thread pool, not ``asyncio.run``): a client nobody closed never keeps the interpreter
    from exiting, and the caller's own event loop, if any, is never touched.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._loop is not None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name="aisearch-ingest-loop", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> Future[T]:
        """Schedule ``func(*args)`` on the private loop; cancelling the future cancels the task."""
        loop = self.loop()
        if threading.current_thread() is self._thread:
            raise RuntimeError("the blocking API cannot be called from inside its own event loop; use the async API")
        return asyncio.run_coroutine_threadsafe(func(*args), loop)

    def call(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        future = self.submit(func, *args)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (KeyboardInterrupt) or another interruption of the waiting thread: stop the work too, so an
            # abandoned parse does not go on polling -- or submitting -- in the background.
            future.cancel()
            raise

    def close(self, *, wait: bool = True) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if wait:
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()


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


class ParserEngine(ABC):
    """Base of every service client: implement :meth:`_prepare` and :meth:`_aparse_source`.

    Subclasses get :meth:`aparse`, :meth:`aparse_many` (async) and :meth:`parse`, :meth:`parse_many` (blocking),
    and the result cache when they implement :meth:`_cache_identity`.

    Args:
        max_concurrency: sources in flight at once in ``parse_many``.
        cache: a :class:`~aisearch_ingest.cache.ResultCache`, or the path of one (opened now, closed with the
            client), or None for no cache. A cached result is returned without any HTTP call (``cached=True``,
            ``calls=0``); a new result is stored. A cache that fails later (disk full, file removed...) is logged
            and the parse goes on uncached.

    Raises:
        ConfigurationError: ``cache`` is a path that cannot be opened as a cache.
    """

    #: ``document-analyze``, ``image-analyze`` or ``qwen-ocr``
    service: str = ""

    def __reduce__(self) -> Any:
        # Explicit, so the message says why (and pickle never reaches the settings' key).
        raise TypeError(
            f"{type(self).__name__} cannot be pickled: it holds an API key, an event-loop thread and connections. "
            "Build a client in each process (the key from its arguments or environment); the LlamaIndex readers "
            "pickle without their key and client and build one on first use."
        )

    def __init__(
        self, *, max_concurrency: int | None = None, cache: ResultCache | str | os.PathLike[str] | None = None
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1 (or None: as many as keep the rate budget busy)")
        #: A fixed number of sources in flight, or None: adaptive (see :meth:`concurrency_target`).
        self.max_concurrency = max_concurrency
        self._flow = _Flow()
        self._portal = _Portal()
        self._cache: ResultCache | None = None
        self._owns_cache = False
        self._cache_warned = False
        self._set_cache(cache)

    def _set_cache(self, cache: ResultCache | str | os.PathLike[str] | None) -> None:
        """Attach ``cache`` (a path is opened here and owned: closed with the client). Subclasses call it last in
        their constructor, so a client whose settings are refused leaves no cache file open."""
        self._close_owned_cache()
        self._cache, self._owns_cache = open_cache(cache)

    @property
    def cache(self) -> ResultCache | None:
        """The result cache, or None."""
        return self._cache

    # -- to implement --------------------------------------------------------------------------------------------

    @abstractmethod
    def _prepare(self, obj: SourceLike, file_name: str | None = None) -> Source:
        """Load and validate one input (raise InvalidInputError before anything is sent)."""

    @abstractmethod
    async def _aparse_source(self, source: Source, counter: CallCounter) -> ParseResult:
        """Parse a prepared source (all HTTP goes through the transport)."""

    async def _aclose_transports(self) -> None:
        """Close the HTTP clients bound to the running loop."""
        return None

    def _cache_identity(self) -> dict[str, Any] | None:
        """What this client contributes to a cache key (see :func:`~aisearch_ingest.cache.cache_key`): service,
        service id or model, endpoint host, workspace and the options that change the result. Never the API key.
        None (the default) means results of this client are not cached."""
        return None

    # -- cache ---------------------------------------------------------------------------------------------------

    def _cache_key(self, source: Source) -> str | None:
        """The cache key of ``source`` for this client, or None without a cache."""
        if self._cache is None:
            return None
        identity = self._cache_identity()
        if identity is None:
            return None
        try:
            return cache_key(identity, source)
        except (TypeError, ValueError) as exc:  # an option JSON cannot represent: that source goes uncached
            self._cache_warn("key", exc)
            return None

    def _cache_warn(self, what: str, exc: BaseException) -> None:
        if not self._cache_warned:
            self._cache_warned = True
            logger.warning(
                "result cache %s failed (%s: %s); going on without it for this call "
                "(further cache errors of this client are logged at DEBUG level)",
                what,
                type(exc).__name__,
                exc,
            )
        else:
            logger.debug("result cache %s failed (%s: %s)", what, type(exc).__name__, exc)

    async def _cache_call(self, what: str, func: Callable[..., T], *args: Any) -> T | None:
        """Run one cache operation in a worker thread (SQLite may wait on another process's lock; the event loop
        must not). A failure is logged and gives None: the parse goes on uncached."""
        try:
            return await anyio.to_thread.run_sync(func, *args)
        except _CACHE_ERRORS as exc:
            self._cache_warn(what, exc)
            return None

    async def _cache_lookup(self, key: str, prepared: Source, started: float) -> ParseResult | None:
        assert self._cache is not None
        hit = await self._cache_call("read", self._cache.get, key)
        if hit is None:
            return None
        # The service's answer is the stored one; the input's own name is this call's (same bytes, other path).
        hit.source, hit.file_name = prepared.origin, prepared.file_name
        hit.cached, hit.calls = True, 0
        hit.latency = time.monotonic() - started
        logger.debug("%s: result from the cache (%s…)", prepared.origin, key[:12])
        return hit

    async def _cache_task(self, key: str | None) -> InFlightTask | None:
        """The task recorded as in flight for ``key``, if any."""
        if key is None or self._cache is None:
            return None
        return await self._cache_call("read", self._cache.get_task, key)

    async def _cache_record_task(self, key: str | None, task_id: str) -> None:
        """Record ``task_id`` as in flight for ``key`` (the next run resumes it)."""
        if key is not None and self._cache is not None:
            await self._cache_call("write", self._cache.put_task, key, task_id)

    async def _cache_forget_task(self, key: str | None, task_id: str) -> None:
        """Remove the in-flight record of ``task_id``."""
        if key is not None and self._cache is not None:
            await self._cache_call("write", self._cache.forget_task, key, task_id)

    # -- async API -----------------------------------------------------------------------------------------------

    async def aparse(self, source: SourceLike, *, file_name: str | None = None) -> ParseResult:
        """Parse one file, URL, ``data:`` URI or bytes.

        Raises:
            InvalidInputError: rejected before sending.
            APIError: the service or the connection failed after the retries.
            TaskError: the task failed or did not finish in time.
        """
        prepared = self._prepare(source, file_name)
        return await self._timed(prepared)

    async def _timed(self, prepared: Source) -> ParseResult:
        counter = CallCounter()
        started = time.monotonic()
        key = self._cache_key(prepared)
        if key is not None:
            hit = await self._cache_lookup(key, prepared, started)
            if hit is not None:
                return hit
        try:
            result = await self._aparse_source(prepared, counter)
        except AISearchIngestError as exc:
            if exc.source is None:
                exc.source = prepared.origin
            exc.possibly_billed_twice = counter.unconfirmed
            _hide_url(exc, prepared.url)
            raise
        result.latency = time.monotonic() - started
        result.calls = counter.calls
        result.possibly_billed_twice = counter.unconfirmed
        # The service's own time: waiting for the budget left out, but not the task's processing (which the waits
        # may have overlapped).
        self._flow.observe(max(result.latency - counter.waited, counter.task_time or 0.0), counter.calls)
        if key is not None and self._cache is not None:
            # Stores the result and forgets its in-flight task in one transaction.
            await self._cache_call("write", self._cache.put, key, result)
        return result

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
                    prepared = self._prepare(item)
                    origin = prepared.origin
                    outcome = Outcome(origin, result=await self._timed(prepared))
                except AISearchIngestError as exc:
                    if exc.source is None:
                        exc.source = origin
                    outcome = Outcome(origin, error=exc)
                except Exception as exc:  # an unexpected bug must not take the batch down
                    logger.exception("unexpected error while parsing %s", origin)
                    err = APIConnectionError(f"{origin}: unexpected {type(exc).__name__}: {exc}", source=origin)
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
        2 and :data:`MAX_CONCURRENCY`. Before anything is learned, and when no budget limits this client: 10.
        """
        budget = getattr(self, "rate_limiter", None)
        rate = budget.rate if budget is not None else None
        return self._flow.target(rate, self._initial_in_flight())

    def _initial_in_flight(self) -> int:
        """Sources in flight before anything is learned (services whose sources mostly wait on the service, such
        as async tasks, start wider)."""
        return _DEFAULT_IN_FLIGHT

    # -- blocking API --------------------------------------------------------------------------------------------

    def _portal_call(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return self._portal.call(func, *args)

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

        async def drain() -> None:
            try:
                async for outcome in self.aparse_many(
                    sources, max_concurrency=max_concurrency, on_progress=on_progress, stop_on_error=stop_on_error
                ):
                    out.put(outcome)
            except BaseException as exc:  # surfaced in the caller's thread
                out.put(exc)
                raise
            finally:
                out.put(_SENTINEL)

        future: Future[None] = self._portal.submit(drain)
        try:
            while True:
                item = out.get()
                if item is _SENTINEL:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not future.done():
                future.cancel()

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the private loop and its HTTP connections, and the cache this client opened from a path
        (async users: ``await aclose()``)."""
        portal = self._portal
        try:
            if portal.started:
                try:
                    portal.call(self._aclose_transports)
                finally:
                    portal.close()
        finally:
            self._close_owned_cache()

    async def aclose(self) -> None:
        """Close the HTTP connections bound to the running loop, and the cache this client opened from a path
        (used again, both open again)."""
        try:
            await self._aclose_transports()
        finally:
            self._close_owned_cache()

    def _close_owned_cache(self) -> None:
        if self._owns_cache and self._cache is not None:
            try:
                self._cache.close()
            except sqlite3.Error as exc:  # pragma: no cover - closing a connection hardly fails
                logger.debug("closing the result cache failed: %s", exc)

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:  # pragma: no cover - best effort
        portal = self.__dict__.get("_portal")
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

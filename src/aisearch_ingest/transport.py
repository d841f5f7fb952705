"""The only module that touches httpx: clients per event loop, retries with backoff and jitter, ``Retry-After``,
timeouts, the rate limit, error mapping, and key redaction.

Retry policy (modelled on openai-python's ``_base_client``): 429, 408, 409, 5xx and connection errors are retried with
``initial · 2ⁿ`` seconds capped at ``max_delay``, minus up to 25 % jitter; a server hint (``retry-after-ms``,
``x-acs-retry-after`` in integer milliseconds, ``Retry-After`` as seconds or an HTTP date) is honoured, capped at
``max_retry_after`` seconds;
``x-should-retry`` overrides the status both ways, as openai-python and the Stainless SDKs read it: ``true`` retries an
answer that would not be retried otherwise (another 4xx), ``false`` stops retrying one that would. Other 4xx are never
retried. Retries are bounded by ``max_retries``.

Nothing of httpx leaves this module: a JSON call answers a :class:`Response`, a streamed call a
:class:`StreamResponse` whose reads map transport failures to this package's errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import httpx

from ._version import __version__
from .config import SecretStr
from .errors import APIConnectionError, APIStatusError, APITimeoutError, error_from_response
from .ratelimit import RateLimiter, Stamp

__all__ = [
    "CallCounter",
    "HttpClientFactory",
    "Response",
    "RetryPolicy",
    "StreamResponse",
    "Transport",
    "parse_retry_after",
]

logger = logging.getLogger("aisearch_ingest.transport")

RETRY_STATUSES = frozenset({408, 409, 429})

#: Builds the ``httpx.AsyncClient`` a transport sends with (proxies, custom TLS, a mock transport in tests).
HttpClientFactory = Callable[[], httpx.AsyncClient]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter.

    Attributes:
        max_retries: retries after the first attempt (so at most ``max_retries + 1`` requests per call).
        initial_delay: first backoff in seconds.
        max_delay: cap on a computed backoff.
        max_retry_after: cap on a server-requested delay; a longer hint is waited for this long, then retried.
        jitter: fraction of the delay removed at random (0.25 = up to 25 %).
    """

    max_retries: int = 5
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 120.0
    jitter: float = 0.25

    def backoff(self, retries_done: int) -> float:
        delay = min(self.initial_delay * (2.0**retries_done), self.max_delay)
        return delay * (1.0 - self.jitter * random.random())


class CallCounter:
    """Counts the HTTP requests actually sent on behalf of one source (thread-safe enough for one task).

    ``unconfirmed`` counts billed calls (a task create, a sync call, a Qwen-OCR generation) whose request reached
    the service in full but whose answer never came back (the connection dropped or timed out while we waited):
    the service may have done -- and billed -- the work, and the retry that follows does it again. Neither AI
    Search's create API nor DashScope's offers an idempotency key (none in the official SDKs' request models), so
    the duplicate cannot be avoided, only counted and reported.
    """

    __slots__ = ("calls", "retries", "task_time", "unconfirmed", "waited")

    def __init__(self) -> None:
        self.calls = 0
        self.retries = 0
        self.unconfirmed = 0
        #: seconds spent waiting for the rate budget and for retry backoffs (not the service's own time)
        self.waited = 0.0
        #: how long the service worked on an async task (estimated from the polls), when there was one
        self.task_time: float | None = None


@dataclass
class Response:
    """A decoded 2xx response."""

    status_code: int
    headers: Mapping[str, str]
    body: Any
    request_id: str | None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, from the first usable of three headers, as their owners define them.

    * ``retry-after-ms``: milliseconds, possibly fractional (openai-python's convention, sent by DashScope's
      OpenAI-compatible mode).
    * ``x-acs-retry-after``: a positive **integer of milliseconds**, exactly as Alibaba Cloud's SDK core reads it
      (``alibabacloud_tea_openapi`` ``Utils.get_throttling_time_left``: ``int(value)``, ignored when it is not an
      integer or is <= 0). ``1000`` is one second, never 1000 s.
    * ``Retry-After``: seconds (``"2"``, ``"0.5"``) or an HTTP date (RFC 9110).

    A hint that is unparsable, zero, negative or a date in the past is no hint: the caller falls back to its own
    backoff (as openai-python does), so a bad header can neither stall a run nor turn it into a busy loop.
    Returns ``None`` when no usable hint is present.
    """
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    raw = lower.get("retry-after-ms")
    if raw:
        value = _finite(raw)
        if value is not None and value > 0:
            return value / 1000.0
    raw = lower.get("x-acs-retry-after")
    if raw:
        try:
            millis = int(raw)
        except ValueError:
            millis = 0
        if millis > 0:
            return millis / 1000.0
    raw = lower.get("retry-after")
    if raw:
        value = _finite(raw)
        if value is None:
            parsed = email.utils.parsedate_tz(raw)
            if parsed is not None:
                value = email.utils.mktime_tz(parsed) - (now if now is not None else time.time())
        if value is not None and value > 0:
            return value
    return None


def _finite(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _request_id(headers: httpx.Headers, body: Any) -> str | None:
    rid = headers.get("x-acs-request-id") or headers.get("x-request-id") or headers.get("x-dashscope-request-id")
    if not rid and isinstance(body, Mapping):
        rid = body.get("request_id") or body.get("RequestId") or body.get("requestId")
    return str(rid) if rid else None


class _BearerAuth(httpx.Auth):
    """Sets ``Authorization: Bearer <key>`` on the request inside httpx's send, at the last moment.

    No frame of ours holds a headers dict with the key in it (a retry loop's locals, a traceback's frames...):
    the key lives only in the :class:`~aisearch_ingest.config.SecretStr`, and the header only on the outgoing
    request (whose ``repr`` and ``headers`` repr httpx masks)."""

    __slots__ = ("_key",)

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Bearer " + self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(**********)"

    def __reduce__(self) -> Any:
        raise TypeError("the transport's credentials are never pickled")


def _scrub_traceback(exc: BaseException) -> BaseException:
    """Keep only our own frames in the tracebacks of ``exc`` (an httpx error) and of its chain; the exception types
    and messages stay.

    The frames below ours are the HTTP stack's (httpx, httpcore, h11, anyio, asyncio, ssl, socket): their locals may
    hold the raw request -- httpcore's ``h11.Request`` event, the bytes being written, ``Authorization`` included --
    and tools that record frame locals would ship them. Our own frames never hold the key (see :class:`_BearerAuth`).
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = _own_frames(current.__traceback__)
        todo += [current.__cause__, current.__context__]
    return exc


def _own_frames(tb: TracebackType | None) -> TracebackType | None:
    entries = []
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").partition(".")[0] == "aisearch_ingest":
            entries.append(tb)
        tb = tb.tb_next
    rebuilt: TracebackType | None = None
    for entry in reversed(entries):
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


def _decode(response: httpx.Response) -> Any:
    text = response.text
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text


class Transport:
    """HTTP for one service endpoint. Safe to use from several event loops (one httpx client per loop) and threads.

    Args:
        base_url: scheme, host, port and optional path prefix, e.g. ``https://xxx.opensearch.aliyuncs.com``.
        api_key: sent as ``Authorization: Bearer``; never logged.
        timeout: per-exchange timeout in seconds (connecting: at most 10 s).
        retry: the retry policy.
        limiter: the rate limiters every call waits for, in order (a service's cap, then the endpoint's adaptive
            budget: see :func:`~aisearch_ingest.ratelimit.limiters_for`); ``None``: unlimited. Each is told how
            the service answered, so an adaptive one learns from 429s.
        headers: extra default headers.
        sleep: awaited for every wait (backoff, rate limit); injectable in tests.
        http_client_factory: builds the ``httpx.AsyncClient`` for a loop (for proxies, custom TLS...).
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | Sequence[RateLimiter] | None = None,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        http_client_factory: HttpClientFactory | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = _BearerAuth(api_key)
        self.timeout = httpx.Timeout(timeout, connect=min(10.0, timeout))
        self.retry = retry or RetryPolicy()
        if limiter is None:
            self.limiters: tuple[RateLimiter, ...] = ()
        elif isinstance(limiter, RateLimiter):
            self.limiters = (limiter,)
        else:
            self.limiters = tuple(limiter)
        self._headers = {"user-agent": f"aisearch-ingest/{__version__} httpx/{httpx.__version__}"}
        self._headers.update(headers or {})
        self._sleep = sleep
        self._factory = http_client_factory
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Transport (an API key, event-loop clients and connections) cannot be pickled; build the client again "
            "in the other process (the key from its arguments or environment)"
        )

    # -- clients -------------------------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None or client.is_closed:
                if self._factory is not None:
                    client = self._factory()
                else:
                    client = httpx.AsyncClient(
                        timeout=self.timeout,
                        limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
                        follow_redirects=False,
                        trust_env=True,
                    )
                self._clients[loop] = client
            return client

    async def aclose(self) -> None:
        """Close the client that belongs to the running loop (others are closed by their own loops or on exit)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    def _request_headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        """The default and extra headers; never the key (``Authorization`` is set by :class:`_BearerAuth` inside
        httpx's send)."""
        headers = dict(self._headers)
        if extra:
            headers.update(extra)
        return headers

    # -- the retry loop ------------------------------------------------------------------------------------------

    async def _wait_for_retry(
        self,
        attempt: int,
        hint: float | None,
        what: str,
        source: str | None,
        error: Exception,
        counter: CallCounter | None = None,
    ) -> bool:
        """Sleep before retry number ``attempt + 1``; False when no retry should happen."""
        if attempt >= self.retry.max_retries:
            return False
        if hint is not None and hint > self.retry.max_retry_after:
            # A hint longer than we are willing to wait is capped, not obeyed to the letter and not a reason to give
            # up: the retry is still bounded by max_retries.
            logger.info(
                "%s: server asked to wait %.1fs; waiting max_retry_after=%.1fs", what, hint, self.retry.max_retry_after
            )
            hint = self.retry.max_retry_after
        delay = hint if hint is not None else self.retry.backoff(attempt)
        logger.info(
            "%s%s failed (%s); retry %d/%d in %.2fs",
            what,
            f" [{source}]" if source else "",
            type(error).__name__ if not isinstance(error, APIStatusError) else f"HTTP {error.status_code}",
            attempt + 1,
            self.retry.max_retries,
            delay,
        )
        if counter is not None:
            counter.waited += delay
        await self._sleep(delay)
        return True

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        stream: bool,
        source: str | None,
        counter: CallCounter | None,
        billed: bool = False,
        priority: bool = False,
    ) -> httpx.Response:
        """Send with rate limit and retries; return a 2xx response (streamed responses are left open).

        ``billed``: the call costs money when the service accepts it (create, sync, generation); a lost answer to
        such a call is counted in ``counter.unconfirmed`` before it is retried."""
        url = self.base_url + path
        content = None
        req_headers = self._request_headers(headers)
        if json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            req_headers.setdefault("content-type", "application/json; charset=utf-8")
        what = f"{method} {path}"
        attempt = 0
        while True:
            ahead = priority or attempt > 0
            queued = time.monotonic()
            stamps = [await limiter.acquire(self._sleep, retry=ahead) for limiter in self.limiters]
            if counter is not None:
                counter.waited += time.monotonic() - queued
            sent = _SentFlag()
            extensions: dict[str, Any] = {"trace": _sent_tracer(self.limiters, stamps, sent)}
            client = self._client()
            if counter is not None:
                counter.calls += 1
                if attempt:
                    counter.retries += 1
            logger.debug("%s attempt %d", what, attempt + 1)
            try:
                request = client.build_request(
                    method, url, content=content, params=params, headers=req_headers, extensions=extensions
                )
                response = await client.send(request, stream=stream, auth=self._auth)
            except httpx.TimeoutException as exc:
                self._feedback(stamps, throttled=False, failed=True)
                self._lost_answer(billed and sent.done, counter, what, source)
                err: Exception = APITimeoutError(f"{what} timed out: {type(exc).__name__}", source=source)
                if await self._wait_for_retry(attempt, None, what, source, err, counter):
                    attempt += 1
                    continue
                raise err from _scrub_traceback(exc)
            except httpx.TransportError as exc:
                self._feedback(stamps, throttled=False, failed=True)
                self._lost_answer(billed and sent.done, counter, what, source)
                err = APIConnectionError(
                    f"{what}: connection error ({type(exc).__name__}: {exc})".rstrip(": "), source=source
                )
                if await self._wait_for_retry(attempt, None, what, source, err, counter):
                    attempt += 1
                    continue
                raise err from _scrub_traceback(exc)
            if response.status_code < 400:
                self._feedback(stamps, throttled=False)
                return response
            if stream:
                await response.aread()
            await response.aclose()
            body = _decode(response)
            hint = parse_retry_after(response.headers)
            self._feedback(stamps, throttled=response.status_code == 429, hint=hint)
            status_error = error_from_response(
                response.status_code,
                body,
                request_id=_request_id(response.headers, body),
                retry_after=hint,
                source=source,
            )
            retryable = _should_retry(response.status_code, response.headers)
            if retryable and await self._wait_for_retry(attempt, hint, what, source, status_error, counter):
                attempt += 1
                continue
            raise status_error

    @staticmethod
    def _lost_answer(lost: bool, counter: CallCounter | None, what: str, source: str | None) -> None:
        if not lost:
            return
        if counter is not None:
            counter.unconfirmed += 1
        logger.warning(
            "%s%s: the request reached the service but its answer was lost; the service may have done and billed "
            "it, and a retry may bill it again (counted as 'possibly billed twice')",
            what,
            f" [{source}]" if source else "",
        )

    def _feedback(
        self, stamps: Sequence[Stamp | None], *, throttled: bool, hint: float | None = None, failed: bool = False
    ) -> None:
        for limiter, stamp in zip(self.limiters, stamps, strict=True):
            limiter.feedback(stamp, throttled=throttled, hint=hint, failed=failed)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        source: str | None = None,
        counter: CallCounter | None = None,
        billed: bool = False,
        priority: bool = False,
    ) -> Response:
        """One JSON call with retries. Raises an :class:`~aisearch_ingest.errors.APIError` subclass on failure.

        ``billed``: the call costs money once accepted (see :class:`CallCounter` ``unconfirmed``).
        ``priority``: skip the rate budget's queue of new calls, as retries do (task-status polls)."""
        response = await self._send(
            method,
            path,
            json_body=json_body,
            params=params,
            headers=headers,
            stream=False,
            source=source,
            counter=counter,
            billed=billed,
            priority=priority,
        )
        body = _decode(response)
        if not isinstance(body, Mapping):
            raise APIConnectionError(
                f"{method} {path}: expected a JSON object, got {response.headers.get('content-type', 'no type')}",
                request_id=_request_id(response.headers, None),
                source=source,
            )
        return Response(response.status_code, response.headers, body, _request_id(response.headers, body))

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        source: str | None = None,
        counter: CallCounter | None = None,
        billed: bool = False,
    ) -> AsyncIterator[StreamResponse]:
        """Open a streamed call (retried until the first 2xx); yields the open :class:`StreamResponse`, closed on
        exit. A failure while reading its body is an :class:`~aisearch_ingest.errors.APIConnectionError`."""
        response = await self._send(
            method,
            path,
            json_body=json_body,
            params=None,
            headers=headers,
            stream=True,
            source=source,
            counter=counter,
            billed=billed,
        )
        try:
            yield StreamResponse(response, what=f"{method} {path}", source=source)
        finally:
            await response.aclose()


def _should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether an error answer is retried: 408, 409, 429 and 5xx, unless the server's ``x-should-retry`` header says
    otherwise (``true`` / ``false``, either way)."""
    hint = headers.get("x-should-retry", "").strip().lower()
    if hint == "true":
        return True
    if hint == "false":
        return False
    return status in RETRY_STATUSES or status >= 500


class StreamResponse:
    """An open streamed answer (2xx): its headers, then its body as lines, or whole as JSON.

    Reading maps a timeout to :class:`~aisearch_ingest.errors.APITimeoutError` and any other transport failure to
    :class:`~aisearch_ingest.errors.APIConnectionError`, each naming the call and the source.
    """

    def __init__(self, response: httpx.Response, *, what: str, source: str | None) -> None:
        self._response = response
        self._what = what
        self._source = source
        self.status_code = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self.request_id = _request_id(response.headers, None)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive."""
        try:
            async for line in self._response.aiter_lines():
                yield line
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"{self._what}: stream timed out", source=self._source) from _scrub_traceback(exc)
        except httpx.TransportError as exc:
            raise APIConnectionError(
                f"{self._what}: stream broke off ({type(exc).__name__})", source=self._source
            ) from _scrub_traceback(exc)

    async def json(self) -> Any:
        """The whole body, decoded as JSON (a server that ignored the request for a stream)."""
        try:
            await self._response.aread()
        except httpx.TransportError as exc:
            raise APIConnectionError(
                f"{self._what}: response broke off ({type(exc).__name__})", source=self._source
            ) from _scrub_traceback(exc)
        try:
            return self._response.json()
        except ValueError as exc:
            raise APIConnectionError(f"{self._what}: expected an event stream or JSON", source=self._source) from exc


class _SentFlag:
    """Set once the whole request has left (so a failure after it may have reached the service)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


def _sent_tracer(
    limiters: Sequence[RateLimiter], stamps: Sequence[Stamp | None], sent: _SentFlag
) -> Callable[[str, Any], Awaitable[None]]:
    """An httpcore trace hook that tells the limiters when the request really left (after connecting)."""

    async def trace(event: str, info: Any) -> None:
        if event.endswith("send_request_body.complete"):
            sent.done = True
            for limiter, stamp in zip(limiters, stamps, strict=True):
                limiter.mark_sent(stamp)

    return trace

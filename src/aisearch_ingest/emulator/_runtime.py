"""State shared by the emulator's services: knobs, counters, the parse memo, file stores, ids and helpers."""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from ._control import Faults, Injections, Latency, LockedRandom, Recorder
from ._http import JsonReply

__all__ = [
    "LOCAL_EXTRA_HINT",
    "FileStore",
    "Runtime",
    "acs_request_id",
    "count_tokens",
    "dashscope_request_id",
    "error_reply",
    "is_loopback_url",
    "load_backends",
    "memo",
]

logger = logging.getLogger("aisearch_ingest.emulator")

T = TypeVar("T")

LOCAL_EXTRA_HINT = "pip install 'aisearch-ingest[local]'"


def acs_request_id() -> str:
    """An AI Search request id: an upper-case UUID, as in the vendor's examples."""
    return str(uuid.uuid4()).upper()


def dashscope_request_id() -> str:
    """A DashScope request id: a lower-case UUID."""
    return str(uuid.uuid4())


# --- errors in the three wire formats

_AISEARCH_CODES = {
    400: ("InvalidParameter", "Invalid request."),
    401: ("Unauthorized", "Invalid or missing API key in the Authorization header."),
    404: ("NotFound", "The requested resource does not exist."),
    405: ("MethodNotAllowed", "The HTTP method is not allowed on this resource."),
    # The code Alibaba's gateway answers for AI Search throttling, and the one its own LlamaIndex reader
    # (llama-index-readers-alibabacloud-aisearch) retries on.
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalServerError", "An internal server error occurred."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable."),
}
_DASHSCOPE_CODES = {
    400: ("InvalidParameter", "Invalid request."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    404: ("NotFound", "The requested resource does not exist."),
    405: ("MethodNotAllowed", "The HTTP method is not allowed on this resource."),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later or contact service support."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable, please try again later."),
}
# OpenAI-compatible mode: (type, code); the codes are the ones DashScope documents for compatible mode.
_COMPATIBLE_CODES = {
    400: ("invalid_request_error", "invalid_parameter_error"),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    429: ("limit_requests", "limit_requests"),
    500: ("internal_error", "internal_error"),
    503: ("service_unavailable", "service_unavailable"),
}


def error_reply(
    family: str,
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    latency_ms: int = 0,
    close: bool = False,
) -> JsonReply:
    """An error response in the format of ``family`` (``aisearch``, ``dashscope`` or ``compatible``).

    * aisearch: ``{"request_id","latency","http_code","code","message"}`` and ``x-acs-request-id``.
    * dashscope: ``{"code","message","request_id"}`` and ``x-request-id``.
    * compatible: ``{"error":{"message","type","param","code"},"request_id"}``, ``x-request-id``, and
      ``x-should-retry: false`` for statuses a client must not retry (4xx other than 408/409/429).
    """
    out = dict(headers or {})
    if family == "aisearch":
        default_code, default_message = _AISEARCH_CODES.get(status, ("InternalServerError", "Error."))
        rid = acs_request_id()
        out["x-acs-request-id"] = rid
        body: dict[str, Any] = {
            "request_id": rid,
            "latency": latency_ms,
            "http_code": status,
            "code": code or default_code,
            "message": message or default_message,
        }
        return JsonReply(status, body, out, close=close)
    rid = dashscope_request_id()
    out["x-request-id"] = rid
    if family == "compatible":
        err_type, default_code = _COMPATIBLE_CODES.get(status, ("internal_error", "internal_error"))
        if status < 500 and status not in (408, 409, 429):
            out["x-should-retry"] = "false"
        body = {
            "error": {
                "message": message or _DASHSCOPE_CODES.get(status, ("", "Error."))[1],
                "type": err_type,
                "param": None,
                "code": code or default_code,
            },
            "request_id": rid,
        }
        return JsonReply(status, body, out, close=close)
    default_code, default_message = _DASHSCOPE_CODES.get(status, ("InternalError", "Error."))
    body = {"code": code or default_code, "message": message or default_message, "request_id": rid}
    return JsonReply(status, body, out, close=close)


# --- helpers


_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def count_tokens(text: str) -> int:
    """Tokens in ``text`` as the backends count them (tiktoken's bundled ``cl100k_base``, an approximation of
    Qwen's tokenizer); a word-and-punctuation count if the backends module cannot be imported."""
    if not text:
        return 0
    try:
        counter = load_backends().count_tokens
    except ImportError:
        return len(_WORDS.findall(text))
    return int(counter(text))


def is_loopback_url(url: str) -> bool:
    """True for ``http(s)://`` URLs whose host is ``localhost`` or a loopback address."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch_loopback(url: str, *, timeout: float = 10.0, max_bytes: int = 100 * 1024 * 1024) -> bytes:
    """Download a loopback URL, ignoring proxy settings.

    Raises:
        OSError: for a non-loopback URL (the emulator is offline), a network error, an HTTP error status or a
            body over ``max_bytes``.
    """
    import urllib.error
    import urllib.request

    if not is_loopback_url(url):
        raise OSError(
            "the emulator is offline and can only download http URLs on 127.0.0.1/localhost; "
            "send the file as content instead"
        )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            data: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code} from {url}") from exc
    except (urllib.error.URLError, ValueError) as exc:
        raise OSError(str(getattr(exc, "reason", exc))) from exc
    if len(data) > max_bytes:
        raise OSError(f"the file at {url} is larger than {max_bytes} bytes")
    return data


def load_backends() -> ModuleType:
    """Import the offline parsing backends (needs the ``local`` extra for images and PDF).

    Raises:
        ImportError: when the backends or one of their dependencies are missing.
    """
    return importlib.import_module("aisearch_ingest.emulator.backends")


def missing_extra_message(what: str, exc: BaseException) -> str:
    """The error text for a parse the ``local`` extra is needed for."""
    detail = str(exc)
    if "aisearch-ingest[local]" in detail:
        return f"the emulator cannot parse {what} offline: {detail}"
    return (
        f"the emulator cannot parse {what} offline: the optional 'local' extra is missing "
        f"({detail}); install it with {LOCAL_EXTRA_HINT}"
    )


class Memo:
    """Process-wide memo of parse results keyed by (service, options, sha256): identical files cost no CPU twice.

    Concurrent requests for the same key wait for the first computation. Results and ``ValueError`` failures
    (corrupt/unsupported files) are kept; other exceptions are not, so a later call retries. Bounded by entry
    count and by the callers' estimate of each result's size; the least recently used go first.
    """

    def __init__(self, max_entries: int = 256, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Future[Any]] = OrderedDict()
        self._weights: dict[Hashable, int] = {}
        self._max = max_entries
        self._max_bytes = max_bytes
        #: look-ups answered from the memo / computed.
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: Hashable, compute: Callable[[], T], weigh: Callable[[T], int] | None = None) -> T:
        """The memoised value for ``key``, computing it with ``compute`` the first time.

        Args:
            key: hashable identity of the computation.
            compute: produces the value.
            weigh: the value's approximate size in bytes, for the memory bound.
        """
        with self._lock:
            future = self._entries.get(key)
            owner = future is None
            if future is None:
                future = Future()
                self._entries[key] = future
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
        if owner:
            try:
                value = compute()
            except ValueError as exc:
                future.set_exception(exc)
            except Exception as exc:
                with self._lock:
                    self._entries.pop(key, None)
                future.set_exception(exc)
            else:
                future.set_result(value)
                with self._lock:
                    if key in self._entries:
                        self._weights[key] = weigh(value) if weigh is not None else 0
                    self._evict()
        result: T = future.result()
        return result

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self._max or sum(self._weights.values()) > self._max_bytes):
            oldest_key, oldest = next(iter(self._entries.items()))
            if not oldest.done():
                break
            del self._entries[oldest_key]
            self._weights.pop(oldest_key, None)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._weights.clear()


#: Shared by every emulator in the process (parsing is deterministic; the tests start many emulators).
memo = Memo()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class FileStore:
    """Bytes served by the emulator (``/_emulator/files/<name>``) or uploaded to its fake OSS, bounded in size."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024) -> None:
        self._lock = threading.Lock()
        self._files: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._size = 0
        self._max = max_bytes

    def put(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``name``, evicting the oldest files beyond the size bound."""
        with self._lock:
            old = self._files.pop(name, None)
            if old is not None:
                self._size -= len(old[0])
            self._files[name] = (data, content_type)
            self._size += len(data)
            while self._size > self._max and len(self._files) > 1:
                _, (dropped, _) = self._files.popitem(last=False)
                self._size -= len(dropped)

    def get(self, name: str) -> tuple[bytes, str] | None:
        """The stored ``(data, content_type)``, or None."""
        with self._lock:
            return self._files.get(name)


class Runtime:
    """Everything the route handlers share. Knob attributes are swapped whole, so reads need no lock."""

    def __init__(
        self,
        *,
        qps: float | None,
        latency: Latency | None,
        faults: Faults | None,
        seed: int | None,
        task_status_on_fail: str,
    ) -> None:
        self.latency = latency or Latency()
        self.faults = faults or Faults()
        self.recorder = Recorder(qps)
        self.injections = Injections()
        self.rng = LockedRandom(seed)
        self.stopping = threading.Event()
        self.task_status_on_fail = task_status_on_fail
        self.base_url = ""
        self.files = FileStore()
        self.uploads = FileStore()
        self._pool_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking early when the emulator stops. Returns True if it is stopping."""
        if seconds <= 0:
            return self.stopping.is_set()
        return self.stopping.wait(seconds)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the parse pool (created on first use)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aisearch-emulator-parse")
            return self._pool.submit(fn)

    def shutdown(self) -> None:
        """Stop the parse pool without waiting for running parses."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def file_url(self, name: str) -> str:
        """The URL of a file in :attr:`files`."""
        return f"{self.base_url}/_emulator/files/{quote(name)}"

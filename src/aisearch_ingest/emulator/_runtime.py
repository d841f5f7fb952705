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
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from ._control import Faults, Injections, Latency, LockedRandom, Recorder
from ._http import JsonReply

__all__ = [
    "LOCAL_EXTRA_HINT",
    "FileStore",
    "Runtime",
    "UrlPolicy",
    "acs_request_id",
    "count_tokens",
    "dashscope_request_id",
    "error_reply",
    "fetch_url",
    "is_loopback_url",
    "load_offline",
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
    """Tokens in ``text`` as the offline engine counts them (tiktoken's bundled ``cl100k_base``, an approximation of
    Qwen's tokenizer); a word-and-punctuation count if the engine cannot be imported."""
    if not text:
        return 0
    try:
        counter = load_offline().count_tokens
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
    return _is_loopback_name(parts.hostname)


def _is_loopback_name(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: Where the emulator serves its own files (:meth:`Runtime.file_url`).
_FILES_PREFIX = "/_emulator/files/"


def _redirect_handler() -> Any:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        # Returning None makes urllib raise the 3xx as an HTTPError instead of following it: an allowed URL must not
        # lead the emulator on to one that is not (another local service, a token file...).
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return NoRedirect()


def _url_prefix(prefix: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path)`` of an ``allow_urls`` entry.

    Raises:
        ValueError: not an http(s) URL on a loopback host, or one with user info, a query or a fragment.
    """
    try:
        parts = urlsplit(prefix)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"allowed URL prefix {prefix!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"allowed URL prefix {prefix!r} must be an http(s) URL such as http://127.0.0.1:9000/")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"allowed URL prefix {prefix!r} must have no user info, query or fragment")
    if not is_loopback_url(prefix):
        raise ValueError(
            f"allowed URL prefix {prefix!r} is not on 127.0.0.1/localhost: the emulator is offline and downloads "
            "nothing from other hosts"
        )
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port, parts.path or "/"


def _path_under(path: str, prefix_path: str) -> bool:
    if prefix_path in ("", "/") or path == prefix_path:
        return True
    return path.startswith(prefix_path if prefix_path.endswith("/") else prefix_path + "/")


class UrlPolicy:
    """Which URLs the emulator downloads (``document.url``, Qwen-OCR image URLs).

    By default only its own files (:meth:`Emulator.serve_file`, ``output.image_storage=url`` links), read from its
    store without a request; URLs under an ``allow_urls`` prefix (loopback only: the emulator is offline) are
    downloaded with no proxy and **no redirects**. Everything else is refused before any connection is made, so an
    emulator shared with a team (``--host``) cannot be used to read other local services.
    """

    def __init__(self, allow_urls: Sequence[str] = ()) -> None:
        if isinstance(allow_urls, str):
            raise TypeError("allow_urls must be a sequence of URL prefixes, not one string")
        self.prefixes = tuple(_url_prefix(p) for p in allow_urls)
        self.allow_urls = tuple(allow_urls)

    def allowed(self, url: str) -> bool:
        """Whether ``url`` is under one of the allowed prefixes (scheme, host and port equal, path under)."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        return any(
            parts.scheme == scheme and host == p_host and port == p_port and _path_under(parts.path or "/", p_path)
            for scheme, p_host, p_port, p_path in self.prefixes
        )


def fetch_url(
    url: str,
    *,
    policy: UrlPolicy,
    own_files: FileStore,
    own_host: str,
    own_port: int,
    timeout: float = 10.0,
    max_bytes: int = 100 * 1024 * 1024,
) -> bytes:
    """The bytes at ``url``, if the emulator may fetch it (see :class:`UrlPolicy`).

    Raises:
        OSError: with the reason: a URL the policy refuses (not loopback: "offline"; not the emulator's own file nor
            under an allowed prefix), a redirect, a network error, an HTTP error status or a body over ``max_bytes``.
    """
    import urllib.error
    import urllib.request

    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise OSError(f"not a valid URL ({exc})") from exc
    if parts.username is not None or parts.password is not None:
        raise OSError("URLs with user info (user@host) are not downloaded")
    path = unquote(parts.path or "/")
    if any(segment in (".", "..") for segment in path.split("/")) or "\\" in path:
        raise OSError("URLs with '.' or '..' path segments are not downloaded")
    host = (parts.hostname or "").lower()
    if (
        parts.scheme == "http"
        and port == own_port
        and (host == own_host.lower() or _is_loopback_name(host))
        and path.startswith(_FILES_PREFIX)
    ):
        # One of its own files: read from the store, no request (also when bound to a public address).
        found = own_files.get(path[len(_FILES_PREFIX) :])
        if found is None:
            raise OSError(f"HTTP 404 from {url}: the emulator serves no such file")
        if len(found[0]) > max_bytes:
            raise OSError(f"the file at {url} is larger than {max_bytes} bytes")
        return found[0]
    if not is_loopback_url(url):
        raise OSError(
            "the emulator is offline and can only download http URLs on 127.0.0.1/localhost; "
            "send the file as content instead"
        )
    if not policy.allowed(url):
        raise OSError(
            "the emulator downloads only the files it serves itself (Emulator.serve_file) and URLs under the "
            "prefixes it was started with (allow_urls=(...) / --allow-url PREFIX); this URL is neither"
        )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _redirect_handler())
    try:
        with opener.open(url, timeout=timeout) as response:
            data: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            location = exc.headers.get("Location", "") if exc.headers is not None else ""
            exc.close()
            raise OSError(
                f"HTTP {exc.code} redirect to {location or '(no Location)'}: the emulator follows no redirects; "
                "give the file's own URL"
            ) from exc
        exc.close()
        raise OSError(f"HTTP {exc.code} from {url}") from exc
    except (urllib.error.URLError, ValueError) as exc:
        raise OSError(str(getattr(exc, "reason", exc))) from exc
    if len(data) > max_bytes:
        raise OSError(f"the file at {url} is larger than {max_bytes} bytes")
    return data


def load_offline() -> ModuleType:
    """Import the offline engine, :mod:`aisearch_ingest.emulator.offline` (its parsers need the ``local`` extra for
    images and PDF). Imported here, on the first request that needs it, so importing the emulator stays cheap.

    Raises:
        ImportError: when the engine or one of its dependencies is missing.
    """
    return importlib.import_module("aisearch_ingest.emulator.offline")


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
        allow_urls: Sequence[str] = (),
    ) -> None:
        self.url_policy = UrlPolicy(allow_urls)
        self.latency = latency or Latency()
        self.faults = faults or Faults()
        self.recorder = Recorder(qps)
        self.injections = Injections()
        self.rng = LockedRandom(seed)
        self.stopping = threading.Event()
        self.task_status_on_fail = task_status_on_fail
        self.base_url = ""
        self.host = ""
        self.port = 0
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

    def fetch(self, url: str, *, max_bytes: int = 100 * 1024 * 1024) -> bytes:
        """The bytes at ``url`` under the emulator's :class:`UrlPolicy`.

        Raises:
            OSError: with the reason it was refused or failed.
        """
        return fetch_url(
            url,
            policy=self.url_policy,
            own_files=self.files,
            own_host=self.host,
            own_port=self.port,
            max_bytes=max_bytes,
        )

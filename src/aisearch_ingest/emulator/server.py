"""The local emulator: one HTTP server on 127.0.0.1 speaking AI Search, DashScope Qwen-OCR and its
OpenAI-compatible mode, as ``PROTOCOL.md`` describes them.

Every request goes through the same pipeline::

    route → count (stats + QPS window) → 404 unknown path → 401 auth → 405 method → 429 QPS limit
          → scripted fault (inject) → random fault (Faults) → the route's handler

so statistics and the QPS window see every call, refused ones included. Decisions the vendor's pages leave
open, and what the emulator chose:

* **QPS limit.** At most ``floor(qps)`` calls in any sliding 1-second window across all service routes (for
  ``qps < 1``: one call per ``1/qps`` seconds). Beyond it: 429 with the service's error body, ``Retry-After``
  as an integer number of seconds >= 1 (the gateway convention), on AI Search routes ``x-acs-retry-after`` with
  the precise delay in integer **milliseconds** (e.g. ``237``: what the SDK core ``alibabacloud_tea_openapi``
  reads), and on the OpenAI-compatible route ``retry-after-ms`` too. Refused calls stay in the window, so a
  client that keeps hammering stays throttled.
* **Auth.** ``Authorization: Bearer <key>``. With a key (given, or ``AISEARCH_API_KEY`` / ``DASHSCOPE_API_KEY``
  read at :meth:`Emulator.start` for the AI Search / DashScope routes) any other token is a 401; with none, any
  Bearer token passes, but a missing header is a 401. Bound to a non-loopback address (``--host``), it refuses to
  start unless both route families have a key.
* **URLs.** ``document.url`` and Qwen-OCR image URLs are downloaded only when they are the emulator's own files
  (:meth:`Emulator.serve_file`) or under an ``allow_urls`` / ``--allow-url`` prefix (loopback only), and no redirect
  is followed: an emulator shared with a team cannot read other local services for its callers.
* **AI Search errors.** ``{"request_id","latency","http_code","code","message"}`` and ``x-acs-request-id`` on
  every response; an unknown service id is a 400 ``InvalidParameter`` (a 404 would read as a missing task);
  throttling is ``Throttling.RateQuota`` (the gateway's code, which Alibaba's own LlamaIndex reader retries on),
  auth ``Unauthorized``. DashScope answers ``Throttling.RateQuota`` too (its documented code), compatible mode
  ``limit_requests``.
* **Random 429s** (``Faults.rate_429``) carry no ``Retry-After``: they test the client's own backoff. Scripted
  ones (:meth:`Emulator.inject`) carry exactly the header asked for.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from ._aisearch import AISearchService
from ._control import INJECTION_KINDS, TRANSPORT_KINDS, EmulatorStats, Faults, Injection, InjectionKind, Latency
from ._http import DropReply, JsonReply, Reply, Request, Server
from ._qwen import QwenService
from ._runtime import Runtime, error_reply

__all__ = ["ROUTES", "Emulator"]

logger = logging.getLogger("aisearch_ingest.emulator")

#: Every counted route name, for ``inject(route=...)`` and :attr:`EmulatorStats.calls_by_route`.
ROUTES = (
    "image-analyze/async",
    "image-analyze/task-status",
    "image-analyze/sync",
    "document-analyze/async",
    "document-analyze/task-status",
    "document-analyze/sync",
    "dashscope/generation",
    "dashscope/uploads",
    "compatible/chat-completions",
    "unknown",
)

_AISEARCH_RE = re.compile(
    r"^/v3/openapi/workspaces/(?P<ws>[^/]+)/(?P<kind>image-analyze|document-analyze)/(?P<sid>[^/]+)"
    r"/(?P<op>async/task-status|async|sync)/?$"
)
_GENERATION_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
_UPLOADS_PATH = "/api/v1/uploads"
_CHAT_PATH = "/compatible-mode/v1/chat/completions"
_AUTH_MESSAGES = {
    "aisearch": ("Missing the Authorization header: send 'Authorization: Bearer <API key>'.", "Invalid API key."),
    "dashscope": ("No API-key provided.", "Invalid API-key provided."),
    "compatible": ("You didn't provide an API key.", "Incorrect API key provided."),
}


@dataclass(frozen=True)
class _Match:
    route: str
    family: str  # aisearch | dashscope | compatible | internal
    method: str = "GET"
    params: tuple[str, ...] = ()


def _resolve(path: str) -> _Match:
    m = _AISEARCH_RE.match(path)
    if m is not None:
        op = "task-status" if m["op"] == "async/task-status" else m["op"]
        method = "GET" if op == "task-status" else "POST"
        params = (m["kind"], unquote(m["ws"]), unquote(m["sid"]), op)
        return _Match(f"{m['kind']}/{op}", "aisearch", method, params)
    if path == _GENERATION_PATH:
        return _Match("dashscope/generation", "dashscope", "POST")
    if path.rstrip("/") == _UPLOADS_PATH:
        return _Match("dashscope/uploads", "dashscope", "GET")
    if path == _CHAT_PATH:
        return _Match("compatible/chat-completions", "compatible", "POST")
    if path.startswith("/_emulator/files/"):
        return _Match("emulator/files", "internal", "GET", (unquote(path[len("/_emulator/files/") :]),))
    if path == "/_emulator/oss":
        return _Match("emulator/oss-upload", "internal", "POST")
    if path == "/_emulator/health":
        return _Match("emulator/health", "internal", "GET")
    if path.startswith("/api/"):
        return _Match("unknown", "dashscope")
    if path.startswith("/compatible-mode/"):
        return _Match("unknown", "compatible")
    return _Match("unknown", "aisearch")


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0").rstrip(".")


class Emulator:
    """A local stand-in for AI Search document-analyze/image-analyze and DashScope Qwen-OCR.

    It serves on a background thread until :meth:`stop`; use it as a context manager::

        with Emulator(api_key="test-key") as emu:
            client = Client(Config(bearer_token="test-key", endpoint=emu.endpoint, protocol="http"))
            openai_client = OpenAI(api_key="test-key", base_url=emu.url + "/compatible-mode/v1")

    Args:
        api_key: the one key every route accepts. ``None``: ``AISEARCH_API_KEY`` for the AI Search routes and
            ``DASHSCOPE_API_KEY`` for the DashScope routes, read at :meth:`start`; where unset, any Bearer token.
        host: address to bind; a non-loopback address needs ``allow_non_loopback=True``.
        port: port to bind; 0 picks a free one.
        qps: limit on calls in any sliding 1-second window across all routes; None for no limit.
        latency: processing time model; zero by default.
        faults: random and name-triggered faults; none by default.
        seed: seed of the RNG behind the fault rates.
        task_status_on_fail: the status a failed task reports (``FAIL``; the pages also show ``FAILED``).
        allow_non_loopback: permit binding a non-loopback ``host`` (the CLI sets it when ``--host`` is given). Such
            an emulator needs a key for both families of routes (``api_key``, or both environment variables):
            :meth:`start` refuses to bind without one.
        allow_urls: URL prefixes (``"http://127.0.0.1:9000/docs/"``, loopback only) whose files ``document.url``
            and Qwen-OCR image URLs may name, besides the emulator's own files (:meth:`serve_file`), which are
            always allowed. Nothing else is downloaded, and no redirect is followed.

    Raises:
        ValueError: for a non-loopback host without ``allow_non_loopback``, a bad ``allow_urls`` prefix, or a bad
            knob value.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        qps: float | None = None,
        latency: Latency | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        task_status_on_fail: str = "FAIL",
        allow_non_loopback: bool = False,
        allow_urls: Sequence[str] = (),
    ) -> None:
        if not allow_non_loopback and not _is_loopback_host(host):
            raise ValueError(f"refusing to bind non-loopback host {host!r}; pass allow_non_loopback=True")
        if not task_status_on_fail or task_status_on_fail in ("PENDING", "SUCCESS"):
            raise ValueError("task_status_on_fail must be a failure status such as 'FAIL' or 'FAILED'")
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key must be None or a non-empty string")
        self._api_key = api_key
        self._defaults = (qps, latency, faults)
        self._host = host.strip("[]")
        self._port = port
        self._rt = Runtime(
            qps=qps,
            latency=latency,
            faults=faults,
            seed=seed,
            task_status_on_fail=task_status_on_fail,
            allow_urls=allow_urls,
        )
        self._aisearch = AISearchService(self._rt)
        self._qwen = QwenService(self._rt)
        self._keys: dict[str, str | None] = {"aisearch": None, "dashscope": None}
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle

    def start(self) -> Emulator:
        """Bind and serve on a background thread. Idempotent. Returns ``self``.

        Raises:
            OSError: when the address cannot be bound (port in use...).
            ValueError: for a non-loopback host with no key for one of the route families (checked before binding).
        """
        with self._lock:
            if self._server is not None:
                return self
            if self._api_key is not None:
                keys: dict[str, str | None] = {"aisearch": self._api_key, "dashscope": self._api_key}
            else:
                keys = {
                    "aisearch": os.environ.get("AISEARCH_API_KEY") or None,
                    "dashscope": os.environ.get("DASHSCOPE_API_KEY") or None,
                }
            if not _is_loopback_host(self._host):
                missing = [name for name, key in keys.items() if key is None]
                if missing:
                    env = " and ".join(f"{name.upper()}_API_KEY" for name in missing)
                    raise ValueError(
                        f"refusing to serve on non-loopback host {self._host!r} without an API key: anyone who can "
                        f"reach it could use it with any token; give api_key= / --api-key, or set {env}"
                    )
            self._keys = keys
            self._rt.stopping.clear()
            server = Server(self._host, self._port, self._app, self._rt.stopping)
            port = int(server.server_address[1])
            host = f"[{self._host}]" if ":" in self._host else self._host
            self._rt.base_url = f"http://{host}:{port}"
            self._rt.host, self._rt.port = self._host, port
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"aisearch-emulator-{port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        logger.info("emulator listening on %s", self._rt.base_url)
        return self

    def stop(self) -> None:
        """Stop serving: close open connections, join the server thread, free the port. Idempotent."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._rt.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        self._rt.shutdown()
        logger.info("emulator on %s stopped", self._rt.base_url)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self._rt.base_url if self.running else "stopped"
        auth = "fixed key" if self._api_key is not None else "env/any key"
        return f"<Emulator {state} ({auth})>"

    # --- addresses

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``.

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() or use it as a context manager")
        return self._rt.base_url

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``: what the Alibaba SDK's ``Config(endpoint=..., protocol="http")`` wants."""
        return self.url.split("://", 1)[1]

    @property
    def aisearch_endpoint(self) -> str:
        """The AI Search endpoint for our client (``AISEARCH_ENDPOINT``): the URL."""
        return self.url

    @property
    def dashscope_base_url(self) -> str:
        """The DashScope base for our client (``DASHSCOPE_BASE_URL``): the URL; clients append ``/api/v1/...``
        and ``/compatible-mode/v1/...``."""
        return self.url

    @property
    def api_key(self) -> str | None:
        """The key given to the constructor (None when keys come from the environment or any key passes)."""
        return self._api_key

    def expected_key(self, service: str) -> str | None:
        """The key the ``aisearch`` or ``dashscope`` routes require once started; None when any key passes."""
        if service not in self._keys:
            raise ValueError("service must be 'aisearch' or 'dashscope'")
        return self._keys[service]

    # --- knobs

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the counters."""
        return self._rt.recorder.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters (the QPS window is kept)."""
        self._rt.recorder.reset()

    def reset(self) -> None:
        """Back to the constructor's QPS limit, latency and faults, with no scripted faults, zeroed counters
        and an empty QPS window (tasks and uploads are kept). The pytest fixture calls it around each test."""
        qps, latency, faults = self._defaults
        self._rt.recorder.set_qps(qps)
        self._rt.recorder.clear_window()
        self.set_latency(latency)
        self.set_faults(faults)
        self.clear_injections()
        self.reset_stats()

    def set_qps(self, qps: float | None) -> None:
        """Change the QPS limit live; None removes it."""
        self._rt.recorder.set_qps(qps)

    def set_latency(self, latency: Latency | float | None) -> None:
        """Change the latency model live (a number means ``Latency(fixed=number)``). Running tasks keep theirs."""
        if latency is None:
            latency = Latency()
        elif not isinstance(latency, Latency):
            latency = Latency(fixed=float(latency))
        self._rt.latency = latency

    def set_faults(self, faults: Faults | None) -> None:
        """Change the fault model live."""
        self._rt.faults = faults or Faults()

    def inject(
        self,
        kind: InjectionKind,
        *,
        count: int = 1,
        route: str | None = None,
        retry_after: float | None = None,
        retry_after_header: str = "Retry-After",
    ) -> None:
        """Script a fault for the next ``count`` matching requests.

        Args:
            kind: 429, 500 or 503 (answer with that status), ``"drop"`` (close the connection without a
                response), ``"drop_after"`` (do the work -- create the task, bill the call -- then close the
                connection without the answer: a lost answer to a billed call);
                ``"stream_cut"`` (close a Qwen-OCR stream mid-way), ``"stream_error"`` (an SSE error
                event, status 500, mid-stream), ``"data_inspection"`` (400 ``DataInspectionFailed``; mid-stream
                for a stream); ``"task_fail"`` / ``"task_hang"`` (the next AI Search task fails / never ends).
            count: how many requests it hits.
            route: only requests of this route: a name from :data:`ROUTES`, a service prefix
                (``"document-analyze"``, ``"dashscope"``) or an operation suffix (``"task-status"``).
            retry_after: for 429, the delay hint in seconds.
            retry_after_header: the header carrying it: ``Retry-After`` (seconds), ``x-acs-retry-after``
                (integer milliseconds, as AI Search's gateway sends it) or ``retry-after-ms`` (milliseconds).

        Raises:
            ValueError: for an unknown kind or route, or a bad count or delay.
        """
        if kind not in INJECTION_KINDS or isinstance(kind, bool):
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(map(str, INJECTION_KINDS))}")
        if count < 1:
            raise ValueError("count must be >= 1")
        if retry_after is not None and (retry_after < 0 or not math.isfinite(retry_after)):
            raise ValueError("retry_after must be a finite number of seconds >= 0")
        injection = Injection(kind, count, route, retry_after, retry_after_header)
        if route is not None and not any(injection.matches(r) for r in ROUTES):
            raise ValueError(f"unknown route {route!r}; expected a name, prefix or suffix of {', '.join(ROUTES)}")
        self._rt.injections.add(injection)

    def clear_injections(self) -> None:
        """Drop every scripted fault not yet used."""
        self._rt.injections.clear()

    @property
    def pending_injections(self) -> int:
        """Scripted faults not yet used."""
        return self._rt.injections.pending()

    def serve_file(self, data: bytes, name: str, content_type: str = "application/octet-stream") -> str:
        """Host ``data`` at a loopback URL (for ``document.url`` or image URLs); returns the URL.

        The emulator's own files are the URLs it downloads without an ``allow_urls`` prefix."""
        if "/" in name or not name:
            raise ValueError("name must be a plain file name")
        self._rt.files.put(name, data, content_type)
        return self._rt.file_url(name)

    # --- the request pipeline

    def _app(self, request: Request) -> Reply:
        match = _resolve(request.path)
        if match.family == "internal":
            self._rt.recorder.call(match.route, None, counted=False)
            return self._internal(request, match)
        retry_in = self._rt.recorder.call(match.route, request.header("x-acs-action") or None)
        reply = self._pipeline(request, match, retry_in)
        if isinstance(reply, DropReply):
            self._rt.recorder.dropped()
        else:
            self._rt.recorder.response(reply.status)
        return reply

    def _pipeline(self, request: Request, match: _Match, retry_in: float | None) -> Reply:
        family = match.family
        if match.route == "unknown":
            return error_reply(family, 404, f"{request.method} {request.path} is not a route of this service")
        denied = self._authenticate(request, family)
        if denied is not None:
            return denied
        if request.method != match.method:
            return error_reply(family, 405, f"use {match.method} for {request.path}", headers={"Allow": match.method})
        if retry_in is not None:
            headers = {"Retry-After": str(max(1, math.ceil(retry_in)))}
            if family == "aisearch":
                # Integer milliseconds, as the AI Search SDK core (alibabacloud_tea_openapi
                # Utils.get_throttling_time_left) reads it; a value <= 0 is ignored there, hence >= 1.
                headers["x-acs-retry-after"] = str(max(1, math.ceil(retry_in * 1000)))
            if family == "compatible":
                headers["retry-after-ms"] = str(max(1, math.ceil(retry_in * 1000)))
            return error_reply(family, 429, headers=headers)
        injected = self._rt.injections.take(match.route, TRANSPORT_KINDS)
        if injected is not None and injected.kind == "drop_after":
            # The service does the work (a task is created, a sync call is billed), then the answer is lost.
            self._serve(request, match)
            return DropReply()
        if injected is not None:
            return self._injected(injected, family)
        faults, rng = self._rt.faults, self._rt.rng
        if rng.chance(faults.rate_drop):
            return DropReply()
        if rng.chance(faults.rate_429):
            return error_reply(family, 429)
        if rng.chance(faults.rate_5xx):
            return error_reply(family, rng.choice((500, 503)), "emulated server fault")
        return self._serve(request, match)

    def _serve(self, request: Request, match: _Match) -> Reply:
        if match.family == "aisearch":
            kind, workspace, service_id, op = match.params
            return self._aisearch.handle(request, match.route, kind, workspace, service_id, op)
        if match.route == "dashscope/uploads":
            return self._qwen.upload_policy(request)
        return self._qwen.generation(request, match.route, "native" if match.family == "dashscope" else "compatible")

    def _authenticate(self, request: Request, family: str) -> JsonReply | None:
        expected = self._keys["aisearch" if family == "aisearch" else "dashscope"]
        missing, invalid = _AUTH_MESSAGES[family]
        header = request.header("Authorization").strip()
        if not header:
            return error_reply(family, 401, missing)
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return error_reply(family, 401, f"{invalid} Only 'Authorization: Bearer <API key>' is emulated.")
        if expected is not None and not hmac.compare_digest(token.encode(), expected.encode()):
            return error_reply(family, 401, invalid)
        return None

    @staticmethod
    def _injected(injection: Injection, family: str) -> Reply:
        if injection.kind == "drop":
            return DropReply()
        status = int(str(injection.kind))
        headers: dict[str, str] = {}
        if injection.retry_after is not None:
            name = injection.retry_after_header
            if name.lower() in ("retry-after-ms", "x-acs-retry-after"):
                headers[name] = str(math.ceil(injection.retry_after * 1000))
            else:
                headers[name] = _format_seconds(injection.retry_after)
        message = None if status == 429 else "emulated server fault (injected)"
        return error_reply(family, status, message, headers=headers)

    def _internal(self, request: Request, match: _Match) -> Reply:
        if match.route == "emulator/oss-upload":
            return self._qwen.oss_upload(request)
        if match.route == "emulator/health":
            return JsonReply(200, {"status": "ok"})
        found = self._rt.files.get(match.params[0])
        if found is None or request.method not in ("GET", "HEAD"):
            return JsonReply(404, raw=b"not found", content_type="text/plain")
        data, content_type = found
        return JsonReply(200, raw=data, content_type=content_type)

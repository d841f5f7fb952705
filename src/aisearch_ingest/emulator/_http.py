"""HTTP plumbing: a threading HTTP/1.1 server that reads requests and writes replies; no service logic.

Replies are plain objects (:class:`JsonReply`, :class:`StreamReply`, :class:`DropReply`) built by the service
modules; the handler only frames them: ``Content-Length`` for whole bodies (keep-alive works), chunked transfer
encoding for streams (so a stream can be *cut*: the connection closes before the terminating chunk).
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "CUT",
    "DropReply",
    "JsonReply",
    "Reply",
    "Request",
    "Server",
    "StreamItem",
    "StreamReply",
]

logger = logging.getLogger("aisearch_ingest.emulator")

#: Request bodies larger than this are not read at all (the reply closes the connection).
HARD_BODY_CAP = 64 * 1024 * 1024
#: Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT = 120.0


@dataclass
class Request:
    """One parsed HTTP request.

    Attributes:
        method: ``GET``, ``POST``...
        path: the path without the query string (percent-encoding kept).
        query: the parsed query string.
        headers: the request headers (case-insensitive ``get``).
        body: the body bytes (empty when ``body_too_large``).
        body_size: the declared or read body size.
        body_too_large: the body exceeded :data:`HARD_BODY_CAP` and was not read.
        received: ``time.monotonic()`` when the request line was read.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    body_size: int
    body_too_large: bool = False
    received: float = field(default_factory=time.monotonic)

    def header(self, name: str, default: str = "") -> str:
        """A header value, or ``default``."""
        value = self.headers.get(name)
        return value if value is not None else default

    def query_value(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class JsonReply:
    """A complete response. ``body`` is JSON-encoded unless ``raw`` is given."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json;charset=UTF-8"
    close: bool = False

    def payload(self) -> bytes:
        """The body bytes."""
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Cut:
    """Stream marker: close the connection here, without the terminating chunk."""

    def __repr__(self) -> str:
        return "CUT"


CUT = _Cut()
#: What a stream yields: bytes to send as one chunk, a float to sleep that many seconds, or :data:`CUT`.
StreamItem = bytes | float | _Cut


@dataclass
class StreamReply:
    """A streamed 200 response, sent with chunked transfer encoding."""

    events: Iterator[StreamItem]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream;charset=UTF-8"
    status: int = 200


@dataclass
class DropReply:
    """Close the connection without sending anything."""


Reply = JsonReply | StreamReply | DropReply


class _BodyError(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aisearch-ingest-emulator"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    # headers and body are separate writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per response
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> tuple[bytes, int, bool]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise _BodyError("truncated chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise _BodyError("malformed chunk size") from exc
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > HARD_BODY_CAP:
                    raise _BodyError("chunked body over the hard cap")
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(parts), total, False
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b"", 0, False
        try:
            length = int(raw_length)
        except ValueError as exc:
            raise _BodyError("malformed Content-Length") from exc
        if length < 0:
            raise _BodyError("negative Content-Length")
        if length > HARD_BODY_CAP:
            return b"", length, True
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BodyError("body shorter than Content-Length")
        return body, length, False

    def _serve(self) -> None:
        received = time.monotonic()
        parts = urlsplit(self.path)
        try:
            body, size, too_large = self._read_body()
        except (_BodyError, OSError) as exc:
            logger.debug("emulator: unreadable request body: %s", exc)
            self.close_connection = True
            self._write_json(JsonReply(400, raw=b"bad request body", content_type="text/plain", close=True))
            return
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            body_size=size,
            body_too_large=too_large,
            received=received,
        )
        try:
            reply = self.server.app(request)
        except Exception:  # a bug in a route must not kill the connection silently
            logger.exception("emulator: unhandled error for %s %s", self.command, parts.path)
            reply = JsonReply(500, {"code": "InternalError", "message": "emulator bug, see the log"}, close=True)
        if too_large:
            self.close_connection = True
        try:
            if isinstance(reply, DropReply):
                self.close_connection = True
            elif isinstance(reply, StreamReply):
                self._write_stream(reply)
            else:
                self._write_json(reply)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.close_connection = True

    def _headers(self, status: int, headers: Mapping[str, str], content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)

    def _write_json(self, reply: JsonReply) -> None:
        payload = reply.payload()
        if reply.close:
            self.close_connection = True
        self._headers(reply.status, reply.headers, reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _write_stream(self, reply: StreamReply) -> None:
        self._headers(reply.status, reply.headers, reply.content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for item in reply.events:
            if isinstance(item, _Cut):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if isinstance(item, float):
                if self.server.stopping.wait(item):
                    self.close_connection = True
                    return
                continue
            if item:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(item), item))
        self.wfile.write(b"0\r\n\r\n")

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_PATCH = _serve
    do_HEAD = _serve
    do_OPTIONS = _serve


class Server(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` (daemon threads) that can close its open keep-alive connections on stop."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a client opening dozens of connections at once overflowed it, and
    # Linux then resets connections whose request was already written -- a failure no real gateway shows.
    request_queue_size = 1024

    def __init__(self, host: str, port: int, app: Callable[[Request], Reply], stopping: threading.Event) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.stopping = stopping
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._conns[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._conns.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("emulator: connection error from %s", client_address, exc_info=True)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut down every open connection and wait (up to ``timeout``) for their threads."""
        with self._conn_lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for _, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))

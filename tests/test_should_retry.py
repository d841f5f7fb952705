"""``x-should-retry`` read both ways, over real sockets, with openai-python as the independent witness.

openai-python (and every Stainless SDK, DashScope's OpenAI-compatible mode among the servers that speak it) lets the
server override the status: ``x-should-retry: true`` retries an answer that would not be retried (a 400),
``false`` stops the retry of one that would (a 503). Both clients are pointed at the same small HTTP server and the
requests it receives are counted: ours must match the SDK's, call for call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import pytest

from aisearch_ingest.config import SecretStr
from aisearch_ingest.errors import APIStatusError
from aisearch_ingest.transport import RetryPolicy, Transport

ANSWER = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}


class _Script:
    """What the server answers: ``failures`` error answers (``status`` with ``should_retry``), then 200."""

    def __init__(self) -> None:
        self.status = 400
        self.should_retry: str | None = None
        self.failures = 1
        self.seen = 0
        self.lock = threading.Lock()

    def reset(self, status: int, should_retry: str | None, failures: int) -> None:
        with self.lock:
            self.status, self.should_retry, self.failures, self.seen = status, should_retry, failures, 0


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, _Script]]:
    script = _Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            with script.lock:
                script.seen += 1
                fail = script.seen <= script.failures
                status, hint = script.status, script.should_retry
            body = json.dumps({"error": {"message": "scripted", "code": "scripted"}} if fail else ANSWER).encode()
            self.send_response(status if fail else 200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            if fail and hint is not None:
                self.send_header("x-should-retry", hint)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


async def _no_sleep(_: float) -> None:
    return None


def _ours(url: str) -> int | str:
    async def run() -> int | str:
        transport = Transport(url, SecretStr("test"), retry=RetryPolicy(max_retries=2), sleep=_no_sleep)
        try:
            await transport.request("POST", "/v1/chat/completions", json_body={"model": "m"})
            return "ok"
        except APIStatusError as exc:
            return exc.status_code
        finally:
            await transport.aclose()

    return anyio.run(run)


def _openai(url: str) -> int | str:
    import openai

    client = openai.OpenAI(api_key="test", base_url=url + "/v1", max_retries=2)
    client._calculate_retry_timeout = lambda *a, **k: 0.0  # type: ignore[method-assign]  # the SDK's own backoff
    try:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        return "ok"
    except openai.APIStatusError as exc:
        return exc.status_code
    finally:
        client.close()


@pytest.mark.parametrize(
    ("status", "hint", "expected_calls", "expected"),
    [
        (400, "true", 2, "ok"),  # a 400 the server says to retry: retried, then 200
        (400, None, 1, 400),  # a plain 400: never retried
        (503, "false", 1, 503),  # a 503 the server says not to retry: given up at once
        (503, None, 2, "ok"),  # a plain 503: retried
        (429, "false", 1, 429),
    ],
)
def test_x_should_retry_both_ways_as_openai_python(
    server: tuple[str, _Script], status: int, hint: str | None, expected_calls: int, expected: int | str
) -> None:
    url, script = server
    script.reset(status, hint, failures=1)
    assert _ours(url) == expected
    ours = script.seen
    script.reset(status, hint, failures=1)
    assert _openai(url) == expected
    assert (ours, script.seen) == (expected_calls, expected_calls)

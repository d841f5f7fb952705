"""Issue 14 (hardening): the API key is nowhere but in the request sent -- not in frame locals of any error path,
logs, exception chains, reprs, pickles, results, the cache file or the CLI's output -- and a URL source's query
(a presigned URL's signature) is nowhere but in the request body sent to the service.

Everything runs against the emulator over real sockets; the transport is never patched.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import aisearch_ingest
from aisearch_ingest import DocumentAnalyzer, ImageAnalyzer
from aisearch_ingest.cache import CACHE_ENV, ResultCache
from aisearch_ingest.config import resolve_aisearch, resolve_dashscope
from aisearch_ingest.errors import (
    AISearchIngestError,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamError,
    TaskFailedError,
)
from aisearch_ingest.qwen import QwenOCR
from aisearch_ingest.results import Outcome
from aisearch_ingest.sources import load_source
from samples import pdf as _pdf
from samples import png as _png

pytest.importorskip("rapidocr", reason="the emulator's OCR needs the `local` extra")
from aisearch_ingest.emulator import Emulator, Latency

#: The key every client here uses: distinctive, so a leak anywhere is found by a plain substring search.
KEY = "sk-TEST-SECRET-9f8e7d"
#: What must never appear: the key, its base64 (a Basic-auth-like encoding) and the header line.
NEEDLES = (KEY, base64.b64encode(KEY.encode()).decode(), f"Bearer {KEY}")
#: A presigned URL's secret part.
SIGNATURE = "SIGNATURE-c0ffee-0077"
QUERY = f"?Expires=1893456000&OSSAccessKeyId=LTAI-demo&Signature={SIGNATURE}"


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def _leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        return [n for n in NEEDLES if n.encode() in text]
    return [n for n in NEEDLES if n in text]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


def _shown(exc: BaseException) -> str:
    """The string, repr, args and attributes of each exception of the chain, and the plain formatted traceback."""
    parts = ["".join(traceback.format_exception(exc))]
    for item in _chain(exc):
        parts += [str(item), repr(item), repr(getattr(item, "__dict__", {})), repr(item.args)]
    return "\n".join(parts)


def _everything_about(exc: BaseException) -> str:
    """What tools record of an exception: :func:`_shown`, plus the traceback with every frame's locals (chained
    causes too)."""
    return _shown(exc) + "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY, seed=3) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean_emulator(emu: Emulator) -> Iterator[None]:
    emu.reset()
    yield
    emu.reset()


@pytest.fixture(scope="module")
def png() -> bytes:
    return _png("Invoice 2026 total 42")


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return _pdf(["First page about revenue.", "Second page about costs."])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the error paths ------------------------------------------------------------------------------------------------
# Each returns the exception a caller would see. None of these functions holds the key in a local: the clients get
# the module constant directly.


def _wrong_key(emu: Emulator, png: bytes) -> BaseException:
    with (
        Emulator(api_key="the-service-expects-another-key") as other,
        ImageAnalyzer(api_key=KEY, endpoint=other.url, qps=0) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.parse(png, file_name="a.png")
    return info.value


def _bad_request(emu: Emulator, png: bytes) -> BaseException:
    with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, qps=0) as client, pytest.raises(BadRequestError) as info:
        client.parse(b"plain words, not a PDF", file_name="fake.pdf")
    return info.value


def _not_found(emu: Emulator, png: bytes) -> BaseException:
    with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, qps=0) as client, pytest.raises(NotFoundError) as info:
        asyncio.run(client.await_task("00000000-0000-0000-0000-000000000000"))
    return info.value


def _throttled(emu: Emulator, png: bytes) -> BaseException:
    emu.inject(429, count=10)
    with (
        ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=0, max_retries=1, sleep=_no_sleep) as client,
        pytest.raises(RateLimitError) as info,
    ):
        client.parse(png, file_name="a.png")
    return info.value


def _server_error(emu: Emulator, png: bytes) -> BaseException:
    emu.inject(503, count=10)
    with (
        ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=0, max_retries=1, sleep=_no_sleep) as client,
        pytest.raises(ServerError) as info,
    ):
        client.parse(png, file_name="a.png")
    return info.value


def _refused(emu: Emulator, png: bytes) -> BaseException:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with (
        ImageAnalyzer(api_key=KEY, endpoint=endpoint, qps=0, max_retries=1, sleep=_no_sleep) as client,
        pytest.raises(APIConnectionError) as info,
    ):
        client.parse(png, file_name="a.png")
    return info.value


def _timeout(emu: Emulator, png: bytes) -> BaseException:
    emu.set_latency(Latency(fixed=1.5))
    with (
        ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=0, max_retries=0, request_timeout=0.3) as client,
        pytest.raises(APITimeoutError) as info,
    ):
        client.parse(png, file_name="a.png")
    return info.value


def _dropped(emu: Emulator, png: bytes) -> BaseException:
    emu.inject("drop", count=10)
    with (
        ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=0, max_retries=1, sleep=_no_sleep) as client,
        pytest.raises(APIConnectionError) as info,
    ):
        client.parse(png, file_name="a.png")
    return info.value


def _task_failed(emu: Emulator, png: bytes) -> BaseException:
    emu.inject("task_fail")
    with DocumentAnalyzer(api_key=KEY, endpoint=emu.url, qps=0) as client, pytest.raises(TaskFailedError) as info:
        client.parse(b"# Title\n\nHello", file_name="a.md")
    return info.value


def _stream_cut(emu: Emulator, png: bytes) -> BaseException:
    emu.inject("stream_cut")
    with QwenOCR(api_key=KEY, base_url=emu.url, qps=0, stream=True) as client, pytest.raises(StreamError) as info:
        client.parse(png, file_name="cut.png")
    return info.value


def _async_dropped(emu: Emulator, png: bytes) -> BaseException:
    async def run() -> None:
        async with ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=0, max_retries=0) as client:
            await client.aparse(png, file_name="a.png")

    emu.inject("drop")
    with pytest.raises(APIConnectionError) as info:
        asyncio.run(run())
    return info.value


def _batch_outcome(emu: Emulator, png: bytes) -> BaseException:
    emu.inject(503, count=10)
    with ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=0, max_retries=0) as client:
        (outcome,) = list(client.parse_many([png]))
    assert outcome.error is not None
    return outcome.error


def _bad_endpoint(emu: Emulator, png: bytes) -> BaseException:
    with pytest.raises(ConfigurationError) as info:
        DocumentAnalyzer(api_key=KEY, endpoint="ftp://files.example.com")
    return info.value


def _bad_option(emu: Emulator, png: bytes) -> BaseException:
    with pytest.raises(ValueError) as info:
        DocumentAnalyzer(api_key=KEY, endpoint=emu.url, image_storage="nowhere")  # type: ignore[arg-type]
    return info.value


def _bad_qwen_option(emu: Emulator, png: bytes) -> BaseException:
    with pytest.raises(ValueError) as info:
        QwenOCR(api_key=KEY, base_url=emu.url, api="grpc")  # type: ignore[arg-type]
    return info.value


def _bad_loader_endpoint(emu: Emulator, png: bytes) -> BaseException:
    from aisearch_ingest.langchain import DocumentAnalyzeLoader

    with pytest.raises(ConfigurationError) as info:
        DocumentAnalyzeLoader("a.pdf", api_key=KEY, endpoint="ftp://files.example.com")
    return info.value


ERROR_PATHS: dict[str, Callable[[Emulator, bytes], BaseException]] = {
    "401 wrong key": _wrong_key,
    "400 bad request": _bad_request,
    "404 unknown task": _not_found,
    "429 retries exhausted": _throttled,
    "5xx retries exhausted": _server_error,
    "connection refused": _refused,
    "read timeout": _timeout,
    "dropped connection": _dropped,
    "failed task": _task_failed,
    "Qwen-OCR stream cut": _stream_cut,
    "dropped connection, async aparse": _async_dropped,
    "5xx in a parse_many outcome": _batch_outcome,
    "bad endpoint (constructor)": _bad_endpoint,
    "bad option (DocumentAnalyzer constructor)": _bad_option,
    "bad option (QwenOCR constructor)": _bad_qwen_option,
    "bad endpoint (LangChain loader)": _bad_loader_endpoint,
}


def test_no_error_path_shows_the_key_in_frame_locals_chains_or_logs(
    emu: Emulator, png: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "aisearch_ingest"):
        caplog.set_level(logging.DEBUG, logger=name)
    leaks: dict[str, list[str]] = {}
    for path, provoke in ERROR_PATHS.items():
        emu.reset()
        exc = provoke(emu, png)
        found = _leaks(_everything_about(exc))
        if isinstance(exc, AISearchIngestError):
            try:
                found += _leaks(pickle.dumps(exc))
            except (TypeError, pickle.PicklingError):
                pass
        if found:
            leaks[path] = found
    assert leaks == {}, f"the key shows in the frames / chain of: {sorted(leaks)}"
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # the HTTP stack's DEBUG logs were captured
    logged = caplog.text + "".join(repr(r.args) + str(r.exc_info) for r in caplog.records)
    assert _leaks(logged) == []


# -- objects: repr, pickle, serialisation -----------------------------------------------------------------------------


def test_settings_refuse_to_pickle_and_never_show_the_key() -> None:
    for settings in (
        resolve_aisearch(KEY, "http://127.0.0.1:9", "default"),
        resolve_dashscope(KEY, base_url="http://127.0.0.1:9"),
    ):
        assert _leaks(repr(settings) + str(settings) + repr(settings.api_key)) == []
        with pytest.raises(TypeError, match="never pickled"):
            pickle.dumps(settings)
        with pytest.raises(TypeError, match="never pickled"):
            pickle.dumps(settings.api_key)
        assert copy.deepcopy(settings) == settings and copy.copy(settings.api_key) is settings.api_key


def test_public_objects_never_show_or_pickle_the_key(emu: Emulator, png: bytes, tmp_path: Path) -> None:
    from aisearch_ingest.langchain import DocumentAnalyzeLoader, ImageAnalyzeParser, QwenOCRLoader
    from aisearch_ingest.llama_index import DocumentAnalyzeReader, ImageAnalyzeReader, QwenOCRReader

    cache = ResultCache(tmp_path / "cache.sqlite")
    doc = DocumentAnalyzer(api_key=KEY, endpoint=emu.url, qps=0, cache=cache)
    img = ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=0)
    ocr = QwenOCR(api_key=KEY, base_url=emu.url, qps=0)
    result = img.parse(png, file_name="a.png")
    clients = [doc, img, ocr, doc._transport, ocr._transport]
    adapters: list[Any] = [
        DocumentAnalyzeLoader("a.md", api_key=KEY, endpoint=emu.url),
        ImageAnalyzeParser(api_key=KEY, endpoint=emu.url),
        QwenOCRLoader("a.png", api_key=KEY, base_url=emu.url),
    ]
    readers: list[Any] = [
        DocumentAnalyzeReader(api_key=KEY, endpoint=emu.url),
        ImageAnalyzeReader(api_key=KEY, endpoint=emu.url),
        QwenOCRReader(api_key=KEY, base_url=emu.url),
    ]
    _ = readers[2].client  # a built client is not pickled with its reader either
    plain: list[Any] = [result, Outcome(result.source, result=result), cache, load_source(png, file_name="a.png")]
    try:
        for obj in [*clients, *adapters, *readers, *plain, doc.settings, ocr.settings]:
            assert _leaks(repr(obj) + str(obj)) == [], type(obj).__name__
        for obj in [*clients, *adapters]:
            with pytest.raises(TypeError, match="cannot be pickled"):
                pickle.dumps(obj)
        for obj in [*readers, *plain[:2], load_source(png, file_name="a.png")]:
            assert _leaks(pickle.dumps(obj)) == [], type(obj).__name__
        for reader in readers:
            assert _leaks(reader.to_json() + json.dumps(reader.to_dict())) == []
        assert _leaks(json.dumps(result.to_dict())) == []
    finally:
        for client in (doc, img, ocr, *adapters, *readers):
            client.close()
        cache.close()


# -- URL sources: the query is never stored or shown ------------------------------------------------------------------


class _Bodies:
    """Records the JSON bodies sent (an httpx event hook on the client the transport uses; nothing is patched)."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def _hook(self, request: httpx.Request) -> None:
        if request.content:
            self.bodies.append(json.loads(request.content))

    def factory(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(event_hooks={"request": [self._hook]}, timeout=30.0)


def _signed(emu: Emulator, data: bytes, name: str, query: str = QUERY) -> str:
    return emu.serve_file(data, name) + query


def test_redact_url_keeps_scheme_host_and_path_only() -> None:
    from aisearch_ingest.sources import redact_url

    assert redact_url("https://u:p@Bucket.oss.example.com:8443/a%20b/c.pdf?X-Sig=1#frag") == (
        "https://Bucket.oss.example.com:8443/a%20b/c.pdf"
    )
    assert redact_url("http://h/x.png") == "http://h/x.png"
    assert redact_url("notes/a?b.md") == "notes/a?b.md" and redact_url("data:text/plain,a?b") == "data:text/plain,a?b"
    source = load_source("https://h.example.com/d/report.pdf" + QUERY)
    assert source.origin == "https://h.example.com/d/report.pdf" and source.url is not None and SIGNATURE in source.url
    assert SIGNATURE not in repr(source)


def test_a_signed_url_is_sent_in_full_and_stored_without_its_query(
    emu: Emulator, pdf: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "aisearch_ingest"):
        caplog.set_level(logging.DEBUG, logger=name)
    url = _signed(emu, pdf, "report.pdf")
    other = _signed(emu, pdf, "report.pdf", query=QUERY.replace("Expires=1893456000", "Expires=1893459999"))
    shown = url.split("?", 1)[0]
    sent = _Bodies()
    cache_path = tmp_path / "cache.sqlite"
    with DocumentAnalyzer(
        api_key=KEY, endpoint=emu.url, qps=0, cache=cache_path, http_client_factory=sent.factory
    ) as client:
        first = client.parse(url)
        again = client.parse(url)
        second = client.parse(other)
    assert [b["document"]["url"] for b in sent.bodies if "document" in b] == [url, other]  # sent in full
    assert again.cached and not second.cached  # the key still tells the two queries apart
    for result in (first, again, second):
        assert result.source == shown
        assert SIGNATURE not in json.dumps(result.to_dict()) + repr(result)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("cache.sqlite"))
    assert SIGNATURE.encode() not in stored and shown.encode() in stored and _leaks(stored) == []
    ours = [r for r in caplog.records if not r.name.startswith("aisearch_ingest.emulator")]
    assert SIGNATURE not in "".join(r.getMessage() for r in ours)


def test_document_metadata_and_errors_carry_the_url_without_its_query(
    emu: Emulator, pdf: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    from aisearch_ingest.langchain import DocumentAnalyzeLoader

    caplog.set_level(logging.DEBUG)
    url = _signed(emu, pdf, "report.pdf")
    missing = emu.url + "/_emulator/files/gone.pdf" + QUERY  # the service echoes the URL it failed to fetch
    loader = DocumentAnalyzeLoader([url, missing], api_key=KEY, endpoint=emu.url, qps=0, on_error="skip")
    try:
        docs = loader.load()
    finally:
        loader.close()
    assert docs and {d.metadata["source"] for d in docs} == {url.split("?", 1)[0]}
    assert SIGNATURE not in repr(docs)
    ((source, error),) = loader.failures
    assert source == missing.split("?", 1)[0]
    assert isinstance(error, TaskFailedError) and "gone.pdf" in str(error)
    assert SIGNATURE not in _shown(error) and "Expires=" not in str(error)  # (frame locals may hold the URL)
    ours = [r for r in caplog.records if not r.name.startswith("aisearch_ingest.emulator")]
    assert SIGNATURE not in "".join(r.getMessage() for r in ours)


def test_qwen_ocr_url_source_is_stored_without_its_query(emu: Emulator, png: bytes) -> None:
    url = _signed(emu, png, "scan.png")
    sent = _Bodies()
    with QwenOCR(api_key=KEY, base_url=emu.url, qps=0, http_client_factory=sent.factory) as client:
        result = client.parse(url)
    assert SIGNATURE in json.dumps(sent.bodies)  # the image URL is sent in full
    assert result.source == url.split("?", 1)[0] and SIGNATURE not in json.dumps(result.to_dict())


# -- the CLI ----------------------------------------------------------------------------------------------------------


def test_cli_output_holds_neither_the_key_nor_a_url_query(emu: Emulator, pdf: bytes, tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# Notes\n\nSome text.", encoding="utf-8")
    good = _signed(emu, pdf, "report.pdf")
    gone = emu.url + "/_emulator/files/gone.pdf" + QUERY
    odd = "https://files.example.com/data/table.xyz" + QUERY  # refused before anything is sent
    out = tmp_path / "out" / "chunks.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISEARCH_", "DASHSCOPE_")) or k == CACHE_ENV}
    env.update(
        AISEARCH_API_KEY=KEY,
        AISEARCH_ENDPOINT=emu.url,
        PYTHONIOENCODING="utf-8",
        PYTHONPATH=os.pathsep.join([str(Path(aisearch_ingest.__file__).parents[1]), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "aisearch_ingest.cli", "ingest", str(tmp_path / "notes.md"), good, gone, odd),
            *("--out", str(out), "--qps", "0", "--no-progress", "-v"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # two files failed
    failures = out.with_name("chunks.failures.jsonl").read_text(encoding="utf-8")
    written = out.read_text(encoding="utf-8")
    everything = proc.stdout + proc.stderr + failures + written
    assert _leaks(everything) == []
    assert SIGNATURE not in everything and "Expires=" not in everything
    assert {json.loads(line)["source"] for line in failures.splitlines()} == {
        gone.split("?", 1)[0],
        odd.split("?", 1)[0],
    }
    assert good.split("?", 1)[0] in {json.loads(line)["metadata"]["source"] for line in written.splitlines()}


def test_a_langchain_blob_from_a_signed_url_fails_without_its_query(emu: Emulator) -> None:
    from langchain_core.documents.base import Blob

    from aisearch_ingest.langchain import ImageAnalyzeParser

    parser = ImageAnalyzeParser(api_key=KEY, endpoint=emu.url, on_error="skip")
    try:
        blob = Blob(data=b"", path="scan.png", metadata={"source": "https://oss.example.com/scan.png" + QUERY})
        assert list(parser.lazy_parse(blob)) == []
    finally:
        parser.close()
    ((source, error),) = parser.failures
    assert source == "https://oss.example.com/scan.png" and SIGNATURE not in _shown(error)

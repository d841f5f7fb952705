"""Clients, loaders, parsers and readers close their sockets as context managers (sync and async), and the readers'
``alazy_load_data`` is truly async: the event loop stays free while files are parsed.

Open connections are counted from this process's side (psutil: TCP connections to the emulator's port that are
established); the event loop's freedom by a ticker task that must keep ticking while a slow emulator answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from langchain_core.documents.base import Blob

from aisearch_ingest import DocumentAnalyzer, ImageAnalyzer, QwenOCR
from aisearch_ingest.emulator import Emulator, Latency
from aisearch_ingest.langchain import DocumentAnalyzeLoader, DocumentAnalyzeParser, QwenOCRLoader
from aisearch_ingest.llama_index import DocumentAnalyzeReader, ImageAnalyzeReader, QwenOCRReader
from aisearch_ingest.llama_index.readers import AsyncDocuments
from aisearch_ingest.testing import EMULATOR_API_KEY

DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
KEY = EMULATOR_API_KEY
FILES = [DATA / "meeting_notes.md", DATA / "overview.html", DATA / "product_faq.docx"]


def _open_to(emu: Emulator) -> int:
    """Established TCP connections from this process to the emulator."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == emu.port and c.status == psutil.CONN_ESTABLISHED
    )


def _settled(emu: Emulator, expected: int, timeout: float = 3.0) -> int:
    """The count once it reaches ``expected`` (a closed socket may take a moment to leave ESTABLISHED)."""
    deadline = time.monotonic() + timeout
    count = _open_to(emu)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        count = _open_to(emu)
    return count


AIS = {"api_key": KEY, "qps": 0}
SYNC_CASES: dict[str, Callable[[Emulator], Any]] = {
    "DocumentAnalyzer": lambda emu: DocumentAnalyzer(endpoint=emu.url, **AIS),
    "DocumentAnalyzeLoader": lambda emu: DocumentAnalyzeLoader(FILES, endpoint=emu.url, **AIS),
    "DocumentAnalyzeParser": lambda emu: DocumentAnalyzeParser(endpoint=emu.url, **AIS),
    "QwenOCRLoader": lambda emu: QwenOCRLoader(DATA / "invoice.png", base_url=emu.url, **AIS),
    "DocumentAnalyzeReader": lambda emu: DocumentAnalyzeReader(endpoint=emu.url, **AIS),
    "QwenOCRReader": lambda emu: QwenOCRReader(base_url=emu.url, **AIS),
}


def _use(obj: Any) -> None:
    if isinstance(obj, DocumentAnalyzer):
        list(obj.parse_many(FILES))
    elif isinstance(obj, DocumentAnalyzeParser):
        list(obj.lazy_parse(Blob.from_path(FILES[0])))
    elif isinstance(obj, (DocumentAnalyzeLoader, QwenOCRLoader)):
        assert obj.load()
    elif isinstance(obj, QwenOCRReader):
        assert obj.load_data(DATA / "scan_page.png")
    else:
        assert obj.load_data(FILES)


@pytest.mark.parametrize("name", sorted(SYNC_CASES))
def test_with_closes_the_sockets(emu: Emulator, name: str) -> None:
    assert _settled(emu, 0) == 0
    with SYNC_CASES[name](emu) as obj:
        _use(obj)
        assert _open_to(emu) > 0  # kept alive for the next call: the count can see them
    assert _settled(emu, 0) == 0, f"{name} left connections open"


async def _ause(obj: Any) -> None:
    if isinstance(obj, ImageAnalyzer):
        assert await obj.aparse(DATA / "invoice.png")
    elif isinstance(obj, DocumentAnalyzeLoader):
        assert await obj.aload()
    else:
        assert await obj.aload_data(DATA / "invoice.png")


ASYNC_CASES: dict[str, Callable[[Emulator], Any]] = {
    "ImageAnalyzer": lambda emu: ImageAnalyzer(endpoint=emu.url, **AIS),
    "DocumentAnalyzeLoader": lambda emu: DocumentAnalyzeLoader(FILES, endpoint=emu.url, **AIS),
    "ImageAnalyzeReader": lambda emu: ImageAnalyzeReader(endpoint=emu.url, **AIS),
}


@pytest.mark.parametrize("name", sorted(ASYNC_CASES))
def test_async_with_closes_the_sockets_of_the_running_loop(emu: Emulator, name: str) -> None:
    assert _settled(emu, 0) == 0

    async def main() -> int:
        async with ASYNC_CASES[name](emu) as obj:
            await _ause(obj)
            inside = _open_to(emu)
        return inside

    assert asyncio.run(main()) > 0
    assert _settled(emu, 0) == 0, f"{name} left connections open"


def test_qwen_client_closes_its_sockets(emu: Emulator) -> None:
    with QwenOCR(base_url=emu.url, **AIS) as ocr:
        ocr.parse(DATA / "invoice.png")
        assert _open_to(emu) > 0
    assert _settled(emu, 0) == 0


# --- alazy_load_data does not block the event loop ----------------------------------------------------------------


@pytest.fixture
def slow() -> Any:
    with Emulator(api_key=KEY, latency=Latency(fixed=0.6)) as emu:
        yield emu


async def _ticking(work: Any) -> tuple[Any, int, float]:
    """Run ``work`` beside a task that ticks every 20 ms; return its result, the ticks, and the longest gap."""
    ticks = 0
    longest = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks, longest
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.02)
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        result = await work
    finally:
        stop.set()
        await task
    return result, ticks, longest


def test_alazy_load_data_keeps_the_event_loop_free(slow: Emulator) -> None:
    reader = ImageAnalyzeReader(endpoint=slow.url, api_key=KEY, qps=0)

    async def stream() -> list[str]:
        names = []
        async for doc in reader.alazy_load_data([DATA / "invoice.png", DATA / "scan_page.png"]):
            names.append(doc.metadata["file_name"])
        return names

    async def main() -> tuple[Any, int, float]:
        async with reader:
            return await _ticking(stream())

    started = time.monotonic()
    names, ticks, longest = asyncio.run(main())
    took = time.monotonic() - started
    assert sorted(names) == ["invoice.png", "scan_page.png"]
    assert took >= 0.6  # the emulator's latency was really waited for
    # Blocked, the ticker would not tick at all while the 0.6 s answers are awaited (LlamaIndex's default
    # alazy_load_data iterates the sync generator on the loop's thread); free, it ticks every ~20 ms.
    assert longest < 0.3, f"the event loop was blocked for {longest:.2f}s"
    assert ticks >= 10


def test_alazy_load_data_can_be_awaited_for_the_list(emu: Emulator) -> None:
    reader = DocumentAnalyzeReader(endpoint=emu.url, api_key=KEY, qps=0, mode="page")

    async def main() -> list[Any]:
        async with reader:
            documents = reader.alazy_load_data(DATA / "annual_report.pdf", extra_info={"team": "ops"})
            assert isinstance(documents, AsyncDocuments)
            return await documents

    docs = asyncio.run(main())
    assert [d.metadata["page"] for d in docs] == [1, 2, 3] and all(d.metadata["team"] == "ops" for d in docs)
    assert [d.id_ for d in docs] == [d.id_ for d in reader.load_data(DATA / "annual_report.pdf")]
    reader.close()

"""LangChain loaders and blob parsers against the emulator, through LangChain's own entry points."""

from __future__ import annotations

import asyncio
import doctest
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document
from langchain_core.documents.base import Blob
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.indexing import InMemoryRecordManager, index
from langchain_core.vectorstores import InMemoryVectorStore

from aisearch_ingest import DocumentAnalyzer, ImageAnalyzer, InvalidInputError, PollPolicy, TaskFailedError
from aisearch_ingest.emulator import Emulator, Faults, Latency
from aisearch_ingest.langchain import (
    DocumentAnalyzeLoader,
    DocumentAnalyzeParser,
    ImageAnalyzeLoader,
    ImageAnalyzeParser,
    QwenOCRLoader,
    QwenOCRParser,
    index_key,
)
from aisearch_ingest.langchain import loaders as loaders_module
from aisearch_ingest.qwen import QwenOCR
from aisearch_ingest.testing import EMULATOR_API_KEY

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "notebooks" / "data"
SCALARS = (str, int, float, bool)
KEY = EMULATOR_API_KEY


@contextmanager
def latency(emu: Emulator, value: Latency) -> Iterator[None]:
    emu.set_latency(value)
    try:
        yield
    finally:
        emu.set_latency(None)


@pytest.fixture(scope="module")
def small_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three pages of large type: quick to OCR at a low DPI."""
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    for number in (1, 2, 3):
        pdf.add_page()
        pdf.set_font("helvetica", size=28)
        pdf.cell(0, 20, f"Page {number} heading")
        pdf.ln()
        pdf.cell(0, 20, f"Revenue grew {number + 2} percent")
    path = tmp_path_factory.mktemp("pdf") / "small.pdf"
    path.write_bytes(bytes(pdf.output()))
    return path


@pytest.fixture(scope="module")
def doc_client(emu: Emulator) -> Iterator[DocumentAnalyzer]:
    with DocumentAnalyzer(endpoint=emu.url, api_key=KEY) as client:
        yield client


@pytest.fixture(scope="module")
def image_client(emu: Emulator) -> Iterator[ImageAnalyzer]:
    with ImageAnalyzer(endpoint=emu.url, api_key=KEY, service_id="ops-image-analyze-ocr-001") as client:
        yield client


@pytest.fixture(scope="module")
def qwen_client(emu: Emulator) -> Iterator[QwenOCR]:
    with QwenOCR(base_url=emu.url, api_key=KEY, pdf_dpi=40) as client:
        yield client


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A directory of mixed files: documents at the top, an image and a page of HTML one level down."""
    root = tmp_path / "mixed"
    (root / "sub").mkdir(parents=True)
    for name in ("annual_report.pdf", "product_faq.docx", "meeting_notes.md", "formula.png"):
        shutil.copy(DATA / name, root / name)
    shutil.copy(DATA / "overview.html", root / "sub" / "overview.html")
    shutil.copy(DATA / "scan_page.png", root / "sub" / "scan_page.png")
    return root


def _ids(docs: list[Document]) -> list[str | None]:
    return sorted(d.id for d in docs)


def _flat(docs: list[Document]) -> None:
    for doc in docs:
        assert all(isinstance(v, SCALARS) for v in doc.metadata.values()), doc.metadata


def test_loader_takes_paths_lists_directories_globs_urls_and_bytes(
    emu: Emulator, doc_client: DocumentAnalyzer, mixed: Path
) -> None:
    one = DocumentAnalyzeLoader(str(mixed / "meeting_notes.md"), client=doc_client).load()
    assert [d.metadata["file_name"] for d in one] == ["meeting_notes.md"]
    assert one[0].metadata["source"] == str(mixed / "meeting_notes.md")

    everything = DocumentAnalyzeLoader(mixed, glob="**/*.[mh]*", client=doc_client).load()
    assert sorted(d.metadata["file_name"] for d in everything) == ["meeting_notes.md", "overview.html"]
    top = DocumentAnalyzeLoader(mixed, glob="**/*.[mh]*", recursive=False, client=doc_client).load()
    assert [d.metadata["file_name"] for d in top] == ["meeting_notes.md"]

    url = emu.serve_file((DATA / "meeting_notes.md").read_bytes(), "remote_notes.md", "text/markdown")
    data = (DATA / "product_faq.docx").read_bytes()
    several = DocumentAnalyzeLoader([url, data, mixed / "annual_report.pdf"], client=doc_client).load()
    by_type = {d.metadata["file_type"]: d for d in several}
    assert set(by_type) == {"md", "docx", "pdf"}
    assert by_type["md"].metadata["source"] == url
    assert "AquaSense" in by_type["docx"].page_content
    # a document's id is its source's identity: the path as given (bytes with no name: their content)
    [from_path] = DocumentAnalyzeLoader(mixed / "product_faq.docx", client=doc_client).load()
    [again] = DocumentAnalyzeLoader(mixed / "product_faq.docx", client=doc_client).load()
    [same_bytes] = DocumentAnalyzeLoader(data, client=doc_client).load()
    assert from_path.id == again.id and by_type["docx"].id == same_bytes.id != from_path.id
    assert by_type["md"].id != one[0].id
    _flat(several)


def test_page_mode_and_chunk_mode(doc_client: DocumentAnalyzer, qwen_client: QwenOCR, small_pdf: Path) -> None:
    pdf = DATA / "annual_report.pdf"
    pages = DocumentAnalyzeLoader(pdf, mode="page", client=doc_client).load()
    assert [d.metadata["page"] for d in pages] == [1, 2, 3]
    assert all(d.metadata["page_num"] == 3 for d in pages)
    assert "Financial Performance" in pages[1].page_content
    assert len(set(_ids(pages))) == 3
    ocr_pages = QwenOCRLoader(small_pdf, mode="page", client=qwen_client).load()
    assert [d.metadata["page"] for d in ocr_pages] == [1, 2, 3]
    assert "Revenue grew 4 percent" in ocr_pages[1].page_content
    [whole] = QwenOCRLoader(small_pdf, client=qwen_client).load()
    assert whole.metadata["page_num"] == 3 and "page" not in whole.metadata

    chunks = DocumentAnalyzeLoader(pdf, mode="chunk", chunk_max_tokens=128, client=doc_client).load()
    assert len(chunks) > 3
    assert all(d.metadata["chunk_tokens"] <= 128 for d in chunks)
    assert [d.metadata["chunk_index"] for d in chunks] == list(range(len(chunks)))
    assert any(" > " in str(d.metadata["headings"]) for d in chunks)
    _flat(chunks)
    smaller = DocumentAnalyzeLoader(pdf, mode="chunk", chunk_max_tokens=64, client=doc_client).load()
    assert smaller[0].id != chunks[0].id  # chunking options are part of the ids


def test_lazy_load_yields_files_as_they_finish(emu: Emulator, image_client: ImageAnalyzer) -> None:
    files = [DATA / "scan_page.png", DATA / "formula.png"]
    ImageAnalyzeLoader(files, client=image_client).load()  # warm the emulator's OCR cache
    with latency(emu, Latency(per_token=0.004)):
        started = time.monotonic()
        first = next(iter(ImageAnalyzeLoader(files, client=image_client).lazy_load()))
        waited = time.monotonic() - started
    # formula.png has the fewest tokens, so it finishes first although it was listed second
    assert first.metadata["file_name"] == "formula.png"
    assert waited < 0.8, waited


@pytest.mark.parametrize("service", ["image-analyze", "document-analyze"])
def test_alazy_load_runs_files_concurrently(
    emu: Emulator, image_client: ImageAnalyzer, doc_client: DocumentAnalyzer, service: str
) -> None:
    if service == "image-analyze":
        loader: ImageAnalyzeLoader | DocumentAnalyzeLoader = ImageAnalyzeLoader(
            [DATA / "scan_page.png", DATA / "formula.png"], client=image_client
        )
    else:  # poll often enough that the polling interval does not hide the concurrency
        fast = DocumentAnalyzer(endpoint=emu.url, api_key=KEY, poll=PollPolicy(min_interval=0.05, max_interval=0.1))
        loader = DocumentAnalyzeLoader([DATA / "meeting_notes.md", DATA / "overview.html"], client=fast)
    loader.load()  # warm the emulator's caches: what is timed below is the 1-second tasks

    async def main() -> tuple[list[Document], float]:
        started = time.monotonic()
        docs = [doc async for doc in loader.alazy_load()]
        return docs, time.monotonic() - started

    with latency(emu, Latency(fixed=1.0)):
        docs, elapsed = asyncio.run(main())
    if loader.client is not image_client:
        loader.close()
    assert len(docs) == 2
    assert 1.0 <= elapsed < 1.6, elapsed


def test_load_inside_a_running_event_loop_matches_plain_code(doc_client: DocumentAnalyzer, mixed: Path) -> None:
    loader = DocumentAnalyzeLoader(mixed, glob="*.[mp]d*", mode="page", client=doc_client)
    plain = loader.load()

    async def notebook_cell() -> list[Document]:
        return loader.load()  # what a Jupyter cell does: sync call with a loop running

    inside = asyncio.run(notebook_cell())
    assert len(plain) == 4
    assert [(d.id, d.page_content) for d in inside] == [(d.id, d.page_content) for d in plain]
    asynced = asyncio.run(loader.aload())
    assert sorted((d.id, d.page_content) for d in asynced) == sorted((d.id, d.page_content) for d in plain)


def test_generic_loader_over_a_directory_of_mixed_files(
    doc_client: DocumentAnalyzer, image_client: ImageAnalyzer, mixed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generic = pytest.importorskip("langchain_community.document_loaders.generic")
    blobs = pytest.importorskip("langchain_community.document_loaders.blob_loaders")

    parser = DocumentAnalyzeParser(client=doc_client, on_error="skip", mode="page")
    with caplog.at_level(logging.WARNING, logger="aisearch_ingest"):
        docs = generic.GenericLoader(blobs.FileSystemBlobLoader(mixed, glob="**/*"), parser).load()
    assert sorted({d.metadata["file_name"] for d in docs}) == [
        "annual_report.pdf",
        "meeting_notes.md",
        "overview.html",
        "product_faq.docx",
    ]
    assert sum(d.metadata["file_name"] == "annual_report.pdf" for d in docs) == 3
    assert all(d.metadata["source"].startswith(str(mixed)) for d in docs)  # the blob's metadata is kept
    assert sorted(Path(src).name for src, _ in parser.failures) == ["formula.png", "scan_page.png"]
    assert all(isinstance(err, InvalidInputError) for _, err in parser.failures)
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 2
    _flat(docs)

    images = generic.GenericLoader.from_filesystem(
        mixed, glob="**/*", suffixes=[".png"], parser=ImageAnalyzeParser(client=image_client)
    ).load()
    assert sorted(d.metadata["file_name"] for d in images) == ["formula.png", "scan_page.png"]
    assert all(d.metadata["service_id"] == "ops-image-analyze-ocr-001" for d in images)

    # the same ids as the loader gives for the same files
    loaded = DocumentAnalyzeLoader(mixed, mode="page", on_error="skip", client=doc_client).load()
    assert _ids(loaded) == _ids(docs)


def test_parser_takes_in_memory_blobs(qwen_client: QwenOCR) -> None:
    blob = Blob.from_data((DATA / "scan_page.png").read_bytes(), path="uploads/scan.png", metadata={"team": "ops"})
    [doc] = QwenOCRParser(client=qwen_client).parse(blob)
    assert doc.metadata["team"] == "ops"
    assert doc.metadata["source"] == "uploads/scan.png"
    assert doc.metadata["service"] == "qwen-ocr" and doc.metadata["ocr_task"] == "text_recognition"
    with pytest.raises(InvalidInputError, match="nothing"):
        QwenOCRParser(client=qwen_client).parse(Blob.from_data(b"", path="nothing.png"))


def test_index_twice_adds_nothing_the_second_time(doc_client: DocumentAnalyzer, mixed: Path) -> None:
    record_manager = InMemoryRecordManager(namespace="test/aisearch")
    record_manager.create_schema()
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    loader = DocumentAnalyzeLoader(mixed, glob="*.[mp]d*", mode="page", client=doc_client)

    first = index(loader, record_manager, store, cleanup="incremental", source_id_key="source", key_encoder=index_key)
    assert first["num_added"] == 4 and first["num_skipped"] == 0
    second = index(loader, record_manager, store, cleanup="incremental", source_id_key="source", key_encoder=index_key)
    assert second == {"num_added": 0, "num_updated": 0, "num_skipped": 4, "num_deleted": 0}
    assert len(store.store) == 4


def test_every_service_goes_into_chroma_as_is(
    doc_client: DocumentAnalyzer, image_client: ImageAnalyzer, qwen_client: QwenOCR, small_pdf: Path
) -> None:
    chromadb = pytest.importorskip("chromadb")
    from chromadb.config import Settings

    docs = [
        *DocumentAnalyzeLoader(DATA / "annual_report.pdf", mode="page", client=doc_client).load(),
        *DocumentAnalyzeLoader(DATA / "product_faq.docx", mode="chunk", client=doc_client).load(),
        *ImageAnalyzeLoader(DATA / "formula.png", client=image_client).load(),
        *QwenOCRLoader([DATA / "scan_page.png", small_pdf], mode="page", client=qwen_client).load(),
    ]
    embed = DeterministicFakeEmbedding(size=8)
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    # No embedding function: we pass the vectors. Chroma's default one downloads an ONNX model at first use.
    collection = client.create_collection("aisearch-langchain", embedding_function=None)
    collection.add(
        ids=[d.id for d in docs],  # type: ignore[misc]
        documents=[d.page_content for d in docs],
        metadatas=[d.metadata for d in docs],
        embeddings=embed.embed_documents([d.page_content for d in docs]),
    )
    assert collection.count() == len(docs) == len({d.id for d in docs})
    stored = collection.get(where={"service": "qwen-ocr"})
    assert len(stored["ids"]) == 4
    assert {m["page"] for m in stored["metadatas"]} == {1, 2, 3}


@pytest.fixture
def with_bad_files(tmp_path: Path) -> Path:
    root = tmp_path / "batch"
    root.mkdir()
    shutil.copy(DATA / "meeting_notes.md", root / "a_notes.md")
    (root / "b_bad.pdf").write_bytes(os.urandom(64))  # not a PDF: refused before sending
    (root / "c_broken.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(256))  # looks like one: the task fails
    shutil.copy(DATA / "overview.html", root / "d_overview.html")
    return root


def test_on_error_skip_returns_the_rest_and_reports_the_bad_ones(
    doc_client: DocumentAnalyzer, with_bad_files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loader = DocumentAnalyzeLoader(with_bad_files, on_error="skip", client=doc_client)
    with caplog.at_level(logging.WARNING, logger="aisearch_ingest"):
        docs = loader.load()
    assert sorted(d.metadata["file_name"] for d in docs) == ["a_notes.md", "d_overview.html"]
    failed = dict(loader.failures)
    assert sorted(Path(s).name for s in failed) == ["b_bad.pdf", "c_broken.pdf"]
    assert isinstance(failed[str(with_bad_files / "b_bad.pdf")], InvalidInputError)
    assert isinstance(failed[str(with_bad_files / "c_broken.pdf")], TaskFailedError)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("skipped" in w for w in warnings)
    assert not any(KEY in w for w in warnings)
    loader.load()
    assert len(loader.failures) == 2  # reset per load, not accumulated


def test_on_error_raise_settles_the_batch_then_raises_a_typed_error(
    doc_client: DocumentAnalyzer, with_bad_files: Path
) -> None:
    loader = DocumentAnalyzeLoader(with_bad_files, client=doc_client)
    seen: list[Document] = []
    with pytest.raises((InvalidInputError, TaskFailedError)) as info:
        for doc in loader.lazy_load():
            seen.append(doc)
    assert info.value.source is not None
    assert Path(info.value.source).name in str(info.value)
    assert Path(info.value.source).name in {"b_bad.pdf", "c_broken.pdf"}
    # After the first failure no new file starts; files already in flight finish and their documents are kept.
    assert 1 <= len(loader.failures) <= 2
    assert {d.metadata["file_name"] for d in seen} <= {"a_notes.md", "d_overview.html"}
    assert loader.failures[0][1] is info.value


def test_async_on_error_raise_and_skip(emu: Emulator, with_bad_files: Path) -> None:
    emu.set_faults(Faults(fail_names=["d_overview"]))  # the emulator fails this task although the file is fine
    try:
        loader = DocumentAnalyzeLoader(with_bad_files / "d_overview.html", endpoint=emu.url, api_key=KEY)
        with pytest.raises(TaskFailedError, match=r"d_overview\.html"):
            asyncio.run(loader.aload())
        skipping = DocumentAnalyzeLoader(with_bad_files, on_error="skip", endpoint=emu.url, api_key=KEY)
        docs = asyncio.run(skipping.aload())
    finally:
        emu.set_faults(None)
        loader.close()
    assert [d.metadata["file_name"] for d in docs] == ["a_notes.md"]
    assert sorted(Path(s).name for s, _ in skipping.failures) == ["b_bad.pdf", "c_broken.pdf", "d_overview.html"]
    skipping.close()


def test_show_progress_renders_a_bar(
    image_client: ImageAnalyzer, mixed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = ImageAnalyzeLoader(mixed, glob="**/*.png", show_progress=True, client=image_client).load()
    err = capsys.readouterr().err
    assert len(docs) == 2
    assert "ImageAnalyzeLoader" in err and "2/2" in err


def test_bad_arguments_and_missing_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from aisearch_ingest import ConfigurationError

    monkeypatch.delenv("AISEARCH_API_KEY", raising=False)
    monkeypatch.delenv("AISEARCH_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="mode"):
        DocumentAnalyzeLoader("x.pdf", mode="pages", endpoint="http://127.0.0.1:9", api_key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error"):
        DocumentAnalyzeParser(on_error="ignore", endpoint="http://127.0.0.1:9", api_key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="AISEARCH_API_KEY"):
        DocumentAnalyzeLoader("x.pdf")


def test_docstring_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = doctest.testmod(loaders_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0

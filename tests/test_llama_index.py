"""LlamaIndex readers against the emulator, through LlamaIndex's own entry points."""

from __future__ import annotations

import asyncio
import doctest
import json
import logging
import os
import pickle
import shutil
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, MockEmbedding, SimpleDirectoryReader
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores import SimpleVectorStore

from aisearch_ingest import (
    DocumentAnalyzer,
    ImageAnalyzer,
    InvalidInputError,
    PollPolicy,
    TaskFailedError,
)
from aisearch_ingest.emulator import Emulator, Latency
from aisearch_ingest.llama_index import DocumentAnalyzeReader, ImageAnalyzeReader, QwenOCRReader
from aisearch_ingest.llama_index import readers as readers_module
from aisearch_ingest.qwen import QwenOCR
from aisearch_ingest.testing import EMULATOR_API_KEY

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "notebooks" / "data"
SCALARS = (str, int, float, bool)
KEY = EMULATOR_API_KEY


@pytest.fixture(scope="module")
def doc_client(emu: Emulator) -> Iterator[DocumentAnalyzer]:
    poll = PollPolicy(min_interval=0.05, max_interval=0.1)
    with DocumentAnalyzer(endpoint=emu.url, api_key=KEY, poll=poll) as client:
        yield client


@pytest.fixture(scope="module")
def image_client(emu: Emulator) -> Iterator[ImageAnalyzer]:
    with ImageAnalyzer(endpoint=emu.url, api_key=KEY) as client:
        yield client


@pytest.fixture(scope="module")
def qwen_client(emu: Emulator) -> Iterator[QwenOCR]:
    with QwenOCR(base_url=emu.url, api_key=KEY) as client:
        yield client


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    shutil.copy(DATA / "annual_report.pdf", root / "annual_report.pdf")
    shutil.copy(DATA / "formula.png", root / "formula.png")
    shutil.copy(DATA / "scan_page.png", root / "sub" / "scan_page.png")
    shutil.copy(DATA / "meeting_notes.md", root / "meeting_notes.md")
    return root


def _flat(docs: list[Document]) -> None:
    for doc in docs:
        assert all(isinstance(v, SCALARS) for v in doc.metadata.values()), doc.metadata


def test_simple_directory_reader_with_our_readers_as_file_extractors(
    doc_client: DocumentAnalyzer, image_client: ImageAnalyzer, folder: Path
) -> None:
    extractors = {
        ".pdf": DocumentAnalyzeReader(client=doc_client, mode="page"),
        ".png": ImageAnalyzeReader(client=image_client),
    }
    reader = SimpleDirectoryReader(
        str(folder), recursive=True, required_exts=[".pdf", ".png"], file_extractor=extractors
    )
    docs = reader.load_data()
    names = sorted((d.metadata["file_name"], d.metadata.get("page")) for d in docs)
    assert names == [("annual_report.pdf", 1), ("annual_report.pdf", 2), ("annual_report.pdf", 3),
                     ("formula.png", None), ("scan_page.png", None)]  # fmt: skip
    pdf_page = next(d for d in docs if d.metadata.get("page") == 2)
    assert pdf_page.metadata["file_path"].endswith("annual_report.pdf")  # SimpleDirectoryReader's own metadata
    assert pdf_page.metadata["service"] == "document-analyze"
    # SimpleDirectoryReader's MIME type stays; ours is under its own name
    assert (pdf_page.metadata["file_type"], pdf_page.metadata["aisearch_file_type"]) == ("application/pdf", "pdf")
    for mode in (MetadataMode.EMBED, MetadataMode.LLM):  # no path in the text a model reads
        assert str(DATA) not in pdf_page.get_content(metadata_mode=mode) and "annual_report" not in (
            pdf_page.get_content(metadata_mode=mode).split("\n\n")[0].replace("file_name: annual_report.pdf", "")
        )
    assert "Financial Performance" in pdf_page.text
    _flat(docs)
    # deterministic ids, the same through SimpleDirectoryReader as directly
    again = reader.load_data()
    assert sorted(d.doc_id for d in again) == sorted(d.doc_id for d in docs)
    direct = DocumentAnalyzeReader(client=doc_client, mode="page").load_data(folder / "annual_report.pdf")
    assert {d.doc_id for d in direct} <= {d.doc_id for d in docs}
    # and its async path goes through our aload_data
    asynced = asyncio.run(reader.aload_data())
    assert sorted(d.doc_id for d in asynced) == sorted(d.doc_id for d in docs)


def test_bookkeeping_keys_stay_out_of_embedding_and_llm_text(qwen_client: QwenOCR) -> None:
    [doc] = QwenOCRReader(client=qwen_client).load_data(DATA / "formula.png", extra_info={"tenant": "acme"})
    assert doc.metadata["tenant"] == "acme"
    assert doc.metadata["usage_output_tokens"] > 0 and doc.metadata["request_id"]
    for mode in (MetadataMode.EMBED, MetadataMode.LLM):
        text = doc.get_content(metadata_mode=mode)
        assert "tenant: acme" in text
        assert ("file_name: formula.png" in text) == (mode == MetadataMode.LLM)  # an LLM can cite the file name
        for hidden in ("usage_", "request_id", "source_sha256", "service_id", "page_num", "source:", "formula.png\n"):
            assert hidden not in text.replace("file_name: formula.png", ""), (mode, hidden)


def test_lists_urls_bytes_and_modes(emu: Emulator, doc_client: DocumentAnalyzer) -> None:
    url = emu.serve_file((DATA / "meeting_notes.md").read_bytes(), "remote.md", "text/markdown")
    reader = DocumentAnalyzeReader(client=doc_client)
    docs = reader.load_data([url, str(DATA / "overview.html"), (DATA / "product_faq.docx").read_bytes()])
    assert sorted(d.metadata["file_type"] for d in docs) == ["docx", "html", "md"]
    chunked = DocumentAnalyzeReader(client=doc_client, mode="chunk", chunk_max_tokens=96, include_headings=True)
    chunks = chunked.load_data(DATA / "annual_report.pdf")
    assert len(chunks) > 3 and all(c.metadata["chunk_tokens"] <= 96 for c in chunks)
    assert chunks[0].text.startswith("Brightwater") or chunks[0].metadata["headings"]
    _flat(chunks)
    lazy = list(chunked.lazy_load_data(DATA / "annual_report.pdf"))
    assert [d.doc_id for d in lazy] == [d.doc_id for d in chunks]


def test_reading_through_an_fsspec_filesystem(doc_client: DocumentAnalyzer) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/inbox/notes.md", (DATA / "meeting_notes.md").read_bytes())
    fs.pipe("/inbox/empty.md", b"")
    reader = DocumentAnalyzeReader(client=doc_client, on_error="skip")
    docs = SimpleDirectoryReader(input_dir="/inbox", fs=fs, file_extractor={".md": reader}).load_data()
    assert [d.metadata["source"] for d in docs] == ["/inbox/notes.md"]
    assert [Path(s).name for s, _ in reader.failures] == ["empty.md"]
    [direct] = DocumentAnalyzeReader(client=doc_client).load_data(PurePosixPath("/inbox/notes.md"), fs=fs)
    assert direct.doc_id == docs[0].doc_id


def test_ingestion_pipeline_upserts_instead_of_duplicating(doc_client: DocumentAnalyzer) -> None:
    reader = DocumentAnalyzeReader(client=doc_client, mode="page")
    docstore = SimpleDocumentStore()
    vector_store = SimpleVectorStore()
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=0), MockEmbedding(embed_dim=8)],
        docstore=docstore,
        vector_store=vector_store,
    )
    first = pipeline.run(documents=reader.load_data(DATA / "annual_report.pdf"))
    hashes = docstore.get_all_document_hashes()
    stored = len(vector_store.data.embedding_dict)
    assert len(hashes) == 3 and stored == len(first) >= 3
    # unchanged files (new request and task ids): nothing to embed again
    assert pipeline.run(documents=reader.load_data(DATA / "annual_report.pdf")) == []
    # changed metadata: the three documents are replaced, not added next to the old ones
    again = pipeline.run(documents=reader.load_data(DATA / "annual_report.pdf", extra_info={"rev": 2}))
    assert len(again) == len(first)
    assert sorted(docstore.get_all_document_hashes().values()) == sorted(hashes.values())  # the same 3 doc ids
    assert len(docstore.docs) == 3
    assert len(vector_store.data.embedding_dict) == stored


def test_every_service_goes_into_chroma_as_is(
    doc_client: DocumentAnalyzer, image_client: ImageAnalyzer, qwen_client: QwenOCR
) -> None:
    chromadb = pytest.importorskip("chromadb")
    from chromadb.config import Settings

    docs = [
        *DocumentAnalyzeReader(client=doc_client, mode="page").load_data(DATA / "annual_report.pdf"),
        *DocumentAnalyzeReader(client=doc_client, mode="chunk").load_data(DATA / "product_faq.docx"),
        *ImageAnalyzeReader(client=image_client).load_data(DATA / "formula.png"),
        *QwenOCRReader(client=qwen_client, mode="page").load_data(DATA / "scan_page.png"),
    ]
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    # No embedding function: we pass the vectors. Chroma's default one downloads an ONNX model at first use.
    collection = client.create_collection("aisearch-llama-index", embedding_function=None)
    embed = MockEmbedding(embed_dim=8)
    collection.add(
        ids=[d.doc_id for d in docs],
        documents=[d.text for d in docs],
        metadatas=[d.metadata for d in docs],
        embeddings=[embed.get_text_embedding(d.text) for d in docs],
    )
    assert collection.count() == len(docs) == len({d.doc_id for d in docs})
    assert {m["service"] for m in collection.get()["metadatas"]} == {"document-analyze", "image-analyze", "qwen-ocr"}


def test_load_data_inside_a_running_event_loop_matches_plain_code(doc_client: DocumentAnalyzer, folder: Path) -> None:
    reader = DocumentAnalyzeReader(client=doc_client, mode="page", on_error="skip")
    plain = reader.load_data(folder)

    async def notebook_cell() -> list[Document]:
        return reader.load_data(folder)

    inside = asyncio.run(notebook_cell())
    assert len(plain) == 4  # 3 pages + the notes; the images are reported, not returned
    assert [(d.doc_id, d.text) for d in inside] == [(d.doc_id, d.text) for d in plain]
    assert len(reader.failures) == 4  # two per call: a reader keeps every failure until you clear them


def test_aload_data_runs_files_concurrently(emu: Emulator, doc_client: DocumentAnalyzer) -> None:
    files = [DATA / "meeting_notes.md", DATA / "overview.html"]
    reader = DocumentAnalyzeReader(client=doc_client)
    reader.load_data(files)  # warm the emulator's caches
    emu.set_latency(Latency(fixed=1.0))
    try:
        started = time.monotonic()
        docs = asyncio.run(reader.aload_data(files))
        elapsed = time.monotonic() - started
    finally:
        emu.set_latency(None)
    assert len(docs) == 2
    assert 1.0 <= elapsed < 1.6, elapsed


def test_on_error_skip_and_raise(
    doc_client: DocumentAnalyzer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(DATA / "meeting_notes.md", tmp_path / "good.md")
    (tmp_path / "bad.pdf").write_bytes(os.urandom(48))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(300))
    skipping = DocumentAnalyzeReader(client=doc_client, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="aisearch_ingest"):
        docs = skipping.load_data(tmp_path)
    assert [d.metadata["file_name"] for d in docs] == ["good.md"]
    errors = {Path(s).name: type(e) for s, e in skipping.failures}
    assert errors == {"bad.pdf": InvalidInputError, "broken.pdf": TaskFailedError}
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 2

    raising = DocumentAnalyzeReader(client=doc_client)
    with pytest.raises(TaskFailedError, match=r"broken\.pdf"):
        raising.load_data([tmp_path / "good.md", tmp_path / "broken.pdf"])
    with pytest.raises(InvalidInputError, match=r"bad\.pdf"):
        asyncio.run(raising.aload_data(tmp_path / "bad.pdf"))
    assert [Path(s).name for s, _ in raising.failures] == ["broken.pdf", "bad.pdf"]
    raising.failures.clear()


def test_serialization_keeps_the_key_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    secret = "sk-very-secret-0123"
    reader = QwenOCRReader(api_key=secret, base_url="http://127.0.0.1:9", task="table_parsing", mode="page")
    assert reader.is_remote is True
    assert QwenOCRReader.class_name() == "AISearchQwenOCRReader"
    assert DocumentAnalyzeReader.class_name() == "AISearchDocumentAnalyzeReader"
    assert ImageAnalyzeReader.class_name() == "AISearchImageAnalyzeReader"
    data = reader.to_dict()
    assert data["class_name"] == "AISearchQwenOCRReader" and data["task"] == "table_parsing"
    for text in (json.dumps(data), reader.to_json(), repr(reader), str(reader), pickle.dumps(reader).decode("latin-1")):
        assert secret not in text
    assert reader.client.ocr_task == "table_parsing"  # type: ignore[attr-defined]
    assert "api_key" not in data
    rebuilt = QwenOCRReader.from_dict(data)
    assert rebuilt.task == "table_parsing" and rebuilt.mode == "page"


def test_show_progress_renders_a_bar(doc_client: DocumentAnalyzer, capsys: pytest.CaptureFixture[str]) -> None:
    reader = DocumentAnalyzeReader(client=doc_client, show_progress=True)
    docs = reader.load_data([DATA / "meeting_notes.md", DATA / "overview.html"])
    err = capsys.readouterr().err
    assert len(docs) == 2 and "AISearchDocumentAnalyzeReader" in err and "2/2" in err


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        DocumentAnalyzeReader(endpoint="http://127.0.0.1:9", api_key="k", mode="sentences")
    with pytest.raises(ValueError, match="on_error"):
        ImageAnalyzeReader(endpoint="http://127.0.0.1:9", api_key="k", on_error="ignore")


def test_docstring_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = doctest.testmod(readers_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0

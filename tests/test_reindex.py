"""Re-indexing replaces, never accumulates (issue 13): a persistent Chroma store, both frameworks' own entry points.

Run over a copy of ``notebooks/data``'s text documents, edit one file, run again: the store holds as many chunks as
after the first run and none of the old text can be found; remove a file and run with the documented cleanup: its
chunks are gone. LangChain: ``index(..., cleanup="incremental")`` for edits, ``cleanup="full"`` for removals, with a
``SQLRecordManager`` on disk. LlamaIndex: ``IngestionPipeline(docstore=..., vector_store=ChromaVectorStore(...))``,
``UPSERTS`` for edits and ``UPSERTS_AND_DELETE`` for removals, the docstore persisted between runs.

Each run is a new process's worth of objects (new clients, stores reopened from disk). The embedding is a
deterministic bag-of-words hash, so "retrievable" is a real similarity search: a query made of the old sentence's
words finds a chunk holding them if one is left.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import chromadb
import pytest
from langchain_core.embeddings import Embeddings
from llama_index.core.embeddings import BaseEmbedding

from aisearch_ingest import DocumentAnalyzer, PollPolicy
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.testing import EMULATOR_API_KEY

DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
FILES = ("meeting_notes.md", "overview.html", "product_faq.docx", "annual_report.pdf")
OLD = "Remote calibration ships enabled by default; customers can switch it off per sensor."
NEW = "Remote calibration ships disabled by default; installers can switch it on per fleet."
DIM = 256


def _bag(text: str) -> list[float]:
    vector = [0.0] * DIM
    for word in re.findall(r"\w+", text.lower()):
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


class BagEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [_bag(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return _bag(text)


class BagEmbedding(BaseEmbedding):
    def _get_text_embedding(self, text: str) -> list[float]:
        return _bag(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return _bag(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return _bag(query)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in FILES:
        shutil.copy(DATA / name, folder / name)
    assert OLD in (folder / "meeting_notes.md").read_text(encoding="utf-8")
    return folder


def _edit(corpus: Path) -> None:
    notes = corpus / "meeting_notes.md"
    notes.write_text(notes.read_text(encoding="utf-8").replace(OLD, NEW), encoding="utf-8")


def _texts(collection: chromadb.Collection) -> list[str]:
    return [t for t in collection.get(include=["documents"])["documents"] or [] if t]


def _client(emu: Emulator) -> DocumentAnalyzer:
    return DocumentAnalyzer(
        endpoint=emu.url, api_key=EMULATOR_API_KEY, poll=PollPolicy(min_interval=0.05, max_interval=0.1)
    )


def test_langchain_index_replaces_edited_files_and_full_cleanup_deletes_removed_ones(
    emu: Emulator, corpus: Path, tmp_path: Path
) -> None:
    from langchain_chroma import Chroma
    from langchain_classic.indexes import SQLRecordManager
    from langchain_core.indexing import index

    from aisearch_ingest.langchain import DocumentAnalyzeLoader, StructuredTextSplitter, index_key

    def run(cleanup: str) -> dict[str, int]:
        store = Chroma("docs", BagEmbeddings(), persist_directory=str(tmp_path / "chroma-lc"))
        records = SQLRecordManager("chroma/docs", db_url=f"sqlite:///{tmp_path / 'records.sqlite'}")
        records.create_schema()
        with DocumentAnalyzeLoader(corpus, client=_client(emu)) as loader:
            chunks = StructuredTextSplitter(max_tokens=64).split_documents(loader.load())
        stats = index(chunks, records, store, cleanup=cleanup, source_id_key="source", key_encoder=index_key)
        return {**stats, "count": store._collection.count()}  # type: ignore[dict-item]

    first = run("incremental")
    assert first["num_added"] == first["count"] > len(FILES)
    unchanged = run("incremental")
    assert (unchanged["num_added"], unchanged["num_deleted"], unchanged["count"]) == (0, 0, first["count"])

    _edit(corpus)
    edited = run("incremental")
    assert edited["count"] == first["count"]
    assert edited["num_added"] >= 1 and edited["num_deleted"] == edited["num_added"]
    store = Chroma("docs", BagEmbeddings(), persist_directory=str(tmp_path / "chroma-lc"))
    assert not any(OLD in t for t in _texts(store._collection))
    [top] = store.similarity_search(OLD, k=1)
    assert NEW in top.page_content and OLD not in top.page_content

    html_chunks = sum("overview.html" in str(m["source"]) for m in store.get()["metadatas"])
    assert html_chunks > 0
    (corpus / "overview.html").unlink()
    removed = run("full")
    assert removed["num_deleted"] == html_chunks and removed["count"] == first["count"] - html_chunks
    store = Chroma("docs", BagEmbeddings(), persist_directory=str(tmp_path / "chroma-lc"))
    assert not any("overview.html" in str(m["source"]) for m in store.get()["metadatas"])


def test_llama_index_docstore_upserts_replace_edited_files_and_delete_removed_ones(
    emu: Emulator, corpus: Path, tmp_path: Path
) -> None:
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from aisearch_ingest.llama_index import DocumentAnalyzeReader, StructuredNodeParser

    docstore_path = tmp_path / "docstore.json"

    def run(strategy: DocstoreStrategy) -> tuple[int, int]:
        collection = chromadb.PersistentClient(str(tmp_path / "chroma-li")).get_or_create_collection("docs")
        docstore = SimpleDocumentStore.from_persist_path(str(docstore_path)) if docstore_path.exists() else None
        with DocumentAnalyzeReader(client=_client(emu)) as reader:
            documents = SimpleDirectoryReader(
                str(corpus), file_extractor={Path(name).suffix: reader for name in FILES}
            ).load_data()
            pipeline = IngestionPipeline(
                transformations=[StructuredNodeParser(max_tokens=64), BagEmbedding(model_name="bag")],
                docstore=docstore or SimpleDocumentStore(),
                vector_store=ChromaVectorStore(chroma_collection=collection),
                docstore_strategy=strategy,
            )
            nodes = pipeline.run(documents=documents)
        pipeline.docstore.persist(str(docstore_path))
        return len(nodes), collection.count()

    written, count = run(DocstoreStrategy.UPSERTS)
    assert written == count > len(FILES)
    assert run(DocstoreStrategy.UPSERTS) == (0, count)  # unchanged files: nothing embedded again

    _edit(corpus)
    rewritten, after_edit = run(DocstoreStrategy.UPSERTS)
    assert after_edit == count and 0 < rewritten < count  # only the edited file's nodes were replaced
    collection = chromadb.PersistentClient(str(tmp_path / "chroma-li")).get_or_create_collection("docs")
    assert not any(OLD in t for t in _texts(collection))
    best = collection.query(query_embeddings=[_bag(OLD)], n_results=1)["documents"]
    assert best is not None and NEW in best[0][0]

    html = [m for m in collection.get(include=["metadatas"])["metadatas"] or [] if m["file_name"] == "overview.html"]
    assert html
    (corpus / "overview.html").unlink()
    _, after_removal = run(DocstoreStrategy.UPSERTS_AND_DELETE)
    assert after_removal == count - len(html)
    metadatas = collection.get(include=["metadatas"])["metadatas"] or []
    assert not any(m["file_name"] == "overview.html" for m in metadatas)

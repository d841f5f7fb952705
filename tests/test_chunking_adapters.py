"""StructuredTextSplitter (LangChain) and StructuredNodeParser (LlamaIndex), through the frameworks' entry points."""

from __future__ import annotations

from typing import Any

import pytest

from aisearch_ingest.chunking import StructuredChunker

MD = "# Guide\n\n## Install\n\n" + "Install it like this, step by step. " * 40 + "\n\n## Use\n\n" + "Use it well. " * 30
CHUNK_KEYS = {"chunk_index", "chunk_count", "chunk_tokens", "headings", "chunk_kind"}


def _flat(meta: dict[str, Any]) -> bool:
    return all(isinstance(v, (str, int, float, bool)) or v is None for v in meta.values())


def test_langchain_transform_documents() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from aisearch_ingest.langchain.splitter import StructuredTextSplitter

    splitter = StructuredTextSplitter(max_tokens=100)
    parent = Document(
        page_content=MD, metadata={"source": "guide.pdf", "content_type": "markdown", "page": 4}, id="parent-1"
    )
    html = Document(page_content="<h1>T</h1><p>one</p><p>two</p>", metadata={"content_type": "html"})
    docs = list(splitter.transform_documents([parent, html]))
    guide = [d for d in docs if d.metadata.get("source") == "guide.pdf"]
    assert len(guide) > 2
    for i, d in enumerate(guide):
        assert d.metadata.keys() >= CHUNK_KEYS
        assert _flat(d.metadata)
        assert d.metadata["chunk_index"] == i
        assert d.metadata["chunk_count"] == len(guide)
        assert d.metadata["page_start"] == d.metadata["page_end"] == 4
        assert d.metadata["page"] == 4
        assert d.metadata["chunk_tokens"] <= 100
        assert d.metadata["headings"].startswith("Guide > ")
        assert d.id is not None
    assert len({d.id for d in guide}) == len(guide)
    # Deterministic ids: the same input gives the same ids.
    again = splitter.split_documents([parent])
    assert [d.id for d in again] == [d.id for d in guide]
    h = [d for d in docs if "source" not in d.metadata]
    assert [d.page_content for d in h] == ["# T\n\none\n\ntwo"]
    assert h[0].metadata["headings"] == "T" and "page_start" not in h[0].metadata
    assert splitter.split_text("para") == ["para"]
    assert [d.page_content for d in splitter.create_documents(["a\n\nb"], [{"x": 1}])] == ["a\n\nb"]


def test_langchain_splitter_in_a_chain_of_transformers() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import BaseDocumentTransformer, Document

    from aisearch_ingest.langchain.splitter import StructuredTextSplitter

    splitter = StructuredTextSplitter(max_tokens=64, include_headings=True)
    assert isinstance(splitter, BaseDocumentTransformer)
    docs = splitter.transform_documents([Document(page_content=MD)])
    assert docs[0].page_content.startswith("# Guide\n\n## Install")  # opens with its headings: no prefix
    # The others carry the breadcrumb, less a heading they open with ("Guide\n\n## Use").
    assert all(d.page_content.startswith(("Guide > ", "Guide\n\n## ")) for d in docs[1:])
    assert all(d.metadata["headings"].startswith("Guide > ") for d in docs)
    assert all(d.metadata["chunk_tokens"] <= 64 for d in docs)


def test_llama_index_ingestion_pipeline() -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.schema import MetadataMode, NodeRelationship

    from aisearch_ingest.llama_index.node_parser import StructuredNodeParser

    parser = StructuredNodeParser(max_tokens=100)
    doc = Document(text=MD, metadata={"source": "guide.pdf", "content_type": "markdown", "page": 2, "usage_pages": 1})
    doc.excluded_embed_metadata_keys = ["usage_pages"]
    nodes = IngestionPipeline(transformations=[parser]).run(documents=[doc])
    assert len(nodes) > 2
    for i, node in enumerate(nodes):
        assert node.metadata.keys() >= CHUNK_KEYS
        assert _flat(node.metadata)
        assert node.metadata["source"] == "guide.pdf"
        assert node.metadata["chunk_index"] == i
        assert node.metadata["page_start"] == 2
        assert node.metadata["chunk_tokens"] <= 100
        assert node.relationships[NodeRelationship.SOURCE].node_id == doc.doc_id
        embed_text = node.get_content(metadata_mode=MetadataMode.EMBED)
        assert "headings: Guide" in embed_text
        assert "chunk_index" not in embed_text and "usage_pages" not in embed_text
    assert NodeRelationship.NEXT in nodes[0].relationships
    assert NodeRelationship.PREVIOUS in nodes[1].relationships
    assert doc.excluded_embed_metadata_keys == ["usage_pages"]  # the parent's list is not mutated


def test_llama_index_cache_key_is_stable_and_depends_on_settings() -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionCache, IngestionPipeline
    from llama_index.core.ingestion.pipeline import get_transformation_hash

    from aisearch_ingest.llama_index.node_parser import StructuredNodeParser

    docs = [Document(text=MD, id_="d1")]
    a, b, c = (
        StructuredNodeParser(max_tokens=100),
        StructuredNodeParser(max_tokens=100),
        StructuredNodeParser(max_tokens=99),
    )
    assert get_transformation_hash(docs, a) == get_transformation_hash(docs, b)
    assert get_transformation_hash(docs, a) != get_transformation_hash(docs, c)
    cache = IngestionCache()
    first = IngestionPipeline(transformations=[a], cache=cache).run(documents=docs)
    key = get_transformation_hash(docs, b)
    assert cache.get(key) is not None  # the second pipeline would be served from the cache
    second = IngestionPipeline(transformations=[b], cache=cache).run(documents=docs)
    assert [n.text for n in second] == [n.text for n in first]


def test_node_parser_matches_the_core_chunker() -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core import Document

    from aisearch_ingest.llama_index.node_parser import StructuredNodeParser

    nodes = StructuredNodeParser(max_tokens=80, content_type="plain").get_nodes_from_documents([Document(text=MD)])
    assert [n.text for n in nodes] == [c.text for c in StructuredChunker(80).chunk_text(MD, "plain")]


def test_llama_index_node_ids_are_deterministic_and_depend_on_settings() -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core import Document

    from aisearch_ingest.llama_index.node_parser import StructuredNodeParser

    def ids(parser: StructuredNodeParser, doc_id: str = "d1") -> list[str]:
        return [n.node_id for n in parser.get_nodes_from_documents([Document(text=MD, id_=doc_id)])]

    first = ids(StructuredNodeParser(max_tokens=100))
    assert len(first) > 2 and len(set(first)) == len(first)
    assert ids(StructuredNodeParser(max_tokens=100)) == first  # same document, new parser: same ids
    assert not set(ids(StructuredNodeParser(max_tokens=99))) & set(first)
    assert not set(ids(StructuredNodeParser(max_tokens=100, include_headings=True))) & set(first)
    assert not set(ids(StructuredNodeParser(max_tokens=100), "d2")) & set(first)
    custom = StructuredNodeParser(max_tokens=100, id_func=lambda i, doc: f"{doc.node_id}-{i}")
    assert ids(custom) == [f"d1-{i}" for i in range(len(first))]  # a caller's id_func still wins


def test_langchain_ids_depend_on_settings() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from aisearch_ingest.langchain.splitter import StructuredTextSplitter

    parent = Document(page_content=MD, id="parent-1")
    a = [d.id for d in StructuredTextSplitter(max_tokens=100).split_documents([parent])]
    assert a == [d.id for d in StructuredTextSplitter(max_tokens=100).split_documents([parent])]
    b = [d.id for d in StructuredTextSplitter(max_tokens=100, min_tokens=0).split_documents([parent])]
    assert not set(a) & set(b)
    assert all(d.id is None for d in StructuredTextSplitter().split_documents([Document(page_content=MD)]))

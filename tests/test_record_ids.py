"""One id scheme for every route: the same file chunked with the same settings gives the same chunks, ids and
metadata keys through a loader's ``mode="chunk"``, a loader's ``mode="document"`` + ``StructuredTextSplitter``, a
reader's ``mode="chunk"``, a reader's ``mode="document"`` + ``StructuredNodeParser`` (alone and in an
``IngestionPipeline``) and ``aisearch-ingest ingest --mode chunk``. Against the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import BaseNode

from aisearch_ingest import DocumentAnalyzer, PollPolicy
from aisearch_ingest._adapters import Shaper
from aisearch_ingest.chunking import StructuredChunker
from aisearch_ingest.cli import main
from aisearch_ingest.documents import VOLATILE_KEYS, bookkeeping_keys
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.langchain import DocumentAnalyzeLoader, StructuredTextSplitter
from aisearch_ingest.llama_index import DocumentAnalyzeReader, StructuredNodeParser
from aisearch_ingest.testing import EMULATOR_API_KEY

DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
PAGE_KEYS = {"page", "page_start", "page_end"}

#: (chunk_max_tokens, include_headings): the defaults, and both changed.
SETTINGS = [(512, False), (128, True)]

#: One chunk as every route gives it: id, text, metadata (the per-call request and task ids left out).
Chunk = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def client(emu: Emulator) -> Iterator[DocumentAnalyzer]:
    poll = PollPolicy(min_interval=0.05, max_interval=0.1)
    with DocumentAnalyzer(endpoint=emu.url, api_key=EMULATOR_API_KEY, poll=poll) as client:
        yield client


def _stable(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in VOLATILE_KEYS}


def _nodes(nodes: list[BaseNode]) -> list[Chunk]:
    return [(n.node_id, n.get_content(), _stable(n.metadata)) for n in nodes]


def _routes(
    client: DocumentAnalyzer,
    emu: Emulator,
    path: str,
    max_tokens: int,
    headings: bool,
    tmp: Path,
    mp: Any,
    *,
    keep_html: bool = False,
) -> dict[str, list[Chunk]]:
    """Every route's chunks of ``path`` (with ``keep_html``: each route told to keep the service's HTML)."""
    routes: dict[str, list[Chunk]] = {}
    chunk: dict[str, Any] = {"chunk_max_tokens": max_tokens, "include_headings": headings}
    split = {"max_tokens": max_tokens, "include_headings": headings}
    html = {"html_to_markdown": False} if keep_html else {}

    docs = DocumentAnalyzeLoader(path, mode="chunk", client=client, **chunk, **html).load()
    routes["loader chunk"] = [(d.id or "", d.page_content, _stable(d.metadata)) for d in docs]
    whole = DocumentAnalyzeLoader(path, client=client, **html).load()
    split_docs = StructuredTextSplitter(**split).split_documents(whole)  # type: ignore[arg-type]
    routes["loader document + splitter"] = [(d.id or "", d.page_content, _stable(d.metadata)) for d in split_docs]

    read = DocumentAnalyzeReader(client=client, mode="chunk", **chunk, **html).load_data(path)
    routes["reader chunk"] = _nodes(list(read))
    parents = DocumentAnalyzeReader(client=client, **html).load_data(path)
    parser = StructuredNodeParser(**split)  # type: ignore[arg-type]
    routes["reader document + node parser"] = _nodes(parser.get_nodes_from_documents(parents))
    routes["reader document + pipeline"] = _nodes(IngestionPipeline(transformations=[parser]).run(documents=parents))

    mp.setenv("AISEARCH_ENDPOINT", emu.url)
    mp.setenv("AISEARCH_API_KEY", EMULATOR_API_KEY)
    out = tmp / f"{Path(path).name}.{max_tokens}.jsonl"
    argv = ["ingest", path, "--out", str(out), "--mode", "chunk", "--max-tokens", str(max_tokens), "--no-progress"]
    argv += ["--include-headings"] if headings else []
    assert main([*argv, *(["--keep-html"] if keep_html else [])]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    routes["cli --mode chunk"] = [(r["id"], r["text"], _stable(r["metadata"])) for r in lines]
    return routes


@pytest.mark.parametrize(("max_tokens", "headings"), SETTINGS)
@pytest.mark.parametrize("name", ["annual_report.pdf", "product_faq.docx", "meeting_notes.md"])
def test_every_route_gives_the_same_chunks_and_ids(
    client: DocumentAnalyzer,
    emu: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    max_tokens: int,
    headings: bool,
) -> None:
    path = str(DATA / name)
    routes = _routes(client, emu, path, max_tokens, headings, tmp_path, monkeypatch)
    reference = routes["loader chunk"]
    assert len(reference) > 1
    assert len({i for i, _, _ in reference}) == len(reference)
    assert all(m["chunk_tokens"] <= max_tokens for _, _, m in reference)
    multi_page = reference[0][2]["page_num"] > 1
    for route, chunks in routes.items():
        assert [(i, t) for i, t, _ in chunks] == [(i, t) for i, t, _ in reference], route
        if multi_page and "+" in route:
            # A document record keeps no page boundaries: these chunks have no page span; all else is the same.
            assert all(not PAGE_KEYS & m.keys() for _, _, m in chunks), route
            expected = [{k: v for k, v in m.items() if k not in PAGE_KEYS} for _, _, m in reference]
        else:
            expected = [m for _, _, m in reference]
        assert [m for _, _, m in chunks] == expected, route
    if multi_page:
        assert {m["page_start"] for _, _, m in reference} == {1, 2, 3}
    else:
        assert all(m["page"] == m["page_start"] == m["page_end"] == 1 for _, _, m in reference)


@pytest.mark.parametrize("keep_html", [False, True])
def test_html_results_agree_through_every_route_as_markdown_or_as_html(
    client: DocumentAnalyzer, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_html: bool
) -> None:
    """document-analyze's HTML (a DOCX) is chunked as markdown by every route, or as HTML by every route when each
    is told to keep it: the ids agree either way, and differ between the two (other text, other content type)."""
    path = str(DATA / "product_faq.docx")
    routes = _routes(client, emu, path, 128, False, tmp_path, monkeypatch, keep_html=keep_html)
    reference = routes["loader chunk"]
    assert {m["content_type"] for _, _, m in reference} == {"html" if keep_html else "markdown"}
    for route, chunks in routes.items():
        assert chunks == reference, route
    other = _routes(client, emu, path, 128, False, tmp_path, monkeypatch, keep_html=not keep_html)["loader chunk"]
    assert not {i for i, _, _ in reference} & {i for i, _, _ in other}


def test_page_mode_documents_split_are_other_chunks(client: DocumentAnalyzer) -> None:
    """Split per page, a multi-page file's chunks differ from ``mode="chunk"``'s (as documented), ids included."""
    path = DATA / "annual_report.pdf"
    chunked = DocumentAnalyzeLoader(path, mode="chunk", client=client).load()
    pages = DocumentAnalyzeLoader(path, mode="page", client=client).load()
    per_page = StructuredTextSplitter().split_documents(pages)
    assert not {d.id for d in chunked} & {d.id for d in per_page}
    assert all(d.metadata["page"] == d.metadata["page_start"] == d.metadata["page_end"] for d in per_page)


def test_both_frameworks_hide_the_same_keys(client: DocumentAnalyzer) -> None:
    path = DATA / "annual_report.pdf"
    langchain = DocumentAnalyzeLoader(path, mode="chunk", client=client).load()
    read = DocumentAnalyzeReader(client=client, mode="chunk").load_data(path)
    parsed = StructuredNodeParser().get_nodes_from_documents(DocumentAnalyzeReader(client=client).load_data(path))
    expected = set(bookkeeping_keys(langchain[0].metadata))
    assert {"chunk_index", "page_start", "usage_token_count", "request_id", "service_id"} <= expected
    assert not expected & {"source", "file_name", "headings", "page"}  # LangChain embeds page_content alone
    for node in [*read, *parsed]:
        # paths never reach an LLM, nor the file name an embedding model; page and headings do
        llm = expected | {"source"}
        assert set(node.excluded_llm_metadata_keys) == llm - _page_span_if_absent(node.metadata)
        assert set(node.excluded_embed_metadata_keys) == (llm | {"file_name"}) - _page_span_if_absent(node.metadata)


def _page_span_if_absent(metadata: dict[str, Any]) -> set[str]:
    return {"page_start", "page_end"} - metadata.keys()


def test_the_default_chunker_settings_agree() -> None:
    """The loaders' chunk mode, the CLI, the splitter and the node parser chunk with the same default settings."""
    with DocumentAnalyzer(endpoint="http://127.0.0.1:9", api_key=EMULATOR_API_KEY) as analyzer:
        shaper = Shaper(analyzer, mode="chunk")
    assert shaper.chunker is not None
    keys = {
        shaper.chunker.settings_key(),
        StructuredTextSplitter().chunker.settings_key(),
        StructuredNodeParser()._chunker.settings_key(),
        StructuredChunker().settings_key(),
    }
    assert len(keys) == 1, keys

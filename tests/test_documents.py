"""documents.py: flat metadata, deterministic ids, modes. Pure functions, no network, no framework."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisearch_ingest import Page, ParseResult
from aisearch_ingest.documents import (
    BOOKKEEPING_KEYS,
    Record,
    bookkeeping_keys,
    chunk_id,
    chunk_metadata,
    document_id,
    records_from_result,
    result_metadata,
    source_identity,
    split_record,
    stable_key,
)
from aisearch_ingest.results import flatten_usage

SCALARS = (str, int, float, bool)


def pdf_result(**changes: object) -> ParseResult:
    base = ParseResult(
        source="reports/annual.pdf",
        file_name="annual.pdf",
        file_type="pdf",
        service="document-analyze",
        service_id="ops-document-analyze-001",
        content="# A\n\none\n\n## B\n\ntwo",
        content_type="markdown",
        page_num=2,
        pages=[Page(1, "# A\n\none"), Page(2, "## B\n\ntwo")],
        usage={"token_count": 12, "table_count": 0},
        request_id="REQ-1",
        task_id="task-1",
        latency=1.5,
        calls=3,
        source_sha256="ab" * 32,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def qwen_result() -> ParseResult:
    return ParseResult(
        source="scan.png",
        file_name="scan.png",
        file_type="png",
        service="qwen-ocr",
        service_id="qwen-vl-ocr-latest",
        content="hello",
        content_type="plain",
        pages=[Page(1, "hello", {"words_info": [{"text": "hello", "location": [1, 2, 3, 4]}]})],
        usage=flatten_usage({"input_tokens": 10, "output_tokens": 2, "input_tokens_details": {"image_tokens": 8}}),
        request_id="r-9",
        source_sha256="cd" * 32,
        ocr_task="advanced_recognition",
        extra={"words_info": [{"text": "hello", "location": [1, 2, 3, 4]}]},
    )


def test_metadata_keys_follow_the_design_table() -> None:
    meta = result_metadata(pdf_result())
    assert meta == {
        "source": "reports/annual.pdf",
        "file_name": "annual.pdf",
        "file_type": "pdf",
        "service": "document-analyze",
        "service_id": "ops-document-analyze-001",
        "content_type": "markdown",
        "page_num": 2,
        "usage_table_count": 0,
        "usage_token_count": 12,
        "request_id": "REQ-1",
        "task_id": "task-1",
        "source_sha256": "ab" * 32,
    }


def test_qwen_metadata_has_model_task_and_flat_usage_but_no_structured_extra() -> None:
    meta = result_metadata(qwen_result())
    assert meta["model"] == meta["service_id"] == "qwen-vl-ocr-latest"
    assert meta["ocr_task"] == "advanced_recognition"
    assert meta["usage_input_tokens_details_image_tokens"] == 8
    assert "task_id" not in meta  # unknown values are left out, never None
    assert not any("words" in key for key in meta)
    assert all(isinstance(v, SCALARS) for v in meta.values())


@given(
    usage=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.text(), st.none()),
        max_size=6,
    ),
    request_id=st.one_of(st.none(), st.text(max_size=5)),
)
def test_metadata_is_always_flat_scalars(usage: dict[str, object], request_id: str | None) -> None:
    result = pdf_result(usage=flatten_usage(usage), request_id=request_id, task_id=None)
    for mode in ("document", "page"):
        for record in records_from_result(result, mode=mode):  # type: ignore[arg-type]
            assert all(isinstance(v, SCALARS) for v in record.metadata.values()), record.metadata


def test_ids_are_uuids_and_stable_across_calls_and_edits_of_the_same_source() -> None:
    first = records_from_result(pdf_result(), mode="page")
    again = records_from_result(pdf_result(request_id="REQ-2", task_id="task-2"), mode="page")
    edited = records_from_result(pdf_result(source_sha256="ef" * 32), mode="page")
    # the identity is the source: a re-run and an edit of the same file give the same ids (a store replaces them)
    assert [r.id for r in first] == [r.id for r in again] == [r.id for r in edited]
    assert len({r.id for r in first}) == 2
    for record in first:
        assert str(uuid.UUID(record.id)) == record.id


def test_another_path_is_another_document() -> None:
    here = records_from_result(pdf_result(), mode="document")
    there = records_from_result(pdf_result(source="/elsewhere/copy.pdf", file_name="copy.pdf"), mode="document")
    assert here[0].id != there[0].id


def test_bytes_without_a_name_are_known_by_their_content() -> None:
    one = pdf_result(source="upload.pdf", file_name="upload.pdf")
    assert source_identity(one) == f"sha256:{one.source_sha256}"
    other = pdf_result(source="upload.pdf", file_name="upload.pdf", source_sha256="ef" * 32)
    assert document_id(one, mode="document", position=0) != document_id(other, mode="document", position=0)
    data_uri = pdf_result(source="data:application/pdf;base64,…(2 KB)", file_name="upload.pdf")
    assert source_identity(data_uri).startswith("sha256:")


def test_chunk_ids_change_with_the_content_and_stay_with_position() -> None:
    chunking = pytest.importorskip("aisearch_ingest.chunking")
    chunker = chunking.StructuredChunker(max_tokens=64)
    before = records_from_result(pdf_result(), mode="chunk", chunker=chunker)
    again = records_from_result(pdf_result(request_id="REQ-2"), mode="chunk", chunker=chunker)
    edited = records_from_result(pdf_result(source_sha256="ef" * 32), mode="chunk", chunker=chunker)
    assert [r.id for r in before] == [r.id for r in again]
    assert not {r.id for r in before} & {r.id for r in edited}


@pytest.mark.parametrize(
    "change",
    [
        {"source": "other.pdf"},
        {"service_id": "ops-document-analyze-002"},
        {"service": "qwen-ocr"},
        {"ocr_task": "table_parsing"},
    ],
)
def test_ids_change_with_source_service_and_task(change: dict[str, object]) -> None:
    base = document_id(pdf_result(), mode="document", position=0)
    assert document_id(pdf_result(**change), mode="document", position=0) != base


def test_ids_change_with_options_mode_and_position_but_not_with_none_options() -> None:
    r = pdf_result()
    base = document_id(r, mode="page", position=1)
    assert document_id(r, mode="page", position=2) != base
    assert document_id(r, mode="document", position=1) != base
    assert document_id(r, mode="page", position=1, options={"prompt": "x"}) != base
    assert document_id(r, mode="page", position=1, options={"prompt": None}) == base
    schema_a = {"b": 1, "a": {"y": 2, "x": 1}}
    schema_b = {"a": {"x": 1, "y": 2}, "b": 1}
    assert document_id(r, mode="page", position=1, options={"result_schema": schema_a}) == document_id(
        r, mode="page", position=1, options={"result_schema": schema_b}
    )


def test_document_mode_is_one_record_with_the_whole_content() -> None:
    [record] = records_from_result(pdf_result(), mode="document")
    assert record.text == pdf_result().content
    assert "page" not in record.metadata


def test_page_mode_gives_one_record_per_page_and_falls_back_to_one() -> None:
    records = records_from_result(pdf_result(), mode="page")
    assert [(r.text, r.metadata["page"]) for r in records] == [("# A\n\none", 1), ("## B\n\ntwo", 2)]
    no_pages = pdf_result(pages=[], page_num=1, file_type="docx", content="<p>x</p>")
    [only] = records_from_result(no_pages, mode="page")
    assert only.text == "<p>x</p>" and only.metadata["page"] == 1
    [unknown] = records_from_result(pdf_result(pages=[], page_num=4), mode="page")
    assert "page" not in unknown.metadata


@dataclass(frozen=True)
class _Chunk:
    text: str
    tokens: int
    headings: tuple[str, ...]
    page_start: int | None
    page_end: int | None
    kind: str
    index: int
    count: int


class _TwoChunks:
    def __init__(self, settings: str = "two-chunks") -> None:
        self.settings = settings

    def settings_key(self) -> str:
        return self.settings

    def chunk_result(self, result: ParseResult) -> list[_Chunk]:
        return [
            _Chunk("one", 1, ("A",), 1, 1, "text", 0, 2),
            _Chunk("two", 1, ("A", "B"), 1, 2, "table", 1, 2),
        ]


def test_chunk_mode_metadata_and_ids() -> None:
    records = records_from_result(pdf_result(), mode="chunk", chunker=_TwoChunks())
    first, second = (r.metadata for r in records)
    assert first["headings"] == "A" and second["headings"] == "A > B"
    assert (first["page"], first["page_start"], first["page_end"]) == (1, 1, 1)
    assert "page" not in second and (second["page_start"], second["page_end"]) == (1, 2)
    assert (second["chunk_index"], second["chunk_count"], second["chunk_tokens"], second["chunk_kind"]) == (
        1,
        2,
        1,
        "table",
    )
    assert records[0].id != records[1].id
    other = records_from_result(pdf_result(), mode="chunk", chunker=_TwoChunks("other settings"))
    assert other[0].id != records[0].id  # the chunker's settings are part of the ids


def test_chunk_ids_are_chunk_id_of_the_document_mode_id() -> None:
    options = {"image_storage": "url"}
    [document] = records_from_result(pdf_result(), mode="document", options=options)
    chunks = records_from_result(pdf_result(), mode="chunk", chunker=_TwoChunks(), options=options)
    sha = pdf_result().source_sha256
    assert [r.id for r in chunks] == [chunk_id(document.id, "two-chunks", "markdown", i, content=sha) for i in (0, 1)]
    # another service option, another parent, other chunk ids
    assert records_from_result(pdf_result(), mode="chunk", chunker=_TwoChunks())[0].id != chunks[0].id


def test_chunk_id_depends_on_every_part() -> None:
    base = chunk_id("p", "s", "markdown", 0, content="c")
    assert str(uuid.UUID(base)) == base
    others = [
        chunk_id("q", "s", "markdown", 0, content="c"),
        chunk_id("p", "t", "markdown", 0, content="c"),
        chunk_id("p", "s", "html", 0, content="c"),
        chunk_id("p", "s", "markdown", 0, content="d"),
    ]
    assert base not in others and len(set(others)) == 4
    assert chunk_id("p", "s", "markdown", 1, content="c") != base
    with pytest.raises(ValueError, match="chunk_id"):
        document_id(pdf_result(), mode="chunk", position=0)  # type: ignore[arg-type]


def test_chunk_metadata_page_keys_only_where_known() -> None:
    assert chunk_metadata(_Chunk("x", 1, (), None, None, "code", 0, 1)) == {
        "chunk_index": 0,
        "chunk_count": 1,
        "chunk_tokens": 1,
        "headings": "",
        "chunk_kind": "code",
    }
    spanning = chunk_metadata(_Chunk("x", 1, ("A",), 2, 3, "text", 0, 1))
    assert (spanning["page_start"], spanning["page_end"]) == (2, 3) and "page" not in spanning


def test_split_record_gives_the_chunk_mode_records_of_a_single_page_result() -> None:
    chunking = pytest.importorskip("aisearch_ingest.chunking")
    chunker = chunking.StructuredChunker(max_tokens=8)
    one_page = pdf_result(page_num=1, pages=[Page(1, "# A\n\none\n\n## B\n\ntwo")])
    [document] = records_from_result(one_page, mode="document")
    split = split_record(document, chunker)
    chunked = records_from_result(one_page, mode="chunk", chunker=chunker)
    assert len(chunked) >= 2
    assert [(r.id, r.text, r.metadata) for r in split] == [(r.id, r.text, r.metadata) for r in chunked]
    assert all(r.metadata["page"] == 1 for r in split)


def test_split_record_of_a_multi_page_document_has_the_texts_and_ids_but_no_page_span() -> None:
    chunking = pytest.importorskip("aisearch_ingest.chunking")
    chunker = chunking.StructuredChunker(max_tokens=8)
    [document] = records_from_result(pdf_result(), mode="document")
    split = split_record(document, chunker)
    chunked = records_from_result(pdf_result(), mode="chunk", chunker=chunker)
    assert [(r.id, r.text) for r in split] == [(r.id, r.text) for r in chunked]
    page_keys = {"page", "page_start", "page_end"}
    assert all(not page_keys & r.metadata.keys() for r in split)
    assert all({"page_start", "page_end"} <= r.metadata.keys() for r in chunked)
    assert [{k: v for k, v in r.metadata.items() if k not in page_keys} for r in chunked] == [r.metadata for r in split]


def test_split_record_of_a_page_keeps_its_page_and_reads_its_content_type() -> None:
    chunking = pytest.importorskip("aisearch_ingest.chunking")
    chunker = chunking.StructuredChunker()
    [page] = split_record(Record("p1", "<h1>T</h1><p>x</p>", {"page": 4, "content_type": "html"}), chunker)
    assert page.text == "# T\n\nx" and (page.metadata["page"], page.metadata["page_start"]) == (4, 4)
    text_sha = hashlib.sha256(b"<h1>T</h1><p>x</p>").hexdigest()  # no source_sha256: the parent's text is the content
    assert page.id == chunk_id("p1", chunker.settings_key(), "html", 0, content=text_sha)
    [plain] = split_record(Record("p2", "<h1>T</h1>", {}), chunker, content_type="plain")
    assert plain.text == "<h1>T</h1>" and "page_start" not in plain.metadata


def test_chunk_mode_with_the_real_chunker() -> None:
    chunking = pytest.importorskip("aisearch_ingest.chunking")
    chunker = chunking.StructuredChunker(max_tokens=8)
    records = records_from_result(pdf_result(), mode="chunk", chunker=chunker)
    assert len(records) >= 2
    assert [r.metadata["chunk_index"] for r in records] == list(range(len(records)))
    assert all(isinstance(v, SCALARS) for r in records for v in r.metadata.values())


def test_mode_errors() -> None:
    with pytest.raises(ValueError, match="chunker"):
        records_from_result(pdf_result(), mode="chunk")
    with pytest.raises(ValueError, match="mode"):
        records_from_result(pdf_result(), mode="sentence")  # type: ignore[arg-type]


def test_caller_metadata_is_never_overwritten_ours_is_renamed_on_a_clash() -> None:
    extra = {"tenant": "acme", "file_path": "/data/annual.pdf", "file_type": "application/pdf", "page": 99}
    records = records_from_result(pdf_result(), mode="page", extra_metadata=extra)
    assert [r.metadata["aisearch_page"] for r in records] == [1, 2]
    for record in records:
        assert record.metadata["tenant"] == "acme" and record.metadata["file_path"] == "/data/annual.pdf"
        assert (record.metadata["file_type"], record.metadata["aisearch_file_type"]) == ("application/pdf", "pdf")
        assert record.metadata["page"] == 99
        # a renamed bookkeeping key stays hidden from embedding and LLM text like its original
        assert "aisearch_file_type" in bookkeeping_keys(record.metadata)
    same = records_from_result(pdf_result(), extra_metadata={"source": pdf_result().source})
    assert "aisearch_source" not in same[0].metadata  # the same value is no clash


def test_stable_key_ignores_per_call_ids_only() -> None:
    [record] = records_from_result(pdf_result())
    [rerun] = records_from_result(pdf_result(request_id="REQ-2", task_id="task-2"))
    assert record.metadata != rerun.metadata
    key = stable_key(record.id, record.text, record.metadata)
    assert key == stable_key(rerun.id, rerun.text, rerun.metadata)
    assert key != stable_key(record.id, record.text + "!", record.metadata)
    assert key != stable_key(record.id, record.text, {**record.metadata, "tenant": "acme"})


def test_bookkeeping_keys() -> None:
    [record] = records_from_result(qwen_result(), mode="page")
    keys = set(bookkeeping_keys(record.metadata))
    assert {"request_id", "source_sha256", "usage_output_tokens", "model", "service_id"} <= keys
    assert not keys & {"source", "file_name", "page"}
    chunk_keys = chunk_metadata(_Chunk("x", 1, ("A",), 1, 2, "text", 0, 1)).keys()
    assert set(bookkeeping_keys(chunk_keys)) == set(chunk_keys) - {"headings"} == BOOKKEEPING_KEYS & chunk_keys


def test_docstring_examples_run() -> None:
    import doctest

    from aisearch_ingest import _adapters, documents

    for module in (documents, _adapters):
        outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert outcome.failed == 0 and outcome.attempted >= 4, module.__name__

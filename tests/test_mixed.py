"""One loader and one reader for a mixed folder (issue 13 item 2): every file of ``notebooks/data`` routed by its
sniffed type, through the frameworks' own entry points, against the emulator over real sockets. Each file's records
are compared with what the single-service loader or reader gives for it (ids and metadata), never with literal ids.
"""

from __future__ import annotations

import asyncio
import doctest
import importlib
import os
import pickle
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from aisearch_ingest import DocumentAnalyzer, ImageAnalyzer, InvalidInputError, PollPolicy
from aisearch_ingest.documents import VOLATILE_KEYS
from aisearch_ingest.emulator import Emulator, Latency
from aisearch_ingest.langchain import (
    AISearchLoader,
    AISearchParser,
    DocumentAnalyzeLoader,
    DocumentAnalyzeParser,
    ImageAnalyzeLoader,
    ImageAnalyzeParser,
    QwenOCRLoader,
    QwenOCRParser,
)
from aisearch_ingest.llama_index import (
    AISearchReader,
    DocumentAnalyzeReader,
    ImageAnalyzeReader,
    QwenOCRReader,
    file_extractor,
)
from aisearch_ingest.qwen import QwenOCR
from aisearch_ingest.routing import extensions, route, service_for
from aisearch_ingest.testing import EMULATOR_API_KEY

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "notebooks" / "data"
KEY = EMULATOR_API_KEY
IMAGES = {"formula.png", "invoice.png", "scan_page.png"}
FILES = sorted(p.name for p in DATA.iterdir() if not p.name.startswith("."))
SCALARS = (str, int, float, bool)


@pytest.fixture
def where(emu: Emulator) -> Iterator[dict[str, Any]]:
    """The connection keywords of a mixed adapter for either image choice (Qwen-OCR's in image_options)."""
    yield {"endpoint": emu.url, "api_key": KEY}


def _qwen(emu: Emulator) -> dict[str, Any]:
    return {"image_options": {"base_url": emu.url, "api_key": KEY}}


def _shape(docs: Iterable[Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """id -> (text, metadata without the per-call keys), for either framework's documents."""
    out = {}
    for doc in docs:
        text = getattr(doc, "page_content", None)
        text = doc.text if text is None else text
        doc_id = getattr(doc, "id_", None) or doc.id
        out[doc_id] = (text, {k: v for k, v in doc.metadata.items() if k not in VOLATILE_KEYS})
    return out


def _services(docs: Iterable[Any]) -> dict[str, set[str]]:
    by_file: dict[str, set[str]] = {}
    for doc in docs:
        by_file.setdefault(doc.metadata["file_name"], set()).add(doc.metadata["service"])
    return by_file


def _expected_services(images: str) -> dict[str, set[str]]:
    return {name: {images if name in IMAGES else "document-analyze"} for name in FILES}


# -- routing (no network) --------------------------------------------------------------------------------------------


def test_routing_sends_documents_and_images_where_the_user_chose(tmp_path: Path) -> None:
    for file_type in ("pdf", "docx", "doc", "pptx", "html", "md", "txt"):
        assert service_for("f", file_type) == service_for("f", file_type, images="qwen-ocr") == "document-analyze"
    for file_type in ("png", "jpg", "tiff", "webp", "bmp"):
        assert service_for("f", file_type) == "image-analyze"
        assert service_for("f", file_type, images="qwen-ocr") == "qwen-ocr"
    assert service_for("f", "gif") == "image-analyze"
    with pytest.raises(InvalidInputError, match=r"a\.gif: Qwen-OCR does not read \.gif.*images='image-analyze'"):
        service_for("a.gif", "gif", images="qwen-ocr")
    with pytest.raises(InvalidInputError, match=r"book\.xlsx: no service parses \.xlsx") as info:
        service_for("book.xlsx", "xlsx")
    assert info.value.limit == "file_type" and info.value.source == "book.xlsx"
    with pytest.raises(ValueError, match="images must be one of"):
        service_for("f", "png", images="ocr")  # type: ignore[arg-type]
    # by the bytes, not the suffix: a PNG named .pdf is an image
    disguised = tmp_path / "really_a_png.pdf"
    shutil.copy(DATA / "scan_page.png", disguised)
    assert route(disguised) == ("image-analyze", disguised)
    assert route(str(DATA / "annual_report.pdf"), images="qwen-ocr")[0] == "document-analyze"
    service, source = route((DATA / "invoice.png").read_bytes(), images="qwen-ocr")
    assert service == "qwen-ocr" and source.file_type == "png"  # type: ignore[union-attr]
    table = extensions()
    assert {".pdf", ".docx", ".md", ".txt", ".png", ".jpeg", ".jpg", ".tif", ".gif", ".heic"} <= table.keys()
    assert table[".pdf"] == "document-analyze" and table[".png"] == "image-analyze"
    assert ".gif" not in extensions("qwen-ocr") and extensions("qwen-ocr")[".png"] == "qwen-ocr"


def test_the_cli_routes_with_the_same_decision() -> None:
    from aisearch_ingest import cli

    assert cli._route(DATA / "scan_page.png", "auto")[0] == "image-vlm"
    assert cli._route(DATA / "annual_report.pdf", "auto")[0] == "document"
    with pytest.raises(InvalidInputError, match="no service parses"):
        cli._service_for("book.xlsx", "xlsx", "auto")


# -- LangChain -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("images", "mode"), [("image-analyze", "document"), ("image-analyze", "chunk"),
                                              ("qwen-ocr", "page")])  # fmt: skip
def test_loader_parses_all_of_the_data_folder_each_file_by_its_service(
    emu: Emulator, where: dict[str, Any], images: str, mode: str
) -> None:
    extra = _qwen(emu) if images == "qwen-ocr" else {}
    with AISearchLoader(DATA, images=images, mode=mode, **where, **extra) as loader:  # type: ignore[arg-type]
        docs = loader.load()
        assert loader.failures == []
    assert _services(docs) == _expected_services(images)
    for doc in docs:
        assert all(isinstance(v, SCALARS) for v in doc.metadata.values()), doc.metadata
    # exactly the single-service loaders' documents for the same files (the others are refused before sending)
    with DocumentAnalyzeLoader(DATA, mode=mode, on_error="skip", **where) as single:  # type: ignore[arg-type]
        expected = single.load()
    if images == "qwen-ocr":
        qwen = QwenOCRLoader(DATA, glob="*.png", mode=mode, base_url=emu.url, api_key=KEY)  # type: ignore[arg-type]
    else:
        qwen = ImageAnalyzeLoader(DATA, mode=mode, on_error="skip", **where)  # type: ignore[arg-type]
    with qwen:
        expected += qwen.load()
    assert len(docs) == len(expected)
    assert _shape(docs) == _shape(expected)


def test_alazy_load_runs_the_services_at_the_same_time(emu: Emulator, where: dict[str, Any]) -> None:
    files = [DATA / "meeting_notes.md", DATA / "scan_page.png", DATA / "overview.html", DATA / "formula.png"]
    fast = DocumentAnalyzer(**where, poll=PollPolicy(min_interval=0.05, max_interval=0.1))
    loader = AISearchLoader(files, document_client=fast, **{k: v for k, v in where.items()})
    plain = loader.load()  # warm the emulator's caches: what is timed below is the 1-second calls

    async def main() -> list[Any]:
        return [doc async for doc in loader.alazy_load()]

    with loader:
        emu.set_latency(Latency(fixed=1.0))
        try:
            started = time.monotonic()
            docs = asyncio.run(main())
            async_elapsed = time.monotonic() - started
            started = time.monotonic()
            again = list(loader.lazy_load())
            sync_elapsed = time.monotonic() - started
        finally:
            emu.set_latency(None)
    assert _services(docs) == {p.name: {"image-analyze" if p.suffix == ".png" else "document-analyze"} for p in files}
    assert _shape(docs) == _shape(plain) == _shape(again)
    # four 1-second calls on two services, all at once: about one second, not four
    assert 1.0 <= async_elapsed < 1.8, async_elapsed
    assert 1.0 <= sync_elapsed < 1.8, sync_elapsed


@pytest.mark.parametrize("images", ["image-analyze", "qwen-ocr"])
def test_generic_loader_with_the_mixed_parser(emu: Emulator, where: dict[str, Any], images: str) -> None:
    generic = pytest.importorskip("langchain_community.document_loaders.generic")
    extra = _qwen(emu) if images == "qwen-ocr" else {}
    with AISearchParser(images=images, mode="page", **where, **extra) as parser:  # type: ignore[arg-type]
        docs = generic.GenericLoader.from_filesystem(DATA, glob="*", parser=parser).load()
        assert parser.failures == []
    assert _services(docs) == _expected_services(images)
    # the single-service parsers' documents for the same blobs
    with DocumentAnalyzeParser(mode="page", on_error="skip", **where) as single:
        expected = generic.GenericLoader.from_filesystem(DATA, glob="*", parser=single).load()
    if images == "qwen-ocr":
        other: Any = QwenOCRParser(mode="page", base_url=emu.url, api_key=KEY)
        expected += generic.GenericLoader.from_filesystem(DATA, glob="*.png", parser=other).load()
    else:
        other = ImageAnalyzeParser(mode="page", on_error="skip", **where)
        expected += generic.GenericLoader.from_filesystem(DATA, glob="*", parser=other).load()
    other.close()
    assert _shape(docs) == _shape(expected)


@pytest.fixture
def with_bad_files(tmp_path: Path) -> Path:
    """notebooks/data plus a file of no known type, a spreadsheet, a "PDF" of noise and a GIF of noise (which Qwen-OCR
    does not read, and image-analyze cannot decode)."""
    root = tmp_path / "data"
    shutil.copytree(DATA, root)
    (root / "broken.pdf").write_bytes(b"\xff\xfe" + os.urandom(64))  # no type in its bytes: refused unsent
    (root / "noise.bin").write_bytes(b"\x00\xff" + os.urandom(200))
    (root / "book.xlsx").write_bytes(b"PK\x03\x04" + os.urandom(200))
    (root / "tiny.gif").write_bytes(b"GIF89a" + os.urandom(64))
    return root


def test_a_bad_file_is_a_failure_and_the_rest_are_kept(
    emu: Emulator, where: dict[str, Any], with_bad_files: Path
) -> None:
    loader = AISearchLoader(with_bad_files, images="qwen-ocr", on_error="skip", **where, **_qwen(emu))
    with loader:
        docs = loader.load()
    assert _services(docs) == _expected_services("qwen-ocr")  # every good file, by its service
    failed = {Path(source).name: error for source, error in loader.failures}
    assert sorted(failed) == ["book.xlsx", "broken.pdf", "noise.bin", "tiny.gif"]
    assert all(isinstance(error, InvalidInputError) and Path(s).name in str(error) for s, error in loader.failures)
    assert "Qwen-OCR does not read .gif" in str(failed["tiny.gif"])

    raising = AISearchLoader(with_bad_files, **where)
    seen: list[Any] = []
    with raising, pytest.raises(InvalidInputError) as info:
        for doc in raising.lazy_load():
            seen.append(doc)
    assert Path(info.value.source or "").name in {"book.xlsx", "broken.pdf", "noise.bin"}
    assert {Path(s).name for s, _ in raising.failures} >= {"book.xlsx", "broken.pdf", "noise.bin"}
    assert {d.metadata["file_name"] for d in seen} <= set(FILES) | {"tiny.gif"}


def test_loader_arguments_are_checked_by_name(emu: Emulator, where: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=r"unknown keyword argument 'imagse'; did you mean 'images'\?"):
        AISearchLoader(DATA, imagse="qwen-ocr", **where)
    with pytest.raises(TypeError, match=r"'max_pages': it is a client argument .*document_options=\{'max_pages'"):
        AISearchLoader(DATA, max_pages=3, **where)
    with pytest.raises(TypeError, match=r"unknown document_options key 'max_page'; did you mean 'max_pages'\?"):
        AISearchParser(document_options={"max_page": 3}, **where)
    with pytest.raises(TypeError, match=r"unknown image_options key 'tsk'; did you mean 'task'\?"):
        AISearchParser(images="qwen-ocr", image_options={"tsk": "table_parsing"}, **where)
    with pytest.raises(TypeError, match=r"unknown image_options key 'task'"):  # not an ImageAnalyzer argument
        AISearchParser(image_options={"task": "table_parsing"}, **where)
    with ImageAnalyzer(**where) as image, DocumentAnalyzer(**where) as document:
        with pytest.raises(ValueError, match=r"image_client is a ImageAnalyzer .*images='image-analyze'"):
            AISearchLoader(DATA, images="qwen-ocr", image_client=image)
        with pytest.raises(TypeError, match="image_client= and image_options"):
            AISearchLoader(DATA, image_client=image, image_options={"qps": 1}, **where)
        with pytest.raises(TypeError, match="which it would ignore"):
            AISearchLoader(DATA, document_client=document, image_client=image, api_key=KEY)
        loader = AISearchLoader(DATA, document_client=document, image_client=image)
        assert loader.document_client is document and loader.image_client is image
    with pytest.raises(ValueError, match="mode"):
        AISearchLoader(DATA, mode="pages", **where)  # type: ignore[arg-type]
    # per-service options reach their clients; the shared connection too, and an options entry wins over it
    loader = AISearchLoader(
        DATA,
        **where,
        document_options={"max_pages": 2, "route": "sync"},
        image_options={"service_id": "ops-image-analyze-ocr-001", "endpoint": "http://127.0.0.1:9"},
    )
    with loader:
        assert loader.document_client.max_pages == 2  # type: ignore[attr-defined]
        assert loader.image_client.service_id == "ops-image-analyze-ocr-001"  # type: ignore[attr-defined]
        assert "127.0.0.1:9" in repr(loader.image_client) and emu.url in repr(loader.document_client)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(loader)
    qwen = AISearchLoader(
        DATA, images="qwen-ocr", **where, image_options={"base_url": emu.url, "api_key": KEY, "task": "table_parsing"}
    )
    with qwen:
        assert isinstance(qwen.image_client, QwenOCR) and qwen.image_client.ocr_task == "table_parsing"


def test_a_folder_of_documents_needs_no_image_credentials(
    where: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    with AISearchLoader(DATA, glob="*.md", images="qwen-ocr", **where) as loader:
        docs = loader.load()
        assert [d.metadata["service"] for d in docs] == ["document-analyze"]
        assert set(loader.clients.built()) == {"document-analyze"}


# -- LlamaIndex ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("images", "mode"), [("image-analyze", "page"), ("qwen-ocr", "document")])
def test_reader_parses_all_of_the_data_folder_each_file_by_its_service(
    emu: Emulator, where: dict[str, Any], images: str, mode: str
) -> None:
    extra = _qwen(emu) if images == "qwen-ocr" else {}
    with AISearchReader(images=images, mode=mode, **where, **extra) as reader:
        docs = reader.load_data(DATA)
        assert reader.failures == []
        adocs = asyncio.run(reader.aload_data(DATA))
    assert _services(docs) == _expected_services(images)
    assert _shape(adocs) == _shape(docs)
    with DocumentAnalyzeReader(mode=mode, on_error="skip", **where) as single:
        expected = single.load_data(DATA)
    other: Any = (
        QwenOCRReader(mode=mode, base_url=emu.url, api_key=KEY)
        if images == "qwen-ocr"
        else ImageAnalyzeReader(mode=mode, on_error="skip", **where)
    )
    with other:
        expected += other.load_data(sorted(DATA.glob("*.png")) if images == "qwen-ocr" else DATA)
    assert _shape(docs) == _shape(expected)
    # the bookkeeping keys stay out of the embedded text, as for the single readers
    excluded = {d.id_: set(d.excluded_embed_metadata_keys) for d in expected}
    assert {d.id_: set(d.excluded_embed_metadata_keys) for d in docs} == excluded


@pytest.mark.parametrize("images", ["image-analyze", "qwen-ocr"])
def test_simple_directory_reader_with_file_extractor(emu: Emulator, where: dict[str, Any], images: str) -> None:
    from llama_index.core import SimpleDirectoryReader

    extra = _qwen(emu) if images == "qwen-ocr" else {}
    mapping = file_extractor(images=images, **where, **extra)
    reader = mapping[".pdf"]
    assert isinstance(reader, AISearchReader) and all(r is reader for r in mapping.values())
    assert {".pdf", ".docx", ".md", ".txt", ".html", ".png", ".jpg"} <= mapping.keys()
    with reader:
        docs = SimpleDirectoryReader(DATA, file_extractor=mapping).load_data()
        assert reader.failures == []
    assert _services(docs) == _expected_services(images)
    # the single readers through the same entry point give the same documents
    single = DocumentAnalyzeReader(**where)
    other: Any = QwenOCRReader(base_url=emu.url, api_key=KEY) if images == "qwen-ocr" else ImageAnalyzeReader(**where)
    by_suffix = {suffix: other if service != "document-analyze" else single for suffix, service in extensions().items()}
    with single, other:
        expected = SimpleDirectoryReader(DATA, file_extractor=by_suffix).load_data()  # type: ignore[arg-type]
    assert _shape(docs) == _shape(expected)
    with pytest.raises(TypeError, match="a reader and fields"):
        file_extractor(reader, mode="page")  # type: ignore[arg-type]
    assert file_extractor(reader)[".png"] is reader  # type: ignore[arg-type]


def test_simple_directory_reader_keeps_the_rest_when_a_file_is_bad(where: dict[str, Any], with_bad_files: Path) -> None:
    from llama_index.core import SimpleDirectoryReader

    mapping = file_extractor(on_error="skip", **where)
    reader = mapping[".png"]
    with reader:
        docs = SimpleDirectoryReader(with_bad_files, required_exts=list(mapping), file_extractor=mapping).load_data()
    assert _services(docs) == _expected_services("image-analyze")
    failed = {Path(s).name: type(e).__name__ for s, e in reader.failures}  # type: ignore[attr-defined]
    # refused before sending, and failed at the service; book.xlsx and noise.bin have no suffix of the mapping,
    # so SimpleDirectoryReader never hands them over (required_exts)
    assert failed == {"broken.pdf": "InvalidInputError", "tiny.gif": "TaskFailedError"}
    direct = AISearchReader(on_error="skip", **where)
    with direct:
        assert _services(direct.load_data(with_bad_files)) == _expected_services("image-analyze")
    assert sorted(Path(s).name for s, _ in direct.failures) == ["book.xlsx", "broken.pdf", "noise.bin", "tiny.gif"]


def test_reader_fields_are_checked_and_no_key_is_serialised(emu: Emulator, where: dict[str, Any]) -> None:
    secret = "sk-qwen-secret-123"
    reader = AISearchReader(
        images="qwen-ocr",
        **where,
        document_options={"max_pages": 4},
        image_options={"base_url": emu.url, "api_key": secret, "task": "table_parsing"},
    )
    dumped = reader.to_dict()
    assert KEY not in str(dumped) and secret not in str(dumped)
    assert dumped["image_options"] == {"base_url": emu.url, "task": "table_parsing"}
    assert dumped["document_options"] == {"max_pages": 4} and dumped["images"] == "qwen-ocr"
    assert secret not in repr(reader) and KEY not in repr(reader)
    with reader:
        assert reader.clients.client("qwen-ocr").ocr_task == "table_parsing"  # type: ignore[attr-defined]
        data = pickle.dumps(reader)
    assert secret.encode() not in data and KEY.encode() not in data
    copy = pickle.loads(data)
    assert copy.api_key is None and copy.image_options == {"base_url": emu.url, "task": "table_parsing"}
    rebuilt = AISearchReader.from_dict(dumped)
    assert rebuilt.images == "qwen-ocr" and rebuilt.document_options == {"max_pages": 4}
    with pytest.raises(TypeError, match=r"unknown field 'imges'; did you mean 'images'\?"):
        AISearchReader(imges="qwen-ocr", **where)
    with pytest.raises(TypeError, match=r"unknown field 'max_pages': it is a client argument"):
        AISearchReader(max_pages=3, **where)
    with pytest.raises(TypeError, match=r"unknown image_options key 'servce_id'; did you mean 'service_id'\?"):
        AISearchReader(image_options={"servce_id": "x"}, **where)
    with pytest.raises(TypeError, match=r"document_options cannot hold 'poll'.*document_client="):
        AISearchReader(document_options={"poll": PollPolicy()}, **where)
    with pytest.raises(ValueError, match="on_error"):
        AISearchReader(on_error="ignore", **where)
    with DocumentAnalyzer(**where) as client:
        assert AISearchReader(document_client=client, **where).clients.client("document-analyze") is client


def test_docstring_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for name in ("routing", "_mixed", "langchain.mixed", "llama_index.mixed"):
        module = importlib.import_module(f"aisearch_ingest.{name}")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted and not result.failed, name


def _readme_snippets() -> list[str]:
    """The python blocks of the README's two "One loader for a mixed folder" sections."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    parts = text.split("### One loader for a mixed folder")[1:]
    return [part.split("```python\n", 1)[1].split("```", 1)[0] for part in parts]


def test_readme_snippets_run_as_written(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    snippets = _readme_snippets()
    assert len(snippets) == 2
    monkeypatch.chdir(REPO)
    for name, value in {
        "AISEARCH_ENDPOINT": emu.url,
        "AISEARCH_API_KEY": KEY,
        "DASHSCOPE_BASE_URL": emu.url,
        "DASHSCOPE_API_KEY": KEY,
    }.items():
        monkeypatch.setenv(name, value)
    scopes: list[dict[str, Any]] = [{}, {}]
    for snippet, scope in zip(snippets, scopes, strict=True):
        exec(compile(snippet, "README.md", "exec"), scope)
        assert _services(scope["docs"]) == _expected_services("image-analyze")
    assert scopes[0]["loader"].failures == [] and scopes[1]["reader"].failures == []
    assert _services(scopes[0]["ocr"]) == _expected_services("qwen-ocr")

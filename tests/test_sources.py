"""Input normalisation, type sniffing from bytes, and validation before sending."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import pytest

from aisearch_ingest.errors import InvalidInputError
from aisearch_ingest.limits import (
    AISEARCH_MAX_BODY_BYTES,
    DOCUMENT_TYPES,
    IMAGE_TYPES,
    check_aisearch_body,
    precheck_aisearch_size,
)
from aisearch_ingest.sources import expand_inputs, load_source, probe_type, sniff_type

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"


def _zip(member: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(member, "<x/>")
        zf.writestr("[Content_Types].xml", "<Types/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (PDF, "report.bin", "pdf"),
        (PNG, "photo.jpg", "png"),  # the bytes win over a wrong extension
        (JPEG, "", "jpg"),
        (b"GIF89a" + b"\x00" * 10, "", "gif"),
        (b"II*\x00" + b"\x00" * 10, "", "tiff"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "", "webp"),
        (_zip("word/document.xml"), "a.zip", "docx"),
        (_zip("ppt/presentation.xml"), "", "pptx"),
        (b"<!DOCTYPE html><html><body>x</body></html>", "page", "html"),
        (b"# Title\n\nbody", "notes.md", "md"),
        (b"plain words", "", "txt"),
        ("中文文本".encode(), "readme.txt", "txt"),
    ],
)
def test_sniff_type(data: bytes, name: str, expected: str) -> None:
    assert sniff_type(data, name) == expected


def test_load_path_bytes_and_data_uri(tmp_path: Path) -> None:
    path = tmp_path / "scan.jpg"
    path.write_bytes(PNG)
    source = load_source(path)
    assert source.file_type == "png" and source.file_name == "scan.png" and source.origin == str(path)
    from_bytes = load_source(PNG, file_name="x.png")
    assert from_bytes.sha256 == source.sha256
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    from_uri = load_source(uri)
    assert from_uri.data == PNG and from_uri.file_type == "png"
    assert from_uri.data_uri() == uri


def test_url_is_passed_through() -> None:
    source = load_source("https://example.com/files/report%20v2.pdf?sig=1")
    assert source.url and source.data is None
    assert source.file_name == "report v2.pdf" and source.file_type == "pdf"


@pytest.mark.parametrize("bad", [b"", "missing.pdf"])
def test_empty_and_missing_files_are_rejected(tmp_path: Path, bad: bytes | str) -> None:
    if isinstance(bad, bytes):
        target = tmp_path / "empty.pdf"
        target.write_bytes(bad)
        expected_limit = "empty"
    else:
        target = tmp_path / bad
        expected_limit = "not_found"
    with pytest.raises(InvalidInputError) as info:
        load_source(target)
    assert info.value.limit == expected_limit
    assert str(target) in str(info.value)


def test_oversized_body_names_file_size_limit_and_suggests_a_url(tmp_path: Path) -> None:
    big = tmp_path / "big.pdf"
    big.write_bytes(PDF + b"0" * (6 * 1024 * 1024 + 512 * 1024))  # 6.5 MiB → 8.7 MiB of base64
    source = load_source(big)
    with pytest.raises(InvalidInputError) as info:
        check_aisearch_body(source, allowed=DOCUMENT_TYPES, service="document-analyze")
    message = str(info.value)
    assert str(big) in message and "6.5 MiB" in message and "8.0 MiB" in message and "URL" in message
    assert info.value.limit == "max_body_bytes" and info.value.maximum == AISEARCH_MAX_BODY_BYTES


def test_largest_fitting_file_passes(tmp_path: Path) -> None:
    ok = load_source(PDF + b"0" * (6 * 1024 * 1024 - 1024), file_name="ok.pdf")
    check_aisearch_body(ok, allowed=DOCUMENT_TYPES, service="document-analyze")


def test_unsupported_type_is_rejected() -> None:
    source = load_source(PDF, file_name="doc.pdf")
    with pytest.raises(InvalidInputError, match="image-analyze does not accept pdf") as info:
        check_aisearch_body(source, allowed=IMAGE_TYPES, service="image-analyze")
    assert info.value.limit == "file_type"


def test_expand_inputs_walks_directories_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for rel in ("b.pdf", "a.png", "sub/c.md", ".hidden/d.txt", ".e.txt"):
        (tmp_path / rel).write_bytes(b"x")
    found = [Path(str(p)).relative_to(tmp_path).as_posix() for p in expand_inputs([tmp_path])]
    assert found == ["a.png", "b.pdf", "sub/c.md"]
    only_pdf = list(expand_inputs(tmp_path, glob="**/*.pdf"))
    assert [Path(str(p)).name for p in only_pdf] == ["b.pdf"]
    assert list(expand_inputs(["https://x/y.pdf", b"raw"])) == ["https://x/y.pdf", b"raw"]


def test_probe_type_agrees_with_load_source_without_reading_whole_files(tmp_path: Path) -> None:
    samples = {
        "a.pdf": PDF + b"0" * 10_000,
        "junk-prefix.bin": b"garbage" * 10 + PDF,
        "scan": PNG,
        "photo.jpeg": JPEG,
        "report.docx": _zip("word/document.xml"),
        "deck.pptx": _zip("ppt/presentation.xml"),
        "book.zip": _zip("xl/workbook.xml"),
        "notes.md": "# 标题\n\n正文".encode(),
        "page": b"<!DOCTYPE html><html><body>x</body></html>",
        "long.txt": ("é" * 5000).encode(),  # a multi-byte character cut by the 4 KB head
    }
    samples_dir = Path(__file__).resolve().parents[1] / "notebooks" / "data"
    paths = [*sorted(samples_dir.iterdir())]
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    for path in paths:
        assert probe_type(path) == (str(path), load_source(path).file_type), path.name
    for bad, limit in (("empty.pdf", "empty"), ("missing.pdf", "not_found"), ("", "not_a_file")):
        if bad == "empty.pdf":
            (tmp_path / bad).write_bytes(b"")
        with pytest.raises(InvalidInputError) as info:
            probe_type(tmp_path / bad)
        assert info.value.limit == limit
        with pytest.raises(InvalidInputError) as loaded:
            load_source(tmp_path / bad)
        assert loaded.value.limit == limit


def test_a_file_too_big_for_ai_search_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.pdf"
    with huge.open("wb") as f:  # sparse: 5 GB that reading would put in memory
        f.write(PDF)
        f.truncate(5 * 1024**3)
    with pytest.raises(InvalidInputError) as info:
        precheck_aisearch_size(huge, service="document-analyze")
    assert info.value.limit == "max_body_bytes" and info.value.value == 5 * 1024**3
    assert str(huge) in str(info.value) and "5.0 GiB" in str(info.value)
    fits = tmp_path / "fits.pdf"
    fits.write_bytes(PDF + b"0" * (AISEARCH_MAX_BODY_BYTES * 3 // 4 - 2048))
    precheck_aisearch_size(fits, service="document-analyze")  # the exact check happens after loading
    check_aisearch_body(load_source(fits), allowed=DOCUMENT_TYPES, service="document-analyze")
    for other in (b"bytes", "https://example.com/big.pdf", tmp_path / "missing.pdf"):
        precheck_aisearch_size(other, service="document-analyze")

"""Input normalisation, type sniffing from bytes, and validation before sending."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import pytest

from aisearch_ingest.errors import InvalidInputError
from aisearch_ingest.sources import (
    AISEARCH_MAX_BODY_BYTES,
    DOCUMENT_TYPES,
    IMAGE_TYPES,
    check_aisearch_body,
    expand_inputs,
    load_source,
    sniff_type,
)

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

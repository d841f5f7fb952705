"""What a byte string really is: the emulator's one magic-byte table, independent of the client's sniffing.

The server side must not trust the client's idea of a file type (that is what the emulator is testing), so this
module repeats, on purpose, a small magic-byte sniffer instead of importing ``aisearch_ingest.sources``
(``sniff_type``): were the two sides to share one table, a wrong entry would be wrong on both, and every test of the
client against the emulator would pass over it. Within the emulator this is the only table: the services check
declared types with :func:`sniff` / :func:`content_matches`, the offline engine asks :func:`sniff_image_format`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

__all__ = [
    "DOCUMENT_TYPES",
    "IMAGE_TYPES",
    "QWEN_IMAGE_FORMATS",
    "content_matches",
    "infer_file_type",
    "normalize_type",
    "sniff",
    "sniff_image_format",
]

#: document-analyze types the emulator accepts (``file_type`` / suffix). The page names "pdf, doc, docx" as
#: examples; the same set as ``aisearch_ingest.sources.DOCUMENT_TYPES``.
DOCUMENT_TYPES = frozenset({"pdf", "doc", "docx", "ppt", "pptx", "html", "htm", "md", "markdown", "txt"})
#: image-analyze types ("such as jpg, jpeg, png, bmp, tiff" on the page, plus the common raster formats).
IMAGE_TYPES = frozenset({"jpg", "jpeg", "png", "bmp", "tiff", "tif", "webp", "gif", "heic"})
#: Qwen-OCR "Supported formats": BMP, JPEG, PNG, TIFF, WEBP, HEIC (canonical names as :func:`sniff` returns).
QWEN_IMAGE_FORMATS = frozenset({"bmp", "jpg", "png", "tiff", "webp", "heic"})

_ALIASES = {"jpeg": "jpg", "tif": "tiff", "htm": "html", "markdown": "md"}
_TEXT_TYPES = frozenset({"html", "md", "txt"})
_OOXML_DIR = {"docx": "word/", "pptx": "ppt/", "xlsx": "xl/"}


def normalize_type(file_type: str) -> str:
    """Lower-case, strip a leading dot and fold aliases (``.JPEG`` → ``jpg``, ``htm`` → ``html``)."""
    t = file_type.strip().lower().lstrip(".")
    return _ALIASES.get(t, t)


def _suffix(name: str) -> str:
    suffix = PurePosixPath(name).suffix
    return suffix[1:].lower() if suffix else ""


def infer_file_type(file_type: str | None, file_name: str | None, url: str | None) -> tuple[str, str]:
    """Apply the documented inference: ``file_type``, else the ``file_name`` suffix, else the URL's.

    Returns:
        ``(file_type, file_name)``; either may be ``""`` when it cannot be inferred. ``file_name`` falls back to
        the last path segment of the URL.
    """
    name = (file_name or "").strip()
    if not name and url:
        name = unquote(PurePosixPath(urlsplit(url).path).name)
    ftype = (file_type or "").strip().lower().lstrip(".")
    if not ftype and name:
        ftype = _suffix(name)
    return ftype, name


def _looks_like_text(data: bytes) -> bool:
    head = data[:65536]
    if not head:
        return True
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return True
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the 64 KiB window is still text
        if exc.start >= len(head) - 4:
            return True
    try:
        head.decode("gb18030")
        return True
    except UnicodeDecodeError:
        return False


#: HEIF brands (``ftyp`` major brand) of a HEIC still image or image sequence.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})


def sniff_image_format(data: bytes) -> str | None:
    """The raster image format of ``data`` from its magic bytes.

    Returns:
        ``png``, ``jpg``, ``gif``, ``bmp``, ``tiff``, ``webp`` or ``heic`` (the names :func:`sniff` uses); None for
        anything else.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM") and len(data) > 26:  # a BMP header is 26 bytes at least; "BM..." may be text
        return "bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "heic"
    return None


def sniff(data: bytes) -> str | None:
    """The canonical type of ``data`` from its leading bytes.

    Returns:
        One of ``pdf``, ``png``, ``jpg``, ``gif``, ``bmp``, ``tiff``, ``webp``, ``heic``, ``docx``, ``pptx``,
        ``xlsx``, ``zip``, ``ole`` (legacy doc/ppt/xls), ``text`` (decodable text without NUL bytes), or None.
    """
    image = sniff_image_format(data)
    if image is not None:
        return image
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, ValueError, OSError):
            return "zip"
        for kind, prefix in _OOXML_DIR.items():
            if any(n.startswith(prefix) for n in names):
                return kind
        return "zip"
    if _looks_like_text(data):
        return "text"
    return None


def content_matches(file_type: str, data: bytes) -> bool:
    """Whether ``data`` really is of the declared ``file_type`` (aliases allowed, e.g. ``jpeg`` for JPEG data).

    Text types (``html``, ``md``, ``txt``) accept any decodable text; ``doc``/``ppt``/``xls`` accept an OLE2
    container.
    """
    declared = normalize_type(file_type)
    found = sniff(data)
    if found is None:
        return False
    if declared in _TEXT_TYPES:
        return found == "text"
    if declared in ("doc", "ppt", "xls"):
        return found == "ole"
    return found == declared

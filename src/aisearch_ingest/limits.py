"""Every pre-send limit of every service in one place: request bodies, accepted types, image bytes, sides and pixels,
page counts. Each check raises :class:`~aisearch_ingest.errors.InvalidInputError` naming the file, the limit
(``limit``), the value and the maximum, before anything is sent or paid.

* **AI Search Open Platform** (document-analyze, image-analyze): the request body is at most 8 MB, base64 content
  included; the types each service accepts.
* **Qwen-OCR**: an image is at most 10 MB (the base64 string counts), sides greater than 10 px, aspect ratio at most
  200:1, formats BMP, JPEG, PNG, TIFF, WEBP and HEIC, and at most 15.68 million pixels by default -- ``max_pixels``
  may raise that to the model's largest ``max_pixels``: 23.52 million for the 28-px models, 30.72 million for the
  32-px ones (API reference l.404; ``pixel_upper`` below, from
  :attr:`~aisearch_ingest.protocol.qwen_models.QwenModel.max_pixels_limit`).
* **Page budget**: the user's own ``max_pages`` (the pages document no page limit for the routes used here), from a
  cheap page count (:func:`count_pages`), before any page is laid out or rendered.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import re
from pathlib import Path

from ._pdfium import PDFIUM_LOCK
from .errors import InvalidInputError
from .protocol.qwen_tasks import (
    MAX_ASPECT_RATIO,
    MAX_PIXELS_DEFAULT_LIMIT,
    MAX_PIXELS_UPPER_LIMIT,
    MIN_IMAGE_SIDE,
)
from .sources import MIME_TYPES, Source, SourceLike, human_size, local_path, safe_name

__all__ = [
    "AISEARCH_MAX_BODY_BYTES",
    "DOCUMENT_ANALYZE_002_TYPES",
    "DOCUMENT_TYPES",
    "IMAGE_TYPES",
    "MAX_IMAGE_BYTES",
    "QWEN_IMAGE_TYPES",
    "check_aisearch_body",
    "check_dimensions",
    "check_image",
    "check_max_pages_arg",
    "check_page_budget",
    "count_pages",
    "encoded_size",
    "frame_count",
    "heif_available",
    "image_size",
    "no_pages_error",
    "pdf_has_no_pages",
    "pixel_limit",
    "precheck_aisearch_size",
    "refused_for_no_pages",
]

logger = logging.getLogger("aisearch_ingest")

# -- AI Search Open Platform ---------------------------------------------------------------------------------------

#: AI Search Open Platform: "请求body最大不能超过8MB" (document-analyze page); content is base64 (×4/3).
AISEARCH_MAX_BODY_BYTES = 8 * 1024 * 1024

#: document-analyze: PDF → markdown, other types → HTML. The types of the EN page (Aug 05, 2025; CHANGES-2026.md §D):
#: TXT, PDF, HTML, DOC, DOCX, PPT, PPTX. Kept beside them: ``htm`` (the same HTML type under its other suffix; the
#: service infers ``file_type`` from the file name's suffix) and ``md`` / ``markdown``, which no vendor page lists:
#: Markdown is plain text the service has parsed for this project's users so far (it is not verified against the
#: 2025 service list; drop it here if the live service refuses it).
DOCUMENT_TYPES = frozenset({"pdf", "doc", "docx", "ppt", "pptx", "html", "htm", "md", "markdown", "txt"})
#: image-analyze accepts common raster formats ("jpg, jpeg, png, bmp, tiff" in the docs).
IMAGE_TYPES = frozenset({"jpg", "jpeg", "png", "bmp", "tiff", "tif", "webp", "gif", "heic"})
#: ``ops-document-analyze-002`` takes "PDFs and images" (the ID page of Jan 16, 2026, CHANGES-2026.md §D): the
#: document types and the image types.
DOCUMENT_ANALYZE_002_TYPES = DOCUMENT_TYPES | IMAGE_TYPES


def check_aisearch_body(source: Source, *, allowed: frozenset[str], service: str) -> None:
    """Validate a source for an AI Search service before anything is sent.

    Raises:
        InvalidInputError: unsupported type, a body that would exceed 8 MB once base64-encoded, or a PDF with no
            pages (``limit="pages"``, ``value=0``).
    """
    kind = source.file_type
    if source.url is not None:
        if kind and kind not in allowed:
            raise InvalidInputError(
                f"{source.origin}: {service} does not accept .{kind} files (accepted: {', '.join(sorted(allowed))})",
                source=source.origin,
                limit="file_type",
                value=kind,
            )
        return
    if kind not in allowed:
        raise InvalidInputError(
            f"{source.origin}: {service} does not accept {kind or 'this'} files "
            f"(accepted: {', '.join(sorted(allowed))})",
            source=source.origin,
            limit="file_type",
            value=kind,
        )
    _check_body_size(source.origin, source.size, source.file_name, service)
    if kind == "pdf" and source.data is not None and pdf_has_no_pages(source.data):
        raise no_pages_error(source.origin)


def _check_body_size(origin: str, size: int, file_name: str, service: str) -> None:
    encoded = 4 * math.ceil(size / 3)
    overhead = 256 + len(file_name.encode())
    if encoded + overhead > AISEARCH_MAX_BODY_BYTES:
        raise InvalidInputError(
            f"{origin} is {human_size(size)}; base64-encoded it makes a "
            f"{human_size(encoded + overhead)} request body, over {service}'s "
            f"{human_size(AISEARCH_MAX_BODY_BYTES)} limit (files up to about "
            f"{human_size((AISEARCH_MAX_BODY_BYTES - overhead) * 3 // 4)} fit). "
            "Upload it somewhere the service can fetch and pass its http(s) URL instead.",
            source=origin,
            limit="max_body_bytes",
            value=size,
            maximum=AISEARCH_MAX_BODY_BYTES,
        )


def precheck_aisearch_size(obj: SourceLike, *, service: str) -> None:
    """Reject a local file that cannot fit AI Search's request body before reading it into memory.

    Only files that are too big whatever name they are sent under are rejected here; :func:`check_aisearch_body`
    does the exact check once the file is loaded. Anything else (bytes, URLs, missing files) passes through.

    Raises:
        InvalidInputError: ``limit="max_body_bytes"``, as :func:`check_aisearch_body`.
    """
    text = local_path(obj)
    if text is None:
        return
    try:
        size = Path(text).expanduser().stat().st_size
    except (OSError, ValueError):
        return  # load_source reports it
    if 4 * math.ceil(size / 3) + 256 > AISEARCH_MAX_BODY_BYTES:
        _check_body_size(text, size, safe_name(Path(text).name), service)


# -- Qwen-OCR images and page counts ------------------------------------------------------------------------------

#: "The size of a single image file, or the encoded string if you use Base64 encoding, cannot exceed 10 MB."
MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: "Supported formats": BMP, JPEG, PNG, TIFF, WEBP, HEIC (as :func:`~aisearch_ingest.sources.sniff_type` names them).
QWEN_IMAGE_TYPES = frozenset({"bmp", "jpg", "png", "tiff", "webp", "heic"})

#: Plain-text page objects: a PDF holding one has pages, and needs no opening to tell (object streams hide them).
_PLAIN_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")
_ZERO_COUNT = re.compile(rb"/Count\s*0(?![0-9.])")


def refused_for_no_pages(data: bytes) -> bool:
    """Whether pdfium's refusal to open ``data`` is because the PDF has no pages.

    pdfium loads a document whose page tree is empty as a failure (``CPDF_Document::HandleLoadResult``), and the
    error code it leaves is no help: pypdfium2 reports "Success" (0), or a stale code of the thread's last call
    such as "Incorrect password error". So the bytes decide: no ``/Encrypt`` entry (the trailer is never
    compressed), no page object, and a page tree with ``/Count 0``.
    """
    return b"/Encrypt" not in data and not _PLAIN_PAGE_OBJECT.search(data) and bool(_ZERO_COUNT.search(data))


def pdf_has_no_pages(data: bytes) -> bool:
    """Whether ``data`` is a PDF with 0 pages (cheap for most PDFs: one with a plain-text page object is not opened).

    A PDF pdfium cannot open for another reason (damaged, password-protected) is not reported here: the service may
    read what pdfium cannot, and says so itself.
    """
    if _PLAIN_PAGE_OBJECT.search(data):
        return False
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            return refused_for_no_pages(data)
        try:
            return len(pdf) == 0
        finally:
            pdf.close()


def no_pages_error(where: str) -> InvalidInputError:
    """The error for a PDF with 0 pages: ``limit="pages"``, ``value=0``, naming ``where``."""
    return InvalidInputError(
        f"{where} is a PDF with no pages (0 pages); there is nothing to parse",
        source=where,
        limit="pages",
        value=0,
    )


def encoded_size(n_bytes: int, mime_type: str) -> int:
    """Length of the ``data:<mime>;base64,...`` string for ``n_bytes`` of image."""
    return len(f"data:{mime_type};base64,") + 4 * math.ceil(n_bytes / 3)


def pixel_limit(max_pixels: int | None, *, pixel_upper: int = MAX_PIXELS_UPPER_LIMIT) -> int:
    """The most pixels an input image may have: 15.68 M by default, raised by a larger ``max_pixels`` up to
    ``pixel_upper`` (the model's largest ``max_pixels``: 23.52 M for the 28-px models, 30.72 M for the 32-px ones)."""
    return min(max(MAX_PIXELS_DEFAULT_LIMIT, max_pixels or 0), pixel_upper)


@functools.cache
def heif_available() -> bool:
    """Whether Pillow can read HEIC here: pillow-heif (the ``local`` extra) installed, and registered on first use."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of an image from its header, or None when Pillow cannot read it (HEIC without
    pillow-heif)."""
    from PIL import Image, UnidentifiedImageError

    if data[4:8] == b"ftyp":
        heif_available()
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.width), int(img.height)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def frame_count(data: bytes) -> int:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(getattr(img, "n_frames", 1))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return 1


def count_pages(source: Source) -> int | None:
    """The pages of a file, counted cheaply: a PDF's page tree (pypdfium2 ``len(PdfDocument)``, nothing rendered or
    even loaded page by page), a TIFF's frames, 1 for another image; None when it cannot be told cheaply (Office and
    text files, URLs, a PDF pdfium cannot open -- the service or the page check reports that one)."""
    if source.data is None:
        return None
    if source.file_type == "pdf":
        import pypdfium2 as pdfium

        with PDFIUM_LOCK:
            try:
                pdf = pdfium.PdfDocument(source.data)
            except pdfium.PdfiumError:
                return None
            try:
                return len(pdf)
            finally:
                pdf.close()
    if source.file_type == "tiff":
        return frame_count(source.data)
    return 1 if source.file_type in IMAGE_TYPES else None


def check_page_budget(source: Source, max_pages: int | None, *, pages: int | None = None) -> int | None:
    """Refuse a file with more pages than the caller's budget, before anything is sent or paid.

    ``max_pages`` is the user's own limit (``max_pages=`` of the clients, ``--max-pages`` of the CLI): the vendor
    documents no page limit for the routes this package uses (PDFs go to document-analyze as one body of at most
    8 MB, and to Qwen-OCR as one image call per page).

    Args:
        source: the loaded file.
        max_pages: the budget; None: no check.
        pages: the page count when already known (else :func:`count_pages`).

    Returns:
        The page count, when it was counted.

    Raises:
        InvalidInputError: ``limit="max_pages"``, ``value`` the file's pages, ``maximum`` the budget.
    """
    if max_pages is None:
        return pages
    if pages is None:
        pages = count_pages(source)
    if pages is not None and pages > max_pages:
        where = source.origin
        raise InvalidInputError(
            f"{where} has {pages:,} pages, over the page budget max_pages={max_pages:,}; nothing was sent "
            "(raise max_pages / --max-pages, or split the file)",
            source=where,
            limit="max_pages",
            value=pages,
            maximum=max_pages,
        )
    return pages


def check_max_pages_arg(max_pages: int | None) -> int | None:
    """Validate a ``max_pages=`` argument (a positive int or None)."""
    if max_pages is not None and (isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1):
        raise ValueError(f"max_pages must be a positive integer or None, got {max_pages!r}")
    return max_pages


def check_dimensions(
    width: int,
    height: int,
    *,
    where: str,
    max_pixels: int | None = None,
    pixel_upper: int = MAX_PIXELS_UPPER_LIMIT,
) -> None:
    """Check sides, aspect ratio and pixel count against the documented limits.

    Args:
        width: pixels.
        height: pixels.
        where: the file (and page) to name in the message.
        max_pixels: the request's ``max_pixels`` (raises the pixel limit when above 15.68 M).
        pixel_upper: the model's largest ``max_pixels``.

    Raises:
        InvalidInputError: with ``limit`` ``min_side``, ``aspect_ratio`` or ``max_pixels``.
    """
    if width <= MIN_IMAGE_SIDE or height <= MIN_IMAGE_SIDE:
        raise InvalidInputError(
            f"{where} is {width}x{height} px; Qwen-OCR needs width and height greater than {MIN_IMAGE_SIDE} px",
            source=where,
            limit="min_side",
            value=min(width, height),
            maximum=MIN_IMAGE_SIDE,
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise InvalidInputError(
            f"{where} is {width}x{height} px, an aspect ratio of {ratio:.0f}:1; Qwen-OCR accepts at most "
            f"{MAX_ASPECT_RATIO}:1",
            source=where,
            limit="aspect_ratio",
            value=ratio,
            maximum=MAX_ASPECT_RATIO,
        )
    limit = pixel_limit(max_pixels, pixel_upper=pixel_upper)
    if width * height > limit:
        hint = (
            f"raise max_pixels (up to {pixel_upper:,}) or scale the image down"
            if limit < pixel_upper
            else "scale the image down"
        )
        raise InvalidInputError(
            f"{where} is {width}x{height} = {width * height:,} pixels; Qwen-OCR accepts at most {limit:,} pixels "
            f"with max_pixels={max_pixels or 'default'} ({hint})",
            source=where,
            limit="max_pixels",
            value=width * height,
            maximum=limit,
        )


def check_image(
    source: Source, *, max_pixels: int | None = None, pixel_upper: int = MAX_PIXELS_UPPER_LIMIT
) -> tuple[int, int] | None:
    """Check one single-image source against every documented limit before sending.

    URL sources can only be checked by their extension. A HEIC image that Pillow cannot read is checked for size and
    format only.

    Returns:
        ``(width, height)`` when known.

    Raises:
        InvalidInputError: naming the file and the limit (``file_type``, ``max_image_bytes``, ``min_side``,
            ``aspect_ratio``, ``max_pixels``, ``unreadable``).
    """
    where = source.origin
    if source.url is not None:
        if source.file_type == "pdf":
            raise InvalidInputError(
                f"{where}: Qwen-OCR reads images, so PDFs are sent page by page as images rendered here; a PDF URL "
                "is not downloaded by this client (that would fetch a third-party URL). Download the file and pass "
                "its path or bytes.",
                source=where,
                limit="file_type",
                value="pdf",
            )
        if source.file_type and source.file_type not in QWEN_IMAGE_TYPES and _looks_like_type(source.file_type):
            raise InvalidInputError(
                f"{where}: .{source.file_type} is not an image format Qwen-OCR accepts "
                f"({', '.join(sorted(QWEN_IMAGE_TYPES))})",
                source=where,
                limit="file_type",
                value=source.file_type,
            )
        return None
    assert source.data is not None
    if source.file_type not in QWEN_IMAGE_TYPES:
        raise InvalidInputError(
            f"{where}: Qwen-OCR does not accept {source.file_type or 'this'} files "
            f"(images: {', '.join(sorted(QWEN_IMAGE_TYPES))}; PDFs and multi-page TIFFs are split into pages)",
            source=where,
            limit="file_type",
            value=source.file_type,
        )
    encoded = encoded_size(len(source.data), source.mime_type)
    if encoded > MAX_IMAGE_BYTES:
        raise InvalidInputError(
            f"{where} is {human_size(len(source.data))}, {human_size(encoded)} once base64-encoded; Qwen-OCR "
            f"accepts images up to {human_size(MAX_IMAGE_BYTES)} (the encoded string counts). Compress or scale "
            "it down, or pass an http(s) URL the service can fetch.",
            source=where,
            limit="max_image_bytes",
            value=encoded,
            maximum=MAX_IMAGE_BYTES,
        )
    size = image_size(source.data)
    if size is None:
        if source.file_type == "heic" and not heif_available():  # the service checks it
            logger.debug("%s: HEIC dimensions not checked locally (install pillow-heif: the local extra)", where)
            return None
        raise InvalidInputError(
            f"{where}: the {source.file_type} image cannot be decoded", source=where, limit="unreadable"
        )
    check_dimensions(size[0], size[1], where=where, max_pixels=max_pixels, pixel_upper=pixel_upper)
    return size


def _looks_like_type(ext: str) -> bool:
    return ext in MIME_TYPES

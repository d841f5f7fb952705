"""Images for Qwen-OCR: the documented image limits, and multi-page files cut into page images.

Qwen-OCR reads one image per call; the vendor page ("Going live") says to split multi-page documents into page images,
send them, and merge the results in page order. This module does the splitting:

* PDFs are rendered with pypdfium2 at ``dpi`` (150 by default), lowered per page when needed so the rendered page
  stays within ``max_pixels`` -- the model would scale a larger image down to that size anyway, so more pixels only
  cost upload bytes, never tokens or accuracy.
* multi-page TIFFs are split into frames with Pillow; a frame over ``max_pixels`` is scaled down the same way.

Pages are encoded as PNG (lossless, as the page recommends); a page whose PNG would break the 10 MB limit is sent as
JPEG instead. Both libraries are imported lazily. pdfium is not thread-safe, so every pdfium call holds one
process-wide lock.

Image limits ("Limits > Image limits"): at most 10 MB (for base64 input: the encoded string), width and height greater
than 10 px, aspect ratio at most 200:1, formats BMP, JPEG, PNG, TIFF, WEBP and HEIC, and at most 15.68 million pixels
by default -- ``max_pixels`` may raise that to the model's largest ``max_pixels``: 23.52 million for the 28-px
models, 30.72 million for the 32-px ones (API reference l.404; ``pixel_upper`` below, from
:attr:`~aisearch_ingest.protocol.qwen_models.QwenModel.max_pixels_limit`).

Page budget: the pages document no page limit for the routes used here (``qwen3.5-ocr``'s direct-PDF route of the
Responses API -- at most 50 pages with ``document_parsing``, 10 otherwise, ``qwen-ocr.2026.zh.md`` l.2216 -- is not
used: PDFs are sent as page images, one call each). :func:`check_page_budget` enforces the user's own ``max_pages``
from a cheap page count (:func:`count_pages`), before any page is laid out or rendered.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._pdfium import PDFIUM_LOCK
from .errors import InvalidInputError
from .protocol.qwen_models import DEFAULT_MODEL, spec_for
from .protocol.qwen_tasks import (
    MAX_ASPECT_RATIO,
    MAX_PIXELS_DEFAULT_LIMIT,
    MAX_PIXELS_UPPER_LIMIT,
    MIN_IMAGE_SIDE,
)
from .sources import IMAGE_TYPES, MIME_TYPES, Source, human_size

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "DEFAULT_DPI",
    "MAX_IMAGE_BYTES",
    "QWEN_IMAGE_TYPES",
    "PageDocument",
    "PageLayout",
    "check_dimensions",
    "check_image",
    "check_max_pages_arg",
    "check_page_budget",
    "count_pages",
    "encoded_size",
    "image_size",
    "is_multipage",
    "no_pages_error",
    "open_pages",
    "pdf_has_no_pages",
    "pixel_limit",
    "render_scale",
]

logger = logging.getLogger("aisearch_ingest.qwen")

#: Rendering resolution for PDF pages when none is given.
DEFAULT_DPI = 150
#: "The size of a single image file, or the encoded string if you use Base64 encoding, cannot exceed 10 MB."
MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: "Supported formats": BMP, JPEG, PNG, TIFF, WEBP, HEIC (as :func:`~aisearch_ingest.sources.sniff_type` names them).
QWEN_IMAGE_TYPES = frozenset({"bmp", "jpg", "png", "tiff", "webp", "heic"})

#: Plain-text page objects: a PDF holding one has pages, and needs no opening to tell (object streams hide them).
_PLAIN_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")
_ZERO_COUNT = re.compile(rb"/Count\s*0(?![0-9.])")


def _zero_pages_error(data: bytes) -> bool:
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
            return _zero_pages_error(data)
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


def _frame_count(data: bytes) -> int:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(getattr(img, "n_frames", 1))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return 1


def is_multipage(source: Source) -> bool:
    """True for a PDF, or a TIFF with more than one frame (bytes sources only)."""
    if source.data is None:
        return False
    if source.file_type == "pdf":
        return True
    return source.file_type == "tiff" and _frame_count(source.data) > 1


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
        return _frame_count(source.data)
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


# --- multi-page files ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageLayout:
    """Where one page image comes from and how big it will be.

    Attributes:
        number: 1-based page number.
        width: rendered width in pixels.
        height: rendered height in pixels.
        scale: pixels per source unit (PDF: per point, i.e. dpi / 72 after capping; TIFF: the resize factor).
    """

    number: int
    width: int
    height: int
    scale: float


def render_scale(width_pt: float, height_pt: float, *, dpi: float, max_pixels: int) -> float:
    """The pypdfium2 scale for a page: ``dpi / 72``, lowered so ``ceil(w·s) × ceil(h·s) ≤ max_pixels``."""
    scale = dpi / 72.0
    area = width_pt * height_pt
    if area > 0 and area * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / area)
    # pypdfium2 rounds the bitmap up (math.ceil); shave the scale until the rounded size fits.
    while scale > 0 and math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > max_pixels:
        scale *= 0.999
    return scale


class PageDocument:
    """An open multi-page file: its page layouts, and each page rendered on demand as a PNG :class:`Source`.

    Use :func:`open_pages` to get one; close it (or use it as a context manager) when done. Methods are blocking
    (run them in a worker thread from async code); they are safe to call from several threads.
    """

    def __init__(
        self, source: Source, *, dpi: float, max_pixels: int, pixel_upper: int = MAX_PIXELS_UPPER_LIMIT
    ) -> None:
        if source.data is None:
            raise ValueError("a multi-page source must have bytes")
        if dpi <= 0:
            raise ValueError("dpi must be positive")
        self.source = source
        self.dpi = dpi
        self.max_pixels = max_pixels
        self.pixel_upper = pixel_upper
        self._pdf: Any = None
        self._tiff: Any = None
        self._lock = threading.Lock()
        self.layouts: list[PageLayout] = []
        if source.file_type == "pdf":
            self._open_pdf(source.data)
        elif source.file_type == "tiff":
            self._open_tiff(source.data)
        else:
            raise ValueError(f"{source.origin}: not a multi-page file ({source.file_type})")

    # -- opening -------------------------------------------------------------------------------------------------

    def _open_pdf(self, data: bytes) -> None:
        import pypdfium2 as pdfium

        where = self.source.origin
        with PDFIUM_LOCK:
            try:
                self._pdf = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as exc:
                if _zero_pages_error(data):
                    raise no_pages_error(where) from exc
                raise InvalidInputError(
                    f"{where}: the PDF cannot be opened ({exc}); is it damaged or password-protected?",
                    source=where,
                    limit="unreadable",
                ) from exc
            for index in range(len(self._pdf)):
                page = self._pdf[index]
                try:
                    width_pt, height_pt = page.get_size()
                finally:
                    page.close()
                scale = render_scale(width_pt, height_pt, dpi=self.dpi, max_pixels=self.max_pixels)
                self.layouts.append(
                    PageLayout(index + 1, math.ceil(width_pt * scale), math.ceil(height_pt * scale), scale)
                )

    def _open_tiff(self, data: bytes) -> None:
        from PIL import Image, UnidentifiedImageError

        where = self.source.origin
        try:
            self._tiff = Image.open(io.BytesIO(data))
            frames = int(getattr(self._tiff, "n_frames", 1))
            for index in range(frames):
                self._tiff.seek(index)
                width, height = self._tiff.size
                scale = 1.0
                if width * height > self.max_pixels:
                    scale = math.sqrt(self.max_pixels / (width * height))
                    width, height = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
                self.layouts.append(PageLayout(index + 1, width, height, scale))
        except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
            raise InvalidInputError(
                f"{where}: the TIFF cannot be read ({exc})", source=where, limit="unreadable"
            ) from exc

    # -- use -----------------------------------------------------------------------------------------------------

    @property
    def page_count(self) -> int:
        """Number of pages (PDF pages or TIFF frames)."""
        return len(self.layouts)

    def check(self) -> None:
        """Check every page image against the documented limits before anything is sent.

        Raises:
            InvalidInputError: an empty document, or a page whose image would break a limit (named with its page).
        """
        where = self.source.origin
        if not self.layouts:
            raise InvalidInputError(f"{where} has no pages (0 pages)", source=where, limit="pages", value=0)
        for layout in self.layouts:
            check_dimensions(
                layout.width,
                layout.height,
                where=f"{where} page {layout.number}",
                max_pixels=self.max_pixels,
                pixel_upper=self.pixel_upper,
            )

    def render(self, number: int) -> Source:
        """Render page ``number`` (1-based) as a PNG (JPEG if the PNG would be over 10 MB) :class:`Source`.

        Raises:
            InvalidInputError: the page image cannot be made to fit the 10 MB limit, or the page cannot be rendered.
        """
        layout = self.layouts[number - 1]
        with self._lock:
            image = self._render_pdf(layout) if self._pdf is not None else self._render_tiff(layout)
        return self._encode(image, layout)

    def _render_pdf(self, layout: PageLayout) -> PILImage:
        import pypdfium2 as pdfium

        with PDFIUM_LOCK:
            page = self._pdf[layout.number - 1]
            try:
                bitmap = page.render(scale=layout.scale, rev_byteorder=True)
                try:
                    image: PILImage = bitmap.to_pil()
                    image.load()
                    return image.copy()
                finally:
                    bitmap.close()
            except pdfium.PdfiumError as exc:
                where = f"{self.source.origin} page {layout.number}"
                raise InvalidInputError(
                    f"{where} cannot be rendered ({exc})", source=where, limit="unreadable"
                ) from exc
            finally:
                page.close()

    def _render_tiff(self, layout: PageLayout) -> PILImage:
        from PIL import Image

        self._tiff.seek(layout.number - 1)
        frame = self._tiff.copy()
        if frame.mode not in ("RGB", "L", "RGBA", "LA", "1"):
            frame = frame.convert("RGB")
        if (frame.width, frame.height) != (layout.width, layout.height):
            frame = frame.resize((layout.width, layout.height), Image.Resampling.LANCZOS)
        image: PILImage = frame
        return image

    def _encode(self, image: PILImage, layout: PageLayout) -> Source:
        where = f"{self.source.origin} page {layout.number}"
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, kind = buffer.getvalue(), "png"
        if encoded_size(len(data), "image/png") > MAX_IMAGE_BYTES:
            for quality in (90, 80, 65):
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="JPEG", quality=quality)
                data, kind = buffer.getvalue(), "jpg"
                if encoded_size(len(data), "image/jpeg") <= MAX_IMAGE_BYTES:
                    break
            else:
                raise InvalidInputError(
                    f"{where} stays over {human_size(MAX_IMAGE_BYTES)} even as JPEG; lower the dpi",
                    source=where,
                    limit="max_image_bytes",
                    value=len(data),
                    maximum=MAX_IMAGE_BYTES,
                )
            logger.debug("%s: PNG over the 10 MB limit, sent as JPEG", where)
        stem = self.source.file_name.rsplit(".", 1)[0] or "page"
        return Source(
            origin=self.source.origin,
            file_name=f"{stem}-p{layout.number}.{kind}",
            file_type=kind,
            data=data,
            page=layout.number,
        )

    def iter_pages(self) -> Iterator[Source]:
        """Yield every page as a :class:`Source`, in page order (rendered one at a time)."""
        for layout in self.layouts:
            yield self.render(layout.number)

    def close(self) -> None:
        """Release the document."""
        with self._lock:
            if self._pdf is not None:
                with PDFIUM_LOCK:
                    self._pdf.close()
                self._pdf = None
            if self._tiff is not None:
                self._tiff.close()
                self._tiff = None

    def __enter__(self) -> PageDocument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def open_pages(
    source: Source,
    *,
    dpi: float = DEFAULT_DPI,
    max_pixels: int | None = None,
    pixel_upper: int = MAX_PIXELS_UPPER_LIMIT,
) -> PageDocument:
    """Open a PDF or multi-page TIFF for page-by-page rendering.

    Args:
        source: a PDF or TIFF source with bytes.
        dpi: PDF rendering resolution (lowered per page when the page would exceed ``max_pixels``).
        max_pixels: the most pixels a page image may have (default: the default model's ``max_pixels``,
            8,388,608 for ``qwen-vl-ocr``).
        pixel_upper: the model's largest ``max_pixels`` (the page check's ceiling).

    Raises:
        InvalidInputError: the file cannot be opened.

    Example:
        >>> from aisearch_ingest.sources import load_source
        >>> with open_pages(load_source("notebooks/data/annual_report.pdf")) as doc:  # doctest: +SKIP
        ...     first = doc.render(1)
    """
    return PageDocument(
        source,
        dpi=dpi,
        max_pixels=max_pixels or spec_for(DEFAULT_MODEL).default_max_pixels,
        pixel_upper=pixel_upper,
    )

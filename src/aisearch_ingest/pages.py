"""Multi-page files cut into page images for Qwen-OCR.

Qwen-OCR reads one image per call; the vendor page ("Going live") says to split multi-page documents into page images,
send them, and merge the results in page order. This module does the splitting:

* PDFs are rendered with pypdfium2 at ``dpi`` (150 by default), lowered per page when needed so the rendered page
  stays within ``max_pixels`` -- the model would scale a larger image down to that size anyway, so more pixels only
  cost upload bytes, never tokens or accuracy.
* multi-page TIFFs are split into frames with Pillow; a frame over ``max_pixels`` is scaled down the same way.

Pages are encoded as PNG (lossless, as the page recommends); a page whose PNG would break the 10 MB limit is sent as
JPEG instead. Both libraries are imported lazily. pdfium is not thread-safe, so every pdfium call holds the one
process-wide lock (:mod:`aisearch_ingest._pdfium`). The image limits each page is checked against, and the page
budget, are in :mod:`aisearch_ingest.limits` (``qwen3.5-ocr``'s direct-PDF route of the Responses API -- at most 50
pages with ``document_parsing``, 10 otherwise, ``qwen-ocr.2026.zh.md`` l.2216 -- is not used: PDFs are sent as page
images, one call each).
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._pdfium import PDFIUM_LOCK
from .errors import InvalidInputError
from .limits import (
    MAX_IMAGE_BYTES,
    check_dimensions,
    encoded_size,
    frame_count,
    no_pages_error,
    refused_for_no_pages,
)
from .protocol.qwen_models import DEFAULT_MODEL, spec_for
from .protocol.qwen_tasks import MAX_PIXELS_UPPER_LIMIT
from .sources import Source, human_size

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "DEFAULT_DPI",
    "PageDocument",
    "PageLayout",
    "is_multipage",
    "open_pages",
    "render_scale",
]

logger = logging.getLogger("aisearch_ingest.qwen")

#: Rendering resolution for PDF pages when none is given.
DEFAULT_DPI = 150


def is_multipage(source: Source) -> bool:
    """True for a PDF, or a TIFF with more than one frame (bytes sources only)."""
    if source.data is None:
        return False
    if source.file_type == "pdf":
        return True
    return source.file_type == "tiff" and frame_count(source.data) > 1


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
                if refused_for_no_pages(data):
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

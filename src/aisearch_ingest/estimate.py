"""Qwen-OCR cost before spending: the documented image-token estimate for images, PDFs and multi-page TIFFs.

The vendor pages give the rule ("Sample code for estimating image tokens"): the image is resized by ``smart_resize``
(sides rounded to multiples of the model's token side, then scaled into ``[min_pixels, max_pixels]``), and costs
``(h' × w') / token_pixels + 2`` tokens. ``token_pixels`` is 32×32 for ``qwen-vl-ocr``, ``qwen-vl-ocr-2025-11-20``,
``qwen-vl-ocr-latest`` and ``qwen3.5-ocr``, 28×28 (at least four blocks) for the older snapshots, and the pixel
defaults differ with it (:mod:`aisearch_ingest.protocol.qwen_models`). Multi-page files are estimated page by page on
the page images this package would send (same DPI and ``max_pixels`` cap as :mod:`aisearch_ingest.pages`).

This is a budget figure: the text prompt and the output tokens come on top, and the service's ``usage`` is what is
billed (every :class:`~aisearch_ingest.results.ParseResult` carries it). Prices per model and region are in
:mod:`aisearch_ingest.prices`; :func:`limit_warnings` says which documented limit (or page budget) a file breaks
before any of it is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from .errors import InvalidInputError
from .limits import DOCUMENT_TYPES, IMAGE_TYPES, check_aisearch_body, check_dimensions, check_image, image_size
from .pages import DEFAULT_DPI, is_multipage, open_pages
from .protocol.qwen_models import DEFAULT_MODEL, QwenModel, spec_for
from .sources import Source, SourceLike, load_source

__all__ = ["LARGE_PAGE_COUNT", "FileEstimate", "estimate_file", "estimate_image_tokens", "limit_warnings"]

#: Above this many pages :func:`limit_warnings` warns (a call and its price per page on Qwen-OCR).
LARGE_PAGE_COUNT = 1000

SizeOrSource = Union[tuple[int, int], Sequence[int], SourceLike]  # noqa: UP007 (runtime alias on 3.10)


@dataclass(frozen=True)
class FileEstimate:
    """The image-token estimate of one file.

    Attributes:
        source: the path, URL or name as given.
        file_type: ``pdf``, ``tiff``, ``png``...
        pages: page images the file makes (1 for an image).
        calls: Qwen-OCR calls it takes (one per page image, retries not counted).
        page_sizes: ``(width, height)`` in pixels of each page image as sent.
        page_image_tokens: image tokens of each page.
        image_tokens: their sum.
    """

    source: str
    file_type: str
    pages: int
    calls: int
    page_sizes: tuple[tuple[int, int], ...]
    page_image_tokens: tuple[int, ...]
    image_tokens: int


def _model(model: str | QwenModel) -> QwenModel:
    return model if isinstance(model, QwenModel) else spec_for(model)


def estimate_image_tokens(
    source_or_size: SizeOrSource,
    *,
    model: str | QwenModel = DEFAULT_MODEL,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> int:
    """Image tokens Qwen-OCR will bill for one image, by the documented ``smart_resize`` rule of the model.

    Args:
        source_or_size: ``(width, height)`` in pixels (the order of ``PIL.Image.size``), or an image as a path,
            bytes, ``data:`` URI or :class:`~aisearch_ingest.sources.Source`.
        model: the model (``qwen-vl-ocr`` by default); it decides the token pixels and the pixel defaults. A model
            the table does not list is estimated like the current (32-px) models.
        min_pixels: the request's ``min_pixels`` (default: the model's, 3,072 = 32·32·3 or 3,136 = 28·28·4).
        max_pixels: the request's ``max_pixels`` (default: the model's, 8,388,608 = 32·32·8192 or 6,422,528).

    Returns:
        ``(h'·w') / token_pixels + 2`` (at least 4 blocks for the 28-px models).

    Raises:
        InvalidInputError: the image cannot be read, or is a multi-page file or a URL (use :func:`estimate_file`).

    Example:
        >>> estimate_image_tokens((689, 487))  # the train ticket: qwen3.5-ocr's usage.image_tokens 332 (32-px)
        332
        >>> estimate_image_tokens((689, 487), model="qwen-vl-ocr-2025-04-13")  # the Nov 2025 page's 427 (28-px)
        427
    """
    spec = _model(model)
    if isinstance(source_or_size, Sequence) and not isinstance(source_or_size, (str, bytes, bytearray)):
        if len(source_or_size) != 2:
            raise ValueError("a size is (width, height)")
        width, height = (int(v) for v in source_or_size)
        return spec.image_tokens(height, width, min_pixels=min_pixels, max_pixels=max_pixels)
    source = load_source(bytes(source_or_size) if isinstance(source_or_size, bytearray) else source_or_size)
    if source.url is not None:
        raise InvalidInputError(
            f"{source.origin}: the size of a URL image is not known locally", source=source.origin, limit="url"
        )
    if is_multipage(source):
        raise InvalidInputError(
            f"{source.origin} has several pages; use estimate_file()", source=source.origin, limit="pages"
        )
    assert source.data is not None
    size = image_size(source.data)
    if size is None:
        raise InvalidInputError(
            f"{source.origin}: cannot read the image size", source=source.origin, limit="unreadable"
        )
    return spec.image_tokens(size[1], size[0], min_pixels=min_pixels, max_pixels=max_pixels)


def estimate_file(
    path_or_source: SourceLike,
    *,
    dpi: float = DEFAULT_DPI,
    model: str | QwenModel = DEFAULT_MODEL,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> FileEstimate:
    """Image tokens and calls for one image, PDF or multi-page TIFF, before sending anything.

    PDF pages are sized as :class:`~aisearch_ingest.qwen.QwenOCR` renders them: ``dpi`` (150 by default, the
    ``pdf_dpi`` of the client), lowered per page so a page stays within ``max_pixels``.

    Args:
        path_or_source: a path, bytes, ``data:`` URI or :class:`~aisearch_ingest.sources.Source`.
        dpi: PDF rendering resolution.
        model: the model (``qwen-vl-ocr`` by default): token pixels and pixel defaults.
        min_pixels: the request's ``min_pixels`` (default: the model's).
        max_pixels: the request's ``max_pixels`` (default: the model's).

    Raises:
        InvalidInputError: unreadable file, or a URL (its size is not known locally).

    Example:
        >>> est = estimate_file("notebooks/data/annual_report.pdf")  # doctest: +SKIP
        >>> est.pages, est.calls, est.image_tokens  # doctest: +SKIP
        (3, 3, 6441)
    """
    spec = _model(model)
    hi = max_pixels or spec.default_max_pixels
    source: Source = load_source(path_or_source)
    if source.url is not None:
        raise InvalidInputError(
            f"{source.origin}: the size of a URL is not known locally; download it first",
            source=source.origin,
            limit="url",
        )
    if is_multipage(source):
        with open_pages(source, dpi=dpi, max_pixels=hi, pixel_upper=spec.max_pixels_limit) as doc:
            sizes = tuple((layout.width, layout.height) for layout in doc.layouts)
    else:
        assert source.data is not None
        size = image_size(source.data)
        if size is None:
            raise InvalidInputError(
                f"{source.origin}: cannot read the image size", source=source.origin, limit="unreadable"
            )
        sizes = (size,)
    tokens = tuple(spec.image_tokens(h, w, min_pixels=min_pixels, max_pixels=hi) for w, h in sizes)
    return FileEstimate(
        source=source.origin,
        file_type=source.file_type,
        pages=len(sizes),
        calls=len(sizes),
        page_sizes=sizes,
        page_image_tokens=tokens,
        image_tokens=sum(tokens),
    )


def limit_warnings(
    source: Source,
    estimate: FileEstimate | None = None,
    *,
    aisearch_service: str | None = None,
    model: str | QwenModel = DEFAULT_MODEL,
    max_pixels: int | None = None,
    max_pages: int | None = None,
    large_pages: int = LARGE_PAGE_COUNT,
    qwen: bool = True,
) -> list[str]:
    """What would be refused, or is worth a second look, before a file is sent: one message per finding, each
    naming the file.

    * AI Search (``aisearch_service`` ``"document-analyze"`` or ``"image-analyze"``): the 8 MB request body once
      base64-encoded, and the accepted types (:func:`~aisearch_ingest.sources.check_aisearch_body`).
    * Qwen-OCR: an image's documented limits (:func:`~aisearch_ingest.pages.check_image`); for a PDF or multi-page
      TIFF each page image's size (from ``estimate``: sides, aspect ratio, pixels), the first page that breaks one.
    * Pages (from ``estimate``): over ``max_pages`` (the budget ``ingest --max-pages`` enforces), and more than
      ``large_pages`` (1,000 by default) even without a budget.

    Args:
        source: the loaded file.
        estimate: its :func:`estimate_file` (None: pages and page images are not checked).
        aisearch_service: the AI Search service it would go to, or None to skip that check.
        model: the Qwen-OCR model (its pixel ceiling).
        max_pixels: the request's ``max_pixels``.
        max_pages: the page budget, or None.
        large_pages: the page count above which to warn.
        qwen: check the Qwen-OCR image limits (False when the estimate already failed on the file).
    """
    found: list[str] = []
    spec = _model(model)
    if aisearch_service is not None:
        allowed = IMAGE_TYPES if aisearch_service == "image-analyze" else DOCUMENT_TYPES
        try:
            check_aisearch_body(source, allowed=allowed, service=aisearch_service)
        except InvalidInputError as exc:
            found.append(f"AI Search: {exc}")
    if not qwen:
        pass
    elif estimate is not None and estimate.pages > 1:
        for number, (width, height) in enumerate(estimate.page_sizes, start=1):
            try:
                check_dimensions(
                    width,
                    height,
                    where=f"{source.origin} page {number}",
                    max_pixels=max_pixels,
                    pixel_upper=spec.max_pixels_limit,
                )
            except InvalidInputError as exc:
                found.append(f"Qwen-OCR: {exc}")
                break
    elif source.file_type in IMAGE_TYPES and not is_multipage(source):
        try:
            check_image(source, max_pixels=max_pixels, pixel_upper=spec.max_pixels_limit)
        except InvalidInputError as exc:
            found.append(f"Qwen-OCR: {exc}")
    if estimate is not None:
        pages = estimate.pages
        if max_pages is not None and pages > max_pages:
            found.append(
                f"{source.origin} has {pages:,} pages, over --max-pages {max_pages:,}: ingest refuses it before "
                "sending anything"
            )
        elif pages > large_pages:
            found.append(
                f"{source.origin} has {pages:,} pages (over {large_pages:,}): {pages:,} Qwen-OCR calls, one per page; "
                "set a page budget with --max-pages to refuse such files before spending"
            )
    return found

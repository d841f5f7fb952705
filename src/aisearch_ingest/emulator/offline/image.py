"""image-analyze: the OCR text (``ops-image-analyze-ocr-001``), or a factual description computed from the pixels
followed by that text (``ops-image-analyze-vlm-001``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import layout
from .common import LRU, UnsupportedDocument, count_tokens, sha256_hex
from .ocr import OCR_CACHE_SIZE, OCRLine, ocr_cached, open_image

__all__ = ["IMAGE_ANALYZE_OCR", "IMAGE_ANALYZE_VLM", "ImageAnalysis", "analyze_image", "clear_cache"]


IMAGE_ANALYZE_OCR = "ops-image-analyze-ocr-001"
IMAGE_ANALYZE_VLM = "ops-image-analyze-vlm-001"


@dataclass
class ImageAnalysis:
    """What image-analyze returns for one image.

    Attributes:
        content: the text (``result.data.content``).
        content_type: always ``plain`` (as the page documents).
        usage: ``{"pv_count": 1}`` for the OCR service, ``{"token_count": n}`` for the VLM service.
    """

    content: str
    content_type: str
    usage: dict[str, int]


_COLOUR_NAMES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("white", (245, 245, 245)),
    ("light grey", (200, 200, 200)),
    ("grey", (128, 128, 128)),
    ("dark grey", (64, 64, 64)),
    ("black", (12, 12, 12)),
    ("red", (200, 30, 30)),
    ("dark red", (120, 20, 20)),
    ("orange", (240, 140, 30)),
    ("yellow", (240, 220, 40)),
    ("beige", (225, 210, 170)),
    ("brown", (120, 75, 35)),
    ("green", (50, 160, 60)),
    ("dark green", (20, 80, 30)),
    ("teal", (30, 140, 140)),
    ("light blue", (140, 190, 235)),
    ("blue", (40, 90, 200)),
    ("navy", (20, 30, 90)),
    ("purple", (120, 60, 160)),
    ("pink", (240, 150, 190)),
)

_IMAGE_CACHE: LRU[tuple[str, str], ImageAnalysis] = LRU(OCR_CACHE_SIZE)


def _describe_pixels(img: Any) -> tuple[list[tuple[str, float]], float, float]:
    """Dominant named colours (share >= 5%), the share of near-white pixels, and the mean saturation."""
    small = img.convert("RGB").resize((48, 48))
    raw = small.tobytes()
    pixels = [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]
    counts: dict[str, int] = {}
    whiteish = 0
    saturation = 0.0
    for r, g, b in pixels:
        name = min(_COLOUR_NAMES, key=lambda c: (c[1][0] - r) ** 2 + (c[1][1] - g) ** 2 + (c[1][2] - b) ** 2)[0]
        counts[name] = counts.get(name, 0) + 1
        hi, lo = max(r, g, b), min(r, g, b)
        saturation += (hi - lo) / hi if hi else 0.0
        whiteish += hi > 225 and hi - lo < 25
    total = len(pixels)
    ranked = sorted(((n, c / total) for n, c in counts.items()), key=lambda item: -item[1])
    dominant = [(n, share) for n, share in ranked if share >= 0.05][:3] or ranked[:1]
    return dominant, whiteish / total, saturation / total


def _describe_image(img: Any, lines: Sequence[OCRLine]) -> str:
    width, height = img.size
    ratio = width / height
    orientation = "square" if 0.9 <= ratio <= 1.1 else ("landscape" if ratio > 1 else "portrait")
    dominant, white, saturation = _describe_pixels(img)
    rows = layout.visual_rows(lines)
    run = layout.table_run(rows)
    if run is not None and run[1] - run[0] >= 3:
        kind = "a table or form"
    elif len(rows) >= 5 and white >= 0.5:
        kind = "a text document"
    elif len(rows) >= 1 and white >= 0.5:
        kind = "a graphic or screenshot with some text"
    elif saturation >= 0.25 or white < 0.3:
        kind = "a photograph or illustration"
    else:
        kind = "a graphic"
    colours = [f"{name} ({share:.0%})" for name, share in dominant]
    colour_text = colours[0] if len(colours) == 1 else ", ".join(colours[:-1]) + " and " + colours[-1]
    n = len(rows)
    lines_text = "no readable text" if n == 0 else f"{n} line{'s' if n != 1 else ''} of text"
    return (
        f"The image is a {width}x{height} pixel {orientation} image that looks like {kind}. "
        f"Its dominant colours are {colour_text}. It contains {lines_text}."
    )


def analyze_image(data: bytes, service_id: str) -> ImageAnalysis:
    """What image-analyze returns for one image.

    ``ops-image-analyze-ocr-001``: the OCR text (paragraphs, one per line), usage ``{"pv_count": 1}``.
    ``ops-image-analyze-vlm-001``: a short factual description computed from the pixels (size, orientation,
    kind, dominant colours, number of text lines) followed by the OCR text, usage ``{"token_count": n}`` where
    ``n`` counts the content's tokens with ``cl100k_base``.

    Args:
        data: the image bytes.
        service_id: ``ops-image-analyze-ocr-001`` or ``ops-image-analyze-vlm-001``.

    Returns:
        The analysis.

    Raises:
        UnsupportedDocument: for an unknown service id or a HEIC image.
        CorruptDocument: when the image cannot be decoded.
        ImportError: when the ``local`` extra is not installed.
    """
    if service_id not in (IMAGE_ANALYZE_OCR, IMAGE_ANALYZE_VLM):
        raise UnsupportedDocument(
            f"unknown image-analyze service id {service_id!r}; expected {IMAGE_ANALYZE_OCR} or {IMAGE_ANALYZE_VLM}"
        )
    key = (sha256_hex(data), service_id)
    hit = _IMAGE_CACHE.get_item(key)
    if hit is None:
        lines = ocr_cached(data, rotate=False)
        text = layout.paragraph_text(layout.visual_rows(lines))
        if service_id == IMAGE_ANALYZE_OCR:
            hit = ImageAnalysis(content=text, content_type="plain", usage={"pv_count": 1})
        else:
            description = _describe_image(open_image(data), lines)
            content = description + (f"\n\nText in the image:\n{text}" if text else "")
            hit = ImageAnalysis(content=content, content_type="plain", usage={"token_count": count_tokens(content)})
        _IMAGE_CACHE.put(key, hit)
    return ImageAnalysis(content=hit.content, content_type=hit.content_type, usage=dict(hit.usage))


def clear_cache() -> None:
    """Forget memoised image analyses."""
    with _IMAGE_CACHE.lock:
        _IMAGE_CACHE.clear()

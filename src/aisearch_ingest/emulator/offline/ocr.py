"""The OCR itself: rapidocr with the ONNX models shipped inside its wheel, its text boxes in reading order.

The engine is created once (double-checked lock) and inference is serialised by a lock; results are memoised per
sha256 of the image bytes in a bounded LRU, and identical concurrent requests run inference once. ``enable_rotate``
tries the four orientations of a page that looks sideways or upside down. Images are opened with Pillow (HEIC with
pillow-heif); numpy, rapidocr and onnxruntime are imported on first use.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._sniff import sniff_image_format
from .common import LOCAL_EXTRA_HINT, LRU, CorruptDocument, KeyedLocks, UnsupportedDocument, missing_package, sha256_hex

__all__ = [
    "OCRLine",
    "clear_cache",
    "engine_load_seconds",
    "group_rows",
    "image_size",
    "ocr_cached",
    "ocr_image",
    "ocr_pil",
    "open_image",
    "warm_up",
]

logger = logging.getLogger("aisearch_ingest.emulator.offline")


#: Distinct images whose OCR boxes (and image-analyze answers) are kept.
OCR_CACHE_SIZE = 512

#: rapidocr text-detector settings: scale the longer side to at most this many pixels. rapidocr's own default
#: (``limit_type: min``, 736) upsamples small images to a 736-px short side, which costs 5-10x more for
#: screenshots and receipts and gains nothing on printed text.
DET_LIMIT_SIDE_LEN = 1280
#: Text lines per recogniser run (see ``_create_engine``).
REC_BATCH = 1


@dataclass
class OCRLine:
    """One text box found by OCR.

    Attributes:
        text: the recognised text.
        box: four ``(x, y)`` points in pixel coordinates of the image, clockwise from top-left
            (top-left, top-right, bottom-right, bottom-left).
        score: recognition confidence in [0, 1].
    """

    text: str
    box: list[tuple[float, float]]
    score: float

    @property
    def x0(self) -> float:
        """Left edge of the box's bounding rectangle."""
        return min(p[0] for p in self.box)

    @property
    def x1(self) -> float:
        """Right edge of the box's bounding rectangle."""
        return max(p[0] for p in self.box)

    @property
    def y0(self) -> float:
        """Top edge of the box's bounding rectangle."""
        return min(p[1] for p in self.box)

    @property
    def y1(self) -> float:
        """Bottom edge of the box's bounding rectangle."""
        return max(p[1] for p in self.box)

    @property
    def height(self) -> float:
        """Text height: mean length of the left and right edges."""
        (ax, ay), (bx, by), (cx, cy), (dx, dy) = self.box
        return (math.hypot(dx - ax, dy - ay) + math.hypot(cx - bx, cy - by)) / 2

    @property
    def yc(self) -> float:
        """Vertical centre."""
        return sum(p[1] for p in self.box) / 4


@functools.cache
def _heif_codec() -> bool:
    """Teach Pillow HEIC (pillow-heif, in the ``local`` extra); False when it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _heic_ready(data: bytes) -> None:
    if sniff_image_format(data) == "heic" and not _heif_codec():
        raise UnsupportedDocument("HEIC images need the HEIF codec: pip install 'aisearch-ingest[local]' (pillow-heif)")


def open_image(data: bytes) -> Any:
    """Decode an image with Pillow (HEIC through pillow-heif); raises :class:`CorruptDocument` when it cannot."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - core dependency
        raise missing_package("pillow", exc) from exc
    _heic_ready(data)
    if not data:
        raise CorruptDocument("empty image")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Image.DecompressionBombError as exc:
        raise CorruptDocument(f"image too large to decode: {exc}") from exc
    except Exception as exc:
        fmt = sniff_image_format(data)
        raise CorruptDocument(f"cannot decode image ({fmt or 'unknown format'}): {exc}") from exc
    return img


def image_size(data: bytes) -> tuple[int, int]:
    """Return an image's ``(width, height)`` in pixels, reading only its header.

    Args:
        data: the image bytes.

    Returns:
        ``(width, height)``.

    Raises:
        CorruptDocument: when the bytes are not a readable image.
    """
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - core dependency
        raise missing_package("pillow", exc) from exc
    _heic_ready(data)
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception as exc:
        raise CorruptDocument(f"cannot read image header: {exc}") from exc
    return int(width), int(height)


def _to_bgr_array(img: Any) -> Any:
    """PIL image (any mode) -> contiguous uint8 BGR numpy array, transparency composited on white."""
    import numpy as np
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


_ENGINE: Any = None
_ENGINE_LOCK = threading.Lock()
_INFER_LOCK = threading.Lock()
_ENGINE_LOAD_SECONDS: float | None = None
_OCR_CACHE: LRU[tuple[str, bool], tuple[OCRLine, ...]] = LRU(OCR_CACHE_SIZE)


def _bundled_model(models: Path, kind: str) -> str:
    found = sorted(models.glob(f"*{kind}*.onnx"))
    if not found:
        raise ImportError(
            f"rapidocr's bundled {kind} model is missing from {models}; reinstall it ({LOCAL_EXTRA_HINT})"
        )
    return str(found[0])


def _create_engine() -> Any:
    try:
        import rapidocr
        from rapidocr import RapidOCR
    except ImportError as exc:
        raise missing_package("rapidocr", exc) from exc
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise missing_package("onnxruntime", exc) from exc
    # Point every model at the ONNX files inside the wheel, so rapidocr never resolves (or downloads) a default
    # model; the recogniser's character list is read from the ONNX metadata.
    models = Path(rapidocr.__file__).resolve().parent / "models"
    params: dict[str, Any] = {
        "Global.log_level": "critical",
        # The 0/180-degree line classifier misreads clean upright lines now and then (a whole line of a
        # scanned page came out as garbage with it on), so it stays off; enable_rotate tries whole-image
        # orientations instead.
        "Global.use_cls": False,
        "Det.model_path": _bundled_model(models, "det"),
        "Rec.model_path": _bundled_model(models, "rec"),
        "Cls.model_path": _bundled_model(models, "cls"),
        "Det.limit_type": "max",
        "Det.limit_side_len": DET_LIMIT_SIDE_LEN,
        # One text line per recogniser run: a batch is padded to its widest line, and rapidocr's default of 6
        # took a scanned page's peak from ~420 MB to ~760 MB (and was slower: 1.25 s against 0.98 s).
        "Rec.rec_batch_num": REC_BATCH,
    }
    engine = RapidOCR(params=params)
    logging.getLogger("RapidOCR").setLevel(logging.CRITICAL)
    return engine


def _get_engine() -> Any:
    global _ENGINE, _ENGINE_LOAD_SECONDS
    if _ENGINE is None:
        with _ENGINE_LOCK:
            if _ENGINE is None:
                import numpy as np

                started = time.perf_counter()
                engine = _create_engine()
                # rapidocr loads its ONNX sessions on first use: do it now, under this lock.
                with _INFER_LOCK:
                    engine(np.full((64, 256, 3), 255, dtype=np.uint8))
                _ENGINE_LOAD_SECONDS = time.perf_counter() - started
                logger.info("OCR engine loaded in %.2f s", _ENGINE_LOAD_SECONDS)
                _ENGINE = engine
    return _ENGINE


def warm_up() -> float:
    """Load the OCR engine now (it is otherwise loaded on the first OCR call).

    Returns:
        Seconds the load took (0.0 if it was already loaded).

    Raises:
        ImportError: when the ``local`` extra is not installed.
    """
    if _ENGINE is not None:
        return 0.0
    _get_engine()
    return _ENGINE_LOAD_SECONDS or 0.0


def engine_load_seconds() -> float | None:
    """Seconds the OCR engine took to load, or None if it is not loaded yet."""
    return _ENGINE_LOAD_SECONDS


def _run_ocr(bgr: Any) -> list[OCRLine]:
    engine = _get_engine()
    with _INFER_LOCK:
        out = engine(bgr)
    if out is None or getattr(out, "boxes", None) is None or not getattr(out, "txts", None):
        return []
    lines: list[OCRLine] = []
    for box, text, score in zip(out.boxes, out.txts, out.scores, strict=False):
        text = str(text).strip()
        if not text:
            continue
        pts = [(float(p[0]), float(p[1])) for p in box]
        lines.append(OCRLine(text=text, box=pts, score=float(score)))
    return _reading_order(lines)


def ocr_pil(img: Any) -> list[OCRLine]:
    """OCR a decoded (PIL) image, not memoised: the text boxes in reading order."""
    return _run_ocr(_to_bgr_array(img))


def _copy_lines(lines: Iterable[OCRLine]) -> list[OCRLine]:
    return [OCRLine(text=ln.text, box=list(ln.box), score=ln.score) for ln in lines]


def ocr_image(data: bytes) -> list[OCRLine]:
    """OCR an image with rapidocr and return its text boxes in reading order.

    Boxes are grouped into visual lines (by vertical centre), lines go top to bottom and boxes within a line
    left to right. Results are memoised per sha256 of ``data`` (bounded LRU); concurrent calls for the same
    image run inference once.

    Args:
        data: the image bytes (PNG, JPEG, BMP, TIFF, WEBP, GIF).

    Returns:
        The text boxes (fresh objects on every call).

    Raises:
        CorruptDocument: when the bytes are not a decodable image.
        UnsupportedDocument: for HEIC, which cannot be decoded offline.
        ImportError: when the ``local`` extra is not installed.
    """
    return _copy_lines(ocr_cached(data, rotate=False))


def ocr_cached(data: bytes, *, rotate: bool) -> tuple[OCRLine, ...]:
    """The memoised OCR of ``data`` (``rotate``: with ``enable_rotate``), shared by every caller: do not mutate."""
    key = (sha256_hex(data), rotate)
    hit = _OCR_CACHE.get_item(key)
    if hit is not None:
        return hit
    img = open_image(data)
    _get_engine()  # load outside the per-image section so the first caller's timing is visible in logs
    with _SINGLE_FLIGHT.hold(key):
        hit = _OCR_CACHE.get_item(key)
        if hit is not None:
            return hit
        lines = _ocr_with_rotation(img) if rotate else ocr_pil(img)
        result = tuple(lines)
        _OCR_CACHE.put(key, result)
    return result


_SINGLE_FLIGHT = KeyedLocks()


def _ocr_quality(lines: Sequence[OCRLine]) -> float:
    return sum(ln.score * len(ln.text) for ln in lines)


def _ocr_with_rotation(img: Any) -> list[OCRLine]:
    """``enable_rotate``: if the page looks sideways or upside down, OCR the best of the four orientations.

    Coordinates are those of the corrected (rotated) image.
    """
    from PIL import Image

    lines = ocr_pil(img)
    vertical = sum(1 for ln in lines if (ln.y1 - ln.y0) > 1.5 * (ln.x1 - ln.x0) and len(ln.text) > 2)
    mean_score = statistics.fmean(ln.score for ln in lines) if lines else 0.0
    if lines and vertical * 2 < len(lines) and mean_score >= 0.8:
        return lines
    best, best_q = lines, _ocr_quality(lines)
    for transpose in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180):
        candidate = ocr_pil(img.transpose(transpose))
        quality = _ocr_quality(candidate)
        if quality > best_q * 1.1:
            best, best_q = candidate, quality
    return best


def group_rows(lines: Sequence[OCRLine]) -> list[list[OCRLine]]:
    """Group boxes whose vertical centres are within half a text height into rows, top to bottom."""
    rows: list[list[OCRLine]] = []
    row_yc: list[float] = []
    row_h: list[float] = []
    for ln in sorted(lines, key=lambda item: item.yc):
        h = max(ln.height, 1.0)
        if rows and abs(ln.yc - row_yc[-1]) <= 0.5 * min(h, row_h[-1]):
            rows[-1].append(ln)
            n = len(rows[-1])
            row_yc[-1] += (ln.yc - row_yc[-1]) / n
            row_h[-1] = statistics.median(item.height for item in rows[-1])
        else:
            rows.append([ln])
            row_yc.append(ln.yc)
            row_h.append(h)
    for row in rows:
        row.sort(key=lambda item: item.x0)
    return rows


def _reading_order(lines: Sequence[OCRLine]) -> list[OCRLine]:
    return [ln for row in group_rows(lines) for ln in row]


def clear_cache() -> None:
    """Forget memoised OCR results (the engine stays loaded)."""
    with _OCR_CACHE.lock:
        _OCR_CACHE.clear()

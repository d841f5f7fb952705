"""The emulator's offline engine: real OCR and PDF/DOCX/PPTX/HTML/Markdown/text analysis, one module per job.

The emulator's services call it, one function per service:

* :func:`analyze_document` (:mod:`.document`) -- what ``ops-document-analyze-001`` returns: markdown for PDF (per
  page, text layer via pypdfium2, OCR for scanned pages), HTML for every other type (DOCX via mammoth, PPTX via
  python-pptx, Markdown via markdown-it-py, text as ``<p>`` paragraphs, HTML as is);
* :func:`analyze_image` (:mod:`.image`) -- ``ops-image-analyze-ocr-001`` (the OCR text) and
  ``ops-image-analyze-vlm-001`` (a factual description computed from the pixels, then the OCR text);
* :func:`qwen_ocr` (:mod:`.qwen`) -- every Qwen-OCR built-in task, answered in the format the vendor page shows,
  from real OCR;
* :func:`ocr_image` (:mod:`.ocr`) -- the OCR itself (rapidocr with the ONNX models shipped inside its wheel), whose
  boxes :mod:`.layout` turns into rows, paragraphs and tables; :mod:`.common` holds what they all share.

Heavy imports (rapidocr, onnxruntime, numpy, pypdfium2, mammoth, python-pptx, PIL) happen inside functions, so
importing this package is cheap. A missing optional package raises :class:`ImportError` naming the ``local`` extra.

Thread safety: the OCR engine is created once (double-checked lock) and inference is serialised by a lock;
pdfium is not thread-safe, so every pdfium call runs under the process-wide lock of :mod:`aisearch_ingest._pdfium`.
OCR results are memoised per sha256 of the image bytes in a bounded LRU, and document and image analyses likewise,
so load benchmarks that repeat images cost one inference per distinct image.
"""

from __future__ import annotations

from . import document, image, ocr
from .common import LOCAL_EXTRA_HINT, CorruptDocument, UnsupportedDocument, count_tokens
from .document import DocumentAnalysis, analyze_document
from .image import ImageAnalysis, analyze_image
from .ocr import OCRLine, engine_load_seconds, image_size, ocr_image, warm_up
from .qwen import QwenAnswer, qwen_ocr

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
    "warm_up",
]


def clear_caches() -> None:
    """Forget memoised OCR, image and document results (the engine stays loaded)."""
    ocr.clear_cache()
    document.clear_cache()
    image.clear_cache()

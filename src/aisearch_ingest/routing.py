"""Which service parses a file: the one routing decision, shared by the CLI and the mixed-folder adapters
(``AISearchLoader``, ``AISearchParser``, ``AISearchReader``, ``file_extractor``).

A file is routed by its type as sniffed from its bytes (:func:`~aisearch_ingest.sources.probe_type` for a local
file, which reads its first 4 KB only; the name's suffix for a URL), never by its suffix alone: documents go to
document-analyze, images to image-analyze or Qwen-OCR as the user chooses. A type no service takes is an
:class:`~aisearch_ingest.InvalidInputError` naming the file (``limit="file_type"``), reported as that file's failure,
never dropped.

Example:
    >>> service_for("scan.png", "png"), service_for("scan.png", "png", images="qwen-ocr")
    ('image-analyze', 'qwen-ocr')
    >>> service_for("report.pdf", "pdf", images="qwen-ocr")
    'document-analyze'
    >>> service_for("data.xlsx", "xlsx")
    Traceback (most recent call last):
    ...
    aisearch_ingest.errors.InvalidInputError: data.xlsx: no service parses .xlsx files (documents: ...)
"""

from __future__ import annotations

from typing import Literal, get_args

from .errors import InvalidInputError
from .limits import DOCUMENT_TYPES, IMAGE_TYPES, QWEN_IMAGE_TYPES
from .sources import SourceLike, load_source, local_path, probe_type

__all__ = ["IMAGE_SERVICES", "ImageService", "Service", "check_images", "extensions", "route", "service_for"]

#: The services a file can be routed to.
Service = Literal["document-analyze", "image-analyze", "qwen-ocr"]
#: Where images go: AI Search image-analyze (the default) or Model Studio Qwen-OCR.
ImageService = Literal["image-analyze", "qwen-ocr"]
IMAGE_SERVICES: tuple[ImageService, ...] = get_args(ImageService)

_IMAGE_TYPES: dict[str, frozenset[str]] = {"image-analyze": IMAGE_TYPES, "qwen-ocr": QWEN_IMAGE_TYPES}


def check_images(images: str) -> ImageService:
    """``images`` if it names an image service; else ``ValueError``."""
    if images not in IMAGE_SERVICES:
        raise ValueError(f"images must be one of {', '.join(map(repr, IMAGE_SERVICES))}; got {images!r}")
    return images  # type: ignore[return-value]


def service_for(origin: str, file_type: str, *, images: ImageService = "image-analyze") -> Service:
    """The service for a file of ``file_type`` (as sniffed: ``pdf``, ``png``...).

    Raises:
        InvalidInputError: no service takes the type (with ``images="qwen-ocr"``, also an image type Qwen-OCR does
            not read, such as GIF); the message names ``origin`` and what is taken.
    """
    check_images(images)
    if file_type in DOCUMENT_TYPES:
        return "document-analyze"
    if file_type in _IMAGE_TYPES[images]:
        return images
    if file_type in IMAGE_TYPES:  # an image that image-analyze reads and Qwen-OCR does not
        raise InvalidInputError(
            f"{origin}: Qwen-OCR does not read .{file_type} images (it takes {', '.join(sorted(QWEN_IMAGE_TYPES))}); "
            "route images to image-analyze (images='image-analyze') for this one",
            source=origin,
            limit="file_type",
            value=file_type,
        )
    raise InvalidInputError(
        f"{origin}: no service parses .{file_type or '?'} files "
        f"(documents: {', '.join(sorted(DOCUMENT_TYPES))}; images: {', '.join(sorted(_IMAGE_TYPES[images]))})",
        source=origin,
        limit="file_type",
        value=file_type,
    )


def route(item: SourceLike, *, images: ImageService = "image-analyze") -> tuple[Service, SourceLike]:
    """The service for one input, and the input to hand it.

    A local file is typed from its first bytes and handed over as given (it stays on disk until its turn comes: a
    large batch is never held in memory); any other input (a URL, bytes, a ``data:`` URI) is normalised with
    :func:`~aisearch_ingest.sources.load_source` -- no download: a URL is typed by its name -- and the
    :class:`~aisearch_ingest.Source` handed over, which the client takes as it would the input itself.

    Raises:
        InvalidInputError: the input cannot be read or typed, or no service takes its type.
    """
    text = local_path(item)
    if text is not None:
        origin, file_type = probe_type(text)
        return service_for(origin, file_type, images=images), item
    source = load_source(item)
    return service_for(source.origin, source.file_type, images=images), source


def extensions(images: ImageService | None = None) -> dict[str, Service]:
    """File suffixes (``".pdf"``...) and the service that takes them (with ``images=None``: every suffix either
    image service takes, as image-analyze). A file is still routed by its bytes; this is for picking files.

    Example:
        >>> table = extensions()
        >>> table[".docx"], table[".jpeg"], extensions("qwen-ocr").get(".gif")
        ('document-analyze', 'image-analyze', None)
    """
    table: dict[str, Service] = {f".{ext}": "document-analyze" for ext in sorted(DOCUMENT_TYPES)}
    image_types = _IMAGE_TYPES[check_images(images)] if images is not None else IMAGE_TYPES | QWEN_IMAGE_TYPES
    image_exts = set(image_types) | {alias for alias, ext in _ALIASES.items() if ext in image_types}
    for ext in sorted(image_exts):
        table[f".{ext}"] = images or "image-analyze"
    return table


#: Suffixes that mean the same type (sniff_type answers ``jpg`` and ``tiff``).
_ALIASES = {"jpeg": "jpg", "tif": "tiff"}

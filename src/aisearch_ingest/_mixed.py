"""What the mixed-folder adapters share (``AISearchLoader``/``AISearchParser``, ``AISearchReader``): the clients of
the services, their per-service options checked by name, and routing a batch into one group per service
(:mod:`aisearch_ingest.routing`). Imports neither framework.

Per service, a ready client (``document_client=``, ``image_client=``) or an options dict (``document_options=``,
``image_options=``: the client's constructor arguments); the AI Search connection (``api_key``, ``endpoint``,
``workspace``) is shared by document-analyze and image-analyze, and an options dict's entry wins over it. Qwen-OCR's
connection (``api_key``, ``region``, ``base_url``) goes in ``image_options``. A client is built when its first file
comes, so a folder with no images needs no image service credentials.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from ._adapters import Group, Shaper, check_names, client_parameters
from .aisearch import DocumentAnalyzer, ImageAnalyzer
from .config import as_secret
from .documents import Mode
from .engine import ParserEngine
from .errors import AISearchIngestError
from .qwen import QwenOCR
from .results import Outcome
from .routing import ImageService, Service, check_images, route
from .sources import Source, redact_url

__all__ = ["CLIENT_CLASSES", "CONNECTION", "MixedClients", "check_keywords", "hide_keys"]

#: The AI Search connection, shared by document-analyze and image-analyze.
CONNECTION = ("api_key", "endpoint", "workspace")
CLIENT_CLASSES: dict[str, type[ParserEngine]] = {
    "document-analyze": DocumentAnalyzer,
    "image-analyze": ImageAnalyzer,
    "qwen-ocr": QwenOCR,
}
_OPTIONS = {"document-analyze": "document_options", "image-analyze": "image_options", "qwen-ocr": "image_options"}


def hide_keys(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``options`` with its ``api_key`` wrapped in a SecretStr (no frame of ours keeps it raw)."""
    out = dict(options or {})
    if "api_key" in out:
        out["api_key"] = as_secret(out["api_key"])
    return out


def check_keywords(owner: str, given: Iterable[str], valid: Collection[str], *, what: str = "keyword argument") -> None:
    """``check_names`` for a mixed adapter's own keywords; a client argument given there (``max_pages=``) is pointed
    to the options dict it belongs in.

    Example:
        >>> check_keywords("AISearchLoader", ["max_pages"], ["mode", "document_options"])
        Traceback (most recent call last):
        ...
        TypeError: AISearchLoader got an unknown keyword argument 'max_pages': it is a client argument \
(DocumentAnalyzer, QwenOCR); pass it in document_options={'max_pages': ...} or image_options={'max_pages': ...}
    """
    for name in given:
        if name in valid:
            continue
        takers = [cls for cls in CLIENT_CLASSES.values() if name in client_parameters(cls)]
        if takers and not difflib.get_close_matches(name, list(valid), n=1, cutoff=0.85):
            dicts = sorted({_OPTIONS[cls.service] for cls in takers})
            where = " or ".join(f"{d}={{{name!r}: ...}}" for d in dicts)
            names = ", ".join(cls.__name__ for cls in takers)
            raise TypeError(
                f"{owner} got an unknown {what} {name!r}: it is a client argument ({names}); pass it in {where}"
            )
        check_names(owner, [name], valid, what=what)


class MixedClients:
    """The clients of one mixed adapter, one per service, each built on first use from its options.

    Args:
        owner: the adapter's class name, for messages.
        images: ``"image-analyze"`` or ``"qwen-ocr"``.
        connection: the AI Search ``api_key``/``endpoint``/``workspace`` given (``None`` values left out).
        document_options, image_options: constructor arguments of the document client and of the image client
            (``ImageAnalyzer`` or ``QwenOCR``, after ``images``); checked by name here.
        document_client, image_client: ready clients, used instead.

    Raises:
        TypeError: an unknown option (naming the nearest), options or connection keywords that a given client would
            make ignored.
        ValueError: a bad ``images``, or a client of another service than its place says.
    """

    def __init__(
        self,
        owner: str,
        *,
        images: str,
        mode: Mode,
        chunk_max_tokens: int,
        include_headings: bool,
        connection: Mapping[str, Any] | None = None,
        document_options: Mapping[str, Any] | None = None,
        image_options: Mapping[str, Any] | None = None,
        document_client: ParserEngine | None = None,
        image_client: ParserEngine | None = None,
    ) -> None:
        self.owner = owner
        self.images: ImageService = check_images(images)
        self._shaping = {"mode": mode, "max_tokens": chunk_max_tokens, "include_headings": include_headings}
        connection = {k: v for k, v in (connection or {}).items() if v is not None}
        check_names(owner, connection, CONNECTION)
        places: dict[Service, tuple[str, ParserEngine | None, Mapping[str, Any] | None]] = {
            "document-analyze": ("document", document_client, document_options),
            self.images: ("image", image_client, image_options),
        }
        self._clients: dict[str, ParserEngine] = {}
        self._kwargs: dict[str, dict[str, Any]] = {}
        for service, (place, client, options) in places.items():
            if client is not None:
                if client.service != service:
                    hint = f"; pass images={client.service!r}" if place == "image" else ""
                    raise ValueError(
                        f"{owner}: {place}_client is a {type(client).__name__} ({client.service}), where "
                        f"{service} is wanted{hint}"
                    )
                if options:
                    raise TypeError(
                        f"{owner} got {place}_client= and {place}_options ({', '.join(options)}), which it would "
                        "ignore: set them on the client"
                    )
                self._clients[service] = client
                continue
            options = dict(options or {})
            check_names(owner, options, client_parameters(CLIENT_CLASSES[service]), what=f"{place}_options key")
            shared = connection if service != "qwen-ocr" else {}
            self._kwargs[service] = hide_keys({**shared, **options})
        if connection and not any(s != "qwen-ocr" for s in self._kwargs):
            raise TypeError(
                f"{owner} got {', '.join(connection)} for AI Search, which it would ignore: every AI Search client "
                "is given ready (Qwen-OCR's connection goes in image_options)"
            )
        self._shapers: dict[str, Shaper] = {}

    def client(self, service: str) -> ParserEngine:
        """The client of ``service`` (built from its options on first use)."""
        client = self._clients.get(service)
        if client is None:
            client = self._clients[service] = CLIENT_CLASSES[service](**self._kwargs[service])
        return client

    def built(self) -> dict[str, ParserEngine]:
        """The clients built or given so far, by service."""
        return dict(self._clients)

    def shaper(self, service: str) -> Shaper:
        if service not in self._shapers:
            self._shapers[service] = Shaper(self.client(service), **self._shaping)  # type: ignore[arg-type]
        return self._shapers[service]

    def route(self, items: Iterable[Any]) -> tuple[list[Group], list[Outcome]]:
        """One group per service that has inputs (their clients built now), and the inputs no service takes or
        that cannot be read, as failed outcomes (reported, never dropped)."""
        grouped: dict[str, list[Any]] = {}
        done: list[Outcome] = []
        for item in items:
            try:
                service, routed = route(item, images=self.images)
            except AISearchIngestError as exc:
                origin = exc.source or _origin_of(item)
                exc.source = origin
                done.append(Outcome(origin, error=exc))
                continue
            grouped.setdefault(service, []).append(routed)
        groups = [Group(self.client(s), items, self.shaper(s)) for s, items in grouped.items()]
        return groups, done

    def close(self) -> None:
        """Close every client built or given (a closed client opens again when used)."""
        for client in self._clients.values():
            client.close()


def _origin_of(item: Any) -> str:
    if isinstance(item, Source):
        return item.origin
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    try:
        return redact_url(os.fsdecode(item))
    except TypeError:
        return repr(item)

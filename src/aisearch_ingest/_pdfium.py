"""The process-wide pdfium lock: pdfium is not thread-safe, so every pdfium call of the package -- the client's page
counts and renders, the emulator's PDF parsing -- holds this one lock. On the ground floor, so both sides import it
without importing each other."""

from __future__ import annotations

import threading

__all__ = ["PDFIUM_LOCK"]

PDFIUM_LOCK = threading.RLock()

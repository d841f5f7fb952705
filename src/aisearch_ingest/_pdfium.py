"""The process-wide pdfium lock, on the ground floor: it imports nothing of the package.

pdfium is not thread-safe, so every pdfium call in the process -- the client's page rendering
(:mod:`aisearch_ingest.pages`) and the emulator's PDF parsing alike -- holds this one lock. It lives here, not in
either side, so the emulator can share it without importing the client.
"""

from __future__ import annotations

import threading

__all__ = ["PDFIUM_LOCK"]

#: Held around every pdfium call in the process (re-entrant: a caller holding it may call helpers that take it).
PDFIUM_LOCK = threading.RLock()

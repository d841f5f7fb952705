"""``python -m aisearch_ingest.emulator [options]``: the same as ``aisearch-ingest emulator [options]``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())

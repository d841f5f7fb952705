"""A local emulator of AI Search document-analyze / image-analyze and DashScope Qwen-OCR (native and
OpenAI-compatible), for tests, notebooks and CI without a key or a network.

::

    from aisearch_ingest.emulator import Emulator, Faults, Latency

    with Emulator(api_key="test-key", latency=Latency(fixed=0.2), faults=Faults(fail_names={"broken"})) as emu:
        emu.inject(429, retry_after=0.5)
        ...  # point a client at emu.url

Importing this package is cheap: the offline engine (``emulator.offline``, extra ``local``) is imported on
the first request that needs it. See :mod:`aisearch_ingest.emulator.server` for the choices it makes where
the vendor's pages are silent.
"""

from __future__ import annotations

from ._control import INJECTION_KINDS, EmulatorStats, Faults, InjectionKind, Latency
from .cli import add_arguments, main, run
from .server import ROUTES, Emulator

__all__ = [
    "INJECTION_KINDS",
    "ROUTES",
    "Emulator",
    "EmulatorStats",
    "Faults",
    "InjectionKind",
    "Latency",
    "add_arguments",
    "main",
    "run",
]

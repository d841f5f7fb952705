"""The adaptive rate budget end to end: real clients against an emulator whose endpoint-wide limit is lower than the
clients were told, over real sockets. Nothing of ours is patched; the emulator counts and refuses the calls."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from aisearch_ingest import DocumentAnalyzer, ImageAnalyzer, PollPolicy
from aisearch_ingest.emulator import Emulator
from samples import pdf as _pdf
from samples import png as _png

pytest.importorskip("rapidocr", reason="the emulator's image OCR needs the `local` extra")

KEY = "test-key-budget"


@pytest.fixture(scope="module")
def png() -> bytes:
    return _png("Budget 42")


@pytest.fixture
def emu(png: bytes) -> Iterator[Emulator]:
    with Emulator(api_key=KEY) as emulator:
        with ImageAnalyzer(api_key=KEY, endpoint=emulator.url, qps=0) as warm:
            warm.parse(png, file_name="warm.png")  # the OCR memo is per process: later calls cost no CPU
        emulator.reset()
        yield emulator


def test_ceiling_above_the_real_limit_loses_nothing(emu: Emulator, png: bytes) -> None:
    """ImageAnalyzer told 12/s against an endpoint that takes 10: a 429 or two, then it keeps to the limit."""
    emu.set_qps(10)
    with ImageAnalyzer(api_key=KEY, endpoint=emu.url, qps=12, max_concurrency=16) as analyzer:
        outcomes = list(analyzer.parse_many([png] * 40))
        budget = analyzer.rate_limiter
    assert [o for o in outcomes if not o.ok] == []
    stats = emu.stats
    assert 1 <= stats.throttled <= 6, stats.throttled  # it had to learn (the ceiling is above the limit) and did
    assert budget is not None and budget.decreases >= 1
    assert stats.total_calls == 40 + stats.throttled  # every refused call was retried once it was allowed


def test_two_services_share_one_budget_per_endpoint(emu: Emulator, png: bytes) -> None:
    """A document client and an image client on one endpoint learn one limit together (3 calls/s for the whole
    endpoint, though each service's ceiling is 10)."""
    emu.set_qps(3)
    poll = PollPolicy(min_interval=0.2, max_interval=1.0, timeout=120)
    pdfs = [_pdf([f"Budget report {i}"]) for i in range(6)]
    results: dict[str, list[bool]] = {}
    with (
        DocumentAnalyzer(api_key=KEY, endpoint=emu.url, poll=poll) as docs,
        ImageAnalyzer(api_key=KEY, endpoint=emu.url) as images,
    ):
        assert docs.rate_limiter is images.rate_limiter  # one budget per endpoint and key

        def run(name: str, client: DocumentAnalyzer | ImageAnalyzer, items: list[bytes]) -> None:
            results[name] = [o.ok for o in client.parse_many(items)]

        threads = [
            threading.Thread(target=run, args=("docs", docs, pdfs)),
            threading.Thread(target=run, args=("images", images, [png] * 6)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        budget = docs.rate_limiter
    assert results == {"docs": [True] * 6, "images": [True] * 6}
    assert budget is not None and budget.decreases >= 1
    assert budget.rate is not None and budget.rate < 10  # it learned the endpoint's limit, not the ceiling
    assert emu.stats.max_calls_in_any_window(1.0) <= 3 + emu.stats.throttled  # only refused calls crowd a second


def test_other_credentials_get_their_own_budget(emu: Emulator) -> None:
    with (
        ImageAnalyzer(api_key=KEY, endpoint=emu.url) as a,
        ImageAnalyzer(api_key=KEY + "-other", endpoint=emu.url) as b,
        DocumentAnalyzer(api_key=KEY, endpoint=emu.url) as c,
    ):
        assert a.rate_limiter is not b.rate_limiter
        assert a.rate_limiter is c.rate_limiter
        assert KEY not in repr(a.rate_limiter)

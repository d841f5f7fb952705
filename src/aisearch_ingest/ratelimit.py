"""A token bucket per service, shared by every request of a client (and across event loops and threads).

The bucket's capacity defaults to one token, so calls are evenly spaced at ``1/qps`` seconds: no window of one second
ever holds more than ``qps`` calls, which is what the services count. A small safety margin absorbs network jitter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["DEFAULT_QPS", "RateLimiter"]

#: Documented QPS limits (opensearch-multimodal-overview.md, opensearch-image-analyze.en.txt). document-analyze and
#: Qwen-OCR document no QPS figure; the same conservative default is used and can be overridden.
DEFAULT_QPS: dict[str, float] = {
    "image-analyze": 10.0,
    "document-analyze": 10.0,
    "qwen-ocr": 10.0,
}


class RateLimiter:
    """Token bucket: ``qps`` tokens per second, at most ``burst`` stored.

    Thread-safe; :meth:`acquire` reserves a slot under a lock and then sleeps outside it, so any number of tasks on
    any number of event loops share one budget.

    Args:
        qps: sustained calls per second; ``None`` or ``0`` disables limiting.
        burst: bucket capacity (1 = evenly spaced calls).
        margin: fraction by which the effective rate is lowered to absorb jitter (0.03 = 3 %).
        clock: monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        qps: float | None,
        *,
        burst: int = 1,
        margin: float = 0.03,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if qps is not None and qps < 0:
            raise ValueError("qps must be positive (or None to disable rate limiting)")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.qps = qps or None
        self.burst = burst
        self._interval = 0.0 if not self.qps else 1.0 / (self.qps * (1.0 - margin))
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = 0.0

    def reserve(self) -> float:
        """Reserve one call; return how many seconds the caller must wait before making it."""
        if not self._interval:
            return 0.0
        with self._lock:
            # GCRA: `_tat` is the theoretical arrival time of the next call at the sustained rate.
            now = self._clock()
            tat = max(self._tat, now)
            start = max(now, tat - (self.burst - 1) * self._interval)
            self._tat = tat + self._interval
            return start - now

    async def acquire(self, sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> float:
        """Wait for a slot; return the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            await sleep(delay)
        return delay

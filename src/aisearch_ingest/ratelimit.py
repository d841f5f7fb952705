"""The rate limit per service, shared by every request of a client (and across event loops and threads).

Two rules, both checked when a call is actually about to be sent:

- **spacing** — a token bucket (GCRA) with capacity ``burst`` (default 1), so calls go out evenly at ``1/qps``;
- **window** — no more than ``qps`` calls in any ``1 s + margin`` window, measured on the real send times. This is
  what the services count, and because it uses real send times a call that was delayed (a busy event loop, a slow
  thread) can never squeeze the next second's calls into its window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["DEFAULT_QPS", "RateLimiter"]

#: QPS limits. image-analyze's 10 QPS is documented (opensearch-image-analyze.en.txt, multimodal overview);
#: document-analyze and Qwen-OCR publish no figure, so the same conservative default applies. Override with ``qps=``.
DEFAULT_QPS: dict[str, float] = {
    "image-analyze": 10.0,
    "document-analyze": 10.0,
    "qwen-ocr": 10.0,
}


class RateLimiter:
    """Spacing plus sliding-window limit for one service.

    Thread-safe: :meth:`acquire` reserves under a lock and sleeps outside it, so any number of tasks on any number of
    event loops share one budget.

    Args:
        qps: calls per second; ``None`` or ``0`` disables limiting.
        burst: bucket capacity of the spacing rule (1 = evenly spaced calls).
        margin: seconds added to the 1-second window to absorb network jitter between client and server clocks.
        clock: monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        qps: float | None,
        *,
        burst: int = 1,
        margin: float = 0.04,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if qps is not None and qps < 0:
            raise ValueError("qps must be positive (or None to disable rate limiting)")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if margin < 0:
            raise ValueError("margin must be >= 0")
        self.qps = qps or None
        self.burst = burst
        self.window = 1.0 + margin
        self._interval = 0.0 if not self.qps else 1.0 / self.qps
        self._per_window = max(1, math.floor(self.qps)) if self.qps else 0
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = 0.0  # GCRA: theoretical arrival time of the next call at the sustained rate
        self._sent: deque[float] = deque()  # real send times of the last `_per_window` calls

    def reserve(self) -> float:
        """Reserve a slot by the spacing rule; return how many seconds to wait before :meth:`admit`."""
        if not self._interval:
            return 0.0
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            start = max(now, tat - (self.burst - 1) * self._interval)
            self._tat = tat + self._interval
            return start - now

    def admit(self) -> float:
        """Record a send now if the window rule allows it; else return the seconds to wait before trying again."""
        if not self._interval:
            return 0.0
        with self._lock:
            now = self._clock()
            if len(self._sent) >= self._per_window:
                wait = self._sent[0] + self.window - now
                if wait > 0:
                    return wait
                self._sent.popleft()
            self._sent.append(now)
            return 0.0

    async def acquire(self, sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> float:
        """Wait until a call may be sent; return the seconds waited."""
        waited = self.reserve()
        if waited > 0:
            await sleep(waited)
        while (delay := self.admit()) > 0:
            waited += delay
            await sleep(delay)
        return waited

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

__all__ = ["DEFAULT_QPS", "RateLimiter", "shared_rate_limiter"]

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
        # Send times of the latest calls (mutable one-item lists, so a late send can move its time).
        self._sent: deque[list[float]] = deque(maxlen=2 * self._per_window or 1)

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
        return self._admit()[0]

    def _admit(self) -> tuple[float, list[float] | None]:
        if not self._interval:
            return 0.0, None
        with self._lock:
            now = self._clock()
            recent = sorted((stamp[0] for stamp in self._sent if stamp[0] > now - self.window), reverse=True)
            if len(recent) >= self._per_window:
                return recent[self._per_window - 1] + self.window - now, None
            stamp = [now]
            self._sent.append(stamp)
            return 0.0, stamp

    def mark_sent(self, stamp: list[float] | None) -> None:
        """Move a call's recorded time to when its request actually left (a new connection can take a while)."""
        if stamp is not None:
            with self._lock:
                stamp[0] = max(stamp[0], self._clock())

    async def acquire(self, sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> list[float] | None:
        """Wait until a call may be sent. Returns the call's stamp for :meth:`mark_sent` (``None`` when unlimited)."""
        delay = self.reserve()
        if delay > 0:
            await sleep(delay)
        while True:
            delay, stamp = self._admit()
            if delay <= 0:
                return stamp
            await sleep(delay)


_SHARED: dict[tuple[str, str, float | None], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_rate_limiter(base_url: str, service: str, qps: float | None = None) -> RateLimiter:
    """The process-wide limiter of one endpoint and service (``qps`` defaults to :data:`DEFAULT_QPS`), so every
    client of that endpoint in this process shares one budget."""
    rate = qps if qps is not None else DEFAULT_QPS.get(service)
    key = (base_url, service, rate)
    with _SHARED_LOCK:
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = RateLimiter(rate)
        return limiter

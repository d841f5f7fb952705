"""The rate budget: one per endpoint and credential, shared by every service, client, event loop and thread of the
process, that finds the real limit instead of trusting a published figure.

The vendor's limits are per account, every call counts (creates, task-status polls, sync calls, retries), and the
published figures disagree between the vendor's own language versions (document parsing: 10 QPS on the English
page, 1 on the Chinese one). So a documented QPS is only the **ceiling**; the pace is learned from the 429s.

Three rules, checked when a call is about to be sent:

- **spacing**: a token bucket (GCRA) at the current rate, capacity ``burst`` (1 = evenly spaced calls);
- **window**: no more than ``floor(rate)`` calls (at least one) in any ``max(1, 1/rate) s + margin`` window,
  measured on the real send times (what the gateway counts; a call that was delayed by a busy event loop or a slow
  connect can never squeeze the next second's calls into its window);
- **pause**: after a 429 that carries a hint, nobody sends before the hint has passed (capped at ``max_pause``):
  the gateway would refuse those calls too, and refused calls still count against the window.

Adaptation (``adaptive=True``, what :func:`endpoint_budget` builds):

- A 429 for a call sent after the last decrease lowers the rate to what the service accepted from us in the window
  before that call (the best estimate of the real limit), at most ``0.9 ×`` the current rate; with nothing accepted
  it halves. 429s for calls that were already in flight before the decrease are not counted twice.
- Without 429s the rate climbs back to the ceiling, quadratically in the time since the last decrease
  (``+1`` call/s after ``probe`` seconds, ``+4`` after ``2 · probe``): a steady run probes just above the learned
  limit about once per ``probe`` seconds, and a limit that was raised (another process stopped) is found again
  within a minute.
- **Retries go first**: a retry skips the spacing queue and waits only for the window and the pause, so a file that
  was refused is not sent to the back of the line.

A per-service cap (:func:`service_cap`, not adaptive) sits in front of the endpoint budget: ``qps=`` of one client
is that service's ceiling, while the endpoint budget's ceiling is the highest of its services'.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from .config import SecretStr

__all__ = [
    "DEFAULT_QPS",
    "RateLimiter",
    "Stamp",
    "credential_fingerprint",
    "endpoint_budget",
    "limiters_for",
    "reset_budgets",
    "service_cap",
]

logger = logging.getLogger("aisearch_ingest.ratelimit")

#: Ceilings per service. image-analyze's 10 QPS is documented (opensearch-image-analyze.en.txt, multimodal
#: overview); document-analyze is 10 on the 2025 English page and 1 on the Chinese one (CHANGES-2026.md §D): the
#: higher figure is the ceiling and the budget learns the rest. Qwen-OCR publishes 600 RPM for ``qwen-vl-ocr``
#: (10/s, CHANGES-2026.md §A). Override with ``qps=``.
DEFAULT_QPS: dict[str, float] = {
    "image-analyze": 10.0,
    "document-analyze": 10.0,
    "qwen-ocr": 10.0,
}

_PENDING, _ACCEPTED, _REFUSED, _FAILED = 0, 1, 2, 3


class Stamp:
    """One call's place in a limiter's window: when it was (really) sent and how the service answered."""

    __slots__ = ("at", "state")

    def __init__(self, at: float) -> None:
        self.at = at
        self.state = _PENDING


class RateLimiter:
    """Spacing, sliding window and pause for one budget; adaptive when asked.

    Thread-safe: :meth:`acquire` reserves under a lock and sleeps outside it, so any number of tasks on any number of
    event loops share one budget.

    Args:
        qps: the ceiling in calls per second; ``None`` or ``0`` disables limiting.
        burst: bucket capacity of the spacing rule (1 = evenly spaced calls).
        margin: seconds added to the window to absorb network jitter between client and server clocks.
        clock: monotonic clock, injectable for tests.
        adaptive: learn the real limit from 429s (see the module docstring); else the rate stays at ``qps``.
        min_qps: the lowest rate adaptation may reach (default: ``qps / 200``, at least one call per minute).
        probe: seconds after a decrease until the rate has climbed back by one call per second.
        max_pause: cap on the shared pause after a 429 hint (the throttled call itself waits its full hint).
    """

    def __init__(
        self,
        qps: float | None,
        *,
        burst: int = 1,
        margin: float = 0.04,
        clock: Callable[[], float] = time.monotonic,
        adaptive: bool = False,
        min_qps: float | None = None,
        probe: float = 20.0,
        max_pause: float = 2.0,
    ) -> None:
        if qps is not None and (qps < 0 or not math.isfinite(qps)):
            raise ValueError("qps must be a positive number (or None to disable rate limiting)")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if margin < 0:
            raise ValueError("margin must be >= 0")
        if probe <= 0 or max_pause < 0:
            raise ValueError("probe must be > 0 and max_pause >= 0")
        self.burst = burst
        self.margin = margin
        self.adaptive = adaptive
        self.probe = probe
        self.max_pause = max_pause
        self._clock = clock
        self._lock = threading.Lock()
        self._ceiling: float | None = qps or None
        self._min = min_qps
        self._base: float | None = None  # the learned rate after the last decrease (None: at the ceiling)
        self._decreased_at = -math.inf
        self._paused_until = -math.inf
        self._tat = 0.0  # GCRA: theoretical arrival time of the next call at the sustained rate
        self._sent: deque[Stamp] = deque()
        #: 429s seen, and how many of them lowered the rate (for reports and tests).
        self.throttled = 0
        self.decreases = 0

    def __repr__(self) -> str:
        rate = self.rate
        return (
            f"RateLimiter(ceiling={self._ceiling!r}, rate={rate if rate is None else round(rate, 3)!r}, "
            f"adaptive={self.adaptive})"
        )

    # -- the rate ------------------------------------------------------------------------------------------------

    @property
    def qps(self) -> float | None:
        """The ceiling (the documented or configured QPS)."""
        return self._ceiling

    @property
    def ceiling(self) -> float | None:
        return self._ceiling

    @property
    def rate(self) -> float | None:
        """The rate in force now (``None``: unlimited)."""
        with self._lock:
            return self._rate_locked(self._clock())

    def raise_ceiling(self, qps: float | None) -> None:
        """Let this budget go up to ``qps`` (a client with a higher ceiling joined it); never lowers it."""
        if not qps:
            return
        with self._lock:
            if self._ceiling is not None and qps > self._ceiling:
                self._ceiling = qps

    def _floor(self) -> float:
        if self._min is not None:
            return self._min
        assert self._ceiling is not None
        return min(self._ceiling, max(self._ceiling / 200.0, 1.0 / 60.0))

    def _rate_locked(self, now: float) -> float | None:
        if self._ceiling is None:
            return None
        if self._base is None:
            return self._ceiling
        grown = self._base + ((now - self._decreased_at) / self.probe) ** 2
        if grown >= self._ceiling:
            self._base = None
            return self._ceiling
        return grown

    @staticmethod
    def _window(rate: float, margin: float) -> tuple[float, int]:
        return max(1.0, 1.0 / rate) + margin, max(1, math.floor(rate))

    # -- acquiring -----------------------------------------------------------------------------------------------

    def reserve(self) -> float:
        """Reserve a slot by the spacing rule; return how many seconds to wait before :meth:`admit`."""
        with self._lock:
            now = self._clock()
            rate = self._rate_locked(now)
            if rate is None:
                return 0.0
            interval = 1.0 / rate
            tat = max(self._tat, now)
            start = max(now, tat - (self.burst - 1) * interval)
            self._tat = tat + interval
            return start - now

    def admit(self) -> float:
        """Record a send now if the window and pause rules allow it; else return the seconds to wait."""
        return self._admit()[0]

    def _admit(self) -> tuple[float, Stamp | None]:
        with self._lock:
            now = self._clock()
            rate = self._rate_locked(now)
            if rate is None:
                return 0.0, None
            if now < self._paused_until:
                return self._paused_until - now, None
            window, per_window = self._window(rate, self.margin)
            while self._sent and self._sent[0].at <= now - max(window, 5.0):
                self._sent.popleft()
            recent = sorted((s.at for s in self._sent if s.at > now - window), reverse=True)
            if len(recent) >= per_window:
                return max(1e-3, recent[per_window - 1] + window - now), None
            stamp = Stamp(now)
            self._sent.append(stamp)
            return 0.0, stamp

    def mark_sent(self, stamp: Stamp | None) -> None:
        """Move a call's recorded time to when its request actually left (a new connection can take a while)."""
        if stamp is not None:
            with self._lock:
                stamp.at = max(stamp.at, self._clock())

    async def acquire(
        self, sleep: Callable[[float], Awaitable[None]] = anyio.sleep, *, retry: bool = False
    ) -> Stamp | None:
        """Wait until a call may be sent. Returns the call's stamp for :meth:`mark_sent` and :meth:`feedback`
        (``None`` when unlimited). A ``retry`` skips the spacing queue (retries go first)."""
        if not retry:
            delay = self.reserve()
            if delay > 0:
                await sleep(delay)
        while True:
            delay, stamp = self._admit()
            if delay <= 0:
                return stamp
            await sleep(delay)

    # -- learning ------------------------------------------------------------------------------------------------

    def feedback(
        self, stamp: Stamp | None, *, throttled: bool, hint: float | None = None, failed: bool = False
    ) -> None:
        """Tell the budget how the service answered the call of ``stamp``.

        Args:
            throttled: the answer was a 429.
            hint: the server's retry hint in seconds, if any (starts the shared pause).
            failed: no answer came (a connection error): the call neither proves nor disproves the limit.
        """
        if stamp is None:
            return
        with self._lock:
            now = self._clock()
            if not throttled:
                stamp.state = _FAILED if failed else _ACCEPTED
                return
            stamp.state = _REFUSED
            self.throttled += 1
            if hint is not None and hint > 0:
                self._paused_until = max(self._paused_until, now + min(hint, self.max_pause))
            if not self.adaptive or stamp.at < self._decreased_at:
                return  # not adaptive, or sent before the last decrease: already reacted to
            rate = self._rate_locked(stamp.at)
            if rate is None:
                return
            window, _ = self._window(rate, self.margin)
            # What the service let through in the window before this call: answered or still in flight, not refused.
            accepted = sum(
                1
                for s in self._sent
                if s is not stamp and stamp.at - window < s.at <= stamp.at and s.state in (_ACCEPTED, _PENDING)
            )
            target = min(0.9 * rate, float(accepted)) if accepted else 0.5 * rate
            target = max(self._floor(), target)
            self._base = target
            self._decreased_at = now
            self.decreases += 1
        logger.info("429 from the service: rate budget lowered from %.2f to %.2f calls/s", rate, target)


# -- process-wide budgets ----------------------------------------------------------------------------------------

_SALT = os.urandom(16)
_BUDGETS: dict[tuple[str, str], RateLimiter] = {}
_CAPS: dict[tuple[str, str, str], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def credential_fingerprint(api_key: SecretStr | str | None) -> str:
    """A short keyed hash that tells credentials apart within this process; the key cannot be recovered from it
    (HMAC under a random per-process salt), so it is safe in a dict key, a log line or a ``repr``."""
    if api_key is None:
        raw = b""
    elif isinstance(api_key, str):
        raw = api_key.encode()
    else:
        raw = api_key.get_secret_value().encode()
    return hmac.new(_SALT, raw, hashlib.sha256).hexdigest()[:16]


def endpoint_budget(base_url: str, api_key: SecretStr | str | None, ceiling: float | None) -> RateLimiter:
    """The adaptive budget of one endpoint and credential in this process, shared by every service and client of it.
    Its ceiling is the highest ceiling of the clients that joined it."""
    key = (base_url.rstrip("/"), credential_fingerprint(api_key))
    with _SHARED_LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = RateLimiter(ceiling, adaptive=True)
    budget.raise_ceiling(ceiling)
    return budget


def service_cap(base_url: str, api_key: SecretStr | str | None, service: str, qps: float | None) -> RateLimiter:
    """The fixed per-service ceiling in front of the endpoint budget (one per endpoint, credential, service, qps)."""
    key = (base_url.rstrip("/"), credential_fingerprint(api_key), f"{service}@{qps!r}")
    with _SHARED_LOCK:
        cap = _CAPS.get(key)
        if cap is None:
            cap = _CAPS[key] = RateLimiter(qps)
        return cap


def limiters_for(
    base_url: str,
    api_key: SecretStr | str | None,
    service: str,
    qps: float | None = None,
    *,
    budget: RateLimiter | None = None,
) -> tuple[RateLimiter, ...]:
    """What a call of ``service`` waits for: its service's ceiling (``qps``, else :data:`DEFAULT_QPS`), then the
    endpoint's shared adaptive budget (or ``budget``, a limiter the user shares by hand). ``qps=0``: no limit."""
    if qps == 0:
        return ()  # explicitly unlimited
    ceiling = qps if qps is not None else DEFAULT_QPS.get(service)
    if budget is None:
        budget = endpoint_budget(base_url, api_key, ceiling)
    if not ceiling:
        return (budget,)
    return (service_cap(base_url, api_key, service, ceiling), budget)


def reset_budgets() -> None:
    """Forget every learned budget of this process (clients created afterwards start at their ceilings again).

    For test suites: a test that provoked 429s should not slow the tests after it. Clients that already exist keep
    the limiters they hold.
    """
    with _SHARED_LOCK:
        _BUDGETS.clear()
        _CAPS.clear()

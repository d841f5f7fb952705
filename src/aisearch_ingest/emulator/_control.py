"""The emulator's knobs and counters: latency model, fault rates, scripted injections, QPS window, statistics.

Everything here is thread-safe and free of I/O; :mod:`.server` consults it once per request.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = [
    "INJECTION_KINDS",
    "EmulatorStats",
    "Faults",
    "InjectionKind",
    "Latency",
]

InjectionKind = (
    Literal[429, 500, 503]
    | Literal["drop", "drop_after", "stream_cut", "stream_error", "data_inspection", "task_fail", "task_hang"]
)

#: Every kind :meth:`Emulator.inject` accepts. 429/500/503/"drop"/"drop_after" hit the next matching request of any
#: route;
#: "stream_cut"/"stream_error" the next *streaming* Qwen-OCR request; "data_inspection" the next Qwen-OCR request;
#: "task_fail"/"task_hang" the next AI Search task created (``/async``) or run (``/sync``).
INJECTION_KINDS: frozenset[object] = frozenset(
    {429, 500, 503, "drop", "drop_after", "stream_cut", "stream_error", "data_inspection", "task_fail", "task_hang"}
)
#: Kinds the request pipeline consumes before routing; the others are consumed by the route handlers.
TRANSPORT_KINDS: frozenset[object] = frozenset({429, 500, 503, "drop", "drop_after"})


@dataclass(frozen=True)
class Latency:
    """Emulated processing time.

    The total for one task is ``fixed + per_page * pages + per_token * tokens``. An async task stays
    ``PENDING`` until that long after its creation; a sync call or a Qwen-OCR call answers that late (a Qwen-OCR
    stream sends its first event after ``fixed + per_page`` and spaces the rest by ``per_token`` per token).

    Attributes:
        fixed: seconds per task or call.
        per_page: seconds per page (``page_num``; 1 for an image).
        per_token: seconds per token (document/image ``token_count``, Qwen-OCR output tokens).
    """

    fixed: float = 0.0
    per_page: float = 0.0
    per_token: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fixed", "per_page", "per_token"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Latency.{name} must be a finite number >= 0, got {value!r}")

    def total(self, pages: int = 1, tokens: int = 0) -> float:
        """Seconds a task of ``pages`` pages and ``tokens`` tokens takes."""
        return self.fixed + self.per_page * max(pages, 0) + self.per_token * max(tokens, 0)


@dataclass(frozen=True)
class Faults:
    """Random and name-triggered faults. Rates are probabilities per request, drawn from the seeded RNG.

    Attributes:
        rate_429: answer 429 (no ``Retry-After`` hint) to this share of requests.
        rate_5xx: answer 500 or 503 (half each) to this share of requests.
        rate_drop: close the connection without any response for this share of requests.
        rate_task_fail: this share of AI Search tasks end in ``FAIL`` (or the configured failure status).
        rate_task_hang: this share of AI Search tasks stay ``PENDING`` for ever (a sync call never answers).
        rate_stream_cut: this share of Qwen-OCR streams break off mid-stream (connection closed).
        fail_names: a task whose ``document.file_name`` (or URL file name) contains one of these strings fails.
        hang_names: a task whose file name contains one of these strings never finishes.
    """

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    rate_task_fail: float = 0.0
    rate_task_hang: float = 0.0
    rate_stream_cut: float = 0.0
    fail_names: Collection[str] = ()
    hang_names: Collection[str] = ()

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_5xx", "rate_drop", "rate_task_fail", "rate_task_hang", "rate_stream_cut"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"Faults.{name} must be a probability in [0, 1], got {value!r}")
        for name in ("fail_names", "hang_names"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"Faults.{name} must be a collection of strings, not a single string")
            object.__setattr__(self, name, tuple(str(v) for v in value if str(v)))

    def fail_marker(self, file_name: str) -> str | None:
        """The ``fail_names`` entry ``file_name`` contains, if any."""
        return next((m for m in self.fail_names if m in file_name), None) if file_name else None

    def hang_marker(self, file_name: str) -> str | None:
        """The ``hang_names`` entry ``file_name`` contains, if any."""
        return next((m for m in self.hang_names if m in file_name), None) if file_name else None


@dataclass(frozen=True)
class EmulatorStats:
    """A snapshot of what the emulator has seen since start (or :meth:`Emulator.reset_stats`).

    Service API calls are counted: AI Search routes, DashScope generation and upload-policy, the
    OpenAI-compatible route, and unknown paths. The emulator's own file host and its fake OSS upload target
    appear in ``calls_by_route`` only.

    Attributes:
        total_calls: service API calls received, refused ones (401, 429...) included.
        calls_by_route: calls per route name (``document-analyze/async``, ``document-analyze/task-status``,
            ``image-analyze/sync``, ``dashscope/generation``, ``dashscope/uploads``,
            ``compatible/chat-completions``, ``unknown``, ``emulator/files``, ``emulator/oss-upload``).
        calls_by_action: calls per ``x-acs-action`` header (``CreateDocumentAnalyzeTask``...), when sent.
        responses_by_status: responses per HTTP status (dropped connections are not responses).
        throttled: responses with status 429, whatever caused them.
        dropped: connections closed without a response.
        stream_cuts: streams broken off mid-stream.
        tasks_created: AI Search async tasks created.
        call_times: ``time.monotonic()`` of each counted call, ascending.
    """

    total_calls: int = 0
    calls_by_route: Mapping[str, int] = field(default_factory=dict)
    calls_by_action: Mapping[str, int] = field(default_factory=dict)
    responses_by_status: Mapping[int, int] = field(default_factory=dict)
    throttled: int = 0
    dropped: int = 0
    stream_cuts: int = 0
    tasks_created: int = 0
    call_times: tuple[float, ...] = field(default=(), repr=False)

    def max_calls_in_any_window(self, window: float = 1.0) -> int:
        """The largest number of calls that fell in any half-open interval ``(t - window, t]``."""
        times = self.call_times
        best = 0
        for i, t in enumerate(times):
            first = bisect.bisect_right(times, t - window, 0, i + 1)
            best = max(best, i + 1 - first)
        return best


class Recorder:
    """Statistics plus the sliding QPS window, under one lock so the two always agree."""

    def __init__(self, qps: float | None = None, *, max_times: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._max_times = max_times
        self._window: deque[float] = deque()
        self.set_qps(qps)
        self.reset()

    def set_qps(self, qps: float | None) -> None:
        """Change the limit; ``None`` or ``0`` removes it. Calls already in the window keep counting."""
        if qps is not None and not (isinstance(qps, (int, float)) and math.isfinite(qps) and qps >= 0):
            raise ValueError(f"qps must be a finite number >= 0 or None, got {qps!r}")
        with self._lock:
            if not qps:
                self._capacity, self._span = 0, 1.0
            elif qps >= 1:
                # at most floor(qps) calls in any 1-second window
                self._capacity, self._span = int(qps), 1.0
            else:
                # below 1 QPS: one call per 1/qps seconds
                self._capacity, self._span = 1, 1.0 / qps

    def clear_window(self) -> None:
        """Empty the QPS window."""
        with self._lock:
            self._window.clear()

    def reset(self) -> None:
        """Forget every counter (the QPS window is kept: it models the gateway, not the statistics)."""
        with self._lock:
            self._total = 0
            self._routes: Counter[str] = Counter()
            self._actions: Counter[str] = Counter()
            self._statuses: Counter[int] = Counter()
            self._throttled = 0
            self._dropped = 0
            self._cuts = 0
            self._tasks = 0
            self._times: deque[float] = deque(maxlen=self._max_times)

    def call(self, route: str, action: str | None, *, counted: bool = True) -> float | None:
        """Record one incoming call.

        Returns:
            ``None`` when the call is within the QPS limit (or not counted), else the seconds until the window
            has room again. Refused calls stay in the window: a client that keeps hammering stays throttled.
        """
        now = time.monotonic()
        with self._lock:
            self._routes[route] += 1
            if not counted:
                return None
            self._total += 1
            if action:
                self._actions[action] += 1
            self._times.append(now)
            if not self._capacity:
                return None
            window = self._window
            while window and window[0] <= now - self._span:
                window.popleft()
            admitted = len(window) < self._capacity
            window.append(now)
            if admitted:
                return None
            # room again once the capacity-th newest call (this one included) has left the window
            return max(window[-self._capacity] + self._span - now, 0.001)

    def response(self, status: int) -> None:
        """Record a response status."""
        with self._lock:
            self._statuses[status] += 1
            if status == 429:
                self._throttled += 1

    def dropped(self) -> None:
        """Record a connection closed without a response."""
        with self._lock:
            self._dropped += 1

    def stream_cut(self) -> None:
        """Record a stream broken off mid-way."""
        with self._lock:
            self._cuts += 1

    def task_created(self) -> None:
        """Record an async task creation."""
        with self._lock:
            self._tasks += 1

    def snapshot(self) -> EmulatorStats:
        """A consistent copy of every counter."""
        with self._lock:
            return EmulatorStats(
                total_calls=self._total,
                calls_by_route=MappingProxyType(dict(self._routes)),
                calls_by_action=MappingProxyType(dict(self._actions)),
                responses_by_status=MappingProxyType(dict(self._statuses)),
                throttled=self._throttled,
                dropped=self._dropped,
                stream_cuts=self._cuts,
                tasks_created=self._tasks,
                call_times=tuple(self._times),
            )


@dataclass
class Injection:
    """One scripted fault, waiting for ``remaining`` matching requests."""

    kind: object
    remaining: int
    route: str | None
    retry_after: float | None
    retry_after_header: str

    def matches(self, route: str) -> bool:
        """``route`` is a route name; ``self.route`` may be the name, its service (``document-analyze``) or
        its action part (``task-status``)."""
        if self.route is None:
            return True
        return route == self.route or route.startswith(self.route + "/") or route.endswith("/" + self.route)


class Injections:
    """The queue of scripted faults, consumed first-in first-out among those that match."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Injection] = []

    def add(self, injection: Injection) -> None:
        """Queue an injection."""
        with self._lock:
            self._items.append(injection)

    def clear(self) -> None:
        """Drop every pending injection."""
        with self._lock:
            self._items.clear()

    def pending(self) -> int:
        """How many injected faults are still waiting."""
        with self._lock:
            return sum(i.remaining for i in self._items)

    def take(self, route: str, kinds: Collection[object]) -> Injection | None:
        """Consume one pending injection of one of ``kinds`` that matches ``route``."""
        with self._lock:
            for item in self._items:
                if item.kind in kinds and item.matches(route):
                    item.remaining -= 1
                    if item.remaining <= 0:
                        self._items.remove(item)
                    return item
        return None


class LockedRandom:
    """A seeded ``random.Random`` shared by handler threads."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def chance(self, p: float) -> bool:
        """True with probability ``p`` (never draws when ``p`` is 0, so a seed's sequence is stable)."""
        if p <= 0:
            return False
        with self._lock:
            return self._rng.random() < p

    def choice(self, options: tuple[int, ...]) -> int:
        """One of ``options``."""
        with self._lock:
            return self._rng.choice(options)

"""The asynchronous-task flow of AI Search Open Platform services, owned by the engine: create a task, record it in
the journal, poll it where it is likely done (:class:`PollPolicy`), under one deadline; resume a task an earlier run
recorded instead of creating another.

Every async service of the platform (document-analyze, image-analyze's async route, and the video and audio services)
speaks this flow (``protocol/opensearch.py``: ``POST .../async`` answers ``result.task_id``,
``GET .../async/task-status`` answers ``PENDING`` until the task ends); a client declares its paths and how to read
a status answer in a :class:`TaskRoute`, and maps the final :class:`~aisearch_ingest.protocol.opensearch.StatusView`
to its result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .engine import SourceContext
from .errors import AISearchIngestError, APIStatusError, NotFoundError, TaskFailedError, TaskTimeoutError
from .protocol import opensearch as proto
from .sources import redact_url_in
from .transport import CallCounter, Transport

__all__ = ["PollPolicy", "TaskRoute", "await_task", "run_task", "task_gone"]

logger = logging.getLogger("aisearch_ingest")


class PollPolicy:
    """When to poll a pending task: where it is likely done, learned per client from the tasks that finished.

    A task's duration is modelled as ``a + b · size`` (bytes sent): each finished task tells that it ended between
    the last poll that answered PENDING and the one that found it done, and a least-squares fit with forgetting
    (weight 0.9 per task) follows those midpoints. The first poll goes just after the predicted end; a task still
    pending then is polled at short, growing intervals (from a tenth of the prediction, ``× factor``, up to
    ``max_interval``). Until anything is learned: ``min_interval``, then ``× factor``. Everything runs under one
    deadline.

    Args:
        min_interval: shortest wait between polls (seconds).
        max_interval: longest wait between polls.
        factor: growth of the interval after each pending answer.
        timeout: overall deadline per task, from its creation.
    """

    #: How far past the predicted end the first poll goes.
    SLACK = 1.08

    def __init__(
        self,
        *,
        min_interval: float = 0.2,
        max_interval: float = 5.0,
        factor: float = 1.6,
        timeout: float = 900.0,
    ) -> None:
        if min_interval <= 0 or max_interval < min_interval or factor < 1.0 or timeout <= 0:
            raise ValueError("need 0 < min_interval <= max_interval, factor >= 1 and timeout > 0")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.factor = factor
        self.timeout = timeout
        self._lock = threading.Lock()
        # Weighted sums of the fit: weight, x, y, x², xy (x in MB).
        self._w = self._sx = self._sy = self._sxx = self._sxy = 0.0
        self._pending_age = 0.0  # the oldest age at which a task was seen PENDING, before any finished

    def __repr__(self) -> str:
        return (
            f"PollPolicy(min_interval={self.min_interval}, max_interval={self.max_interval}, factor={self.factor}, "
            f"timeout={self.timeout})"
        )

    def predict(self, size: int = 0) -> float | None:
        """The expected duration of a task for ``size`` bytes, or None before any task finished."""
        with self._lock:
            w, sx, sy, sxx, sxy = self._w, self._sx, self._sy, self._sxx, self._sxy
        if w <= 0:
            return None
        mean_x, mean_y = sx / w, sy / w
        var = sxx / w - mean_x * mean_x
        if var <= 1e-12 * max(1.0, mean_x * mean_x):
            return max(0.0, mean_y)
        slope = max(0.0, (sxy / w - mean_x * mean_y) / var)  # bigger inputs never take less time
        return max(0.0, mean_y + slope * (size / 1e6 - mean_x))

    def first_delay(self, size: int = 0) -> float:
        """The wait before the first poll of a task of ``size`` bytes."""
        return self.delay(0.0, size, previous=0.0, late=0)

    def delay(self, elapsed: float, size: int, *, previous: float, late: int) -> float:
        """The wait before the next poll.

        Args:
            elapsed: seconds since the task was created.
            size: bytes sent.
            previous: the last wait (0 before the first poll).
            late: PENDING answers already received after the predicted end.
        """
        predicted = self.predict(size)
        if predicted is None:
            wait = self.min_interval if previous <= 0 else previous * self.factor
            with self._lock:
                floor = self._pending_age
            wait = max(wait, floor * self.SLACK - elapsed)  # another task was still pending at that age
        elif late == 0 and elapsed + self.min_interval <= predicted * self.SLACK:
            wait = predicted * self.SLACK - elapsed
        else:
            wait = 0.1 * predicted * self.factor**late
        return min(self.max_interval, max(self.min_interval, wait))

    def observe(self, duration: float, size: int = 0) -> None:
        """Learn that a task of ``size`` bytes took about ``duration`` seconds."""
        x, y = size / 1e6, max(0.0, duration)
        with self._lock:
            k = 0.9
            self._w = k * self._w + 1.0
            self._sx = k * self._sx + x
            self._sy = k * self._sy + y
            self._sxx = k * self._sxx + x * x
            self._sxy = k * self._sxy + x * y

    def observe_task(self, *, last_pending: float | None, done_by: float, size: int = 0) -> float:
        """Learn from a finished task what it told us: it ended after ``last_pending`` (seconds from its creation
        to the last PENDING answer; None: the first poll found it done) and by ``done_by``. Returns the duration
        estimate it learned."""
        # With only an upper bound, "a little before" drifts the prediction down slowly until a poll comes too early.
        estimate = 0.9 * done_by if last_pending is None else (last_pending + done_by) / 2.0
        self.observe(estimate, size)
        return estimate

    def observe_pending(self, age: float) -> None:
        """A task was still PENDING ``age`` seconds after its creation. Before any task has finished, the tasks in
        flight then skip polls they know would be too early."""
        with self._lock:
            self._pending_age = max(self._pending_age, age)


@dataclass(frozen=True)
class TaskRoute:
    """Where one service's tasks are created and polled, and how a status answer is read.

    Attributes:
        create_path: ``POST`` path that creates a task.
        status_path: ``GET`` path of the task status (``?task_id=``).
        read: a status answer's JSON body → :class:`~aisearch_ingest.protocol.opensearch.StatusView`.
    """

    create_path: str
    status_path: str
    read: Callable[[Mapping[str, Any]], proto.StatusView]


@dataclass(frozen=True)
class Finished:
    """A task that ended in ``SUCCESS``: its final status, its id and the request id to report."""

    view: proto.StatusView
    task_id: str
    request_id: str | None


async def run_task(ctx: SourceContext, route: TaskRoute, body: Mapping[str, Any], poll: PollPolicy) -> Finished:
    """Create a task for ``ctx.source`` (or resume the one the journal recorded) and poll it to its end.

    The task id is recorded in the journal as soon as the create call answers; a task that failed or that the
    service no longer knows is forgotten (the next run submits afresh), a task still running when this gives up
    (deadline, lost connection) stays recorded so the next run resumes it. On success the engine stores the result
    and forgets the task in one transaction.

    Raises:
        TaskFailedError: the task ended in another status than ``SUCCESS``, or the create answered no task id.
        TaskTimeoutError: still ``PENDING`` at the deadline.
        APIError: a call failed after its retries.
    """
    source = ctx.source
    recorded = await ctx.journal.recorded()
    if recorded is not None:
        resumed = await _resume(ctx, route, recorded, poll)
        if resumed is not None:
            return resumed
    created = await ctx.transport.request(
        "POST", route.create_path, json_body=body, source=source.origin, counter=ctx.counter, billed=True
    )
    result = created.body.get("result") or {}
    task_id = result.get("task_id") if isinstance(result, dict) else None
    if not task_id:
        raise TaskFailedError(
            f"{source.origin}: the service accepted the task but returned no task_id",
            task_id=None,
            status=None,
            request_id=created.request_id,
            source=source.origin,
        )
    await ctx.journal.record(task_id)
    try:
        return await _poll(ctx, route, task_id, poll)
    except AISearchIngestError as exc:
        if isinstance(exc, TaskFailedError) or task_gone(exc):
            await ctx.journal.forget(task_id)
        raise


async def _poll(ctx: SourceContext, route: TaskRoute, task_id: str, poll: PollPolicy) -> Finished:
    """:func:`await_task` for the source of ``ctx``, with its counter and sleep."""
    source = ctx.source
    return await await_task(
        ctx.transport,
        route,
        task_id,
        poll,
        origin=source.origin,
        size=source.size,
        counter=ctx.counter,
        sleep=ctx.sleep,
    )


async def _resume(ctx: SourceContext, route: TaskRoute, task_id: str, poll: PollPolicy) -> Finished | None:
    """Poll a task recorded by an earlier run; None when it is gone or failed (forgotten: submit afresh)."""
    source = ctx.source
    logger.info("%s: resuming task %s recorded in the result cache", source.origin, task_id)
    try:
        return await _poll(ctx, route, task_id, poll)
    except TaskFailedError as exc:
        logger.warning(
            "%s: recorded task %s failed (%s); submitting afresh",
            source.origin,
            task_id,
            redact_url_in(exc.message, source.url),
        )
    except APIStatusError as exc:
        if not task_gone(exc):
            raise
        logger.info("%s: recorded task %s no longer exists on the service; submitting afresh", source.origin, task_id)
    await ctx.journal.forget(task_id)
    return None


async def await_task(
    transport: Transport,
    route: TaskRoute,
    task_id: str,
    poll: PollPolicy,
    *,
    origin: str,
    size: int = 0,
    counter: CallCounter | None = None,
    sleep: Callable[[float], Any],
) -> Finished:
    """Poll ``task_id`` until it ends: the first poll where :class:`PollPolicy` predicts the end, then short, growing
    intervals, everything under ``poll.timeout`` from now.

    Raises:
        TaskFailedError: a terminal status other than ``SUCCESS``.
        TaskTimeoutError: still ``PENDING`` at the deadline (resume with the client's ``await_task(task_id)``).
    """
    counter = counter if counter is not None else CallCounter()
    started = time.monotonic()
    deadline = started + poll.timeout
    delay = poll.first_delay(size)
    last_pending: float | None = None
    late = 0  # PENDING answers at or after the predicted end
    while True:
        now = time.monotonic()
        if now + delay > deadline:
            # Sleep what is left, poll one last time, then give up.
            delay = max(0.0, deadline - now)
        await sleep(delay)
        asked, waited = time.monotonic(), counter.waited
        response = await transport.request(
            "GET", route.status_path, params={"task_id": task_id}, source=origin, counter=counter
        )
        # When the service saw this poll: after any wait for the rate budget (not when the answer came back, or the
        # learned duration would grow with the queue).
        seen = asked + (counter.waited - waited) - started
        view = route.read(response.body)
        proto.raise_for_status(view, task_id=task_id, source=origin)
        if not view.pending:
            counter.task_time = poll.observe_task(last_pending=last_pending, done_by=seen, size=size)
            return Finished(view, task_id, view.request_id or response.request_id)
        last_pending = seen
        poll.observe_pending(seen)
        elapsed = time.monotonic() - started
        predicted = poll.predict(size)
        if predicted is not None and elapsed >= predicted * poll.SLACK - poll.min_interval:
            late += 1
        if time.monotonic() >= deadline:
            waited_s = time.monotonic() - started
            raise TaskTimeoutError(
                f"{origin}: task {task_id} still PENDING after {waited_s:.1f}s (timeout {poll.timeout:g}s); "
                "resume it with await_task(task_id) or raise the timeout",
                task_id=task_id,
                waited=waited_s,
                source=origin,
            )
        delay = poll.delay(elapsed, size, previous=delay, late=late - 1 if late else 0)


def task_gone(exc: BaseException) -> bool:
    """Whether the service said the task does not exist (unknown or expired task id)."""
    if isinstance(exc, NotFoundError):
        return True
    return isinstance(exc, APIStatusError) and "TaskNotExist" in (exc.code or "")

"""The bridge from blocking code to the async engine: a private event loop on a daemon thread.

The blocking API (``parse``, ``parse_many``, the loaders' ``load``) drives the async engine on this loop, so it never
calls ``asyncio.run()`` over the caller's loop, works inside Jupyter and inside a running event loop, and never needs
``nest_asyncio``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Portal"]

T = TypeVar("T")


class Portal:
    """A private event loop on a daemon thread, started on first use and owned by one service object.

    A daemon thread (not a thread pool, not ``asyncio.run``): a client nobody closed never keeps the interpreter
    from exiting, and the caller's own event loop, if any, is never touched.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._loop is not None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name="aisearch-ingest-loop", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> Future[T]:
        """Schedule ``func(*args)`` on the private loop; cancelling the future cancels the task."""
        loop = self.loop()
        if threading.current_thread() is self._thread:
            raise RuntimeError("the blocking API cannot be called from inside its own event loop; use the async API")
        return asyncio.run_coroutine_threadsafe(func(*args), loop)

    def call(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        future = self.submit(func, *args)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (KeyboardInterrupt) or another interruption of the waiting thread: stop the work too, so an
            # abandoned parse does not go on polling -- or submitting -- in the background.
            future.cancel()
            raise

    def close(self, *, wait: bool = True) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if wait:
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()

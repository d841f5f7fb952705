"""pytest plugin: the local emulator as fixtures, for this project's tests and for users' CI.

Enable it in a ``conftest.py``::

    pytest_plugins = ["aisearch_ingest.testing"]

Fixtures:

* ``aisearch_emulator_session`` -- one :class:`~aisearch_ingest.emulator.Emulator` for the whole session
  (key :data:`EMULATOR_API_KEY`).
* ``aisearch_emulator`` -- per test: the session emulator, reset before and after the test (no QPS limit,
  latency or faults unless the test sets them, no scripted faults, fresh :attr:`~Emulator.stats`). A test
  marked ``@pytest.mark.aisearch_emulator(qps=5, ...)`` gets its own emulator built with those arguments.
* ``aisearch_emulator_env`` -- ``aisearch_emulator`` with ``AISEARCH_ENDPOINT``, ``AISEARCH_API_KEY``,
  ``DASHSCOPE_BASE_URL`` and ``DASHSCOPE_API_KEY`` pointing at it (see :func:`use_emulator_env`).

Outside pytest fixtures, :func:`emulator` is a context manager::

    from aisearch_ingest.testing import emulator

    with emulator(latency=Latency(fixed=0.5)) as emu:
        ...
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from .emulator import Emulator, Faults, Latency
from .ratelimit import reset_budgets

__all__ = [
    "EMULATOR_API_KEY",
    "Emulator",
    "Faults",
    "Latency",
    "aisearch_emulator",
    "aisearch_emulator_env",
    "aisearch_emulator_session",
    "emulator",
    "use_emulator_env",
]

#: The fake key the fixtures' emulators require (and :func:`use_emulator_env` exports).
EMULATOR_API_KEY = "test-key"


@contextlib.contextmanager
def emulator(**kwargs: Any) -> Iterator[Emulator]:
    """Start an :class:`Emulator` for the ``with`` block; ``api_key`` defaults to :data:`EMULATOR_API_KEY`.

    Args:
        **kwargs: arguments of :class:`Emulator` (``qps=``, ``latency=``, ``faults=``, ``seed=``...).

    Yields:
        The running emulator; it is stopped (port freed) when the block ends.
    """
    kwargs.setdefault("api_key", EMULATOR_API_KEY)
    with Emulator(**kwargs) as emu:
        yield emu


def use_emulator_env(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    """Point the package's clients at ``emu`` through the environment, for the current test only.

    Sets ``AISEARCH_ENDPOINT`` and ``DASHSCOPE_BASE_URL`` to the emulator's URL, ``AISEARCH_API_KEY`` and
    ``DASHSCOPE_API_KEY`` to the keys it expects (:data:`EMULATOR_API_KEY` where it accepts any), and adds
    ``127.0.0.1,localhost`` to ``NO_PROXY``/``no_proxy`` so proxy settings cannot intercept local calls.

    Args:
        monkeypatch: the test's ``monkeypatch`` fixture (undone after the test).
        emu: a running emulator.
    """
    monkeypatch.setenv("AISEARCH_ENDPOINT", emu.aisearch_endpoint)
    monkeypatch.setenv("AISEARCH_API_KEY", emu.expected_key("aisearch") or EMULATOR_API_KEY)
    monkeypatch.setenv("DASHSCOPE_BASE_URL", emu.dashscope_base_url)
    monkeypatch.setenv("DASHSCOPE_API_KEY", emu.expected_key("dashscope") or EMULATOR_API_KEY)
    for name in ("NO_PROXY", "no_proxy"):
        current = [h for h in os.environ.get(name, "").split(",") if h.strip()]
        extra = [h for h in ("127.0.0.1", "localhost") if h not in current]
        monkeypatch.setenv(name, ",".join(current + extra))


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``aisearch_emulator`` marker."""
    config.addinivalue_line(
        "markers",
        "aisearch_emulator(**kwargs): give this test its own emulator built with these Emulator arguments",
    )


@pytest.fixture(scope="session")
def aisearch_emulator_session() -> Iterator[Emulator]:
    """One emulator for the whole test session (key :data:`EMULATOR_API_KEY`)."""
    with emulator() as emu:
        yield emu


@pytest.fixture
def aisearch_emulator(request: pytest.FixtureRequest, aisearch_emulator_session: Emulator) -> Iterator[Emulator]:
    """The session emulator with fresh stats and default knobs, or a dedicated one for a marked test."""
    marker = request.node.get_closest_marker("aisearch_emulator")
    if marker is not None and (marker.kwargs or marker.args):
        if marker.args:
            raise pytest.UsageError("@pytest.mark.aisearch_emulator takes keyword arguments only")
        with emulator(**marker.kwargs) as emu:
            yield emu
        return
    emu = aisearch_emulator_session
    emu.reset()
    reset_budgets()  # what clients learned about the emulator's old QPS limit goes with it
    try:
        yield emu
    finally:
        emu.reset()


@pytest.fixture
def aisearch_emulator_env(aisearch_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """``aisearch_emulator`` with the four environment variables pointing at it."""
    use_emulator_env(monkeypatch, aisearch_emulator)
    return aisearch_emulator

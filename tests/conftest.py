"""Shared test setup: the emulator's pytest plugin (fixtures `aisearch_emulator`, `aisearch_emulator_session`, ...)
and `emu`, the session emulator reset around each module (modules that need their own define their own `emu`).

The default result cache (``cache=True``, the command line) never is the user's: ``AISEARCH_INGEST_CACHE`` points
into a temporary directory for the whole run (inherited by subprocesses, which keep it), and each test gets a file of
its own, so no test sees another's cached results."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisearch_ingest.cache import CACHE_ENV
from aisearch_ingest.emulator import Emulator
from aisearch_ingest.ratelimit import reset_budgets

_CACHE_ROOT = Path(tempfile.mkdtemp(prefix="aisearch-ingest-test-cache-"))
atexit.register(shutil.rmtree, _CACHE_ROOT, ignore_errors=True)
os.environ[CACHE_ENV] = str(_CACHE_ROOT / "session" / "results.sqlite")  # module and session fixtures
_TEST_NUMBER = itertools.count()

pytest_plugins = ["aisearch_ingest.testing"]


@pytest.fixture(scope="module")
def emu(aisearch_emulator_session: Emulator) -> Iterator[Emulator]:
    """The session's emulator (its parse caches warm across modules), default knobs before and after."""
    aisearch_emulator_session.reset()
    yield aisearch_emulator_session
    aisearch_emulator_session.reset()


@pytest.fixture(autouse=True)
def _fresh_rate_budgets() -> None:
    """Each test's new clients start at their ceilings: a test that provoked 429s must not slow the next ones."""
    reset_budgets()


@pytest.fixture(autouse=True)
def _private_default_cache() -> Iterator[Path]:
    """This test's default cache file (not created until something opens it)."""
    before = os.environ.get(CACHE_ENV)
    path = _CACHE_ROOT / f"test-{next(_TEST_NUMBER)}" / "results.sqlite"
    os.environ[CACHE_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before

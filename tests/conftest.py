"""Shared test setup: the emulator's pytest plugin (fixtures `aisearch_emulator`, `aisearch_emulator_session`, ...)
and `emu`, the session emulator reset around each module (modules that need their own define their own `emu`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aisearch_ingest.emulator import Emulator
from aisearch_ingest.ratelimit import reset_budgets

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

"""Fixtures for the public API's tests: each coroutine runs, bounded in time, on asyncio and on
uvloop (the API must work on the loop its user picked)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

BOUND = 10.0  # seconds for any one coroutine; pytest-timeout (60 s) is the backstop


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine on a fresh loop of each kind, within :data:`BOUND` seconds."""
    factory = pytest.importorskip("uvloop").new_event_loop if request.param == "uvloop" else None

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(BOUND):
                return await coro

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

    return run

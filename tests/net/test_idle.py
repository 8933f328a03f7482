"""Tests for netkit.net.idle: the one idle timer of tcp-echo connections and relays."""

from __future__ import annotations

import asyncio
import time

from netkit.net.idle import IdleTimer
from tests.net.conftest import Runner

TIMEOUT = 0.2


def test_fires_once_after_the_timeout(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: asyncio.Future[float] = loop.create_future()
        start = time.perf_counter()
        IdleTimer(TIMEOUT, lambda: fired.set_result(time.perf_counter() - start))
        waited = await fired
        assert TIMEOUT - 0.01 <= waited < TIMEOUT + 1, waited

    run(main())


def test_activity_postpones_it(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: asyncio.Future[float] = loop.create_future()
        timer = IdleTimer(TIMEOUT, lambda: fired.set_result(time.perf_counter()))
        for _ in range(6):  # active for 6 x TIMEOUT/2: well past one timeout
            await asyncio.sleep(TIMEOUT / 2)
            assert not fired.done()
            timer.touch()
        last_touch = time.perf_counter()
        silent_for = await fired - last_touch
        assert TIMEOUT - 0.01 <= silent_for < TIMEOUT + 1, silent_for

    run(main())


def test_cancel_stops_it(run: Runner[None]) -> None:
    async def main() -> None:
        calls: list[None] = []
        timer = IdleTimer(0.05, lambda: calls.append(None))
        timer.cancel()
        fired = asyncio.get_running_loop().create_future()
        IdleTimer(0.1, lambda: fired.set_result(None))  # a later timer: the first had its turn
        await fired
        assert calls == []

    run(main())


def test_silence_counts_from_since(run: Runner[None]) -> None:
    # A relay counts idle time from its creation, not from when its watcher started.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: asyncio.Future[float] = loop.create_future()
        start = time.perf_counter()
        IdleTimer(
            1.0, lambda: fired.set_result(time.perf_counter() - start), since=loop.time() - 0.9
        )
        assert await fired < 0.9

    run(main())

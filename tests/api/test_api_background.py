"""netkit.api.background: an event loop in a thread, driven from synchronous code."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from netkit.api.background import BackgroundLoop
from netkit.api.proxy import load_balancer
from netkit.errors import ConfigError, NetkitError, OperationTimeout


@pytest.fixture
def loop() -> Iterator[BackgroundLoop]:
    with BackgroundLoop(name="test-loop") as running:
        yield running


def test_run_and_call_execute_on_the_loop_thread(loop: BackgroundLoop) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert loop.run(where()) == "test-loop"
    assert loop.call(lambda x: (x, threading.current_thread().name), 7) == (7, "test-loop")


def test_an_exception_on_the_loop_reaches_the_caller(loop: BackgroundLoop) -> None:
    def fail() -> None:
        raise ConfigError("bad value")

    with pytest.raises(ConfigError, match="bad value"):
        loop.call(fail)
    assert loop.call(lambda: "still running") == "still running"


def test_a_call_that_does_not_finish_times_out_and_is_cancelled(loop: BackgroundLoop) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(OperationTimeout):
        loop.run(forever(), timeout=0.05)
    assert cancelled.wait(5)


def test_enter_holds_a_context_manager_until_exit(loop: BackgroundLoop) -> None:
    steps: list[str] = []

    @asynccontextmanager
    async def managed() -> AsyncIterator[str]:
        steps.append("enter")
        try:
            yield threading.current_thread().name
        finally:
            steps.append("exit")

    held = loop.enter(managed())
    assert held.value == "test-loop"
    assert steps == ["enter"]
    held.exit()
    assert steps == ["enter", "exit"]
    held.exit()  # twice is harmless
    assert steps == ["enter", "exit"]


def test_a_context_manager_that_fails_to_enter_raises_in_the_caller(
    loop: BackgroundLoop,
) -> None:
    with pytest.raises(ConfigError, match="fastest"):
        loop.enter(load_balancer(["127.0.0.1:1"], policy="fastest"))


def test_what_exiting_raises_reaches_the_caller(loop: BackgroundLoop) -> None:
    @asynccontextmanager
    async def breaks_on_exit() -> AsyncIterator[None]:
        yield
        raise NetkitError("could not stop")

    held = loop.enter(breaks_on_exit())
    with pytest.raises(NetkitError, match="could not stop"):
        held.exit()


def test_stopping_the_loop_leaves_every_held_manager() -> None:
    background = BackgroundLoop()
    background.start()
    held = background.enter(load_balancer(["127.0.0.1:1"], check_interval=60))
    host, port = held.value.host, held.value.port
    background.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), timeout=5):
        pass
    with pytest.raises(NetkitError, match="not running"):
        background.call(lambda: None)

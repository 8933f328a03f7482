"""netkit's servers for synchronous code: an event loop in a background thread.

A synchronous test (or any program without an event loop) starts a :class:`BackgroundLoop`,
enters netkit's async context managers on it (:meth:`BackgroundLoop.enter`) and drives them
through synchronous handles such as :class:`SyncProxy`, whose methods return once the change
is in effect on the loop. The pytest plugin (:mod:`netkit.pytest_plugin`) is built on this.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

from netkit.api.proxy import Proxy, RelayTotals, Target
from netkit.api.servers import Listening
from netkit.core.faults import Fault
from netkit.errors import NetkitError, OperationTimeout
from netkit.net import runtime

T = TypeVar("T")

TIMEOUT = 30.0
"""Seconds a synchronous call waits for the loop before giving up."""


class BackgroundLoop:
    """An event loop (uvloop when installed) running in a daemon thread until :meth:`stop`.

    Use as ``with BackgroundLoop() as loop:`` or with :meth:`start` and :meth:`stop`.
    """

    def __init__(self, *, name: str = "netkit-loop") -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop.

        Raises:
            NetkitError: the loop is not running.
        """
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            raise NetkitError("the background event loop is not running")
        return self._loop

    def start(self, timeout: float = TIMEOUT) -> None:
        """Start the thread and wait until its loop runs."""
        ready = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            ready.set()
            await self._stop.wait()

        self._thread = threading.Thread(
            target=runtime.run, args=(main,), name=self.name, daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise OperationTimeout(f"the background event loop did not start in {timeout:g}s")

    def stop(self, timeout: float = TIMEOUT) -> None:
        """Stop the loop (tasks still running are cancelled) and wait for the thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = self._loop = None

    def __enter__(self) -> BackgroundLoop:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        """Run ``coro`` on the loop and return its result (its exception propagates).

        Raises:
            OperationTimeout: it did not finish within ``timeout`` seconds (it is cancelled).
            NetkitError: the loop is not running.
        """
        try:
            loop = self.loop
        except NetkitError:
            coro.close()  # never to run: say so without a "never awaited" warning
            raise
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise OperationTimeout(f"the event loop did not answer in {timeout:g}s") from None

    def call(self, function: Callable[..., T], *args: Any, timeout: float = TIMEOUT) -> T:
        """Call ``function(*args)`` on the loop's thread and return its result."""

        async def call() -> T:
            return function(*args)

        return self.run(call(), timeout)

    def enter(
        self, manager: AbstractAsyncContextManager[T], timeout: float = TIMEOUT
    ) -> Entered[T]:
        """Enter ``manager`` on the loop; the block runs until :meth:`Entered.exit`.

        The manager is entered and exited by one task, as ``async with`` does.

        Raises:
            Whatever entering raises; OperationTimeout after ``timeout`` seconds.
        """
        return Entered(self, manager, timeout)


class Entered(Generic[T]):
    """An async context manager entered on a :class:`BackgroundLoop`: :attr:`value` is what
    it yielded; :meth:`exit` leaves it."""

    value: T

    def __init__(
        self, loop: BackgroundLoop, manager: AbstractAsyncContextManager[T], timeout: float
    ) -> None:
        self._loop = loop
        self._release = asyncio.Event()
        entered: concurrent.futures.Future[T] = concurrent.futures.Future()

        async def hold() -> None:
            async with manager as value:
                entered.set_result(value)
                await self._release.wait()

        self._done = asyncio.run_coroutine_threadsafe(hold(), loop.loop)
        waiting: list[concurrent.futures.Future[Any]] = [entered, self._done]
        concurrent.futures.wait(waiting, timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        if entered.done():
            self.value = entered.result()
            return
        if self._done.done():
            self._done.result()  # entering failed: raise why
        self._done.cancel()
        raise OperationTimeout(f"{manager!r} was not entered in {timeout:g}s")

    def exit(self, timeout: float = TIMEOUT) -> None:
        """Leave the context manager; what leaving raises propagates.

        Raises:
            OperationTimeout: leaving took more than ``timeout`` seconds.
        """
        if self._done.done():
            self._done.result()
            return
        self._loop.loop.call_soon_threadsafe(self._release.set)
        try:
            self._done.result(timeout)
        except concurrent.futures.TimeoutError:
            self._done.cancel()
            raise OperationTimeout(f"leaving took more than {timeout:g}s") from None


class SyncProxy(Listening):
    """A :class:`~netkit.api.proxy.Proxy` on a :class:`BackgroundLoop`, driven synchronously.

    It says where the proxy listens as every server handle does (``address``, ``host``,
    ``port``, ``path``, ``ca_file``: see :class:`~netkit.api.servers.Listening`). Every method
    returns once the change is in effect: after ``add(Latency(100))`` returns, the next byte
    through any connection is delayed; after ``cut()``, every relayed connection is closed and
    connecting is refused; after ``restore()``, the proxy accepts again on the same address.
    """

    def __init__(self, loop: BackgroundLoop, proxy: Proxy) -> None:
        super().__init__(proxy.address, tls=proxy.tls, ca_file=proxy.ca_file)
        self._loop = loop
        self.proxy = proxy

    @property
    def upstream(self) -> str:
        """Where new connections are relayed to."""
        return self._loop.call(lambda: self.proxy.upstream)

    def set_upstream(self, upstream: Target) -> None:
        """Relay new connections to ``upstream`` (see :meth:`Proxy.set_upstream`)."""
        self._loop.call(self.proxy.set_upstream, upstream)

    @property
    def faults(self) -> list[tuple[str, Fault]]:
        """The active faults, in the order they were added, with their names."""
        return self._loop.call(lambda: self.proxy.faults)

    @property
    def totals(self) -> RelayTotals:
        """The relay totals now (bytes of open connections included)."""
        return self._loop.call(lambda: self.proxy.totals)

    @property
    def enabled(self) -> bool:
        """False between :meth:`cut` and :meth:`restore`."""
        return self._loop.call(lambda: self.proxy.enabled)

    def add(self, fault: Fault, name: str | None = None) -> str:
        """Add ``fault`` (see :meth:`Proxy.add`); returns its name."""
        return self._loop.call(self.proxy.add, fault, name)

    def replace(self, name: str, fault: Fault) -> None:
        """Put ``fault`` in the place of the fault called ``name`` (see :meth:`Proxy.replace`)."""
        self._loop.call(self.proxy.replace, name, fault)

    def remove(self, name: str) -> Fault:
        """Remove the fault called ``name`` and return it."""
        return self._loop.call(self.proxy.remove, name)

    def clear(self) -> None:
        """Remove every fault."""
        self._loop.call(self.proxy.clear)

    def cut(self) -> None:
        """Close every relayed connection and refuse new ones until :meth:`restore`."""
        self._loop.run(self.proxy.cut())

    def restore(self) -> None:
        """Accept again on the same address."""
        self._loop.run(self.proxy.restore())

    def __repr__(self) -> str:
        return f"<SyncProxy {self.address} -> {self.upstream}>"

"""Active health checks for load-balancer backends.

Every ``interval`` seconds, each backend gets one check: a TCP (or Unix) connect within
``timeout``, optionally followed by a send/expect probe
(:class:`netkit.core.balance.health.CheckProbe`). The result goes into the backend's rise/fall
machine (:class:`netkit.core.balance.state.BackendState`); a change of state comes back as a
:class:`netkit.core.balance.health.HealthEvent` for the caller to
print. One asyncio task per backend: backends are few, and a slow one cannot delay the others.

Times given to the core are ``loop.time()``, so the caller should use the same clock for
``BackendPool.choose(now=...)`` (slow start compares the two).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.balance.health import CheckProbe, HealthEvent
from netkit.core.balance.state import AdminState, BackendState
from netkit.errors import (
    CheckFailed,
    ConfigError,
    ConnectionLost,
    LocalError,
    NetkitError,
    Setting,
)
from netkit.net.connect import open_stream
from netkit.net.protocols import StreamProtocol

DEFAULT_INTERVAL = 2.0  # HAProxy's ``inter 2s``
CLOSE_WAIT = 1.0  # how long a finished check waits for its socket to close


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one active check.

    Attributes:
        backend: the backend's name (its endpoint).
        ok: the check passed.
        detail: one line: ``connected in 0.2 ms``, ``connection refused by 127.0.0.1:8001``...
        seconds: how long the check took.
        skipped: the check could not run here (out of descriptors or memory): no verdict on
            the backend either way.
    """

    backend: str
    ok: bool
    detail: str
    seconds: float
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The fields for a JSON event."""
        return {
            "backend": self.backend,
            "ok": self.ok,
            "detail": self.detail,
            "ms": round(self.seconds * 1000, 3),
            **({"skipped": True} if self.skipped else {}),
        }


class _ProbeConnection(StreamProtocol):
    """Sends the probe's bytes and resolves ``outcome`` when the reply matches (or cannot)."""

    # Our one small write never comes from the receive buffer; keep reading while it is queued.
    pause_reading_on_backpressure = False

    def __init__(self, probe: CheckProbe, target: str) -> None:
        super().__init__(max_buffer=probe.max_read)
        self.probe = probe
        self.target = target
        self.outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_connect(self) -> None:
        if self.probe.send:
            self.write(self.probe.send)
        if not self.probe.reads:
            self.outcome.set_result(
                f"sent {len(self.probe.send)} bytes" if self.probe.send else "connected"
            )

    def _got(self) -> str:
        data = bytes(self.rbuf.view(48))  # a copy of the start, for the message only
        return f"got {data!r}{'...' if len(self.rbuf) > 48 else ''}" if data else "got nothing"

    def data_ready(self) -> None:
        if self.outcome.done():
            self.rbuf.consume(len(self.rbuf))
            return
        view = self.rbuf.view()
        if self.probe.matches(view):
            self.outcome.set_result(f"reply matched {self.probe.describe()}")
        elif len(view) >= self.probe.max_read:
            self.outcome.set_exception(
                CheckFailed(
                    f"no match for {self.probe.describe()} in the first {self.probe.max_read} "
                    f"bytes from {self.target} ({self._got()})"
                )
            )

    def on_eof(self) -> bool | None:
        if not self.outcome.done():
            self.outcome.set_exception(
                ConnectionLost(
                    f"{self.target} closed the connection without a reply matching "
                    f"{self.probe.describe()} ({self._got()})"
                )
            )
        return None

    def on_close(self, exc: Exception | None) -> None:
        if not self.outcome.done():
            self.outcome.set_exception(
                self.error or ConnectionLost(f"connection to {self.target} was reset")
            )

    def no_reply(self, timeout: float) -> str:
        """The message for a reply that did not come in time."""
        return (
            f"no reply matching {self.probe.describe()} from {self.target} within "
            f"{timeout:g}s ({self._got()})"
        )


async def run_check(
    endpoint: TCPEndpoint | UnixEndpoint,
    *,
    timeout: float,
    probe: CheckProbe = CheckProbe(),
) -> CheckResult:
    """Check one backend once: connect, then the probe, all within ``timeout`` seconds.

    Never raises for a failed check: the failure is the result's ``detail``, in the words of
    :func:`netkit.net.connect.translate_connect_error` (``connection refused by 127.0.0.1:8001``).
    """
    target = str(endpoint)
    start = time.perf_counter()  # durations: not loop.time(), 1 ms under uvloop
    conn: _ProbeConnection | None = None
    ok = skipped = False
    try:
        async with asyncio.timeout(timeout):
            protocol = await open_stream(
                endpoint, lambda: _ProbeConnection(probe, target), timeout=timeout
            )
            assert isinstance(protocol, _ProbeConnection)
            conn = protocol
            detail = await conn.outcome
        ok = True
    except TimeoutError:
        detail = conn.no_reply(timeout) if conn else f"timed out connecting to {target}"
    except LocalError as exc:
        detail, skipped = str(exc), True  # our limit, not the backend's failure
    except NetkitError as exc:
        detail = str(exc)
    finally:
        if conn is not None:
            # A passed check says goodbye politely; a failed one may be stuck: reset it.
            if ok:
                conn.close()
            else:
                conn.abort()
    seconds = time.perf_counter() - start
    if conn is not None:
        await asyncio.wait([conn.closed], timeout=CLOSE_WAIT)
    if ok:
        detail = f"{detail} in {seconds * 1000:.1f} ms"
    return CheckResult(target, ok, detail, seconds, skipped)


OnEvent = Callable[[HealthEvent], None]
OnCheck = Callable[[CheckResult], None]


class HealthChecker:
    """Runs active checks on every backend until stopped.

    Use as ``async with HealthChecker(pool.states, ...) as checker:`` (or ``start()`` /
    ``await stop()``), or run ``await checker.run()`` in a task of your own. The first check of
    each backend runs at once, then one every ``interval`` seconds (a check that overruns is
    not repeated to catch up).

    Args:
        states: the backends to watch (``BackendPool.states``).
        interval: seconds between the starts of two checks of one backend.
        timeout: seconds a check may take, connect and probe together (default: ``interval``,
            as HAProxy uses ``inter`` when no ``timeout check`` is set).
        probe: what to do after connecting (nothing by default).
        on_event: called with every state change (up/down).
        on_check: called with every check's result.

    Raises:
        ConfigError: a non-positive interval or timeout.
    """

    def __init__(
        self,
        states: Sequence[BackendState],
        *,
        interval: float = DEFAULT_INTERVAL,
        timeout: float | None = None,
        probe: CheckProbe = CheckProbe(),
        on_event: OnEvent | None = None,
        on_check: OnCheck | None = None,
    ) -> None:
        if interval <= 0:
            raise ConfigError((Setting("check_interval"), f" must be positive (got {interval:g}s)"))
        timeout = interval if timeout is None else timeout
        if timeout <= 0:
            raise ConfigError((Setting("check_timeout"), f" must be positive (got {timeout:g}s)"))
        self.states = list(states)
        self.interval = interval
        self.timeout = timeout
        self.probe = probe
        self.on_event = on_event
        self.on_check = on_check
        self.checks = 0
        self._task: asyncio.Task[None] | None = None
        self._added: set[asyncio.Task[None]] = set()

    async def check(self, state: BackendState) -> HealthEvent | None:
        """Check one backend now and feed the result to its health machine."""
        result = await run_check(state.backend.endpoint, timeout=self.timeout, probe=self.probe)
        now = asyncio.get_running_loop().time()
        self.checks += 1
        state.check_timed(result.ok, result.seconds)
        event: HealthEvent | None
        if result.skipped:
            state.check_skipped(result.detail)
            event = None
        elif result.ok:
            event = state.check_passed(now, result.detail)
        else:
            event = state.check_failed(result.detail, now)
        if self.on_check is not None:
            self.on_check(result)
        if event is not None and self.on_event is not None:
            self.on_event(event)
        return event

    async def check_all(self) -> list[HealthEvent]:
        """Check every backend once, concurrently; returns the state changes."""
        events = await asyncio.gather(*(self.check(s) for s in self.states))
        return [e for e in events if e is not None]

    async def _watch(self, state: BackendState) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not state.removed:  # a backend in maintenance is not checked (HAProxy's maint)
            if state.admin is not AdminState.MAINT:
                await self.check(state)
            now = loop.time()
            due = max(due + self.interval, now)
            await asyncio.sleep(due - now)

    async def run(self) -> None:
        """Check every backend forever (until cancelled).

        Raises:
            Whatever a callback raised: the other checks stop too.
        """
        tasks = [asyncio.create_task(self._watch(s), name=f"check {s.name}") for s in self.states]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def add(self, state: BackendState) -> None:
        """Check ``state`` too from now on (a backend added while running); a removed
        backend's checks end by themselves."""
        self.states.append(state)
        if self._task is not None:
            task = asyncio.create_task(self._watch(state), name=f"check {state.name}")
            self._added.add(task)
            task.add_done_callback(self._added.discard)

    def start(self) -> None:
        """Start checking in the background (call from inside the event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="health checks")

    async def stop(self) -> None:
        """Stop every check and wait until their sockets are closed.

        Raises:
            Whatever a callback raised while the checks ran.
        """
        task, self._task = self._task, None
        if task is None:
            return
        for added in list(self._added):
            added.cancel()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves

    async def __aenter__(self) -> HealthChecker:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

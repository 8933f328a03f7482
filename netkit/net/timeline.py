"""The driver of a fault timeline: applies its steps to a relay's faults on time.

:class:`TimelineRun` keeps time for a :class:`~netkit.core.timeline.Schedule` (what is due
when, and what it changes) on a running relay, TCP (:class:`~netkit.net.relay.RelayServer`)
or UDP (:class:`~netkit.net.udp_relay.UDPRelayServer`): both keep their faults in a
:class:`~netkit.core.fault_set.FaultSet` that applies each change to live connections and
flows. Time is measured with :func:`time.perf_counter` (uvloop's loop clock has millisecond
steps); a timer that fires early is armed again for the rest. Each step is reported through
the server's event hook (``timeline_step``, ``timeline_repeat``, ``timeline_end``), with the
time it was due and the time it was applied, in seconds since the run began.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

from netkit.core.timeline import Schedule, TimedFault, Timeline
from netkit.net.relay import RelayServer
from netkit.net.server import Server
from netkit.net.udp_relay import UDPRelayServer

Relay = RelayServer | UDPRelayServer
"""What a timeline runs on: a TCP (or Unix, TLS) relay, or a UDP relay."""


class TimelineRun:
    """A timeline (and timed faults) running on one relay's faults.

    Args:
        server: the relay whose faults change.
        timeline: the steps, or None (timed faults alone).
        timed: faults with ``for=`` / ``after=`` bounds.

    Raises:
        ConfigError: a step has a fault that does not apply to the relay's transport.
    """

    def __init__(
        self,
        server: Relay,
        timeline: Timeline | None = None,
        timed: Sequence[TimedFault] = (),
    ) -> None:
        if timeline is not None:
            timeline.check("udp" if isinstance(server, UDPRelayServer) else "tcp")
        self.server = server
        self.schedule = Schedule(server.faults, timeline, timed)
        self._task: asyncio.Task[None] | None = None
        self._began = 0.0

    def start(self) -> None:
        """Apply what is due at once (before this returns), and the rest on time."""
        self._began = time.perf_counter()
        self._apply()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def elapsed(self) -> float:
        """Seconds since :meth:`start`."""
        return time.perf_counter() - self._began

    @property
    def running(self) -> bool:
        """True from :meth:`start` until nothing more is due or the run is stopped."""
        return self._task is not None and not self._task.done()

    @property
    def done(self) -> bool:
        """True once nothing more is due (a timeline that repeats forever never is)."""
        return self.schedule.next_at() is None

    async def wait(self) -> None:
        """Return once nothing more is due (or the run was stopped)."""
        if self._task is not None:
            # asyncio.wait neither cancels the run when the waiter is cancelled, nor hides the
            # waiter's own cancellation (as suppressing CancelledError around it would).
            await asyncio.wait([self._task])
            if not self._task.cancelled() and (error := self._task.exception()) is not None:
                raise error

    async def stop(self) -> None:
        """Stop applying steps; the faults stay as they are now."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    def _apply(self) -> None:
        for event, fields in self.schedule.advance(self.elapsed):
            self.server.emit(event, fields)

    async def _run(self) -> None:
        while (at := self.schedule.next_at()) is not None:
            wait = at - self.elapsed
            if wait > 0:
                # The loop's timers may fire up to a millisecond early (uvloop): if so,
                # advance() finds nothing due and the next turn waits for the rest.
                await asyncio.sleep(wait)
            self._apply()


@contextlib.asynccontextmanager
async def timeline_running(
    server: Relay,
    timeline: Timeline | None = None,
    timed: Sequence[TimedFault] = (),
    *,
    soon: bool = False,
) -> AsyncIterator[TimelineRun | None]:
    """Run a timeline on ``server`` for the duration of the block (None when there is
    nothing to run); stopped when the block ends.

    Args:
        soon: start at the loop's next turn rather than at once: a command enters the block
            before its server announces itself, and the ``listening`` event comes first. The
            run still starts before the server's first accept (the loop runs callbacks queued
            before it polls for I/O).
    """
    if timeline is None and not timed:
        yield None
        return
    run = TimelineRun(server, timeline, timed)
    later = asyncio.get_running_loop().call_soon(run.start) if soon else None
    if later is None:
        run.start()
    try:
        yield run
    finally:
        if later is not None:
            later.cancel()
        await run.stop()


def companion(
    timeline: Timeline | None, timed: Sequence[TimedFault] = ()
) -> Callable[[Server], contextlib.AbstractAsyncContextManager[TimelineRun | None]] | None:
    """What runs beside a command's relay for ``--timeline`` and the flags' ``for=`` /
    ``after=`` (see :func:`~netkit.commands.serving.run_server`); None when there is neither."""
    if timeline is None and not timed:
        return None

    def beside(server: Server) -> contextlib.AbstractAsyncContextManager[TimelineRun | None]:
        assert isinstance(server, RelayServer | UDPRelayServer)
        return timeline_running(server, timeline, timed, soon=True)

    return beside

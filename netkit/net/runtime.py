"""Running on the chosen event loop (:mod:`netkit.net.loop_choice`) and shutdown signals.

:func:`run_until_signal` is the one place that installs the stop-signal handlers: every
server and every command that runs until Ctrl-C or SIGTERM enters it.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from netkit.net.loop_choice import loop_name

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop_name() == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
"""Signals that stop a netkit process gracefully (drain, then a summary). SIGUSR1 is HAProxy's
soft-stop signal; SIGHUP drains as SIGTERM does rather than kill the process with every
connection in it (its default action), except where the process reloads on it
(:func:`run_until_signal`'s ``on_reload``: ``lb``)."""


def run(main: Callable[[], Coroutine[Any, Any, T]], *, freeze: bool = True) -> T:
    """Run ``main()`` to completion on the chosen loop.

    Ctrl-C cancels ``main`` and surfaces as KeyboardInterrupt, which cli.py turns into exit 130.
    ``freeze=False`` leaves the cyclic collector alone: for a loop run inside a process that
    netkit does not own (a Dask worker).
    """
    # What is imported and built by now lives as long as the process: out of the cyclic
    # collector's sight (gc.freeze), a full collection no longer walks it. With netkit's
    # imports (typer, rich, ...) one full collection took 11.7 ms and stalled every
    # connection with it (a 100 ms latency fault measured 105-107 ms at p99); frozen, it
    # takes 0.3-0.5 ms (p99 101.7-101.8 ms). Forked workers share the frozen pages too.
    if freeze:
        gc.freeze()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main())


@dataclass
class ShutdownSignal:
    """What SIGINT/SIGTERM (and SIGHUP, SIGUSR1: see :data:`STOP_SIGNALS`) asked for, as
    events a server can await; :func:`run_until_signal` sets them.

    The first signal sets :attr:`requested` (drain gracefully); a second one sets :attr:`forced`
    (stop now). :attr:`signum` says which signal came first.
    """

    requested: asyncio.Event = field(default_factory=asyncio.Event)
    forced: asyncio.Event = field(default_factory=asyncio.Event)
    signum: int | None = None

    def received(self, sig: int) -> None:
        """A stop signal arrived (the handler :func:`run_until_signal` installs)."""
        if self.requested.is_set():
            self.forced.set()
        else:
            self.signum = sig
            self.requested.set()

    @property
    def interrupted(self) -> bool:
        """True when the shutdown came from SIGINT (exit 130 by convention)."""
        return self.signum == signal.SIGINT


@asynccontextmanager
async def run_until_signal(
    on_reload: Callable[[], None] | None = None,
) -> AsyncIterator[ShutdownSignal]:
    """``async with run_until_signal() as shutdown:`` handles the stop signals inside the block.

    The handlers are installed on the running loop on entry and removed on exit, whatever
    happens in between; the block awaits ``shutdown.requested`` (or passes it on as a stop
    event) and may await ``shutdown.forced`` while it drains. With ``on_reload``, SIGHUP
    calls it instead of stopping (HAProxy reloads on SIGHUP).
    """
    shutdown = ShutdownSignal()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        if sig == signal.SIGHUP and on_reload is not None:
            loop.add_signal_handler(sig, on_reload)
        else:
            loop.add_signal_handler(sig, shutdown.received, sig)
    try:
        yield shutdown
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)

"""Changing a running relay's faults: the methods a TCP proxy's and a UDP proxy's handles share.

Both relays keep their faults in a :class:`~netkit.core.fault_set.FaultSet` (``server.faults``);
a change applies to the open connections or flows from that moment, and to new ones. A
:class:`~netkit.core.timeline.Timeline` makes the changes on time (:meth:`FaultControls.run_timeline`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TypeVar

from netkit.core.fault_set import FaultSet
from netkit.core.faults import Fault
from netkit.core.timeline import Repeat, TimedFault, Timeline
from netkit.net.timeline import Relay, TimelineRun


class FaultControls(ABC):
    """The faults of a running relay, changeable while it runs (toxiproxy's toxics).

    A relay refuses a fault of the other transport (a datagram fault on a TCP proxy, a stream
    fault other than latency on a UDP proxy) with a :class:`~netkit.errors.ConfigError`.
    """

    @property
    @abstractmethod
    def fault_set(self) -> FaultSet:
        """The relay's own fault set (internal: change faults through the methods)."""

    @property
    @abstractmethod
    def relay(self) -> Relay:
        """The running relay (internal)."""

    @property
    def faults(self) -> list[tuple[str, Fault]]:
        """The active faults, in the order they were added, with their names."""
        return list(self.fault_set)

    def add(self, fault: Fault, name: str | None = None) -> str:
        """Add ``fault``; returns its name (toxiproxy's default naming: ``latency_downstream``).

        Raises:
            FaultExists: a fault by that name is active.
            ConfigError: a fault this relay's transport does not take.
        """
        return self.fault_set.add(fault, name)

    def replace(self, name: str, fault: Fault) -> None:
        """Put ``fault`` in the place of the fault called ``name``.

        Raises:
            NoSuchFault: no fault by that name.
            ConfigError: a fault this relay's transport does not take.
        """
        self.fault_set.replace(name, fault)

    def remove(self, name: str) -> Fault:
        """Remove the fault called ``name`` and return it.

        Raises:
            NoSuchFault: no fault by that name.
        """
        return self.fault_set.remove(name)

    def clear(self) -> None:
        """Remove every fault: from now on data passes untouched."""
        self.fault_set.clear()

    def run_timeline(
        self,
        timeline: Timeline | str,
        *,
        repeat: Repeat | None = None,
        timed: Sequence[TimedFault] = (),
    ) -> TimelineRun:
        """Start ``timeline`` now: each step changes the faults at its offset, reported as a
        ``timeline_step`` event (then ``timeline_repeat``, ``timeline_end``). Call it inside
        the ``async with`` block; the run stops when the block ends (or at ``await
        run.stop()``), and ``await run.wait()`` returns once it is over.

        ``timeline`` is a :class:`~netkit.core.timeline.Timeline` or its text
        (``"0s latency=50ms; 10s loss=5%; 20s clear"``); ``repeat`` (a count of further
        cycles, or ``"forever"``) overrides the timeline's own. The timeline only changes the
        faults it sets itself (named ``timeline_...``); ``timed`` adds faults with ``for=`` /
        ``after=`` bounds.

        Raises:
            ConfigError: a step that does not parse, or a fault this relay does not take
                (naming the step).
        """
        if isinstance(timeline, str):
            timeline = Timeline.parse(timeline, repeat=repeat or 0)
        elif repeat is not None:
            timeline = replace(timeline, repeat=repeat)
        run = TimelineRun(self.relay, timeline, timed)
        run.start()
        self._timelines().append(run)
        return run

    async def stop_timelines(self) -> None:
        """Stop every timeline this handle started (the faults stay as they are)."""
        runs = self._timelines()
        while runs:
            await runs.pop().stop()

    def _timelines(self) -> list[TimelineRun]:
        runs: list[TimelineRun] | None = self.__dict__.get("_timeline_runs")
        if runs is None:
            runs = self.__dict__["_timeline_runs"] = []
        return runs


Handle = TypeVar("Handle", bound=FaultControls)


@asynccontextmanager
async def timelines(handle: Handle, timeline: Timeline | str | None) -> AsyncIterator[Handle]:
    """``handle`` for the block, running ``timeline`` from its start (when given); every
    timeline the handle started is stopped when the block ends."""
    try:
        if timeline is not None:
            handle.run_timeline(timeline)
        yield handle
    finally:
        await handle.stop_timelines()

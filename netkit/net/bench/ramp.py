"""Ramping connections of ``netkit bench --stages "10s:50, 20s:100"``: :class:`ConnectionRamp`
opens and retires one worker's connection slots as the schedule's wanted count changes.

Slots open in turn across workers (slot ``j`` of worker ``w`` of ``W`` is the run's
``j*W + w``-th to open, the last to close; see ``LoadPlan.rank_offset``), so every worker
carries its share at every moment. A retired connection sends nothing more, closes once its requests are answered (no
error) and its slot waits until the schedule wants it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from netkit.core.bench.plan import LoadPlan
from netkit.core.bench.stages import Stages
from netkit.net.bench.engine import RequestEngine, Run, Slot

perf_ns = time.perf_counter_ns


class ConnectionRamp:
    """Drives the ``wanted`` flag of one worker's slots from a connection schedule.

    Args:
        plan: this worker's plan (its ``stages`` ramp connections).
        stages: the schedule (``plan.stages``).
        slots: the worker's slots, in order.
        run: the worker's run (its clock and its halt).
    """

    def __init__(self, plan: LoadPlan, stages: Stages, slots: list[Slot], run: Run) -> None:
        self.run = run
        self.slots = slots
        self.ranks = [plan.rank_offset + j * plan.rank_stride for j in range(len(slots))]
        self.changes = stages.changes()
        self._woken = asyncio.Event()
        self.apply(self.changes[0][1])

    def apply(self, count: int) -> None:
        """Want the slots whose turn is among the first ``count`` of the run."""
        for slot, rank in zip(self.slots, self.ranks, strict=True):
            slot.wanted = rank < count

    async def until_wanted(self, slot: Slot) -> bool:
        """Wait until ``slot`` is wanted; returns False when the run stops first."""
        while not slot.wanted and not self.run.stopping:
            waits = {
                asyncio.ensure_future(self._woken.wait()),
                asyncio.ensure_future(self.run.halted.wait()),
            }
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        return not self.run.stopping

    async def drive(self, connections: Callable[[], Iterable[Any]]) -> None:
        """Apply each change at its time; tell live connections of unwanted slots to retire
        (``connections`` gives the worker's live connections)."""
        run = self.run
        for t, count in self.changes[1:]:
            wait = (run.start_ns + round(t * 1e9) - perf_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            if run.stopping:
                return
            self.apply(count)
            woken, self._woken = self._woken, asyncio.Event()
            woken.set()
            for conn in list(connections()):
                if isinstance(conn, RequestEngine) and not conn.slot.wanted:
                    conn.pump()  # retires it (see RequestEngine.pump)

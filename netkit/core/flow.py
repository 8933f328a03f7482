"""One relayed connection's two flows, and the record that reports them (sans-I/O).

A :class:`Flow` is one direction of a relayed connection: ``up`` (client → upstream) or
``down`` (upstream → client). It owns that direction's bytes for both relay paths
(:mod:`netkit.net.splice` and :mod:`netkit.net.buffered`): how many came in, how many were
delivered, how many the relay still holds (in a splice pipe, or waiting for their fault
schedule, in arrival order), the direction's fault plan (which may change while bytes flow:
:meth:`Flow.replan`) and whether its EOF arrived and was passed on. The relays move bytes and
call it; it never touches a socket or a timer.

Delivered means handed to the kernel and, when the relay resets a socket, sent: bytes a reset
discarded are taken back with :meth:`Flow.lost`, so ``received - delivered`` is exactly what
the relay failed to deliver. :class:`RelayRecord` holds both flows of one connection and gives
the ``closed`` event its shape.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from netkit.core.faults import Direction, DirectionPlan, Fault, LimitData, ResetAfter


def _nothing() -> None:
    pass


def same_faults(a: DirectionPlan, b: DirectionPlan) -> bool:
    """True when two plans hold the same faults (whatever either has scheduled so far)."""
    return all(
        getattr(a, f.name) == getattr(b, f.name) for f in fields(a) if not f.name.startswith("_")
    )


class Flow:
    """One direction of one relayed connection.

    Attributes:
        name: ``up`` (client → upstream) or ``down`` (upstream → client).
        plan: the data faults this direction got, or None (bytes pass as they come).
        received, delivered: byte counts; ``delivered`` is net of what resets discarded.
        held: bytes taken in and not yet passed on (a splice pipe's content, or bytes a fault
            delays).
        eof: the source sent its FIN.
        fin_sent: the FIN was passed on to the destination.
        blackholed: from now on bytes are swallowed (counted as received, never delivered).
        on_activity: called whenever bytes move (an idle timer's ``touch``).
    """

    def __init__(self, name: Direction, plan: DirectionPlan | None = None) -> None:
        self.name: Direction = name
        self.plan = plan
        self.received = 0
        self.delivered = 0
        self.held = 0
        self.eof = False
        self.fin_sent = False
        self.blackholed = False
        self.on_activity: Callable[[], None] = _nothing
        # Held pieces in arrival order with their due and arrival times, released from ONE
        # queue: timers with close due times may fire in any order, a queue cannot reorder
        # (#13 item 9).
        self._pending: deque[tuple[float, float, memoryview]] = deque()

    @property
    def up(self) -> bool:
        """True for client → upstream."""
        return self.name == "up"

    @property
    def undelivered(self) -> int:
        """Bytes received that never reached the other side."""
        return self.received - self.delivered

    @property
    def shapes_data(self) -> bool:
        """True when this direction's bytes wait for a fault schedule (a copy is held)."""
        return self.plan is not None and self.plan.shapes_data

    # --- counting ----------------------------------------------------------------------

    def took(self, n: int, *, held: bool = False) -> None:
        """``n`` bytes came in (``held``: and stay with the relay for now, in a pipe)."""
        self.received += n
        if held:
            self.held += n
        self.on_activity()

    def gave(self, n: int, *, held: bool = False) -> None:
        """``n`` bytes went out (``held``: out of the relay's pipe)."""
        self.delivered += n
        if held:
            self.held -= n
        self.on_activity()

    def passed(self, n: int) -> None:
        """``n`` bytes came in and went straight out (:meth:`took` and :meth:`gave` at once)."""
        self.received += n
        self.delivered += n
        self.on_activity()

    def lost(self, n: int) -> None:
        """``n`` bytes counted as delivered were discarded (a reset, a transport's buffer)."""
        self.delivered -= n
        self.on_activity()

    # --- fault schedule ----------------------------------------------------------------

    def hold(self, data: bytes, now: float, rng: random.Random) -> None:
        """Keep ``data`` (a copy) until its fault schedule says it is due."""
        if self.plan is None:  # faults removed while bytes were held: due at once, in order
            self.plan = DirectionPlan()
        self.held += len(data)
        self._schedule(memoryview(data), now, rng)

    def _schedule(self, data: memoryview, arrived: float, rng: random.Random) -> None:
        assert self.plan is not None
        offset = 0
        for due, size in self.plan.plan(arrived, len(data), rng):
            self._pending.append((due, arrived, data[offset : offset + size]))
            offset += size

    def replan(self, plan: DirectionPlan, rng: random.Random) -> bool:
        """Take the faults of ``plan`` from now on (the faults changed while bytes flow).

        Held bytes are planned again under the new faults, from when each arrived and in the
        order they arrived: with a delay removed, they are due at once; with a longer one,
        later. A plan with the same faults as the current one keeps the current schedule.

        Returns:
            True when the schedule of held bytes changed (the relay re-arms its timer).
        """
        if self.plan is not None and same_faults(self.plan, plan):
            return False
        self.plan = plan
        pending, self._pending = self._pending, deque()
        for _, arrived, piece in pending:
            self._schedule(piece, arrived, rng)
        return bool(pending)

    @property
    def next_due(self) -> float | None:
        """When the oldest held piece is due, or None when nothing is held."""
        return self._pending[0][0] if self._pending else None

    def due(self, now: float) -> Iterator[memoryview]:
        """The held pieces due by ``now``, oldest first (each no longer counted as held).

        A piece is never due before the one ahead of it (:meth:`DirectionPlan.plan`), so the
        order bytes arrived in is kept.
        """
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, piece = pending.popleft()
            self.held -= len(piece)
            yield piece

    # --- data limits -------------------------------------------------------------------

    def allowance(self, data: bytes | memoryview) -> bytes | memoryview:
        """What of ``data`` may still be delivered before a byte limit ends the connection."""
        plan = self.plan
        if plan is not None:
            for cap in (plan.limit, plan.reset_bytes):
                if cap is not None:
                    data = data[: max(cap - self.delivered, 0)]
        return data

    def ending(self) -> type[Fault] | None:
        """The fault that ends the connection now that its byte limit is reached, if any."""
        plan = self.plan
        if plan is None:
            return None
        if plan.reset_bytes is not None and self.delivered >= plan.reset_bytes:
            return ResetAfter
        if plan.limit is not None and self.delivered >= plan.limit:
            return LimitData
        return None


@dataclass
class RelayRecord:
    """One relayed connection, for the ``closed`` event and the summary."""

    id: int
    client: str
    upstream: str = ""
    via: str = ""  # the proxy whose PROXY header named ``client``
    path: str = ""
    started: float = field(default_factory=time.monotonic)
    up: Flow = field(default_factory=lambda: Flow("up"))
    down: Flow = field(default_factory=lambda: Flow("down"))
    end: str = "closed"

    @property
    def flows(self) -> tuple[Flow, Flow]:
        """(up, down)."""
        return self.up, self.down

    def on_activity(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever bytes move either way."""
        self.up.on_activity = self.down.on_activity = callback

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a ``closed`` event."""
        fields: dict[str, Any] = {
            "id": self.id,
            "client": self.client,
            "upstream": self.upstream,
            "path": self.path,
            "bytes_up": self.up.delivered,
            "bytes_down": self.down.delivered,
            "duration_s": round(time.monotonic() - self.started, 6),
            "end": self.end,
        }
        if self.via:
            fields["via"] = self.via
        if self.up.undelivered or self.down.undelivered:
            fields["undelivered"] = {"up": self.up.undelivered, "down": self.down.undelivered}
        return fields

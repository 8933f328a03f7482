"""The schedule of a UDP relay's datagram faults: one per direction of each flow (sans-I/O).

One direction of one flow is a :class:`DatagramSchedule`: :meth:`~DatagramSchedule.push` hands
it an arriving datagram and gets back the faults injected into it (each one an event);
:meth:`~DatagramSchedule.release` hands back, in order, the datagrams whose time has come;
:attr:`~DatagramSchedule.next_due` says when to ask again. :func:`draw_flow` decides which of
a relay's faults a new flow gets (each by its probability) and builds its two schedules.

Each fault draws from its own RNG, seeded from the relay's seed, the flow's number, the
direction and the fault's place, so the same seed and the same datagrams give the same faults,
and adding one fault does not change the draws of another. Held datagrams are bounded per
direction (:data:`~netkit.core.datagram_faults.QUEUE_LIMIT`, netem's ``limit``) and across
flows (:class:`HoldBudget`); beyond, a datagram is dropped and said so (``overflow``).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from netkit.core.datagram_faults import (
    DATAGRAM_FAULTS,
    HOLD_BYTES,
    QUEUE_LIMIT,
    Datagram,
    DatagramFault,
    delay,
)
from netkit.core.faults import DIRECTIONS, Direction, Fault, Latency

Injected = dict[str, object]
"""One fault injected into one datagram, as its event's fields (``fault``, ``seq``, ...)."""


# --- one direction of one flow -----------------------------------------------------------------


class HoldBudget:
    """Bytes every flow of one relay may hold at once (delayed, queued, held back).

    Args:
        limit: the most bytes held together.
    """

    def __init__(self, limit: int = HOLD_BYTES) -> None:
        self.limit = limit
        self.held = 0

    def take(self, nbytes: int) -> bool:
        """Count ``nbytes`` more held; False (and nothing counted) when that exceeds the limit."""
        if self.held + nbytes > self.limit:
            return False
        self.held += nbytes
        return True

    def give(self, nbytes: int) -> None:
        """``nbytes`` are no longer held."""
        self.held -= nbytes


@dataclass
class _Held:
    data: bytes
    seq: int
    wait: int  # later datagrams still to go before this one
    deadline: float  # or until then


class DatagramSchedule:
    """The faults of one direction of one flow: what happens to each datagram, and when it goes.

    Args:
        faults: the faults this direction got (each in :data:`DATAGRAM_FAULTS`).
        seed: what the RNGs are seeded from (the relay's seed, the flow, the direction).
        budget: the relay-wide bound on held bytes.
        limit: the most datagrams held in this direction.
    """

    def __init__(
        self,
        faults: Sequence[Fault],
        seed: str,
        budget: HoldBudget | None = None,
        limit: int = QUEUE_LIMIT,
    ) -> None:
        ordered = sorted(enumerate(faults), key=lambda f: DATAGRAM_FAULTS.index(type(f[1])))
        self.faults = [(f, random.Random(f"{seed}/{i}/{f.name}"), _state(f)) for i, f in ordered]
        self.budget = budget if budget is not None else HoldBudget()
        self.limit = limit
        self.seq = 0  # datagrams pushed so far
        self.dropped = 0  # by faults, or for want of room
        self._queue: deque[tuple[float, bytes, int]] = deque()  # (due, data, seq), due in order
        self._held: list[_Held] = []  # held back by Reorder
        self._last_due = 0.0

    @property
    def pending(self) -> int:
        """Datagrams held now."""
        return len(self._queue) + len(self._held)

    @property
    def held_bytes(self) -> int:
        """Bytes held now."""
        return sum(len(d) for _, d, _ in self._queue) + sum(len(h.data) for h in self._held)

    @property
    def next_due(self) -> float | None:
        """When :meth:`release` next has something to hand back, or None when nothing is held."""
        times = [h.deadline for h in self._held]
        if self._queue:
            times.append(self._queue[0][0])
        return min(times) if times else None

    def push(self, now: float, data: bytes) -> list[Injected]:
        """A datagram arrived at ``now`` (seconds): apply its faults, and hold what is to go.

        Returns:
            The faults injected into it, one dict each (``fault``, ``seq``, ``size`` and the
            kind's details), in the order they acted; a drop ends the list (``dropped``).
        """
        datagram = Datagram(self.seq, data, now, now)
        self.seq += 1
        injected: list[Injected] = []
        for fault, rng, state in self.faults:
            if isinstance(fault, DatagramFault):
                extra = fault.act(datagram, rng, state)
            else:  # Latency: the one stream fault that applies to datagrams too
                assert isinstance(fault, Latency)
                delay(fault, datagram, rng, self._last_due)
                extra = None
            if extra is not None:
                size = len(data)
                extra |= {"dropped": True} if datagram.dropped else {}
                injected.append({"fault": fault.name, "seq": datagram.seq, "size": size, **extra})
            if datagram.dropped:
                self.dropped += 1
                return injected
        self._hold(datagram, injected)
        return injected

    def _hold(self, datagram: Datagram, injected: list[Injected]) -> None:
        data = datagram.data
        for _ in range(datagram.copies):
            if self.pending >= self.limit or not self.budget.take(len(data)):
                self.dropped += 1
                injected.append({"fault": "overflow", "seq": datagram.seq, "size": len(data)})
                return
            if datagram.hold is not None:
                deadline = datagram.due + datagram.hold.max_hold / 1000
                self._held.append(_Held(data, datagram.seq, datagram.hold.gap, deadline))
            else:
                self._queue.append((datagram.due, data, datagram.seq))
        self._last_due = datagram.due

    def release(self, now: float) -> list[bytes]:
        """The datagrams due by ``now``, in the order they are to be sent (and no longer held)."""
        out: list[bytes] = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, data, seq = queue.popleft()
            out.append(data)
            self.budget.give(len(data))
            if self._held:
                self._count_down(seq, out)
        for held in [h for h in self._held if h.deadline <= now]:
            self._held.remove(held)
            out.append(held.data)
            self.budget.give(len(held.data))
        return out

    def _count_down(self, seq: int, out: list[bytes]) -> None:
        # Datagram `seq` went: those held back before it arrived count down; those at zero
        # follow it.
        for held in list(self._held):
            if held.seq >= seq:
                continue
            held.wait -= 1
            if held.wait <= 0:
                self._held.remove(held)
                out.append(held.data)
                self.budget.give(len(held.data))

    def discard(self) -> int:
        """Forget every datagram held (the flow ended); returns how many there were."""
        count = self.pending
        self.budget.give(self.held_bytes)
        self._queue.clear()
        self._held.clear()
        return count


def _state(fault: Fault) -> object:
    return fault.new_state() if isinstance(fault, DatagramFault) else None


# --- one flow ----------------------------------------------------------------------------------


@dataclass
class FlowFaults:
    """What faults one flow got (drawn once, when its first datagram arrives).

    Attributes:
        applied: each fault drawn, as the ``fault`` event lists it.
        directions: each direction's schedule, or None when no fault touches it (the relay
            then passes its datagrams on at once, without copying them).
    """

    applied: list[dict[str, object]] = field(default_factory=list)
    directions: dict[str, DatagramSchedule | None] = field(
        default_factory=lambda: {"up": None, "down": None}
    )

    def discard(self) -> int:
        """Forget the datagrams every direction holds; returns how many there were."""
        return sum(s.discard() for s in self.directions.values() if s is not None)


def draw_flow(
    faults: Iterable[Fault],
    seed: int | str,
    flow: int,
    budget: HoldBudget | None = None,
) -> FlowFaults:
    """Decide which faults one new flow gets (each by its probability) and build its schedules.

    Args:
        faults: the relay's faults (each in :data:`DATAGRAM_FAULTS`).
        seed: the relay's seed; with ``flow`` (the flow's number, from 1), it seeds every draw.
        budget: the relay-wide bound on held bytes.
    """
    rng = random.Random(f"{seed}/{flow}/draw")
    result = FlowFaults()
    chosen: dict[Direction, list[Fault]] = {d: [] for d in DIRECTIONS}
    for fault in faults:
        if fault.probability < 1 and rng.random() >= fault.probability:
            continue
        result.applied.append(fault.as_dict())
        for direction in fault.directions:
            chosen[direction].append(fault)
    for direction, picked in chosen.items():
        if picked:
            result.directions[direction] = DatagramSchedule(
                picked, f"{seed}/{flow}/{direction}", budget
            )
    return result

"""The named faults of one relay, changeable while it runs (sans-I/O).

A :class:`FaultSet` is what toxiproxy calls a proxy's toxics: faults by name, in the order
they were added. It can be changed at any time (:meth:`FaultSet.add`, :meth:`~FaultSet.replace`,
:meth:`~FaultSet.remove`, :meth:`~FaultSet.clear`); every change is told to its subscribers as
a :class:`FaultChange`, whose :attr:`~FaultChange.event` and :meth:`~FaultChange.as_dict` are
the JSON event a server reports. The relay (:mod:`netkit.net.relay`) subscribes and applies
each change to its live connections, each through its :class:`ConnectionDraw` (which faults
that connection got, drawn once per fault and connection); this module only keeps the names,
tells, and draws.

Names default to toxiproxy's shape, ``TYPE_STREAM``: ``latency_downstream`` for a fault on
upstream → client bytes, ``latency_upstream`` for client → upstream; a fault on both
directions, or on the whole connection, is named after its kind alone (``latency``,
``refuse``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from netkit.core.datagram_faults import check_transport
from netkit.core.faults import ConnectionFaults, Fault, draw
from netkit.errors import ConfigError, FaultExists, NoSuchFault

STREAMS = {"up": "upstream", "down": "downstream"}
"""toxiproxy's word for each netkit direction (its ``stream`` attribute)."""


def default_name(fault: Fault) -> str:
    """The name a fault gets when none is given: ``latency_downstream``, ``limit_data``, ..."""
    kind = fault.name.replace("-", "_")
    directions = fault.directions
    if fault.directed and len(directions) == 1:
        return f"{kind}_{STREAMS[directions[0]]}"
    return kind


class Change(Enum):
    """What happened to a fault set; the value is the JSON event's name."""

    ADDED = "fault_added"
    UPDATED = "fault_updated"
    REMOVED = "fault_removed"
    CLEARED = "faults_cleared"


@dataclass(frozen=True)
class FaultChange:
    """One change to a :class:`FaultSet`, as its subscribers are told it.

    Attributes:
        change: what happened.
        name: the fault's name ("" for :attr:`Change.CLEARED`).
        fault: the fault added, the new one (updated), the one removed; None when cleared.
        previous: the fault an update replaced.
        cleared: the names a clear removed, in order.
    """

    change: Change
    name: str = ""
    fault: Fault | None = None
    previous: Fault | None = None
    cleared: tuple[str, ...] = ()

    @property
    def event(self) -> str:
        """The JSON event's name: ``fault_added``, ``fault_updated``, ..."""
        return self.change.value

    def as_dict(self) -> dict[str, Any]:
        """The JSON event's fields: the name and the fault's ``as_dict()``, or the names cleared."""
        if self.fault is None:
            return {"names": list(self.cleared)}
        return {"name": self.name, **self.fault.as_dict()}


Subscriber = Callable[[FaultChange], None]
"""Told every change of a fault set, after it is made."""


class FaultSet:
    """The named faults of one relay, in the order they were added.

    Args:
        faults: the initial faults, each under its default name (two of one kind and
            direction are numbered: ``latency``, ``latency_2``).

    Raises:
        FaultExists, NoSuchFault: from the methods that say so (``ConfigError`` subclasses).
    """

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._faults: dict[str, Fault] = {}
        self._subscribers: list[Subscriber] = []
        self._transport: str | None = None
        for fault in faults:
            base = name = default_name(fault)
            n = 1
            while name in self._faults:
                n += 1
                name = f"{base}_{n}"
            self._faults[name] = fault

    def __iter__(self) -> Iterator[tuple[str, Fault]]:
        """``(name, fault)`` pairs in the order the faults were added (a snapshot)."""
        return iter(list(self._faults.items()))

    def __len__(self) -> int:
        return len(self._faults)

    def __contains__(self, name: object) -> bool:
        return name in self._faults

    def __repr__(self) -> str:
        return f"FaultSet({self._faults!r})"

    @property
    def faults(self) -> list[Fault]:
        """The faults alone, in order."""
        return list(self._faults.values())

    def get(self, name: str) -> Fault:
        """The fault called ``name``.

        Raises:
            NoSuchFault: no fault has that name.
        """
        try:
            return self._faults[name]
        except KeyError:
            raise NoSuchFault(f"no fault named {name!r}") from None

    def add(self, fault: Fault, name: str | None = None) -> str:
        """Add ``fault`` under ``name`` (by default :func:`default_name`), and return the name.

        Raises:
            FaultExists: a fault by that name is already set.
            ConfigError: an empty name, or a fault that does not apply to the relay's
                transport (:meth:`serve`).
        """
        if name is None:
            name = default_name(fault)
        elif not name:
            raise ConfigError("a fault's name cannot be empty")
        if name in self._faults:
            raise FaultExists(f"a fault named {name!r} already exists")
        self._admit(fault)
        self._faults[name] = fault
        self._tell(FaultChange(Change.ADDED, name, fault))
        return name

    def replace(self, name: str, fault: Fault) -> None:
        """Put ``fault`` in place of the fault called ``name`` (same name, same position).

        Raises:
            NoSuchFault: no fault has that name.
            ConfigError: a fault that does not apply to the relay's transport (:meth:`serve`).
        """
        previous = self.get(name)
        self._admit(fault)
        self._faults[name] = fault
        self._tell(FaultChange(Change.UPDATED, name, fault, previous))

    def remove(self, name: str) -> Fault:
        """Remove the fault called ``name`` and return it.

        Raises:
            NoSuchFault: no fault has that name.
        """
        fault = self.get(name)
        del self._faults[name]
        self._tell(FaultChange(Change.REMOVED, name, fault))
        return fault

    def clear(self) -> None:
        """Remove every fault (subscribers are told even when there was none)."""
        names = tuple(self._faults)
        self._faults.clear()
        self._tell(FaultChange(Change.CLEARED, cleared=names))

    def as_dicts(self) -> list[dict[str, Any]]:
        """Every fault as JSON: its name and its ``as_dict()``, in order."""
        return [{"name": name, **fault.as_dict()} for name, fault in self._faults.items()]

    def serve(self, transport: str) -> None:
        """Hold only faults that apply to ``transport`` (``"udp"``, or anything else: a
        stream) from now on, as the relay that owns this set does.

        Raises:
            ConfigError: a fault already set does not apply (and later, from :meth:`add` and
                :meth:`replace`, a fault that does not).
        """
        check_transport(self._faults.values(), transport)
        self._transport = transport

    def _admit(self, fault: Fault) -> None:
        if self._transport is not None:
            check_transport((fault,), self._transport)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Tell ``subscriber`` every change from now on; returns the call that stops it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def _tell(self, change: FaultChange) -> None:
        for subscriber in list(self._subscribers):
            subscriber(change)


# --- one connection's share of a fault set --------------------------------------------------


@dataclass
class _Draw:
    # One fault as it reached one connection: whether it applies (its probability, drawn
    # once), and where the connection stood then (seconds since its relay began, bytes
    # delivered each way): thresholds count from that moment, as toxiproxy's do.
    fault: Fault
    got: bool
    age: float
    delivered: dict[str, int]


class ConnectionDraw:
    """The faults of a :class:`FaultSet` that one connection got, kept as the set changes.

    Each fault's probability is drawn once per connection, when the fault reaches it: at
    accept for the faults set then (in the set's order, so seeded runs repeat), at the change
    for one added or replaced later. A connection already relaying only takes faults on its
    bytes (connection set-up faults, :attr:`Fault.directed` False, apply to new connections).

    A fault that reaches a live connection counts from that moment: a byte limit from the
    bytes delivered then, a time from then (as a toxic added to toxiproxy starts afresh).

    Args:
        faults: the set, as it is when the connection arrives.
        rng: the server's seeded RNG.
    """

    def __init__(self, faults: FaultSet, rng: random.Random) -> None:
        self.rng = rng
        self._draws: dict[str, _Draw] = {}
        self.applied: list[dict[str, Any]] = [
            described
            for name, fault in faults
            if (described := self._draw(name, fault, 0.0, {"up": 0, "down": 0})) is not None
        ]

    def _draw(
        self, name: str, fault: Fault, age: float, delivered: dict[str, int]
    ) -> dict[str, Any] | None:
        # Draw one fault's probability (the one rule, core.faults.draw); what a ``fault``
        # event says of it when it applies.
        applied = draw((fault,), self.rng).applied
        self._draws[name] = _Draw(fault, bool(applied), age, delivered)
        return {"name": name, **applied[0]} if applied else None

    def change(
        self, change: FaultChange, *, age: float, delivered: dict[str, int]
    ) -> list[dict[str, Any]]:
        """Apply a change of the set to a live connection.

        Args:
            change: what the set's subscribers were told.
            age: seconds since the connection's relay began.
            delivered: bytes delivered so far, by direction (``up``, ``down``).

        Returns:
            What the ``fault`` events say of the faults that now apply and did not before.
        """
        if change.change is Change.CLEARED:
            self._draws.clear()
            return []
        self._draws.pop(change.name, None)
        fault = change.fault
        if change.change is Change.REMOVED or fault is None or not fault.directed:
            return []
        described = self._draw(change.name, fault, age, dict(delivered))
        return [] if described is None else [described]

    def connection_faults(self) -> ConnectionFaults:
        """The faults the connection has now, as one :class:`ConnectionFaults`."""
        faults = ConnectionFaults()
        for entry in self._draws.values():
            if not entry.got:
                continue
            before = _thresholds(faults)
            entry.fault.apply(faults)
            if entry.age or any(entry.delivered.values()):
                _shift(faults, before, entry)
        return faults


def _thresholds(faults: ConnectionFaults) -> dict[str, tuple[object, ...]]:
    return {
        name: (plan.limit, plan.reset_bytes, plan.blackhole_after)
        for name, plan in faults.directions.items()
    } | {"": (faults.reset_after_s,)}


def _shift(faults: ConnectionFaults, before: dict[str, tuple[object, ...]], draw: _Draw) -> None:
    # The thresholds ``draw``'s fault just set count from where the connection stood.
    for name, plan in faults.directions.items():
        limit, reset_bytes, blackhole_after = before[name]
        offset = draw.delivered[name]
        if plan.limit is not None and plan.limit != limit:
            plan.limit += offset
        if plan.reset_bytes is not None and plan.reset_bytes != reset_bytes:
            plan.reset_bytes += offset
        if plan.blackhole_after is not None and plan.blackhole_after != blackhole_after:
            plan.blackhole_after += draw.age
    if faults.reset_after_s is not None and faults.reset_after_s != before[""][0]:
        faults.reset_after_s += draw.age

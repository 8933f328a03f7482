"""Fault timelines: a relay's network conditions as a sequence over time (sans-I/O).

A :class:`Timeline` is a list of :class:`Step` s, each at an offset from the timeline's start
(seconds). A step says what the network is like from then on, in the fault flags' grammar::

    0s latency=50ms:10ms; 10s reset p=0.2; 25s blackhole; 40s clear

Each step is ``OFFSET [+] FAULT...`` or ``OFFSET clear``. A fault is ``NAME=VALUE`` with the
flag's name and value (``latency=50ms:10ms``, ``loss=5%``), its modifiers after commas or as
the next words (``latency=50ms,down,p=0.5`` is ``latency=50ms down p=0.5``), and ``for=D`` to
remove it after ``D`` whatever comes next. Three faults read well without a value: ``reset``
(``reset-after=0``: reset connections at once), ``blackhole`` (``blackhole-after=0``: swallow
every byte from now on) and ``refuse`` (``refuse=1``).

A step *replaces* what the step before it set: the network is what the step says, as a
timeline is a sequence of conditions. ``OFFSET + FAULT...`` keeps the previous step's faults
and adds these; ``clear`` removes the timeline's faults. The timeline only ever touches the
faults it set (named ``timeline_...``): faults given by flags or added through an API stay.

The timeline ends at its last step, whose faults stay. With ``repeat`` it starts over at its
last step's offset, a cycle's length: end a repeating timeline with a step such as ``40s
clear`` (with a first step at 0s, the next cycle's first step follows it at once).

A fault flag takes the same ``for=`` (``--latency 100ms,for=5s``: removed 5 s after the start)
and ``after=`` (added that long after the start): :class:`TimedFault`.

:class:`Schedule` says what is due when and applies it to a relay's
:class:`~netkit.core.fault_set.FaultSet`; the driver (:mod:`netkit.net.timeline`) only keeps time.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from netkit.core.datagram_faults import DATAGRAM_FAULTS, check_transport
from netkit.core.fault_set import FaultSet, default_name
from netkit.core.faults import FAULTS, Fault
from netkit.core.units import parse_duration
from netkit.errors import ConfigError, FaultExists

SYNTAX = "OFFSET [+] NAME=VALUE[,up|down][,p=P][,for=D] ...; OFFSET clear; ..."
"""The shape of a timeline (``--timeline``)."""
BOUNDS = "[,for=D][,after=D]"
"""The time bounds every fault flag takes after its modifiers (:class:`TimedFault`)."""
PREFIX = "timeline_"
"""What the names of a timeline's faults begin with."""
SHORTHANDS = {"reset": ("reset-after", "0"), "blackhole": ("blackhole-after", "0"), "refuse": ("refuse", "1")}  # fmt: skip
"""Faults written without a value in a step, and the flag and value each stands for."""
Repeat = int | Literal["forever"]
"""How many more times a timeline runs after its first cycle, or ``"forever"``."""


def _seconds(text: str, what: str) -> float:
    value = parse_duration(text, option=what)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} {text!r} must be a duration of 0 or more")
    return value


def _kinds() -> dict[str, type[Fault]]:
    return {kind.name: kind for kind in (*FAULTS, *DATAGRAM_FAULTS)}


@dataclass(frozen=True)
class TimedFault:
    """A fault with time bounds: added ``after`` seconds after the start, removed
    ``duration`` seconds after it was added (never when None).

    Attributes:
        fault: the fault.
        after: seconds from the start (of the run, or of its step) until it is added.
        duration: seconds it lasts once added; None: until something else removes it.
    """

    fault: Fault
    after: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.after) and self.after >= 0):
            raise ConfigError(f"{self.fault.name}: after {self.after!r} is not 0 s or more")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ConfigError(f"{self.fault.name}: for {self.duration!r} is not more than 0 s")

    @classmethod
    def parse(cls, kind: str, text: str) -> TimedFault:
        """Parse a fault flag's value with ``for=`` and ``after=`` among its modifiers.

        Raises:
            ConfigError: with the option name and what is wrong.
        """
        fault_type = _kinds().get(kind.removeprefix("--").replace("_", "-"))
        if fault_type is None:
            raise ConfigError(f"unknown fault {kind!r}")
        option = fault_type.option()
        kept, bounds = [], {"after": 0.0, "for": None}
        for part in text.split(","):
            key, eq, value = part.strip().partition("=")
            if eq and key in bounds:
                seconds = _seconds(value, f"{option} {text!r}: {key}=")
                if key == "for" and not seconds:
                    raise ConfigError(f"{option} {text!r}: for= must be more than 0 s")
                bounds[key] = seconds
            else:
                kept.append(part)
        fault = fault_type.parse(",".join(kept))
        return cls(fault, bounds["after"] or 0.0, bounds["for"])

    def as_dict(self) -> dict[str, Any]:
        """The fault's ``as_dict()``, with ``after_start_s`` and ``for_s`` when set."""
        fields = self.fault.as_dict()
        if self.after:
            fields["after_start_s"] = self.after
        if self.duration is not None:
            fields["for_s"] = self.duration
        return fields


def parse_timed_faults(flags: Mapping[str, Iterable[str] | None]) -> list[TimedFault]:
    """Parse fault flag values that may carry ``for=`` / ``after=``: ``{name: [value, ...]}``,
    in flag order (:data:`~netkit.core.faults.FAULTS`, then the datagram faults).

    Raises:
        ConfigError: a bad value, or a name that is no fault.
    """
    order = list(_kinds())
    given = {name.removeprefix("--"): values for name, values in flags.items()}
    for name in given:
        if name not in order:
            raise ConfigError(f"unknown fault {name!r}")
    return [TimedFault.parse(name, v) for name in order for v in given.get(name) or ()]


def split_bounded(timed: Iterable[TimedFault]) -> tuple[list[Fault], list[TimedFault]]:
    """The faults without time bounds (set from the start, for good), and the others."""
    timed = list(timed)
    plain = [t.fault for t in timed if not t.after and t.duration is None]
    return plain, [t for t in timed if t.after or t.duration is not None]


@dataclass(frozen=True)
class Step:
    """One step of a :class:`Timeline`: from ``at`` seconds on, the network has ``faults``.

    Attributes:
        at: seconds from the start of the timeline (of each cycle, when it repeats).
        faults: the faults (a :class:`TimedFault` for one that ends by itself, ``for=``).
        keep: keep the previous step's faults and add these (``+``); by default the step
            replaces them. A step with no faults and ``keep`` False is ``clear``.
    """

    at: float
    faults: Sequence[Fault | TimedFault] = ()
    keep: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.at) and self.at >= 0):
            raise ConfigError(f"a step's offset {self.at!r} is not 0 s or more")
        timed = tuple(f if isinstance(f, TimedFault) else TimedFault(f) for f in self.faults)
        for entry in timed:
            if entry.after:
                raise ConfigError(
                    f"step at {self.at:g}s: after= has no place in a step (give the fault its "
                    "own step at the later offset)"
                )
        object.__setattr__(self, "faults", timed)

    @property
    def timed(self) -> tuple[TimedFault, ...]:
        """The faults, each as a :class:`TimedFault`."""
        return tuple(self.faults)  # type: ignore[arg-type]  # made so in __post_init__

    @classmethod
    def parse(cls, text: str) -> Step:
        """Parse ``OFFSET [+] FAULT...`` or ``OFFSET clear`` (see the module's docstring).

        Raises:
            ConfigError: what is wrong (the caller names the step).
        """
        words = text.split()
        if not words:
            raise ConfigError("an empty step (give OFFSET and faults, or OFFSET clear)")
        at = _seconds(words[0], "offset")
        rest = words[1:]
        keep = bool(rest) and rest[0] == "+"
        rest = rest[1:] if keep else rest
        if rest == ["clear"]:
            if keep:
                raise ConfigError("'+ clear' keeps and clears at once: write 'clear' alone")
            return cls(at)
        if not rest:
            raise ConfigError(f"{words[0]}: no faults (give NAME=VALUE ..., or clear)")
        return cls(at, tuple(_step_faults(rest)), keep)

    def as_dict(self) -> dict[str, Any]:
        """The step as JSON: ``at_s``, ``keep`` and its faults."""
        return {"at_s": self.at, "keep": self.keep, "faults": [f.as_dict() for f in self.timed]}


def _step_faults(words: list[str]) -> list[TimedFault]:
    # NAME=VALUE[,MOD...] words, each followed by its modifier words (up, down, p=, for=).
    groups: list[tuple[str, list[str]]] = []
    for word in words:
        head, _, value = word.partition("=")
        if word in ("up", "down") or head in ("p", "for", "after"):
            if not groups:
                raise ConfigError(f"{word!r} comes before any fault")
            groups[-1][1].append(word)
        elif head in SHORTHANDS:  # reset, or reset=64KiB for reset-after=64KiB
            name, default = SHORTHANDS[head]
            groups.append((name, [value or default]))
        elif head in _kinds():
            if not value:
                raise ConfigError(f"{head!r} needs a value: {head}=VALUE (as --{head} takes)")
            groups.append((head, [value]))
        elif head == "clear":
            raise ConfigError("'clear' stands alone in its step")
        else:
            raise ConfigError(f"{head!r} is no fault (faults: {', '.join(_kinds())})")
    timed = []
    for name, parts in groups:
        if name == "refuse" and any(p.startswith("p=") for p in parts[1:]):
            parts = parts[1:]  # refuse's value is its probability: refuse p=0.2
        timed.append(TimedFault.parse(name, ",".join(parts)))
    return timed


@dataclass(frozen=True)
class Timeline:
    """Steps in time, optionally repeated (see the module's docstring).

    Attributes:
        steps: in order of their offsets, each later than the one before.
        repeat: how many more cycles after the first, or ``"forever"``; a cycle lasts until
            the last step's offset.
    """

    steps: Sequence[Step]
    repeat: Repeat = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ConfigError("a timeline needs at least one step")
        for index, (before, after) in enumerate(zip(self.steps, self.steps[1:], strict=False), 2):
            if after.at <= before.at:
                raise ConfigError(
                    f"timeline step {index} (at {after.at:g}s) is not later than step "
                    f"{index - 1} (at {before.at:g}s): offsets must increase"
                )
        if self.repeat != "forever" and not (isinstance(self.repeat, int) and self.repeat >= 0):
            raise ConfigError(f"repeat {self.repeat!r} is not a count (0 or more) or 'forever'")
        if self.repeat and self.length <= 0:
            raise ConfigError("a repeating timeline needs a last step after 0s (its length)")

    @property
    def length(self) -> float:
        """Seconds one cycle lasts: the last step's offset."""
        return self.steps[-1].at

    @property
    def cycles(self) -> int | None:
        """How many cycles run in all (None: forever)."""
        return None if self.repeat == "forever" else self.repeat + 1

    @classmethod
    def parse(cls, text: str, *, repeat: Repeat = 0) -> Timeline:
        """Parse ``STEP; STEP; ...`` (see the module's docstring).

        Raises:
            ConfigError: one line naming the step that is wrong and why.
        """
        parts = text.split(";")
        if len(parts) > 1 and not parts[-1].strip():
            parts.pop()  # a trailing ';'
        steps = []
        for index, part in enumerate(parts, 1):
            try:
                steps.append(Step.parse(part))
            except ConfigError as exc:
                raise ConfigError(f"timeline step {index} ({part.strip()!r}): {exc}") from None
        return cls(steps, repeat)

    def check(self, transport: str) -> None:
        """Refuse a step with a fault that does not apply to ``transport`` (``"udp"`` or a
        stream), naming the step.

        Raises:
            ConfigError: naming the step and the fault.
        """
        for index, step in enumerate(self.steps, 1):
            try:
                check_transport((t.fault for t in step.timed), transport)
            except ConfigError as exc:
                raise ConfigError(f"timeline step {index} (at {step.at:g}s): {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        """The timeline as JSON (the ``listening`` event's ``timeline``)."""
        return {"steps": [s.as_dict() for s in self.steps], "repeat": self.repeat}


def parse_repeat(text: str) -> Repeat:
    """``--timeline-repeat``: a count of further cycles, or ``forever``.

    Raises:
        ConfigError: anything else.
    """
    text = text.strip().lower()
    if text == "forever":
        return "forever"
    if not text.isdigit():
        raise ConfigError(f"--timeline-repeat {text!r}: give a count (1, 2, ...) or 'forever'")
    return int(text)


# --- what is due when -----------------------------------------------------------------------


@dataclass(order=True)
class _Due:
    at: float
    order: int
    action: str = field(compare=False)  # "add" (a timed fault starts) or "expire"
    fault: Fault = field(compare=False)
    name: str = field(default="", compare=False)
    duration: float | None = field(default=None, compare=False)


class Schedule:
    """What a timeline and timed faults do to one :class:`FaultSet`, and when.

    Times are seconds since the schedule started, as the driver measures them; the driver
    asks :meth:`next_at`, waits, and calls :meth:`advance` with the time it is now, which
    applies every change due by then, in order, and returns the events to report.

    Args:
        faults: the relay's fault set.
        timeline: the steps, or None.
        timed: faults with time bounds (the flags' ``for=`` / ``after=``).
    """

    def __init__(
        self,
        faults: FaultSet,
        timeline: Timeline | None = None,
        timed: Sequence[TimedFault] = (),
    ) -> None:
        self.faults = faults
        self.timeline = timeline
        self._pending: list[_Due] = []
        self._order = 0
        for entry in timed:
            self._push(entry.after, "add", entry.fault, duration=entry.duration)
        self._owned: dict[str, Fault] = {}  # the current step's faults, by name
        self._cycle = 0
        self._index = 0
        self.ended = timeline is None

    def _push(
        self, at: float, action: str, fault: Fault, name: str = "", duration: float | None = None
    ) -> None:
        self._order += 1
        heapq.heappush(self._pending, _Due(at, self._order, action, fault, name, duration))

    def _step_at(self) -> float | None:
        if self.ended or self.timeline is None:
            return None
        return self._cycle * self.timeline.length + self.timeline.steps[self._index].at

    def next_at(self) -> float | None:
        """When the next change is due (seconds since the start), None when nothing is."""
        times = (self._step_at(), self._pending[0].at if self._pending else None)
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def advance(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Apply every change due by ``now``; the events to report, in order
        (``timeline_step``, ``timeline_repeat``, ``timeline_end``; the fault set tells its
        own changes to its subscribers). A fault's end due with a step comes first."""
        events: list[tuple[str, dict[str, Any]]] = []
        while (at := self.next_at()) is not None and at <= now:
            if self._pending and self._pending[0].at <= at:
                self._timed(heapq.heappop(self._pending), at)
            else:
                events += self._step(at, now)
        return events

    def _timed(self, due: _Due, at: float) -> None:
        # A flag's timed fault starts, or a fault with for= ends.
        if due.action == "add":
            name = self._add(default_name(due.fault), due.fault)
            if due.duration is not None:
                self._push(at + due.duration, "expire", due.fault, name)
            return
        if due.name in self.faults and self.faults.get(due.name) is due.fault:
            self.faults.remove(due.name)
        if self._owned.get(due.name) is due.fault:
            del self._owned[due.name]

    def _add(self, base: str, fault: Fault) -> str:
        # Under ``base``, or ``base_2`` ... when something else holds that name.
        name, n = base, 1
        while True:
            try:
                return self.faults.add(fault, name)
            except FaultExists:
                n += 1
                name = f"{base}_{n}"

    def _step(self, at: float, now: float) -> list[tuple[str, dict[str, Any]]]:
        assert self.timeline is not None
        timeline, index, cycle = self.timeline, self._index, self._cycle
        step = timeline.steps[index]
        wanted = _named(step.timed)
        if not step.keep:
            for name, fault in list(self._owned.items()):
                if name not in wanted:
                    self._drop(name, fault)
        faults = []
        for name, entry in wanted.items():
            actual = self._set(name, entry.fault)
            if entry.duration is not None:
                self._push(at + entry.duration, "expire", self._owned[actual], actual)
            faults.append({"name": actual, **entry.as_dict()})
        event = {"index": index, "at_s": step.at, "cycle": cycle, "keep": step.keep}
        events = [("timeline_step", event | {"faults": faults, **_times(at, now)})]
        self._index += 1
        if self._index == len(timeline.steps):
            cycles = timeline.cycles
            if cycles is not None and cycle + 1 >= cycles:
                self.ended = True
                events.append(("timeline_end", {"cycles": cycle + 1, **_times(at, now)}))
            else:  # the next cycle starts at this one's last step (its length)
                self._index, self._cycle = 0, cycle + 1
                events.append(("timeline_repeat", {"cycle": self._cycle, **_times(at, now)}))
        return events

    def _set(self, name: str, fault: Fault) -> str:
        # The step's fault under its name (unchanged when it is already so); the name it has.
        held = self._owned.get(name)
        if held is not None and name in self.faults and self.faults.get(name) is held:
            if held != fault:
                self.faults.replace(name, fault)
                self._owned[name] = fault
            return name
        self._owned.pop(name, None)
        actual = self._add(name, fault)
        self._owned[actual] = fault
        return actual

    def _drop(self, name: str, fault: Fault) -> None:
        del self._owned[name]
        if name in self.faults and self.faults.get(name) is fault:
            self.faults.remove(name)


def _named(timed: Sequence[TimedFault]) -> dict[str, TimedFault]:
    # A step's faults under their timeline names: timeline_latency, timeline_latency_2 ...
    named: dict[str, TimedFault] = {}
    for entry in timed:
        base = name = PREFIX + default_name(entry.fault)
        n = 1
        while name in named:
            n += 1
            name = f"{base}_{n}"
        named[name] = entry
    return named


def _times(due: float, now: float) -> dict[str, float]:
    # When it was due and when it happened, seconds since the schedule started.
    return {"due_s": round(due, 6), "elapsed_s": round(now, 6)}

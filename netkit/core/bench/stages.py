"""Ramping stages of ``netkit bench`` (``--stages``), as k6's ramping-arrival-rate and
ramping-vus executors: :func:`parse_stages`, the schedule :class:`Stages` and the open-loop
pacing of one connection under a ramping rate (:class:`RampPacing`).

``--stages "10s:100/s, 30s:1000/s, 10s:0/s"`` ramps the arrival rate: each stage goes
linearly from the previous stage's target (the first from 0, k6's default ``startRate``) to
its own over its duration; a ``0s`` stage jumps. Request ``n`` of the whole run is due when
the integral of the rate reaches ``n + 1/2`` (so a constant rate ``R`` sends request ``n`` at
``(n + 1/2) / R``, and a stage holds as many requests as its integral, rounded), and goes to
connection ``n mod C``: every connection, and so every worker, carries its share of the rate
at every moment, and latency is measured from each request's intended time as with ``--rate``.

``--stages "10s:50, 20s:100"`` (no ``/s``) ramps the number of active closed-loop connections
the same way (from 0); at time ``t`` the run wants ``round(value(t))`` connections open.
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_right
from dataclasses import dataclass, field

from netkit.core.bench.plan import NUMBER, SCALE, STAGES
from netkit.core.units import parse_duration
from netkit.errors import ConfigError

# The intended time of a request past the schedule's end: never due in a run.
NEVER_NS = 10**15
# The most connection changes a schedule may hold (sum of |steps| over the stages).
MAX_CHANGES = 1_000_000
# The most connections a stage may ask for (as --connections allows).
MAX_CONNECTIONS = 100_000


class StageKind(enum.StrEnum):
    """What stages ramp: the arrival rate (open loop) or the connections (closed loop)."""

    RATE = "rate"
    CONNECTIONS = "connections"


@dataclass(frozen=True)
class Stage:
    """One stage: ramp linearly to ``target`` over ``duration`` seconds."""

    duration: float
    target: float


def _parse_target(raw: str, item: str) -> tuple[StageKind, float]:
    text = raw.strip()
    kind = StageKind.CONNECTIONS
    if text.endswith("/s"):
        kind, text = StageKind.RATE, text[:-2].strip()
    m = NUMBER.match(text)
    if not m:
        raise ConfigError(
            (STAGES, f" {item!r}: {raw.strip()!r} is not a rate (1000/s) or a connection count")
        )
    value = float(m.group(1)) * SCALE[m.group(2).lower()]
    if not math.isfinite(value):
        raise ConfigError((STAGES, f" {item!r}: {raw.strip()!r} is not finite"))
    if kind is StageKind.CONNECTIONS and value != int(value):
        raise ConfigError((STAGES, f" {item!r}: a connection count is a whole number"))
    return kind, value


def parse_stages(text: str) -> Stages:
    """Parse ``"10s:100/s, 30s:1000/s, 10s:0/s"`` (rates) or ``"10s:50, 20s:100"``
    (connections): comma-separated ``DURATION:TARGET`` items, all of one kind.

    Raises:
        ConfigError: an item does not parse, the kinds are mixed, the stages last no time
            or never load anything.
    """
    items = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in items):
        raise ConfigError(
            (STAGES, f" {text!r}: expected DURATION:TARGET items, as in '10s:100/s, 30s:1000/s'")
        )
    stages, kinds = [], set()
    for item in items:
        when, sep, what = item.partition(":")
        if not sep:
            raise ConfigError((STAGES, f" {item!r}: expected DURATION:TARGET, as in 10s:100/s"))
        duration = parse_duration(when.strip(), option=(STAGES, f" {item!r}:"))
        kind, target = _parse_target(what, item)
        kinds.add(kind)
        stages.append(Stage(duration, target))
    if len(kinds) > 1:
        raise ConfigError(
            (STAGES, f" {text!r} mixes rates (N/s) and connection counts (N): give one kind")
        )
    return Stages(kinds.pop(), tuple(stages))


@dataclass(frozen=True)
class Stages:
    """A ramping schedule: what the run wants at each moment, from its start.

    Attributes:
        kind: rate (requests/s) or connections.
        stages: the stages, in order.
    """

    kind: StageKind
    stages: tuple[Stage, ...]
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _froms: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _due: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _total: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError((STAGES, ": give at least one stage"))
        if any(s.duration < 0 or s.target < 0 for s in self.stages):
            raise ConfigError((STAGES, ": durations and targets cannot be negative"))
        if not self.duration > 0:
            raise ConfigError((STAGES, ": the stages last no time; give one a duration"))
        if self.kind is StageKind.RATE and not any(s.target > 0 for s in self.stages):
            raise ConfigError((STAGES, ": every rate is 0/s: no request would be sent"))
        if self.kind is StageKind.CONNECTIONS and self.peak < 1:
            raise ConfigError((STAGES, ": every count is 0: no connection would open"))
        if self.kind is StageKind.CONNECTIONS and self.peak > MAX_CONNECTIONS:
            raise ConfigError((STAGES, f": {self.peak:,} connections; at most {MAX_CONNECTIONS:,}"))
        # Each stage's start time, starting value and integral (requests due) at its start.
        starts, froms, due = [], [], []
        t = before = total = 0.0
        for s in self.stages:
            starts.append(t)
            froms.append(before)
            due.append(total)
            total += (before + s.target) / 2 * s.duration
            t += s.duration
            before = s.target
        object.__setattr__(self, "_starts", tuple(starts))
        object.__setattr__(self, "_froms", tuple(froms))
        object.__setattr__(self, "_due", tuple(due))
        object.__setattr__(self, "_total", total)

    @property
    def duration(self) -> float:
        """Seconds the stages last, all together."""
        return sum(s.duration for s in self.stages)

    @property
    def peak(self) -> int:
        """Connection stages: the most connections ever wanted."""
        return max(round(s.target) for s in self.stages)

    def bounds(self, index: int) -> tuple[float, float]:
        """Stage ``index`` (from 0): its start and end, in seconds from the run's start."""
        start = self._starts[index]
        return start, start + self.stages[index].duration

    def start_value(self, index: int) -> float:
        """The value stage ``index`` ramps from (the previous target; 0 for the first)."""
        return self._froms[index]

    def index_at(self, t: float) -> int:
        """The stage under way ``t`` seconds in (0-based; the last one after the end).

        A stage owns its start instant: a ``0s`` stage owns none, so no time is in it.
        """
        starts = self._starts
        i = bisect_right(starts, t) - 1
        i = max(0, min(i, len(self.stages) - 1))
        while i > 0 and self.stages[i].duration == 0 and starts[i] >= t:
            i -= 1
        return i

    def value_at(self, t: float) -> float:
        """The intended rate (requests/s) or connections ``t`` seconds in."""
        if t >= self.duration:
            return self.stages[-1].target
        i = self._segment(max(0.0, t))
        s, start, before = self.stages[i], self._starts[i], self._froms[i]
        return before + (s.target - before) * (t - start) / s.duration if s.duration else s.target

    def _segment(self, t: float) -> int:
        """The stage holding time ``t`` (a stage with a duration, when one holds it)."""
        starts = self._starts
        i = max(0, bisect_right(starts, t) - 1)
        while i > 0 and self.stages[i].duration == 0:
            i -= 1
        return i

    def due_until(self, t: float) -> float:
        """The integral of the rate from the start to ``t``: how many requests are due by then."""
        if t <= 0:
            return 0.0
        total = self._total
        if t >= self.duration:
            return total
        i = self._segment(t)
        s, start, before = self.stages[i], self._starts[i], self._froms[i]
        tau = t - start
        slope = (s.target - before) / s.duration if s.duration else 0.0
        return self._due[i] + before * tau + slope * tau * tau / 2

    def time_of(self, x: float) -> float:
        """When the integral of the rate reaches ``x`` (inverse of :meth:`due_until`), in
        seconds; ``math.inf`` when it never does (the schedule ends with the last stage)."""
        if x <= 0:
            return 0.0
        due = self._due
        total = self._total
        if x > total:  # nothing is due after the last stage: the run ends there
            return math.inf
        # The stage whose integral holds x: the first one that ends at or after x.
        i = bisect_right(due, x) - 1
        while i > 0 and due[i] >= x:
            i -= 1
        s, before = self.stages[i], self._froms[i]
        while s.duration == 0 or (before + s.target) == 0:  # holds no requests: the next
            i += 1
            s, before = self.stages[i], self._froms[i]
        rest = x - due[i]
        # before*tau + a*tau^2 = rest, with a = slope/2; this form stays exact when a ~ 0.
        a = (s.target - before) / (2 * s.duration)
        root = math.sqrt(max(0.0, before * before + 4 * a * rest))
        tau = 2 * rest / (before + root) if before + root > 0 else 0.0
        return self._starts[i] + min(tau, s.duration)

    def connections_at(self, t: float) -> int:
        """Connection stages: how many connections the run wants ``t`` seconds in."""
        return math.floor(self.value_at(t) + 0.5)

    def changes(self) -> list[tuple[float, int]]:
        """Connection stages: ``(time, count)`` each time the wanted count changes, in order,
        starting with ``(0, count at 0)``.

        Raises:
            ConfigError: the schedule would change more than :data:`MAX_CHANGES` times.
        """
        steps = sum(
            abs(round(s.target) - round(self.start_value(i))) for i, s in enumerate(self.stages)
        )
        if steps > MAX_CHANGES:
            raise ConfigError((STAGES, f": {steps:,} connection changes; at most {MAX_CHANGES:,}"))
        out = [(0.0, self.connections_at(0.0))]
        for i, s in enumerate(self.stages):
            start, before = self._starts[i], self._froms[i]
            if s.duration == 0:
                out.append((start, round(s.target)))
                continue
            up = s.target >= before
            # The count steps to k when the ramp crosses k - 1/2 (going up) or k + 1/2 (down).
            lo, hi = sorted((before, s.target))
            levels = range(math.floor(lo + 0.5) + 1, math.floor(hi + 0.5) + 1)
            for k in levels if up else reversed(levels):
                edge = k - 0.5
                t = start + (edge - before) / (s.target - before) * s.duration
                out.append((t, k if up else k - 1))
        merged: list[tuple[float, int]] = []
        for t, count in out:
            if merged and merged[-1][1] == count:
                continue
            merged.append((t, count))
        return merged

    def pacing(self, index: int, connections: int) -> RampPacing:
        """The open-loop schedule of connection ``index`` of ``connections`` (rate stages)."""
        return RampPacing(self, index, connections)

    def describe(self, index: int) -> str:
        """``0 -> 100/s over 10s`` (for reports)."""
        s, unit = self.stages[index], "/s" if self.kind is StageKind.RATE else ""
        return f"{self.start_value(index):g}{unit} -> {s.target:g}{unit} over {s.duration:g}s"


@dataclass(frozen=True)
class RampPacing:
    """When each request of one connection is due under a ramping rate (see the module
    docstring): request ``k`` of connection ``index`` is request ``index + k*connections``
    of the run."""

    stages: Stages
    index: int
    connections: int

    def _offset_ns(self, k: int) -> int | None:
        """When request ``k`` is due, in ns from the start; None: never."""
        t = self.stages.time_of(self.index + k * self.connections + 0.5)
        return None if t == math.inf else round(t * 1e9)

    def due_at(self, start_ns: int, k: int) -> int:
        """The intended send time of request ``k`` (0-based); far in the future when the
        schedule never gets to it."""
        offset = self._offset_ns(k)
        return start_ns + (NEVER_NS if offset is None else offset)

    def due_by(self, start_ns: int, now_ns: int) -> int:
        """How many requests are due at ``now_ns`` (intended send time <= now)."""
        elapsed = now_ns - start_ns
        if elapsed < 0:
            return 0
        n = math.floor(self.stages.due_until(elapsed / 1e9) - 0.5)
        count = 0 if n < self.index else (n - self.index) // self.connections + 1
        # Agree with due_at exactly, whatever the rounding of the two directions (a step
        # or two at most).
        while (offset := self._offset_ns(count)) is not None and offset <= elapsed:
            count += 1
        while count > 0 and (offset := self._offset_ns(count - 1)) is not None and offset > elapsed:
            count -= 1
        return count

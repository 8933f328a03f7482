"""Fault injection for relays, as toxiproxy does it, but declared on the command line.

Each fault is ``VALUE[,up|down][,p=PROBABILITY]``: ``up`` is client→upstream, ``down`` is
upstream→client, both by default; ``p`` is the chance that a connection gets the fault (1 by
default), drawn once per connection from a seeded RNG so that runs repeat. This module parses
the flags and computes *when* bytes are due; the relay moves them. A fault may delay bytes, it
never reorders them within a direction (toxiproxy's latency toxic keeps order too): each piece
is due no earlier than the one before it, and the relay releases them from one queue.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Literal

from netkit.core.units import parse_duration, parse_size
from netkit.errors import ConfigError

Direction = Literal["up", "down"]
DIRECTIONS: tuple[Direction, Direction] = ("up", "down")

DATA_FAULTS = ("latency", "bandwidth", "slice", "limit_data", "reset_after", "blackhole_after")
SETUP_FAULTS = ("refuse", "accept_delay")


@dataclass(frozen=True)
class FaultSpec:
    """One fault from the command line.

    Attributes:
        kind: ``latency``, ``bandwidth``, ``slice``, ``limit_data``, ``reset_after``,
            ``blackhole_after``, ``slow_close``, ``refuse`` or ``accept_delay``.
        directions: which directions it applies to.
        probability: chance per connection.
        a, b: the values (seconds, bytes or bytes/s), meaning depends on ``kind``;
            ``reset_after`` uses ``a`` for bytes or ``b`` for seconds; ``blackhole_after``
            uses ``b`` for the time after which a blackholed connection is closed (0: never).
    """

    kind: str
    directions: tuple[Direction, ...] = DIRECTIONS
    probability: float = 1.0
    a: float = 0.0
    b: float = 0.0

    def describe(self) -> dict[str, object]:
        """Fields for the JSON ``fault`` event."""
        values: dict[str, object] = {"fault": self.kind.replace("_", "-")}
        if self.kind == "latency":
            values |= {"latency_ms": self.a * 1000, "jitter_ms": self.b * 1000}
        elif self.kind == "bandwidth":
            values["bytes_per_s"] = self.a
        elif self.kind == "slice":
            values |= {"bytes": int(self.a), "delay_ms": self.b * 1000}
        elif self.kind in ("limit_data",):
            values["bytes"] = int(self.a)
        elif self.kind == "reset_after":
            values |= {"bytes": int(self.a)} if self.a else {"after_s": self.b}
        elif self.kind in ("blackhole_after", "slow_close", "accept_delay"):
            values["after_s" if self.kind != "accept_delay" else "delay_s"] = self.a
            if self.kind == "blackhole_after" and self.b:
                values["close_after_s"] = self.b
        return values


def _split_modifiers(
    option: str, text: str, *, directed: bool = True
) -> tuple[str, tuple[Direction, ...], float]:
    parts = [p.strip() for p in text.split(",")]
    value, directions, probability = parts[0], list[Direction](), 1.0
    for mod in parts[1:]:
        if mod in DIRECTIONS:
            if not directed:
                raise ConfigError(
                    f"{option} {text!r}: {mod!r} does not apply, this fault acts on the whole "
                    "connection before any byte flows (it has no direction)"
                )
            directions.append(mod)
        elif mod.startswith("p="):
            try:
                probability = float(mod[2:])
            except ValueError:
                probability = -1
            if not 0 <= probability <= 1:
                raise ConfigError(f"{option} {text!r}: p= takes a probability from 0 to 1")
        else:
            raise ConfigError(f"{option} {text!r}: unknown modifier {mod!r} (use up, down, p=0.5)")
    return value, tuple(directions) or DIRECTIONS, probability


def _ms_or_duration(text: str, option: str) -> float:
    # --latency takes milliseconds when no unit is given (toxiproxy's convention).
    if re.fullmatch(r"\s*[0-9.]+\s*", text):
        return parse_duration(text, option=option) / 1000
    return parse_duration(text, option=option)


def parse_rate(text: str, option: str = "--bandwidth") -> float:
    """Parse a rate such as ``1MB/s``, ``512KiB/s`` or ``10Mbit/s`` into bytes per second.

    Raises:
        ConfigError: not a rate.
    """
    m = re.fullmatch(r"\s*(.+?)\s*(bit)?\s*/\s*s\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(f"{option} {text!r} is not a rate such as 1MB/s, 512KiB/s or 10Mbit/s")
    amount = parse_size(m.group(1) if not m.group(2) else m.group(1) or "1", option=option)
    rate = amount / 8 if m.group(2) else float(amount)
    if rate <= 0:
        raise ConfigError(f"{option} {text!r} must be more than zero")
    return rate


def parse_fault(kind: str, text: str) -> FaultSpec:
    """Parse one fault flag's value.

    Raises:
        ConfigError: with the option name and what is wrong.
    """
    option = "--" + kind.replace("_", "-")
    value, directions, p = _split_modifiers(option, text, directed=kind not in SETUP_FAULTS)
    if kind == "latency":
        base, _, jitter = value.partition(":")
        return FaultSpec(
            kind,
            directions,
            p,
            _ms_or_duration(base, option),
            _ms_or_duration(jitter or "0", option),
        )
    if kind == "bandwidth":
        return FaultSpec(kind, directions, p, parse_rate(value, option))
    if kind == "slice":
        size, _, delay = value.partition(":")
        nbytes = parse_size(size, option=option)
        if nbytes < 1:
            raise ConfigError(f"{option} {text!r}: slices are at least 1 byte")
        return FaultSpec(kind, directions, p, nbytes, _ms_or_duration(delay or "0", option))
    if kind == "limit_data":
        return FaultSpec(kind, directions, p, parse_size(value, option=option))
    if kind == "reset_after":
        if re.fullmatch(r"\s*[0-9.]+\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*", value, re.IGNORECASE):
            return FaultSpec(kind, directions, p, a=parse_size(value, option=option))
        return FaultSpec(kind, directions, p, b=parse_duration(value, option=option))
    if kind == "blackhole_after":
        # DURATION[:CLOSE_AFTER]: toxiproxy's timeout toxic closes CLOSE_AFTER into the blackhole.
        after, _, close_after = value.partition(":")
        closing = parse_duration(close_after, option=option) if close_after else 0.0
        return FaultSpec(kind, directions, p, parse_duration(after, option=option), closing)
    if kind in ("slow_close", "accept_delay"):
        return FaultSpec(kind, directions, p, parse_duration(value, option=option))
    if kind == "refuse":
        return FaultSpec(kind, directions, p)
    raise ConfigError(f"unknown fault {kind!r}")


@dataclass
class DirectionPlan:
    """The faults one direction of one connection got, and the state to schedule its bytes."""

    latency: float = 0.0
    jitter: float = 0.0
    rate: float | None = None
    slice_size: int | None = None
    slice_delay: float = 0.0
    limit: int | None = None
    reset_bytes: int | None = None
    blackhole_after: float | None = None
    blackhole_close_after: float = 0.0  # close this long after blackholing began (0: never)
    slow_close: float = 0.0  # hold this direction's FIN this long before passing it on
    _last_due: float = 0.0
    _rate_free_at: float = 0.0

    @property
    def shapes_data(self) -> bool:
        """True when bytes must be held back (latency, bandwidth, slicing)."""
        return bool(self.latency or self.jitter or self.rate or self.slice_size)

    def plan(self, now: float, nbytes: int, rng: random.Random) -> list[tuple[float, int]]:
        """Split a chunk of ``nbytes`` arriving at ``now`` into ``(due time, size)`` pieces.

        Pieces are due in order (never earlier than the previous one), after latency and
        jitter, no faster than the bandwidth, sliced and spaced as asked.
        """
        delay = self.latency + (rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
        due = max(now + max(delay, 0.0), self._last_due)
        sizes = [nbytes]
        if self.slice_size:
            sizes = [min(self.slice_size, nbytes - i) for i in range(0, nbytes, self.slice_size)]
        pieces = []
        for i, size in enumerate(sizes):
            if i and self.slice_delay:
                due += self.slice_delay
            if self.rate:
                start = max(due, self._rate_free_at)
                self._rate_free_at = start + size / self.rate
                due = start  # the piece leaves once the link is free; it occupies it after
            pieces.append((due, size))
        self._last_due = due
        return pieces


@dataclass
class ConnectionFaults:
    """What faults one connection got (drawn once, at accept)."""

    refuse: bool = False
    accept_delay: float = 0.0
    reset_after_s: float | None = None
    directions: dict[str, DirectionPlan] = field(
        default_factory=lambda: {"up": DirectionPlan(), "down": DirectionPlan()}
    )
    applied: list[dict[str, object]] = field(default_factory=list)

    @property
    def touches_data(self) -> bool:
        """True when bytes must pass through user space (no splice)."""
        return (
            any(
                d.shapes_data
                or d.limit is not None
                or d.reset_bytes is not None
                or d.blackhole_after is not None
                for d in self.directions.values()
            )
            or self.reset_after_s is not None
        )


def draw(specs: list[FaultSpec], rng: random.Random) -> ConnectionFaults:
    """Decide, for one new connection, which faults apply (each by its probability)."""
    faults = ConnectionFaults()
    for spec in specs:
        if spec.probability < 1 and rng.random() >= spec.probability:
            continue
        faults.applied.append({**spec.describe(), "directions": list(spec.directions)})
        if spec.kind == "refuse":
            faults.refuse = True
        elif spec.kind == "accept_delay":
            faults.accept_delay = max(faults.accept_delay, spec.a)
        elif spec.kind == "reset_after" and not spec.a:
            faults.reset_after_s = spec.b
        for name in spec.directions:
            plan = faults.directions[name]
            if spec.kind == "latency":
                plan.latency, plan.jitter = spec.a, spec.b
            elif spec.kind == "bandwidth":
                plan.rate = spec.a
            elif spec.kind == "slice":
                plan.slice_size, plan.slice_delay = int(spec.a), spec.b
            elif spec.kind == "limit_data":
                plan.limit = int(spec.a)
            elif spec.kind == "reset_after" and spec.a:
                plan.reset_bytes = int(spec.a)
            elif spec.kind == "blackhole_after":
                plan.blackhole_after, plan.blackhole_close_after = spec.a, spec.b
            elif spec.kind == "slow_close":
                plan.slow_close = max(plan.slow_close, spec.a)
    return faults

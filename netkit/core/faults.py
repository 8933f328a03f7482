"""Fault injection for relays, as toxiproxy does it, but declared on the command line.

Each fault flag is ``VALUE[,up|down][,p=PROBABILITY]``: ``up`` is client→upstream, ``down`` is
upstream→client, both by default; ``p`` is the chance that a connection gets the fault (1 by
default), drawn once per connection from a seeded RNG so that runs repeat. This module parses
the flags and computes *when* bytes are due; the relay moves them. A fault may delay bytes, it
never reorders them within a direction (toxiproxy's latency toxic keeps order too): each piece
is due no earlier than the one before it, and the relay releases them from one queue.

Each kind of fault is a class (toxiproxy's toxics are types too): it parses its flag value,
describes itself for the JSON events, renders its flag value back, and applies itself to one
connection's :class:`ConnectionFaults` (a per-direction :class:`DirectionPlan`, or a
connection-level action). :data:`FAULTS` lists them all, in the order their flags are read and
drawn; :func:`parse_faults` is what a command hands its flag values to.

The classes are also netkit's public fault types, built in toxiproxy's units: every duration is
a number of milliseconds, sizes are bytes, rates bytes per second, and ``direction`` is ``"up"``,
``"down"`` or ``"both"`` (``Latency(50, jitter=10, direction="down")``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal, Self

from netkit.core.units import parse_duration, parse_size
from netkit.errors import ConfigError, Setting, Words, words

Direction = Literal["up", "down"]
DIRECTIONS: tuple[Direction, Direction] = ("up", "down")
Directions = Literal["up", "down", "both"]
"""What a fault's ``direction`` takes: one direction, or both."""
SYNTAX = "VALUE[,up|down][,p=PROBABILITY]"
"""The shape of every fault flag's value (a :class:`Refuse` takes the probability alone)."""


def _split_modifiers(
    option: str, text: str, *, directed: bool = True
) -> tuple[str, Directions, float]:
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
    direction: Directions = directions[0] if len(set(directions)) == 1 else "both"
    return value, direction, probability


def _ms(text: str, option: str, *, bare_ms: bool = False) -> float:
    # A duration flag value in milliseconds. --latency and --slice take milliseconds when no
    # unit is given (toxiproxy's convention); the others take seconds then.
    if bare_ms and re.fullmatch(r"\s*[0-9.]+\s*", text):
        text = f"{text.strip()}ms"
    return round(parse_duration(text, option=option) * 1000, 9)


def _ms_text(ms: float) -> str:
    # repr is the shortest text that parses back to the same float.
    return f"{ms!r}ms"


def parse_rate(text: str, option: Words = Setting("bandwidth")) -> float:
    """Parse a rate such as ``1MB/s``, ``512KiB/s`` or ``10Mbit/s`` into bytes per second.

    ``option`` names what is parsed in the error message (a flag, or a setting).

    Raises:
        ConfigError: not a rate.
    """
    m = re.fullmatch(r"\s*(.+?)\s*(bit)?\s*/\s*s\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(
            words(option, f" {text!r} is not a rate such as 1MB/s, 512KiB/s or 10Mbit/s")
        )
    amount = parse_size(m.group(1) if not m.group(2) else m.group(1) or "1", option=option)
    rate = amount / 8 if m.group(2) else float(amount)
    if rate <= 0:
        raise ConfigError(words(option, f" {text!r} must be more than zero"))
    return rate


# --- the kinds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault from the command line; each kind is a subclass listed in :data:`FAULTS`.

    Attributes:
        name: the flag without its leading dashes, and the ``fault`` field of its events.
        help: the flag's one-line help.
        directed: False for a fault that acts on the whole connection before any byte flows.
        end_reason: how a connection this fault ends is reported (``fault: ...``).
        resets: True when that end is an RST, False for a FIN.
        direction: ``"up"`` (client → upstream), ``"down"`` (upstream → client) or ``"both"``.
        probability: chance per connection (toxiproxy's toxicity), from 0 to 1.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    directed: ClassVar[bool] = True
    end_reason: ClassVar[str] = ""
    resets: ClassVar[bool] = False

    direction: Directions = field(default="both", kw_only=True)
    probability: float = field(default=1.0, kw_only=True)

    def __post_init__(self) -> None:
        if self.direction not in ("up", "down", "both"):
            raise ConfigError(
                f"{self.name}: direction {self.direction!r} is not 'up', 'down' or 'both'"
            )
        if not self.directed and self.direction != "both":
            raise ConfigError(f"{self.name}: acts on the whole connection, it has no direction")
        if not 0 <= self.probability <= 1:
            raise ConfigError(f"{self.name}: probability {self.probability!r} is not from 0 to 1")
        for key, value in self.__dict__.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{self.name}: {key} {value!r} must not be negative")

    @property
    def directions(self) -> tuple[Direction, ...]:
        """The directions it applies to: ``("up",)``, ``("down",)`` or both."""
        return DIRECTIONS if self.direction == "both" else (self.direction,)

    @classmethod
    def option(cls) -> str:
        """The flag: ``--limit-data``."""
        return f"--{cls.name}"

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse the flag's value with its modifiers.

        Raises:
            ConfigError: with the option name and what is wrong.
        """
        option = cls.option()
        value, direction, probability = _split_modifiers(option, text, directed=cls.directed)
        fault = cls.parse_value(value, option, text)
        return replace(fault, direction=direction, probability=probability)

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        """Parse the value without its modifiers (``text`` is the whole flag value, for errors)."""
        raise NotImplementedError

    def values(self) -> dict[str, object]:
        """The kind's own fields for the JSON events."""
        return {}

    def value_text(self) -> str:
        """The value as a flag takes it (no modifiers)."""
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        """Fields for the JSON ``fault`` event."""
        return {"fault": self.name, **self.values()}

    def as_dict(self) -> dict[str, object]:
        """The whole fault, as the ``listening`` event lists it."""
        return self.describe() | {"directions": list(self.directions), "p": self.probability}

    def flag_value(self) -> str:
        """The flag value that parses back to this fault (modifiers included)."""
        parts = [self.value_text()]
        if self.direction != "both":
            parts.append(self.direction)
        if self.probability != 1:
            parts.append(f"p={self.probability!r}")
        return ",".join(parts)

    def apply(self, faults: ConnectionFaults) -> None:
        """Put this fault into one connection's faults: by default, into each direction's plan."""
        for name in self.directions:
            self.apply_to(faults.directions[name])

    def apply_to(self, plan: DirectionPlan) -> None:
        """Put this fault into one direction's plan."""


@dataclass(frozen=True)
class Latency(Fault):
    """Delay every byte by ``ms`` ± ``jitter`` milliseconds (order kept)."""

    name = "latency"
    help = "Delay data by MS[:JITTER] (e.g. 50 or 50ms:10ms)."

    ms: float
    jitter: float = 0.0

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        base, _, jitter = value.partition(":")
        return cls(_ms(base, option, bare_ms=True), _ms(jitter or "0", option, bare_ms=True))

    def values(self) -> dict[str, object]:
        return {"latency_ms": self.ms, "jitter_ms": self.jitter}

    def value_text(self) -> str:
        return f"{_ms_text(self.ms)}:{_ms_text(self.jitter)}"

    def apply_to(self, plan: DirectionPlan) -> None:
        plan.latency, plan.jitter = self.ms / 1000, self.jitter / 1000


@dataclass(frozen=True)
class Bandwidth(Fault):
    """Pass no more than ``rate`` bytes per second."""

    name = "bandwidth"
    help = "Cap the rate (e.g. 1MB/s, 10Mbit/s)."

    rate: float

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        return cls(parse_rate(value, option))

    def values(self) -> dict[str, object]:
        return {"bytes_per_s": self.rate}

    def value_text(self) -> str:
        # Parsed rates are whole bytes per second, or whole bits (1.25 B/s is 10bit/s).
        if self.rate.is_integer():
            return f"{int(self.rate)}/s"
        return f"{round(self.rate * 8)}bit/s"

    def apply_to(self, plan: DirectionPlan) -> None:
        plan.rate = self.rate


@dataclass(frozen=True)
class Slice(Fault):
    """Split data into writes of ``size`` ± ``variation`` bytes, ``delay`` ms apart."""

    name = "slice"
    help = "Split data into writes of BYTES[:DELAY]."

    size: int
    delay: float = 0.0
    variation: int = 0

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        size, _, delay = value.partition(":")
        nbytes = parse_size(size, option=option)
        if nbytes < 1:
            raise ConfigError(f"{option} {text!r}: slices are at least 1 byte")
        return cls(nbytes, _ms(delay or "0", option, bare_ms=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size - self.variation < 1:  # the smallest slice a variation allows
            raise ConfigError(f"{self.name}: slices are at least 1 byte (size minus variation)")

    def values(self) -> dict[str, object]:
        varies = {"variation_bytes": self.variation} if self.variation else {}
        return {"bytes": self.size, "delay_ms": self.delay, **varies}

    def value_text(self) -> str:
        return f"{self.size}:{_ms_text(self.delay)}"

    def apply_to(self, plan: DirectionPlan) -> None:
        plan.slice_size, plan.slice_delay = self.size, self.delay / 1000
        plan.slice_variation = self.variation


@dataclass(frozen=True)
class LimitData(Fault):
    """Close the connection (FIN) once ``size`` bytes have passed in a direction."""

    name = "limit-data"
    help = "Close after BYTES have passed."
    end_reason = "limit-data"

    size: int

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        return cls(parse_size(value, option=option))

    def values(self) -> dict[str, object]:
        return {"bytes": self.size}

    def value_text(self) -> str:
        return str(self.size)

    def apply_to(self, plan: DirectionPlan) -> None:
        plan.limit = self.size


@dataclass(frozen=True)
class ResetAfter(Fault):
    """Reset (RST) the connection after ``size`` bytes in a direction, or (``size`` 0) ``ms``
    milliseconds after its start."""

    name = "reset-after"
    help = "Reset (RST) after BYTES or a DURATION."
    end_reason = "reset"
    resets = True

    size: int = 0
    ms: float = 0.0

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        if re.fullmatch(r"\s*[0-9.]+\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*", value, re.IGNORECASE):
            return cls(size=parse_size(value, option=option))
        return cls(ms=_ms(value, option))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size and self.ms:
            raise ConfigError(f"{self.name}: give size (bytes) or ms, not both")

    def values(self) -> dict[str, object]:
        return {"bytes": self.size} if self.size else {"after_s": self.ms / 1000}

    def value_text(self) -> str:
        return str(self.size) if self.size else _ms_text(self.ms)

    def apply(self, faults: ConnectionFaults) -> None:
        if self.size:
            super().apply(faults)
        else:
            faults.reset_after_s = self.ms / 1000

    def apply_to(self, plan: DirectionPlan) -> None:
        plan.reset_bytes = self.size


@dataclass(frozen=True)
class BlackholeAfter(Fault):
    """Swallow data ``ms`` milliseconds into a connection; close ``close_after`` milliseconds
    later (0: never)."""

    name = "blackhole-after"
    help = (
        "Stop forwarding after DURATION[:CLOSE_AFTER]; keep the connection open, or close it "
        "CLOSE_AFTER later (toxiproxy's timeout toxic)."
    )
    end_reason = "blackhole-after"

    ms: float
    close_after: float = 0.0

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        # DURATION[:CLOSE_AFTER]: toxiproxy's timeout toxic closes CLOSE_AFTER into the blackhole.
        after, _, close_after = value.partition(":")
        return cls(_ms(after, option), _ms(close_after, option) if close_after else 0.0)

    def values(self) -> dict[str, object]:
        values: dict[str, object] = {"after_s": self.ms / 1000}
        if self.close_after:
            values["close_after_s"] = self.close_after / 1000
        return values

    def value_text(self) -> str:
        text = _ms_text(self.ms)
        return f"{text}:{_ms_text(self.close_after)}" if self.close_after else text

    def apply_to(self, plan: DirectionPlan) -> None:
        plan.blackhole_after, plan.blackhole_close_after = self.ms / 1000, self.close_after / 1000


@dataclass(frozen=True)
class DurationFault(Fault):
    """A fault whose value is one duration, ``ms`` milliseconds, shown in its events as
    ``json_key`` (in seconds)."""

    json_key: ClassVar[str]

    ms: float

    @property
    def seconds(self) -> float:
        """The duration in seconds."""
        return self.ms / 1000

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        return cls(_ms(value, option))

    def values(self) -> dict[str, object]:
        return {self.json_key: self.seconds}

    def value_text(self) -> str:
        return _ms_text(self.ms)


@dataclass(frozen=True)
class SlowClose(DurationFault):
    """Hold a direction's FIN for ``ms`` milliseconds before passing it on."""

    name = "slow-close"
    help = "Delay passing on a close (FIN) by DURATION, in the directions given."
    json_key = "after_s"

    def apply_to(self, plan: DirectionPlan) -> None:
        plan.slow_close = max(plan.slow_close, self.seconds)


@dataclass(frozen=True)
class AcceptDelay(DurationFault):
    """Hold a new connection ``ms`` milliseconds before relaying it."""

    name = "accept-delay"
    help = "Hold new connections this long before relaying (no direction: the whole connection)."
    directed = False
    json_key = "delay_s"

    def apply(self, faults: ConnectionFaults) -> None:
        faults.accept_delay = max(faults.accept_delay, self.seconds)


@dataclass(frozen=True)
class Refuse(Fault):
    """Accept a connection and reset it at once; the flag's value is the probability."""

    name = "refuse"
    help = "Accept and reset at once, with this probability (1 = always)."
    directed = False
    end_reason = "refuse"
    resets = True

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``P`` or ``p=P``, the probability from 0 to 1.

        Raises:
            ConfigError: not a probability.
        """
        try:
            probability = float(text.removeprefix("p="))
        except ValueError:
            probability = -1.0
        if not 0 <= probability <= 1:
            raise ConfigError(
                f"{cls.option()} {text!r}: give a probability from 0 to 1 (1 = every connection)"
            )
        return cls(probability=probability)

    def value_text(self) -> str:
        return repr(self.probability)

    def flag_value(self) -> str:
        return self.value_text()

    def apply(self, faults: ConnectionFaults) -> None:
        faults.refuse = True


FAULTS: tuple[type[Fault], ...] = (
    Latency, Bandwidth, Slice, LimitData, ResetAfter, BlackholeAfter, SlowClose, AcceptDelay, Refuse
)  # fmt: skip
"""Every kind of fault, in the order their flags are read and drawn (seeded runs repeat)."""

_BY_NAME: dict[str, type[Fault]] = {kind.name: kind for kind in FAULTS}


def fault_kind(name: str) -> type[Fault]:
    """The fault class for ``name`` (``limit-data``, ``limit_data`` or ``--limit-data``).

    Raises:
        ConfigError: no such fault.
    """
    kind = _BY_NAME.get(name.removeprefix("--").replace("_", "-"))
    if kind is None:
        raise ConfigError(f"unknown fault {name!r}")
    return kind


def parse_fault(kind: str, text: str) -> Fault:
    """Parse one fault flag's value.

    Raises:
        ConfigError: with the option name and what is wrong, or an unknown kind.
    """
    return fault_kind(kind).parse(text)


def parse_faults(flags: Mapping[str, Iterable[str] | None]) -> list[Fault]:
    """Parse every fault flag a command collected: ``{name: [value, ...]}``, in :data:`FAULTS` order.

    Raises:
        ConfigError: a bad value, or a name that is no fault.
    """
    given = {fault_kind(name): values for name, values in flags.items()}
    return [kind.parse(v) for kind in FAULTS for v in given.get(kind) or ()]


# --- one connection's faults ---------------------------------------------------------------


@dataclass
class DirectionPlan:
    """The faults one direction of one connection got, and the state to schedule its bytes."""

    latency: float = 0.0
    jitter: float = 0.0
    rate: float | None = None
    slice_size: int | None = None
    slice_delay: float = 0.0
    slice_variation: int = 0  # each slice is slice_size ± this many bytes
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
            sizes = self._slices(nbytes, rng)
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

    def _slices(self, nbytes: int, rng: random.Random) -> list[int]:
        # slice_size bytes each (± slice_variation, drawn from the seeded RNG), the last the rest.
        size, spread, sizes, left = self.slice_size or nbytes, self.slice_variation, [], nbytes
        while left > 0:
            sizes.append(min(left, rng.randint(size - spread, size + spread) if spread else size))
            left -= sizes[-1]
        return sizes


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


def draw(specs: Iterable[Fault], rng: random.Random) -> ConnectionFaults:
    """Decide, for one new connection, which faults apply (each by its probability)."""
    faults = ConnectionFaults()
    for spec in specs:
        if spec.probability < 1 and rng.random() >= spec.probability:
            continue
        faults.applied.append({**spec.describe(), "directions": list(spec.directions)})
        spec.apply(faults)
    return faults

"""Datagram faults for the UDP relay: the kinds, typed as the stream faults are (sans-I/O).

A datagram relay can do what a byte stream cannot: lose, duplicate, reorder, corrupt and
truncate single datagrams. Each kind is a :class:`~netkit.core.faults.Fault` subclass, with the
same flag grammar (``VALUE[,up|down][,p=P]``), units (milliseconds, bytes, bytes per second)
and ``direction=`` keyword as the stream faults: ``Loss(0.3)``, ``Duplicate(0.1,
direction="down")``, ``Rate(1_000_000, queue=0)``. Their ``probability`` (``p=``) is, as for
every fault, the chance that a *flow* gets the fault; a :class:`ChanceFault`'s first value is
its chance per datagram of a flow that got it (``Loss(0.3)``: 30% of them are lost).

Each kind acts on one :class:`Datagram` at a time (:meth:`DatagramFault.act`), with its own
RNG and state, inside a :class:`~netkit.core.datagram_schedule.DatagramSchedule`.
:data:`DATAGRAM_FAULTS` lists the kinds a UDP relay applies, in the order their flags are read
and act; :class:`~netkit.core.faults.Latency` is among them (``ms`` ± ``jitter``, order kept:
ask for reordering with :class:`Reorder`). :func:`check_transport` refuses a fault that does
not apply to a transport (UDP, or a stream).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

from netkit.core.faults import (
    FAULTS,
    Fault,
    Latency,
    _ms,
    _ms_text,
    parse_rate,
)
from netkit.core.units import parse_size
from netkit.errors import ConfigError

QUEUE_LIMIT = 1000
"""Datagrams one direction of one flow may hold (delayed, queued, held back): netem's limit."""
HOLD_BYTES = 64 * 1024 * 1024
"""Bytes every flow of one relay may hold together, by default (:class:`HoldBudget`)."""


def parse_chance(text: str, option: str, whole: str) -> float:
    """A chance per datagram: ``0.3`` or ``30%``.

    Raises:
        ConfigError: not a number from 0 to 1 (0% to 100%).
    """
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ConfigError(f"{option} {whole!r}: {text!r} is not a chance such as 0.3 or 30%")
    return value


def _fields(value: str, option: str, whole: str, most: int) -> list[str]:
    parts = value.split(":")
    if len(parts) > most or not parts[0].strip():
        raise ConfigError(f"{option} {whole!r}: expected {most} value(s) at most, ':' between")
    return parts


# --- the kinds -------------------------------------------------------------------------------


@dataclass
class Datagram:
    """One datagram on its way through a :class:`DatagramSchedule`; faults act on it.

    Attributes:
        seq: its number in its direction of its flow, from 0.
        data: its bytes (a fault that changes them replaces them).
        now: when it arrived (seconds).
        due: when it is to go.
        copies: how many times it goes.
        hold: the :class:`Reorder` holding it back, if one does.
        dropped: a fault dropped it (no later fault sees it).
    """

    seq: int
    data: bytes
    now: float
    due: float
    copies: int = 1
    hold: Reorder | None = None
    dropped: bool = False


Extra = dict[str, object] | None
"""What a fault's :meth:`~DatagramFault.act` returns: its event's extra fields when it acted."""


@dataclass(frozen=True)
class DatagramFault(Fault):
    """A fault only a datagram relay applies: it acts on each :class:`Datagram` of a flow."""

    def apply(self, faults: object) -> None:
        """A datagram fault has no place in a stream connection's plan."""
        raise ConfigError(f"{self.option()} applies to UDP relays only")

    def new_state(self) -> object:
        """What the fault keeps between the datagrams of one direction of one flow."""
        return None

    def act(self, datagram: Datagram, rng: random.Random, state: object) -> Extra:
        """Act on one datagram; the event's extra fields when the fault was injected, else None."""
        raise NotImplementedError


@dataclass(frozen=True)
class ChanceFault(DatagramFault):
    """A datagram fault that hits each datagram with ``chance``, independently."""

    chance: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.chance <= 1:
            raise ConfigError(f"{self.name}: chance {self.chance!r} is not from 0 to 1")

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        return cls(parse_chance(value, option, text))

    def values(self) -> dict[str, object]:
        return {"chance": self.chance}

    def value_text(self) -> str:
        return repr(self.chance)

    def act(self, datagram: Datagram, rng: random.Random, state: object) -> Extra:
        if rng.random() >= self.chance:
            return None
        return self.hit(datagram, rng)

    def hit(self, datagram: Datagram, rng: random.Random) -> Extra:
        """Do the fault to a datagram it hit; the event's extra fields, or None if unchanged."""
        raise NotImplementedError


@dataclass(frozen=True)
class Loss(ChanceFault):
    """Lose each datagram with ``chance``, independently of the others."""

    name = "loss"
    help = "Lose datagrams: CHANCE (0.3 or 30%), each independently."

    def hit(self, datagram: Datagram, rng: random.Random) -> Extra:
        datagram.dropped = True
        return {}


@dataclass
class _BurstState:
    bad: bool = False


@dataclass(frozen=True)
class BurstLoss(ChanceFault):
    """Lose datagrams in bursts: the Gilbert-Elliott model, as netem's ``loss gemodel``.

    Two states: in *good*, a datagram is lost with ``good_loss``; in *bad*, with ``bad_loss``.
    After each datagram, good turns bad with ``chance`` (netem's p) and bad turns good with
    ``recover`` (netem's r). The mean loss is ``(chance * bad_loss + recover * good_loss) /
    (chance + recover)``; a stay in the bad state lasts ``1 / recover`` datagrams on average.
    """

    name = "burst-loss"
    help = (
        "Lose datagrams in bursts (Gilbert-Elliott, as netem's gemodel): P:R[:BAD_LOSS[:GOOD_LOSS]]"
        " - P good->bad, R bad->good, the loss in each state (100% and 0% by default)."
    )

    recover: float = 1.0
    bad_loss: float = 1.0
    good_loss: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("recover", "bad_loss", "good_loss"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{self.name}: {key} {getattr(self, key)!r} is not from 0 to 1")

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        parts = [parse_chance(p, option, text) for p in _fields(value, option, text, 4)]
        if len(parts) < 2:
            raise ConfigError(f"{option} {text!r}: give P:R at least (e.g. 1%:30%)")
        return cls(*parts)

    @property
    def mean_loss(self) -> float:
        """The long-run share of datagrams lost."""
        total = self.chance + self.recover
        if not total:
            return self.good_loss
        return (self.chance * self.bad_loss + self.recover * self.good_loss) / total

    def values(self) -> dict[str, object]:
        return {
            "chance": self.chance,
            "recover": self.recover,
            "bad_loss": self.bad_loss,
            "good_loss": self.good_loss,
        }

    def value_text(self) -> str:
        return f"{self.chance!r}:{self.recover!r}:{self.bad_loss!r}:{self.good_loss!r}"

    def new_state(self) -> object:
        return _BurstState()

    def act(self, datagram: Datagram, rng: random.Random, state: object) -> Extra:
        # Lost by the loss of the state it arrives in; then the state may change (netem).
        assert isinstance(state, _BurstState)
        bad = state.bad
        lost = rng.random() < (self.bad_loss if bad else self.good_loss)
        if rng.random() < (self.recover if bad else self.chance):
            state.bad = not bad
        if not lost:
            return None
        datagram.dropped = True
        return {"state": "bad" if bad else "good"}


@dataclass(frozen=True)
class Duplicate(ChanceFault):
    """Send each datagram twice with ``chance``; the copy follows the original."""

    name = "duplicate"
    help = "Duplicate datagrams: CHANCE (the copy follows the original)."

    def hit(self, datagram: Datagram, rng: random.Random) -> Extra:
        datagram.copies = 2
        return {}


@dataclass(frozen=True)
class Reorder(ChanceFault):
    """Hold a datagram back with ``chance`` until ``gap`` later datagrams have gone, or
    ``max_hold`` milliseconds have passed (whichever comes first)."""

    name = "reorder"
    help = (
        "Reorder datagrams: CHANCE[:GAP[:MAX_HOLD]] - hold one back until GAP later ones went"
        " (1), or MAX_HOLD passed (100ms)."
    )

    gap: int = 1
    max_hold: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gap < 1:
            raise ConfigError(f"{self.name}: gap {self.gap!r} must be at least 1")

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        parts = _fields(value, option, text, 3)
        gap = _count(parts[1] if len(parts) > 1 else "1", option, text, "GAP")
        hold = _ms(parts[2], option, bare_ms=True) if len(parts) > 2 else 100.0
        return cls(parse_chance(parts[0], option, text), gap, hold)

    def values(self) -> dict[str, object]:
        return {"chance": self.chance, "gap": self.gap, "max_hold_ms": self.max_hold}

    def value_text(self) -> str:
        return f"{self.chance!r}:{self.gap}:{_ms_text(self.max_hold)}"

    def hit(self, datagram: Datagram, rng: random.Random) -> Extra:
        datagram.hold = self
        return {"gap": self.gap}


@dataclass(frozen=True)
class Corrupt(ChanceFault):
    """Flip ``bits`` random bits of a datagram with ``chance``."""

    name = "corrupt"
    help = "Corrupt datagrams: CHANCE[:BITS] - flip BITS random bits (1) in each one hit."

    bits: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits < 1:
            raise ConfigError(f"{self.name}: bits {self.bits!r} must be at least 1")

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        parts = _fields(value, option, text, 2)
        bits = _count(parts[1] if len(parts) > 1 else "1", option, text, "BITS")
        return cls(parse_chance(parts[0], option, text), bits)

    def values(self) -> dict[str, object]:
        return {"chance": self.chance, "bits": self.bits}

    def value_text(self) -> str:
        return f"{self.chance!r}:{self.bits}"

    def hit(self, datagram: Datagram, rng: random.Random) -> Extra:
        total = len(datagram.data) * 8
        if not total:
            return None
        positions = sorted(rng.sample(range(total), min(self.bits, total)))
        flipped = bytearray(datagram.data)  # a copy: the bytes given may be shared
        for bit in positions:
            flipped[bit // 8] ^= 0x80 >> (bit % 8)
        datagram.data = bytes(flipped)
        return {"bits": positions}


@dataclass(frozen=True)
class Truncate(ChanceFault):
    """Cut a datagram to ``size`` bytes with ``chance`` (``size`` 0: a random shorter length)."""

    name = "truncate"
    help = (
        "Truncate datagrams: CHANCE[:BYTES] - cut each one hit to BYTES (0 or none: a random"
        " shorter length)."
    )

    size: int = 0

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        parts = _fields(value, option, text, 2)
        size = parse_size(parts[1], option=option) if len(parts) > 1 else 0
        return cls(parse_chance(parts[0], option, text), size)

    def values(self) -> dict[str, object]:
        return {"chance": self.chance, "bytes": self.size}

    def value_text(self) -> str:
        return f"{self.chance!r}:{self.size}"

    def hit(self, datagram: Datagram, rng: random.Random) -> Extra:
        n = len(datagram.data)
        size = self.size if self.size else rng.randrange(n or 1)
        if size >= n:
            return None
        datagram.data = datagram.data[:size]
        return {"truncated_to": size}


@dataclass
class _Link:
    free_at: float = 0.0  # when the link has sent everything given to it so far
    waiting: deque[float] = field(default_factory=deque)  # when each queued datagram starts


@dataclass(frozen=True)
class Rate(DatagramFault):
    """Pass no more than ``rate`` bytes per second; up to ``queue`` datagrams wait for the
    link, the others are dropped (``queue`` 0: drop whatever exceeds the rate, a policer)."""

    name = "rate"
    help = (
        "Cap the rate: RATE[:QUEUE|:drop] (e.g. 1MB/s, 10Mbit/s:50); up to QUEUE datagrams wait"
        " (1000), the rest are dropped; drop: none wait."
    )

    rate: float
    queue: int = QUEUE_LIMIT

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rate <= 0:
            raise ConfigError(f"{self.name}: rate {self.rate!r} must be more than zero")

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        rate, _, queue = value.partition(":")
        queue = queue.strip().lower()
        if queue and queue != "drop" and not queue.isdigit():
            raise ConfigError(f"{option} {text!r}: after ':' give a queue length or 'drop'")
        depth = 0 if queue == "drop" else int(queue) if queue else QUEUE_LIMIT
        return cls(parse_rate(rate, option), depth)

    def values(self) -> dict[str, object]:
        return {"bytes_per_s": self.rate, "queue": self.queue}

    def value_text(self) -> str:
        rate = f"{int(self.rate)}/s" if self.rate.is_integer() else f"{round(self.rate * 8)}bit/s"
        return f"{rate}:{self.queue if self.queue else 'drop'}"

    def new_state(self) -> object:
        return _Link()

    def act(self, datagram: Datagram, rng: random.Random, state: object) -> Extra:
        assert isinstance(state, _Link)
        while state.waiting and state.waiting[0] <= datagram.now:
            state.waiting.popleft()
        start = max(datagram.due, state.free_at)
        if start > datagram.due and len(state.waiting) >= self.queue:
            datagram.dropped = True
            return {"reason": "rate queue full" if self.queue else "over the rate"}
        state.free_at = start + len(datagram.data) * datagram.copies / self.rate
        if start > datagram.now:
            state.waiting.append(start)
        datagram.due = start
        return None


@dataclass(frozen=True)
class DropFirst(DatagramFault):
    """Drop the first ``count`` datagrams of a flow in each direction: a lost handshake."""

    name = "drop-first"
    help = "Drop the first N datagrams of each flow (a lost handshake); the flow then goes on."

    count: int

    @classmethod
    def parse_value(cls, value: str, option: str, text: str) -> Self:
        return cls(_count(value, option, text, "N", least=0))

    def values(self) -> dict[str, object]:
        return {"count": self.count}

    def value_text(self) -> str:
        return str(self.count)

    def act(self, datagram: Datagram, rng: random.Random, state: object) -> Extra:
        if datagram.seq >= self.count:
            return None
        datagram.dropped = True
        return {}


def delay(fault: Latency, datagram: Datagram, rng: random.Random, last_due: float) -> None:
    """Latency ± jitter for one datagram, never earlier than ``last_due`` (order kept)."""
    # than the datagram before it (order kept).
    delay = fault.ms + (rng.uniform(-fault.jitter, fault.jitter) if fault.jitter else 0.0)
    datagram.due = max(datagram.now + max(delay, 0.0) / 1000, last_due)


def _count(text: str, option: str, whole: str, what: str, *, least: int = 1) -> int:
    text = text.strip()
    if not text.isdigit() or int(text) < least:
        raise ConfigError(f"{option} {whole!r}: {what} {text!r} is not a count ({least} or more)")
    return int(text)


DATAGRAM_FAULTS: tuple[type[Fault], ...] = (
    DropFirst, Loss, BurstLoss, Corrupt, Truncate, Duplicate, Latency, Rate, Reorder
)  # fmt: skip
"""Every fault a UDP relay applies, in the order their flags are read and applied to a datagram."""
STREAM_ONLY: tuple[type[Fault], ...] = tuple(k for k in FAULTS if k not in DATAGRAM_FAULTS)
"""The stream faults a UDP relay refuses (they act on bytes, half-closes, connections)."""
DATAGRAM_ONLY: tuple[type[Fault], ...] = tuple(k for k in DATAGRAM_FAULTS if k not in FAULTS)
"""The datagram faults a stream relay refuses."""


def check_transport(faults: Iterable[Fault], transport: str) -> None:
    """Refuse faults that do not apply to ``transport`` (``"udp"``, or anything else: a stream).

    Raises:
        ConfigError: naming the first fault that does not apply.
    """
    datagrams = transport == "udp"
    for fault in faults:
        if datagrams and not isinstance(fault, DATAGRAM_FAULTS):
            raise ConfigError(
                f"{fault.option()} applies to TCP and Unix relays, not to UDP "
                f"(UDP relays take {', '.join(k.option() for k in DATAGRAM_FAULTS)})"
            )
        if not datagrams and isinstance(fault, DatagramFault):
            raise ConfigError(f"{fault.option()} applies to UDP relays only (udp://LISTEN)")

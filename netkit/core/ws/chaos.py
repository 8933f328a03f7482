"""The chaos plan of ``ws-server --chaos``: seeded faults a WebSocket client must survive.

Each ``--chaos`` flag is one fault, ``NAME[=VALUE][,p=PROBABILITY]`` (proxy's fault flags
read the same way: a value, then modifiers after commas; ``probability=`` is ``p=`` spelt
out). ``p`` is the chance, 1 by default, drawn for each *unit* the fault acts on: every
message the server sends (``fragment``, ``interleave``, ``oversize``), every message it
receives (``slow-read``), every ping it receives (``late-pong``, ``no-pong``), or once per
connection (``reset``, ``fin``)::

    fragment=8            send each message as 8 frames (continuations, some maybe empty)
    interleave=2          2 pings between each two frames of a message (2 frames at least)
    oversize[=SIZE]       send a frame of SIZE bytes instead of the message (1 MiB + 1 by
                          default: one byte over the default limit of netkit and websockets)
    late-pong=DURATION    answer a ping only DURATION later
    no-pong               never answer a ping
    slow-read=DURATION    stop reading for DURATION after a message arrives
    reset[=WHEN]          reset the connection (TCP RST), no close frame
    fin[=WHEN]            close the TCP connection (FIN) without a close frame

``WHEN`` is a number of messages received (``reset=3``: on the third, before answering
it) or a duration after the opening handshake (``fin=2s``); without it, at once.

Draws repeat: each connection's faults come from random generators seeded with the seed,
the connection's number (1 for the first accepted) and the unit, so the same seed and
the same client traffic give the same faults, whatever the timing between messages and
pings. Every fault applied is described by a dict (:attr:`ConnectionChaos.events`) that
the server logs as a ``fault`` event.

This module decides and writes the frames (sans-I/O); :mod:`netkit.net.ws_chaos` applies
it to a server connection. The frames are ordinary RFC 6455 frames written by
:class:`~netkit.core.ws.frames.FrameWriter`; the connection's parser and closing handshake
are untouched.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Self

from netkit.core.units import parse_duration, parse_size
from netkit.core.ws.frames import Frame, FrameWriter, Opcode, Side, serialize_header
from netkit.core.ws.mask import Buffer
from netkit.errors import ConfigError, Setting, words

CHAOS = Setting("chaos")
SYNTAX = "NAME[=VALUE][,p=PROBABILITY]"
"""The shape of one chaos fault (``--chaos``)."""
MAX_OVERSIZE = 1 << 30  # the largest frame oversize announces and sends
_ZEROS = bytes(64 << 10)  # the oversized payload is this block, referenced again and again


class Unit(enum.Enum):
    """What a fault's probability is drawn for."""

    SENT = "message sent"
    RECEIVED = "message received"
    PING = "ping received"
    CONNECTION = "connection"


def _error(spec: str, problem: str) -> ConfigError:
    return ConfigError(words(CHAOS, f" {spec!r}: {problem}"))


def _seconds(value: str, spec: str) -> float:
    seconds = parse_duration(value, option=words(CHAOS, f" {spec!r}:"))
    if seconds < 0:
        raise _error(spec, "a duration is 0 or more")
    return seconds


def _count(value: str, spec: str, least: int) -> int:
    if not re.fullmatch(r"[0-9]+", value) or int(value) < least:
        raise _error(spec, f"{value!r} is not a whole number of at least {least}")
    return int(value)


@dataclass(frozen=True)
class ChaosFault:
    """One chaos fault; each kind is a subclass listed in :data:`CHAOS_FAULTS`.

    Attributes:
        name: what the spec calls it, and the ``fault`` field of its events.
        help: one line for the help text.
        unit: what ``probability`` is drawn for.
        needs_value: the spec must give ``=VALUE``.
        probability: chance per unit, from 0 to 1.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    unit: ClassVar[Unit]
    needs_value: ClassVar[bool] = True

    probability: float = field(default=1.0, kw_only=True)

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ConfigError(f"{self.name}: probability {self.probability!r} is not from 0 to 1")

    @classmethod
    def parse_value(cls, value: str, spec: str) -> Self:
        """Parse the value (``""`` when the spec gives none); ``spec`` is for errors."""
        raise NotImplementedError

    def values(self) -> dict[str, object]:
        """The kind's own fields, for the ``listening`` event and the ``fault`` events."""
        return {}

    def as_dict(self) -> dict[str, object]:
        """The whole fault, as the ``listening`` event lists it."""
        return {"fault": self.name, **self.values(), "per": self.unit.value, "p": self.probability}


@dataclass(frozen=True)
class Counted(ChaosFault):
    """A fault with a number, at least ``least`` (its event names it ``key``)."""

    least: ClassVar[int]
    key: ClassVar[str]
    count: int = 2

    @classmethod
    def parse_value(cls, value: str, spec: str) -> Self:
        return cls(_count(value, spec, cls.least))

    def values(self) -> dict[str, object]:
        return {self.key: self.count}


@dataclass(frozen=True)
class Fragment(Counted):
    """Send each message as ``count`` frames, its payload split as evenly as it goes."""

    name = "fragment"
    help = "send each message as N frames"
    unit, least, key = Unit.SENT, 2, "frames"


@dataclass(frozen=True)
class Interleave(Counted):
    """Send ``count`` pings between each two frames of a message (5.4: control frames may
    come between fragments)."""

    name = "interleave"
    help = "N pings between the frames of a message"
    unit, least, key = Unit.SENT, 1, "pings"


@dataclass(frozen=True)
class Oversize(ChaosFault):
    """Instead of the message, send one binary frame of ``size`` bytes (zeros): a client
    whose limit is lower must fail the connection with 1009 (7.4.1)."""

    name = "oversize"
    help = "a frame of SIZE bytes instead of the message"
    unit = Unit.SENT
    needs_value = False
    size: int = (1 << 20) + 1

    @classmethod
    def parse_value(cls, value: str, spec: str) -> Self:
        if not value:
            return cls()
        size = parse_size(value, option=words(CHAOS, f" {spec!r}:"))
        if not 1 <= size <= MAX_OVERSIZE:
            raise _error(spec, "an oversized frame is from 1 byte to 1 GiB")
        return cls(size)

    def values(self) -> dict[str, object]:
        return {"bytes": self.size}


@dataclass(frozen=True)
class Timed(ChaosFault):
    """A fault that lasts ``seconds`` (its event names it ``field_ms``, in milliseconds)."""

    field_ms: ClassVar[str]
    seconds: float = 0.0

    @classmethod
    def parse_value(cls, value: str, spec: str) -> Self:
        return cls(_seconds(value, spec))

    def values(self) -> dict[str, object]:
        return {self.field_ms: round(self.seconds * 1000, 3)}


@dataclass(frozen=True)
class SlowRead(Timed):
    """Stop reading for ``seconds`` after a message arrives."""

    name = "slow-read"
    help = "stop reading for DURATION after a message"
    unit, field_ms = Unit.RECEIVED, "pause_ms"


@dataclass(frozen=True)
class LatePong(Timed):
    """Answer a ping only ``seconds`` later."""

    name = "late-pong"
    help = "answer a ping DURATION late"
    unit, field_ms = Unit.PING, "delay_ms"


@dataclass(frozen=True)
class NoPong(ChaosFault):
    """Never answer a ping."""

    name = "no-pong"
    help = "never answer a ping"
    unit = Unit.PING
    needs_value = False

    @classmethod
    def parse_value(cls, value: str, spec: str) -> Self:
        if value:
            raise _error(spec, "no-pong takes no value")
        return cls()


@dataclass(frozen=True)
class Cut(ChaosFault):
    """End the connection without a close frame, after ``messages`` messages received or
    ``delay`` seconds after the opening handshake (at once when both are 0)."""

    unit = Unit.CONNECTION
    needs_value = False
    resets: ClassVar[bool]
    messages: int = 0
    delay: float = 0.0

    @classmethod
    def parse_value(cls, value: str, spec: str) -> Self:
        if not value:
            return cls()
        if re.fullmatch(r"[0-9]+", value):
            return cls(messages=int(value))
        return cls(delay=_seconds(value, spec))

    def values(self) -> dict[str, object]:
        if self.messages:
            return {"after_messages": self.messages}
        return {"after_ms": round(self.delay * 1000, 3)}


@dataclass(frozen=True)
class Reset(Cut):
    """Reset the connection (TCP RST)."""

    name = "reset"
    help = "reset the connection (TCP RST), at once or =N messages or =DURATION after the open"
    resets = True


@dataclass(frozen=True)
class Fin(Cut):
    """Close the TCP connection (FIN) without a close frame: the client sees 1006."""

    name = "fin"
    help = "close with FIN and no close frame, as reset"
    resets = False


CHAOS_FAULTS: tuple[type[ChaosFault], ...] = (
    Fragment,
    Interleave,
    Oversize,
    LatePong,
    NoPong,
    SlowRead,
    Reset,
    Fin,
)
"""Every chaos fault kind, in the order their draws are made."""
_BY_NAME = {kind.name: kind for kind in CHAOS_FAULTS}


def parse_chaos(spec: str) -> ChaosFault:
    """Parse one ``--chaos`` value: ``NAME[=VALUE][,p=PROBABILITY]``.

    Raises:
        ConfigError: an unknown name, a bad value or modifier.
    """
    head, *modifiers = [part.strip() for part in spec.split(",")]
    name, _, value = head.partition("=")
    kind = _BY_NAME.get(name.strip())
    if kind is None:
        known = ", ".join(_BY_NAME)
        raise _error(spec, f"unknown fault {name.strip()!r} (one of {known})")
    if kind.needs_value and not value.strip():
        raise _error(spec, f"{kind.name} needs a value ({kind.name}=...)")
    probability = 1.0
    for modifier in modifiers:
        key, eq, number = modifier.partition("=")
        if not eq or key.strip() not in ("p", "probability"):
            raise _error(spec, f"unknown modifier {modifier!r} (use p=0.5)")
        try:
            probability = float(number)
        except ValueError:
            probability = -1
        if not 0 <= probability <= 1:
            raise _error(spec, "p= takes a probability from 0 to 1")
    fault = kind.parse_value(value.strip(), spec)
    return replace(fault, probability=probability)


def parse_chaos_specs(specs: Iterable[str]) -> list[ChaosFault]:
    """Parse every ``--chaos`` value, in the order given.

    Raises:
        ConfigError: as :func:`parse_chaos`.
    """
    return [parse_chaos(spec) for spec in specs]


# --- one connection ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """How one message the server sends goes out.

    Attributes:
        frames: the buffers to write in place of the message; empty to send it as usual.
        pings: the payloads of the pings among them (to track their pongs).
    """

    frames: list[Buffer] = field(default_factory=list)
    pings: list[bytes] = field(default_factory=list)


class ConnectionChaos:
    """The faults of one connection, drawn as its traffic goes.

    Args:
        faults: the server's chaos faults.
        seed: the server's seed.
        number: the connection's number (1 for the first accepted).

    Attributes:
        events: a dict for each fault applied (``fault`` and its fields), for the I/O layer
            to take and log.
        cuts: the connection's ``reset``/``fin`` faults, drawn at :meth:`opened`.
    """

    def __init__(self, faults: Sequence[ChaosFault], seed: int, number: int) -> None:
        self.faults = list(faults)
        self._rngs = {unit: random.Random(f"{seed}/{number}/{unit.name}") for unit in Unit}
        self._writer = FrameWriter(Side.SERVER)
        self.events: list[dict[str, object]] = []
        self.cuts: list[Cut] = []
        self.sent = self.received = self.pings = 0

    def _drawn(self, unit: Unit) -> list[ChaosFault]:
        rng = self._rngs[unit]
        chosen = []
        for fault in self.faults:
            if fault.unit is unit and (fault.probability >= 1 or rng.random() < fault.probability):
                chosen.append(fault)
        return chosen

    def _applied(self, fault: ChaosFault, **fields: object) -> None:
        self.events.append({"fault": fault.name, **fault.values(), **fields})

    def take_events(self) -> list[dict[str, object]]:
        """The events of the faults applied since the last call."""
        events, self.events = self.events, []
        return events

    def opened(self) -> list[Cut]:
        """The opening handshake completed: draw the connection's cuts.

        Returns:
            The cuts due after a delay (0 for at once), for the I/O layer to time; the
            ones counted in messages wait for :meth:`message_received`.
        """
        self.cuts = [f for f in self._drawn(Unit.CONNECTION) if isinstance(f, Cut)]
        return [cut for cut in self.cuts if not cut.messages]

    def cut_fired(self, cut: Cut) -> None:
        """A cut is being applied (logs it); later cuts no longer apply."""
        self._applied(cut, **({"message": self.received} if cut.messages else {}))
        self.cuts = []

    def message_received(self) -> tuple[Cut | None, float]:
        """A message arrived: the cut due on it, if any, and how long to stop reading."""
        self.received += 1
        cut = next((c for c in self.cuts if c.messages == self.received), None)
        if cut is not None:
            self.cut_fired(cut)
            return cut, 0.0
        pause = 0.0
        for fault in self._drawn(Unit.RECEIVED):
            assert isinstance(fault, SlowRead)
            self._applied(fault, message=self.received)
            pause = max(pause, fault.seconds)
        return None, pause

    def ping_received(self) -> float | None:
        """A ping arrived: seconds to wait before answering (0: at once), None: never."""
        self.pings += 1
        delay: float | None = 0.0
        for fault in self._drawn(Unit.PING):
            self._applied(fault, ping=self.pings)
            if isinstance(fault, NoPong):
                delay = None
            elif delay is not None and isinstance(fault, LatePong):
                delay = max(delay, fault.seconds)
        return delay

    def message_sent(self, data: Buffer, text: bool) -> Outgoing:
        """A message is to be sent: the frames to write instead, if a fault applies."""
        self.sent += 1
        chosen = {type(f): f for f in self._drawn(Unit.SENT)}
        oversize = chosen.get(Oversize)
        if isinstance(oversize, Oversize):
            self._applied(oversize, message=self.sent)
            return Outgoing(oversized(oversize.size))
        fragment, interleave = chosen.get(Fragment), chosen.get(Interleave)
        if fragment is None and interleave is None:
            return Outgoing()
        frames = fragment.count if isinstance(fragment, Fragment) else 2
        pings = interleave.count if isinstance(interleave, Interleave) else 0
        for fault in (fragment, interleave):
            if fault is not None:
                self._applied(fault, message=self.sent)
        payloads = [f"chaos {self.sent}.{n}".encode() for n in range(pings * (frames - 1))]
        opcode = Opcode.TEXT if text else Opcode.BINARY
        return Outgoing(self.fragmented(opcode, data, frames, payloads), payloads)

    def fragmented(
        self, opcode: Opcode, data: Buffer, frames: int, pings: Sequence[bytes]
    ) -> list[Buffer]:
        """``data`` as ``frames`` data frames (5.4), the ``pings`` spread evenly between them.

        The pieces are views of ``data`` (no copy); a piece may be empty when the message
        has fewer bytes than frames, and a text message may be split inside a character.
        """
        view = memoryview(data).cast("B")
        size, out = len(view), list[Buffer]()
        per_gap = len(pings) // (frames - 1) if frames > 1 else 0
        for i in range(frames):
            piece = view[size * i // frames : size * (i + 1) // frames]
            out += self._writer.write_data(opcode, piece, fin=i == frames - 1)
            opcode = Opcode.CONT
            for payload in pings[i * per_gap : (i + 1) * per_gap] if i < frames - 1 else ():
                out += self._writer.write(Frame(Opcode.PING, payload))
        return out


def oversized(size: int) -> list[Buffer]:
    """One binary frame of ``size`` zero bytes: its header, then the payload in blocks."""
    out: list[Buffer] = [serialize_header(Opcode.BINARY, size)]
    whole, rest = divmod(size, len(_ZEROS))
    out += [_ZEROS] * whole
    if rest:
        out.append(memoryview(_ZEROS)[:rest])
    return out

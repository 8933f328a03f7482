"""What a ``netkit bench`` run does: :class:`LoadPlan` (the whole run, or one worker's share),
open-loop :class:`Pacing`, the payload memory a run needs, and ``--rate`` parsing.

Open loop (``--rate``) follows wrk2: request ``k`` of a connection has an *intended* send time
fixed in advance, and its latency is measured from that time, not from when it was really sent.
A server that stalls therefore shows the stall in every request that should have been sent
during it (no coordinated omission)."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from netkit.core.streamtest import Direction
from netkit.core.units import format_size
from netkit.errors import ConfigError, Setting

if TYPE_CHECKING:  # stages.py imports this module
    from netkit.core.bench.stages import Stages


class Scenario(enum.StrEnum):
    """What a bench run does (``--scenario``); its value is its name in reports."""

    ECHO = "echo"  # request/response round trips
    STREAM = "stream"  # bulk one-way writes, as fast as the peer reads
    CONNECT = "connect"  # connections per second
    BITRATE = "bitrate"  # UDP datagrams paced at a bitrate, counted by the receiver (-b)
    # HTTP requests: what the echo scenario does against an HTTP target, under its own name
    # in reports (a result's label, not a --scenario choice).
    REQUEST = "request"

    @property
    def unit(self) -> str:
        """What one counted request is: ``request``, ``write`` or ``connection``."""
        return _UNITS[self]


_UNITS = {
    Scenario.ECHO: "request",
    Scenario.STREAM: "write",
    Scenario.CONNECT: "connection",
    Scenario.BITRATE: "datagram",
    Scenario.REQUEST: "request",
}
CHOICES = (Scenario.ECHO, Scenario.STREAM, Scenario.CONNECT)
"""The scenarios a run can be asked for (``--scenario``)."""
PLANNED = (*CHOICES, Scenario.BITRATE)
"""The scenarios a plan runs: the bitrate one is asked for with ``-b``, not by name."""

# The settings a plan's errors mention (the command line shows them as its flags).
SCENARIO, CONNECTIONS, PIPELINE = Setting("scenario"), Setting("connections"), Setting("pipeline")
BITRATE, WARMUP = Setting("bitrate"), Setting("warmup")
DIRECTION = Setting("direction")
RATE, DURATION, REQUESTS, SIZE = (
    Setting("rate"),
    Setting("duration"),
    Setting("requests"),
    Setting("size"),
)
STAGES = Setting("stages")

# What a k or M suffix multiplies by, in --fail-if values and --rate.
SCALE = {"": 1, "k": 1e3, "m": 1e6}
NUMBER = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmM]?)$")


# --- the plan: what one run (and each worker) does ---------------------------------------


def split_evenly(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` integers that differ by at most one, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class LoadPlan:
    """What to do: the whole run, or one worker's share of it.

    Attributes:
        scenario: what the run does (a :class:`Scenario`, or its name).
        connections: connections this plan opens (concurrent ones, for ``connect``).
        first_connection: global index of the first of them (spreads open-loop send times).
        total_connections: connections of the whole run, all workers together.
        duration: seconds of measurement, or None when ``requests`` bounds the run.
        requests: requests to complete (this plan's share), or None for a timed run.
        size: bytes per request (per write, for ``stream``).
        pipeline: requests in flight per connection.
        rate: requests/s of the whole run (open loop), or None (closed loop).
        warmup: seconds of load before measuring.
        timeout: seconds allowed to connect and for each response.
        exchange: ``connect`` only: send one request and verify its echo before closing.
        stages: ``--stages``: a ramping rate (open loop) or ramping connections (closed
            loop) instead of ``rate``; ``duration`` is then the stages' total.
        rank_offset, rank_stride: ramping connections open in turn across the shares of a
            run (see :meth:`split`): this plan's slot ``j`` is the run's
            ``rank_offset + j * rank_stride``-th to open. Splits compose (a cluster member's
            share split again among its processes).
        bitrate: ``bitrate`` only: bits/s of the whole run, spread over its connections.
        direction: ``stream`` only: which way the bytes go (iperf3's default, ``--reverse``,
            ``--bidir``); see :mod:`netkit.core.streamtest`.
    """

    scenario: Scenario = Scenario.ECHO
    connections: int = 1
    first_connection: int = 0
    total_connections: int = 1
    duration: float | None = 10.0
    requests: int | None = None
    size: int = 64
    pipeline: int = 1
    rate: float | None = None
    warmup: float = 0.0
    timeout: float = 5.0
    exchange: bool = False
    stages: Stages | None = None
    rank_offset: int = 0
    rank_stride: int = 1
    bitrate: float | None = None
    direction: Direction = Direction.FORWARD

    def __post_init__(self) -> None:
        try:  # a plan may be given the scenario's name; request is only a result's label
            kind = Scenario(self.scenario)
            if kind not in PLANNED:
                raise ValueError(kind)
            object.__setattr__(self, "scenario", kind)
        except ValueError:
            names = ", ".join(CHOICES)
            raise ConfigError((SCENARIO, f" {self.scenario!r}: choose one of {names}")) from None
        if self.connections < 1 or self.pipeline < 1:
            raise ConfigError((CONNECTIONS, " and ", PIPELINE, " must be at least 1"))
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError((RATE, f" {self.rate!r}: give a positive number of requests/s"))
        if self.duration is not None and not self.duration > 0:
            raise ConfigError((DURATION, " must be more than 0"))
        if self.requests is not None and self.requests < 1:
            raise ConfigError((REQUESTS, " must be at least 1"))
        if (self.duration is None) == (self.requests is None):
            raise ConfigError(("give ", DURATION, " or ", REQUESTS, ", not both"))
        if self.size < 1:
            raise ConfigError((SIZE, " must be at least 1 byte"))
        if self.rate is not None and self.scenario in (Scenario.STREAM, Scenario.BITRATE):
            raise ConfigError((RATE, f" applies to echo and connect, not to {self.scenario}"))
        if (self.bitrate is not None) != (self.scenario is Scenario.BITRATE):
            raise ConfigError((BITRATE, " is the bitrate scenario's, and that scenario needs it"))
        if self.scenario is Scenario.BITRATE and self.warmup > 0:
            raise ConfigError((WARMUP, " does not apply to a bitrate run: the receiver counts all"))
        try:
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError:
            names = ", ".join(Direction)
            raise ConfigError((DIRECTION, f" {self.direction!r}: choose one of {names}")) from None
        if self.direction is Direction.REVERSE and self.requests is not None:
            raise ConfigError(
                (REQUESTS, " counts bench's writes, and a reverse stream has none: give ", DURATION)
            )
        # a bitrate run goes either way (the sink sends with --reverse), a stream any way
        reversible = self.scenario is Scenario.BITRATE and self.direction is Direction.REVERSE
        if (
            self.direction is not Direction.FORWARD
            and self.scenario is not Scenario.STREAM
            and not reversible
        ):
            raise ConfigError(
                (
                    DIRECTION,
                    f" {self.direction}: applies to the stream scenario (and reverse to -b)",
                )
            )
        if self.stages is not None:
            self._check_stages(self.stages)

    def _check_stages(self, stages: Stages) -> None:
        what = "ramping rates" if stages.kind == "rate" else "ramping connections"
        if self.scenario in (Scenario.STREAM, Scenario.BITRATE):
            raise ConfigError(
                (STAGES, f": {what} apply to echo and connect, not to {self.scenario}")
            )
        for setting, given in ((RATE, self.rate), (REQUESTS, self.requests)):
            if given is not None:
                raise ConfigError(("give ", setting, " or ", STAGES, ", not both"))
        if self.warmup > 0:
            raise ConfigError(
                (WARMUP, " with ", STAGES, ": ramp up in a first stage instead (its figures are"
                 " reported apart)")
            )  # fmt: skip
        if self.duration != stages.duration:
            raise ConfigError(("give ", DURATION, " or ", STAGES, ", not both: the stages last"
                               f" {stages.duration:g}s"))  # fmt: skip
        if stages.kind == "connections" and self.total_connections != stages.peak:
            raise ConfigError(
                (CONNECTIONS, " or ", STAGES, ", not both: ramping connections open"
                 f" up to {stages.peak} (the largest count)")
            )  # fmt: skip

    def pacing(self, index: int) -> Schedule | None:
        """The open-loop schedule of this plan's connection ``index`` (None: closed loop);
        for a bitrate run, of its datagrams."""
        if self.stages is not None and self.stages.kind == "rate":
            return self.stages.pacing(self.first_connection + index, self.total_connections)
        rate = self.rate
        if self.bitrate is not None:
            rate = self.bitrate / (self.size * 8)
        if rate is None:
            return None
        return Pacing.for_connection(rate, self.first_connection + index, self.total_connections)

    def split(self, workers: int) -> list[LoadPlan]:
        """Shares for ``workers`` processes: connections, rate and requests split in proportion.

        There are never more workers than connections, nor than requests.
        """
        workers = max(1, min(workers, self.connections))
        if self.requests is not None:  # a worker with no request to make would idle
            workers = min(workers, self.requests)
        shares = split_evenly(self.connections, workers)
        requests = (
            split_evenly(self.requests, workers) if self.requests is not None else [None] * workers
        )
        plans, first = [], self.first_connection
        for part, (share, reqs) in enumerate(zip(shares, requests, strict=True)):
            plans.append(
                replace(
                    self,
                    connections=share,
                    first_connection=first,
                    requests=reqs,
                    rank_offset=self.rank_offset + part * self.rank_stride,
                    rank_stride=self.rank_stride * workers,
                )
            )
            first += share
        return plans


class Schedule(Protocol):
    """When each request of one connection is due, open loop: :class:`Pacing` at a fixed
    rate, :class:`~netkit.core.bench.stages.RampPacing` under ramping stages."""

    def due_at(self, start_ns: int, k: int) -> int:
        """The intended send time of request ``k`` (0-based)."""
        ...

    def due_by(self, start_ns: int, now_ns: int) -> int:
        """How many requests are due at ``now_ns`` (intended send time <= now)."""
        ...


@dataclass(frozen=True)
class Pacing:
    """When each request of one connection is due (open loop).

    The run's rate ``R`` is spread over its ``C`` connections: each sends every ``C / R``
    seconds, and connection ``i`` starts ``i / R`` seconds in, so that all together send one
    request every ``1 / R`` seconds.

    Attributes:
        interval_ns: time between two requests of this connection.
        offset_ns: when its first request is due, from the start of the run.
    """

    interval_ns: int
    offset_ns: int

    @classmethod
    def for_connection(cls, rate: float, index: int, connections: int) -> Pacing:
        """The schedule of connection ``index`` of ``connections`` sharing ``rate`` requests/s."""
        return cls(
            interval_ns=max(1, round(connections * 1e9 / rate)),
            offset_ns=round(index * 1e9 / rate),
        )

    def due_at(self, start_ns: int, k: int) -> int:
        """The intended send time of request ``k`` (0-based)."""
        return start_ns + self.offset_ns + k * self.interval_ns

    def due_by(self, start_ns: int, now_ns: int) -> int:
        """How many requests are due at ``now_ns`` (intended send time <= now)."""
        elapsed = now_ns - start_ns - self.offset_ns
        return elapsed // self.interval_ns + 1 if elapsed >= 0 else 0


# --- memory --------------------------------------------------------------------------------

# stream writes larger than this go out in pieces of one reusable chunk of this size, so a
# connection never holds a whole write (``--size 10GiB`` is 40,960 pieces, not 10 GiB).
STREAM_CHUNK = 256 << 10


def payload_memory(plan: LoadPlan, workers: int, *, websocket: bool) -> int:
    """About how many bytes of payload a run holds at most, all workers together.

    Each worker keeps the payload pattern and a batch of it (up to 3 x ``size``). Per
    connection: echo requests waiting in the socket's send buffer (``pipeline`` x ``size``;
    the echo is compared as it arrives, never held whole, except that a WebSocket message
    is assembled whole), one frame for a WebSocket stream (a TCP stream sends from a
    reusable chunk: nothing per connection), the request and its echo for ``connect
    --exchange``. Echo requests over a byte stream larger than STREAM_CHUNK are written
    and checked a chunk at a time, as the socket takes them: one chunk per worker, and
    about one per connection.
    """
    size = plan.size
    if plan.scenario is Scenario.ECHO and not websocket and size > STREAM_CHUNK:
        per_worker = STREAM_CHUNK
        per_connection = STREAM_CHUNK
    elif plan.scenario is Scenario.STREAM:
        per_worker = 3 * (size if websocket else min(size, STREAM_CHUNK))
        per_connection = size if websocket else 0
    elif plan.scenario is Scenario.CONNECT:
        per_worker = 3 * size
        per_connection = 2 * size if plan.exchange else 0
    else:
        per_worker = 3 * size
        per_connection = (plan.pipeline + (1 if websocket else 0)) * size
    return workers * per_worker + plan.connections * per_connection


def check_memory(plan: LoadPlan, workers: int, available: int, *, websocket: bool) -> None:
    """Refuse a run whose payload cannot fit in ``available`` bytes of memory, before any
    of it is allocated (``--size 10GiB`` with 16 connections drove a machine out of memory).

    Raises:
        ConfigError: with both numbers.
    """
    need = payload_memory(plan, workers, websocket=websocket)
    if need > available:
        raise ConfigError(
            (
                SIZE,
                f" {format_size(plan.size)}: {plan.connections} connection(s) in"
                f" {workers} worker(s) would hold about {format_size(need)} of payload, more"
                f" than the {format_size(available)} of memory available; lower ",
                SIZE,
                ", ",
                CONNECTIONS,
                " or ",
                PIPELINE,
            )
        )


def parse_rate(text: str) -> float:
    """Parse ``--rate``: ``1000``, ``1000/s``, ``10k``, ``10k/s``.

    Raises:
        ConfigError: not a positive rate.
    """
    raw = text.strip()
    if raw.endswith("/s"):
        raw = raw[:-2].strip()
    m = NUMBER.match(raw)
    value = float(m.group(1)) * SCALE[m.group(2).lower()] if m else 0.0
    if not value > 0:
        raise ConfigError((RATE, f" {text!r} is not a rate such as 1000/s or 10k"))
    return value

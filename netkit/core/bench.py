"""Load-generator arithmetic without I/O: plans, open-loop pacing, latency histograms, results
and ``--fail-if`` thresholds.

Latency is kept in an HDR histogram (the ``hdrhistogram`` package) in nanoseconds, with three
significant figures, from 1 ns to one hour. Histograms travel inside the JSON result (the
standard compressed, base64 encoding), so results from several processes or machines merge
exactly: counts add, percentiles are read from the sum.

Open loop (``--rate``) follows wrk2: request ``k`` of a connection has an *intended* send time
fixed in advance, and its latency is measured from that time, not from when it was really sent.
A server that stalls therefore shows the stall in every request that should have been sent
during it (no coordinated omission).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from hdrh.histogram import HdrHistogram

from netkit.core.units import format_size, parse_duration
from netkit.errors import ConfigError

SCENARIOS = ("echo", "stream", "connect")

# --- latency histogram -------------------------------------------------------------------

LOWEST_NS = 1
HIGHEST_NS = 3600 * 10**9  # one hour; longer latencies are recorded as one hour
SIGNIFICANT_FIGURES = 3

# A request sent more than this after its intended time (open loop) counts as late: the
# pipeline was full or the event loop was busy. Timers have about 1 ms granularity.
LATE_TOLERANCE_NS = 5_000_000


class LatencyHistogram:
    """An HDR histogram of latencies in nanoseconds, with a fast :meth:`record`.

    ``HdrHistogram.record_value`` costs about 0.85 µs; :meth:`record` computes the same counts
    index inline and costs about 0.2 µs, which matters at 100,000 requests/s per process.
    Total count, min and max are kept here and written into the histogram before it is read
    (:attr:`hdr`). ``tests/core/test_bench.py`` checks both paths give identical counts.
    """

    __slots__ = ("_counts", "_half", "_hdr", "_mask", "_shift", "_um", "count", "max", "min")

    def __init__(self, hdr: HdrHistogram | None = None) -> None:
        self._hdr = hdr or HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES)
        h = self._hdr
        self._counts = h.counts
        self._um: int = h.unit_magnitude
        self._shift: int = h.sub_bucket_half_count_magnitude
        self._mask: int = h.sub_bucket_mask
        self._half: int = h.sub_bucket_half_count
        self.count: int = h.get_total_count()
        self.min: int = h.get_min_value() if self.count else 0
        self.max: int = h.get_max_value() if self.count else 0

    def record(self, ns: int) -> None:
        """Record one latency (negative values count as 0, huge ones as one hour)."""
        if ns > HIGHEST_NS:
            ns = HIGHEST_NS
        elif ns < 0:
            ns = 0
        # HdrHistogram._counts_index_for, inlined.
        bucket = (ns | self._mask).bit_length() - self._um - self._shift - 1
        self._counts[((bucket + 1) << self._shift) + (ns >> (bucket + self._um)) - self._half] += 1
        if self.count == 0 or ns < self.min:
            self.min = ns
        if ns > self.max:
            self.max = ns
        self.count += 1

    @property
    def hdr(self) -> HdrHistogram:
        """The underlying histogram, with its totals up to date."""
        h = self._hdr
        h.total_count = self.count
        h.min_value = self.min if self.count else 2**63 - 1
        h.max_value = self.max
        return h

    def reset(self) -> None:
        """Forget every value (after the warm-up)."""
        self._hdr.reset()
        self.count = self.min = self.max = 0

    def add(self, other: LatencyHistogram) -> None:
        """Add another histogram's counts to this one (exact)."""
        if not other.count:
            return
        lowest = min(self.min, other.min) if self.count else other.min
        highest = max(self.max, other.max)
        merged = self.hdr
        merged.add(other.hdr)
        self.count = merged.get_total_count()
        self.min, self.max = lowest, highest

    def percentile(self, q: float) -> int:
        """The value at percentile ``q`` (0..100), in ns; 0 when empty."""
        if not self.count:
            return 0
        if q >= 100:
            return self.max
        return min(int(self.hdr.get_value_at_percentile(q)), self.max)

    @property
    def mean(self) -> float:
        """Mean latency in ns (0 when empty)."""
        return float(self.hdr.get_mean_value()) if self.count else 0.0

    @property
    def stddev(self) -> float:
        """Standard deviation in ns (0 when empty)."""
        return float(self.hdr.get_stddev()) if self.count else 0.0

    def encode(self) -> str:
        """The standard HdrHistogram V2 compressed, base64 encoding."""
        encoded = self.hdr.encode()
        return encoded.decode() if isinstance(encoded, bytes) else str(encoded)

    @classmethod
    def decode(
        cls, text: str, *, lowest: int | None = None, highest: int | None = None
    ) -> LatencyHistogram:
        """Decode :meth:`encode`'s output.

        The encoding keeps counts per bucket, so min and max come back as bucket bounds
        (within 0.1%); pass the exact ``lowest`` and ``highest`` values when they are known.

        Raises:
            ConfigError: the text is not an encoded histogram.
        """
        try:
            h = cls(HdrHistogram.decode(text.encode()))
        except Exception as exc:  # hdrh raises assorted errors for corrupt input
            raise ConfigError(f"not an encoded HDR histogram ({type(exc).__name__})") from None
        if h.count:
            h.min = lowest if lowest is not None else h.min
            h.max = highest if highest is not None else h.max
        return h


# --- the plan: what one run (and each worker) does ---------------------------------------


def split_evenly(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` integers that differ by at most one, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class LoadPlan:
    """What to do: the whole run, or one worker's share of it.

    Attributes:
        scenario: ``echo``, ``stream`` or ``connect``.
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
    """

    scenario: str = "echo"
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

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"--scenario {self.scenario!r}: choose one of {', '.join(SCENARIOS)}")
        if self.connections < 1 or self.pipeline < 1:
            raise ConfigError("--connections and --pipeline must be at least 1")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError(f"--rate {self.rate!r}: give a positive number of requests/s")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError("--duration must be more than 0")
        if self.requests is not None and self.requests < 1:
            raise ConfigError("--requests must be at least 1")
        if (self.duration is None) == (self.requests is None):
            raise ConfigError("give --duration or --requests, not both")
        if self.size < 1:
            raise ConfigError("--size must be at least 1 byte")
        if self.rate is not None and self.scenario == "stream":
            raise ConfigError("--rate applies to echo and connect, not to stream")

    def pacing(self, index: int) -> Pacing | None:
        """The open-loop schedule of this plan's connection ``index`` (None: closed loop)."""
        if self.rate is None:
            return None
        return Pacing.for_connection(
            self.rate, self.first_connection + index, self.total_connections
        )

    def split(self, workers: int) -> list[LoadPlan]:
        """Shares for ``workers`` processes: connections, rate and requests split in proportion.

        There are never more workers than connections.
        """
        workers = max(1, min(workers, self.connections))
        shares = split_evenly(self.connections, workers)
        requests = (
            split_evenly(self.requests, workers) if self.requests is not None else [None] * workers
        )
        plans, first = [], self.first_connection
        for share, reqs in zip(shares, requests, strict=True):
            plans.append(replace(self, connections=share, first_connection=first, requests=reqs))
            first += share
        # A worker with no requests to make would idle: give its connections to the others.
        return [p for p in plans if p.requests is None or p.requests > 0]


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
    if plan.scenario == "echo" and not websocket and size > STREAM_CHUNK:
        per_worker = STREAM_CHUNK
        per_connection = STREAM_CHUNK
    elif plan.scenario == "stream":
        per_worker = 3 * (size if websocket else min(size, STREAM_CHUNK))
        per_connection = size if websocket else 0
    elif plan.scenario == "connect":
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
            f"--size {format_size(plan.size)}: {plan.connections} connection(s) in"
            f" {workers} worker(s) would hold about {format_size(need)} of payload, more than"
            f" the {format_size(available)} of memory available; lower --size, --connections"
            " or --pipeline"
        )


# --- results ---# --- results -------------------------------------------------------------------------------

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
    ("p99_99", 99.99),
)

# Error kinds, as reported: WebSocket closes add the code, as in "closed:1011".
ERROR_KINDS = ("refused", "reset", "timeout", "mismatch", "closed", "tls", "connect", "protocol")


def _ms(ns: float) -> float:
    return round(ns / 1e6, 4)


@dataclass
class BenchResult:
    """Everything a run (or a merge of runs) measured.

    Attributes:
        requests: requests completed and verified (writes, for ``stream``; connections, for
            ``connect``).
        late: open loop: requests sent more than :data:`LATE_TOLERANCE_NS` after their
            intended time.
        missed: open loop: requests due before the end that were never sent.
        errors: count per kind (see :data:`ERROR_KINDS`).
        error_samples: the first message seen for each kind.
        duration_s: seconds measured (for merged results, the time they ran: see
            :func:`merge_results`).
        parts: how many results were merged into this one.
        started_at: wall-clock time (Unix seconds) the measurement began (the earliest part's,
            for merged results); None in results saved by older versions.
    """

    scenario: str
    target: str
    transport: str
    connections: int
    workers: int
    pipeline: int
    size: int
    rate: float | None
    duration_s: float = 0.0
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    late: int = 0
    missed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    parts: int = 1
    started_at: float | None = None

    def add_error(self, kind: str, message: str, count: int = 1) -> None:
        """Count ``count`` errors of ``kind``; the first message of each kind is kept."""
        self.errors[kind] += count
        self.error_samples.setdefault(kind, message)

    @property
    def error_count(self) -> int:
        """All errors, of every kind."""
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        """Requests completed per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        """Payload sent, in MB (10^6 bytes) per second."""
        return self.bytes_sent / self.duration_s / 1e6 if self.duration_s > 0 else 0.0

    @property
    def recv_mb_per_s(self) -> float:
        """Payload received, in MB per second."""
        return self.bytes_received / self.duration_s / 1e6 if self.duration_s > 0 else 0.0

    def latency_ms(self) -> dict[str, float] | None:
        """min/mean/stddev/percentiles/max in milliseconds, or None without samples."""
        h = self.latency
        if not h.count:
            return None
        summary = {"min": _ms(h.min), "mean": _ms(h.mean), "stddev": _ms(h.stddev)}
        for name, q in PERCENTILES:
            summary[name] = _ms(h.percentile(q))
        summary["max"] = _ms(h.max)
        return summary

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: inputs, totals, derived figures and the encoded histogram."""
        return {
            "scenario": self.scenario,
            "target": self.target,
            "transport": self.transport,
            "connections": self.connections,
            "workers": self.workers,
            "pipeline": self.pipeline,
            "size": self.size,
            "rate": self.rate,
            "started_at": round(self.started_at, 6) if self.started_at is not None else None,
            "duration_s": round(self.duration_s, 6),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "mb_per_s": round(self.mb_per_s, 3),
            "recv_mb_per_s": round(self.recv_mb_per_s, 3),
            "late": self.late,
            "missed": self.missed,
            "errors": {"total": self.error_count, **dict(sorted(self.errors.items()))},
            "error_samples": dict(sorted(self.error_samples.items())),
            "latency_ms": self.latency_ms(),
            "histogram": {
                "unit": "ns",
                "count": self.latency.count,
                "min": self.latency.min,
                "max": self.latency.max,
                "encoded": self.latency.encode(),
            },
            "parts": self.parts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        """Rebuild a result from :meth:`as_dict` (derived figures are recomputed).

        Raises:
            ConfigError: a field is missing or has the wrong type.
        """
        try:
            errors = Counter(
                {str(k): int(v) for k, v in dict(data["errors"]).items() if k != "total"}
            )
            hist = data["histogram"]
            if hist.get("unit") != "ns":
                raise ConfigError(f"histogram unit {hist.get('unit')!r}: expected 'ns'")
            rate = data.get("rate")
            started_at = data.get("started_at")
            return cls(
                scenario=str(data["scenario"]),
                target=str(data["target"]),
                transport=str(data["transport"]),
                connections=int(data["connections"]),
                workers=int(data["workers"]),
                pipeline=int(data["pipeline"]),
                size=int(data["size"]),
                rate=float(rate) if rate is not None else None,
                duration_s=float(data["duration_s"]),
                requests=int(data["requests"]),
                bytes_sent=int(data["bytes_sent"]),
                bytes_received=int(data["bytes_received"]),
                late=int(data.get("late", 0)),
                missed=int(data.get("missed", 0)),
                errors=errors,
                error_samples={str(k): str(v) for k, v in dict(data["error_samples"]).items()},
                latency=LatencyHistogram.decode(
                    str(hist["encoded"]),
                    lowest=int(hist["min"]) if "min" in hist else None,
                    highest=int(hist["max"]) if "max" in hist else None,
                ),
                parts=int(data.get("parts", 1)),
                started_at=float(started_at) if started_at is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not a netkit bench result: {type(exc).__name__}: {exc}") from None


# Runs whose common time is at least this share of the longest one ran side by side: their
# throughput adds over the longest duration (clocks of different machines may differ a bit).
SIDE_BY_SIDE = 0.9


def _span(parts: list[BenchResult]) -> tuple[float, bool]:
    """The seconds ``parts`` ran, and whether they ran side by side.

    Side by side (every part ran through at least :data:`SIDE_BY_SIDE` of the longest, or a
    part has no start time): the longest duration. Otherwise: the length of the union of
    their time spans, so that two runs an hour apart are not counted as one of twice the
    throughput.
    """
    longest = max(p.duration_s for p in parts)
    spans = [(p.started_at, p.started_at + p.duration_s) for p in parts if p.started_at is not None]
    if len(spans) < len(parts) or len(parts) == 1:
        return longest, True
    common = min(end for _, end in spans) - max(start for start, _ in spans)
    if common >= SIDE_BY_SIDE * longest:
        return longest, True
    union, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            union += end - max(start, reach)
            reach = end
    return union, False


def merge_results(results: Iterable[BenchResult]) -> BenchResult:
    """Combine results of runs (workers, machines) into one.

    Counts and histograms add exactly. Throughput is the sum of the parts' work over the
    time they ran: the longest duration for runs side by side, the union of their time
    spans otherwise (see :func:`merge_warnings`).

    Raises:
        ConfigError: no results, or results of different scenarios or transports.
    """
    parts = list(results)
    if not parts:
        raise ConfigError("nothing to merge")
    for what in ("scenario", "transport"):
        kinds = {getattr(p, what) for p in parts}
        if len(kinds) > 1:
            raise ConfigError(
                f"cannot merge results of different {what}s: {', '.join(sorted(kinds))}"
                " (their figures do not add up)"
            )
    first = parts[0]
    starts = [p.started_at for p in parts if p.started_at is not None]
    targets = sorted({p.target for p in parts})
    rates = [p.rate for p in parts]
    merged = BenchResult(
        scenario=first.scenario,
        target=targets[0] if len(targets) == 1 else ", ".join(targets),
        transport=first.transport,
        connections=sum(p.connections for p in parts),
        workers=sum(p.workers for p in parts),
        pipeline=first.pipeline,
        size=first.size,
        rate=None if any(r is None for r in rates) else sum(r for r in rates if r is not None),
        duration_s=_span(parts)[0],
        parts=sum(p.parts for p in parts),
        started_at=min(starts) if starts else None,
    )
    for p in parts:
        merged.requests += p.requests
        merged.bytes_sent += p.bytes_sent
        merged.bytes_received += p.bytes_received
        merged.late += p.late
        merged.missed += p.missed
        for kind, count in p.errors.items():
            merged.add_error(kind, p.error_samples.get(kind, kind), count)
        merged.latency.add(p.latency)
    return merged


def merge_warnings(named: list[tuple[str, BenchResult]]) -> list[str]:
    """Check that saved results may be merged; returns what the user should be warned of.

    Args:
        named: (file name, result) pairs, as given.

    Raises:
        ConfigError: the same run is given twice (it would be counted twice), or the
            results are of different scenarios or transports.
    """
    seen: dict[tuple[Any, ...], str] = {}
    for name, result in named:
        key = (
            result.started_at,
            result.duration_s,
            result.scenario,
            result.transport,
            result.target,
            result.requests,
            result.bytes_sent,
            result.latency.encode(),
        )
        if result.started_at is not None and key in seen:
            raise ConfigError(
                f"{seen[key]} and {name} hold the same run: merging it with itself would"
                " count it twice"
            )
        seen.setdefault(key, name)
    results = [r for _, r in named]
    merge_results(results)  # refuses different scenarios or transports
    missing = [name for name, r in named if r.started_at is None]
    if missing and len(named) > 1:
        return [
            f"{', '.join(missing)}: no start time (saved by an older netkit): assuming the"
            " runs ran side by side"
        ]
    seconds, side_by_side = _span(results)
    if side_by_side:
        return []
    return [
        "the runs did not run side by side (they overlap in time for less than"
        f" {SIDE_BY_SIDE:.0%} of the longest): throughput is their combined work over the"
        f" {seconds:.2f} s they ran in all, not a figure of one load"
    ]


# --- the verdict# --- the verdict --------------------------------------------------------------------------

DEFAULT_GATE_HELP = (
    "a run fails (exit 1) when no request succeeded or any echo came back different"
    " (errors.mismatch), with or without --fail-if"
)


def default_failures(result: BenchResult) -> list[str]:
    """Why ``result`` fails whatever ``--fail-if`` says (empty when it does not).

    A load test in which nothing succeeded measured nothing, and an echo that came back
    different is a broken server, not a slow one: neither may exit 0 (issue 13 item 16).
    """
    reasons = []
    if result.requests == 0:
        unit = {"stream": "write", "connect": "connection"}.get(result.scenario, "request")
        reasons.append(f"no {unit} succeeded")
    mismatched = result.errors.get("mismatch", 0)
    if mismatched:
        reasons.append(f"{mismatched:,} echo(es) came back different from what was sent")
    return reasons


# --- --fail-if thresholds ----------------------------------------------------------------

_EXPR = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.:]*)\s*(>=|<=|==|!=|>|<)\s*(\S.*?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_COUNT_METRICS = ("errors", "requests", "late", "missed")
_NUMBER = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmM]?)$")
METRICS_HELP = (
    "p50, p90, p99, p99.9, p99.99 (any pNN), min, mean, max: latency with a unit (5ms, 200us);"
    " rps, mb_s: throughput; errors, errors.KIND, requests, late, missed: counts;"
    " error_rate: percent (1%)"
)


# What a k or M suffix multiplies by, in --fail-if values and --rate.
_SCALE = {"": 1, "k": 1e3, "m": 1e6}


def _number(text: str, expr: str) -> float:
    m = _NUMBER.match(text)
    if not m:
        raise ConfigError(f"--fail-if {expr!r}: {text!r} is not a number")
    scale = _SCALE[m.group(2).lower()]
    value = float(m.group(1)) * scale
    if not math.isfinite(value):
        raise ConfigError(f"--fail-if {expr!r}: {text!r} is not a finite number")
    return value


@dataclass(frozen=True)
class Threshold:
    """One ``--fail-if`` expression: the run fails when ``metric OP limit`` is true.

    Latencies are compared in nanoseconds, rates in their unit, counts as numbers.
    """

    text: str
    metric: str
    op: str
    limit: float
    unit: str  # "ns", "percent" or ""

    def value(self, result: BenchResult) -> float | None:
        """The metric's value in ``result`` (None when there is no latency sample)."""
        m = self.metric
        if m in ("min", "mean", "max") or m.startswith("p"):
            if not result.latency.count:
                return None
            if m == "min":
                return float(result.latency.min)
            if m == "mean":
                return result.latency.mean
            if m == "max":
                return float(result.latency.max)
            return float(result.latency.percentile(float(m[1:])))
        if m == "rps":
            return result.rps
        if m == "mb_s":
            return result.mb_per_s
        if m == "error_rate":
            total = result.requests + result.error_count
            return 100.0 * result.error_count / total if total else 0.0
        if m == "errors":
            return float(result.error_count)
        if m.startswith("errors."):
            kind = m.partition(".")[2]
            return float(
                sum(n for k, n in result.errors.items() if k.partition(":")[0] == kind or k == kind)
            )
        return float(getattr(result, m))

    def crossed(self, result: BenchResult) -> bool:
        """True when the expression holds, which means the run failed (no data also fails)."""
        value = self.value(result)
        return value is None or _OPS[self.op](value, self.limit)

    def describe(self, result: BenchResult) -> str:
        """``p99 = 7.2ms (fail if p99>5ms)``."""
        value = self.value(result)
        if value is None:
            shown = "no latency samples"
        elif self.unit == "ns":
            shown = f"{value / 1e6:.3f}ms"
        elif self.unit == "percent":
            shown = f"{value:.3f}%"
        else:
            shown = f"{value:g}"
        return f"{self.metric} = {shown} (fail if {self.text})"


def parse_threshold(text: str) -> Threshold:
    """Parse ``p99>5ms``, ``errors>0``, ``rps<10k``, ``error_rate>1%``, ``errors.timeout>0``.

    Raises:
        ConfigError: the expression does not parse, names an unknown metric or lacks a unit.
    """
    m = _EXPR.match(text)
    if not m:
        raise ConfigError(
            f"--fail-if {text!r}: expected METRIC OP VALUE, as in 'p99>5ms' or 'errors>0'"
        )
    metric, op, raw = m.group(1).lower(), m.group(2), m.group(3)
    if re.fullmatch(r"p[0-9]+(\.[0-9]+)?", metric):
        q = float(metric[1:])
        if not 0 < q <= 100:
            raise ConfigError(f"--fail-if {text!r}: percentile {q:g} is not in (0, 100]")
    if metric in ("min", "mean", "max") or re.fullmatch(r"p[0-9]+(\.[0-9]+)?", metric):
        if re.fullmatch(r"[0-9.]+", raw):
            raise ConfigError(f"--fail-if {text!r}: give the latency a unit, as in {raw}ms")
        seconds = parse_duration(raw, option=f"--fail-if {text!r}:")
        return Threshold(text, metric, op, seconds * 1e9, "ns")
    if metric == "error_rate":
        if not raw.endswith("%"):
            raise ConfigError(f"--fail-if {text!r}: give error_rate in percent, as in 1%")
        return Threshold(text, metric, op, _number(raw[:-1].strip(), text), "percent")
    if metric in ("rps", "mb_s") or metric in _COUNT_METRICS:
        return Threshold(text, metric, op, _number(raw, text), "")
    if metric.startswith("errors.") and metric.partition(".")[2] in ERROR_KINDS:
        return Threshold(text, metric, op, _number(raw, text), "")
    raise ConfigError(f"--fail-if {text!r}: unknown metric {metric!r} (known: {METRICS_HELP})")


def check_thresholds(thresholds: Iterable[Threshold], result: BenchResult) -> list[Threshold]:
    """The thresholds that ``result`` crossed, in the order given."""
    return [t for t in thresholds if t.crossed(result)]


def parse_rate(text: str) -> float:
    """Parse ``--rate``: ``1000``, ``1000/s``, ``10k``, ``10k/s``.

    Raises:
        ConfigError: not a positive rate.
    """
    raw = text.strip()
    if raw.endswith("/s"):
        raw = raw[:-2].strip()
    m = _NUMBER.match(raw)
    value = float(m.group(1)) * _SCALE[m.group(2).lower()] if m else 0.0
    if not value > 0:
        raise ConfigError(f"--rate {text!r} is not a rate such as 1000/s or 10k")
    return value

"""What a ``netkit bench`` run measured: :class:`BenchResult`, merging the results of workers
or machines exactly (:func:`merge_results`), and the default verdict (:func:`default_failures`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netkit.core.bench.bitrate import DatagramTally
from netkit.core.bench.histogram import LatencyHistogram
from netkit.core.bench.plan import Scenario
from netkit.core.bench.stage_result import StageResult, merge_stages
from netkit.errors import ConfigError

# --- results ---# --- results -------------------------------------------------------------------------------

# Error kinds, as reported: WebSocket closes add the code, as in "closed:1011".
# HTTP adds "status": a response whose status code was not the one expected.
ERROR_KINDS = (
    "refused",
    "reset",
    "timeout",
    "mismatch",
    "closed",
    "tls",
    "connect",
    "protocol",
    "status",
)


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
        statuses: HTTP: responses per status code (expected or not).
        connects: connections opened while measuring (HTTP keep-alive reuse shows in it).
        stages: ``--stages`` runs: the figures of each stage (empty otherwise).
        datagrams: UDP bitrate runs: what the receivers counted (None for other runs).
        direction: stream over TCP or Unix: ``forward``, ``reverse`` or ``bidir`` (the stream
            test, :mod:`netkit.core.streamtest`); UDP bitrate test: ``forward`` or
            ``reverse`` (the sink sent); None otherwise.
        peer_received: stream test: bytes the server reported receiving (of those written
            while measuring); None when no server reported (an echo server).
        peer_sent: stream test: bytes the server reported sending while measuring.
        drain_s: stream test: seconds from the end of the run until the servers' counts
            arrived (the receivers' last bytes); receivers' rates count them.
    """

    scenario: Scenario
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
    statuses: Counter[int] = field(default_factory=Counter)
    connects: int = 0
    stages: list[StageResult] = field(default_factory=list)

    def stage_view(self, index: int) -> BenchResult:
        """Stage ``index`` (from 1) as a result of its own, for thresholds: its requests,
        errors, latencies and missed requests over its duration.

        Raises:
            ConfigError: the run has no such stage.
        """
        if not 1 <= index <= len(self.stages):
            have = f"{len(self.stages)} stage(s)" if self.stages else "no --stages"
            raise ConfigError(f"stage {index}: the result has {have}")
        s = self.stages[index - 1]
        view = BenchResult(
            self.scenario, self.target, self.transport, self.connections, self.workers,
            self.pipeline, self.size, self.rate, duration_s=s.duration_s, requests=s.requests,
            missed=s.missed, errors=Counter(s.errors), latency=s.latency,
        )  # fmt: skip
        return view

    datagrams: DatagramTally | None = None
    direction: str | None = None
    peer_received: int | None = None
    peer_sent: int | None = None
    drain_s: float = 0.0

    def status_count(self, low: int, high: int) -> int:
        """Responses with a status code in ``low``-``high`` (inclusive)."""
        return sum(n for code, n in self.statuses.items() if low <= code <= high)

    def status_classes(self) -> dict[str, int]:
        """Responses per status class (``{"2xx": n, "4xx": m}``), in class order."""
        classes: Counter[str] = Counter()
        for code, n in self.statuses.items():
            classes[f"{code // 100}xx"] += n
        return dict(sorted(classes.items()))

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

    def directions(self) -> dict[str, dict[str, Any]]:
        """Stream test: per direction (``forward`` client to server, ``reverse`` server to
        client), the sender's and the receiver's bytes and MB/s, as iperf3 reports them.

        The client's writes are over the measured duration; whatever the server counted, and
        what the client read, over the duration and the drain (the time the last bytes took
        to arrive). A receiver figure is None when no server reported.
        """
        if self.direction is None or self.scenario is not Scenario.STREAM:
            return {}
        whole = self.duration_s + self.drain_s

        def rate(n: int | None, seconds: float) -> float | None:
            return round(n / seconds / 1e6, 3) if n is not None and seconds > 0 else None

        shown: dict[str, dict[str, Any]] = {}
        if self.direction in ("forward", "bidir"):
            shown["forward"] = {
                "sender_bytes": self.bytes_sent,
                "receiver_bytes": self.peer_received,
                "sender_mb_per_s": rate(self.bytes_sent, self.duration_s),
                "receiver_mb_per_s": rate(self.peer_received, whole),
            }
        if self.direction in ("reverse", "bidir"):
            shown["reverse"] = {
                "sender_bytes": self.peer_sent,
                "receiver_bytes": self.bytes_received,
                "sender_mb_per_s": rate(self.peer_sent, whole),
                "receiver_mb_per_s": rate(self.bytes_received, whole),
            }
        return shown

    def latency_ms(self) -> dict[str, float] | None:
        """min/mean/stddev/percentiles/max in milliseconds, or None without samples."""
        return self.latency.summary_ms()

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
            "histogram": self.latency.to_record(),
            "parts": self.parts,
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "connects": self.connects,
            "stages": [s.as_dict() for s in self.stages],
            **(
                {"datagrams": self.datagrams.as_dict(self.duration_s)}
                if self.datagrams is not None
                else {}
            ),
            "direction": self.direction,
            "peer_received": self.peer_received,
            "peer_sent": self.peer_sent,
            "drain_s": round(self.drain_s, 6),
            "directions": self.directions(),
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
            rate = data.get("rate")
            started_at = data.get("started_at")
            scenario = Scenario(data["scenario"])
            if scenario is Scenario.ECHO and str(data["transport"]).startswith("http"):
                scenario = Scenario.REQUEST  # saved before HTTP runs had their own name
            return cls(
                scenario=scenario,
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
                latency=LatencyHistogram.from_record(data["histogram"]),
                parts=int(data.get("parts", 1)),
                started_at=float(started_at) if started_at is not None else None,
                statuses=Counter(
                    {int(k): int(v) for k, v in dict(data.get("statuses", {})).items()}
                ),
                connects=int(data.get("connects", 0)),
                stages=[StageResult.from_dict(s) for s in data.get("stages", [])],
                datagrams=DatagramTally.from_dict(data["datagrams"])
                if data.get("datagrams") is not None
                else None,
                direction=None if data.get("direction") is None else str(data["direction"]),
                peer_received=None
                if data.get("peer_received") is None
                else int(data["peer_received"]),
                peer_sent=None if data.get("peer_sent") is None else int(data["peer_sent"]),
                drain_s=float(data.get("drain_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not a netkit bench result: {type(exc).__name__}: {exc}") from None


def _add_optional(a: int | None, b: int | None) -> int | None:
    """Sum of two counts either of which may be unknown (None only when both are)."""
    return None if a is None and b is None else (a or 0) + (b or 0)


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
    for what in ("scenario", "transport", "direction"):
        kinds = {getattr(p, what) for p in parts}
        if len(kinds) > 1:
            raise ConfigError(
                f"cannot merge results of different {what}s:"
                f" {', '.join(sorted(str(k or 'none') for k in kinds))}"
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
        stages=merge_stages(p.stages for p in parts),
        direction=first.direction,
        drain_s=max(p.drain_s for p in parts),
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
        merged.statuses.update(p.statuses)
        merged.connects += p.connects
        if p.datagrams is not None:
            if merged.datagrams is None:
                merged.datagrams = DatagramTally(bitrate=0.0)
            merged.datagrams.add(p.datagrams)
        merged.peer_received = _add_optional(merged.peer_received, p.peer_received)
        merged.peer_sent = _add_optional(merged.peer_sent, p.peer_sent)
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


def default_failures(result: BenchResult) -> list[str]:
    """Why ``result`` fails whatever ``--fail-if`` says (empty when it does not).

    A load test in which nothing succeeded measured nothing, and an echo that came back
    different is a broken server, not a slow one: neither may exit 0 (issue 13 item 16).
    """
    reasons = []
    if result.direction == "reverse":  # the client writes nothing: its reads are the work
        if result.bytes_received == 0:
            reasons.append("no byte arrived from the server")
    elif result.requests == 0:
        reasons.append(f"no {result.scenario.unit} succeeded")
    if result.scenario is Scenario.BITRATE:
        tally = result.datagrams
        if tally is None or not tally.streams:
            reasons.append("no receiver reported what it received")
        elif not tally.received:
            reasons.append("the receiver received no datagram")
        if tally is not None and 0 < tally.streams < result.connections:
            missing = result.connections - tally.streams
            reasons.append(f"{missing} of {result.connections} stream(s) got no receiver report")
        if tally is not None and tally.corrupt:
            reasons.append(f"{tally.corrupt:,} datagram(s) arrived corrupted")
    stream = result.scenario is Scenario.STREAM and result.direction is not None
    if stream and result.direction in ("forward", "bidir") and result.peer_received == 0:
        reasons.append("the server reported receiving no byte")
    mismatched = result.errors.get("mismatch", 0)
    if mismatched and stream:
        reasons.append(f"{mismatched:,} stream(s) counted bytes the server did not")
    elif mismatched:
        reasons.append(f"{mismatched:,} echo(es) came back different from what was sent")
    return reasons

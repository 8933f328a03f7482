"""Per-stage figures of a ``netkit bench --stages`` run: :class:`StageResult` (requests,
errors, an HDR histogram of its latencies, the requests it was due), its JSON shape, and
:class:`StageTally`, which files each completed request and each error under its stage.

A request belongs to the stage of its send time (the intended one, in open loop), so that a
stage's latencies are those of the load it offered; an error belongs to the stage under way
when it happened. Workers' and machines' stage figures add exactly, as the totals do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netkit.core.bench.histogram import LatencyHistogram
from netkit.core.bench.plan import Schedule
from netkit.core.bench.stages import StageKind, Stages
from netkit.errors import ConfigError


@dataclass
class StageResult:
    """What one stage measured (one worker's, or all of them merged).

    Attributes:
        index: the stage's number, from 1 (as ``--fail-if 'p99[stage=2]>5ms'`` names it).
        kind: ``rate`` or ``connections``.
        planned_s: the stage's duration as given.
        duration_s: seconds of it that ran (less than planned when the run was stopped).
        start, target: the rate (requests/s) or connections it ramps from and to: this
            part's share (workers' shares add up to the run's).
        intended: rate stages: requests due in the stage (sent or not).
        missed: rate stages: requests due in the stage and never sent.
    """

    index: int
    kind: StageKind
    planned_s: float
    start: float
    target: float
    duration_s: float = 0.0
    requests: int = 0
    intended: int = 0
    missed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def rps(self) -> float:
        """Requests completed per second of the stage (0 for a stage that took no time)."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def intended_rps(self) -> float:
        """Rate stages: the mean rate the schedule asked for over the stage."""
        return self.intended / self.duration_s if self.duration_s > 0 else 0.0

    def label(self) -> str:
        """``1: 0->100/s 10s`` (for reports)."""
        unit = "/s" if self.kind is StageKind.RATE else " conn"
        return f"{self.index}: {self.start:.4g}->{self.target:.4g}{unit} {self.planned_s:g}s"

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape (inside a result's ``stages`` list)."""
        return {
            "index": self.index,
            "kind": self.kind,
            "planned_s": self.planned_s,
            "duration_s": round(self.duration_s, 6),
            "start": self.start,
            "target": self.target,
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "intended": self.intended,
            "intended_rps": round(self.intended_rps, 1),
            "missed": self.missed,
            "errors": {"total": sum(self.errors.values()), **dict(sorted(self.errors.items()))},
            "latency_ms": self.latency.summary_ms(),
            "histogram": self.latency.to_record(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageResult:
        """Rebuild a stage from :meth:`as_dict`.

        Raises:
            KeyError, TypeError, ValueError: a field is missing or has the wrong type (the
                caller reports the result as unreadable).
        """
        return cls(
            index=int(data["index"]),
            kind=StageKind(data["kind"]),
            planned_s=float(data["planned_s"]),
            start=float(data["start"]),
            target=float(data["target"]),
            duration_s=float(data["duration_s"]),
            requests=int(data["requests"]),
            intended=int(data.get("intended", 0)),
            missed=int(data.get("missed", 0)),
            errors=Counter(
                {str(k): int(v) for k, v in dict(data["errors"]).items() if k != "total"}
            ),
            latency=LatencyHistogram.from_record(data["histogram"]),
        )


def empty_stages(stages: Stages, share: float) -> list[StageResult]:
    """One empty :class:`StageResult` per stage; targets scaled by ``share`` (this part's
    fraction of the run)."""
    return [
        StageResult(
            index=i + 1,
            kind=stages.kind,
            planned_s=s.duration,
            start=stages.start_value(i) * share,
            target=s.target * share,
        )
        for i, s in enumerate(stages.stages)
    ]


def merge_stages(parts: Iterable[list[StageResult]]) -> list[StageResult]:
    """Add the stage figures of several results, stage by stage (exact).

    Raises:
        ConfigError: the results ran different stages (or some none).
    """
    lists = list(parts)
    shapes = {tuple((s.kind, s.planned_s) for s in stages) for stages in lists}
    if len(shapes) > 1:
        raise ConfigError(
            "cannot merge results of different --stages (their stage figures do not add up)"
        )
    merged = [
        StageResult(s.index, s.kind, s.planned_s, 0.0, 0.0) for s in (lists[0] if lists else [])
    ]
    for stages in lists:
        for into, s in zip(merged, stages, strict=True):
            into.start += s.start
            into.target += s.target
            into.duration_s = max(into.duration_s, s.duration_s)
            into.requests += s.requests
            into.intended += s.intended
            into.missed += s.missed
            into.errors.update(s.errors)
            into.latency.add(s.latency)
    return merged


class StageTally:
    """Files completed requests and errors under their stage, for one worker.

    Args:
        stages: the schedule.
        results: one :class:`StageResult` per stage, filled in place.
        start_ns: the clock reading the schedule starts at.
    """

    def __init__(self, stages: Stages, results: list[StageResult], start_ns: int) -> None:
        self.stages = stages
        self.results = results
        self.start_ns = start_ns
        # Each stage's end on the clock; a request sent at t belongs to the first stage
        # ending after t (the last one after the end).
        self._ends = [start_ns + round(stages.bounds(i)[1] * 1e9) for i in range(len(results))]
        self._last = len(results) - 1

    def at(self, t_ns: int) -> StageResult:
        """The stage under way at clock reading ``t_ns``."""
        ends, i = self._ends, 0
        # Stages are few: a linear walk beats bisect's call for the usual handful.
        while i < self._last and t_ns >= ends[i]:
            i += 1
        return self.results[i]

    def completed(self, now_ns: int, sent_ns: int) -> None:
        """A request sent (or due) at ``sent_ns`` was answered at ``now_ns``."""
        stage = self.at(sent_ns)
        stage.requests += 1
        stage.latency.record(now_ns - sent_ns)

    def error(self, now_ns: int, kind: str, count: int) -> None:
        """``count`` errors of ``kind`` happened at ``now_ns``."""
        self.at(now_ns).errors[kind] += count

    def close(self, end_ns: int) -> None:
        """The run ended at ``end_ns``: each stage's duration is the part of it that ran."""
        for i, stage in enumerate(self.results):
            start, end = self.stages.bounds(i)
            ran = (end_ns - self.start_ns) / 1e9
            stage.duration_s = max(0.0, min(end, ran) - start)

    def schedule(self, pacing: Schedule, issued: int, end_ns: int, cutoff_ns: int) -> None:
        """Rate stages: add one connection's requests due in each stage before ``end_ns``
        (``intended``) and, of those due before ``cutoff_ns``, the ones it never sent
        (``missed``; it sent its first ``issued``)."""
        due_by, start = pacing.due_by, self.start_ns
        due_at_cutoff = due_by(start, cutoff_ns)
        before = 0  # requests due before the current stage began
        for i, stage in enumerate(self.results):
            upto = due_by(start, min(self._ends[i], end_ns + 1) - 1)
            if i == self._last:
                upto = due_by(start, end_ns)
            stage.intended += upto - before
            stage.missed += max(0, min(upto, due_at_cutoff) - max(before, issued))
            before = upto

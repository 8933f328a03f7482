"""``--fail-if`` thresholds of ``netkit bench``: :class:`Threshold` parses ``METRIC OP VALUE``
and checks it against a :class:`~netkit.core.bench.result.BenchResult`."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from netkit.core.bench.bitrate import parse_bitrate
from netkit.core.bench.plan import NUMBER, SCALE
from netkit.core.bench.result import ERROR_KINDS, BenchResult, default_failures
from netkit.core.units import parse_duration
from netkit.errors import CheckFailed, ConfigError, Setting

# --- --fail-if thresholds ----------------------------------------------------------------

_EXPR = re.compile(
    r"^\s*([A-Za-z][A-Za-z0-9_.:]*)"
    # A stage selector: p99[stage=2], or k6's tag form p99{stage:2}; * is every stage.
    r"(?:\s*\[\s*stage\s*=\s*([0-9]+|\*)\s*\]|\s*\{\s*stage\s*[:=]\s*([0-9]+|\*)\s*\})?"
    r"\s*(>=|<=|==|!=|>|<)\s*(\S.*?)\s*$"
)
EVERY_STAGE = 0  # Threshold.stage for [stage=*]
# Metrics a stage has figures for (a stage counts no bytes, statuses or late sends).
_STAGE_METRICS = re.compile(r"p[0-9.]+|min|mean|max|rps|errors(\..+)?|error_rate|requests|missed")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
FAIL_IF = Setting("fail_if")  # the setting these expressions come from
_COUNT_METRICS = ("errors", "requests", "late", "missed")
METRICS_HELP = (
    "p50, p90, p99, p99.9, p99.99 (any pNN), min, mean, max: latency with a unit (5ms, 200us);"
    " rps, mb_s: throughput; forward_mb_s, reverse_mb_s: stream, what the receiver got"
    " each way; errors, errors.KIND, requests, late, missed: counts;"
    " error_rate: percent (1%); status_5xx, status_404 ...: HTTP responses by status;"
    " UDP bitrate runs: loss_pct (percent), jitter_ms, lost, duplicates, out_of_order,"
    " bitrate (bits/s received, 900M); one stage of --stages: p99[stage=2] (or k6's"
    " p99{stage:2}), every stage: p99[stage=*]"
)
_DIRECTION_METRICS = ("forward_mb_s", "reverse_mb_s")
# UDP bitrate figures, from the receivers' counts (BenchResult.datagrams).
DATAGRAM_METRICS = ("loss_pct", "jitter_ms", "lost", "duplicates", "out_of_order", "bitrate")
_STATUS_METRIC = re.compile(r"status_([1-5])(xx|[0-9]{2})")


def _number(text: str, expr: str) -> float:
    m = NUMBER.match(text)
    if not m:
        raise ConfigError((FAIL_IF, f" {expr!r}: {text!r} is not a number"))
    scale = SCALE[m.group(2).lower()]
    value = float(m.group(1)) * scale
    if not math.isfinite(value):
        raise ConfigError((FAIL_IF, f" {expr!r}: {text!r} is not a finite number"))
    return value


@dataclass(frozen=True)
class Threshold:
    """One ``--fail-if`` expression: the run fails when ``metric OP limit`` is true.

    Latencies are compared in nanoseconds, rates in their unit, counts as numbers.
    ``stage`` (from 1; :data:`EVERY_STAGE` for all) judges that stage of a ``--stages`` run
    instead of the whole run.
    """

    text: str
    metric: str
    op: str
    limit: float
    unit: str  # "ns", "percent" or ""
    stage: int | None = None

    def check_stages(self, count: int) -> None:
        """Refuse a stage selector a run of ``count`` stages cannot answer.

        Raises:
            ConfigError: the run has no stages, or fewer than the one named.
        """
        if self.stage is None or (self.stage == EVERY_STAGE and count):
            return
        if not count:
            raise ConfigError((FAIL_IF, f" {self.text!r}: a stage threshold needs --stages"))
        if self.stage > count:
            raise ConfigError((FAIL_IF, f" {self.text!r}: there are {count} stage(s)"))

    def _stages(self, result: BenchResult) -> list[tuple[int, BenchResult]]:
        """What the threshold judges, with the stage number (0 for the whole run): the run,
        one stage, or each stage that has a duration."""
        if self.stage is None:
            return [(0, result)]
        if self.stage != EVERY_STAGE:
            return [(self.stage, result.stage_view(self.stage))]
        if not result.stages:  # judged nothing: that must not pass for "held"
            raise ConfigError((FAIL_IF, f" {self.text!r}: the result has no --stages"))
        return [(s.index, result.stage_view(s.index)) for s in result.stages if s.planned_s > 0]

    def value(self, result: BenchResult) -> float | None:
        """The metric's value in ``result`` (None when there is no latency sample); for
        ``[stage=*]``, the value of the first stage that crosses it (else of the last)."""
        views = [view for _, view in self._stages(result)]
        for view in views:
            if self._crosses(self._value(view)):
                return self._value(view)
        return self._value(views[-1]) if views else None

    def _crosses(self, value: float | None) -> bool:
        return value is None or _OPS[self.op](value, self.limit)

    def _value(self, result: BenchResult) -> float | None:
        """The metric's value in ``result`` (None when there is no latency sample, or no
        receiver's figure for a direction)."""
        m = self.metric
        if m in DATAGRAM_METRICS:
            tally = result.datagrams
            if tally is None:
                return None
            if m == "bitrate":
                return tally.bits_per_s(result.duration_s)
            return float(getattr(tally, m))
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
        if m in _DIRECTION_METRICS:  # the receiver's figure; None when it did not report
            way = result.directions().get(m.removesuffix("_mb_s"), {})
            rate = way.get("receiver_mb_per_s")
            return None if rate is None else float(rate)
        if m == "error_rate":
            total = result.requests + result.error_count
            return 100.0 * result.error_count / total if total else 0.0
        if m == "errors":
            return float(result.error_count)
        status = _STATUS_METRIC.fullmatch(m)
        if status:
            if status.group(2) == "xx":
                low = int(status.group(1)) * 100
                return float(result.status_count(low, low + 99))
            code = int(status.group(1) + status.group(2))
            return float(result.status_count(code, code))
        if m.startswith("errors."):
            kind = m.partition(".")[2]
            return float(
                sum(n for k, n in result.errors.items() if k.partition(":")[0] == kind or k == kind)
            )
        return float(getattr(result, m))

    def crossed(self, result: BenchResult) -> bool:
        """True when the expression holds, which means the run failed (no data also fails)."""
        return any(self._crosses(self._value(view)) for _, view in self._stages(result))

    def describe(self, result: BenchResult) -> str:
        """``p99 = 7.2ms (fail if p99>5ms)``."""
        value = self.value(result)
        if value is None:
            if self.metric in _DIRECTION_METRICS:
                shown = "not measured"
            elif self.metric in DATAGRAM_METRICS:
                shown = "no UDP bitrate figures"
            else:
                shown = "no latency samples"
        elif self.unit == "ns":
            shown = f"{value / 1e6:.3f}ms"
        elif self.unit == "percent":
            shown = f"{value:.3f}%"
        else:
            shown = f"{value:g}"
        where = ""
        if self.stage == EVERY_STAGE:
            bad = [str(i) for i, v in self._stages(result) if self._crosses(self._value(v))]
            where = f" in stage(s) {', '.join(bad)}" if bad else " in every stage"
        elif self.stage is not None:
            where = f" in stage {self.stage}"
        return f"{self.metric}{where} = {shown} (fail if {self.text})"


def parse_threshold(text: str) -> Threshold:
    """Parse ``p99>5ms``, ``errors>0``, ``rps<10k``, ``error_rate>1%``, ``errors.timeout>0``.

    Raises:
        ConfigError: the expression does not parse, names an unknown metric or lacks a unit.
    """
    m = _EXPR.match(text)
    if not m:
        raise ConfigError(
            (FAIL_IF, f" {text!r}: expected METRIC OP VALUE, as in 'p99>5ms' or 'errors>0'")
        )
    metric, op, raw = m.group(1).lower(), m.group(4), m.group(5)
    selector = m.group(2) or m.group(3)
    stage = None
    if selector is not None:
        stage = EVERY_STAGE if selector == "*" else int(selector)
        if selector != "*" and stage < 1:
            raise ConfigError((FAIL_IF, f" {text!r}: stages are numbered from 1"))
        if not _STAGE_METRICS.fullmatch(metric):
            raise ConfigError(
                (FAIL_IF, f" {text!r}: {metric} has no per-stage figure (a stage has latency,"
                 " rps, errors, error_rate, requests and missed)")
            )  # fmt: skip
    found = _parse_limit(text, metric, op, raw)
    return replace(found, stage=stage) if stage is not None else found


def _parse_limit(text: str, metric: str, op: str, raw: str) -> Threshold:
    if re.fullmatch(r"p[0-9]+(\.[0-9]+)?", metric):
        q = float(metric[1:])
        if not 0 < q <= 100:
            raise ConfigError((FAIL_IF, f" {text!r}: percentile {q:g} is not in (0, 100]"))
    if metric in ("min", "mean", "max") or re.fullmatch(r"p[0-9]+(\.[0-9]+)?", metric):
        if re.fullmatch(r"[0-9.]+", raw):
            raise ConfigError((FAIL_IF, f" {text!r}: give the latency a unit, as in {raw}ms"))
        seconds = parse_duration(raw, option=(FAIL_IF, f" {text!r}:"))
        return Threshold(text, metric, op, seconds * 1e9, "ns")
    if metric == "bitrate":
        return Threshold(text, metric, op, parse_bitrate(raw), "")
    if metric == "loss_pct":
        return Threshold(text, metric, op, _number(raw.removesuffix("%").strip(), text), "percent")
    if metric in DATAGRAM_METRICS:
        return Threshold(text, metric, op, _number(raw.removesuffix("ms").strip(), text), "")
    if metric == "error_rate":
        if not raw.endswith("%"):
            raise ConfigError((FAIL_IF, f" {text!r}: give error_rate in percent, as in 1%"))
        return Threshold(text, metric, op, _number(raw[:-1].strip(), text), "percent")
    if (
        metric in ("rps", "mb_s", *_DIRECTION_METRICS)
        or metric in _COUNT_METRICS
        or _STATUS_METRIC.fullmatch(metric)
    ):
        return Threshold(text, metric, op, _number(raw, text), "")
    if metric.startswith("errors.") and metric.partition(".")[2] in ERROR_KINDS:
        return Threshold(text, metric, op, _number(raw, text), "")
    raise ConfigError((FAIL_IF, f" {text!r}: unknown metric {metric!r} (known: {METRICS_HELP})"))


def check_thresholds(thresholds: Iterable[Threshold], result: BenchResult) -> list[Threshold]:
    """The thresholds that ``result`` crossed, in the order given."""
    return [t for t in thresholds if t.crossed(result)]


def enforce(thresholds: list[Threshold], result: BenchResult) -> None:
    """Raise :class:`CheckFailed` when the run failed: the default gate
    (:func:`~netkit.core.bench.result.default_failures`), then each threshold crossed."""
    reasons = default_failures(result)
    crossed = check_thresholds(thresholds, result)
    if crossed:
        reasons.append(
            f"{len(crossed)} threshold(s) crossed: "
            + "; ".join(t.describe(result) for t in crossed)
        )
    if reasons:
        raise CheckFailed("; ".join(reasons))

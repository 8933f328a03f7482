"""Property tests of the ``--fail-if`` expressions (and ``--rate``): any text parses or raises
ConfigError, what parses means what it says, and evaluating it against any result never raises.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from netkit.core.bench.plan import Scenario, parse_rate
from netkit.core.bench.result import ERROR_KINDS, BenchResult
from netkit.core.bench.thresholds import Threshold, check_thresholds, parse_threshold
from netkit.errors import ConfigError

# NETKIT_FUZZ_EXAMPLES=5000 runs every property longer, to hunt rather than to check.
EXAMPLES = int(os.environ.get("NETKIT_FUZZ_EXAMPLES", "0")) or 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None)

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
# Nanoseconds per unit ("ns" itself is not a unit parse_duration knows).
LATENCY_UNITS = {"us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
LATENCY_METRICS = ["p50", "p90", "p99", "p99.9", "p99.99", "p100", "p0.5", "min", "mean", "max"]
COUNT_METRICS = ["errors", "requests", "late", "missed", *[f"errors.{k}" for k in ERROR_KINDS]]
ALL_METRICS = [*LATENCY_METRICS, *COUNT_METRICS, "rps", "mb_s", "error_rate"]

numbers = st.one_of(
    st.integers(0, 10**6),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
)
spaces = st.sampled_from(["", "", " ", "  ", "\t"])


def number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(value)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    """``METRIC OP VALUE[UNIT]`` with odd parts now and then."""
    metric = draw(
        st.sampled_from(ALL_METRICS)
        | st.sampled_from(["P99", "RPS", "p0", "p101", "p", "p99.", "latency", "errors.bogus"])
    )
    op = draw(st.sampled_from([*OPS, "=>", "=", "<>", ""]))
    value = draw(
        numbers.map(number_text)
        | st.sampled_from(["", "-1", ".5", "5.", "1e3", "1e999", "1E-3", "nan", "inf", "0x10"])
    )
    unit = draw(
        st.sampled_from(["", "ms", "us", "µs", "s", "m", "h", "ns", "%", "k", "K", "M", "x"])
    )
    return draw(spaces) + metric + draw(spaces) + op + draw(spaces) + value + unit + draw(spaces)


@FUZZ
@given(st.one_of(expressions(), st.text(max_size=30)))
def test_any_text_is_a_threshold_or_a_config_error(text: str) -> None:
    try:
        threshold = parse_threshold(text)
    except ConfigError as exc:
        assert str(exc).startswith("fail_if ")  # the setting; the command line says --fail-if
        return
    assert threshold.text == text
    assert threshold.op in OPS
    assert threshold.unit in ("ns", "percent", "")
    assert threshold.limit >= 0  # no sign in the grammar, and never NaN


@FUZZ
@given(
    st.sampled_from(LATENCY_METRICS),
    st.sampled_from(list(OPS)),
    numbers,
    st.sampled_from(list(LATENCY_UNITS)),
    spaces,
)
def test_latency_thresholds_compare_in_nanoseconds(
    metric: str, op: str, value: float, unit: str, space: str
) -> None:
    t = parse_threshold(f"{metric}{space}{op}{space}{number_text(value)}{unit}")
    assert (t.metric, t.op, t.unit) == (metric, op, "ns")
    assert math.isclose(t.limit, value * LATENCY_UNITS[unit], rel_tol=1e-9, abs_tol=1e-6)


@FUZZ
@given(
    st.sampled_from([*COUNT_METRICS, "rps", "mb_s"]),
    st.sampled_from(list(OPS)),
    numbers,
    st.sampled_from([("", 1), ("k", 1e3), ("K", 1e3), ("M", 1e6), ("m", 1e6)]),
)
def test_counts_and_rates_take_plain_numbers_with_k_and_m(
    metric: str, op: str, value: float, suffix: tuple[str, float]
) -> None:
    t = parse_threshold(f"{metric}{op}{number_text(value)}{suffix[0]}")
    assert (t.metric, t.op, t.unit) == (metric, op, "")
    assert math.isclose(t.limit, value * suffix[1], rel_tol=1e-9, abs_tol=1e-9)


@FUZZ
@given(st.sampled_from(list(OPS)), numbers)
def test_error_rate_is_in_percent(op: str, value: float) -> None:
    t = parse_threshold(f"error_rate{op}{number_text(value)}%")
    assert (t.unit, t.op) == ("percent", op)
    assert math.isclose(t.limit, value, rel_tol=1e-9, abs_tol=1e-9)
    with pytest.raises(ConfigError):
        parse_threshold(f"error_rate{op}{number_text(value)}")


@st.composite
def results(draw: st.DrawFn) -> BenchResult:
    r = BenchResult(Scenario.ECHO, "127.0.0.1:7", "tcp", 1, 1, 1, 64, None)
    r.requests = draw(st.integers(0, 10**6))
    r.duration_s = draw(st.sampled_from([0.0, 0.001, 1.0, 10.0]))
    r.bytes_sent = r.bytes_received = r.requests * 64
    r.late = draw(st.integers(0, 100))
    r.missed = draw(st.integers(0, 100))
    for kind in draw(st.lists(st.sampled_from([*ERROR_KINDS, "closed:1011", "closed:1006"]))):
        r.add_error(kind, f"{kind} happened", draw(st.integers(1, 5)))
    for ns in draw(st.lists(st.integers(-10, 4000 * 10**9), max_size=20)):
        r.latency.record(ns)
    return r


# Each example builds an HDR histogram and reads percentiles from it (pure Python): fewer.
@settings(max_examples=int(os.environ.get("NETKIT_FUZZ_EXAMPLES", "0")) or 40, deadline=None)
@given(st.lists(expressions(), max_size=5), results())
def test_evaluating_any_threshold_against_any_result_never_raises(
    texts: list[str], result: BenchResult
) -> None:
    thresholds: list[Threshold] = []
    for text in texts:
        with contextlib.suppress(ConfigError):
            thresholds.append(parse_threshold(text))
    crossed = check_thresholds(thresholds, result)
    assert crossed == [t for t in thresholds if t.crossed(result)]
    for t in thresholds:
        value = t.value(result)
        # No latency samples: a latency threshold fails the run, it cannot be checked.
        assert t.crossed(result) == (value is None or OPS[t.op](value, t.limit))
        description = t.describe(result)
        assert description.startswith(f"{t.metric} = ") and description.endswith(
            f"(fail if {t.text})"
        )


@FUZZ
@given(
    st.one_of(
        st.tuples(
            numbers.map(number_text), st.sampled_from(["", "k", "M", "/s", "k/s", " /s"])
        ).map("".join),
        st.text(max_size=15),
    )
)
def test_rate_is_positive_or_a_config_error(text: str) -> None:
    try:
        rate = parse_rate(text)
    except ConfigError as exc:
        assert str(exc).startswith("rate ")
        return
    assert rate > 0


# --- known bugs -------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None, report_multiple_bugs=False)
@given(
    st.sampled_from(["errors>", "rps<", "requests<=", "error_rate>", "mb_s<"]),
    st.sampled_from(["1e999", "9e308k", "2e308"]),
)
@example("errors>", "1e999")
def test_threshold_limits_are_finite(head: str, number: str) -> None:
    text = head + number + ("%" if head.startswith("error_rate") else "")
    try:
        threshold = parse_threshold(text)
    except ConfigError:
        return
    assert math.isfinite(threshold.limit), threshold

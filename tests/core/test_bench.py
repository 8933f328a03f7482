"""Tests for netkit.core.bench: histograms, plans and pacing, results, thresholds."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from netkit.core.bench.histogram import HIGHEST_NS, LOWEST_NS, SIGNIFICANT_FIGURES, LatencyHistogram
from netkit.core.bench.plan import (
    STREAM_CHUNK,
    LoadPlan,
    Pacing,
    Scenario,
    check_memory,
    parse_rate,
    payload_memory,
    split_evenly,
)
from netkit.core.bench.result import BenchResult, default_failures, merge_results, merge_warnings
from netkit.core.bench.thresholds import check_thresholds, parse_threshold
from netkit.errors import ConfigError

# --- histogram ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=HIGHEST_NS * 2), min_size=1, max_size=300))
def test_fast_record_counts_exactly_like_record_value(values: list[int]) -> None:
    fast = LatencyHistogram()
    ref = HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES)
    for v in values:
        fast.record(v)
        ref.record_value(min(v, HIGHEST_NS))
    assert list(fast.hdr.counts) == list(ref.counts)
    assert fast.count == ref.get_total_count() == len(values)
    assert fast.max == min(max(values), HIGHEST_NS)  # exact, where hdrh rounds to its bucket
    assert fast.percentile(99) == min(ref.get_value_at_percentile(99), fast.max)


def test_encode_decode_and_add_are_exact() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    for v in range(1000, 2_000_000, 997):
        a.record(v)
    for v in (5_000_000, 7_000_000, 9_000_000):
        b.record(v)
    rough = LatencyHistogram.decode(a.encode())
    assert rough.max == pytest.approx(a.max, rel=1e-3)  # a bucket bound
    back = LatencyHistogram.decode(a.encode(), lowest=a.min, highest=a.max)
    assert list(back.hdr.counts) == list(a.hdr.counts)
    assert (back.count, back.min, back.max) == (a.count, a.min, a.max)
    back.add(b)
    assert back.count == a.count + 3
    assert back.max == b.max and back.min == a.min
    assert back.percentile(100) == b.max


def test_empty_histogram_and_bad_encoding() -> None:
    h = LatencyHistogram()
    assert (h.count, h.percentile(99), h.mean) == (0, 0, 0.0)
    assert LatencyHistogram.decode(h.encode()).count == 0
    with pytest.raises(ConfigError):
        LatencyHistogram.decode("not a histogram")


def test_negative_values_count_as_zero() -> None:
    h = LatencyHistogram()
    h.record(-5)
    assert (h.count, h.min, h.max) == (1, 0, 0)


# --- plans and pacing ----------------------------------------------------------------------


def test_split_evenly() -> None:
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(2, 4) == [1, 1, 0, 0]


def test_plan_split_shares_connections_rate_and_requests() -> None:
    plan = LoadPlan(connections=5, total_connections=5, duration=None, requests=1001, rate=1000.0)
    parts = plan.split(2)
    assert [p.connections for p in parts] == [3, 2]
    assert [p.first_connection for p in parts] == [0, 3]
    assert sum(p.requests or 0 for p in parts) == 1001
    assert all(p.rate == 1000.0 and p.total_connections == 5 for p in parts)
    # Never more workers than connections.
    assert len(LoadPlan(connections=2, total_connections=2).split(8)) == 2


def test_pacing_spreads_the_rate_over_every_connection() -> None:
    plan = LoadPlan(connections=4, total_connections=4, rate=1000.0)
    start = 10**12
    times = sorted(
        p.due_at(start, k) for i in range(4) if (p := plan.pacing(i)) for k in range(250)
    )
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps == {1_000_000}  # one request every millisecond, all connections together
    pacing = Pacing.for_connection(1000.0, 1, 4)
    assert pacing.due_by(start, start) == 0
    assert pacing.due_by(start, pacing.due_at(start, 0)) == 1
    assert pacing.due_by(start, pacing.due_at(start, 9) + 1) == 10
    assert LoadPlan().pacing(0) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "nope"}, "scenario"),
        ({"connections": 0}, "at least 1"),
        ({"rate": -1.0}, "rate"),
        ({"duration": None}, "not both"),
        ({"requests": 5}, "not both"),
        ({"size": 0}, "size"),
        ({"scenario": "stream", "rate": 10.0}, "stream"),
    ],
)
def test_bad_plans(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoadPlan(**kwargs)  # type: ignore[arg-type]


# --- memory ------------------------------------------------------------------------------

GiB = 1 << 30


def test_a_size_that_cannot_fit_is_refused_with_both_numbers() -> None:
    """Issue 13 item 17: --size 10GiB with 16 connections needs ~160 GiB; say so, refuse."""
    huge = LoadPlan(size=10 * GiB, connections=16, total_connections=16)
    # A WebSocket message is assembled whole: pattern and batch per worker, request and echo
    # per connection.
    assert payload_memory(huge, 2, websocket=True) == 2 * 3 * 10 * GiB + 16 * 2 * 10 * GiB
    with pytest.raises(ConfigError) as info:
        check_memory(huge, 2, 24 * GiB, websocket=True)
    message = str(info.value)  # names settings; the command line shows them as flags
    assert "size 10.0 GiB" in message and "380.0 GiB" in message and "24.0 GiB" in message
    assert "--" not in message
    shown, _ = info.value.describe(lambda name: f"--{name}")
    assert shown.startswith("--size 10.0 GiB") and shown.endswith(
        "lower --size, --connections or --pipeline"
    )
    # Echo over a byte stream goes a chunk at a time: 10 GiB requests need no 10 GiB.
    assert payload_memory(huge, 2, websocket=False) == 2 * STREAM_CHUNK + 16 * STREAM_CHUNK
    check_memory(huge, 2, GiB, websocket=False)
    # What fits passes: the default shapes, and a large stream over TCP (one reusable chunk).
    check_memory(LoadPlan(size=64, connections=16, total_connections=16), 2, GiB, websocket=True)
    stream = LoadPlan(scenario="stream", size=10 * GiB, connections=16, total_connections=16)
    assert payload_memory(stream, 2, websocket=False) == 2 * 3 * STREAM_CHUNK
    check_memory(stream, 2, GiB, websocket=False)
    with pytest.raises(ConfigError, match=r"more than the 1\.0 GiB"):
        check_memory(stream, 2, GiB, websocket=True)  # a WebSocket message is one frame
    piped = LoadPlan(size=2 << 20, pipeline=512, connections=1, total_connections=1)
    with pytest.raises(ConfigError, match="pipeline"):
        check_memory(piped, 1, GiB, websocket=True)


# --- results -------------------------------------------------------------------------------


def result(requests: int, latencies: list[int], **kw: object) -> BenchResult:
    r = BenchResult(Scenario.ECHO, "127.0.0.1:7", "tcp", 2, 1, 1, 64, kw.pop("rate", None))  # type: ignore[arg-type]
    r.requests = requests
    r.duration_s = float(kw.pop("duration_s", 2.0))  # type: ignore[arg-type]
    r.bytes_sent = r.bytes_received = requests * 64
    for v in latencies:
        r.latency.record(v)
    for kind, n in dict(kw.pop("errors", {})).items():  # type: ignore[call-overload]
        r.add_error(kind, f"{kind} happened", n)
    return r


def test_result_json_round_trip() -> None:
    r = result(3, [1_000_000, 2_000_000, 3_000_000], errors={"reset": 2, "closed:1011": 1})
    data = r.as_dict()
    assert data["errors"] == {"total": 3, "closed:1011": 1, "reset": 2}
    assert data["latency_ms"]["p50"] == pytest.approx(2.0, rel=1e-3)
    assert data["rps"] == 1.5
    back = BenchResult.from_dict(data)
    assert back.as_dict() == data
    with pytest.raises(ConfigError, match="not a netkit bench result"):
        BenchResult.from_dict({"scenario": "echo"})


def test_merge_adds_counts_and_histograms() -> None:
    a = result(2, [1_000_000, 2_000_000], errors={"timeout": 1}, rate=100.0)
    b = result(1, [9_000_000], duration_s=3.0, errors={"timeout": 2, "reset": 1}, rate=50.0)
    m = merge_results([a, b])
    assert m.requests == 3 and m.latency.count == 3
    assert m.errors == Counter({"timeout": 3, "reset": 1})
    assert m.duration_s == 3.0 and m.rps == 1.0
    assert m.rate == 150.0 and m.connections == 4 and m.parts == 2
    assert m.latency.max == b.latency.max
    with pytest.raises(ConfigError, match="different scenarios"):
        c = result(1, [1])
        c.scenario = "stream"
        merge_results([a, c])
    with pytest.raises(ConfigError):
        merge_results([])


def test_merge_refuses_a_run_twice_and_different_transports() -> None:
    """Issue 13 item 18: a file merged with itself double counts; tcp + udp is no figure."""
    a = result(10, [1_000_000] * 10)
    a.started_at = 1_800_000_000.0
    twin = BenchResult.from_dict(a.as_dict())  # the same run, saved under another name
    with pytest.raises(ConfigError, match=r"a\.json and copy\.json hold the same run"):
        merge_warnings([("a.json", a), ("copy.json", twin)])
    udp = result(10, [1_000_000] * 10)
    udp.transport = "udp"
    udp.started_at = a.started_at
    with pytest.raises(ConfigError, match="different transports: tcp, udp"):
        merge_warnings([("a.json", a), ("u.json", udp)])
    with pytest.raises(ConfigError, match="different transports"):
        merge_results([a, udp])


def test_merge_of_runs_apart_in_time_warns_and_takes_their_union() -> None:
    a = result(100, [1_000_000] * 100, duration_s=1.0)
    b = result(300, [1_000_000] * 300, duration_s=1.0)
    a.started_at, b.started_at = 1_800_000_000.0, 1_800_000_000.05  # side by side
    assert merge_warnings([("a", a), ("b", b)]) == []
    side = merge_results([a, b])
    assert side.duration_s == 1.0 and side.rps == 400.0
    assert side.started_at == a.started_at

    b.started_at = a.started_at + 3600.0  # an hour later: no common time at all
    (warning,) = merge_warnings([("a", a), ("b", b)])
    assert "did not run side by side" in warning and "2.00 s" in warning
    apart = merge_results([a, b])
    assert apart.duration_s == 2.0 and apart.rps == 200.0  # not 400/s

    b.started_at = a.started_at + 0.5  # half overlapping: 1.5 s in all
    assert len(merge_warnings([("a", a), ("b", b)])) == 1
    assert merge_results([a, b]).duration_s == pytest.approx(1.5)

    b.started_at = None  # saved by an older netkit: assumed side by side, with a warning
    (old,) = merge_warnings([("a", a), ("b", b)])
    assert "b: no start time" in old
    assert merge_results([a, b]).duration_s == 1.0


# --- the default gate ------------------------------------------------------------------------


def test_default_gate_fails_a_run_with_no_success_or_a_mismatch() -> None:
    """Issue 13 item 16: with or without --fail-if, nothing succeeded or a wrong echo fails."""
    assert default_failures(result(10, [1_000_000] * 10, errors={"timeout": 3})) == []
    assert default_failures(result(0, [], errors={"timeout": 2})) == ["no request succeeded"]
    garbage = result(0, [], errors={"mismatch": 3327})
    assert default_failures(garbage) == [
        "no request succeeded",
        "3,327 echo(es) came back different from what was sent",
    ]
    one_bad = result(500, [1_000_000] * 500, errors={"mismatch": 1})
    assert default_failures(one_bad) == ["1 echo(es) came back different from what was sent"]
    connect = result(0, [])
    connect.scenario = Scenario.CONNECT
    assert default_failures(connect) == ["no connection succeeded"]


# --- thresholds ----------------------------------------------------------------------------


def test_thresholds_evaluate_both_ways() -> None:
    r = result(1000, [1_000_000] * 990 + [10_000_000] * 10, errors={"mismatch": 1})
    crossed = check_thresholds(
        [
            parse_threshold(text)
            for text in (
                "p99>5ms",  # p99 = 1 ms: holds
                "p99.9 > 5ms",  # 10 ms: crossed
                "max>=10ms",  # crossed
                "errors>0",  # crossed
                "errors.mismatch>1",  # holds
                "rps<400",  # 500/s: holds
                "rps<1k",  # crossed
                "error_rate>0.05%",  # 0.0999%: crossed
                "mean<500us",  # holds
            )
        ],
        r,
    )
    assert [t.text for t in crossed] == [
        "p99.9 > 5ms",
        "max>=10ms",
        "errors>0",
        "rps<1k",
        "error_rate>0.05%",
    ]
    assert crossed[0].describe(r).startswith("p99.9 = 10.")


def test_latency_threshold_without_samples_fails() -> None:
    t = parse_threshold("p99>5ms")
    r = result(0, [])
    assert t.crossed(r)
    assert "no latency samples" in t.describe(r)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99", "METRIC OP VALUE"),
        ("p99>5", "unit"),
        ("p99>fast", "duration"),
        ("p101>5ms", "percentile"),
        ("latency>5ms", "unknown metric"),
        ("errors>many", "not a number"),
        ("error_rate>1", "percent"),
        ("errors.bogus>0", "unknown metric"),
    ],
)
def test_bad_thresholds(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_threshold(text)


def test_parse_rate() -> None:
    assert parse_rate("1000") == parse_rate("1000/s") == parse_rate("1k/s") == 1000.0
    assert parse_rate("2.5M") == 2.5e6
    for bad in ("0", "-5", "fast", "10/m"):
        with pytest.raises(ConfigError, match="rate"):
            parse_rate(bad)


def test_scenarios_are_an_enum_a_plan_may_name() -> None:
    assert LoadPlan(scenario="stream").scenario is Scenario.STREAM  # type: ignore[arg-type]
    assert [s.unit for s in Scenario] == ["request", "write", "connection", "datagram", "request"]
    for name in ("ping", "request"):  # request names HTTP results; runs ask for echo
        with pytest.raises(ConfigError) as info:
            LoadPlan(scenario=name)  # type: ignore[arg-type]
        assert str(info.value) == f"scenario {name!r}: choose one of echo, stream, connect"
    back = BenchResult.from_dict(result(1, [1000]).as_dict() | {"scenario": "connect"})
    assert back.scenario is Scenario.CONNECT

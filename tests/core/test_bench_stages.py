"""In-process tests of ``netkit bench --stages``: the stage parser (durations, units, one-line
errors), the ramping schedule's arithmetic (its integral and inverse, the split of requests
over connections and workers, the connection changes), per-stage figures (tally, merge, JSON)
and per-stage thresholds."""

from __future__ import annotations

import math

import pytest

from netkit.core.bench.histogram import LatencyHistogram
from netkit.core.bench.plan import LoadPlan, Pacing
from netkit.core.bench.result import BenchResult, merge_results
from netkit.core.bench.stage_result import StageTally, empty_stages, merge_stages
from netkit.core.bench.stages import Stage, StageKind, Stages, parse_stages
from netkit.core.bench.thresholds import EVERY_STAGE, parse_threshold
from netkit.errors import ConfigError

pytestmark = pytest.mark.timeout(30)

RAMP = "10s:100/s, 30s:1000/s, 10s:0/s"


def message(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- the parser ----------------------------------------------------------------------------


def test_parses_rates_with_units_and_durations() -> None:
    s = parse_stages(" 500ms:1k/s ,1m:2.5k/s, 0s:0/s,1.5s : 10/s ")
    assert s.kind is StageKind.RATE
    assert s.stages == (
        Stage(0.5, 1000.0),
        Stage(60.0, 2500.0),
        Stage(0.0, 0.0),
        Stage(1.5, 10.0),
    )
    assert s.duration == pytest.approx(62.0)


def test_parses_connection_counts() -> None:
    s = parse_stages("10s:50, 20s:100, 5s:0")
    assert s.kind is StageKind.CONNECTIONS
    assert [st.target for st in s.stages] == [50, 100, 0]
    assert s.peak == 100
    assert s.duration == 35


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "DURATION:TARGET"),
        ("10s:100/s,", "DURATION:TARGET"),
        ("10s", "expected DURATION:TARGET"),
        ("ten:100/s", "not a duration"),
        ("10s:fast", "is not a rate (1000/s) or a connection count"),
        ("10s:2.5", "whole number"),
        ("10s:100/s, 10s:50", "mixes rates"),
        ("0s:100/s", "last no time"),
        ("10s:0/s, 5s:0/s", "no request would be sent"),
        ("10s:0", "no connection would open"),
        ("10s:200k", "at most 100,000"),
        ("10s:-5/s", "not a rate"),
    ],
)
def test_bad_stages_are_one_line_errors(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_stages(text)
    shown = message(exc)
    assert words in shown
    assert "stages" in shown


# --- the rate schedule -------------------------------------------------------------------


def test_integral_follows_each_linear_ramp() -> None:
    s = parse_stages(RAMP)
    assert s.due_until(0) == 0
    assert s.due_until(5) == pytest.approx(125)  # 0 -> 50/s over 5 s: 10/s^2 * 5^2 / 2
    assert s.due_until(10) == pytest.approx(500)
    assert s.due_until(40) == pytest.approx(500 + 550 * 30)
    assert s.due_until(50) == pytest.approx(17000 + 5000)
    assert s.due_until(90) == pytest.approx(22000)  # nothing after the last stage
    assert s.value_at(5) == pytest.approx(50)
    assert s.value_at(25) == pytest.approx(550)
    assert s.value_at(45) == pytest.approx(500)


def test_time_of_inverts_the_integral() -> None:
    s = parse_stages(RAMP + ", 0s:300/s, 2s:300/s")
    for x in (0.5, 1, 7.3, 499.5, 500, 500.5, 9000, 17000, 21999.5, 22000.5, 22599):
        t = s.time_of(x)
        assert s.due_until(t) == pytest.approx(x, rel=1e-9, abs=1e-6), x
    assert s.time_of(22600.5) == math.inf  # past the end of the schedule


def test_zero_length_stage_jumps_and_flat_zero_stage_sends_nothing() -> None:
    s = parse_stages("1s:0/s, 0s:100/s, 1s:100/s")
    assert s.value_at(0.5) == 0
    assert s.value_at(1.5) == 100
    assert s.time_of(0.5) == pytest.approx(1.005)  # the first request waits for the jump
    assert s.index_at(0.5) == 0 and s.index_at(1.0) == 2 and s.index_at(1.5) == 2


def test_constant_stage_matches_fixed_rate_pacing() -> None:
    # 1000/s held: request n is due at (n + 1/2) ms, as Pacing's n ms shifted by half a step.
    s = Stages(StageKind.RATE, (Stage(0, 1000), Stage(5, 1000)))
    ramp, fixed = s.pacing(3, 8), Pacing.for_connection(1000, 3, 8)
    for k in range(100):
        assert ramp.due_at(0, k) - fixed.due_at(0, k) == 500_000


def test_requests_split_exactly_over_connections_and_workers() -> None:
    s = parse_stages("3s:900/s, 2s:900/s, 3s:0/s")
    plan = LoadPlan(connections=7, total_connections=7, duration=s.duration, stages=s)
    parts = plan.split(3)
    assert [p.connections for p in parts] == [3, 2, 2]
    pacings = [[p.pacing(i) for i in range(p.connections)] for p in parts]
    for t in (0.25, 1.0, 2.9, 4.0, 6.5, 8.0):
        now = round(t * 1e9)
        per_worker = [sum(pc.due_by(0, now) for pc in worker) for worker in pacings]  # type: ignore[union-attr]
        # All connections together: every request whose due point (n + 1/2) is reached.
        assert sum(per_worker) == math.floor(s.due_until(t) + 0.5)
        # Each worker: its connections' share, to within one request per connection.
        for part, got in zip(parts, per_worker, strict=True):
            share = s.due_until(t) * part.connections / 7
            assert abs(got - share) <= part.connections
    # due_by agrees with due_at at every instant around a request's intended time.
    p = pacings[1][0]
    assert p is not None
    for k in (0, 1, 50, 641):
        at = p.due_at(0, k)
        assert p.due_by(0, at) == k + 1
        assert p.due_by(0, at - 1) == k
    # 4500 requests in all: connection 3 of 7 carries requests 3, 10, ... 4497.
    assert p.due_at(0, 642) == 7_870_900_555
    assert p.due_by(0, 10**16) == 643


def test_connection_changes_step_at_half_counts() -> None:
    s = parse_stages("1s:3, 1s:3, 0s:1, 1s:0")
    assert s.changes() == [
        (0.0, 0),
        (pytest.approx(1 / 6), 1),
        (0.5, 2),
        (pytest.approx(5 / 6), 3),
        (2.0, 1),
        (2.5, 0),
    ]
    assert s.connections_at(1.5) == 3


def test_plan_refuses_settings_that_conflict_with_stages() -> None:
    rate, conns = parse_stages("2s:100/s"), parse_stages("2s:4")
    with pytest.raises(ConfigError, match="rate"):
        LoadPlan(duration=2.0, rate=10.0, stages=rate)
    with pytest.raises(ConfigError, match="duration"):
        LoadPlan(duration=5.0, stages=rate)
    with pytest.raises(ConfigError, match="requests"):
        LoadPlan(duration=None, requests=10, stages=rate)
    with pytest.raises(ConfigError, match="warmup"):
        LoadPlan(duration=2.0, warmup=1.0, stages=rate)
    with pytest.raises(ConfigError, match="stream"):
        LoadPlan(scenario="stream", duration=2.0, stages=rate)
    with pytest.raises(ConfigError, match="up to 4"):
        LoadPlan(connections=16, total_connections=16, duration=2.0, stages=conns)
    assert (
        LoadPlan(connections=4, total_connections=4, duration=2.0, stages=conns).pacing(0) is None
    )


# --- per-stage figures ---------------------------------------------------------------------


def _result(stages: Stages, share: float = 1.0) -> BenchResult:
    r = BenchResult("echo", "t", "tcp", 2, 1, 1, 64, None, duration_s=3.0)  # type: ignore[arg-type]
    r.stages = empty_stages(stages, share)
    return r


def test_tally_files_requests_by_send_time_and_errors_by_now() -> None:
    s = parse_stages("1s:100/s, 0s:200/s, 2s:200/s")
    r = _result(s)
    tally = StageTally(s, r.stages, start_ns=1_000)
    tally.completed(now_ns=1_000 + 1_200_000_000, sent_ns=1_000 + 999_000_000)  # sent in 1
    tally.completed(now_ns=1_000 + 1_300_000_000, sent_ns=1_000 + 1_000_000_000)  # sent in 3
    tally.error(1_000 + 5_000_000_000, "timeout", 2)  # after the end: the last stage
    tally.close(1_000 + 2_500_000_000)  # stopped half-way through stage 3
    assert [st.requests for st in r.stages] == [1, 0, 1]
    assert r.stages[0].latency.max == pytest.approx(201_000_000, rel=1e-3)
    assert r.stages[2].errors == {"timeout": 2}
    assert [st.duration_s for st in r.stages] == [1.0, 0.0, pytest.approx(1.5)]


def test_tally_schedule_counts_intended_and_missed_per_stage() -> None:
    s = parse_stages("1s:100/s, 1s:100/s")  # 50 then 100 requests due
    r = _result(s)
    tally = StageTally(s, r.stages, start_ns=0)
    pacing = s.pacing(0, 1)
    tally.schedule(pacing, issued=40, end_ns=2_000_000_000, cutoff_ns=1_990_000_000)
    assert [st.intended for st in r.stages] == [50, 100]
    # 10 of stage 1 never sent; of stage 2 all but the last, due at 1.995 s, after the cutoff.
    assert [st.missed for st in r.stages] == [10, 99]


def test_stage_figures_merge_exactly_and_survive_json() -> None:
    s = parse_stages("1s:3, 1s:1")
    parts = []
    for latency_ns in (1_000_000, 9_000_000):
        r = _result(s, share=0.5)
        for st in r.stages:
            st.requests = 10
            st.duration_s = 1.0
            for _ in range(10):
                st.latency.record(latency_ns)
        r.stages[1].errors["reset"] = 1
        parts.append(BenchResult.from_dict(r.as_dict()))
    merged = merge_results(parts)
    assert [st.requests for st in merged.stages] == [20, 20]
    assert [st.target for st in merged.stages] == [3, 1]  # the shares add up
    assert merged.stages[1].errors == {"reset": 2}
    both = LatencyHistogram()
    for p in parts:
        both.add(p.stages[0].latency)
    assert merged.stages[0].latency.percentile(99) == both.percentile(99)
    assert merged.stages[0].latency.percentile(50) == pytest.approx(1_000_000, rel=1e-3)
    # Half at 1 ms, half at 9 ms: mean 5 ms, standard deviation 4 ms, in the JSON too.
    shown = merged.stages[0].as_dict()["latency_ms"]
    assert shown["mean"] == pytest.approx(5.0, rel=1e-3)
    assert shown["stddev"] == pytest.approx(4.0, rel=1e-3)
    other = _result(parse_stages("2s:3"))
    with pytest.raises(ConfigError, match="different --stages"):
        merge_stages([parts[0].stages, other.stages])


# --- per-stage thresholds -----------------------------------------------------------------


def test_stage_threshold_syntax() -> None:
    assert parse_threshold("p99[stage=2]>5ms").stage == 2
    assert parse_threshold("p99{stage:2}>5ms").stage == 2  # k6's tag form
    assert parse_threshold("errors [stage=*] > 0").stage == EVERY_STAGE
    assert parse_threshold("p99>5ms").stage is None
    for bad, words in (
        ("mb_s[stage=1]>1", "no per-stage figure"),
        ("p99[stage=0]>5ms", "numbered from 1"),
        ("p99[stage=x]>5ms", "METRIC OP VALUE"),
    ):
        with pytest.raises(ConfigError, match=words):
            parse_threshold(bad)
    with pytest.raises(ConfigError, match="there are 2 stage"):
        parse_threshold("p99[stage=3]>5ms").check_stages(2)
    with pytest.raises(ConfigError, match="needs --stages"):
        parse_threshold("p99[stage=1]>5ms").check_stages(0)
    # A saved result without stages (bench merge): refused, never "held".
    plain = BenchResult("echo", "t", "tcp", 2, 1, 1, 64, None, duration_s=1.0)  # type: ignore[arg-type]
    for text in ("p99[stage=*]>5ms", "p99[stage=1]>5ms"):
        with pytest.raises(ConfigError, match="no --stages"):
            parse_threshold(text).crossed(plain)


def test_stage_thresholds_judge_their_stage_only() -> None:
    s = parse_stages("1s:100/s, 0s:200/s, 1s:200/s")
    r = _result(s)
    fast, slow = r.stages[0], r.stages[2]
    for st, latency in ((fast, 1_000_000), (slow, 20_000_000)):
        st.requests, st.duration_s = 100, 1.0
        for _ in range(100):
            st.latency.record(latency)
    assert not parse_threshold("p99[stage=1]>5ms").crossed(r)
    crossed = parse_threshold("p99[stage=3]>5ms")
    assert crossed.crossed(r)
    assert "in stage 3 = 20.0" in crossed.describe(r)
    every = parse_threshold("p99[stage=*]>5ms")  # the 0s stage is skipped, not "no data"
    assert every.crossed(r)
    assert "in stage(s) 3 =" in every.describe(r)
    assert not parse_threshold("rps[stage=*]<50").crossed(r)


def test_connection_ranks_interleave_across_nested_splits() -> None:
    # A cluster of 2 members, each with 2 processes: 7 slots open in an order that keeps
    # every share within one connection of the others at every count.
    s = parse_stages("1s:7")
    plan = LoadPlan(connections=7, total_connections=7, duration=1.0, stages=s)
    leaves = [p for member in plan.split(2) for p in member.split(2)]
    ranks = [[p.rank_offset + j * p.rank_stride for j in range(p.connections)] for p in leaves]
    assert sorted(r for leaf in ranks for r in leaf) == list(range(7))
    for count in range(8):
        active = [sum(r < count for r in leaf) for leaf in ranks]
        assert max(active) - min(active) <= 1, (count, active)

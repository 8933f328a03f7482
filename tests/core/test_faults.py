"""Fault specs and schedules: parsing, per-connection draws, and when bytes are due."""

from __future__ import annotations

import random

import pytest

from netkit.core.faults import DirectionPlan, FaultSpec, draw, parse_fault, parse_rate
from netkit.errors import ConfigError


def test_latency_in_ms_by_default_with_jitter_and_direction():
    spec = parse_fault("latency", "50:10,down,p=0.25")
    assert spec == FaultSpec("latency", ("down",), 0.25, 0.05, 0.01)
    assert parse_fault("latency", "1s").a == 1.0


@pytest.mark.parametrize(
    ("text", "rate"), [("1MB/s", 1e6), ("512KiB/s", 512 * 1024), ("8Mbit/s", 1e6), ("100 / s", 100)]
)
def test_rates(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    ("kind", "text"),
    [("latency", "soon"), ("bandwidth", "fast"), ("bandwidth", "0/s"), ("slice", "0"),
     ("latency", "5,sideways"), ("latency", "5,p=2"), ("limit_data", "lots")],
)  # fmt: skip
def test_bad_values_name_the_option(kind, text):
    with pytest.raises(ConfigError, match="--" + kind.replace("_", "-")):
        parse_fault(kind, text)


def test_reset_after_bytes_or_duration():
    assert parse_fault("reset_after", "64KiB").a == 65536
    by_time = parse_fault("reset_after", "2s")
    assert (by_time.a, by_time.b) == (0, 2.0)


def test_draws_follow_probability_and_seed():
    specs = [parse_fault("latency", "10,p=0.5")]
    first = [bool(draw(specs, rng).applied) for rng in [random.Random(3)] for _ in range(200)]
    again = [bool(draw(specs, rng).applied) for rng in [random.Random(3)] for _ in range(200)]
    assert first == again
    assert 70 < sum(first) < 130


def test_directions_get_their_own_plans():
    faults = draw(
        [parse_fault("limit_data", "100,up"), parse_fault("slice", "10:5ms,down")], random.Random()
    )
    assert faults.directions["up"].limit == 100 and faults.directions["down"].limit is None
    assert faults.directions["down"].slice_size == 10 and faults.touches_data


def test_setup_faults_do_not_touch_data():
    faults = draw([parse_fault("accept_delay", "1s"), FaultSpec("refuse")], random.Random())
    assert faults.refuse and faults.accept_delay == 1.0 and not faults.touches_data


def test_latency_schedule_keeps_order_under_jitter():
    plan = DirectionPlan(latency=0.05, jitter=0.04)
    rng = random.Random(1)
    dues = [plan.plan(now / 1000, 100, rng)[0][0] for now in range(100)]
    assert dues == sorted(dues)
    assert all(d >= now / 1000 + 0.01 - 1e-9 for now, d in enumerate(dues))


def test_bandwidth_schedule_spaces_pieces_by_size_over_rate():
    plan = DirectionPlan(rate=1000.0)
    pieces = plan.plan(0.0, 500, random.Random()) + plan.plan(0.0, 500, random.Random())
    assert [due for due, _ in pieces] == [0.0, 0.5]


def test_slices_are_spaced_by_their_delay():
    plan = DirectionPlan(slice_size=100, slice_delay=0.01)
    pieces = plan.plan(1.0, 250, random.Random())
    assert [size for _, size in pieces] == [100, 100, 50]
    assert [round(due, 6) for due, _ in pieces] == [1.0, 1.01, 1.02]


def test_slow_close_acts_on_its_direction_only():
    faults = draw([parse_fault("slow_close", "1s,down")], random.Random())
    assert faults.directions["down"].slow_close == 1.0
    assert faults.directions["up"].slow_close == 0.0
    both = draw([parse_fault("slow_close", "250ms")], random.Random())
    assert both.directions["up"].slow_close == both.directions["down"].slow_close == 0.25
    assert not both.touches_data  # a FIN delay does not need the bytes in user space


@pytest.mark.parametrize("text", ["1s,down", "1s,up", "1s,up,p=0.5"])
def test_accept_delay_has_no_direction(text):
    with pytest.raises(ConfigError, match=r"--accept-delay .* no direction"):
        parse_fault("accept_delay", text)
    assert parse_fault("accept_delay", "1s,p=0.5").probability == 0.5


def test_blackhole_after_can_close_after_a_time():
    # toxiproxy's timeout toxic: swallow the bytes, close the connection CLOSE_AFTER later.
    spec = parse_fault("blackhole_after", "200ms:1s,down")
    assert (spec.a, spec.b, spec.directions) == (0.2, 1.0, ("down",))
    assert spec.describe() == {"fault": "blackhole-after", "after_s": 0.2, "close_after_s": 1.0}
    plan = draw([spec], random.Random()).directions["down"]
    assert (plan.blackhole_after, plan.blackhole_close_after) == (0.2, 1.0)
    assert parse_fault("blackhole_after", "2s").b == 0.0  # open for ever, as before
    with pytest.raises(ConfigError, match="--blackhole-after"):
        parse_fault("blackhole_after", "1s:later")


def test_blackhole_from_the_start_still_touches_data():
    assert draw([parse_fault("blackhole_after", "0")], random.Random()).touches_data

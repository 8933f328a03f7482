"""Fault specs and schedules: parsing, per-connection draws, and when bytes are due."""

from __future__ import annotations

import random

import pytest

from netkit.core.faults import (
    FAULTS,
    AcceptDelay,
    Bandwidth,
    BlackholeAfter,
    DirectionPlan,
    Fault,
    Latency,
    LimitData,
    Refuse,
    ResetAfter,
    Slice,
    SlowClose,
    draw,
    fault_kind,
    parse_fault,
    parse_faults,
    parse_rate,
)
from netkit.errors import ConfigError, UsageError


def test_latency_in_ms_by_default_with_jitter_and_direction():
    spec = parse_fault("latency", "50:10,down,p=0.25")
    assert spec == Latency(50, 10, direction="down", probability=0.25)
    assert parse_fault("latency", "1s") == Latency(1000)


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
    assert parse_fault("reset_after", "64KiB") == ResetAfter(size=65536)
    assert parse_fault("reset_after", "2s") == ResetAfter(ms=2000)


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
    faults = draw([parse_fault("accept_delay", "1s"), Refuse()], random.Random())
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
    assert spec == BlackholeAfter(200, 1000, direction="down")
    assert spec.describe() == {"fault": "blackhole-after", "after_s": 0.2, "close_after_s": 1.0}
    plan = draw([spec], random.Random()).directions["down"]
    assert (plan.blackhole_after, plan.blackhole_close_after) == (0.2, 1.0)
    assert parse_fault("blackhole_after", "2s").close_after == 0.0  # open for ever, as before
    with pytest.raises(ConfigError, match="--blackhole-after"):
        parse_fault("blackhole_after", "1s:later")


def test_blackhole_from_the_start_still_touches_data():
    assert draw([parse_fault("blackhole_after", "0")], random.Random()).touches_data


# --- the registry: every kind parses, describes and renders itself ---------------------------

# One flag value per kind, and the fields its ``fault`` event carries.
EXAMPLES: dict[type[Fault], tuple[str, Fault, dict[str, object]]] = {
    Latency: ("50:10,down", Latency(50, 10, direction="down"),
              {"latency_ms": 50.0, "jitter_ms": 10.0}),
    Bandwidth: ("10Mbit/s,p=0.5", Bandwidth(1.25e6, probability=0.5), {"bytes_per_s": 1.25e6}),
    Slice: ("100:20ms,up", Slice(100, 20, direction="up"), {"bytes": 100, "delay_ms": 20.0}),
    LimitData: ("64KiB", LimitData(65536), {"bytes": 65536}),
    ResetAfter: ("2s,down", ResetAfter(ms=2000, direction="down"), {"after_s": 2.0}),
    BlackholeAfter: ("300ms:1s", BlackholeAfter(300, 1000), {"after_s": 0.3, "close_after_s": 1.0}),
    SlowClose: ("250ms,down,p=0.1", SlowClose(250, direction="down", probability=0.1),
                {"after_s": 0.25}),
    AcceptDelay: ("1s", AcceptDelay(1000), {"delay_s": 1.0}),
    Refuse: ("p=0.25", Refuse(probability=0.25), {}),
}  # fmt: skip


def test_the_registry_lists_every_kind_once_in_flag_order():
    assert tuple(EXAMPLES) == FAULTS
    assert len({kind.name for kind in FAULTS}) == len(FAULTS)
    assert all(kind.help and kind.option() == f"--{kind.name}" for kind in FAULTS)


@pytest.mark.parametrize("kind", FAULTS, ids=lambda kind: kind.name)
def test_every_kind_parses_describes_and_round_trips(kind):
    text, expected, values = EXAMPLES[kind]
    fault = parse_fault(kind.name, text)
    assert fault == expected and type(fault) is kind
    assert fault.describe() == {"fault": kind.name, **values}
    assert fault.as_dict() == fault.describe() | {
        "directions": list(fault.directions),
        "p": fault.probability,
    }
    assert kind.parse(fault.flag_value()) == fault  # the rendered flag parses back


@pytest.mark.parametrize(
    "text",
    ["50", "0:0", "7ms,up,p=0.3", "1.5s:250ms,down"],
)
def test_latency_round_trips_through_its_flag_value(text):
    fault = Latency.parse(text)
    assert Latency.parse(fault.flag_value()) == fault


@pytest.mark.parametrize("text", ["1MB/s", "512KiB/s", "3bit/s", "100/s,up"])
def test_bandwidth_round_trips_whole_bytes_and_bits(text):
    fault = Bandwidth.parse(text)
    assert Bandwidth.parse(fault.flag_value()) == fault


def test_reset_after_round_trips_both_forms():
    for text in ("2000,down", "1.5s", "0"):
        fault = ResetAfter.parse(text)
        assert ResetAfter.parse(fault.flag_value()) == fault


@pytest.mark.parametrize("name", ["limit-data", "limit_data", "--limit-data"])
def test_kinds_are_found_by_flag_or_python_name(name):
    assert fault_kind(name) is LimitData


@pytest.mark.parametrize("name", ["jitter", "", "refused", "--"])
def test_an_unknown_kind_is_a_usage_error(name):
    with pytest.raises(ConfigError, match="unknown fault") as caught:
        parse_fault(name, "1")
    assert isinstance(caught.value, UsageError)
    with pytest.raises(ConfigError, match="unknown fault"):
        parse_faults({name: ["1"]})


def test_parse_faults_reads_flags_in_registry_order():
    faults = parse_faults(
        {"refuse": ["0.5"], "slow-close": None, "latency": ["5", "6,up"], "accept-delay": ["1s"]}
    )
    assert [type(f) for f in faults] == [Latency, Latency, AcceptDelay, Refuse]
    assert faults[1] == Latency(6, direction="up")


@pytest.mark.parametrize("text", ["2", "-0.1", "x", "1,up"])
def test_refuse_takes_a_probability_alone(text):
    with pytest.raises(ConfigError, match=r"--refuse .* give a probability from 0 to 1"):
        Refuse.parse(text)
    assert Refuse.parse("1") == Refuse() and Refuse.parse("p=0") == Refuse(probability=0.0)


def test_each_kind_applies_to_its_own_part_of_a_connection():
    faults = draw(
        [Refuse(), AcceptDelay(500), ResetAfter(ms=3000), ResetAfter(100, direction="up")],
        random.Random(),
    )
    assert faults.refuse and faults.accept_delay == 0.5 and faults.reset_after_s == 3.0
    assert faults.directions["up"].reset_bytes == 100
    assert faults.directions["down"].reset_bytes is None


def test_ending_faults_say_how_the_connection_ends():
    assert (ResetAfter.end_reason, ResetAfter.resets) == ("reset", True)
    assert (LimitData.end_reason, LimitData.resets) == ("limit-data", False)
    assert (BlackholeAfter.end_reason, BlackholeAfter.resets) == ("blackhole-after", False)
    assert (Refuse.end_reason, Refuse.resets) == ("refuse", True)


def test_public_constructors_take_toxiproxy_units_and_one_direction():
    fault = Latency(50, jitter=10, direction="down")
    assert fault.directions == ("down",) and Latency(50).directions == ("up", "down")
    assert fault.describe() == {"fault": "latency", "latency_ms": 50, "jitter_ms": 10}
    plan = draw([fault], random.Random()).directions["down"]
    assert (plan.latency, plan.jitter) == (0.05, 0.01)  # the relay schedules in seconds
    assert SlowClose(250).seconds == 0.25 and AcceptDelay(1000).describe()["delay_s"] == 1.0
    assert ResetAfter(ms=1500).describe() == {"fault": "reset-after", "after_s": 1.5}
    assert Latency(50, direction="up").flag_value() == "50ms:0.0ms,up"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Latency(50, direction="sideways"), "direction 'sideways'"),
        (lambda: Refuse(direction="up"), "it has no direction"),
        (lambda: Latency(-1), "ms -1 must not be negative"),
        (lambda: Bandwidth(100, probability=1.5), "probability 1.5"),
        (lambda: Slice(0), "at least 1 byte"),
        (lambda: ResetAfter(size=10, ms=10), "not both"),
    ],
)
def test_public_constructors_refuse_bad_values_with_a_usage_error(build, message):
    with pytest.raises(UsageError, match=message):
        build()


def test_slices_vary_around_their_size_and_cover_every_byte():
    # toxiproxy's slicer: average_size ± size_variation.
    plan = DirectionPlan()
    Slice(100, variation=30).apply_to(plan)
    pieces = plan.plan(0.0, 10_000, random.Random(7))
    sizes = [size for _, size in pieces]
    assert sum(sizes) == 10_000
    assert all(70 <= s <= 130 for s in sizes[:-1]) and 1 <= sizes[-1] <= 130
    assert len(set(sizes)) > 10  # they vary
    again = DirectionPlan()
    Slice(100, variation=30).apply_to(again)
    assert [s for _, s in again.plan(0.0, 10_000, random.Random(7))] == sizes  # seeded


def test_a_slice_variation_must_leave_a_byte():
    with pytest.raises(UsageError, match="at least 1 byte"):
        Slice(10, variation=10)
    assert Slice(10, variation=9).values()["variation_bytes"] == 9

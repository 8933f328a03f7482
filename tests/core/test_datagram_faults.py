"""The datagram fault kinds (flags, typed objects) and their schedule, in memory."""

from __future__ import annotations

import random

import pytest

from netkit.core.datagram_faults import (
    DATAGRAM_FAULTS,
    BurstLoss,
    Corrupt,
    DropFirst,
    Duplicate,
    Loss,
    Rate,
    Reorder,
    Truncate,
    check_transport,
    parse_chance,
)
from netkit.core.datagram_schedule import DatagramSchedule, HoldBudget, draw_flow
from netkit.core.faults import Bandwidth, Fault, Latency, draw, parse_faults
from netkit.errors import ConfigError


def run(schedule: DatagramSchedule, payloads: list[bytes], step: float = 0.001) -> list[bytes]:
    """Push each payload ``step`` s apart, releasing as time goes; then release the rest."""
    out: list[bytes] = []
    now = 0.0
    for payload in payloads:
        schedule.push(now, payload)
        out += schedule.release(now)
        now += step
    out += schedule.release(now + 3600)
    return out


def numbered(count: int, size: int = 8) -> list[bytes]:
    return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(count)]


# --- flags and typed objects ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (Loss, "30%", Loss(0.3)),
        (Loss, "0.25,up,p=0.5", Loss(0.25, direction="up", probability=0.5)),
        (BurstLoss, "1%:30%", BurstLoss(0.01, 0.3)),
        (BurstLoss, "0.1:0.2:0.9:0.01,down", BurstLoss(0.1, 0.2, 0.9, 0.01, direction="down")),
        (Duplicate, "0.1", Duplicate(0.1)),
        (Reorder, "10%:3:50ms", Reorder(0.1, gap=3, max_hold=50)),
        (Reorder, "0.2", Reorder(0.2)),
        (Corrupt, "0.5:4", Corrupt(0.5, bits=4)),
        (Truncate, "1:100", Truncate(1.0, size=100)),
        (Rate, "1MB/s", Rate(1_000_000)),
        (Rate, "8Mbit/s:drop", Rate(1_000_000, queue=0)),
        (Rate, "1KB/s:20", Rate(1000, queue=20)),
        (DropFirst, "3", DropFirst(3)),
    ],
)
def test_flags_parse_to_typed_faults_and_back(
    kind: type[Fault], text: str, expected: Fault
) -> None:
    fault = kind.parse(text)
    assert fault == expected
    assert kind.parse(fault.flag_value()) == fault


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (Loss, "130%", "is not a chance"),
        (Loss, "x", "is not a chance"),
        (BurstLoss, "0.1", "P:R at least"),
        (Reorder, "0.1:0", "GAP '0'"),
        (Corrupt, "0.1:x", "BITS 'x'"),
        (Rate, "1MB/s:lots", "queue length or 'drop'"),
        (Rate, "fast", "is not a rate"),
        (DropFirst, "-1", "is not a count"),
        (Duplicate, "0.1,sideways", "unknown modifier"),
    ],
)
def test_bad_flag_values_say_what_is_wrong(kind: type[Fault], text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        kind.parse(text)
    assert kind.option() in str(err.value)


def test_typed_constructors_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="chance"):
        Loss(1.5)
    with pytest.raises(ConfigError, match="recover"):
        BurstLoss(0.1, 2.0)
    with pytest.raises(ConfigError, match="rate"):
        Rate(0)
    with pytest.raises(ConfigError, match="direction"):
        Duplicate(0.1, direction="left")  # type: ignore[arg-type]


def test_chance_takes_a_fraction_or_a_percentage() -> None:
    assert parse_chance("30%", "--loss", "30%") == pytest.approx(0.3)
    assert parse_chance(" 0.5 ", "--loss", "0.5") == 0.5


def test_each_transport_refuses_the_others_faults() -> None:
    check_transport([Loss(0.1), Latency(10)], "udp")
    check_transport([Latency(10), Bandwidth(1000)], "tcp")
    with pytest.raises(ConfigError, match="--bandwidth applies to TCP and Unix relays, not to UDP"):
        check_transport([Bandwidth(1000)], "udp")
    with pytest.raises(ConfigError, match="--loss applies to UDP relays only"):
        check_transport([Loss(0.1)], "tcp")


def test_a_datagram_fault_in_a_stream_connection_is_refused() -> None:
    with pytest.raises(ConfigError, match="UDP relays only"):
        draw([Duplicate(0.5)], random.Random(1))


def test_the_flag_table_knows_only_stream_faults() -> None:
    # Stream relays parse FAULTS; the datagram kinds are flags of UDP relays only.
    with pytest.raises(ConfigError, match="unknown fault"):
        parse_faults({"loss": ["0.1"]})
    assert Latency in DATAGRAM_FAULTS


# --- the schedule ----------------------------------------------------------------------------


def test_seeded_loss_of_30_percent_over_10000_datagrams() -> None:
    schedule = DatagramSchedule([Loss(0.3)], "seed/1/up")
    payloads = numbered(10_000)
    out = run(schedule, payloads)
    lost = 1 - len(out) / len(payloads)
    assert abs(lost - 0.3) <= 0.03
    assert schedule.dropped == len(payloads) - len(out)
    passed = set(out)
    assert out == [p for p in payloads if p in passed]  # order kept, nothing altered


def test_the_same_seed_gives_the_same_faults() -> None:
    faults = [Loss(0.2), Duplicate(0.1), Corrupt(0.1, bits=2), Reorder(0.1), Truncate(0.05)]

    def events(seed: str) -> tuple[list[dict[str, object]], list[bytes]]:
        schedule = DatagramSchedule(faults, seed)
        injected: list[dict[str, object]] = []
        out: list[bytes] = []
        for i, payload in enumerate(numbered(2000, 32)):
            injected += schedule.push(i * 0.001, payload)
            out += schedule.release(i * 0.001)
        return injected, out + schedule.release(10.0)

    first = events("7/1/up")
    assert first == events("7/1/up")
    assert first != events("8/1/up")
    kinds = {e["fault"] for e in first[0]}
    assert kinds == {"loss", "duplicate", "corrupt", "reorder", "truncate"}


def test_one_fault_does_not_change_another_faults_draws() -> None:
    def lost(faults: list[Fault]) -> list[int]:
        schedule = DatagramSchedule(faults, "s")
        dropped = []
        for i, payload in enumerate(numbered(1000)):
            if any(e.get("dropped") for e in schedule.push(i * 0.001, payload)):
                dropped.append(i)
            schedule.release(i * 0.001)
        return dropped

    # Each fault draws from its own RNG: adding duplication leaves the losses as they were.
    assert lost([Loss(0.3)]) == lost([Loss(0.3), Duplicate(0.5)])


def test_burst_loss_loses_in_bursts_at_the_mean_rate() -> None:
    fault = BurstLoss(0.05, 0.25)
    schedule = DatagramSchedule([fault], "burst")
    drops = []
    for _ in range(20_000):
        drops.append(bool(schedule.push(0.0, b"x")))
        schedule.release(0.0)
    rate = sum(drops) / len(drops)
    assert abs(rate - fault.mean_loss) < 0.03  # 1/6
    bursts = sum(1 for a, b in zip([False, *drops], drops, strict=False) if b and not a)
    assert 3 <= sum(drops) / bursts <= 5  # mean burst 1/r = 4 datagrams (independent: 1.2)


def test_duplicate_sends_a_copy_right_after_the_original() -> None:
    out = run(DatagramSchedule([Duplicate(1.0)], "d"), numbered(5))
    assert out == [p for p in numbered(5) for _ in range(2)]


def test_reorder_holds_one_back_until_gap_later_ones_went() -> None:
    schedule = DatagramSchedule([Reorder(1.0, gap=2)], "r")
    payloads = numbered(3)
    schedule.push(0.0, payloads[0])  # held: waits for 2 later datagrams
    assert schedule.release(0.0) == []
    schedule.faults = []  # the later ones go straight on
    schedule.push(0.001, payloads[1])
    schedule.push(0.002, payloads[2])
    assert schedule.release(0.002) == [payloads[1], payloads[2], payloads[0]]


def test_reorder_releases_a_held_datagram_after_max_hold() -> None:
    schedule = DatagramSchedule([Reorder(1.0, gap=5, max_hold=40)], "r")
    schedule.push(1.0, b"held")
    assert schedule.next_due == pytest.approx(1.04)
    assert schedule.release(1.039) == []
    assert schedule.release(1.04) == [b"held"]
    assert schedule.pending == 0


def test_latency_with_jitter_keeps_order() -> None:
    schedule = DatagramSchedule([Latency(20, jitter=15)], "j")
    payloads = numbered(500)
    out = run(schedule, payloads, step=0.0005)
    assert out == payloads
    fresh = DatagramSchedule([Latency(20, jitter=15)], "j")
    fresh.push(0.0, b"x")
    assert 0.005 <= (fresh.next_due or 0) <= 0.035


def test_corrupt_flips_exactly_the_bits_it_reports() -> None:
    schedule = DatagramSchedule([Corrupt(1.0, bits=3)], "c")
    payload = bytes(64)
    (event,) = schedule.push(0.0, payload)
    (data,) = schedule.release(0.0)
    flipped = [i for i in range(512) if data[i // 8] & (0x80 >> (i % 8))]
    assert flipped == event["bits"] and len(flipped) == 3


def test_truncate_cuts_to_the_size_or_shorter() -> None:
    out = run(DatagramSchedule([Truncate(1.0, size=10)], "t"), [bytes(100), bytes(5)])
    assert [len(d) for d in out] == [10, 5]
    random_cut = run(DatagramSchedule([Truncate(1.0)], "t"), [bytes(100)] * 50)
    assert all(len(d) < 100 for d in random_cut)


def test_rate_as_a_policer_drops_what_exceeds_it() -> None:
    # 1000 B/s, 100-byte datagrams every 10 ms: ten times the rate, so about 1 in 10 passes.
    schedule = DatagramSchedule([Rate(1000, queue=0)], "p")
    out = run(schedule, [bytes(100)] * 200, step=0.01)
    assert 18 <= len(out) <= 22
    assert schedule.dropped == 200 - len(out)


def test_rate_with_a_queue_delays_then_drops_beyond_it() -> None:
    schedule = DatagramSchedule([Rate(1000, queue=5)], "q")
    times = []
    for _ in range(20):
        events = schedule.push(0.0, bytes(100))
        times.append(bool(events))
    assert times.count(True) == 20 - 6  # the first goes, five wait, the rest are dropped
    assert schedule.release(0.0) == [bytes(100)]
    assert schedule.next_due == pytest.approx(0.1)
    assert len(schedule.release(1.0)) == 5


def test_drop_first_loses_the_first_datagrams_of_the_flow_only() -> None:
    out = run(DatagramSchedule([DropFirst(3)], "h"), numbered(6))
    assert out == numbered(6)[3:]


def test_held_datagrams_are_bounded_per_direction_and_across_flows() -> None:
    budget = HoldBudget(1000)
    one = DatagramSchedule([Latency(1000)], "a", budget, limit=5)
    for _ in range(10):
        one.push(0.0, bytes(100))
    assert one.pending == 5 and one.dropped == 5 and budget.held == 500
    other = DatagramSchedule([Latency(1000)], "b", budget)
    events = [other.push(0.0, bytes(100)) for _ in range(10)]
    assert budget.held == 1000 and other.pending == 5
    assert events[-1] == [{"fault": "overflow", "seq": 9, "size": 100}]
    assert one.discard() == 5 and budget.held == 500


def test_a_flow_gets_each_fault_by_its_probability() -> None:
    faults = [Loss(0.1, probability=0.5), Duplicate(0.1, direction="down")]
    flows = [draw_flow(faults, 1, n) for n in range(1, 401)]
    with_loss = sum(1 for f in flows if any(a["fault"] == "loss" for a in f.applied))
    assert 160 <= with_loss <= 240
    assert all(f.directions["down"] is not None for f in flows)
    assert draw_flow(faults, 1, 5).applied == draw_flow(faults, 1, 5).applied
    untouched = draw_flow([Loss(0.1, direction="up")], 1, 1)
    assert untouched.directions["down"] is None and untouched.directions["up"] is not None

"""Tests for netkit.core.flow: one direction's counts, held bytes and fault schedule."""

from __future__ import annotations

import random

from netkit.core.faults import DirectionPlan, LimitData, ResetAfter
from netkit.core.flow import Flow, RelayRecord, same_faults


def test_counts_and_undelivered() -> None:
    flow = Flow("up")
    flow.took(100)
    flow.gave(60)
    assert (flow.received, flow.delivered, flow.undelivered) == (100, 60, 40)
    flow.lost(10)  # a reset discarded what the kernel still queued
    assert flow.delivered == 50 and flow.undelivered == 50


def test_bytes_in_a_pipe_are_held_until_they_go_out() -> None:
    flow = Flow("down")
    flow.took(1000, held=True)
    assert flow.held == 1000
    flow.gave(400, held=True)
    assert (flow.held, flow.delivered) == (600, 400)
    flow.gave(600, held=True)
    assert flow.held == 0 and flow.undelivered == 0


def test_activity_is_reported_for_every_move() -> None:
    flow = Flow("up")
    seen: list[int] = []
    flow.on_activity = lambda: seen.append(flow.received + flow.delivered)
    flow.took(5)
    flow.gave(5)
    flow.lost(2)
    assert seen == [5, 10, 8]


def test_held_pieces_come_out_in_order_when_due() -> None:
    # Jitter makes later chunks' own delays shorter; they still wait for the earlier ones.
    flow = Flow("up", DirectionPlan(latency=1.0, jitter=0.9))
    rng = random.Random(7)
    chunks = [bytes([i]) * 10 for i in range(20)]
    for i, chunk in enumerate(chunks):
        flow.hold(chunk, now=i * 0.01, rng=rng)
    assert flow.held == 200
    out = bytearray()
    now = 0.0
    while flow.next_due is not None:
        now = max(now, flow.next_due)
        out += b"".join(bytes(p) for p in flow.due(now))
    assert bytes(out) == b"".join(chunks)
    assert flow.held == 0


def test_nothing_is_due_before_its_time() -> None:
    flow = Flow("down", DirectionPlan(latency=0.5, slice_size=4, slice_delay=0.1))
    flow.hold(b"abcdefgh", now=10.0, rng=random.Random(1))
    assert list(flow.due(10.4)) == []
    assert flow.next_due == 10.5
    assert [bytes(p) for p in flow.due(10.5)] == [b"abcd"]
    assert flow.held == 4
    assert [bytes(p) for p in flow.due(10.6)] == [b"efgh"]
    assert flow.next_due is None


def test_allowance_and_the_fault_that_ends_at_a_byte_limit() -> None:
    limited = Flow("up", DirectionPlan(limit=10))
    assert bytes(limited.allowance(b"x" * 6)) == b"x" * 6
    limited.gave(6)
    assert limited.ending() is None
    assert bytes(limited.allowance(b"y" * 6)) == b"yyyy"
    limited.gave(4)
    assert limited.ending() is LimitData
    assert limited.allowance(b"z") == b""

    reset = Flow("down", DirectionPlan(reset_bytes=3, limit=100))
    assert bytes(reset.allowance(b"abcdef")) == b"abc"
    reset.gave(3)
    assert reset.ending() is ResetAfter  # the reset wins over the larger limit


def test_without_a_plan_everything_passes() -> None:
    flow = Flow("up")
    data = memoryview(b"q" * 100)
    assert flow.allowance(data) is data
    assert flow.ending() is None and not flow.shapes_data


def test_record_reports_both_flows() -> None:
    record = RelayRecord(3, "127.0.0.1:5000", upstream="u", path="splice")
    record.up.took(10)
    record.up.gave(10)
    record.down.took(7)
    record.down.gave(5)
    fields = record.as_dict()
    assert fields["bytes_up"] == 10 and fields["bytes_down"] == 5
    assert fields["undelivered"] == {"up": 0, "down": 2}
    assert fields["end"] == "closed" and fields["path"] == "splice"
    record.down.gave(2)
    assert "undelivered" not in record.as_dict()


def test_record_hands_activity_to_both_flows() -> None:
    record = RelayRecord(1, "c")
    ticks: list[str] = []
    record.on_activity(lambda: ticks.append("t"))
    record.up.took(1)
    record.down.took(1)
    assert ticks == ["t", "t"]


def test_removing_a_delay_makes_held_bytes_due_at_once_in_order() -> None:
    # toxiproxy lets a removed latency toxic's bytes go at once; they never jump the queue.
    rng = random.Random(1)
    flow = Flow("down", DirectionPlan(latency=1.0))
    for i, chunk in enumerate([b"one ", b"two ", b"three"]):
        flow.hold(chunk, now=10.0 + i * 0.01, rng=rng)
    assert list(flow.due(10.5)) == []
    assert flow.replan(DirectionPlan(), rng)  # the latency removed
    assert flow.next_due is not None and flow.next_due <= 10.5
    assert b"".join(flow.due(10.5)) == b"one two three"
    assert flow.held == 0
    # Bytes after: no plan delays them, but held ones would still go first.
    flow.hold(b"four", now=10.6, rng=rng)
    assert b"".join(flow.due(10.6)) == b"four"


def test_a_longer_delay_applies_to_held_bytes_from_when_they_arrived() -> None:
    rng = random.Random(1)
    flow = Flow("up", DirectionPlan(latency=0.1))
    flow.hold(b"abc", now=5.0, rng=rng)
    assert flow.replan(DirectionPlan(latency=2.0), rng)
    assert list(flow.due(6.9)) == [] and flow.next_due == 7.0
    assert not flow.replan(DirectionPlan(latency=2.0), rng)  # same faults: schedule kept
    assert flow.next_due == 7.0


def test_same_faults_ignores_what_a_plan_has_scheduled() -> None:
    busy = DirectionPlan(latency=0.5)
    busy.plan(1.0, 100, random.Random(1))
    assert same_faults(busy, DirectionPlan(latency=0.5))
    assert not same_faults(busy, DirectionPlan(latency=0.6))

"""Tests for netkit.core.fault_set: a relay's named faults, changed while it runs."""

from __future__ import annotations

import random

import pytest

from netkit.core.datagram_faults import Loss
from netkit.core.fault_set import Change, ConnectionDraw, FaultChange, FaultSet, default_name
from netkit.core.faults import (
    BlackholeAfter,
    ConnectionFaults,
    Latency,
    LimitData,
    Refuse,
    ResetAfter,
    Slice,
    parse_fault,
)
from netkit.errors import ConfigError, FaultExists, NoSuchFault


def test_default_names_follow_toxiproxy() -> None:
    assert default_name(parse_fault("latency", "50,down")) == "latency_downstream"
    assert default_name(parse_fault("latency", "50,up")) == "latency_upstream"
    assert default_name(parse_fault("latency", "50")) == "latency"
    assert default_name(parse_fault("limit-data", "100,up")) == "limit_data_upstream"
    assert default_name(parse_fault("refuse", "1")) == "refuse"
    assert default_name(parse_fault("accept-delay", "1s")) == "accept_delay"


def test_add_get_iterate_in_order() -> None:
    faults = FaultSet()
    slow = parse_fault("latency", "50,down")
    cap = parse_fault("bandwidth", "1MB/s")
    assert faults.add(slow) == "latency_downstream"
    assert faults.add(cap, "cap") == "cap"
    assert len(faults) == 2 and "cap" in faults and "nope" not in faults
    assert faults.get("cap") is cap
    assert list(faults) == [("latency_downstream", slow), ("cap", cap)]
    assert faults.faults == [slow, cap]
    assert faults.as_dicts()[1] == {"name": "cap", **cap.as_dict()}


def test_duplicate_and_missing_names_are_config_errors() -> None:
    faults = FaultSet()
    faults.add(parse_fault("latency", "50"))
    with pytest.raises(FaultExists, match="'latency' already exists"):
        faults.add(parse_fault("latency", "90"))
    with pytest.raises(NoSuchFault, match="no fault named 'x'"):
        faults.get("x")
    with pytest.raises(NoSuchFault):
        faults.remove("x")
    with pytest.raises(NoSuchFault):
        faults.replace("x", parse_fault("latency", "1"))
    with pytest.raises(ConfigError, match="empty"):
        faults.add(parse_fault("latency", "50"), "")
    assert issubclass(FaultExists, ConfigError) and issubclass(NoSuchFault, ConfigError)
    assert len(faults) == 1


def test_replace_keeps_position_and_remove_returns_the_fault() -> None:
    first, second = parse_fault("latency", "50"), parse_fault("slice", "10")
    faults = FaultSet([first, second])
    newer = parse_fault("latency", "70")
    faults.replace("latency", newer)
    assert list(faults) == [("latency", newer), ("slice", second)]
    assert faults.remove("latency") is newer
    assert list(faults) == [("slice", second)]
    faults.clear()
    assert len(faults) == 0 and list(faults) == []


def test_initial_faults_of_one_kind_are_numbered() -> None:
    faults = FaultSet([parse_fault("latency", "50,up"), parse_fault("latency", "60,up")])
    assert [name for name, _ in faults] == ["latency_upstream", "latency_upstream_2"]


def test_subscribers_are_told_every_change_with_its_event() -> None:
    faults = FaultSet()
    seen: list[FaultChange] = []
    stop = faults.subscribe(seen.append)
    slow, slower = parse_fault("latency", "50,down"), parse_fault("latency", "90,down")
    faults.add(slow)
    faults.replace("latency_downstream", slower)
    faults.add(parse_fault("slice", "10"), "s")
    assert faults.remove("s").name == "slice"
    faults.clear()
    assert [c.change for c in seen] == [
        Change.ADDED, Change.UPDATED, Change.ADDED, Change.REMOVED, Change.CLEARED
    ]  # fmt: skip
    assert [c.event for c in seen][:2] == ["fault_added", "fault_updated"]
    assert seen[1].previous is slow and seen[1].fault is slower
    assert seen[0].as_dict() == {"name": "latency_downstream", **slow.as_dict()}
    assert seen[0].as_dict()["fault"] == "latency"
    assert seen[-1].as_dict() == {"names": ["latency_downstream"]}
    stop()
    faults.add(slow)
    assert len(seen) == 5  # unsubscribed: no longer told


def test_a_failed_change_tells_nobody() -> None:
    faults = FaultSet([parse_fault("latency", "50")])
    seen: list[FaultChange] = []
    faults.subscribe(seen.append)
    with pytest.raises(FaultExists):
        faults.add(parse_fault("latency", "50"))
    with pytest.raises(NoSuchFault):
        faults.remove("nope")
    assert seen == []


# --- ConnectionDraw: one connection's share of the set ----------------------------------------


def test_each_connection_draws_each_probability_once_and_seeded_runs_repeat() -> None:
    faults = FaultSet([Latency(10, probability=0.5)])

    def outcomes(seed: int) -> list[bool]:
        rng = random.Random(seed)
        return [bool(ConnectionDraw(faults, rng).applied) for _ in range(40)]

    first = outcomes(7)
    assert first == outcomes(7)  # repeatable
    assert 0 < sum(first) < 40  # a real draw, not all or nothing
    draw = ConnectionDraw(FaultSet([Latency(10)]), random.Random(1))
    assert draw.applied == [
        {"name": "latency", **Latency(10).describe(), "directions": ["up", "down"]}
    ]
    assert draw.connection_faults().directions["down"].latency == 0.01


def test_a_live_connection_takes_changes_and_not_set_up_faults() -> None:
    faults = FaultSet()
    draw = ConnectionDraw(faults, random.Random(1))
    changes: list[FaultChange] = []
    faults.subscribe(changes.append)
    at = {"age": 1.0, "delivered": {"up": 0, "down": 0}}
    faults.add(Latency(50, direction="down"))
    assert draw.change(changes[-1], **at)[0]["name"] == "latency_downstream"
    faults.add(Refuse())
    assert draw.change(changes[-1], **at) == []  # refuse acts at accept: not on a live one
    got = draw.connection_faults()
    assert got.directions["down"].latency == 0.05 and not got.refuse
    faults.replace("latency_downstream", Latency(80, direction="down"))
    draw.change(changes[-1], **at)
    assert draw.connection_faults().directions["down"].latency == 0.08
    faults.remove("latency_downstream")
    draw.change(changes[-1], **at)
    assert not draw.connection_faults().touches_data
    faults.add(Slice(10))
    draw.change(changes[-1], **at)
    faults.clear()
    draw.change(changes[-1], **at)
    assert draw.connection_faults() == ConnectionFaults()


def test_limits_and_times_added_later_count_from_that_moment() -> None:
    faults = FaultSet()
    draw = ConnectionDraw(faults, random.Random(1))
    changes: list[FaultChange] = []
    faults.subscribe(changes.append)
    faults.add(LimitData(100, direction="up"))
    draw.change(changes[-1], age=2.0, delivered={"up": 1000, "down": 5})
    faults.add(ResetAfter(ms=500))
    draw.change(changes[-1], age=3.0, delivered={"up": 1000, "down": 5})
    faults.add(BlackholeAfter(250, direction="down"))
    draw.change(changes[-1], age=4.0, delivered={"up": 1000, "down": 5})
    got = draw.connection_faults()
    assert got.directions["up"].limit == 1100  # 100 more than were delivered when added
    assert got.directions["down"].limit is None
    assert got.reset_after_s == 3.5
    assert got.directions["down"].blackhole_after == 4.25
    assert got.directions["up"].blackhole_after is None


def test_a_set_served_by_a_relay_refuses_faults_of_the_other_transport() -> None:
    faults = FaultSet([Latency(10)])
    faults.serve("tcp")
    told: list[FaultChange] = []
    faults.subscribe(told.append)
    with pytest.raises(ConfigError, match="applies to UDP relays only"):
        faults.add(Loss(0.5))
    with pytest.raises(ConfigError, match="applies to UDP relays only"):
        faults.replace("latency", Loss(0.5))
    assert faults.faults == [Latency(10)] and told == []
    udp = FaultSet([Loss(0.1), Latency(5)])
    udp.serve("udp")  # latency applies to datagrams too
    with pytest.raises(ConfigError, match="not to UDP"):
        FaultSet([Slice(10)]).serve("udp")

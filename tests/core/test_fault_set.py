"""Tests for netkit.core.fault_set: a relay's named faults, changed while it runs."""

from __future__ import annotations

import pytest

from netkit.core.fault_set import Change, FaultChange, FaultSet, default_name
from netkit.core.faults import parse_fault
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

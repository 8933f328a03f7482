"""Fault timelines, sans I/O: the step grammar, its errors, and what a schedule changes when."""

from __future__ import annotations

from typing import Any

import pytest

from netkit.core.datagram_faults import Loss
from netkit.core.fault_set import FaultSet
from netkit.core.faults import BlackholeAfter, Latency, Refuse, ResetAfter
from netkit.core.timeline import (
    Schedule,
    Step,
    TimedFault,
    Timeline,
    parse_repeat,
    parse_timed_faults,
)
from netkit.errors import ConfigError

ISSUE = "0s latency=50ms:10ms; 10s reset p=0.2; 25s blackhole; 40s clear"


def run_all(schedule: Schedule, until: float = 1e9) -> list[tuple[float, list[str], list[Any]]]:
    """Every moment something is due: (time, the set's names after it, its events)."""
    moments = []
    while (at := schedule.next_at()) is not None and at <= until:
        events = schedule.advance(at)
        moments.append((at, [name for name, _ in schedule.faults], events))
    return moments


def test_the_issue_s_timeline_parses_into_typed_steps() -> None:
    timeline = Timeline.parse(ISSUE)
    assert timeline == Timeline(
        [
            Step(0, [Latency(50, jitter=10)]),
            Step(10, [ResetAfter(probability=0.2)]),
            Step(25, [BlackholeAfter(0)]),
            Step(40),
        ]
    )
    assert timeline.length == 40 and timeline.cycles == 1


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("latency=50ms,down,p=0.5", Latency(50, direction="down", probability=0.5)),
        ("latency=50ms down p=0.5", Latency(50, direction="down", probability=0.5)),
        ("latency=50", Latency(50)),  # milliseconds, as --latency takes a bare number
        ("refuse", Refuse()),
        ("refuse p=0.25", Refuse(probability=0.25)),
        ("refuse=0.25", Refuse(probability=0.25)),
        ("reset=64KiB", ResetAfter(size=65536)),
        ("loss=30%", Loss(0.3)),
    ],
)
def test_a_step_s_faults_use_the_flags_grammar(text: str, fault: object) -> None:
    assert Step.parse(f"1.5s {text}") == Step(1.5, [fault])  # type: ignore[list-item]


def test_a_shorthand_takes_for_as_any_fault_does() -> None:
    step = Step.parse("1s refuse for=2s blackhole down")
    assert step.timed == (
        TimedFault(Refuse(), duration=2.0),
        TimedFault(BlackholeAfter(0, direction="down")),
    )


def test_for_bounds_a_step_s_fault_and_plus_keeps_the_previous_step() -> None:
    step = Step.parse("500ms + latency=20ms,for=2s loss=1%")
    assert step.keep and step.at == 0.5
    assert step.timed == (TimedFault(Latency(20), duration=2.0), TimedFault(Loss(0.01)))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0s latency", "timeline step 1 ('0s latency'): 'latency' needs a value"),
        ("0s latency=1; 5s jitter=3", "timeline step 2 ('5s jitter=3'): 'jitter' is no fault"),
        ("soon latency=1", "timeline step 1 ('soon latency=1'): offset 'soon' is not a duration"),
        ("0s latency=1; 1s up", "timeline step 2 ('1s up'): 'up' comes before any fault"),
        ("0s latency=fast", "timeline step 1 ('0s latency=fast'): --latency 'fast' is not"),
        ("0s + clear", "timeline step 1 ('0s + clear'): '+ clear' keeps and clears"),
        ("0s latency=1 clear", "timeline step 1 ('0s latency=1 clear'): 'clear' stands alone"),
        ("0s latency=1,for=0s", "timeline step 1 ('0s latency=1,for=0s'): --latency"),
        ("0s latency=1,after=2s", "timeline step 1 ('0s latency=1,after=2s'): step at 0s"),
        ("5s clear; 5s latency=1", "timeline step 2 (at 5s) is not later than step 1 (at 5s)"),
        ("0s ;", "timeline step 1 ('0s'): 0s: no faults"),
    ],
)
def test_a_bad_timeline_is_one_line_naming_the_step(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        Timeline.parse(text)
    assert str(error.value).startswith(says), str(error.value)
    assert "\n" not in str(error.value)


def test_repeat_takes_a_count_or_forever() -> None:
    assert parse_repeat("3") == 3 and parse_repeat("forever") == "forever"
    with pytest.raises(ConfigError, match="--timeline-repeat 'twice'"):
        parse_repeat("twice")
    with pytest.raises(ConfigError, match="last step after 0s"):
        Timeline.parse("0s latency=1", repeat=2)


def test_a_step_replaces_the_previous_step_and_leaves_other_faults_alone() -> None:
    faults = FaultSet([Latency(5)])  # a flag's fault: the timeline never touches it
    schedule = Schedule(faults, Timeline.parse(ISSUE))
    moments = run_all(schedule)
    assert [(at, names) for at, names, _ in moments] == [
        (0, ["latency", "timeline_latency"]),
        (10, ["latency", "timeline_reset_after"]),
        (25, ["latency", "timeline_blackhole_after"]),
        (40, ["latency"]),
    ]
    events = [event for _, _, evs in moments for event in evs]
    assert [e for e, _ in events] == ["timeline_step"] * 4 + ["timeline_end"]
    step = events[1][1]
    assert step["index"] == 1 and step["at_s"] == 10 and step["cycle"] == 0
    assert step["faults"] == [
        {"name": "timeline_reset_after", **ResetAfter(probability=0.2).as_dict()}
    ]
    assert events[-1][1]["cycles"] == 1
    assert schedule.next_at() is None


def test_an_unchanged_fault_stays_and_a_changed_one_is_replaced() -> None:
    changes: list[str] = []
    faults = FaultSet()
    faults.subscribe(lambda change: changes.append(f"{change.event} {change.name}"))
    timeline = Timeline.parse("0s latency=50; 1s latency=50 loss=1%; 2s latency=80; 3s + loss=2%")
    run_all(Schedule(faults, timeline))
    assert changes == [
        "fault_added timeline_latency",
        "fault_added timeline_loss",  # latency=50 again: left as it is (no redraw)
        "fault_removed timeline_loss",
        "fault_updated timeline_latency",
        "fault_added timeline_loss",
    ]
    assert [f for _, f in faults] == [Latency(80), Loss(0.02)]


def test_repeat_starts_over_at_the_last_step_s_offset() -> None:
    schedule = Schedule(FaultSet(), Timeline.parse("0s latency=5; 1s loss=1%; 2s clear", repeat=2))
    moments = run_all(schedule)
    assert [at for at, _, _ in moments] == [0, 1, 2, 3, 4, 5, 6]
    at_two = [(e, f.get("index"), f.get("cycle")) for e, f in moments[2][2]]
    assert at_two == [
        ("timeline_step", 2, 0),
        ("timeline_repeat", None, 1),
        ("timeline_step", 0, 1),
    ]
    assert moments[-1][2][-1] == ("timeline_end", {"cycles": 3, "due_s": 6, "elapsed_s": 6})
    forever = Schedule(FaultSet(), Timeline.parse("1s latency=5; 2s clear", repeat="forever"))
    assert len(run_all(forever, until=1000)) == 1000  # every second, on and on


def test_for_removes_the_fault_and_after_adds_it_later() -> None:
    faults = FaultSet()
    timed = parse_timed_faults({"latency": ["100ms,for=5s"], "loss": ["5%,after=1s,for=500ms"]})
    assert timed == [
        TimedFault(Latency(100), duration=5.0),
        TimedFault(Loss(0.05), after=1.0, duration=0.5),
    ]
    moments = run_all(Schedule(faults, timed=timed))
    assert [(at, names) for at, names, _ in moments] == [
        (0, ["latency"]),
        (1, ["latency", "loss"]),
        (1.5, ["latency"]),
        (5, []),
    ]


def test_a_fault_removed_by_someone_else_is_not_touched_again() -> None:
    faults = FaultSet()
    schedule = Schedule(faults, Timeline.parse("0s latency=5,for=1s; 2s clear"))
    schedule.advance(0)
    faults.remove("timeline_latency")
    faults.add(Latency(7), "timeline_latency")  # someone else's fault, same name
    schedule.advance(2)
    assert [f for _, f in faults] == [Latency(7)]


def test_a_timeline_names_the_step_whose_fault_the_transport_refuses() -> None:
    timeline = Timeline.parse("0s loss=5%; 1s blackhole")
    with pytest.raises(ConfigError, match=r"timeline step 1 \(at 0s\): --loss applies to UDP"):
        timeline.check("tcp")
    with pytest.raises(ConfigError, match=r"timeline step 2 \(at 1s\): --blackhole-after"):
        timeline.check("udp")

"""Tests for netkit.core.stats: nearest-rank percentiles, RTT summaries, jitter, sequences."""

from __future__ import annotations

import math

import pytest

from netkit.core.stats import Jitter, RTTSummary, SequenceTracker, percentile

# --- percentile --------------------------------------------------------------------------

# The nearest-rank example from the textbook definition: 15, 20, 35, 40, 50.
WIKI = [15.0, 20.0, 35.0, 40.0, 50.0]


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 15.0), (5, 15.0), (20, 15.0), (21, 20.0), (30, 20.0), (40, 20.0), (50, 35.0),
     (60, 35.0), (61, 40.0), (80, 40.0), (81, 50.0), (99, 50.0), (100, 50.0)],
)  # fmt: skip
def test_percentile_nearest_rank(q: float, expected: float) -> None:
    assert percentile(WIKI, q) == expected


def test_percentile_empty_and_single() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([3.5], 0) == 3.5
    assert percentile([3.5], 99) == 3.5
    assert percentile([3.5], 100) == 3.5


def test_percentile_of_hundred_values() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 1) == 1.0


def _exact_rank(q: int, n: int) -> int:
    return max(1, -(-q * n // 100))


def test_percentile_rank_is_exact_for_integer_q() -> None:
    for n in (25, 50, 75, 100, 150):
        values = [float(i) for i in range(1, n + 1)]
        for q in range(101):
            assert percentile(values, q) == float(_exact_rank(q, n)), (q, n)


# --- RTTSummary --------------------------------------------------------------------------


def test_rtt_summary_empty() -> None:
    summary = RTTSummary()
    assert len(summary) == 0
    assert summary.as_dict() == {"count": 0}


def test_rtt_summary_as_dict() -> None:
    summary = RTTSummary()
    for seconds in (0.004, 0.001, 0.003, 0.002):  # arrival order does not matter
        summary.add(seconds)
    assert len(summary) == 4
    d = summary.as_dict()
    assert d == {
        "count": 4,
        "min_ms": 1.0,
        "avg_ms": 2.5,
        "p50_ms": 2.0,
        "p99_ms": 4.0,
        "max_ms": 4.0,
        # population standard deviation of 1, 2, 3, 4 ms: sqrt(1.25)
        "stddev_ms": round(math.sqrt(1.25), 3),
    }
    # The samples themselves are kept in arrival order.
    assert summary.samples == [0.004, 0.001, 0.003, 0.002]


def test_rtt_summary_rounds_to_microseconds() -> None:
    summary = RTTSummary()
    summary.add(0.0012344)
    d = summary.as_dict()
    assert d["min_ms"] == 1.234
    assert d["stddev_ms"] == 0.0


# --- Jitter (RFC 3550 6.4.1) -------------------------------------------------------------


def test_jitter_matches_hand_computed_rfc3550_sequence() -> None:
    # Transit times 10, 12, 11, 15, 15: D = 2, 1, 4, 0 and J += (|D| - J) / 16.
    #   J1 = 2/16                      = 0.125
    #   J2 = 0.125 + (1 - 0.125)/16    = 0.1796875
    #   J3 = J2 + (4 - J2)/16          = 0.41845703125
    #   J4 = J3 + (0 - J3)/16          = 0.392303466796875
    jitter = Jitter()
    expected = [0.0, 0.125, 0.1796875, 0.41845703125, 0.392303466796875]
    for transit, want in zip((10.0, 12.0, 11.0, 15.0, 15.0), expected, strict=True):
        jitter.add(transit)
        assert jitter.value == pytest.approx(want, abs=1e-15)


def test_jitter_constant_transit_is_zero() -> None:
    jitter = Jitter()
    for _ in range(10):
        jitter.add(0.005)
    assert jitter.value == 0.0


def test_jitter_converges_towards_constant_variation() -> None:
    jitter = Jitter()
    for i in range(1000):
        jitter.add(0.001 if i % 2 else 0.003)  # |D| is always 2 ms
    assert jitter.value == pytest.approx(0.002, rel=1e-9)


# --- SequenceTracker ---------------------------------------------------------------------


def test_sequence_in_order() -> None:
    tracker = SequenceTracker()
    assert [tracker.add(i) for i in range(5)] == ["ok"] * 5
    assert tracker.lost(5) == 0
    assert tracker.as_dict(5) == {
        "sent": 5,
        "received": 5,
        "lost": 0,
        "loss_percent": 0.0,
        "duplicates": 0,
        "reordered": 0,
    }


def test_sequence_gaps_are_lost() -> None:
    tracker = SequenceTracker()
    for seq in (0, 1, 3, 6):
        assert tracker.add(seq) == "ok"
    assert tracker.lost(8) == 4  # 2, 4, 5, 7
    assert tracker.as_dict(8)["loss_percent"] == 50.0
    # Sequence numbers at or beyond `expected` do not hide losses.
    assert tracker.lost(4) == 1


def test_sequence_duplicates_and_reordered() -> None:
    tracker = SequenceTracker()
    results = [tracker.add(s) for s in (0, 2, 1, 2, 0, 3, 3)]
    assert results == ["ok", "ok", "reordered", "duplicate", "duplicate", "ok", "duplicate"]
    assert tracker.duplicates == 3
    assert tracker.reordered == 1
    assert tracker.highest == 3
    d = tracker.as_dict(4)
    assert d["received"] == 4
    assert d["lost"] == 0
    assert d["duplicates"] == 3
    assert d["reordered"] == 1


def test_sequence_late_arrival_fills_a_gap() -> None:
    tracker = SequenceTracker()
    tracker.add(0)
    tracker.add(2)
    assert tracker.lost(3) == 1
    assert tracker.add(1) == "reordered"
    assert tracker.lost(3) == 0


def test_sequence_nothing_sent() -> None:
    tracker = SequenceTracker()
    assert tracker.as_dict(0)["loss_percent"] == 0.0
    assert tracker.as_dict(3) == {
        "sent": 3,
        "received": 0,
        "lost": 3,
        "loss_percent": 100.0,
        "duplicates": 0,
        "reordered": 0,
    }

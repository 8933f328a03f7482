"""Counters and summaries that need no I/O: RTT summaries, RFC 3550 jitter, sequence accounting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    # q * n / 100, not q / 100 * n: exact for whole q, where the latter rounds up (p7 of 100).
    rank = max(1, math.ceil(q * len(sorted_values) / 100))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class RTTSummary:
    """Round-trip times in seconds, kept exactly (the counts here are small; bench uses HDR)."""

    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        """Record one round trip."""
        self.samples.append(seconds)

    def __len__(self) -> int:
        return len(self.samples)

    def as_dict(self) -> dict[str, Any]:
        """min/avg/p50/p99/max/stddev in milliseconds, rounded to microseconds."""
        if not self.samples:
            return {"count": 0}
        values = sorted(self.samples)
        avg = sum(values) / len(values)
        var = sum((v - avg) ** 2 for v in values) / len(values)

        def ms(x: float) -> float:
            return round(x * 1000, 3)

        return {
            "count": len(values),
            "min_ms": ms(values[0]),
            "avg_ms": ms(avg),
            "p50_ms": ms(percentile(values, 50)),
            "p99_ms": ms(percentile(values, 99)),
            "max_ms": ms(values[-1]),
            "stddev_ms": ms(math.sqrt(var)),
        }


@dataclass
class Jitter:
    """Interarrival jitter as RFC 3550 section 6.4.1 (and iperf3) compute it.

    ``D`` is the change in transit time between consecutive packets, and
    ``J += (|D| - J) / 16``. With echoes, the transit time is the round trip.
    """

    value: float = 0.0
    _last_transit: float | None = None

    def add(self, transit: float) -> None:
        """Feed one packet's transit time, in arrival order."""
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            self.value += (d - self.value) / 16
        self._last_transit = transit


@dataclass
class SequenceTracker:
    """Accounts for received sequence numbers: unique, duplicates, reordered, lost.

    A packet is *reordered* when it arrives after one with a higher sequence number;
    *duplicates* are sequence numbers seen before. Loss is what was expected and never came.
    """

    received: set[int] = field(default_factory=set)
    duplicates: int = 0
    reordered: int = 0
    highest: int = -1

    def add(self, seq: int) -> str:
        """Record one arrival; returns ``"ok"``, ``"duplicate"`` or ``"reordered"``."""
        if seq in self.received:
            self.duplicates += 1
            return "duplicate"
        self.received.add(seq)
        if seq < self.highest:
            self.reordered += 1
            return "reordered"
        self.highest = seq
        return "ok"

    def lost(self, expected: int) -> int:
        """How many of sequence numbers ``0..expected-1`` never arrived."""
        return expected - sum(1 for s in self.received if s < expected)

    def as_dict(self, expected: int) -> dict[str, Any]:
        """Counts and loss percentage for ``expected`` packets sent."""
        lost = self.lost(expected)
        return {
            "sent": expected,
            "received": len(self.received),
            "lost": lost,
            "loss_percent": round(100 * lost / expected, 3) if expected else 0.0,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
        }

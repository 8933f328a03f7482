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


# Sequence numbers a SequenceWindow remembers behind the highest one seen (a power of two).
SEQUENCE_WINDOW = 4096


class SequenceWindow:
    """:class:`SequenceTracker`'s counts in fixed memory, for receivers that anyone may feed.

    It remembers only the last ``size`` sequence numbers below the highest one seen (one byte
    each, in a ring), so a sender that declares or sends any sequence numbers at all costs the
    same memory. Within the window duplicates and reordering are told apart exactly; an
    arrival older than the window counts as reordered (a duplicate that old cannot be told
    from a late arrival: iperf3 counts every such packet out of order too). Loss is what was
    sent and never counted as received.

    Args:
        size: how many sequence numbers are remembered: a power of two.
    """

    def __init__(self, size: int = SEQUENCE_WINDOW) -> None:
        if size < 1 or size & (size - 1):
            raise ValueError(f"window size {size} is not a power of two")
        self._seen = bytearray(size)
        self._zeros = bytes(size)
        self._mask = size - 1
        self.highest = -1
        self.received = 0  # distinct sequence numbers, as far as the window can tell
        self.duplicates = 0
        self.reordered = 0

    def add(self, seq: int) -> str:
        """Record one arrival; returns ``"ok"``, ``"duplicate"`` or ``"reordered"``."""
        seen, mask = self._seen, self._mask
        if seq > self.highest:
            if seq != self.highest + 1:  # in order, nothing between to forget (most arrivals)
                self._forget(self.highest + 1, seq - self.highest - 1)
            seen[seq & mask] = 1
            self.highest = seq
            self.received += 1
            return "ok"
        if self.highest - seq <= mask:
            if seen[seq & mask]:
                self.duplicates += 1
                return "duplicate"
            seen[seq & mask] = 1
        self.received += 1
        self.reordered += 1
        return "reordered"

    def _forget(self, first: int, count: int) -> None:
        """Clear the slots of ``count`` sequence numbers from ``first``: never seen yet."""
        size = self._mask + 1
        if count >= size:
            self._seen[:] = self._zeros
            return
        start = first & self._mask
        head = min(count, size - start)
        self._seen[start : start + head] = self._zeros[:head]
        self._seen[: count - head] = self._zeros[: count - head]

    def lost(self, sent: int) -> int:
        """How many of ``sent`` datagrams never arrived (never less than 0)."""
        return max(0, sent - self.received)

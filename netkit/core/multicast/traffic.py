"""What ``multicast send`` sends and what ``multicast listen`` makes of what arrives.

``netkit multicast send`` generates the probes of :mod:`netkit.core.probe`, with one difference:
the send time in the probe header is **wall-clock** nanoseconds (``time.time_ns()``), not the
monotonic clock udp-echo uses, because the receiver is usually another host and computes a
one-way delay from it. Nothing in :mod:`netkit.core.probe` changed; the clock is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from netkit.core.probe import HEADER_SIZE, Probe, make_probe
from netkit.core.stats import RTTSummary, SequenceTracker
from netkit.errors import ConfigError

MAX_PAYLOAD = {4: 65507, 6: 65487}
"""The largest UDP payload per IP version (65535 minus the IPv4 / IPv6 and UDP headers)."""

# A one-way delay further off than this means the two clocks are not comparable; say nothing.
MAX_CLOCK_SKEW_NS = 3600 * 10**9


def probe_sizes(version: int) -> range:
    """The sizes a generated probe may have over IP ``version``: its header to a full datagram."""
    return range(HEADER_SIZE, MAX_PAYLOAD[version] + 1)


@dataclass(frozen=True)
class SendPlan:
    """The datagrams ``multicast send`` sends: the given payloads, or ``count`` generated probes.

    Attributes:
        payloads: the messages, one datagram each; None for generated probes.
        count: how many probes to generate (ignored with payloads).
        size: bytes per generated probe.
    """

    payloads: Sequence[bytes] | None
    count: int
    size: int

    @classmethod
    def build(
        cls, version: int, payloads: Sequence[bytes] | None, count: int, size: int
    ) -> SendPlan:
        """Check the messages against the largest datagram of IP ``version``.

        ``size`` is taken as it is: the caller checks it against :func:`probe_sizes`.

        Raises:
            ConfigError: a message that does not fit in one datagram.
        """
        limit = MAX_PAYLOAD[version]
        if payloads is not None and any(len(p) > limit for p in payloads):
            raise ConfigError(f"a message is longer than the largest datagram ({limit} bytes)")
        return cls(payloads, count, size)

    @property
    def total(self) -> int:
        """How many datagrams the plan sends."""
        return len(self.payloads) if self.payloads is not None else self.count

    def maker(self, wall_clock_ns: Callable[[], int]) -> Callable[[int], bytes]:
        """The function that makes datagram ``index`` when it is due (probes read the clock then)."""
        if self.payloads is not None:
            return self.payloads.__getitem__
        size = self.size

        def generated(seq: int) -> bytes:
            return make_probe(seq, wall_clock_ns(), size)

        return generated


# --- per-source accounting for listeners -----------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One datagram as a listener saw it.

    Attributes:
        source: sender address as ``HOST:PORT``.
        group: the group it was sent to.
        size: bytes.
        seq: the probe sequence number, None for datagrams netkit did not generate.
        delay_s: one-way delay from the probe's wall-clock send time (None when unknown or the
            clocks are more than an hour apart).
        kind: ``ok``, ``duplicate``, ``reordered`` for probes, ``data`` for anything else.
    """

    source: str
    group: str
    size: int
    seq: int | None
    delay_s: float | None
    kind: str


@dataclass
class SourceAccount:
    """What one source sent to one group, as received.

    Loss is counted between the lowest and the highest sequence number seen (a listener that
    joins late does not count what was sent before it joined).
    """

    source: str
    group: str
    datagrams: int = 0
    bytes: int = 0
    other: int = 0
    tracker: SequenceTracker = field(default_factory=SequenceTracker)
    lowest: int | None = None
    delays: RTTSummary = field(default_factory=RTTSummary)

    def add(self, size: int, probe: Probe | None, now_wall_ns: int) -> Arrival:
        """Account for one datagram (``probe`` is its decoded header, if it is a netkit probe)."""
        self.datagrams += 1
        self.bytes += size
        if probe is None:
            self.other += 1
            return Arrival(self.source, self.group, size, None, None, "data")
        kind = self.tracker.add(probe.seq)
        if self.lowest is None or probe.seq < self.lowest:
            self.lowest = probe.seq
        delay_ns = now_wall_ns - probe.sent_ns
        delay = delay_ns / 1e9 if abs(delay_ns) <= MAX_CLOCK_SKEW_NS else None
        if delay is not None and kind != "duplicate":
            self.delays.add(delay)
        return Arrival(self.source, self.group, size, probe.seq, delay, kind)

    @property
    def lost(self) -> int:
        """Sequence numbers between the lowest and highest seen that never arrived."""
        if self.lowest is None:
            return 0
        return self.tracker.highest - self.lowest + 1 - len(self.tracker.received)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of one source's statistics (delays in milliseconds)."""
        probes = len(self.tracker.received)
        expected = probes + self.lost
        return {
            "source": self.source,
            "group": self.group,
            "datagrams": self.datagrams,
            "bytes": self.bytes,
            "probes": probes,
            "other": self.other,
            "lost": self.lost,
            "loss_percent": round(100 * self.lost / expected, 3) if expected else 0.0,
            "duplicates": self.tracker.duplicates,
            "reordered": self.tracker.reordered,
            "first_seq": self.lowest,
            "last_seq": self.tracker.highest if self.lowest is not None else None,
            "delay": self.delays.as_dict(),
        }


@dataclass
class ReceiveLedger:
    """Per (source, group) accounts of everything a listener received."""

    accounts: dict[tuple[str, str], SourceAccount] = field(default_factory=dict)
    total: int = 0

    def add(
        self, source: str, group: str, size: int, probe: Probe | None, now_wall_ns: int
    ) -> Arrival:
        """Account for one datagram; returns what to report about it."""
        key = (source, group)
        account = self.accounts.get(key)
        if account is None:
            account = self.accounts[key] = SourceAccount(source, group)
        self.total += 1
        return account.add(size, probe, now_wall_ns)

    def as_list(self) -> list[dict[str, Any]]:
        """Every source's statistics, in order of first arrival."""
        return [account.as_dict() for account in self.accounts.values()]

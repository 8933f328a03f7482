"""UDP bitrate tests, as ``iperf3 -u -b`` runs them (``netkit bench udp://HOST:PORT -b 100M``).

The sender paces sequenced probes (:mod:`netkit.core.probe`: sequence number and send time)
at the bitrate; the receiver (``netkit udp-echo serve --mode sink``) counts what arrives per
sender and answers a report request with its counts. Every exchange is a datagram of its own
on the data's socket, so a report request is read after every datagram sent before it that
arrived at all. Lost control datagrams are resent by the sender until its timeout.

Control datagrams (big-endian)::

    0      4    5     8          16
    | NKB1 | kind | 0 | token    | kind-specific fields (8 bytes each)
    START   (sender -> sink)     forget this sender's counts and count from now on
    STARTED (sink -> sender)     the start was taken
    REPORT  (sender -> sink)     sent: how many data datagrams the sender sent
    COUNTS  (sink -> sender)     received, duplicates, out of order, lost, corrupt, bytes,
                                 jitter ns, token echoed
    UNKNOWN (sink -> sender)     no counts under this token (never started, or forgotten);
                                 to a REVERSE: the sink sends all the streams it may
    REVERSE (client -> sink)     bitrate, size, cookie: send me a test (--reverse); resent
                                 with the cookie it answers, then every so often to keep
                                 the test going
    COOKIE  (sink -> client)     cookie: send the REVERSE again with this
    STOP    (client -> sink)     stop sending me the test
    STOPPED (sink -> client)     sent: how many data datagrams the sink sent

The token is the sender's random number for one stream: answers to another stream (or to an
older run from the same port) never match.

Jitter is RFC 3550's interarrival jitter (:class:`~netkit.core.stats.Jitter`), from each
datagram's send time and the receiver's arrival time, as iperf3 computes it; the clocks' offset
cancels in it. The arrival time is the kernel's receive timestamp where the kernel gives one,
so the jitter is the network's, not the receiving program's scheduling.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass, fields
from typing import Any

from netkit.core.bench.plan import BITRATE
from netkit.core.probe import probe_fields
from netkit.core.stats import Jitter, SequenceWindow
from netkit.errors import ConfigError

# iperf3's UDP datagram size when it is not given (-l): 1460 bytes.
DEFAULT_DATAGRAM = 1460
# A bitrate sender sends what is due, then sleeps at least this long before the next round
# (iperf3's --pacing-timer default, 1000 us): event loops' timers count whole milliseconds,
# and a shorter sleep returns at once, so a sender due every few microseconds would spin
# on the loop, one datagram per turn, and take a CPU from the receiver.
PACING_TIMER_S = 0.001

_BITRATE = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGtT]?)(?:bit/s|bps)?$")
# iperf3's rate suffixes are powers of 1000 (unit_atof_rate), whatever their case.
_RATE_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_bitrate(text: str) -> float:
    """Parse ``-b/--bitrate`` as iperf3 does: bits per second, ``100M`` = 100,000,000.

    Raises:
        ConfigError: not a positive number with an optional K, M, G or T.
    """
    m = _BITRATE.match(text.strip())
    value = float(m.group(1)) * _RATE_SCALE[m.group(2).lower()] if m else 0.0
    if not 0 < value < 1e13:
        raise ConfigError((BITRATE, f" {text!r} is not a bitrate such as 100M or 1G (bits/s)"))
    return value


def format_bitrate(bits_per_s: float) -> str:
    """``943.2 Mbit/s``, as iperf3 writes rates (powers of 1000)."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("Kbit/s", 1e3)):
        if bits_per_s >= scale:
            return f"{bits_per_s / scale:.1f} {unit}"
    return f"{bits_per_s:.0f} bit/s"


# --- control datagrams ------------------------------------------------------------------------

CONTROL_MAGIC = b"NKB1"
_HEAD = struct.Struct("!4sB3xQ")


class ControlKind(enum.IntEnum):
    """What a control datagram asks or answers."""

    START = 1
    STARTED = 2
    REPORT = 3
    COUNTS = 4
    UNKNOWN = 5
    REVERSE = 6
    COOKIE = 7
    STOP = 8
    STOPPED = 9


@dataclass(frozen=True)
class ReceiverCounts:
    """What a receiver counted for one sender (a ``COUNTS`` answer)."""

    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    lost: int = 0
    corrupt: int = 0
    bytes: int = 0
    jitter_ns: int = 0


_COUNT_FIELDS = tuple(f.name for f in fields(ReceiverCounts))
_COUNTS = struct.Struct("!" + "Q" * len(_COUNT_FIELDS))
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Control:
    """A decoded control datagram: its kind, token and the fields its kind carries
    (:data:`_FIELDS`; ``counts`` for a COUNTS)."""

    kind: ControlKind
    token: int
    sent: int = 0
    counts: ReceiverCounts | None = None
    bitrate: int = 0
    size: int = 0
    cookie: int = 0

    def encode(self) -> bytes:
        """The datagram's bytes."""
        head = _HEAD.pack(CONTROL_MAGIC, self.kind, self.token & _U64)
        if self.kind is ControlKind.COUNTS:
            counts = self.counts or ReceiverCounts()
            values = (min(max(0, getattr(counts, name)), _U64) for name in _COUNT_FIELDS)
            return head + _COUNTS.pack(*values)
        names = _FIELDS.get(self.kind, ())
        return head + b"".join(_U64S.pack(min(max(0, getattr(self, n)), _U64)) for n in names)


# The 8-byte fields after the head, per kind (COUNTS carries ReceiverCounts instead).
_FIELDS: dict[ControlKind, tuple[str, ...]] = {
    ControlKind.REPORT: ("sent",),
    ControlKind.STOPPED: ("sent",),
    ControlKind.REVERSE: ("bitrate", "size", "cookie"),
    ControlKind.COOKIE: ("cookie",),
}
_U64S = struct.Struct("!Q")
_KINDS = frozenset(k.value for k in ControlKind)


def parse_control(data: bytes | bytearray | memoryview) -> Control | None:
    """Decode a control datagram; None if ``data`` is not an intact one."""
    if len(data) < _HEAD.size:
        return None
    magic, kind, token = _HEAD.unpack_from(data)
    if magic != CONTROL_MAGIC or kind not in _KINDS:
        return None
    kind = ControlKind(kind)
    if kind is ControlKind.COUNTS:
        if len(data) != _HEAD.size + _COUNTS.size:
            return None
        values = _COUNTS.unpack_from(data, _HEAD.size)
        return Control(kind, token, counts=ReceiverCounts(*values))
    names = _FIELDS.get(kind, ())
    if len(data) != _HEAD.size + 8 * len(names):
        return None
    values = struct.unpack_from(f"!{len(names)}Q", data, _HEAD.size)
    return Control(kind, token, **dict(zip(names, values, strict=True)))


def cookie_for(secret: bytes, source: str, token: int) -> int:
    """The cookie a sink gives ``source`` for a reverse test under ``token``: only who
    receives datagrams at ``source`` can send it back, so a forged source address cannot
    make a sink send a bitrate test to someone else (QUIC's address validation). Never 0."""
    digest = hmac.new(secret, f"{source}/{token}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8]) or 1


# --- the receiver's side -----------------------------------------------------------------------


class SenderLedger:
    """What a receiver counts for one sender since its START, in fixed memory whatever the
    sender sends (:class:`~netkit.core.stats.SequenceWindow`).

    Attributes:
        token: the sender's token, from its START.
        arrivals: data datagrams that reached the receiver (before any it drops on purpose).
    """

    def __init__(self, token: int) -> None:
        self.token = token
        self.arrivals = 0
        self.window = SequenceWindow()
        self.jitter = Jitter()
        self.corrupt = 0
        self.bytes = 0

    def datagram(self, data: bytes | bytearray | memoryview, arrived_ns: int) -> str:
        """Count one data datagram that arrived at ``arrived_ns`` (the receiver's clock).

        Returns ``ok``, ``duplicate``, ``reordered`` or ``corrupt``.
        """
        fields = probe_fields(data)
        if fields is None:
            self.corrupt += 1
            return "corrupt"
        seq, sent_ns, size = fields
        kind = self.window.add(seq)
        if kind != "duplicate":
            self.bytes += size
            # RFC 3550 6.4.1: the transit time, in seconds; the clocks' offset cancels in D.
            self.jitter.add((arrived_ns - sent_ns) / 1e9)
        return kind

    def counts(self, sent: int) -> ReceiverCounts:
        """The counts to report to a sender that says it sent ``sent`` datagrams."""
        w = self.window
        return ReceiverCounts(
            received=w.received,
            duplicates=w.duplicates,
            out_of_order=w.reordered,
            lost=w.lost(sent),
            corrupt=self.corrupt,
            bytes=self.bytes,
            jitter_ns=round(self.jitter.value * 1e9),
        )


# --- what a run reports ------------------------------------------------------------------------


@dataclass
class DatagramTally:
    """A UDP bitrate run's figures, all streams together, as the receivers counted them.

    Counts add when results merge; the jitter is the mean of the streams' jitters (as
    iperf3's sum line reports it), kept as a sum so merging stays exact.

    Attributes:
        bitrate: the target, in bits/s, of all streams together.
        streams: streams whose receiver reported.
        sent: data datagrams sent by those streams.
        jitter_sum_ns: the sum of their jitters.
    """

    bitrate: float
    streams: int = 0
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    corrupt: int = 0
    bytes_received: int = 0
    jitter_sum_ns: int = 0

    def add_counts(self, sent: int, counts: ReceiverCounts) -> None:
        """Add one stream's report."""
        self.streams += 1
        self.sent += sent
        self.received += counts.received
        self.lost += counts.lost
        self.duplicates += counts.duplicates
        self.out_of_order += counts.out_of_order
        self.corrupt += counts.corrupt
        self.bytes_received += counts.bytes
        self.jitter_sum_ns += counts.jitter_ns

    def add(self, other: DatagramTally) -> None:
        """Add another run's tally (merging results); the target bitrates add too."""
        self.bitrate += other.bitrate
        for name in _TALLY_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def loss_pct(self) -> float:
        """Datagrams lost, in percent of those sent."""
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    @property
    def jitter_ms(self) -> float:
        """The streams' mean jitter, in milliseconds."""
        return self.jitter_sum_ns / self.streams / 1e6 if self.streams else 0.0

    def bits_per_s(self, seconds: float) -> float:
        """The bitrate received over ``seconds``."""
        return self.bytes_received * 8 / seconds if seconds > 0 else 0.0

    def as_dict(self, seconds: float) -> dict[str, Any]:
        """The JSON shape; ``seconds`` is the run's duration."""
        return {
            "target_bitrate": self.bitrate,
            "bitrate": round(self.bits_per_s(seconds), 1),
            "loss_pct": round(self.loss_pct, 4),
            "jitter_ms": round(self.jitter_ms, 6),
            **{name: getattr(self, name) for name in _TALLY_COUNTS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatagramTally:
        """Rebuild a tally from :meth:`as_dict`.

        Raises:
            KeyError, TypeError, ValueError: a field is missing or has the wrong type.
        """
        tally = cls(bitrate=float(data["target_bitrate"]))
        for name in _TALLY_COUNTS:
            setattr(tally, name, int(data[name]))
        return tally


_TALLY_COUNTS = tuple(f.name for f in fields(DatagramTally) if f.name != "bitrate")

"""Multicast without I/O: group and source validation, per-source accounting, the ping protocol.

``netkit multicast send`` generates the probes of :mod:`netkit.core.probe`, with one difference:
the send time in the probe header is **wall-clock** nanoseconds (``time.time_ns()``), not the
monotonic clock udp-echo uses, because the receiver is usually another host and computes a
one-way delay from it. Nothing in :mod:`netkit.core.probe` changed; the clock is the caller's.

The ping protocol (``netkit multicast ping``, after omping) has its own 40-byte header, big-endian::

    0      4   5   6      8           16          24          32          40
    | NKMP | v | t | zero | sender id | target id |  sequence | send time | padding ...

``t`` is 1 PROBE (sent to the group), 2 MULTICAST_REPLY (sent to the group), 3 UNICAST_REPLY
(sent to the prober's address), 4 DONE (sent to the group when an instance stops probing).
A reply copies the probe's sequence and send time, so the prober's own clock times the round trip.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from netkit.core.addresses import parse_host_port
from netkit.core.probe import Probe
from netkit.core.stats import RTTSummary, SequenceTracker
from netkit.errors import ConfigError, EndpointError

# A one-way delay further off than this means the two clocks are not comparable; say nothing.
MAX_CLOCK_SKEW_NS = 3600 * 10**9


@dataclass(frozen=True)
class Group:
    """A multicast group and UDP port.

    Attributes:
        address: the group address (IPv6 without brackets or scope).
        port: UDP port; 0 lets the kernel choose (listeners only).
        version: 4 or 6.
    """

    address: str
    port: int
    version: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.version == 6 else self.address
        return f"{host}:{self.port}"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def parse_group(text: str) -> Group:
    """Parse ``GROUP:PORT`` (``239.1.2.3:5000``, ``[ff15::1]:5000``) and check it is multicast.

    Raises:
        EndpointError: it does not parse, or the address is not a multicast address.
    """
    host, port = parse_host_port(text)
    address = _ip(host)
    if address is None:
        raise EndpointError(f"group {text!r}: {host!r} is not an IP address (names are not groups)")
    if not address.is_multicast:
        hint = "IPv4 groups are 224.0.0.0/4, IPv6 groups ff00::/8"
        raise EndpointError(f"group {text!r}: {address} is not a multicast address ({hint})")
    return Group(str(address), port, address.version)


def parse_broadcast(text: str) -> Group:
    """Parse ``ADDRESS:PORT`` for ``send --broadcast``: an IPv4 address that is not multicast.

    Returns a :class:`Group` (the type carries address, port and version; it is not a group).

    Raises:
        EndpointError: IPv6 (which has no broadcast), a multicast address, or no address.
    """
    host, port = parse_host_port(text)
    address = _ip(host)
    if address is None or address.version != 4:
        raise EndpointError(
            f"--broadcast {text!r}: expected an IPv4 broadcast address such as 255.255.255.255"
            " (IPv6 has no broadcast; use a group such as ff02::1)"
        )
    if address.is_multicast:
        raise EndpointError(f"--broadcast {text!r}: {address} is multicast; drop --broadcast")
    return Group(str(address), port, 4)


def parse_source(text: str, group: Group) -> str:
    """Check a ``--source`` address for a source-specific join of ``group``.

    Raises:
        ConfigError: not a unicast IP address, or of the other family than the group.
    """
    address = _ip(text)
    if address is None or address.is_multicast or address.is_unspecified:
        raise ConfigError(f"--source {text!r} is not a unicast IP address")
    if address.version != group.version:
        raise ConfigError(
            f"--source {text!r} is IPv{address.version} but group {group} is IPv{group.version}"
            " (a source-specific join needs a source of the group's family)"
        )
    return str(address)


def split_sources(sources: list[str], groups: list[Group]) -> dict[Group, list[str]]:
    """Which ``--source`` addresses each group joins: those of its family.

    Raises:
        ConfigError: a source is not an IP address, or sources were given and none of them is of
            some group's family (SSM with a source of the other family).
    """
    plan: dict[Group, list[str]] = {}
    for group in groups:
        mine = [s for s in sources if (a := _ip(s)) is not None and a.version == group.version]
        if sources and not mine:
            # Report the first mismatch with the message parse_source gives.
            parse_source(sources[0], group)
        plan[group] = [parse_source(s, group) for s in mine]
    for source in sources:
        if _ip(source) is None:
            raise ConfigError(f"--source {source!r} is not a unicast IP address")
    return plan


def check_interface_family(interface_address: str | None, group: Group, option: str) -> None:
    """An interface given as an address must be of the group's family.

    Raises:
        ConfigError: ``--interface 192.0.2.1`` with an IPv6 group, or the reverse.
    """
    if interface_address is None:
        return
    address = _ip(interface_address)
    if address is not None and address.version != group.version:
        raise ConfigError(
            f"{option} {interface_address!r} is an IPv{address.version} address but group "
            f"{group} is IPv{group.version}; name the interface instead (e.g. --interface eth0)"
        )


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


# --- the ping protocol -------------------------------------------------------------------------

PING_MAGIC = b"NKMP"
PING_VERSION = 1
PING_HEADER = struct.Struct("!4sBBHQQQQ")
PING_HEADER_SIZE = PING_HEADER.size  # 40
MAX_ID = (1 << 64) - 1


class PingType(IntEnum):
    """What a ping message is."""

    PROBE = 1
    MULTICAST_REPLY = 2
    UNICAST_REPLY = 3
    DONE = 4


@dataclass(frozen=True)
class PingMessage:
    """One ping message; ``target`` is the prober a reply answers (0 for probes and DONE)."""

    type: PingType
    sender: int
    target: int
    seq: int
    sent_ns: int

    def serialize(self, size: int = PING_HEADER_SIZE) -> bytes:
        """The wire bytes, zero-padded to ``size`` (at least the 40-byte header)."""
        header = PING_HEADER.pack(
            PING_MAGIC, PING_VERSION, self.type, 0, self.sender, self.target, self.seq, self.sent_ns
        )
        return header + bytes(max(0, size - PING_HEADER_SIZE))

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> PingMessage | None:
        """Decode a message; None for anything that is not an intact NKMP v1 message."""
        if len(data) < PING_HEADER_SIZE:
            return None
        magic, version, kind, _, sender, target, seq, sent_ns = PING_HEADER.unpack_from(data)
        if (
            magic != PING_MAGIC
            or version != PING_VERSION
            or kind not in PingType._value2member_map_
        ):
            return None
        return cls(PingType(kind), sender, target, seq, sent_ns)


@dataclass
class PingPeer:
    """What one prober knows about one other instance.

    Only probes sent after the peer was first heard from count towards its loss: before that the
    peer may not have joined yet, and its silence says nothing about the network.
    """

    peer_id: int
    address: str
    first_seq: int
    done: bool = False
    multicast: SequenceTracker = field(default_factory=SequenceTracker)
    unicast: SequenceTracker = field(default_factory=SequenceTracker)
    multicast_rtt: RTTSummary = field(default_factory=RTTSummary)
    unicast_rtt: RTTSummary = field(default_factory=RTTSummary)

    def answered_all(self, sent: int) -> bool:
        """True when both replies to every counted probe arrived."""
        expected = sent - self.first_seq
        return len(self.multicast.received) >= expected and len(self.unicast.received) >= expected

    def as_dict(self, sent: int) -> dict[str, Any]:
        """Per-peer report: loss, duplicates, RTT for multicast and unicast replies."""
        expected = max(0, sent - self.first_seq)
        out: dict[str, Any] = {"peer": self.address, "peer_id": f"{self.peer_id:016x}"}
        for name, tracker, rtt in (
            ("multicast", self.multicast, self.multicast_rtt),
            ("unicast", self.unicast, self.unicast_rtt),
        ):
            counts = tracker.as_dict(expected)
            out[name] = {**counts, "rtt": rtt.as_dict()}
        return out


@dataclass(frozen=True)
class PingAction:
    """Something the I/O layer must send: ``data`` to the group, or back to the sender."""

    data: bytes
    to_group: bool


@dataclass
class PingSession:
    """One instance of ``multicast ping``: sends probes, answers the others, keeps the tally.

    Args:
        instance_id: this instance's random 64-bit id (never 0).
        size: bytes per message (padded; at least the 40-byte header).
    """

    instance_id: int
    size: int = PING_HEADER_SIZE
    sent: int = 0
    peers: dict[int, PingPeer] = field(default_factory=dict)
    ignored: int = 0

    def probe(self, now_ns: int) -> bytes:
        """The next probe to send to the group (``now_ns`` on the prober's monotonic clock)."""
        message = PingMessage(PingType.PROBE, self.instance_id, 0, self.sent, now_ns)
        self.sent += 1
        return message.serialize(self.size)

    def done(self) -> bytes:
        """The message that tells the others this instance stopped probing."""
        return PingMessage(PingType.DONE, self.instance_id, 0, self.sent, 0).serialize()

    def _peer(self, peer_id: int, address: str) -> tuple[PingPeer, bool]:
        peer = self.peers.get(peer_id)
        if peer is not None:
            return peer, False
        peer = self.peers[peer_id] = PingPeer(peer_id, address, first_seq=self.sent)
        return peer, True

    def receive(
        self, data: bytes | bytearray | memoryview, address: str, now_ns: int
    ) -> tuple[list[PingAction], PingPeer | None]:
        """Handle one datagram from ``address``.

        Returns:
            What to send in answer, and the peer if this datagram introduced a new one.
        """
        message = PingMessage.parse(data)
        if message is None or message.sender in (self.instance_id, 0):
            self.ignored += 1  # our own multicast looped back, or not ours at all
            return [], None
        peer, new = self._peer(message.sender, address)
        actions: list[PingAction] = []
        if message.type is PingType.PROBE:
            for reply_type, to_group in (
                (PingType.MULTICAST_REPLY, True),
                (PingType.UNICAST_REPLY, False),
            ):
                reply = PingMessage(
                    reply_type, self.instance_id, message.sender, message.seq, message.sent_ns
                )
                actions.append(PingAction(reply.serialize(len(data)), to_group))
        elif message.type is PingType.DONE:
            peer.done = True
        elif message.target == self.instance_id and message.seq < self.sent:
            multicast = message.type is PingType.MULTICAST_REPLY
            tracker = peer.multicast if multicast else peer.unicast
            rtt = peer.multicast_rtt if multicast else peer.unicast_rtt
            counted = message.seq >= peer.first_seq
            if counted and tracker.add(message.seq - peer.first_seq) != "duplicate":
                rtt.add((now_ns - message.sent_ns) / 1e9)
        return actions, peer if new else None

    def all_peers_done(self) -> bool:
        """True when every peer heard from has said it stopped probing."""
        return all(peer.done for peer in self.peers.values())

    def all_answered(self) -> bool:
        """True when every peer answered every counted probe on both paths."""
        return all(peer.answered_all(self.sent) for peer in self.peers.values())

    def settled(self) -> bool:
        """True when there are peers, all said DONE, and all answered every counted probe."""
        return bool(self.peers) and self.all_peers_done() and self.all_answered()

    def report(self) -> list[dict[str, Any]]:
        """Per-peer results, in the order the peers were discovered."""
        return [peer.as_dict(self.sent) for peer in self.peers.values()]

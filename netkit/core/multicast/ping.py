"""The ping protocol of ``netkit multicast ping`` (after omping), without I/O.

Every message has a 40-byte header, big-endian::

    0      4   5   6      8           16          24          32          40
    | NKMP | v | t | zero | sender id | target id |  sequence | send time | padding ...

``t`` is 1 PROBE (sent to the group), 2 MULTICAST_REPLY (sent to the group), 3 UNICAST_REPLY
(sent to the prober's address), 4 DONE (sent to the group when an instance stops probing).
A reply copies the probe's sequence and send time, so the prober's own clock times the round trip.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from netkit.core.stats import RTTSummary, SequenceTracker

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

    def worst_loss(self) -> float:
        """The highest loss percentage of any peer, on either path (0.0 without peers)."""
        return max(
            (
                max(p["multicast"]["loss_percent"], p["unicast"]["loss_percent"])
                for p in self.report()
            ),
            default=0.0,
        )

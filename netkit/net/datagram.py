"""UDP without per-datagram allocations: ``recvfrom_into`` one buffer, ``sendto`` a view of it.

asyncio's DatagramProtocol hands every datagram over as a new ``bytes``; these classes register
the socket with ``loop.add_reader`` instead and read straight into a preallocated buffer.
"""

from __future__ import annotations

import abc
import asyncio
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netkit.core.access import AccessList, DeniedSources
from netkit.core.probe import make_probe, parse_probe
from netkit.core.stats import Jitter, RTTSummary, SequenceTracker
from netkit.errors import ConfigError, ConnectError, Setting
from netkit.net.sockets import describe

# Datagrams handled per readiness callback before yielding to the loop (fairness).
BATCH = 64
MAX_UDP_PAYLOAD = 65507
# Receive buffer of the echo server: larger than any UDP payload (IPv4 65507, IPv6 65527),
# so recvfrom_into never truncates and the byte counts are what really arrived.
_RECV_BUFFER = 65536
# Senders the echo server remembers (for "peer" events and the summary's count); beyond
# this, new senders are still answered but no longer recorded, so memory and output stay
# bounded whatever sources a flood (or a spoofer) uses.
MAX_PEERS = 10_000
# Source ports an echo server never answers: the well-known services below 1024, where
# echo, chargen, daytime and friends answer anything (two of them answering each other is
# the UDP packet storm of CVE-1999-0103), and port 0, which cannot be answered (RFC 768).
# OpenBSD inetd's dg_badinput rule.
_FIRST_ANSWERED_PORT = 1024


# SO_TIMESTAMPNS (asm-generic/socket.h; Python's socket module does not name it): the kernel
# stamps each datagram with its arrival (CLOCK_REALTIME, a struct timespec in the ancillary
# data). The architectures below number it 35; others number socket options their own way.
_SO_TIMESTAMPNS = 35
_GENERIC_SOCKET_NUMBERS = frozenset(
    {"x86_64", "i386", "i686", "aarch64", "armv7l", "armv8l", "riscv64", "ppc64le", "s390x"}
)
_TIMESPEC = struct.Struct("@ll")


class StampedReceiver:
    """Reads a socket's datagrams into one buffer, each with the time it arrived.

    The time is the kernel's receive timestamp where the kernel gives one (Linux), so a
    receiver's own scheduling (the event loop waking late, a batch read in one go) is not
    measured as the network's jitter; elsewhere it is the clock right after the read.
    Arrival times are comparable with each other only: the kernel's clock is CLOCK_REALTIME,
    not :func:`time.perf_counter_ns`.

    Attributes:
        stamped: whether the kernel stamps this socket's datagrams.
    """

    def __init__(self, sock: socket.socket, buf: bytearray) -> None:
        self.sock = sock
        self._buffers = [buf]
        self.stamped = _stamp_arrivals(sock)
        self._space = socket.CMSG_SPACE(_TIMESPEC.size) if self.stamped else 0
        # A datagram the kernel did not stamp gets the same clock's reading.
        self._clock = time.time_ns if self.stamped else time.perf_counter_ns

    def recv(self) -> tuple[int, Any, int]:
        """One datagram: ``(bytes read, source address, arrival ns)``.

        Raises:
            OSError: as ``recvmsg`` (BlockingIOError when nothing is there).
        """
        n, ancillary, _, addr = self.sock.recvmsg_into(self._buffers, self._space)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                return n, addr, seconds * 1_000_000_000 + nanoseconds
        return n, addr, self._clock()


def _stamp_arrivals(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram's arrival on ``sock``; whether it will."""
    if sys.platform != "linux" or platform.machine() not in _GENERIC_SOCKET_NUMBERS:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


MAX_SIZE = Setting("max_size")


def check_max_size(size: int) -> int:
    """``size`` if it is a usable largest datagram for :class:`UDPEchoServer`.

    Raises:
        ConfigError: not a UDP payload size.
    """
    if not 1 <= size <= MAX_UDP_PAYLOAD:
        raise ConfigError((MAX_SIZE, f" {size}: UDP payloads are 1 to {MAX_UDP_PAYLOAD} bytes"))
    return size


@dataclass
class DatagramStats:
    """Counters of a UDP echo server."""

    received: int = 0
    echoed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: int = 0
    oversize: int = 0
    send_failed: int = 0
    refused_source: int = 0
    denied: int = 0
    peers: set[tuple[Any, ...]] = field(default_factory=set)
    peers_untracked: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a summary."""
        return {
            "datagrams_in": self.received,
            "datagrams_out": self.echoed,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped_on_purpose": self.dropped,
            "oversize": self.oversize,
            "send_failed": self.send_failed,
            "refused_source": self.refused_source,
            "denied": self.denied,
            "peers": len(self.peers),
            "peer_table_full": self.peers_untracked,
        }


def answerable(source: tuple[Any, ...], own_port: int) -> bool:
    """Whether an echo server on ``own_port`` may answer a datagram from ``source``.

    Never its own port, whatever the address: a datagram forged to come from the server
    itself (or from another echo server on the same port) would be echoed back and forth for
    ever. FreeBSD inetd's check_loop refuses its own services' ports the same way. Nor
    port 0 or the well-known service ports below 1024 (OpenBSD inetd's dg_badinput).
    """
    port: int = source[1]
    return port >= _FIRST_ANSWERED_PORT and port != own_port


class DatagramServer(abc.ABC):
    """What netkit's UDP servers share: a bound socket read into one preallocated buffer on
    the running loop, the source ports never answered (:func:`answerable`) and the
    allow/deny lists.

    Subclasses set ``stats`` (with ``received``, ``bytes_in``, ``refused_source`` and
    ``denied`` counters) and read with ``_readable``, checking each datagram with
    :meth:`_admits`.

    Args:
        sock: a bound, non-blocking UDP socket.
        access: allow/deny lists: a datagram from a denied source is counted
            (``stats.denied``) and not answered.
        on_denied: called with (source, rule) the first time a source is denied.
    """

    stats: Any

    def __init__(
        self,
        sock: socket.socket,
        access: AccessList | None,
        on_denied: Callable[[str, str | None], None] | None,
    ) -> None:
        self.sock = sock
        self.access = access or None  # None when empty: no check at all per datagram
        self.on_denied = on_denied
        self._denied = DeniedSources()
        self._own_port: int = sock.getsockname()[1]
        self._buf = bytearray(_RECV_BUFFER)
        self._view = memoryview(self._buf)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start serving on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def stop(self) -> None:
        """Stop reading; the socket stays open."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())

    @abc.abstractmethod
    def _readable(self) -> None:
        """Read what the socket holds: each server's own loop (its hot path)."""

    def _admits(self, n: int, addr: tuple[Any, ...]) -> bool:
        """Count a datagram of ``n`` bytes from ``addr``; False when it must be ignored (a
        source port never answered, or a denied source)."""
        stats = self.stats
        stats.received += 1
        stats.bytes_in += n
        if not answerable(addr, self._own_port):
            stats.refused_source += 1
            return False
        if self.access is None:
            return True
        verdict = self.access.check(addr[0])
        if verdict.allowed:
            return True
        stats.denied += 1
        if self._denied.first(addr) and self.on_denied is not None:
            self.on_denied(describe(addr), verdict.rule)
        return False


class UDPEchoServer(DatagramServer):
    """Echoes every datagram to its sender, unless its source port could start an echo loop.

    A loop with an echo server on some other unprivileged port cannot be told apart from a
    client by its address; no port rule (nor inetd) prevents that one.

    Args:
        sock: a bound, non-blocking UDP socket.
        max_size: the largest datagram echoed; larger ones are counted and dropped.
        drop_every: drop every Nth datagram (fault injection for testing clients), 0 = never.
        on_peer: called once with each new peer address (for the first ``max_peers``).
        on_peer_table_full: called once, when a sender arrives beyond ``max_peers``.
        max_peers: how many senders are remembered; later ones are answered, not recorded.
        access: allow/deny lists: a datagram from a denied source is counted
            (``stats.denied``) and not answered.
        on_denied: called with (source, rule) the first time a source is denied.
    """

    stats: DatagramStats

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_size: int = MAX_UDP_PAYLOAD,
        drop_every: int = 0,
        on_peer: Callable[[str], None] | None = None,
        on_peer_table_full: Callable[[int], None] | None = None,
        max_peers: int = MAX_PEERS,
        access: AccessList | None = None,
        on_denied: Callable[[str, str | None], None] | None = None,
    ) -> None:
        super().__init__(sock, access, on_denied)
        self.max_size = max_size
        self.drop_every = drop_every
        self.on_peer = on_peer
        self.on_peer_table_full = on_peer_table_full
        self.max_peers = max_peers
        self.stats = DatagramStats()

    def _readable(self) -> None:
        stats, sock, view = self.stats, self.sock, self._view
        for _ in range(BATCH):
            try:
                n, addr = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error from an earlier reply to a peer that went away
            if not self._admits(n, addr):
                continue
            if addr not in stats.peers:
                self._new_peer(addr)
            if n > self.max_size:
                stats.oversize += 1
                continue
            if self.drop_every and stats.received % self.drop_every == 0:
                stats.dropped += 1
                continue
            try:
                sock.sendto(view[:n], addr)
            except OSError:
                stats.send_failed += 1  # full send buffer or peer gone: UDP may drop
                continue
            stats.echoed += 1
            stats.bytes_out += n

    def _new_peer(self, addr: tuple[Any, ...]) -> None:
        stats = self.stats
        if len(stats.peers) < self.max_peers:
            stats.peers.add(addr)
            if self.on_peer is not None:
                self.on_peer(describe(addr))
        elif not stats.peers_untracked:
            stats.peers_untracked = True
            if self.on_peer_table_full is not None:
                self.on_peer_table_full(self.max_peers)


@dataclass
class ProbeReport:
    """What a UDP echo client measured."""

    sent: int
    tracker: SequenceTracker
    rtts: RTTSummary
    jitter: Jitter
    corrupt: int
    refused: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a summary."""
        return {
            **self.tracker.as_dict(self.sent),
            "corrupt": self.corrupt,
            "rtt": self.rtts.as_dict(),
            "jitter_ms": round(self.jitter.value * 1000, 3),
        }


class UDPProber:
    """Sends sequenced probes to a UDP echo server and accounts for the replies.

    Args:
        sock: a connected, non-blocking UDP socket.
        on_reply: called with (seq, size, rtt seconds, kind) for every valid reply;
            kind is ``ok``, ``duplicate`` or ``reordered``.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        size: int,
        on_reply: Callable[[int, int, float, str], None] | None = None,
    ) -> None:
        self.sock = sock
        self.size = size
        self.on_reply = on_reply
        self.tracker = SequenceTracker()
        self.rtts = RTTSummary()
        self.jitter = Jitter()
        self.corrupt = 0
        self.refused = False
        self.sent = 0
        self._buf = bytearray(MAX_UDP_PAYLOAD + 1)
        self._all_in = asyncio.Event()
        self._expected = 0

    def _readable(self) -> None:
        for _ in range(BATCH):
            try:
                n = self.sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                self.refused = True  # ICMP port unreachable: nobody listens there
                continue
            now = time.monotonic_ns()
            probe = parse_probe(memoryview(self._buf)[:n])
            if probe is None or probe.seq >= self.sent:
                self.corrupt += 1
                continue
            rtt = (now - probe.sent_ns) / 1e9
            kind = self.tracker.add(probe.seq)
            if kind != "duplicate":
                self.rtts.add(rtt)
                self.jitter.add(rtt)
            if self.on_reply is not None:
                self.on_reply(probe.seq, n, rtt, kind)
            if len(self.tracker.received) >= self._expected:
                self._all_in.set()

    async def run(self, count: int, interval: float, timeout: float) -> ProbeReport:
        """Send ``count`` probes ``interval`` s apart, then wait up to ``timeout`` for replies."""
        loop = asyncio.get_running_loop()
        self._expected = count
        loop.add_reader(self.sock.fileno(), self._readable)
        try:
            start = loop.time()
            for seq in range(count):
                # Paced against the schedule, not the previous send, so drift does not add up.
                # Always yield, so replies are read as they come instead of overflowing the
                # socket's receive buffer while we send.
                await asyncio.sleep(max(0.0, start + seq * interval - loop.time()))
                self.sent = seq + 1
                try:
                    self.sock.send(make_probe(seq, time.monotonic_ns(), self.size))
                except ConnectionRefusedError:
                    self.refused = True
                except BlockingIOError:
                    pass  # the kernel dropped it for us; it counts as lost
            try:
                async with asyncio.timeout(timeout):
                    await self._all_in.wait()
            except TimeoutError:
                pass
        finally:
            loop.remove_reader(self.sock.fileno())
        if self.refused and not self.tracker.received:
            where = describe(self.sock.getpeername())
            raise ConnectError(f"nothing listens on udp://{where} (ICMP port unreachable)")
        return ProbeReport(
            self.sent, self.tracker, self.rtts, self.jitter, self.corrupt, self.refused
        )

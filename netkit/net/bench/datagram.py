"""The ``netkit bench`` driver for UDP echo: :class:`DatagramEcho`, sequenced probes
(:mod:`netkit.core.probe`) on a connected socket read with ``recv_into``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from netkit.core.probe import make_probe, parse_probe
from netkit.errors import (
    ConnectError,
)
from netkit.net.bench.engine import RequestEngine, Run, Slot
from netkit.net.datagram import BATCH, MAX_UDP_PAYLOAD
from netkit.net.sockets import (
    describe,
)

perf_ns = time.perf_counter_ns

# --- UDP echo ----------------------------------------------------------------------------


class DatagramEcho(RequestEngine):
    """Echo requests as sequenced datagrams on a connected UDP socket.

    Replies may come back in any order, or not at all: each is matched by its sequence number,
    and a request without a reply within the timeout counts as a ``timeout`` error.
    """

    def __init__(self, run: Run, slot: Slot, sock: socket.socket, size: int) -> None:
        self.init_engine(run, slot)
        self.sock = sock
        self.size = size
        self.peer = describe(sock.getpeername())
        self.pending: dict[int, int] = {}
        self.seq = 0
        self._buf = bytearray(MAX_UDP_PAYLOAD + 1)
        self._view = memoryview(self._buf)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def transmit(self, n: int) -> None:
        # pump() queued the send times in self.sent; replies are matched by sequence instead.
        sent, pending, sock = self.sent, self.pending, self.sock
        for _ in range(n):
            t = sent.popleft()
            seq = self.seq
            self.seq += 1
            pending[seq] = t
            try:
                sock.send(make_probe(seq, t, self.size))
            except BlockingIOError:
                pass  # the kernel dropped it: it will time out, as a lost datagram does
            except ConnectionRefusedError as exc:
                self._refused(exc)
                return
        if self.run.recording:
            self.run.result.bytes_sent += n * self.size

    def _refused(self, exc: OSError) -> None:
        error = ConnectError(f"nothing listens on udp://{self.peer} (ICMP port unreachable)")
        error.__cause__ = exc
        self.run.connect_failed(error)

    def _readable(self) -> None:
        done = 0
        for _ in range(BATCH):
            try:
                n = self.sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError as exc:
                self._refused(exc)
                continue
            probe = parse_probe(self._view[:n])
            if probe is None:
                self.run.error(f"corrupt echo from udp://{self.peer}", "mismatch")
                continue
            sent = self.pending.pop(probe.seq, None)
            if sent is None:
                continue  # a duplicate, or a reply after its timeout was counted
            self.sent.append(sent)
            done += 1
            if self.run.recording:
                self.run.result.bytes_received += n
        if done:
            self.run.ever_connected = True
            self.completed(done)

    def start_requests(self) -> None:
        # A UDP socket "connects" without the peer: only a reply proves someone is there.
        self.active = True
        self.pump()

    def expire(self, now: int) -> None:
        """Count requests older than the timeout as lost (UDP has no other way to know)."""
        limit = now - self.run.timeout_ns
        old = [seq for seq, t in self.pending.items() if t < limit]
        for seq in old:
            del self.pending[seq]
        if old:
            self.run.error(f"{len(old)} datagram(s) unanswered", "timeout", len(old))
            self.in_flight -= len(old)
            self.run.lost(len(old))
            self.pump()

    def finish(self) -> None:
        """Stop reading and close the socket."""
        self.stop_timer()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        self.lose_in_flight(
            (f"no reply from udp://{self.peer} before the end of the run", "timeout")
        )
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self) -> None:
        """The same as :meth:`finish`."""
        self.finish()

"""The bidirectional L4 relay shared by ``proxy`` and ``lb``.

Two paths move the bytes:

* **splice** (Linux, plain TCP/Unix on both sides, no data faults): socket → pipe → socket with
  ``os.splice``, driven by the loop's readiness callbacks; payload never enters Python.
* **buffered** (TLS on either side, data faults, other platforms): asyncio transports with the
  zero-copy :class:`StreamProtocol`; each side writes views of its receive buffer to the other,
  or, with faults, copies that are released on the faults' schedule.

Both propagate half-close (a FIN becomes ``shutdown(SHUT_WR)`` on the other side; the relay
ends when both directions are done; a TLS side that cannot half-close is kept open and read
until it closes, so its reply is never cut), bound memory with flow control (a side stops
reading while the other cannot take more), count bytes received and delivered per direction,
and report the bytes that were not delivered when a connection ends early. Delivered means
handed to the kernel and, when the relay resets a socket, sent: what a transport still
buffered or the kernel had not sent when the connection died is counted as undelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import itertools
import os
import random
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.faults import (
    BlackholeAfter,
    ConnectionFaults,
    DirectionPlan,
    Fault,
    LimitData,
    Refuse,
    ResetAfter,
    draw,
)
from netkit.core.proxy_protocol import encode as encode_proxy_header
from netkit.errors import ConnectError, NetkitError, OperationTimeout, ResourceExhausted
from netkit.net.accept import DescriptorReserve
from netkit.net.protocols import StreamProtocol
from netkit.net.server import EventHook, Server, ServerStats
from netkit.net.sockets import (
    OUT_OF_RESOURCES,
    SocketOptions,
    apply_options,
    translate_connect_error,
)
from netkit.net.tls_layer import accept_tls, connect_tls

if TYPE_CHECKING:
    from netkit.net.upstreams import Upstream

SPLICE_AVAILABLE = hasattr(os, "splice")
PIPE_SIZE = 1 << 20
FAULT_HIGH_WATER = 1 << 20  # bytes held back by faults before the source is paused
_LINGER_RST = struct.pack("ii", 1, 0)
_SIOCOUTQNSD = 0x894B  # linux/sockios.h


def _force_rst(sock: Any) -> None:
    # SO_LINGER {on, 0}: close() sends RST instead of FIN.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)


def _unsent(sock: Any) -> int:
    """Bytes in a TCP socket's send queue not yet sent to the peer (SIOCOUTQNSD).

    A reset discards them, so a relay that resets a socket has not delivered them; bytes
    already sent are in the peer's receive queue, which it can still read after the RST. A
    Unix socket's queued bytes stay readable by the peer after close: they count as delivered.
    """
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


@dataclass
class RelayRecord:
    """One relayed connection, for the ``closed`` event and the summary."""

    id: int
    client: str
    upstream: str = ""
    path: str = ""
    started: float = field(default_factory=time.monotonic)
    up_in: int = 0
    up_out: int = 0
    down_in: int = 0
    down_out: int = 0
    end: str = "closed"

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a ``closed`` event."""
        fields: dict[str, Any] = {
            "id": self.id,
            "client": self.client,
            "upstream": self.upstream,
            "path": self.path,
            "bytes_up": self.up_out,
            "bytes_down": self.down_out,
            "duration_s": round(time.monotonic() - self.started, 6),
            "end": self.end,
        }
        lost = (self.up_in - self.up_out) + (self.down_in - self.down_out)
        if lost:
            fields["undelivered"] = {
                "up": self.up_in - self.up_out,
                "down": self.down_in - self.down_out,
            }
        return fields


# --- splice path -------------------------------------------------------------------------


class PipePool:
    """Pipes for splice, shared by every relay in the process (HAProxy keeps one too).

    A direction takes a pipe only while bytes are in flight and gives it back once drained,
    so idle relays hold no pipe: ten thousand open relays do not cost forty thousand
    descriptors.
    """

    def __init__(self, max_free: int = 64) -> None:
        self.max_free = max_free
        self._free: list[tuple[int, int]] = []

    def acquire(self, reserve: DescriptorReserve | None = None) -> tuple[int, int]:
        """A (read fd, write fd) pair, non-blocking; raises OSError when out of descriptors.

        Out of descriptors, two held in ``reserve`` are spent on the pipe.
        """
        if self._free:
            return self._free.pop()
        try:
            rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in OUT_OF_RESOURCES or reserve is None or not reserve.spend(2):
                raise
            rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        return rfd, wfd

    def release(self, pipe: tuple[int, int]) -> None:
        """Give back an empty pipe."""
        if len(self._free) < self.max_free:
            self._free.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int]) -> None:
        """Close a pipe (one that may hold bytes)."""
        for fd in pipe:
            with contextlib.suppress(OSError):
                os.close(fd)


PIPES = PipePool()


class _SpliceDirection:
    """src → pipe → dst for one direction, driven by readiness callbacks."""

    FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)

    def __init__(
        self, relay: SpliceRelay, src: socket.socket, dst: socket.socket, up: bool
    ) -> None:
        self.relay, self.src, self.dst, self.up = relay, src, dst, up
        self.loop = relay.loop
        self.pipe: tuple[int, int] | None = None
        self.in_pipe = 0
        self.reading = False
        self.writing = False
        self.eof = False
        self.done = False

    def start(self) -> None:
        self._read_on()

    def _read_on(self) -> None:
        if not self.reading:
            self.loop.add_reader(self.src.fileno(), self._readable)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.src.fileno())
            self.reading = False

    def _count(self, received: int, delivered: int) -> None:
        record = self.relay.record
        if self.up:
            record.up_in += received
            record.up_out += delivered
        else:
            record.down_in += received
            record.down_out += delivered
        self.relay.last_activity = self.loop.time()

    def _readable(self) -> None:
        if self.pipe is None:
            try:
                self.pipe = PIPES.acquire(self.relay.reserve)
            except OSError as exc:
                # Out of descriptors: the bytes wait in the kernel; try again shortly.
                self._read_off()
                self.relay.out_of_pipes(exc)
                self.loop.call_later(0.05, self._read_on)
                return
        try:
            n = os.splice(self.src.fileno(), self.pipe[1], PIPE_SIZE, flags=self.FLAGS)
        except BlockingIOError:
            self._give_back()
            return
        except OSError as exc:
            self.relay.failed(exc, from_client=self.up)
            return
        if n == 0:
            self.eof = True
            self._read_off()
        else:
            self.in_pipe += n
            self._count(n, 0)
        self._flush()

    def _flush(self) -> None:
        while self.in_pipe:
            assert self.pipe is not None
            try:
                n = os.splice(self.pipe[0], self.dst.fileno(), self.in_pipe, flags=self.FLAGS)
            except BlockingIOError:
                # dst is full: stop reading src until the pipe has drained (bounded memory).
                self._read_off()
                if not self.writing:
                    self.loop.add_writer(self.dst.fileno(), self._flush)
                    self.writing = True
                return
            except OSError as exc:
                self.relay.failed(exc, from_client=not self.up)
                return
            self.in_pipe -= n
            self._count(0, n)
        self._give_back()
        if self.writing:
            self.loop.remove_writer(self.dst.fileno())
            self.writing = False
        if self.eof:
            if not self.done:
                self.done = True
                self.relay.half_closed(self)
        else:
            self._read_on()

    def _give_back(self) -> None:
        if self.pipe is not None and not self.in_pipe:
            PIPES.release(self.pipe)
            self.pipe = None

    def stop(self) -> None:
        self._read_off()
        if self.writing:
            self.loop.remove_writer(self.dst.fileno())
            self.writing = False
        if self.pipe is not None:
            # Bytes still in it were not delivered (and are counted so): never reuse it.
            PipePool.discard(self.pipe)
            self.pipe = None


class SpliceRelay:
    """Relays two connected, non-blocking sockets with ``os.splice``."""

    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        record: RelayRecord,
        *,
        slow_close: tuple[float, float] = (0.0, 0.0),
        on_exhausted: Callable[[OSError], None] | None = None,
        reserve: DescriptorReserve | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client, self.upstream, self.record = client, upstream, record
        self.slow_close = slow_close  # (client→upstream, upstream→client) FIN delays
        self.on_exhausted = on_exhausted
        self.reserve = reserve
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.last_activity = self.loop.time()
        self.directions = (
            _SpliceDirection(self, client, upstream, up=True),
            _SpliceDirection(self, upstream, client, up=False),
        )
        record.path = "splice"

    def start(self) -> None:
        """Start moving bytes both ways."""
        for direction in self.directions:
            direction.start()

    def out_of_pipes(self, exc: OSError) -> None:
        """No descriptor for a pipe: tell the server, which stops accepting for a while."""
        if self.on_exhausted is not None:
            self.on_exhausted(exc)

    def half_closed(self, direction: _SpliceDirection) -> None:
        """One direction saw EOF and delivered everything: pass the FIN on."""

        def shutdown() -> None:
            with contextlib.suppress(OSError):
                direction.dst.shutdown(socket.SHUT_WR)
            if all(d.done for d in self.directions):
                self.finish("closed")

        delay = self.slow_close[0 if direction.up else 1]
        if delay:
            self.loop.call_later(delay, shutdown)
        else:
            shutdown()

    def failed(self, exc: OSError, *, from_client: bool) -> None:
        """A socket error: reset the other side too and end."""
        who = "client" if from_client else "upstream"
        reason = (
            "reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE) else (exc.strerror or str(exc))
        )
        self._reset(self.upstream if from_client else self.client)
        self.finish(f"{reason} by {who}")

    def abort(self, reason: str) -> None:
        """End now with RST on both sides."""
        self._reset(self.client)
        self._reset(self.upstream)
        self.finish(reason)

    def close(self, reason: str) -> None:
        """End now with a FIN on both sides (an idle relay has nothing in flight)."""
        self.finish(reason)

    def _reset(self, sock: socket.socket) -> None:
        # What the kernel still holds for the peer is lost with the RST: not delivered.
        lost = _unsent(sock)
        if sock is self.upstream:
            self.record.up_out -= lost
        else:
            self.record.down_out -= lost
        _force_rst(sock)

    def finish(self, reason: str) -> None:
        """Stop, close both sockets, resolve :attr:`done`."""
        if self.done.done():
            return
        for direction in self.directions:
            direction.stop()
        self.client.close()
        self.upstream.close()
        self.record.end = reason
        self.done.set_result(None)


# --- buffered path -----------------------------------------------------------------------


class _RelaySide(StreamProtocol):
    """One side of a buffered relay; what it reads goes to :attr:`other`."""

    pause_reading_on_backpressure = False  # the other side's backpressure pauses us

    def __init__(self, relay: BufferedRelay, up: bool) -> None:
        super().__init__()
        self.relay, self.up = relay, up
        self.other: _RelaySide | None = None
        self.plan: DirectionPlan | None = None
        self.held = 0  # bytes copied and waiting for their fault schedule
        # Held pieces in arrival order with their due times, released by ONE timer: timers
        # with close due times may fire in any order, a queue cannot reorder (#13 item 9).
        self.pending: deque[tuple[float, memoryview]] = deque()
        self.release_timer: asyncio.TimerHandle | None = None
        self.delivered = 0
        self.unsent = 0  # bytes our transport held after the last write (not yet in the kernel)
        self.was_reset = False
        self.blackholed = False
        self.eof = False

    def views_released(self) -> bool:
        return self.other is None or not self.other._write_paused

    def data_ready(self) -> None:
        other = self.other
        if other is None or other.transport is None:
            # The other side is still connecting: keep the bytes, stop reading until it is up.
            if self.transport is not None:
                self.transport.pause_reading()
            return
        view = self.rbuf.view()
        n = len(view)
        self.relay.count(self.up, received=n)
        plan = self.plan
        if plan is None:
            self._deliver(view)
        elif self.blackholed:
            pass  # swallowed: counted as received, never delivered
        elif plan.shapes_data:
            self.relay.schedule(self, bytes(view))  # held for later: a copy
        else:
            self._deliver(view)
        self.rbuf.consume(n)

    def _deliver(self, data: bytes | memoryview) -> None:
        other, plan = self.other, self.plan
        assert other is not None and other.transport is not None
        if plan is not None and plan.limit is not None:
            room = plan.limit - self.delivered
            data = data[: max(room, 0)]
        if plan is not None and plan.reset_bytes is not None:
            data = data[: max(plan.reset_bytes - self.delivered, 0)]
        if data and other.take(data):
            self.delivered += len(data)
            self.relay.count(self.up, delivered=len(data))
        if plan is not None:
            if plan.reset_bytes is not None and self.delivered >= plan.reset_bytes:
                self.relay.fault_end(ResetAfter)
            elif plan.limit is not None and self.delivered >= plan.limit:
                self.relay.fault_end(LimitData)

    def take(self, data: bytes | memoryview) -> bool:
        """Write bytes from the other side; False when our transport could not take them."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False  # a closing transport drops writes silently
        self.write(data)
        if transport.is_closing():
            return False  # the write failed: the peer is gone (connection_lost follows)
        self.unsent = transport.get_write_buffer_size()
        return True

    def reset(self) -> None:
        """RST our peer; what it never got is withdrawn from the delivered count."""
        transport = self.transport
        if transport is None or self.was_reset or self.closed.done():
            return
        self.was_reset = True
        sock = transport.get_extra_info("socket")
        self.unsent = transport.get_write_buffer_size() + _unsent(sock)
        _force_rst(sock)
        transport.abort()

    def on_connect(self) -> None:
        other = self.other
        if other is not None and other.transport is not None and len(other.rbuf):
            other.data_ready()  # what arrived while we were connecting
            if not self._write_paused:
                other.transport.resume_reading()

    def on_eof(self) -> bool | None:
        self.eof = True
        self.relay.side_eof(self)
        return True  # keep our write side open: the other direction may still flow

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()  # the other side's bytes have nowhere to go

    def resume_writing(self) -> None:
        super().resume_writing()
        self.unsent = 0
        other = self.other
        if other is not None and other.transport is not None and not other.transport.is_closing():
            other.rbuf.release()
            if other.held < FAULT_HIGH_WATER:
                other.transport.resume_reading()

    def on_close(self, exc: Exception | None) -> None:
        if (exc is not None or self.was_reset) and self.unsent:
            # Lost with the connection: those bytes were never delivered.
            self.relay.count(not self.up, delivered=-self.unsent)
            self.unsent = 0
        self.relay.side_closed(self, exc)


class BufferedRelay:
    """Relays two asyncio transports (TLS, faults, or no splice)."""

    def __init__(self, record: RelayRecord, faults: ConnectionFaults, rng: random.Random) -> None:
        self.loop = asyncio.get_running_loop()
        self.record, self.faults, self.rng = record, faults, rng
        self.client = _RelaySide(self, up=True)
        self.upstream = _RelaySide(self, up=False)
        self.client.other, self.upstream.other = self.upstream, self.client
        data_faults = faults.touches_data
        self.client.plan = faults.directions["up"] if data_faults else None
        self.upstream.plan = faults.directions["down"] if data_faults else None
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.last_activity = self.loop.time()
        self._timers: list[asyncio.TimerHandle] = []
        record.path = "buffered"

    def start(self) -> None:
        """Both transports are connected: arm time-based faults."""
        f = self.faults
        if f.reset_after_s is not None:
            self._timers.append(self.loop.call_later(f.reset_after_s, self.fault_end, ResetAfter))
        for side in (self.client, self.upstream):
            if side.plan is not None and side.plan.blackhole_after is not None:
                self._timers.append(
                    self.loop.call_later(
                        side.plan.blackhole_after, setattr, side, "blackholed", True
                    )
                )
                if side.plan.blackhole_close_after:
                    # toxiproxy's timeout toxic: swallow, then close after a while.
                    closing = side.plan.blackhole_after + side.plan.blackhole_close_after
                    self._timers.append(
                        self.loop.call_later(closing, self.fault_end, BlackholeAfter)
                    )

    def count(self, up: bool, *, received: int = 0, delivered: int = 0) -> None:
        """Account bytes in one direction."""
        r = self.record
        if up:
            r.up_in += received
            r.up_out += delivered
        else:
            r.down_in += received
            r.down_out += delivered
        self.last_activity = self.loop.time()

    def schedule(self, side: _RelaySide, data: bytes) -> None:
        """Hold ``data`` and release it on the side's fault schedule, in order."""
        assert side.plan is not None
        side.held += len(data)
        if side.held >= FAULT_HIGH_WATER and side.transport is not None:
            side.transport.pause_reading()
        offset = 0
        for due, size in side.plan.plan(self.loop.time(), len(data), self.rng):
            side.pending.append((due, memoryview(data)[offset : offset + size]))
            offset += size
        if side.release_timer is None and side.pending:
            side.release_timer = self.loop.call_at(side.pending[0][0], self._release, side)

    def _release(self, side: _RelaySide) -> None:
        # Deliver every piece that is due, oldest first, then wait for the next one. A piece
        # is never due before the one ahead of it (DirectionPlan.plan), so order is kept.
        side.release_timer = None
        now = self.loop.time()
        while side.pending and side.pending[0][0] <= now:
            _, piece = side.pending.popleft()
            side.held -= len(piece)
            if self.done.done() or side.other is None or side.other.transport is None:
                continue
            if side.other.transport.is_closing():
                continue
            side._deliver(piece)
        if side.pending:
            side.release_timer = self.loop.call_at(side.pending[0][0], self._release, side)
        transport = side.transport
        if (
            side.held < FAULT_HIGH_WATER // 4
            and transport is not None
            and not transport.is_closing()
            and (side.other is None or not side.other._write_paused)
        ):
            transport.resume_reading()
        if side.eof and not side.held:
            self._propagate_eof(side)

    def side_eof(self, side: _RelaySide) -> None:
        """A side sent FIN: pass it on once its held bytes are out."""
        if not side.held:
            self._propagate_eof(side)

    def _propagate_eof(self, side: _RelaySide) -> None:
        other = side.other
        if other is None or other.transport is None or other.transport.is_closing():
            return

        def shutdown() -> None:
            assert other is not None and other.transport is not None
            if other.transport.is_closing():
                return
            if other.transport.can_write_eof():
                other.transport.write_eof()  # TLS: close_notify, and the other way stays open
            # else: a transport that cannot half-close; closing it would cut the reply still
            # coming back, so keep it open and reading until that side closes.
            if self.client.eof and self.upstream.eof:
                self.close_both()

        delay = self.faults.directions["up" if side.up else "down"].slow_close
        if delay:
            self.loop.call_later(delay, shutdown)
        else:
            shutdown()

    def fault_end(self, fault: type[Fault]) -> None:
        """A data fault ends the connection: RST both sides, or close them gracefully."""
        if self.done.done():
            return
        self.record.end = f"fault: {fault.end_reason}"
        for side in (self.client, self.upstream):
            if side.transport is not None:
                if fault.resets:
                    side.reset()
                else:
                    side.transport.close()

    def close_both(self) -> None:
        """Close both transports after flushing."""
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()

    def close(self, reason: str) -> None:
        """End now with a FIN on both sides; a side with bytes it cannot flush gets an RST."""
        if self.record.end == "closed":
            self.record.end = reason
        for side in (self.client, self.upstream):
            transport = side.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size():
                side.reset()  # counts what it could not flush as undelivered
            else:
                transport.close()

    def abort(self, reason: str) -> None:
        """End now with RST on both sides."""
        if self.record.end == "closed":
            self.record.end = reason
        for side in (self.client, self.upstream):
            side.reset()

    def side_closed(self, side: _RelaySide, exc: Exception | None) -> None:
        """A transport is gone: finish the other one (RST if this one was reset)."""
        if exc is not None and self.record.end == "closed":
            who = "client" if side.up else "upstream"
            if isinstance(exc, ssl.SSLError):
                # A record that failed to decrypt or verify: the stream was cut, say how.
                self.record.end = f"TLS error from {who}: {exc.reason or exc}"
            else:
                self.record.end = f"reset by {who}"
        other = side.other
        if other is not None and other.transport is not None and not other.transport.is_closing():
            if exc is not None:
                other.reset()
            elif not side.held:
                other.transport.close()
        if all(s.closed.done() or s is side for s in (self.client, self.upstream)):
            for timer in self._timers:
                timer.cancel()
            for each in (self.client, self.upstream):
                if each.release_timer is not None:
                    each.release_timer.cancel()
            if not self.done.done():
                self.done.set_result(None)


# --- connecting upstreams ----------------------------------------------------------------


async def connect_raw(
    endpoint: TCPEndpoint | UnixEndpoint,
    *,
    timeout: float,
    options: SocketOptions = SocketOptions(),
) -> socket.socket:
    """Open a non-blocking socket connected to ``endpoint`` (each resolved address in turn).

    Raises:
        ConnectError, OperationTimeout: as the failure was.
    """
    loop = asyncio.get_running_loop()
    target = str(endpoint)
    try:
        async with asyncio.timeout(timeout):
            infos: list[tuple[int, Any]]
            if isinstance(endpoint, UnixEndpoint):
                infos = [(socket.AF_UNIX, endpoint.address)]
            else:
                resolved = await loop.getaddrinfo(
                    endpoint.host, endpoint.port, type=socket.SOCK_STREAM
                )
                infos = [(family, addr) for family, _, _, _, addr in resolved]
            last: BaseException | None = None
            for family, addr in infos:
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as exc:
                    if exc.errno in OUT_OF_RESOURCES:
                        raise ResourceExhausted(
                            f"cannot open a socket to {target}: {exc.strerror}"
                        ) from exc
                    raise
                try:
                    sock.setblocking(False)
                    apply_options(sock, options)
                    await loop.sock_connect(sock, addr)
                    return sock
                except OSError as exc:
                    sock.close()
                    last = exc
                except BaseException:
                    sock.close()
                    raise
            raise last or ConnectError(f"cannot resolve {target}")
    except TimeoutError:
        raise OperationTimeout(f"timed out connecting to {target}") from None
    except OSError as exc:
        raise translate_connect_error(exc, target) from exc


@dataclass
class RelayOptions:
    """How a :class:`RelayServer` relays.

    Attributes:
        client_tls: terminate TLS from clients with this context.
        upstream_tls: originate TLS to the upstream with this context.
        upstream_sni: server name for the upstream TLS handshake.
        splice: use ``os.splice`` where possible.
        proxy_protocol: send a PROXY header (1 or 2) to the upstream first, or 0.
        idle_timeout: close relays idle this long (seconds), or None.
        faults: fault specs drawn per connection.
        seed: RNG seed for fault draws and jitter (repeatable runs).
    """

    client_tls: ssl.SSLContext | None = None
    upstream_tls: ssl.SSLContext | None = None
    upstream_sni: str | None = None
    splice: bool = True
    proxy_protocol: int = 0
    idle_timeout: float | None = None
    faults: list[Fault] = field(default_factory=list)
    seed: int | None = None

    def can_splice(self, *, client_tls: bool) -> bool:
        """True when relays will use ``os.splice`` (plain sockets on both sides, Linux)."""
        return self.splice and SPLICE_AVAILABLE and not client_tls and not self.upstream_tls


@dataclass
class RelayStats(ServerStats):
    """A relay server's totals: bytes each way, undelivered bytes, upstream failures, faults."""

    failed_upstream: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    undelivered: int = 0
    faults: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a summary."""
        return {
            "connections": self.accepted,
            "rejected": self.rejected,
            "upstream_failures": self.failed_upstream,
            "peak_connections": self.peak,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "undelivered_bytes": self.undelivered,
            "faults_injected": self.faults,
            "accept_errors": self.accept_errors,
            "uptime_s": self.uptime,
            "cut_at_drain": self.aborted_at_drain,
        }


class RelayServer(Server):
    """Accepts clients on a listening socket and relays each to an upstream.

    Args:
        sock: the listening socket.
        upstream: where each client goes (proxy: a fixed endpoint; lb: a balanced pool); told
            when each relay ends.
        options: TLS, splice, PROXY protocol, faults.
        max_connections: clients beyond this are refused (RST) and counted.
        on_event: receives (event, fields): ``fault``, ``upstream_failed``, ``closed``, ...
        unix_endpoint: the Unix socket's path, removed when the server stops listening.
    """

    stats: RelayStats
    connections: dict[Hashable, SpliceRelay | BufferedRelay | None]

    def __init__(
        self,
        sock: socket.socket,
        upstream: Upstream,
        options: RelayOptions,
        *,
        max_connections: int | None = None,
        on_event: EventHook | None = None,
        unix_endpoint: UnixEndpoint | None = None,
    ) -> None:
        # Descriptors held for clients accepted and still opening their upstream (one each),
        # for the next client, and for a splice pipe: a client is accepted only when it can
        # be relayed, so clients beyond the descriptor limit wait in the backlog and are
        # served in turn as others close, instead of each holding a socket it cannot use.
        self.reserve = DescriptorReserve()
        self._connecting = 0
        super().__init__(
            sock,
            RelayStats(),
            max_connections=max_connections,
            on_event=on_event,
            unix_endpoint=unix_endpoint,
            before_accept=lambda: self.reserve.fill(self._connecting + self._spare),
        )
        self.upstream = upstream
        self.options = options
        self.rng = random.Random(options.seed)
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.splice = options.can_splice(client_tls=options.client_tls is not None)
        self._spare = 1 + (2 if self.splice else 0)

    def start(self) -> None:
        """Start the upstream (health checks), then accepting."""
        self.upstream.start()
        super().start()

    async def close(self) -> None:
        await super().close()
        await self.upstream.stop()

    def accepted(self, conn: socket.socket, peer: str) -> None:
        if self.full:
            _force_rst(conn)
            conn.close()
            self.rejected({"client": peer, "reason": "max connections"})
            return
        cid = next(self._ids)
        self.track(cid, None)
        self._connecting += 1
        task = self.loop.create_task(self._handle(cid, conn, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, cid: int, conn: socket.socket, client: str) -> None:
        record = RelayRecord(cid, client)
        faults = draw(self.options.faults, self.rng)
        for applied in faults.applied:
            self.stats.faults += 1
            self.emit("fault", {"id": cid, "client": client, **applied})
        connecting = True  # counted in self._connecting until its upstream is asked for
        try:
            if faults.refuse:
                self._drop_client(conn, record, f"fault: {Refuse.end_reason}")
                return
            if faults.accept_delay:
                await asyncio.sleep(faults.accept_delay)
            connecting = False  # _upstream_for takes it off the count, whatever happens
            upstream = await self._upstream_for(conn, record)
            if upstream is None:
                return
            relay = await self._relay(conn, upstream, record, faults)
            if relay is not None:
                await self._watch(relay)
        except (OSError, ssl.SSLError, NetkitError) as exc:
            reason = translate_connect_error(exc, client) if isinstance(exc, OSError) else exc
            record.end = f"error: {reason}"
            with contextlib.suppress(OSError):
                conn.close()
        finally:
            if connecting:
                self._connecting -= 1  # refused, or cancelled before its upstream was asked
            self._finish(cid, record)

    def _drop_client(self, conn: socket.socket, record: RelayRecord, end: str) -> None:
        _force_rst(conn)
        conn.close()
        record.end = end

    async def _upstream_for(self, conn: socket.socket, record: RelayRecord) -> socket.socket | None:
        # The client's upstream, or None when it could not be opened (the client is reset and
        # the failure reported). Counted in self._connecting until then.
        try:
            upstream, record.upstream = await self._connect_upstream(record.client)
        except NetkitError as exc:
            fields = {"id": record.id, "client": record.client}
            if isinstance(exc, ResourceExhausted):
                # Out of descriptors even with the reserve: turn the client away now rather
                # than hold its socket while it waits (HAProxy closes it too); not the
                # upstream's fault, so it is counted as rejected.
                self.rejected(fields | {"reason": str(exc)})
                self._drop_client(conn, record, f"turned away: {exc}")
            else:
                self._upstream_failed(conn, record, exc)
            return None
        finally:
            self._connecting -= 1
        return upstream

    def _upstream_failed(self, conn: socket.socket, record: RelayRecord, error: Exception) -> None:
        self.stats.failed_upstream += 1
        self.emit(
            "upstream_failed", {"id": record.id, "client": record.client, "error": str(error)}
        )
        self._drop_client(conn, record, f"upstream failed: {error}")

    async def _relay(
        self,
        conn: socket.socket,
        upstream: socket.socket,
        record: RelayRecord,
        faults: ConnectionFaults,
    ) -> SpliceRelay | BufferedRelay | None:
        # The relay between the two sockets, started; None when the upstream's transport
        # could not be set up (reported).
        header = b""
        if self.options.proxy_protocol:
            header = encode_proxy_header(
                self.options.proxy_protocol,
                _tcp_address(conn.getpeername()),
                _tcp_address(conn.getsockname()),
            )
        if self.splice and not faults.touches_data:
            try:
                if header:
                    await self.loop.sock_sendall(upstream, header)
            except BaseException:
                upstream.close()
                raise
            splice = SpliceRelay(
                conn,
                upstream,
                record,
                slow_close=(
                    faults.directions["up"].slow_close,
                    faults.directions["down"].slow_close,
                ),
                on_exhausted=self.acceptor.pause_for,
                reserve=self.reserve,
            )
            self.connections[record.id] = splice
            splice.start()
            return splice
        buffered = BufferedRelay(record, faults, self.rng)
        self.connections[record.id] = buffered
        try:
            await self._open_upstream_transport(buffered, upstream, header)
        except (OSError, ssl.SSLError) as exc:
            self._upstream_failed(conn, record, translate_connect_error(exc, record.upstream))
            return None
        if self.options.client_tls is not None:
            # netkit's TLS layer: sends the alert when a handshake fails, half-closes.
            await accept_tls(conn, lambda: buffered.client, self.options.client_tls)
        else:
            await self.loop.connect_accepted_socket(lambda: buffered.client, conn)
        buffered.start()
        return buffered

    async def _connect_upstream(self, client: str) -> tuple[socket.socket, str]:
        # Out of descriptors for the upstream socket: spend this client's reserved descriptor
        # and try once more (nothing else can take it: the retry opens its socket before any
        # await); a second failure propagates and the client is turned away.
        try:
            return await self.upstream.connect(client)
        except ResourceExhausted as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError):
                self.acceptor.pause_for(cause)
            if not self.reserve.spend():
                raise
            return await self.upstream.connect(client)

    async def _open_upstream_transport(
        self, relay: BufferedRelay, upstream: socket.socket, header: bytes
    ) -> None:
        # Upstream first (TLS handshake included), and the PROXY header on it before any client
        # byte can flow; bytes that reach either side before the other is up wait in its buffer.
        opts = self.options
        try:
            if opts.upstream_tls is not None:
                # netkit's TLS layer: a client's FIN becomes close_notify, and the reply is
                # still read (HAProxy shuts its SSL server side down the same way).
                await connect_tls(
                    upstream,
                    lambda: relay.upstream,
                    opts.upstream_tls,
                    server_hostname=opts.upstream_sni,
                )
            else:
                await self.loop.create_connection(lambda: relay.upstream, sock=upstream)
        except BaseException:
            upstream.close()
            raise
        if header:
            relay.upstream.write(header)

    async def _watch(self, relay: SpliceRelay | BufferedRelay) -> None:
        # One watcher per relay, woken only when the idle time could have run out: reads just
        # stamp relay.last_activity, they arm no timer. Idle means silent both ways (nginx's
        # stream proxy_timeout), and it ends with a close, not a reset, as nginx does.
        idle = self.options.idle_timeout
        while not relay.done.done():
            if idle is None:
                await relay.done
                return
            remaining = relay.last_activity + idle - self.loop.time()
            if remaining <= 0:
                relay.close("idle timeout")
                await relay.done
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await asyncio.shield(relay.done)

    def _finish(self, cid: int, record: RelayRecord) -> None:
        self.untrack(cid)
        t = self.stats
        t.bytes_up += record.up_out
        t.bytes_down += record.down_out
        t.undelivered += (record.up_in - record.up_out) + (record.down_in - record.down_out)
        if record.upstream:
            self.upstream.relay_ended(record.upstream, record.up_out, record.down_out)
        self.emit("closed", record.as_dict())

    def stopped_accepting(self) -> None:
        self.reserve.close()

    async def cut(self) -> int:
        cut = [r for r in self.connections.values() if r is not None]
        for relay in cut:
            relay.abort("drain timeout")
        for task in list(self._tasks):
            if not task.done():
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        return len(cut)


def _tcp_address(addr: object) -> tuple[str, int] | None:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return None

"""The load drivers of ``netkit bench``: one event loop's worth of connections, and their clock.

One :func:`run_worker` call drives one :class:`~netkit.core.bench.LoadPlan` on the running loop
and returns its :class:`~netkit.core.bench.BenchResult`; ``netkit bench --workers N`` runs it in
N processes and merges the results.

Each connection slot keeps one connection open (reconnecting after a failure, which is counted)
and runs the request engine of :class:`RequestEngine`: closed loop (a new request as soon as
one completes, up to ``pipeline`` in flight) or open loop (request ``k`` due at a time fixed in
advance; latency measured from that time, as wrk2 does). Transports:

- TCP, TLS and Unix echo: :class:`StreamEcho`, a :class:`~netkit.net.protocols.StreamProtocol`
  that verifies the echoed byte stream against the payload pattern without copying it;
- UDP echo: :class:`DatagramEcho`, sequenced probes (:mod:`netkit.core.probe`) on a connected
  socket read with ``recv_into``;
- WebSocket echo: :class:`WSEcho`, a :class:`~netkit.net.ws.WebSocketClientConnection` that
  compares each message with the payload;
- ``stream``: :class:`StreamBulk` / :class:`WSBulk` write as fast as the peer reads;
- ``connect``: connect, optionally exchange one verified echo, close, repeat.

The hot path is kept lean: one ``perf_counter_ns()`` per batch of responses, a histogram
record per response, one write per batch of requests.

Without a target, :class:`EmbeddedEchoServer` runs netkit's own echo server (the shared
:class:`~netkit.net.server.StreamServer`) in forked processes for the drivers to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any

from netkit.core.addresses import WSURL, Endpoint, TCPEndpoint, UDPEndpoint, UnixEndpoint
from netkit.core.bench import LATE_TOLERANCE_NS, STREAM_CHUNK, BenchResult, LoadPlan, Pacing
from netkit.core.probe import HEADER_SIZE, make_probe, parse_probe
from netkit.core.ws.handshake import ClientHandshake
from netkit.core.ws.protocol import Message, State
from netkit.errors import (
    CheckFailed,
    ConfigError,
    ConnectError,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
    TLSError,
)
from netkit.net import runtime
from netkit.net.connect import open_stream
from netkit.net.datagram import BATCH, MAX_UDP_PAYLOAD
from netkit.net.echo import EchoClientConnection, EchoConnection, echo_once
from netkit.net.protocols import StreamProtocol
from netkit.net.runtime import ShutdownSignal, run_until_signal
from netkit.net.server import Server, StreamServer, make_listener, serve_until_signal
from netkit.net.sockets import (
    SocketOptions,
    create_udp_socket,
    describe,
    listener_address,
    raise_nofile_limit,
)
from netkit.net.workers import describe_exit, fork_worker
from netkit.net.ws import WebSocketClientConnection, WSTimeouts, connect_ws

perf_ns = time.perf_counter_ns

# The verification pattern: byte i of every payload is i mod 251 (a prime, so a payload
# shifted by a few bytes, or by a multiple of 256, does not match itself).
_PATTERN_PERIOD = 251
# Largest pattern buffer kept for comparing and sending batches (payload x pipeline).
_MAX_BATCH_BYTES = 4 << 20


def make_payload(size: int) -> bytes:
    """The payload every echo request carries: ``size`` bytes of the verification pattern."""
    period = bytes(range(_PATTERN_PERIOD))
    return (period * (size // _PATTERN_PERIOD + 1))[:size]


def classify(exc: BaseException) -> str:
    """The error kind of an exception, for the per-kind counts (``refused``, ``reset`` ...)."""
    cause = exc.__cause__ if isinstance(exc, NetkitError) and exc.__cause__ else exc
    if isinstance(cause, ConnectionRefusedError):
        return "refused"
    if isinstance(cause, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, OperationTimeout | TimeoutError):
        return "timeout"
    if isinstance(exc, TLSError) or isinstance(cause, ssl.SSLError):
        return "tls"
    if isinstance(exc, CheckFailed):
        return "mismatch"
    if isinstance(exc, PeerProtocolError):
        return "protocol"
    if isinstance(exc, ConnectionLost):
        return "reset" if "reset" in str(exc) else "closed"
    if isinstance(exc, ConnectError) and "refused" in str(exc):
        return "refused"
    return "connect"


def transport_name(target: Endpoint, tls: bool) -> str:
    """``tcp``, ``tls``, ``unix``, ``udp``, ``ws`` or ``wss`` (``+unix`` for WebSocket on Unix)."""
    if isinstance(target, WSURL):
        return ("wss" if target.secure else "ws") + ("+unix" if target.unix_path else "")
    if isinstance(target, UDPEndpoint):
        return "udp"
    base = "unix" if isinstance(target, UnixEndpoint) else "tcp"
    return f"{base}+tls" if tls and base == "unix" else ("tls" if tls else base)


# --- the shared state of one worker --------------------------------------------------------


class Run:
    """What every connection of one worker shares: the result, the clock and the budget.

    Attributes:
        recording: False during the warm-up: nothing is counted then.
        stopping: the run is over: send nothing more, and closes are not errors.
        outstanding: requests sent and not yet answered, over all connections.
    """

    def __init__(self, plan: LoadPlan, result: BenchResult) -> None:
        self.plan = plan
        self.result = result
        self.latency = result.latency
        self.recording = plan.warmup <= 0
        self.stopping = False
        self.start_ns = perf_ns()
        self.measure_start_ns = self.start_ns
        self.last_done_ns = self.start_ns
        self.budget = plan.requests
        self.outstanding = 0
        self.timeout_ns = int(plan.timeout * 1e9)
        self.ever_connected = False
        self.fatal: NetkitError | None = None
        # True once the end of the run has counted every request still unanswered: a
        # connection that ends after that has nothing left to count.
        self.settled = False
        self.changed = asyncio.Event()  # budget used up, nothing outstanding, or fatal error
        self.halted = asyncio.Event()  # set by halt()

    def halt(self) -> None:
        """End the run: nothing more is sent, and closes are no longer errors."""
        self.stopping = True
        self.halted.set()

    def take(self, n: int) -> int:
        """Reserve up to ``n`` requests from the ``--requests`` budget; returns how many."""
        if self.budget is None or not self.recording:
            return n
        n = min(n, self.budget)
        self.budget -= n
        return n

    @property
    def exhausted(self) -> bool:
        """True when a ``--requests`` budget is used up and every request was answered."""
        return self.budget == 0 and self.outstanding <= 0

    def error(
        self,
        exc: BaseException | str,
        kind: str | None = None,
        count: int = 1,
        *,
        late: bool = False,
    ) -> None:
        """Count an error while recording; once stopping only with ``late`` (closes at the
        end of a run are not errors, requests left unanswered are)."""
        if not self.recording or (self.stopping and not late):
            return
        if isinstance(exc, BaseException):
            kind = kind or classify(exc)
            message = str(exc) or type(exc).__name__
        else:
            message = exc
        self.result.add_error(kind or "connect", message, count)

    def lost(self, count: int, cause: BaseException | tuple[str, str] | None = None) -> None:
        """``count`` requests in flight will never be answered (their connection ended).

        During the run, the close that ended the connection is the error counted. Once the
        run is over the close itself is no error, but each request it still owed an answer
        is one (``cause`` says which kind): a request outstanding at the end of a run is
        never dropped, or a server that hangs would pass every gate.
        """
        if count > 0 and self.stopping and not self.settled and cause is not None:
            if isinstance(cause, tuple):
                self.error(cause[0], cause[1], count, late=True)
            else:
                self.error(cause, None, count, late=True)
        self.outstanding -= count
        if self.exhausted:
            self.changed.set()

    def attempt_failed(self, exc: NetkitError) -> None:
        """A ``connect`` scenario attempt failed; one begun during the run and ending after
        it still counts (it was a request outstanding at the end)."""
        if self.stopping:
            if not self.settled:
                self.error(exc, late=True)
        else:
            self.connect_failed(exc)

    def connect_failed(self, exc: NetkitError) -> None:
        """A connection attempt failed: fatal if none ever succeeded, else counted."""
        if not self.ever_connected and not self.stopping:
            self.fatal = self.fatal or exc
            self.changed.set()
        else:
            self.error(exc)


@dataclass
class Slot:
    """One connection's place in the run; it outlives reconnections.

    Attributes:
        issued: open loop: how many of this slot's scheduled requests were sent.
    """

    index: int
    pacing: Pacing | None
    issued: int = 0


# --- the request engine ----------------------------------------------------------------------


class RequestEngine:
    """Closed- and open-loop request scheduling for one connection (a mixin).

    Subclasses implement :meth:`transmit` (send ``n`` requests now) and call :meth:`completed`
    when responses were verified, :meth:`lose_in_flight` when the connection is gone.
    ``sent`` holds the send time of every request in flight, oldest first: the real send time
    in closed loop, the intended one in open loop.
    """

    run: Run
    slot: Slot
    pipeline: int
    sent: deque[int]
    in_flight: int
    active: bool
    _pace_timer: asyncio.TimerHandle | None

    def init_engine(self, run: Run, slot: Slot) -> None:
        """Set up the engine's state (call from ``__init__``)."""
        self.run, self.slot = run, slot
        self.pipeline = run.plan.pipeline
        self.sent = deque()
        self.in_flight = 0
        self.active = False
        self._pace_timer = None

    def transmit(self, n: int) -> None:
        """Send ``n`` requests now."""
        raise NotImplementedError

    def start_requests(self) -> None:
        """The connection is ready: start sending."""
        self.active = True
        self.run.ever_connected = True
        self.pump()

    def pump(self) -> None:
        """Send every request that may be sent now, and arm the timer for the next one."""
        run = self.run
        if run.stopping or not self.active:
            return
        free = self.pipeline - self.in_flight
        pacing = self.slot.pacing
        if pacing is None:  # closed loop
            if free > 0:
                n = run.take(free)
                if n:
                    self.sent.extend(repeat(perf_ns(), n))
                    self._send(n)
            return
        now = perf_ns()
        slot = self.slot
        due = pacing.due_by(run.start_ns, now) - slot.issued
        if due > 0 and free > 0:
            n = run.take(min(due, free))
            late = 0
            for k in range(slot.issued, slot.issued + n):
                intended = pacing.due_at(run.start_ns, k)
                self.sent.append(intended)
                if now - intended > LATE_TOLERANCE_NS:
                    late += 1
            if late and run.recording:
                run.result.late += late
            slot.issued += n
            if n:
                self._send(n)
            due -= n
        if due <= 0 and self._pace_timer is None:
            wait = (pacing.due_at(run.start_ns, slot.issued) - now) / 1e9
            self._pace_timer = asyncio.get_running_loop().call_later(max(0.0, wait), self._tick)
        # Otherwise the pipeline is full: completed() pumps again.

    def _send(self, n: int) -> None:
        self.in_flight += n
        self.run.outstanding += n
        self.transmit(n)

    def _tick(self) -> None:
        self._pace_timer = None
        self.pump()

    def completed(self, n: int) -> None:
        """``n`` responses (the oldest in flight) arrived and were verified."""
        now = perf_ns()
        run = self.run
        sent = self.sent
        if run.recording:
            record = run.latency.record
            for _ in range(n):
                record(now - sent.popleft())
            run.result.requests += n
        else:
            for _ in range(n):
                sent.popleft()
        self.in_flight -= n
        run.outstanding -= n
        run.last_done_ns = now
        if run.budget is not None and run.exhausted:
            run.changed.set()
        self.pump()

    def timed_out(self, now: int) -> bool:
        """True when the oldest request in flight has waited longer than the timeout."""
        return bool(self.sent) and now - self.sent[0] > self.run.timeout_ns

    def lose_in_flight(self, cause: BaseException | tuple[str, str] | None = None) -> None:
        """The connection is gone: its requests in flight are lost (see :meth:`Run.lost`
        for how ``cause``, what ended it, is counted), and its timer stops."""
        self.active = False
        self.stop_timer()
        if self.in_flight:
            self.run.lost(self.in_flight, cause)
        self.in_flight = 0
        self.sent.clear()

    def stop_timer(self) -> None:
        """The run is over: no more sends."""
        if self._pace_timer is not None:
            self._pace_timer.cancel()
            self._pace_timer = None


class Payload:
    """A request payload and the pattern buffers used to send and verify batches of it.

    Args:
        size: bytes per request.
        pipeline: the most requests sent in one batch.
    """

    def __init__(self, size: int, pipeline: int, *, chunked: bool = False) -> None:
        self.size = size
        # Chunked: requests are written and checked piece by piece against one chunk of the
        # pattern (a piece at request offset o is view[o % period:][:k]), so that memory does
        # not grow with the size of a request (see StreamEcho).
        self.chunked = chunked
        if chunked:
            self.data = make_payload(STREAM_CHUNK + _PATTERN_PERIOD)
            self.view = self.batch = memoryview(self.data)
            return
        self.data = make_payload(size)
        self.view = memoryview(self.data)
        reps = pipeline + 1 if size * (pipeline + 1) <= _MAX_BATCH_BYTES else 2
        self.batch = memoryview(self.data * reps)


# --- TCP / TLS / Unix echo ----------------------------------------------------------------


class StreamEcho(RequestEngine, StreamProtocol):
    """Echo requests over a byte stream; the echo is compared with the pattern as it arrives."""

    pause_reading_on_backpressure = False  # we write the constant pattern, never rbuf views

    def __init__(self, run: Run, slot: Slot, payload: Payload) -> None:
        StreamProtocol.__init__(self)
        self.init_engine(run, slot)
        self.payload = payload
        self._offset = 0  # position within the payload of the next byte expected
        # A chunked payload: whole requests still to write, the offset reached in the first.
        self._unsent = 0
        self._writing_at = 0
        self._writer: asyncio.Task[None] | None = None

    def on_connect(self) -> None:
        self.start_requests()

    def transmit(self, n: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # failed: on_close accounts for these requests
        p = self.payload
        nbytes = n * p.size
        if p.chunked:
            self._unsent += n
            if self._writer is None:
                self._writer = asyncio.get_running_loop().create_task(self._write_pieces())
        elif nbytes <= len(p.batch):
            self.write(p.batch[:nbytes])
        else:
            self.write(*repeat(p.view, n))
        if self.run.recording:
            self.run.result.bytes_sent += nbytes

    async def _write_pieces(self) -> None:
        """Write the requests of a chunked payload a piece at a time, as the socket takes
        them (a 1 GiB request held 1 GiB in the transport's buffer per connection)."""
        p = self.payload
        try:
            while self._unsent and self.transport is not None and not self.transport.is_closing():
                at = self._writing_at
                k = min(STREAM_CHUNK, p.size - at)
                start = at % _PATTERN_PERIOD
                self.write(p.view[start : start + k])
                at += k
                if at == p.size:
                    at = 0
                    self._unsent -= 1
                self._writing_at = at
                if self._write_paused:
                    await self.drain()
                else:
                    await asyncio.sleep(0)  # everything went to the kernel: let the loop run
        finally:
            self._writer = None

    def _stop_writing(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    def data_ready(self) -> None:
        view = self.rbuf.view()
        n = len(view)
        size = self.payload.size
        offset = self._offset
        if n > self.in_flight * size - offset:
            self.rbuf.consume(n)
            raise CheckFailed(f"{self.peer} sent more bytes than were sent to it")
        batch = self.payload.batch
        chunked = self.payload.chunked
        span = len(batch) - size  # any offset < size leaves this much pattern to compare
        done = 0
        while done < n:
            if chunked:  # up to the end of the request, one chunk at most
                k = min(n - done, size - offset, STREAM_CHUNK)
                start = offset % _PATTERN_PERIOD
            else:
                k = min(n - done, span)
                start = offset
            if view[done : done + k] != batch[start : start + k]:
                self.rbuf.consume(n)
                raise CheckFailed(f"echo from {self.peer} differs from what was sent")
            done += k
            offset = (offset + k) % size
        self.rbuf.consume(n)
        if self.run.recording:
            self.run.result.bytes_received += n
        complete = (self._offset + n) // size
        self._offset = offset
        if complete:
            self.completed(complete)

    def on_close(self, exc: Exception | None) -> None:
        self._stop_writing()
        cause = self.error or exc or (f"{self.peer} closed the connection", "closed")
        report_close(self.run, cause)
        self.lose_in_flight(cause)

    def finish(self) -> None:
        """Close at the end of the run."""
        self._stop_writing()
        self.stop_timer()
        self.close()


def report_close(run: Run, cause: BaseException | tuple[str, str]) -> None:
    """Count the error that ended a connection: an exception, or a (message, kind) pair for
    a close by the peer."""
    if isinstance(cause, tuple):
        run.error(*cause)
    else:
        run.error(cause)


def close_code_error(conn: WebSocketClientConnection) -> tuple[str, str]:
    """(message, kind) for a WebSocket closed by the peer: kind ``closed:CODE``."""
    reason = f": {conn.close_reason}" if conn.close_reason else ""
    return (
        f"{conn.peer} closed the connection with code {conn.close_code}{reason}",
        f"closed:{conn.close_code}",
    )


# --- WebSocket echo -----------------------------------------------------------------------


def _ws_handshake(url: WSURL) -> ClientHandshake:
    return ClientHandshake(url.host_header, url.resource, user=url.user, password=url.password)


def _ws_timeouts(plan: LoadPlan) -> WSTimeouts:
    """The load generator's WebSocket timeouts: the plan's for opening, no keepalive pings."""
    return WSTimeouts(open=plan.timeout, close=2.0, ping_interval=None, ping_timeout=None)


def _init_ws_driver(
    conn: WebSocketClientConnection, run: Run, payload: Payload, url: WSURL
) -> None:
    """The connection half of a WebSocket driver's ``__init__`` (echo and bulk alike)."""
    WebSocketClientConnection.__init__(
        conn,
        _ws_handshake(url),
        max_size=max(payload.size, 1 << 20),
        timeouts=_ws_timeouts(run.plan),
    )


class WSEcho(RequestEngine, WebSocketClientConnection):
    """Echo requests as binary WebSocket messages; each reply is compared with the payload."""

    def __init__(self, run: Run, slot: Slot, payload: Payload, url: WSURL) -> None:
        _init_ws_driver(self, run, payload, url)
        self.init_engine(run, slot)
        self.payload = payload
        self._replies = 0
        self._finishing = False
        self._close_counted = False

    def on_open(self) -> None:
        self.start_requests()

    def on_close_received(self, code: int, reason: str) -> None:
        # The server closed first, mid-run: that is the error, counted now, whenever (or
        # however) the TCP connection ends after it.
        if not self._finishing and not self._close_counted:
            self._close_counted = True
            self._complete_replies()  # echoes that arrived before the close frame count
            cause = close_code_error(self)
            report_close(self.run, cause)
            self.lose_in_flight(cause)

    def transmit(self, n: int) -> None:
        if self.transport is None or self.transport.is_closing() or self.ws.state is not State.OPEN:
            # Failed, or the server is closing (no data after a close frame, RFC 6455 5.5.1):
            # on_close accounts for these requests.
            return
        data = self.payload.data
        for _ in range(n):
            self.ws.send_binary(data)
        self.messages_out += n
        self.flush()
        if self.run.recording:
            self.run.result.bytes_sent += n * len(data)

    def on_message(self, message: Message) -> None:
        if message.data != self.payload.data:
            raise CheckFailed(f"echo from {self.peer} differs from what was sent")
        self._replies += 1

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        self._complete_replies()

    def _complete_replies(self) -> None:
        if self._replies:
            n, self._replies = self._replies, 0
            if self.run.recording:
                self.run.result.bytes_received += n * self.payload.size
            self.completed(n)

    def on_close(self, exc: Exception | None) -> None:
        super().on_close(exc)
        cause = self.error or exc or close_code_error(self)
        if not self._close_counted:
            report_close(self.run, cause)
        self.lose_in_flight(cause)

    def finish(self) -> None:
        """Start the closing handshake at the end of the run."""
        self._finishing = True
        self.stop_timer()
        self.start_close()


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


# --- stream (bulk) ---------------------------------------------------------------------------


class BulkSender:
    """Writes ``size``-byte writes as fast as the peer reads them (a mixin).

    A write may go out in pieces (:attr:`piece_size` bytes each, from one reusable chunk):
    a connection never needs a whole write in memory.
    """

    run: Run
    piece_size: int
    _task: asyncio.Task[None] | None
    _write_paused: bool

    def send_chunk(self, n: int) -> None:
        """Write the next ``n`` bytes (at most :attr:`piece_size`)."""
        raise NotImplementedError

    if TYPE_CHECKING:

        async def drain(self) -> None:
            """StreamProtocol's: wait until written data has left."""

    def start_bulk(self) -> None:
        """Start the sending loop."""
        self.run.ever_connected = True
        self._task = asyncio.get_running_loop().create_task(self._send_loop())

    async def _send_loop(self) -> None:
        run, size = self.run, self.run.plan.size
        piece = self.piece_size
        left = size  # of the current write
        while not run.stopping:
            n = min(piece, left)
            self.send_chunk(n)
            left -= n
            if run.recording:
                run.result.bytes_sent += n
                if not left:
                    run.result.requests += 1
            if not left:
                left = size
            if self._write_paused:
                await self.drain()
            else:
                await asyncio.sleep(0)  # everything went to the kernel: let the loop run

    def stop_bulk(self) -> None:
        """Stop the sending loop."""
        if self._task is not None:
            self._task.cancel()


class StreamBulk(BulkSender, StreamProtocol):
    """Bulk writes over TCP, TLS or a Unix socket; anything that comes back is counted."""

    pause_reading_on_backpressure = False

    def __init__(self, run: Run, slot: Slot, payload: Payload) -> None:
        StreamProtocol.__init__(self)
        # The payload is one STREAM_CHUNK at most (see Worker): larger writes go in pieces.
        self.run, self.slot, self.chunk = run, slot, payload.view
        self.piece_size = len(self.chunk)
        self._task = None

    def on_connect(self) -> None:
        self.start_bulk()

    def send_chunk(self, n: int) -> None:
        self.write(self.chunk[:n])

    def data_ready(self) -> None:
        n = len(self.rbuf)
        self.rbuf.consume(n)
        if self.run.recording:
            self.run.result.bytes_received += n

    def on_close(self, exc: Exception | None) -> None:
        self.stop_bulk()
        report_close(
            self.run, self.error or exc or (f"{self.peer} closed the connection", "closed")
        )

    def finish(self) -> None:
        """Close at the end of the run."""
        self.stop_bulk()
        self.close()


class WSBulk(BulkSender, WebSocketClientConnection):
    """Bulk binary messages over WebSocket (to ``ws-server --mode sink`` or an echo)."""

    def __init__(self, run: Run, slot: Slot, payload: Payload, url: WSURL) -> None:
        _init_ws_driver(self, run, payload, url)
        self.run, self.slot, self.chunk = run, slot, payload.data
        self.piece_size = len(self.chunk)  # one message is one write
        self._task = None

    def on_open(self) -> None:
        self.start_bulk()

    def send_chunk(self, n: int) -> None:
        self.send_message(self.chunk)

    def on_message(self, message: Message) -> None:
        if self.run.recording:
            self.run.result.bytes_received += len(message.data)

    def on_close(self, exc: Exception | None) -> None:
        super().on_close(exc)
        self.stop_bulk()
        report_close(self.run, self.error or exc or close_code_error(self))

    def finish(self) -> None:
        """Close at the end of the run."""
        self.stop_bulk()
        self.start_close()


# --- the worker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and how to connect.

    Attributes:
        endpoint: the parsed target.
        ssl_context: TLS for ``tcp``/``unix`` targets with TLS options, and for ``wss``.
        server_hostname: SNI and verification name override.
    """

    endpoint: Endpoint
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None

    @property
    def name(self) -> str:
        """The transport name, as reported."""
        return transport_name(self.endpoint, self.ssl_context is not None)


def new_result(plan: LoadPlan, target: Target, workers: int = 1) -> BenchResult:
    """An empty result for ``plan``."""
    return BenchResult(
        scenario=plan.scenario,
        target=str(target.endpoint),
        transport=target.name,
        connections=plan.connections,
        workers=workers,
        pipeline=plan.pipeline,
        size=plan.size,
        rate=plan.rate * plan.connections / plan.total_connections if plan.rate else None,
    )


class Worker:
    """Runs one plan on the running loop (see :func:`run_worker`)."""

    def __init__(self, plan: LoadPlan, target: Target) -> None:
        if isinstance(target.endpoint, UDPEndpoint):
            if plan.scenario != "echo":
                raise ConfigError(
                    f"--scenario {plan.scenario} needs a stream or WebSocket target; UDP supports echo"
                )
            if plan.size < HEADER_SIZE:
                raise ConfigError(
                    f"--size: UDP requests carry a {HEADER_SIZE}-byte header; give at least {HEADER_SIZE}"
                )
            if plan.size > MAX_UDP_PAYLOAD:
                raise ConfigError(f"--size: a UDP datagram holds at most {MAX_UDP_PAYLOAD} bytes")
        self.plan = plan
        self.target = target
        self.result = new_result(plan, target)
        self.run = Run(plan, self.result)
        byte_stream = not isinstance(target.endpoint, (WSURL, UDPEndpoint))
        if plan.scenario == "stream" and byte_stream:
            self.payload = Payload(min(plan.size, STREAM_CHUNK), 1)
        elif plan.scenario == "echo" and byte_stream and plan.size > STREAM_CHUNK:
            self.payload = Payload(plan.size, plan.pipeline, chunked=True)
        else:
            self.payload = Payload(plan.size, plan.pipeline)
        self.slots = [Slot(i, plan.pacing(i)) for i in range(plan.connections)]
        self.conns: set[Any] = set()

    # --- connecting ------------------------------------------------------------------

    async def _open(self, factory: Callable[[], Any]) -> Any:
        ep, target = self.target.endpoint, self.target
        if isinstance(ep, WSURL):
            return await connect_ws(
                ep,
                factory,
                ssl_context=target.ssl_context,
                server_hostname=target.server_hostname,
                timeout=self.plan.timeout,
            )
        assert isinstance(ep, TCPEndpoint | UnixEndpoint)
        return await open_stream(
            ep,
            factory,
            ssl_context=target.ssl_context,
            server_hostname=target.server_hostname,
            timeout=self.plan.timeout,
            options=SocketOptions(nodelay=True),
        )

    def _factory(self, slot: Slot) -> Callable[[], Any]:
        ep, run, payload = self.target.endpoint, self.run, self.payload
        bulk = self.plan.scenario == "stream"
        if isinstance(ep, WSURL):
            if bulk:
                return lambda: WSBulk(run, slot, payload, ep)
            return lambda: WSEcho(run, slot, payload, ep)
        if bulk:
            return lambda: StreamBulk(run, slot, payload)
        return lambda: StreamEcho(run, slot, payload)

    async def _slot_loop(self, slot: Slot) -> None:
        run = self.run
        backoff = 0.05
        while not run.stopping:
            try:
                if isinstance(self.target.endpoint, UDPEndpoint):
                    sock, _ = create_udp_socket(self.target.endpoint, bind=False)
                    conn: Any = DatagramEcho(run, slot, sock, self.plan.size)
                    conn.start_requests()
                else:
                    conn = await self._open(self._factory(slot))
            except NetkitError as exc:
                run.connect_failed(exc)
                if run.fatal is not None:
                    return
                await self._pause(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self.conns.add(conn)
            try:
                await conn.closed
            finally:
                self.conns.discard(conn)

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the run stops; returns True when it stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.run.halted.wait()
        return self.run.stopping

    # --- connect scenario ----------------------------------------------------------------

    async def _dial_once(self, seq: int) -> None:
        ep, plan = self.target.endpoint, self.plan
        data = self.payload.data
        async with asyncio.timeout(plan.timeout):
            if isinstance(ep, WSURL):
                url = ep
                ws = await self._open(
                    lambda: WebSocketClientConnection(
                        _ws_handshake(url),
                        timeouts=_ws_timeouts(plan),
                    )
                )
                if plan.exchange:
                    ws.send_message(data)
                    _, got = await ws.inbox.get()
                    if got != data:
                        raise CheckFailed(f"echo from {ws.peer} differs from what was sent")
                ws.start_close()
                await ws.closed
            else:
                conn = await self._open(EchoClientConnection)
                try:
                    if plan.exchange:
                        await echo_once(conn, seq, data, framed=False, timeout=plan.timeout)
                finally:
                    conn.close()
                await conn.closed
        if plan.exchange and self.run.recording:
            self.result.bytes_sent += len(data)
            self.result.bytes_received += len(data)

    async def _connect_loop(self, slot: Slot) -> None:
        run = self.run
        pacing = slot.pacing
        backoff = 0.0
        while not run.stopping:
            # After a failure, wait before the next attempt: a refusing server would
            # otherwise be hammered in a busy loop (the attempts would measure nothing new).
            if backoff and await self._pause(backoff):
                return
            if pacing is not None:
                intended = pacing.due_at(run.start_ns, slot.issued)
                wait = intended - perf_ns()
                if wait > 0:
                    if await self._pause(wait / 1e9):
                        return
                    # The loop's timer may fire up to 1 ms early (uvloop's clock has ms
                    # resolution): the attempt must not start before its intended time,
                    # which its latency is measured from.
                    while perf_ns() < intended:
                        await asyncio.sleep(0)
                elif -wait > LATE_TOLERANCE_NS and run.recording:
                    run.result.late += 1
                slot.issued += 1
            if not run.take(1):
                return
            start = intended if pacing is not None else perf_ns()
            run.outstanding += 1
            try:
                await self._dial_once(slot.issued)
            except (NetkitError, TimeoutError) as exc:
                run.outstanding -= 1
                if isinstance(exc, TimeoutError):
                    exc = OperationTimeout(f"connecting to {self.target.endpoint} timed out")
                run.attempt_failed(exc)
                if run.fatal is not None:
                    return
                backoff = min(max(backoff * 2, 0.05), 1.0)
                continue
            backoff = 0.0
            now = perf_ns()
            run.ever_connected = True
            run.outstanding -= 1
            run.last_done_ns = now
            if run.recording:
                run.latency.record(now - start)
                run.result.requests += 1
            if run.budget is not None and run.exhausted:
                run.changed.set()

    # --- the run ----------------------------------------------------------------------

    async def _watchdog(self) -> None:
        period = min(0.1, self.plan.timeout / 4)
        while not self.run.stopping:
            await asyncio.sleep(period)
            now = perf_ns()
            for conn in list(self.conns):
                if isinstance(conn, StreamProtocol) and isinstance(conn, RequestEngine):
                    if conn.timed_out(now):
                        conn.fail(
                            OperationTimeout(
                                f"no response from {conn.peer} within {self.plan.timeout:g}s"
                            )
                        )
                elif isinstance(conn, DatagramEcho):
                    conn.expire(now)

    async def _progress(self, report: Callable[[dict[str, Any]], None], every: float) -> None:
        while True:
            await asyncio.sleep(every)
            report(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """Counters so far, for a live view: requests, errors, bytes, running p99."""
        r = self.result
        return {
            "phase": "measure" if self.run.recording else "warmup",
            "requests": r.requests,
            "errors": r.error_count,
            "bytes": r.bytes_sent,
            "late": r.late,
            "p99_ns": r.latency.percentile(99),
        }

    async def _wait_for(self, seconds: float | None, stop: asyncio.Event) -> None:
        """Wait ``seconds`` (forever when None), until the budget is used up, a fatal error
        happens, or ``stop`` is set."""
        run = self.run
        deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set() and run.fatal is None:
                if run.recording and run.budget is not None and run.exhausted:
                    return
                changed = asyncio.ensure_future(run.changed.wait())
                left = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if left is not None and left <= 0:
                    changed.cancel()
                    return
                await asyncio.wait(
                    {changed, stopper}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                run.changed.clear()
        finally:
            stopper.cancel()

    async def execute(
        self,
        stop: asyncio.Event,
        progress: Callable[[dict[str, Any]], None] | None = None,
        progress_every: float = 0.5,
    ) -> BenchResult:
        """Run the plan to its end (or until ``stop`` is set) and return the result.

        Raises:
            NetkitError: no connection could be made at all (the first connect error).
        """
        plan, run = self.plan, self.run
        loop_fn = self._connect_loop if plan.scenario == "connect" else self._slot_loop
        tasks = [asyncio.create_task(loop_fn(slot)) for slot in self.slots]
        helpers = []
        if plan.scenario != "connect":
            helpers.append(asyncio.create_task(self._watchdog()))
        if progress is not None:
            helpers.append(asyncio.create_task(self._progress(progress, progress_every)))
        try:
            if plan.warmup > 0:
                await self._wait_for(plan.warmup, stop)
                run.recording = True
            run.measure_start_ns = run.last_done_ns = perf_ns()
            run.result.started_at = time.time()  # wall clock: bench merge compares runs by it
            await self._wait_for(plan.duration, stop)
            end_ns = perf_ns()
            if run.fatal is not None:
                raise run.fatal
            await self._finish(tasks, end_ns)
        finally:
            run.halt()
            for task in tasks + helpers:
                task.cancel()
            await asyncio.gather(*tasks, *helpers, return_exceptions=True)
            for conn in list(self.conns):
                with contextlib.suppress(Exception):
                    conn.abort()
        return self.result

    async def _finish(self, tasks: list[asyncio.Task[None]], end_ns: int) -> None:
        run, plan = self.run, self.plan
        # Requests due before the end that no connection got to send. One due in the last
        # LATE_TOLERANCE_NS may just not have had its turn yet (the duration's own timer
        # can fire first): it is not missed, as it would not have been late.
        cutoff = end_ns - LATE_TOLERANCE_NS
        for slot in self.slots:
            if slot.pacing is not None:
                run.result.missed += max(0, slot.pacing.due_by(run.start_ns, cutoff) - slot.issued)
        # Stop sending, and give the requests in flight the timeout to come back.
        run.halt()
        for conn in list(self.conns):
            if isinstance(conn, RequestEngine):
                conn.stop_timer()
            if isinstance(conn, BulkSender):
                conn.stop_bulk()
        drain_until = perf_ns() + run.timeout_ns
        if plan.scenario == "echo":
            while run.outstanding > 0 and perf_ns() < drain_until:
                run.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await run.changed.wait()
        elif plan.scenario == "connect":
            # Each attempt under way ends within its own timeout (and counts itself); the
            # slack covers the loop's timer granularity.
            await asyncio.wait(tasks, timeout=plan.timeout + 1.0)
        if run.outstanding > 0:
            # Never dropped: a hung server must fail the gate (issue 13 item 15).
            run.error(
                f"no response within {plan.timeout:g}s, before the end of the run",
                "timeout",
                run.outstanding,
                late=True,
            )
        run.settled = True
        if plan.scenario == "stream":
            last = end_ns
        elif plan.duration is not None:
            last = max(end_ns, run.last_done_ns)  # answers drained after the end count too
        else:
            last = run.last_done_ns
        run.result.duration_s = max(1e-9, (last - run.measure_start_ns) / 1e9)
        # Close politely; whatever does not close in time is aborted by the caller.
        pending = []
        for conn in list(self.conns):
            with contextlib.suppress(Exception):
                conn.finish()
            pending.append(conn.closed)
        if pending:
            await asyncio.wait(pending, timeout=2.0)


async def run_worker(
    plan: LoadPlan,
    target: Target,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    handle_signals: bool = True,
) -> BenchResult:
    """Run ``plan`` against ``target`` on the running loop; SIGINT/SIGTERM end it early.

    Raises:
        NetkitError: no connection could be made at all.
    """
    worker = Worker(plan, target)
    signals = run_until_signal() if handle_signals else contextlib.nullcontext(ShutdownSignal())
    async with signals as shutdown:
        return await worker.execute(shutdown.requested, progress)


# --- the embedded echo server ------------------------------------------------------------------


class EmbeddedEchoServer:
    """netkit's own TCP echo server (:class:`~netkit.net.server.StreamServer` serving
    :class:`~netkit.net.echo.EchoConnection`) on 127.0.0.1, for ``netkit bench`` without a
    target. No CLI is involved: the listeners are made here, then ``workers`` forked children
    (:func:`~netkit.net.workers.fork_worker`) serve them, one event loop each, sharing the port
    with SO_REUSEPORT as ``tcp-echo serve --workers N`` does.

    Processes rather than a thread of this one: the server must not share this process's GIL
    with the load it is measured under, it keeps one core per worker, and the bench workers
    fork after it starts, which is only safe from a process with one thread and no event loop.
    Call :meth:`start` before any event loop exists in this process.

    Args:
        workers: how many server processes.
        drain_timeout: how long :meth:`stop` lets open connections finish.
    """

    def __init__(self, *, workers: int = 1, drain_timeout: float = 10.0) -> None:
        self.workers = workers
        self.drain_timeout = drain_timeout
        self.pids: list[int] = []
        self.address = ""

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and return the address it listens on, once every worker serves.

        Raises:
            ConnectError: a worker did not start (why is in the message).
        """
        raise_nofile_limit()
        first = make_listener(TCPEndpoint("127.0.0.1", 0), reuse_port=self.workers > 1)
        socks = [first]
        bound = TCPEndpoint("127.0.0.1", first.getsockname()[1])
        socks += [make_listener(bound, reuse_port=True) for _ in range(self.workers - 1)]
        self.address = listener_address(first)
        ready_fd, ready_w = os.pipe()
        summary_fds: list[int] = []

        def serve(index: int) -> tuple[int, dict[str, Any]]:
            os.close(ready_fd)
            for other, sock in enumerate(socks):
                if other != index:
                    sock.close()

            def listening(_: Server) -> None:
                os.write(ready_w, b"1")
                os.close(ready_w)

            async def main() -> dict[str, Any]:
                server = StreamServer(socks[index], EchoConnection)
                await serve_until_signal(
                    server, drain_timeout=self.drain_timeout, on_listening=listening
                )
                return server.stats.as_dict()

            return 0, runtime.run(main)

        try:
            for index in range(self.workers):
                pid, summary_fd = fork_worker(index, serve, close=summary_fds)
                self.pids.append(pid)
                summary_fds.append(summary_fd)
        finally:
            os.close(ready_w)
            for sock in socks:  # the workers hold them now; bench's own workers must not
                sock.close()
            for fd in summary_fds:
                os.close(fd)
        try:
            self._wait_ready(ready_fd, timeout)
        finally:
            os.close(ready_fd)
        return self.address

    def _wait_ready(self, fd: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < self.workers:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.stop()
                raise ConnectError(f"the embedded echo server did not start within {timeout:g}s")
            chunk = os.read(fd, 64)
            if not chunk:  # every worker has closed its end: one ended before serving
                codes = self.stop()
                why = next((describe_exit(c) for c in codes if c), "ended before serving")
                raise ConnectError(f"the embedded echo server {why}")
            ready += len(chunk)

    def stop(self) -> list[int]:
        """Stop the workers (SIGTERM; SIGKILL when they have not ended ``drain_timeout`` + 1 s
        later) and return how each ended (``-N``: killed by signal N)."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout + 1.0
        codes = []
        for pid in self.pids:
            codes.append(_reap(pid, deadline))
        self.pids = []
        return codes

    def __enter__(self) -> EmbeddedEchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reap(pid: int, deadline: float) -> int:
    """Wait for child ``pid`` until ``deadline`` (monotonic), then SIGKILL it; its exit code."""
    with contextlib.suppress(OSError, AttributeError):  # a pidfd: readable once the child ends
        fd = os.pidfd_open(pid)
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.01)  # no pidfd (Linux before 5.3): poll

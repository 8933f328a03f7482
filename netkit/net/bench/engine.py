"""The request engine shared by every ``netkit bench`` driver: the run state of one worker
(:class:`Run`), connection slots, the closed- and open-loop :class:`RequestEngine`, the
verification payload, error classification and the bulk sending loop (:class:`BulkSender`)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING

from netkit.core.addresses import HTTPURL, WSURL, Endpoint, UDPEndpoint, UnixEndpoint
from netkit.core.bench.histogram import LATE_TOLERANCE_NS
from netkit.core.bench.plan import STREAM_CHUNK, LoadPlan, Schedule
from netkit.core.bench.result import BenchResult
from netkit.core.bench.stage_result import StageTally, empty_stages
from netkit.errors import (
    CheckFailed,
    ConnectError,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
    TLSError,
)

perf_ns = time.perf_counter_ns


# The verification pattern: byte i of every payload is i mod 251 (a prime, so a payload
# shifted by a few bytes, or by a multiple of 256, does not match itself).
PATTERN_PERIOD = 251
# Largest pattern buffer kept for comparing and sending batches (payload x pipeline).
_MAX_BATCH_BYTES = 4 << 20


def make_payload(size: int) -> bytes:
    """The payload every echo request carries: ``size`` bytes of the verification pattern."""
    period = bytes(range(PATTERN_PERIOD))
    return (period * (size // PATTERN_PERIOD + 1))[:size]


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


def transport_name(target: Endpoint | HTTPURL, tls: bool) -> str:
    """``tcp``, ``tls``, ``unix``, ``udp``, ``ws``, ``wss``, ``http`` or ``https`` (``+unix``
    for WebSocket and HTTP on Unix sockets)."""
    if isinstance(target, HTTPURL):
        return ("https" if target.secure else "http") + ("+unix" if target.unix_path else "")
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
        # --stages: each request and error is also filed under its stage.
        self.tally: StageTally | None = None
        if plan.stages is not None:
            share = plan.connections / plan.total_connections
            result.stages = empty_stages(plan.stages, share)
            self.tally = StageTally(plan.stages, result.stages, self.start_ns)
        self.end_ns: int | None = None  # when the measurement ended (a stream test drains after)

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
        if self.tally is not None:
            self.tally.error(perf_ns(), kind or "connect", count)

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
        wanted: ramping connections: whether the schedule wants this slot's connection
            open now (see :class:`~netkit.net.bench.ramp.ConnectionRamp`).
    """

    index: int
    pacing: Schedule | None
    issued: int = 0
    wanted: bool = True


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
    retiring: bool
    _pace_timer: asyncio.TimerHandle | None

    def init_engine(self, run: Run, slot: Slot) -> None:
        """Set up the engine's state (call from ``__init__``)."""
        self.run, self.slot = run, slot
        self.pipeline = run.plan.pipeline
        self.sent = deque()
        self.in_flight = 0
        self.active = False
        self.retiring = False  # ramping down: closes once its requests are answered
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
        if not self.slot.wanted:  # ramping down: send nothing more, close when answered
            self.retiring = True
            if not self.in_flight:
                self.active = False
                self.finish()
            return
        if self.retiring:
            self.retiring = False
        free = self.pipeline - self.in_flight
        slot = self.slot
        pacing = slot.pacing
        if pacing is None:  # closed loop
            if free > 0:
                n = run.take(free)
                if n == 1:  # the common case, once per request: _send, inline
                    self.sent.append(perf_ns())
                    self.in_flight += 1
                    run.outstanding += 1
                    self.transmit(1)
                elif n:
                    self.sent.extend(repeat(perf_ns(), n))
                    self._send(n)
            return
        now = perf_ns()
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
            tally = run.tally
            if tally is None:  # the hot path stays as lean as it was
                if n == 1:
                    record(now - sent.popleft())
                else:
                    for _ in range(n):
                        record(now - sent.popleft())
            else:
                for _ in range(n):
                    t = sent.popleft()
                    record(now - t)
                    tally.completed(now, t)
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

    def rejected(self, n: int) -> None:
        """``n`` answers (the oldest in flight) arrived but failed a check: the caller counts
        them as errors; they are neither completed requests nor latency samples."""
        sent = self.sent
        for _ in range(n):
            sent.popleft()
        self.in_flight -= n
        run = self.run
        run.outstanding -= n
        run.last_done_ns = perf_ns()
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

    def finish(self) -> None:
        """Close the connection politely (at the end of the run, or when retired)."""
        raise NotImplementedError

    def report_close(self, cause: BaseException | tuple[str, str]) -> None:
        """Count the error that ended this connection, unless it was retired (a ramp down
        closed it: no error)."""
        if not self.retiring:
            report_close(self.run, cause)

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
            self.data = make_payload(STREAM_CHUNK + PATTERN_PERIOD)
            self.view = self.batch = memoryview(self.data)
            return
        self.data = make_payload(size)
        self.view = memoryview(self.data)
        reps = pipeline + 1 if size * (pipeline + 1) <= _MAX_BATCH_BYTES else 2
        self.batch = memoryview(self.data * reps)


def report_close(run: Run, cause: BaseException | tuple[str, str]) -> None:
    """Count the error that ended a connection: an exception, or a (message, kind) pair for
    a close by the peer."""
    if isinstance(cause, tuple):
        run.error(*cause)
    else:
        run.error(cause)


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
    unrecorded = 0  # bytes written during the warm-up (a stream test subtracts them)

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
            if left == size and not run.take(1):
                return  # --requests: every write is taken (the last one ends the run)
            n = min(piece, left)
            self.send_chunk(n)
            left -= n
            if run.recording:
                run.result.bytes_sent += n
                if not left:
                    run.result.requests += 1
                    if run.budget == 0:
                        run.changed.set()
            else:
                self.unrecorded += n
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

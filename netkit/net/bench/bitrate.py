"""The ``netkit bench udp://... -b`` driver: :class:`DatagramBitrate` paces sequenced probes
at one connection's share of the bitrate to a sink (``udp-echo serve --mode sink``) and asks it,
at the end, what it received (:mod:`netkit.core.bench.bitrate`)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from dataclasses import replace

from netkit.core.bench.bitrate import (
    PACING_TIMER_S,
    Control,
    ControlKind,
    ReceiverCounts,
    SenderLedger,
    parse_control,
)
from netkit.core.bench.plan import Schedule
from netkit.core.probe import MAGIC, make_probe
from netkit.errors import ConnectError, OperationTimeout
from netkit.net.bench.engine import Run, Slot
from netkit.net.datagram import BATCH, MAX_UDP_PAYLOAD, StampedReceiver
from netkit.net.sockets import describe

perf_ns = time.perf_counter_ns

# How long a control request waits for its answer before it is sent again (the whole
# exchange is bounded by the run's --timeout).
RESEND_AFTER = 0.2
# Datagrams sent at most in one go when the sender is behind its schedule: the loop stays
# responsive, and a sender that cannot keep up shows as missed datagrams, not as a burst.
MAX_BURST = 1024
SINK_HINT = "run 'netkit udp-echo serve --mode sink' there"
# --reverse: how often the REVERSE is resent to keep the sink sending (it stops after 1 s).
KEEPALIVE_EVERY = 0.25
# Requests: an answer of one of these kinds with our token is our own request echoed back.
_REQUESTS = (ControlKind.START, ControlKind.REPORT, ControlKind.REVERSE, ControlKind.STOP)


class DatagramBitrate:
    """One connection of a UDP bitrate run: START, paced datagrams, then REPORT.

    Args:
        run: the worker's shared state (``run.result.datagrams`` gets the receiver's counts).
        slot: this connection's place; ``slot.pacing`` is its datagram schedule.
        sock: a connected, non-blocking UDP socket.
        size: bytes per datagram.
    """

    def __init__(
        self, run: Run, slot: Slot, sock: socket.socket, size: int, *, reverse: bool = False
    ) -> None:
        assert slot.pacing is not None
        self.reverse = reverse
        self.ledger: SenderLedger | None = None  # --reverse: what arrived here
        self.run = run
        self.slot = slot
        self.pacing: Schedule = slot.pacing
        self.sock = sock
        self.size = size
        self.peer = describe(sock.getpeername())
        self.token = secrets.randbits(64)
        self.sent = 0
        self.start_ns = 0
        self.reported = False
        self._answer: asyncio.Future[Control] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._buf = bytearray(MAX_UDP_PAYLOAD + 1)
        self._view = memoryview(self._buf)
        self._receiver = StampedReceiver(sock, self._buf)
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), self._readable)

    def begin(self) -> None:
        """Start the test: the START exchange, then the paced sending until the run stops."""
        self._task = asyncio.create_task(self._main())

    async def _main(self) -> None:
        run = self.run
        try:
            if self.reverse:
                request = await self._ask_reverse()
            else:
                await self._exchange(Control(ControlKind.START, self.token), ControlKind.STARTED)
        except (ConnectError, OperationTimeout) as exc:
            run.connect_failed(exc)
            self.abort()
            return
        run.ever_connected = True
        if self.reverse:
            await self._keep_alive(request)
        else:
            await self._send_paced()

    async def _ask_reverse(self) -> Control:
        """The REVERSE exchange: the cookie, then the start; returns the request to resend."""
        plan = self.run.plan
        assert plan.bitrate is not None
        bits = round(plan.bitrate / plan.total_connections)
        ask = Control(ControlKind.REVERSE, self.token, bitrate=bits, size=self.size)
        answer = await self._exchange(ask, ControlKind.COOKIE)
        request = replace(ask, cookie=answer.cookie)
        self.ledger = SenderLedger(self.token)
        self.start_ns = perf_ns()
        if answer.kind is ControlKind.COOKIE:
            answer = await self._exchange(request, ControlKind.STARTED)
        if answer.kind is not ControlKind.STARTED:
            raise ConnectError(
                f"the sink at udp://{self.peer} refused a reverse test (it runs all it may at"
                " once, or the size is not a datagram's)"
            )
        return request

    async def _keep_alive(self, request: Control) -> None:
        """--reverse: resend the REVERSE while the run goes on, or the sink stops sending."""
        data = request.encode()
        while not self.run.stopping:
            with contextlib.suppress(OSError):
                self.sock.send(data)
            await asyncio.sleep(KEEPALIVE_EVERY)

    async def _send_paced(self) -> None:
        run, pacing, sock, size = self.run, self.pacing, self.sock, self.size
        self.start_ns = perf_ns()
        # The schedule is the run's, from its start: datagrams due while the START exchange
        # went on leave at once (at most MAX_BURST at a time), so the bitrate over the run is
        # the target, and what a starved sender never sent counts as missed at the end.
        start = run.start_ns
        while not run.stopping:
            due = min(pacing.due_by(start, perf_ns()) - self.sent, MAX_BURST)
            n = run.take(due) if due > 0 else 0
            sent = 0
            try:
                for _ in range(n):
                    sock.send(make_probe(self.sent, perf_ns(), size))
                    self.sent += 1
                    sent += 1
            except BlockingIOError:
                await self._wait_writable()  # the socket's buffer is full: wait, send later
            except OSError as exc:
                run.error(ConnectError(f"sending to udp://{self.peer}: {exc.strerror or exc}"))
                await asyncio.sleep(RESEND_AFTER)
            if n - sent and run.budget is not None:
                run.budget += n - sent  # reserved and not sent: the next round sends them
            self.slot.issued = self.sent
            if run.recording and sent:
                run.result.requests += sent
                run.result.bytes_sent += sent * size
            if run.budget == 0:
                run.changed.set()
                return
            wait = (pacing.due_at(start, self.sent) - perf_ns()) / 1e9
            await asyncio.sleep(max(wait, PACING_TIMER_S) if wait > 0 else 0.0)

    async def _wait_writable(self) -> None:
        loop = asyncio.get_running_loop()
        self._writable = loop.create_future()
        loop.add_writer(self.sock.fileno(), self._on_writable)
        try:
            await self._writable
        finally:
            loop.remove_writer(self.sock.fileno())

    def _on_writable(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def _exchange(self, request: Control, expect: ControlKind) -> Control:
        """Send ``request`` until an answer of ``expect`` (or UNKNOWN) comes, within the
        run's timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.run.plan.timeout
        data = request.encode()
        while (left := deadline - loop.time()) > 0:
            self._answer = loop.create_future()
            try:
                self.sock.send(data)
            except ConnectionRefusedError:
                raise self._refused() from None
            except OSError:
                pass  # not sent: the next round sends it again
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(RESEND_AFTER, left)):
                    answer = await self._answer
                    if answer.kind in (expect, ControlKind.UNKNOWN):
                        return answer
                    # a late answer to an earlier request (a resent START): ask again
        what = "start" if request.kind is ControlKind.START else "report"
        raise OperationTimeout(
            f"no {what} answer from a netkit sink at udp://{self.peer} within"
            f" {self.run.plan.timeout:g}s ({SINK_HINT})"
        )

    def _readable(self) -> None:
        for _ in range(BATCH):
            try:
                n, _, arrived = self._receiver.recv()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                n = -1  # ICMP port unreachable: an answer of its own
            except OSError:
                continue
            if self.ledger is not None and n > 0 and self._buf.startswith(MAGIC):
                self._received(n, arrived)
                continue
            waiting = self._answer
            if waiting is None or waiting.done():
                continue
            if n < 0:
                waiting.set_exception(self._refused())
                continue
            answer = parse_control(self._view[:n])
            if answer is not None and answer.token == self.token:
                if answer.kind in _REQUESTS:
                    waiting.set_exception(self._echoed())
                else:
                    waiting.set_result(answer)
            elif self._buf.startswith(MAGIC):
                waiting.set_exception(self._echoed())

    def _received(self, n: int, arrived_ns: int) -> None:
        """--reverse: a test datagram from the sink, counted here as a sink counts."""
        assert self.ledger is not None
        self.ledger.datagram(self._view[:n], arrived_ns)
        if self.run.recording:
            self.run.result.requests += 1

    def _refused(self) -> ConnectError:
        return ConnectError(f"nothing listens on udp://{self.peer} (ICMP port unreachable)")

    def _echoed(self) -> ConnectError:
        return ConnectError(
            f"udp://{self.peer} sent our datagrams back: it is an echo server, not a sink"
            f" ({SINK_HINT})"
        )

    async def collect(self) -> None:
        """Ask the sink what it received (once the sending stopped) and add it to the result;
        no answer within the timeout is a ``timeout`` error."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.start_ns or self.reported:
            return
        run = self.run
        if self.reverse:
            request, expect = Control(ControlKind.STOP, self.token), ControlKind.STOPPED
        else:
            request = Control(ControlKind.REPORT, self.token, sent=self.sent)
            expect = ControlKind.COUNTS
        try:
            answer = await self._exchange(request, expect)
        except (ConnectError, OperationTimeout) as exc:
            run.error(exc, "timeout" if isinstance(exc, OperationTimeout) else None, late=True)
            return
        if answer.kind is ControlKind.STOPPED and self.ledger is not None:
            self.reported = True
            self.sent = answer.sent
            self._add(self.ledger.counts(answer.sent))
            run.result.bytes_sent += answer.sent * self.size
            return
        if answer.kind is ControlKind.UNKNOWN or answer.counts is None:
            run.error(
                f"the sink at udp://{self.peer} has no counts for this stream (it forgot it:"
                " too many senders, or it restarted)",
                "protocol",
                late=True,
            )
            return
        self.reported = True
        self._add(answer.counts)

    def _add(self, counts: ReceiverCounts) -> None:
        tally = self.run.result.datagrams
        assert tally is not None
        tally.add_counts(self.sent, counts)
        self.run.result.bytes_received += counts.bytes

    def finish(self) -> None:
        """Stop reading and close the socket."""
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self) -> None:
        """The same as :meth:`finish`."""
        self.finish()

"""``netkit bench`` drivers for byte streams (TCP, TLS, Unix): :class:`StreamEcho` verifies
the echoed stream against the payload pattern without copying it; :class:`StreamBulk` writes
as fast as the peer reads; :class:`StreamTest` runs iperf3's modes (forward, reverse, bidir)
against ``tcp-echo serve --mode stream`` and takes the server's counts at the end."""

from __future__ import annotations

import asyncio
import time
from itertools import repeat

from netkit.core.bench.plan import STREAM_CHUNK
from netkit.core.streamtest import (
    HELLO_LIMIT,
    RESULT_SIZE,
    SERVER_HINT,
    Answer,
    Direction,
    StreamReport,
    hello,
    parse_answer,
    take_line,
)
from netkit.errors import (
    CheckFailed,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
)
from netkit.net.bench.engine import (
    PATTERN_PERIOD,
    BulkSender,
    Payload,
    RequestEngine,
    Run,
    Slot,
    report_close,
)
from netkit.net.protocols import StreamProtocol

perf_ns = time.perf_counter_ns

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
                start = at % PATTERN_PERIOD
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
                start = offset % PATTERN_PERIOD
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


# Where a stream test's reads land: counted, then dropped (one buffer for every connection).
_SCRATCH = memoryview(bytearray(256 << 10))


class StreamTest(BulkSender, StreamProtocol):
    """One connection of a stream test (:mod:`netkit.core.streamtest`): the hello, then bulk
    writes (forward, bidir) and counted reads (reverse, bidir); at the end a half-close, and
    the server's counts from its result record.

    A server that echoes the hello is an echo server: forward then goes on as
    :class:`StreamBulk` would (the echo is what comes back, the server reports nothing);
    reverse and bidir are refused, saying which server to start.
    """

    pause_reading_on_backpressure = False

    def __init__(self, run: Run, slot: Slot, payload: Payload, direction: Direction) -> None:
        StreamProtocol.__init__(self, max_buffer=HELLO_LIMIT)
        self.run, self.slot, self.chunk = run, slot, payload.view
        self.piece_size = len(self.chunk)
        self._task = None
        self.direction = direction
        self._hello = hello(direction)
        self.answer: Answer | None = None
        self.data_in = 0  # data bytes read, warm-up included
        self.unrecorded_in = 0  # of which during the warm-up
        self._tail = b""  # the last bytes read: the result record, once the server closed
        self._fin_sent = False
        self._reported = False  # the server's counts arrived
        self._refusal = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def refused(self) -> bool:
        """True when the server did not take the stream test (no answer, or a refusal)."""
        return self._refusal

    @property
    def data_out(self) -> int:
        """Data bytes written (the hello excluded), warm-up included."""
        return self.bytes_out - len(self._hello)

    def on_connect(self) -> None:
        self.write(self._hello)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.run.plan.timeout, self._no_answer)

    def _no_answer(self) -> None:
        self._refused(
            OperationTimeout(
                f"{self.peer} did not answer the stream test hello within"
                f" {self.run.plan.timeout:g}s ({SERVER_HINT})"
            )
        )

    def _refused(self, exc: NetkitError) -> None:
        """The server is not a stream test server: fatal before any connection worked."""
        if self.error is None:
            self.error = exc
            self._refusal = True
            self.run.connect_failed(exc)
        self.abort()

    # --- reading -----------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.answer is None:
            return StreamProtocol.get_buffer(self, sizehint)
        return _SCRATCH

    def buffer_updated(self, nbytes: int) -> None:
        if self.answer is None:
            StreamProtocol.buffer_updated(self, nbytes)  # the answer, into rbuf
        elif self.error is None:
            self.bytes_in += nbytes
            self._count(_SCRATCH[:nbytes])

    def _count(self, view: memoryview) -> None:
        n = len(view)
        self.data_in += n
        if self.run.recording:
            self.run.result.bytes_received += n
        else:
            self.unrecorded_in += n
        if self.answer is Answer.OK:
            self._tail = (self._tail + bytes(view[-RESULT_SIZE:]))[-RESULT_SIZE:]

    def data_ready(self) -> None:
        view = self.rbuf.view()
        try:
            end = take_line(view)
            if end is None:
                return
            self.answer = parse_answer(bytes(view[:end]), self._hello, self.peer)
        except PeerProtocolError as exc:
            self.rbuf.consume(len(view))
            self._refused(exc)
            return
        if self._timer is not None:
            self._timer.cancel()
        if self.answer is Answer.ECHO and self.direction is not Direction.FORWARD:
            self.rbuf.consume(len(view))
            self._refused(
                PeerProtocolError(
                    f"{self.peer} echoed the stream test hello: it is an echo server, which"
                    f" cannot send a {self.direction} stream; {SERVER_HINT}"
                )
            )
            return
        rest = bytes(view[end:])  # data that came with the answer (small: a copy is fine)
        self.rbuf.consume(len(view))
        self.rbuf.release()
        if rest:
            self._count(memoryview(rest))
        self.run.ever_connected = True
        if self.direction.client_sends:
            self.start_bulk()

    def send_chunk(self, n: int) -> None:
        self.write(self.chunk[:n])

    # --- the end -------------------------------------------------------------------------

    def finish(self) -> None:
        """The run is over: stop writing, half-close, and wait for the server's counts (an
        echo server is just closed)."""
        self.stop_bulk()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.answer is None and not self._refusal:
            self._refusal = True  # counted here, not again as a close
            self.run.error(
                OperationTimeout(
                    f"{self.peer} did not answer the stream test hello before the run's end"
                    f" ({SERVER_HINT})"
                ),
                late=True,
            )
        if self.answer is Answer.OK and transport.can_write_eof():
            self._fin_sent = True
            transport.write_eof()
        else:
            self.close()

    def on_eof(self) -> bool | None:
        if self.answer is not Answer.OK:
            return None
        try:
            report = StreamReport.decode(self._tail, self.peer)
        except PeerProtocolError as exc:
            self.error = self.error or exc
            return None
        self._tail = b""
        self.data_in -= RESULT_SIZE  # the record was counted as data as it arrived
        if self.run.recording:
            self.run.result.bytes_received -= RESULT_SIZE
        else:
            self.unrecorded_in -= RESULT_SIZE
        self._settle(report)
        return None

    def _settle(self, report: StreamReport) -> None:
        """Check the server's counts against ours, and add them to the result."""
        run, result = self.run, self.run.result
        self._reported = True
        if not self._fin_sent:
            self.error = self.error or ConnectionLost(
                f"{self.peer} ended the stream test before the run's end (it received"
                f" {report.received:,} bytes and sent {report.sent:,})"
            )
        elif report.received != self.data_out or report.sent != self.data_in:
            self.error = self.error or CheckFailed(
                f"stream test counts differ: {self.peer} received {report.received:,} of the"
                f" {self.data_out:,} bytes sent to it, and sent {report.sent:,} where"
                f" {self.data_in:,} arrived"
            )
        if not run.recording:
            return
        if run.end_ns is not None:  # the receivers' last bytes arrived by now
            result.drain_s = max(result.drain_s, (time.perf_counter_ns() - run.end_ns) / 1e9)
        result.peer_received = (result.peer_received or 0) + report.received - self.unrecorded
        result.peer_sent = (result.peer_sent or 0) + report.sent - self.unrecorded_in

    def on_close(self, exc: Exception | None) -> None:
        self.stop_bulk()
        if self._timer is not None:
            self._timer.cancel()
        if self._refusal:
            return  # counted (or made the run's error) when it was refused
        if self._reported and self.error is None:
            return  # the server's counts arrived and matched
        if self._fin_sent and self.error is None and exc is None:
            exc = OperationTimeout(f"{self.peer} sent no stream test counts after the run's end")
        cause = self.error or exc or (f"{self.peer} closed the connection", "closed")
        if self._fin_sent:
            # After the run's end only a missing or wrong report is an error (late=True).
            kind = None if isinstance(cause, BaseException) else cause[1]
            message = cause if isinstance(cause, BaseException) else cause[0]
            self.run.error(message, kind, late=True)
        else:
            report_close(self.run, cause)

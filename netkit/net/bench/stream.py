"""``netkit bench`` drivers for byte streams (TCP, TLS, Unix): :class:`StreamEcho` verifies
the echoed stream against the payload pattern without copying it; :class:`StreamBulk` writes
as fast as the peer reads."""

from __future__ import annotations

import asyncio
import time
from itertools import repeat

from netkit.core.bench.plan import STREAM_CHUNK
from netkit.errors import (
    CheckFailed,
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
        self.report_close(cause)
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

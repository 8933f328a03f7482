"""The server side of the stream test (``netkit tcp-echo serve --mode stream``): one
connection is a sink, a source or both, as its client's hello asks, and ends with the
server's counts (the protocol is in :mod:`netkit.core.streamtest`).

Data read is counted and dropped: the kernel writes it into one scratch buffer shared by
every connection (nothing is kept, so nothing is copied). Data sent is one constant buffer,
written as fast as the socket takes it, one write per loop turn so that a connection's reads
keep pace with its writes and one fast client never starves the others.
"""

from __future__ import annotations

import asyncio
import time

from netkit.core.streamtest import (
    HELLO_LIMIT,
    OK_LINE,
    Direction,
    StreamReport,
    error_line,
    parse_hello,
    take_line,
)
from netkit.errors import PeerProtocolError
from netkit.net.idle import IdleTimer
from netkit.net.server import ServerConnection

# One read's worth: large reads cost fewer loop turns per byte (iperf3 reads 128 KiB).
SCRATCH_SIZE = 256 << 10
# What a source writes: constant, so a transport may hold views of it for as long as it likes.
SOURCE_CHUNK = 256 << 10
# Writes per loop turn before a source lets the loop run: one, so that in --bidir its reads
# keep pace with its writes (8 gave 150 MB/s one way and 1,000 the other), and no fast client
# starves the others.
WRITES_PER_TURN = 1

_scratch = memoryview(bytearray(SCRATCH_SIZE))
_source = memoryview(bytes(SOURCE_CHUNK))


class StreamTestConnection(ServerConnection):
    """One stream test: read the hello, answer, then sink and/or source until the client's
    FIN, then send the result record and close.

    Attributes:
        direction: what the client asked for (None until its hello arrived).
        received: data bytes read after the hello.
        sent: data bytes written after the answer.
    """

    pause_reading_on_backpressure = False  # we never write views of what we read

    def __init__(self, *, idle_timeout: float | None = None) -> None:
        super().__init__(max_buffer=HELLO_LIMIT)
        self.idle_timeout = idle_timeout
        self._idle: IdleTimer | None = None
        self.direction: Direction | None = None
        self.received = 0
        self.sent = 0
        self._started_ns = 0
        self._sending = False
        self._ended = False

    def on_connect(self) -> None:
        super().on_connect()
        if self.idle_timeout:
            self._idle = IdleTimer(self.idle_timeout, self._end)

    # --- reading -------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.direction is None:
            return super().get_buffer(sizehint)
        return _scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self.direction is None:
            super().buffer_updated(nbytes)  # the hello, into rbuf: data_ready parses it
            return
        self.bytes_in += nbytes
        self.received += nbytes
        if self._idle is not None:
            self._idle.touch()

    def data_ready(self) -> None:
        if self._idle is not None:
            self._idle.touch()
        view = self.rbuf.view()
        try:
            end = take_line(view)
            if end is None:
                return
            direction = parse_hello(bytes(view[:end]))
        except PeerProtocolError as exc:
            self.rbuf.consume(len(view))
            self.write(error_line(str(exc)))
            self._ended = True
            self.close()
            return
        extra = len(view) - end  # data that came with the hello
        self.rbuf.consume(len(view))
        self.rbuf.release()
        self.direction = direction
        self.received += extra
        self.write(OK_LINE)
        self._started_ns = time.perf_counter_ns()
        if direction.server_sends:
            self._sending = True
            self._pump()

    # --- sending ---------------------------------------------------------------------------

    def _pump(self) -> None:
        for _ in range(WRITES_PER_TURN):
            if not self._sending or self._write_paused:
                return
            self.write(_source)
            self.sent += SOURCE_CHUNK
            if self._idle is not None:
                self._idle.touch()
        if self._sending and not self._write_paused:
            asyncio.get_running_loop().call_soon(self._pump)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._sending:
            self._pump()

    # --- the end -----------------------------------------------------------------------------

    def on_eof(self) -> bool | None:
        self._end()
        return True  # _end closes once the record is written

    def _end(self) -> None:
        """Stop sending, write the result record and close (the client's FIN, the idle
        timeout or the server's drain)."""
        if self._ended:
            return
        self._ended = True
        self._sending = False
        if self.direction is not None:
            elapsed = time.perf_counter_ns() - self._started_ns
            self.write(StreamReport(self.received, self.sent, elapsed).encode())
        self.close()

    def begin_drain(self) -> None:
        """The server is shutting down: end the test now (the client gets the counts)."""
        self._end()

    def on_close(self, exc: Exception | None) -> None:
        self._sending = False
        if self._idle is not None:
            self._idle.cancel()
        super().on_close(exc)

"""An asyncio BufferedProtocol base: the kernel writes into a pooled ReceiveBuffer.

Subclasses implement :meth:`StreamProtocol.data_ready` and read ``self.rbuf`` (memoryview
slices, no copies). Flow control: on plain transports the write-buffer high-water mark is 0, so
as soon as the transport has to buffer anything we stop reading until it has drained. That bounds memory per
connection, and it means a transport never holds a view of our receive buffer while the buffer
is reused or returned to the pool (CPython >= 3.12 and uvloop may keep views of what we write).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import cast

from netkit.core.buffers import BufferFull, BufferPool, ReceiveBuffer
from netkit.errors import NetkitError
from netkit.net.sockets import describe
from netkit.net.zerocopy import Buffer, writer_for

TLS_HIGH_WATER = 64 * 1024
# Where the loop reads to once a connection's buffer overflowed: the bytes are discarded, so
# one buffer serves every connection (4 KiB each would be most of an idle connection's memory).
_SCRATCH = memoryview(bytearray(4096))


def _not_connected(data: object) -> None:
    raise RuntimeError("write before the connection was made")


class StreamProtocol(asyncio.BufferedProtocol):
    """Base for every stream connection netkit handles (server and client side).

    Attributes:
        rbuf: the receive buffer; its memory is pooled and released whenever it is empty.
        bytes_in, bytes_out: counters.
        error: the NetkitError that ended the connection, if any.
        closed: a future resolved when the connection is gone.
    """

    pause_reading_on_backpressure = True
    """Stop reading while the transport buffers our writes. Right for protocols that write
    views of what they read (echo, relay: memory stays bounded, no view outlives its buffer);
    clients whose writes do not come from the receive buffer turn it off, or a large write
    would wait for a peer that waits for us to read (a deadlock)."""

    def __init__(self, *, max_buffer: int = 1 << 20, pool: BufferPool | None = None) -> None:
        self.rbuf = ReceiveBuffer(max_buffer, pool)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.monotonic()
        self.error: NetkitError | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._write_paused = False
        self._drained: asyncio.Event | None = None
        # The transport's write and writelines, bound once: write() runs once per message.
        self._write: Callable[[Buffer], None] = _not_connected
        self._writelines: Callable[[Sequence[Buffer]], None] = _not_connected

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self._write = self.transport.write
        self._writelines = writer_for(self.transport)
        # TLS copies what we write into the SSL object, so its transport never holds views of
        # our buffer; it keeps a 64 KiB mark (asyncio's SSL layer re-checks the mark only when
        # written to, so a mark of 0 would leave it paused for good).
        tls = transport.get_extra_info("ssl_object") is not None
        self.transport.set_write_buffer_limits(high=TLS_HIGH_WATER if tls else 0, low=0)
        self.peer = describe(transport.get_extra_info("peername"))
        self.started = time.monotonic()
        self.on_connect()
        if self._write_paused and self.pause_reading_on_backpressure:
            # uvloop starts reading right after connection_made, undoing a pause made in it.
            asyncio.get_running_loop().call_soon(self._repause_reading)

    def _repause_reading(self) -> None:
        if self._write_paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        try:
            return self.rbuf.writable(1)
        except BufferFull as exc:
            return self.overflow(exc)

    def overflow(self, exc: NetkitError) -> memoryview:
        """The receive buffer is full: fail the connection, and give the loop scratch memory.

        The abort is deferred: closing the transport inside get_buffer makes uvloop read into
        a closed handle (a crash).
        """
        if self.error is None:
            self.error = exc
            asyncio.get_running_loop().call_soon(self.abort)
        return _SCRATCH

    def buffer_updated(self, nbytes: int) -> None:
        # Once per message: get_buffer, this, data_ready and write are the whole Python path
        # of an echo (benchmarks/tcp_echo.py --only cpu measures it).
        if self.error is not None:
            return
        rbuf = self.rbuf
        rbuf.commit(nbytes)
        self.bytes_in += nbytes
        try:
            self.data_ready()
        except NetkitError as exc:
            self.fail(exc)
            return
        if self.views_released():
            rbuf.release()

    def eof_received(self) -> bool | None:
        return self.on_eof()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.transport is not None and self.pause_reading_on_backpressure:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None:
            self._drained.set()
        if self.transport is not None and not self.transport.is_closing():
            if self.views_released():
                self.rbuf.release()
            if self.pause_reading_on_backpressure:
                self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._write_paused = False
        if self._drained is not None:
            self._drained.set()
        if self.views_released():
            self.rbuf.clear()
        else:
            # Another transport may still be sending views of this memory (a relay's other
            # side): let the garbage collector have it once they are gone, never the pool.
            self.rbuf.abandon()
        self.on_close(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    # --- for subclasses ----------------------------------------------------------------

    def views_released(self) -> bool:
        """True when no transport may still hold views of ``rbuf`` (it may go back to the pool).

        Views of ``rbuf`` go to our own transport here; a relay writes them to its peer's.
        """
        return not self._write_paused

    def on_connect(self) -> None:
        """Called once the transport is up."""

    def data_ready(self) -> None:
        """Called after bytes were added to ``self.rbuf``; consume what can be handled."""

    def on_eof(self) -> bool | None:
        """The peer half-closed. Return True to keep our side open (plain TCP only)."""
        return None

    def on_close(self, exc: Exception | None) -> None:
        """The connection is gone."""

    # --- helpers -----------------------------------------------------------------------

    def write(self, *parts: Buffer) -> None:
        """Send buffers in order, scatter-gather where the transport allows."""
        if len(parts) == 1:  # the common case, once per message: no sum over a generator
            data = parts[0]
            self.bytes_out += len(data)
            self._write(data)
        else:
            self.bytes_out += sum(map(len, parts))
            self._writelines(parts)

    async def drain(self) -> None:
        """Wait until the transport has sent everything it buffered."""
        while self._write_paused and not self.closed.done():
            self._drained = asyncio.Event()
            await self._drained.wait()

    @property
    def duration(self) -> float:
        """Seconds since the connection was made."""
        return time.monotonic() - self.started

    def fail(self, exc: NetkitError) -> None:
        """End the connection because of ``exc`` (kept in ``self.error``)."""
        if self.error is None:
            self.error = exc
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        """Drop the connection at once (RST where the transport can), without an error."""
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close gracefully: flush what is buffered, then close."""
        if self.transport is not None:
            self.transport.close()

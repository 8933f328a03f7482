"""Zero-copy buffers: a receive buffer the kernel writes into, a pool, and length-prefixed framing.

The receive buffer is one ``bytearray`` that never changes size once allocated, so memoryviews
of it stay valid: the kernel writes into :meth:`ReceiveBuffer.writable` (``recv_into`` or
asyncio's ``BufferedProtocol.get_buffer``) and parsers read :meth:`ReceiveBuffer.view` slices.
A view is valid until the next call to ``writable()``, which may move unread bytes to the front
(compaction) or into a larger bytearray (growth, bounded by ``max_size``).

Idle connections hold no memory: a buffer takes its bytearray from a :class:`BufferPool` when
the first byte arrives and gives it back with :meth:`ReceiveBuffer.release` once everything has
been consumed, or with :meth:`ReceiveBuffer.stash` while only a few bytes of an unfinished
message wait for the rest (memory follows what arrived, not the chunk size).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from netkit.errors import LocalProtocolError, PeerProtocolError

DEFAULT_CHUNK = 64 * 1024
# ReceiveBuffer.stash() moves at most this many unread bytes out of a pooled chunk.
STASH_LIMIT = 4096
# Free buffers larger than a chunk a pool keeps, in bytes (for the next large message).
LARGE_BUDGET = 16 * 1024 * 1024
_NO_MEMORY = memoryview(b"")  # what a released buffer points at (one object, not one per release)


class BufferFull(PeerProtocolError):
    """The peer sent more unconsumed data than the buffer may hold (``max_size``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, close_code=1009)


class BufferPool:
    """A free list of equal-sized bytearrays, reused across connections.

    Free bytearrays are kept with a memoryview of each, so that a receive buffer taking one
    (:meth:`acquire_view`, once per message on a busy connection) allocates nothing.

    Buffers grown past a chunk for a large message are kept too, up to ``large_budget``
    bytes in all, for the next large message (:meth:`acquire_large`): a connection grows
    its buffer as a message arrives, and without them each large message would pay for
    fresh memory at every step.

    Args:
        chunk_size: size of each bytearray.
        max_pooled: how many free bytearrays to keep; more are left to the garbage collector.
        large_budget: the most bytes of free larger buffers to keep.
    """

    def __init__(
        self,
        chunk_size: int = DEFAULT_CHUNK,
        max_pooled: int = 256,
        large_budget: int = LARGE_BUDGET,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self.max_pooled = max_pooled
        self.large_budget = large_budget
        self._free: list[memoryview] = []
        self._large: list[memoryview] = []
        self.large_bytes = 0
        self.allocated = 0

    def acquire(self) -> bytearray:
        """Return a bytearray of ``chunk_size`` bytes, reused when one is free."""
        return cast(bytearray, self.acquire_view().obj)

    def acquire_view(self) -> memoryview:
        """As :meth:`acquire`, as a memoryview of the whole bytearray (``.obj``)."""
        if self._free:
            return self._free.pop()
        self.allocated += 1
        return memoryview(bytearray(self.chunk_size))

    def release(self, buf: bytearray) -> None:
        """Give a bytearray back. Only pool-sized ones are kept."""
        self.release_view(memoryview(buf))

    def release_view(self, mem: memoryview) -> None:
        """Give back what :meth:`acquire_view` or :meth:`acquire_large` returned (or a view
        of a whole bytearray). Larger ones are kept while they fit ``large_budget``."""
        n = len(mem)
        if n == self.chunk_size:
            if len(self._free) < self.max_pooled:
                self._free.append(mem)
        elif n > self.chunk_size and self.large_bytes + n <= self.large_budget:
            self._large.append(mem)
            self.large_bytes += n

    def acquire_large(self, min_size: int, max_size: int) -> memoryview:
        """Return a whole-bytearray view of ``min_size`` to ``max_size`` bytes: the smallest
        kept one that fits, else a new one of ``min_size``."""
        best = -1
        for i, mem in enumerate(self._large):
            if min_size <= len(mem) <= max_size and (best < 0 or len(mem) < len(self._large[best])):
                best = i
        if best < 0:
            return memoryview(bytearray(min_size))
        mem = self._large.pop(best)
        self.large_bytes -= len(mem)
        return mem

    def __len__(self) -> int:
        return len(self._free)


_DEFAULT_POOL = BufferPool()


class ReceiveBuffer:
    """A growable, capped receive buffer that hands out memoryview slices without copying.

    It holds one memoryview of a whole bytearray (the pool's, or a larger one after growth),
    or none while released.

    Args:
        max_size: the most unconsumed bytes it will hold; past that :meth:`writable` raises
            :class:`BufferFull`.
        pool: where the first bytearray comes from and goes back to.
    """

    __slots__ = ("_end", "_mem", "_pool", "_start", "max_size")

    def __init__(self, max_size: int = 1 << 20, pool: BufferPool | None = None) -> None:
        self._pool = pool if pool is not None else _DEFAULT_POOL
        if max_size < self._pool.chunk_size:
            max_size = self._pool.chunk_size
        self.max_size = max_size
        self._mem = _NO_MEMORY
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def end(self) -> int:
        """Offset in the bytearray where the next byte will be written."""
        return self._end

    @property
    def capacity(self) -> int:
        """Size of the bytearray in use (0 when released to the pool)."""
        return len(self._mem)

    def writable(self, min_size: int = 1) -> memoryview:
        """Return free space at the end for the kernel to write into, at least ``min_size``.

        Moves unread bytes to the front, or into a larger bytearray, when that makes room.

        Raises:
            BufferFull: when holding ``len(self) + min_size`` bytes would exceed ``max_size``.
        """
        mem, end = self._mem, self._end
        if mem is _NO_MEMORY:
            pooled = self._pool._free  # acquire_view(), inline: once per message when busy
            mem = self._mem = pooled.pop() if pooled else self._pool.acquire_view()
        if len(mem) - end >= min_size:
            # All of it when empty (the usual case between messages): no new view.
            return mem[end:] if end else mem
        pending = end - self._start
        needed = pending + min_size
        if needed > self.max_size:
            raise BufferFull(f"more than {self.max_size} bytes buffered without a complete message")
        if needed <= len(mem):
            # Compaction: one memmove of the unread tail (overlap-safe), no allocation.
            mem[:pending] = mem[self._start : end]
        else:
            # Double (amortised copies), or straight to what was asked for if that is more.
            size = max(needed, 2 * len(mem))
            pool = self._pool
            if size <= pool.chunk_size:
                grown = pool.acquire_view()  # back from a stash() to a pooled chunk
            else:
                size = min(size, self.max_size)
                # A kept buffer up to 16x the size asked for (not a huge one for a small need).
                grown = pool.acquire_large(size, min(16 * size, self.max_size))
            # Growth copies the unread bytes once; it happens for messages larger than the
            # pool's chunk (kept until release()) and after a stash() (a small copy).
            grown[:pending] = mem[self._start : end]
            self._mem = mem = grown
        self._start, self._end = 0, pending
        return mem[pending:]

    def commit(self, nbytes: int) -> None:
        """Record that ``nbytes`` were written into the last :meth:`writable` view."""
        if nbytes < 0 or self._mem is _NO_MEMORY or self._end + nbytes > len(self._mem):
            raise LocalProtocolError(f"commit({nbytes}) beyond the writable space")
        self._end += nbytes

    def view(self, size: int | None = None) -> memoryview:
        """Return the first ``size`` unread bytes (all by default) without consuming them."""
        end = self._end if size is None else min(self._end, self._start + size)
        return self._mem[self._start : end]

    def consume(self, nbytes: int) -> None:
        """Drop ``nbytes`` from the front (they have been handled)."""
        if nbytes < 0:
            raise LocalProtocolError(f"consume({nbytes}) of a negative size")
        if nbytes > self._end - self._start:
            raise LocalProtocolError(f"consume({nbytes}) beyond the {len(self)} unread bytes")
        self._start += nbytes
        if self._start == self._end:
            self._start = self._end = 0

    def take(self, nbytes: int | None = None) -> memoryview:
        """Return the first ``nbytes`` (all unread bytes by default) as a view and consume them."""
        if nbytes is None:  # everything: an echo's or a relay's once-per-message call
            view = self._mem[self._start : self._end]
            self._start = self._end = 0
            return view
        if nbytes < 0:
            raise LocalProtocolError(f"take({nbytes}) of a negative size")
        view = self.view(nbytes)
        if len(view) < nbytes:
            raise LocalProtocolError(f"take({nbytes}) with only {len(view)} bytes buffered")
        self.consume(nbytes)
        return view

    def extend(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes that arrived some other way (tests, TLS objects without recv_into)."""
        n = len(data)
        if n:
            self.writable(n)[:n] = data
            self._end += n

    def stash(self, limit: int = STASH_LIMIT) -> bool:
        """Give the pooled bytearray back while a few unread bytes wait for the rest.

        A connection that sent part of a message (a frame header declaring 1 MiB and 17
        bytes of it) would otherwise hold a whole pooled chunk until the rest comes: its
        unread bytes move to a bytearray of their own, and the next :meth:`writable` takes
        a chunk from the pool again. Call it only when no view of the buffer is in use.

        Args:
            limit: stash only this many unread bytes or fewer (a copy each time).

        Returns:
            True when the chunk went back to the pool.
        """
        mem = self._mem
        pending = self._end - self._start
        pool = self._pool
        if not 0 < pending <= limit or len(mem) != pool.chunk_size:
            return False
        self._mem = memoryview(bytearray(mem[self._start : self._end]))
        self._start, self._end = 0, pending
        pool.release_view(mem)
        return True

    def abandon(self) -> None:
        """Drop the memory without returning it to the pool (views of it may still be in use)."""
        self._mem = _NO_MEMORY
        self._start = self._end = 0

    def clear(self) -> None:
        """Drop any unread bytes and give the memory back to the pool."""
        self._start = self._end = 0
        self.release()

    def release(self) -> bool:
        """Return the bytearray to the pool if nothing is left unread.

        Returns:
            True when released. A buffer with unread bytes keeps its memory.
        """
        mem = self._mem
        if mem is _NO_MEMORY:
            return True
        if self._end != self._start:
            return False
        self._mem = _NO_MEMORY
        self._start = self._end = 0
        pool = self._pool
        if len(mem) == pool.chunk_size and len(pool._free) < pool.max_pooled:
            pool._free.append(mem)  # release_view(), inline: once per message when busy
        elif len(mem) > pool.chunk_size:
            pool.release_view(mem)  # grown for a large message: kept for the next one
        return True


# --- Length-prefixed framing: 4-byte big-endian length, then the payload. ---

FRAME_HEADER = struct.Struct("!I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


class FrameTooLarge(PeerProtocolError):
    """A length prefix announced more than the allowed maximum frame size."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit", close_code=1009)
        self.size = size
        self.limit = limit


def frame_header(size: int) -> bytes:
    """Serialize the 4-byte big-endian length prefix for a ``size``-byte payload."""
    if not 0 <= size <= 0xFFFFFFFF:
        raise LocalProtocolError(f"frame size {size} does not fit a 4-byte length")
    return FRAME_HEADER.pack(size)


@dataclass(frozen=True)
class LengthPrefixedFramer:
    """Parses length-prefixed frames straight out of a :class:`ReceiveBuffer`.

    Args:
        max_frame: the largest payload accepted; a larger announced length raises
            :class:`FrameTooLarge` before any of its payload is buffered.
    """

    max_frame: int = DEFAULT_MAX_FRAME

    def next_frame(self, buf: ReceiveBuffer) -> memoryview | None:
        """Return the next complete payload as a view (and consume it), or None if incomplete.

        Raises:
            FrameTooLarge: the announced size exceeds ``max_frame``.
        """
        if len(buf) < 4:
            return None
        (size,) = FRAME_HEADER.unpack(buf.view(4))
        if size > self.max_frame:
            raise FrameTooLarge(size, self.max_frame)
        if len(buf) < 4 + size:
            return None
        buf.consume(4)
        return buf.take(size)

    def frames(self, buf: ReceiveBuffer) -> Iterator[memoryview]:
        """Yield every complete payload in the buffer; stop at the first incomplete one."""
        while (frame := self.next_frame(buf)) is not None:
            yield frame

    def pending_size(self, buf: ReceiveBuffer) -> int:
        """How many bytes the frame at the front needs in all (header included), 4 if unknown."""
        if len(buf) < 4:
            return 4
        (size,) = FRAME_HEADER.unpack(buf.view(4))
        return 4 + int(size)

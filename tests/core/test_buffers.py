"""Tests for netkit.core.buffers: ReceiveBuffer, BufferPool and LengthPrefixedFramer."""

from __future__ import annotations

import struct

import pytest

from netkit.core.buffers import (
    DEFAULT_CHUNK,
    DEFAULT_MAX_FRAME,
    BufferFull,
    BufferPool,
    FrameTooLarge,
    LengthPrefixedFramer,
    ReceiveBuffer,
    frame_header,
)
from netkit.errors import LocalProtocolError, PeerProtocolError

CHUNK = 64


def small_buffer(max_size: int = 4 * CHUNK, chunk: int = CHUNK) -> tuple[ReceiveBuffer, BufferPool]:
    pool = BufferPool(chunk_size=chunk)
    return ReceiveBuffer(max_size, pool), pool


def feed(buf: ReceiveBuffer, data: bytes) -> None:
    """Write ``data`` the way the kernel does: into writable(), then commit()."""
    view = buf.writable(len(data))
    view[: len(data)] = data
    buf.commit(len(data))


# --- BufferPool --------------------------------------------------------------------------


def test_pool_acquire_gives_chunk_sized_bytearrays() -> None:
    pool = BufferPool(chunk_size=128)
    a = pool.acquire()
    assert isinstance(a, bytearray)
    assert len(a) == 128
    assert pool.allocated == 1
    assert len(pool) == 0


def test_pool_reuses_released_bytearrays() -> None:
    pool = BufferPool(chunk_size=16)
    a = pool.acquire()
    pool.release(a)
    assert len(pool) == 1
    assert pool.acquire() is a
    assert pool.allocated == 1
    assert len(pool) == 0


def test_pool_ignores_wrong_sized_bytearrays() -> None:
    pool = BufferPool(chunk_size=16)
    pool.release(bytearray(32))
    pool.release(bytearray(8))
    assert len(pool) == 0


def test_pool_keeps_at_most_max_pooled() -> None:
    pool = BufferPool(chunk_size=8, max_pooled=2)
    bufs = [pool.acquire() for _ in range(3)]
    assert pool.allocated == 3
    for b in bufs:
        pool.release(b)
    assert len(pool) == 2


def test_pool_views_are_reused_without_allocating() -> None:
    pool = BufferPool(chunk_size=16)
    view = pool.acquire_view()
    assert isinstance(view.obj, bytearray)
    assert len(view) == 16
    pool.release_view(view)
    # The same memoryview object comes back: taking a buffer allocates nothing.
    assert pool.acquire_view() is view
    assert pool.allocated == 1
    # The bytearray API and the view API share one free list.
    pool.release_view(view)
    assert pool.acquire() is view.obj
    pool.release(bytearray(16))
    assert len(pool.acquire_view()) == 16
    assert pool.allocated == 1


def test_pool_views_of_the_wrong_size_are_not_kept() -> None:
    pool = BufferPool(chunk_size=16)
    pool.release_view(memoryview(bytearray(32)))
    assert len(pool) == 0


def test_empty_buffer_hands_out_the_whole_chunk_view() -> None:
    buf, pool = small_buffer()
    first = buf.writable()
    assert len(first) == CHUNK
    # Between messages (nothing unread) the same whole view, not a new slice each time.
    assert buf.writable() is first
    feed(buf, b"ab")
    rest = buf.writable()
    assert rest is not first
    assert len(rest) == CHUNK - 2
    buf.consume(2)
    assert buf.release() is True
    # After a release and a new acquire, still the pool's one view of that chunk.
    assert buf.writable() is first
    assert pool.allocated == 1


def test_pool_rejects_non_positive_chunk() -> None:
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        BufferPool(chunk_size=0)


def test_default_chunk_is_64_kib() -> None:
    assert BufferPool().chunk_size == DEFAULT_CHUNK == 64 * 1024


# --- ReceiveBuffer basics ----------------------------------------------------------------


def test_new_buffer_holds_no_memory() -> None:
    buf, pool = small_buffer()
    assert len(buf) == 0
    assert buf.capacity == 0
    assert bytes(buf.view()) == b""
    assert pool.allocated == 0


def test_max_size_is_at_least_one_chunk() -> None:
    buf, _ = small_buffer(max_size=1)
    assert buf.max_size == CHUNK


def test_writable_commit_view() -> None:
    buf, pool = small_buffer()
    w = buf.writable()
    assert pool.allocated == 1
    assert buf.capacity == CHUNK
    assert len(w) == CHUNK
    w[:5] = b"hello"
    buf.commit(5)
    assert len(buf) == 5
    assert bytes(buf.view()) == b"hello"
    assert bytes(buf.view(2)) == b"he"
    assert bytes(buf.view(100)) == b"hello"
    # view() does not consume.
    assert len(buf) == 5


def test_views_share_memory_with_the_buffer() -> None:
    buf, _ = small_buffer()
    w = buf.writable()
    w[:3] = b"abc"
    buf.commit(3)
    v = buf.view()
    assert isinstance(v, memoryview)
    backing = v.obj
    assert isinstance(backing, bytearray)
    assert len(backing) == buf.capacity
    # Writing through the writable view of the same memory shows up in view(): no copy.
    w[0] = ord("X")
    assert bytes(v) == b"Xbc"
    assert bytes(buf.view()) == b"Xbc"
    assert buf.writable().obj is backing
    # And the writable view starts right after the committed bytes.
    buf.writable()[0] = ord("d")
    buf.commit(1)
    assert bytes(buf.view()) == b"Xbcd"
    assert backing[:4] == b"Xbcd"


def test_consume_and_take() -> None:
    buf, _ = small_buffer()
    feed(buf, b"0123456789")
    buf.consume(3)
    assert bytes(buf.view()) == b"3456789"
    t = buf.take(4)
    assert bytes(t) == b"3456"
    assert t.obj is buf.view().obj
    assert len(buf) == 3
    assert bytes(buf.take(3)) == b"789"
    assert len(buf) == 0


def test_consume_everything_rewinds_to_the_start() -> None:
    buf, _ = small_buffer()
    feed(buf, b"x" * 10)
    buf.consume(10)
    # Empty: the whole bytearray is writable again, without compaction.
    assert len(buf.writable()) == CHUNK


def test_extend_appends() -> None:
    buf, _ = small_buffer()
    buf.extend(b"ab")
    buf.extend(bytearray(b"cd"))
    buf.extend(memoryview(b"ef"))
    buf.extend(b"")
    assert bytes(buf.view()) == b"abcdef"


def test_writable_min_size_is_honoured() -> None:
    buf, _ = small_buffer()
    feed(buf, b"x" * 60)
    assert len(buf.writable(4)) == 4
    w = buf.writable(10)
    assert len(w) >= 10
    assert bytes(buf.view()) == b"x" * 60


# --- compaction and growth ---------------------------------------------------------------


def test_compaction_keeps_unread_data_and_memory() -> None:
    buf, pool = small_buffer()
    data = bytes(range(CHUNK))
    feed(buf, data)
    backing = buf.view().obj
    buf.consume(40)
    # 24 unread + 30 needed fit in the 64-byte array: compaction, not growth.
    w = buf.writable(30)
    assert buf.capacity == CHUNK
    assert buf.view().obj is backing
    assert pool.allocated == 1
    assert bytes(buf.view()) == data[40:]
    assert len(w) == CHUNK - 24
    w[:3] = b"end"
    buf.commit(3)
    assert bytes(buf.view()) == data[40:] + b"end"


def test_compaction_with_overlapping_regions_keeps_data() -> None:
    # A large unread tail that overlaps its destination when moved to the front.
    pool = BufferPool()
    buf = ReceiveBuffer(pool=pool)
    data = bytes(i * 7 & 0xFF for i in range(60_000))
    feed(buf, data)
    buf.consume(1_000)
    buf.writable(5_000)
    assert buf.capacity == DEFAULT_CHUNK
    assert bytes(buf.view()) == data[1_000:]


def test_growth_keeps_data_and_doubles() -> None:
    buf, _ = small_buffer(max_size=1024)
    feed(buf, b"a" * 50)
    buf.consume(10)
    w = buf.writable(100)  # 40 unread + 100 > 2 x 64: grow to what was asked, 140
    assert buf.capacity == 140
    assert bytes(buf.view()) == b"a" * 40
    assert len(w) == 140 - 40
    w[:100] = b"b" * 100
    buf.commit(100)
    assert bytes(buf.view()) == b"a" * 40 + b"b" * 100
    buf.writable(1)  # full: at least double (amortised copies)
    assert buf.capacity == 280
    assert bytes(buf.view()) == b"a" * 40 + b"b" * 100


def test_growth_is_capped_by_max_size() -> None:
    buf, _ = small_buffer(max_size=100)
    feed(buf, b"a" * 64)
    buf.writable(36)  # exactly max_size in all
    assert buf.capacity == 100
    buf.commit(36)
    assert len(buf) == 100


def test_buffer_full_past_max_size() -> None:
    buf, _ = small_buffer(max_size=100)
    feed(buf, b"a" * 64)
    with pytest.raises(BufferFull, match="more than 100 bytes buffered") as info:
        buf.writable(37)
    assert isinstance(info.value, PeerProtocolError)
    assert info.value.close_code == 1009
    # The data survives the refusal.
    assert bytes(buf.view()) == b"a" * 64


def test_buffer_full_counts_only_unread_bytes() -> None:
    buf, _ = small_buffer(max_size=100)
    feed(buf, b"a" * 64)
    buf.consume(64)
    feed(buf, b"b" * 64)
    buf.consume(30)
    feed(buf, b"c" * 60)  # 34 + 60 = 94 <= 100
    assert bytes(buf.view()) == b"b" * 34 + b"c" * 60


# --- release / clear ---------------------------------------------------------------------


def test_release_returns_memory_only_when_empty() -> None:
    buf, pool = small_buffer()
    feed(buf, b"abc")
    backing = buf.view().obj
    assert buf.release() is False
    assert buf.capacity == CHUNK
    assert len(pool) == 0
    assert bytes(buf.view()) == b"abc"
    buf.consume(3)
    assert buf.release() is True
    assert buf.capacity == 0
    assert len(pool) == 1
    # Released twice is harmless and still reports "released".
    assert buf.release() is True
    assert len(pool) == 1
    # The next write reuses the very same bytearray.
    assert buf.writable().obj is backing
    assert pool.allocated == 1


def test_pool_is_shared_between_buffers() -> None:
    pool = BufferPool(chunk_size=CHUNK)
    a, b = ReceiveBuffer(pool=pool), ReceiveBuffer(pool=pool)
    feed(a, b"x")
    backing = a.view().obj
    a.consume(1)
    assert a.release()
    feed(b, b"y")
    assert b.view().obj is backing
    assert bytes(b.view()) == b"y"
    assert pool.allocated == 1


def test_grown_bytearray_is_not_pooled() -> None:
    buf, pool = small_buffer(max_size=1024)
    feed(buf, b"a" * 200)
    assert buf.capacity > CHUNK
    buf.consume(200)
    assert buf.release() is True
    assert buf.capacity == 0
    assert len(pool) == 0


def test_clear_drops_unread_data_and_releases() -> None:
    buf, pool = small_buffer()
    feed(buf, b"abc")
    buf.clear()
    assert len(buf) == 0
    assert buf.capacity == 0
    assert len(pool) == 1
    assert bytes(buf.view()) == b""
    feed(buf, b"z")
    assert bytes(buf.view()) == b"z"


# --- misuse ------------------------------------------------------------------------------


def test_commit_before_writable_is_misuse() -> None:
    buf, _ = small_buffer()
    with pytest.raises(LocalProtocolError, match=r"commit\(1\)"):
        buf.commit(1)


def test_commit_beyond_the_writable_space_is_misuse() -> None:
    buf, _ = small_buffer()
    buf.writable()
    with pytest.raises(LocalProtocolError, match="beyond the writable space"):
        buf.commit(CHUNK + 1)
    with pytest.raises(LocalProtocolError):
        buf.commit(-1)
    assert len(buf) == 0


def test_consume_more_than_buffered_is_misuse() -> None:
    buf, _ = small_buffer()
    feed(buf, b"ab")
    with pytest.raises(LocalProtocolError, match=r"consume\(3\) beyond the 2 unread bytes"):
        buf.consume(3)
    assert bytes(buf.view()) == b"ab"


def test_take_more_than_buffered_is_misuse() -> None:
    buf, _ = small_buffer()
    feed(buf, b"ab")
    with pytest.raises(LocalProtocolError, match=r"take\(3\) with only 2 bytes buffered"):
        buf.take(3)
    assert bytes(buf.view()) == b"ab"


def test_take_without_a_size_takes_every_unread_byte() -> None:
    buf, _ = small_buffer()
    feed(buf, b"abcd")
    buf.consume(1)
    assert bytes(buf.take()) == b"bcd"
    assert len(buf) == 0
    assert bytes(buf.take()) == b""
    feed(buf, b"ef")  # the next bytes land at the front again
    assert bytes(buf.view()) == b"ef"


def test_consume_negative_is_misuse() -> None:
    buf, _ = small_buffer()
    feed(buf, b"ab")
    with pytest.raises(LocalProtocolError):
        buf.consume(-1)
    assert len(buf) == 2
    assert bytes(buf.view()) == b"ab"


# --- framing -----------------------------------------------------------------------------


def test_frame_header_bounds() -> None:
    assert frame_header(0) == b"\x00\x00\x00\x00"
    assert frame_header(258) == b"\x00\x00\x01\x02"
    assert frame_header(0xFFFFFFFF) == b"\xff\xff\xff\xff"
    with pytest.raises(LocalProtocolError, match="does not fit a 4-byte length"):
        frame_header(-1)
    with pytest.raises(LocalProtocolError, match="does not fit a 4-byte length"):
        frame_header(1 << 32)


def encode(*payloads: bytes) -> bytes:
    return b"".join(frame_header(len(p)) + p for p in payloads)


PAYLOADS = (b"hello", b"", b"x" * 70, b"\x00\x01\x02", b"")


def test_frames_at_every_split_point() -> None:
    stream = encode(*PAYLOADS)
    framer = LengthPrefixedFramer(max_frame=1024)
    for cut in range(len(stream) + 1):
        buf, _ = small_buffer(max_size=1024)
        got: list[bytes] = []
        for part in (stream[:cut], stream[cut:]):
            if part:
                feed(buf, part)
            got.extend(bytes(f) for f in framer.frames(buf))
        assert got == list(PAYLOADS), f"split at {cut}"
        assert len(buf) == 0


def test_frames_at_every_pair_of_split_points() -> None:
    stream = encode(b"ab", b"", b"cdefgh")
    framer = LengthPrefixedFramer(max_frame=64)
    n = len(stream)
    for i in range(n + 1):
        for j in range(i, n + 1):
            buf, _ = small_buffer()
            got: list[bytes] = []
            for part in (stream[:i], stream[i:j], stream[j:]):
                if part:
                    feed(buf, part)
                got.extend(bytes(f) for f in framer.frames(buf))
            assert got == [b"ab", b"", b"cdefgh"], (i, j)


def test_frames_byte_by_byte() -> None:
    stream = encode(*PAYLOADS)
    framer = LengthPrefixedFramer(max_frame=1024)
    buf, _ = small_buffer(max_size=1024)
    got: list[bytes] = []
    for i in range(len(stream)):
        feed(buf, stream[i : i + 1])
        got.extend(bytes(f) for f in framer.frames(buf))
    assert got == list(PAYLOADS)


def test_frame_is_a_view_of_the_buffer() -> None:
    buf, _ = small_buffer()
    feed(buf, encode(b"payload"))
    backing = buf.view().obj
    frame = LengthPrefixedFramer().next_frame(buf)
    assert frame is not None
    assert frame.obj is backing
    assert bytes(frame) == b"payload"


def test_next_frame_incomplete_returns_none_and_consumes_nothing() -> None:
    framer = LengthPrefixedFramer()
    buf, _ = small_buffer()
    assert framer.next_frame(buf) is None
    feed(buf, b"\x00\x00")
    assert framer.next_frame(buf) is None
    feed(buf, b"\x00\x03ab")
    assert framer.next_frame(buf) is None
    assert len(buf) == 6
    feed(buf, b"c")
    frame = framer.next_frame(buf)
    assert frame is not None and bytes(frame) == b"abc"
    assert len(buf) == 0


def test_zero_length_frames() -> None:
    framer = LengthPrefixedFramer()
    buf, _ = small_buffer()
    feed(buf, encode(b"", b"", b""))
    frames = [bytes(f) for f in framer.frames(buf)]
    assert frames == [b"", b"", b""]


def test_frame_too_large_is_raised_from_the_header_alone() -> None:
    framer = LengthPrefixedFramer(max_frame=10)
    buf, _ = small_buffer()
    feed(buf, struct.pack("!I", 11))  # no payload byte has arrived yet
    with pytest.raises(FrameTooLarge, match="frame of 11 bytes exceeds the 10-byte limit") as info:
        framer.next_frame(buf)
    assert info.value.size == 11
    assert info.value.limit == 10
    assert info.value.close_code == 1009
    assert isinstance(info.value, PeerProtocolError)


def test_frame_too_large_after_good_frames() -> None:
    framer = LengthPrefixedFramer(max_frame=10)
    buf, _ = small_buffer()
    feed(buf, encode(b"ok") + struct.pack("!I", 0xFFFFFFFF))
    it = framer.frames(buf)
    assert bytes(next(it)) == b"ok"
    with pytest.raises(FrameTooLarge):
        next(it)


def test_frame_at_the_limit_is_accepted() -> None:
    framer = LengthPrefixedFramer(max_frame=10)
    buf, _ = small_buffer()
    feed(buf, encode(b"0123456789"))
    frame = framer.next_frame(buf)
    assert frame is not None and bytes(frame) == b"0123456789"


def test_default_max_frame() -> None:
    assert LengthPrefixedFramer().max_frame == DEFAULT_MAX_FRAME == 16 * 1024 * 1024


def test_pending_size() -> None:
    framer = LengthPrefixedFramer()
    buf, _ = small_buffer()
    assert framer.pending_size(buf) == 4
    feed(buf, b"\x00\x00\x00")
    assert framer.pending_size(buf) == 4
    feed(buf, b"\x14")
    assert framer.pending_size(buf) == 24
    feed(buf, b"x" * 5)
    assert framer.pending_size(buf) == 24


def test_frame_larger_than_a_chunk_grows_the_buffer() -> None:
    framer = LengthPrefixedFramer(max_frame=1000)
    buf, _ = small_buffer(max_size=1004)
    payload = bytes(range(256)) * 3
    stream = encode(payload)
    # Feed in kernel-sized pieces through writable()/commit().
    got = []
    pos = 0
    while pos < len(stream):
        w = buf.writable(1)
        n = min(len(w), 50, len(stream) - pos)
        w[:n] = stream[pos : pos + n]
        buf.commit(n)
        pos += n
        got.extend(bytes(f) for f in framer.frames(buf))
    assert got == [payload]


# --- stash: a few unread bytes do not hold a pooled chunk (issue 13 item 3) -----------------


def test_stash_gives_the_chunk_back_and_keeps_the_bytes() -> None:
    buf, pool = small_buffer()
    feed(buf, b"header+17 bytes")
    chunk = buf.view().obj
    buf.consume(2)
    assert buf.stash()
    assert buf.capacity == len(b"header+17 bytes") - 2  # what arrived, not the chunk
    assert len(pool) == 1 and pool._free[0].obj is chunk
    assert bytes(buf.view()) == b"ader+17 bytes"
    w = buf.writable(1)  # the next read: a pooled chunk again, the bytes copied back
    assert buf.capacity == CHUNK and w.obj is chunk and len(pool) == 0
    w[:4] = b"more"
    buf.commit(4)
    assert bytes(buf.view()) == b"ader+17 bytesmore"


def test_stash_only_a_few_bytes_of_a_pooled_chunk() -> None:
    buf, _ = small_buffer()
    assert not buf.stash()  # nothing held
    feed(buf, b"x" * 40)
    assert not buf.stash(limit=39)  # more unread bytes than the limit: keep the chunk
    assert buf.capacity == CHUNK
    buf.consume(40)
    assert not buf.stash()  # nothing unread: release() is the call
    big, _ = small_buffer()
    feed(big, b"y" * (CHUNK + 1))  # grown past the chunk: not the pool's
    big.consume(CHUNK)
    assert not big.stash() and big.capacity > CHUNK


# --- buffers grown for a large message are kept for the next one (within a budget) ----------


def test_a_grown_buffer_is_kept_for_the_next_large_message() -> None:
    pool = BufferPool(chunk_size=CHUNK, large_budget=1000)
    buf = ReceiveBuffer(4 * CHUNK, pool)
    feed(buf, b"a" * (CHUNK + 100))  # grown to 164 bytes
    grown = buf.view().obj
    assert buf.capacity == CHUNK + 100
    buf.consume(len(buf))
    assert buf.release()
    assert pool.large_bytes == CHUNK + 100
    other = ReceiveBuffer(4 * CHUNK, pool)
    feed(other, b"b" * (CHUNK + 10))  # needs 74: the kept 164-byte one fits
    assert other.view().obj is grown and pool.large_bytes == 0
    assert bytes(other.view()) == b"b" * (CHUNK + 10)


def test_kept_buffers_respect_the_budget_and_the_size_asked() -> None:
    pool = BufferPool(chunk_size=CHUNK, large_budget=200)
    for size in (150, 120):  # the second would pass the 200-byte budget: not kept
        pool.release_view(memoryview(bytearray(size)))
    assert pool.large_bytes == 150
    assert len(pool.acquire_large(160, 1000)) == 160  # none fits: a new one of the size asked
    assert len(pool.acquire_large(100, 140)) == 100  # 150 is over the most wanted
    assert len(pool.acquire_large(100, 1000)) == 150 and pool.large_bytes == 0

"""Property tests of length-prefixed framing (4-byte big-endian length, then the payload).

``tests/core/test_buffers.py`` checks fixed streams at every split point; here the payloads,
the splits and the limits are random, and so are streams that are not framing at all.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from netkit.core.buffers import (
    FRAME_HEADER,
    FrameTooLarge,
    LengthPrefixedFramer,
    ReceiveBuffer,
    frame_header,
)
from netkit.errors import LocalProtocolError, PeerProtocolError

# NETKIT_FUZZ_EXAMPLES=5000 runs every property longer, to hunt rather than to check.
EXAMPLES = int(os.environ.get("NETKIT_FUZZ_EXAMPLES", "0")) or 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def cuts_for(data: st.DataObject, size: int) -> list[int]:
    return data.draw(st.lists(st.integers(0, size), max_size=10), label="cuts")


@dataclass
class Outcome:
    payloads: list[bytes]
    error: tuple[int, int] | None  # (announced size, limit) of FrameTooLarge
    left: int | None  # bytes left unparsed; None after an error


def frame_chunks(framer: LengthPrefixedFramer, chunks: list[bytes]) -> Outcome:
    """Feed reads one at a time and take every complete frame after each.

    Checks that ``pending_size`` agrees with ``next_frame``: more than is buffered while it
    says "need more", exactly the frame's size when it hands one out.
    """
    buf = ReceiveBuffer()
    got: list[bytes] = []
    try:
        for chunk in chunks:
            buf.extend(chunk)
            while True:
                before, pending = len(buf), framer.pending_size(buf)
                frame = framer.next_frame(buf)
                if frame is None:
                    assert pending > before
                    break
                assert before - len(buf) == pending == 4 + len(frame)
                got.append(bytes(frame))  # a view: copy before the next extend()
    except FrameTooLarge as exc:
        assert isinstance(exc, PeerProtocolError) and exc.close_code == 1009
        assert exc.size > exc.limit == framer.max_frame
        return Outcome(got, (exc.size, exc.limit), None)
    return Outcome(got, None, len(buf))


payloads = st.one_of(st.binary(max_size=64), st.integers(65, 70_000).map(lambda n: b"\xa5" * n))


@FUZZ
@given(st.lists(payloads, max_size=8), st.data())
def test_payloads_round_trip_through_any_split(sent: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame_header(len(p)) + p for p in sent)
    outcome = frame_chunks(LengthPrefixedFramer(), split(stream, cuts_for(data, len(stream))))
    assert outcome == Outcome(sent, None, 0)


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=6), st.integers(0, 40), st.data())
def test_the_first_frame_over_the_limit_is_refused_from_its_header(
    sent: list[bytes], limit: int, data: st.DataObject
) -> None:
    stream = b"".join(frame_header(len(p)) + p for p in sent)
    framer = LengthPrefixedFramer(max_frame=limit)
    # Refused from the header alone: whether its payload has arrived makes no difference.
    outcome = frame_chunks(framer, split(stream, cuts_for(data, len(stream))))
    allowed = []
    for p in sent:
        if len(p) > limit:
            assert outcome.error == (len(p), limit)
            break
        allowed.append(p)
    else:
        assert outcome.error is None
    assert outcome.payloads == allowed


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([0, 3, 64, 1 << 20]), st.data())
def test_any_bytes_frame_the_same_however_they_are_split(
    stream: bytes, limit: int, data: st.DataObject
) -> None:
    framer = LengthPrefixedFramer(max_frame=limit)
    whole = frame_chunks(framer, [stream])
    assert frame_chunks(framer, split(stream, cuts_for(data, len(stream)))) == whole
    assert frame_chunks(framer, [stream[i : i + 1] for i in range(len(stream))]) == whole


@FUZZ
@given(st.binary(max_size=200))
def test_frames_iterator_matches_next_frame(stream: bytes) -> None:
    framer = LengthPrefixedFramer(max_frame=50)
    buf = ReceiveBuffer()
    buf.extend(stream)
    got: list[bytes] = []
    try:
        got.extend(bytes(f) for f in framer.frames(buf))
    except FrameTooLarge:
        got.append(b"<too large>")
    expected = frame_chunks(framer, [stream])
    assert got == expected.payloads + ([b"<too large>"] if expected.error else [])


@FUZZ
@given(st.integers(-(2**40), 2**40))
def test_frame_header_encodes_every_4_byte_size_and_refuses_the_rest(size: int) -> None:
    try:
        header = frame_header(size)
    except LocalProtocolError:
        assert not 0 <= size <= 0xFFFFFFFF
        return
    assert len(header) == 4
    assert FRAME_HEADER.unpack(header) == (size,)

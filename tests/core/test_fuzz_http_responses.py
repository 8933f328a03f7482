"""Property tests of :class:`~netkit.core.bench.http.ResponseReader` against arbitrary input:
a real response stream with bytes flipped, dropped or inserted, cut at arbitrary points, and
random bytes. The only exception it may raise on peer input is :class:`PeerProtocolError`,
and the responses it completes never depend on how reads split the bytes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netkit.core.bench.http import Response, ResponseReader
from netkit.errors import PeerProtocolError

pytestmark = pytest.mark.timeout(60)

STREAM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.0 200 OK\r\n\r\nto the end"
)


def outcome(pieces: list[bytes]) -> tuple[list[Response], str | None]:
    """The responses completed and the error (its class name), feeding ``pieces`` then EOF."""
    reader = ResponseReader(expect_body=b"lo")
    try:
        for piece in pieces:
            reader.feed(piece)
        reader.eof()
    except PeerProtocolError:
        return list(reader.responses), "PeerProtocolError"
    return list(reader.responses), None


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def mutated(draw: st.DrawFn, streams: tuple[bytes, ...] = (STREAM,), least: int = 1) -> bytes:
    """One of ``streams`` with ``least`` to 4 bytes flipped, dropped or inserted."""
    data = bytearray(draw(st.sampled_from(streams)))
    for _ in range(draw(st.integers(least, 4))):
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "drop", "insert"]))
        if op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "drop":
            del data[at]
        else:
            data.insert(at, draw(st.integers(0, 255)))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated(), st.lists(st.integers(0, 10_000), max_size=8))
def test_almost_valid_streams_in_any_split(data: bytes, points: list[int]) -> None:
    whole = outcome([data])
    split = outcome(cut(data, points))
    assert split[1] == whole[1]
    if whole[1] is None:
        assert split == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=6))
def test_random_bytes_raise_only_peer_errors(data: bytes, points: list[int]) -> None:
    outcome(cut(data, points))


def test_the_unmutated_stream() -> None:
    responses, error = outcome([STREAM])
    assert error is None
    assert [r.status for r in responses] == [200, 404, 204, 200]
    assert responses[-1] == Response(200, False, False)

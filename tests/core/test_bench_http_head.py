"""Responses to HEAD (``netkit bench -m HEAD``): each ends with its head whatever its
framing headers announce (RFC 9110 9.3.2), keep-alive from the version and ``Connection``;
fed in every split, since the reader cuts the stream at each head's end itself."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netkit.core.addresses import HTTPURL
from netkit.core.bench.http import HeadResponseReader, HTTPLoad, Response, ResponseReader
from netkit.errors import ConfigError, PeerProtocolError
from tests.core.test_fuzz_http_responses import cut

HEADS = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"  # no body follows, whatever it says
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"HTTP/1.1 404 Not Found\r\nServer: x\r\n\r\n"  # no framing: still no body
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 7\r\n\r\n"
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 20\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 3\r\n\r\n"
)
EXPECTED = [
    Response(200, True),
    Response(200, True),
    Response(404, True),
    Response(204, True),
    Response(200, True),
    Response(304, True),
    Response(200, False),
]


def test_heads_in_every_split_in_two_and_three() -> None:
    for i in range(len(HEADS) + 1):
        for j in range(i, len(HEADS) + 1, 7):
            reader = HeadResponseReader()
            for part in (HEADS[:i], HEADS[i:j], HEADS[j:]):
                reader.feed(memoryview(part))
            assert list(reader.responses) == EXPECTED, (i, j)
            assert not reader.eof()


@pytest.mark.parametrize("step", [1, 3, len(HEADS)])
def test_heads_fed_in_pieces(step: int) -> None:
    reader = HeadResponseReader()
    for i in range(0, len(HEADS), step):
        reader.feed(HEADS[i : i + step])
    assert list(reader.responses) == EXPECTED


def test_the_same_stream_for_a_get_reader_waits_for_bodies() -> None:
    # What the HEAD reader exists for: a GET reader takes the next heads as the first body.
    reader = ResponseReader()
    reader.feed(HEADS)
    assert not reader.responses


def test_an_http_1_0_head_without_keep_alive_closes() -> None:
    reader = HeadResponseReader()
    reader.feed(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert list(reader.responses) == [Response(200, False)]


def test_a_body_after_a_head_response_is_a_protocol_error() -> None:
    reader = HeadResponseReader()
    with pytest.raises(PeerProtocolError, match="malformed"):
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")


def test_the_connection_ending_inside_a_head() -> None:
    reader = HeadResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Le")
    with pytest.raises(PeerProtocolError, match="middle"):
        reader.eof()


def test_switching_protocols_and_a_long_head_are_refused() -> None:
    with pytest.raises(PeerProtocolError, match="101"):
        HeadResponseReader().feed(
            b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
        )
    reader = HeadResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(PeerProtocolError, match="head over"):
        for _ in range(20):
            reader.feed(b"X-Pad: " + b"a" * 4096 + b"\r\n")


def test_head_loads() -> None:
    load = HTTPLoad(method="HEAD")
    assert isinstance(load.reader(), HeadResponseReader)
    assert type(HTTPLoad(method="GET").reader()) is ResponseReader
    request = load.request_for(HTTPURL(False, "h", 80, "/x")).serialize()
    assert request.startswith(b"HEAD /x HTTP/1.1\r\n") and b"Content-Length" not in request
    with pytest.raises(ConfigError, match="no body"):
        HTTPLoad(method="HEAD", expect_body=b"x")


def head_outcome(pieces: list[bytes]) -> tuple[list[Response], bool]:
    reader = HeadResponseReader()
    try:
        for piece in pieces:
            reader.feed(piece)
        reader.eof()
    except PeerProtocolError:
        return list(reader.responses), True
    return list(reader.responses), False


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(HEADS) - 1), st.integers(0, 255)), max_size=3),
    st.lists(st.integers(0, 1000), max_size=6),
)
def test_mutated_heads_in_any_split(flips: list[tuple[int, int]], points: list[int]) -> None:
    data = bytearray(HEADS)
    for at, value in flips:
        data[at] = value
    whole = head_outcome([bytes(data)])
    split = head_outcome(cut(bytes(data), points))
    assert split[1] == whole[1]  # only PeerProtocolError, wherever the reads fall
    if not whole[1]:
        assert split == whole

"""Differential tests of :class:`~netkit.core.bench.http.ResponseReader` against the reader it
replaced (``on_header`` called on every header line, kept here as the reference): on mutated
and truncated response streams, cut into reads anywhere, both complete the same responses and
fail the same way. The fast reader has no ``on_header`` and follows the headers with a second
parser only while a response continues past the end of a read, so every cut matters."""

from __future__ import annotations

from collections import deque

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netkit.core.bench.http import MAX_CHECKED_BODY, MAX_HEAD, Response, ResponseReader
from netkit.errors import PeerProtocolError
from tests.core.test_fuzz_http_responses import cut, mutated

pytestmark = pytest.mark.timeout(60)

_FRAMING = (b"content-length", b"transfer-encoding")

STREAMS = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.0 200 OK\r\n\r\nto the end",
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nabc"
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nhello, end",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nlo"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nzipped lo",
    b"HTTP/1.1 503 Busy\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nslow lo",
)


class ReferenceReader:
    """The reader before netkit's httprate change (f7bade1), unchanged in behaviour."""

    def __init__(self, expect_body: bytes | None = None) -> None:
        self.expect_body = expect_body
        self.responses: deque[Response] = deque()
        self._parser = httptools.HttpResponseParser(self)
        self._body = bytearray()
        self._body_over = False
        self._head = 0
        self._begins = 0
        self._in_head = True
        self._until_eof = False
        self._started = False

    def on_message_begin(self) -> None:
        self._in_head = self._started = self._until_eof = True
        self._head = 0
        self._begins += 1
        if self.expect_body is not None:
            self._body.clear()
            self._body_over = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in _FRAMING:
            self._until_eof = False

    def on_headers_complete(self) -> None:
        self._in_head = False
        status = self._parser.get_status_code()
        if status in (204, 304) or 100 <= status < 200:
            self._until_eof = False

    def on_body(self, body: bytes) -> None:
        if self.expect_body is None:
            return
        if len(self._body) + len(body) > MAX_CHECKED_BODY:
            self._body_over = True
        elif not self._body_over:
            self._body += body

    def on_message_complete(self) -> None:
        self._started = False
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return
        keep_alive = self._parser.should_keep_alive()
        if self.expect_body is None:
            self.responses.append(Response(status, keep_alive))
        else:
            body_ok = not self._body_over and self.expect_body in self._body
            self.responses.append(Response(status, keep_alive, body_ok))

    def feed(self, data: bytes) -> None:
        in_head, begins = self._in_head, self._begins
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise PeerProtocolError("the server switched protocols (101)") from None
        except httptools.HttpParserError as exc:
            raise PeerProtocolError(f"malformed HTTP response: {exc}") from None
        if in_head and self._in_head and begins == self._begins:
            self._head += len(data)
            if self._head > MAX_HEAD:
                raise PeerProtocolError(f"response head over {MAX_HEAD} bytes")

    def eof(self) -> bool:
        if not self._started:
            return False
        if self._in_head or not self._until_eof:
            raise PeerProtocolError("the connection closed in the middle of a response")
        self.on_message_complete()
        self.responses[-1] = self.responses[-1]._replace(keep_alive=False)
        return True


def outcome(
    reader: ResponseReader | ReferenceReader, pieces: list[bytes]
) -> tuple[list[Response], str | None]:
    """The responses completed and the error message, feeding ``pieces`` then EOF."""
    try:
        for piece in pieces:
            reader.feed(piece)
        reader.eof()
    except PeerProtocolError as exc:
        return list(reader.responses), str(exc)
    return list(reader.responses), None


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """One of :data:`STREAMS`, maybe mutated, maybe cut short (the connection ends early)."""
    data = draw(mutated(STREAMS, 0))
    end = draw(st.integers(0, len(data)))
    return data[: len(data) - end // 4] if draw(st.booleans()) else data


@settings(max_examples=600, deadline=None)
@given(streams(), st.lists(st.integers(0, 10_000), max_size=8), st.sampled_from([None, b"lo"]))
def test_same_outcome_as_the_reference_reader(
    data: bytes, points: list[int], expect_body: bytes | None
) -> None:
    pieces = cut(data, points)
    assert outcome(ResponseReader(expect_body), pieces) == outcome(
        ReferenceReader(expect_body), pieces
    )


@pytest.mark.parametrize("stream", STREAMS)
def test_every_cut_of_every_stream(stream: bytes) -> None:
    """Each stream, whole and cut short at every byte, in one read and in reads of 1-7 bytes."""
    for end in range(len(stream) + 1):
        data = stream[:end]
        for step in (len(data) or 1, 1, 3, 7):
            pieces = [data[i : i + step] for i in range(0, len(data), step)]
            for expect_body in (None, b"lo"):
                got = outcome(ResponseReader(expect_body), pieces)
                assert got == outcome(ReferenceReader(expect_body), pieces), (end, step)


def test_a_body_to_the_end_spanning_reads_completes_at_eof() -> None:
    reader = ResponseReader()
    for piece in (b"HTTP/1.1 200 OK\r\nServer: x\r\n", b"\r\nsome", b" more", b" body"):
        reader.feed(piece)
    assert not reader.responses
    assert reader.eof()
    assert list(reader.responses) == [Response(200, False)]


def test_a_framed_body_cut_after_keep_alive_responses_is_an_error() -> None:
    """Keep-alive responses first (no second parser while reads end between them), then a
    ``Connection: close`` response whose Content-Length body the connection cuts."""
    reader = ResponseReader()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    reader.feed(ok * 3)
    reader.feed(ok + b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\nabc")
    with pytest.raises(PeerProtocolError, match="middle of a response"):
        reader.eof()
    assert list(reader.responses) == [Response(200, True)] * 4


@pytest.mark.parametrize("size", [MAX_CHECKED_BODY - 1, MAX_CHECKED_BODY, MAX_CHECKED_BODY + 1])
@pytest.mark.parametrize("step", [None, 100_000, 333_333])
def test_the_body_check_limit_in_one_read_and_across_reads(size: int, step: int | None) -> None:
    """A body at, under and over the checked limit (the needle at its start), chunked and
    with a Content-Length, in one read or in reads of ``step`` bytes."""
    body = b"lo" + b"x" * (size - 2)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (size // 2, body[: size // 2])
    chunked = chunked[:-5] + b"%x\r\n%s\r\n0\r\n\r\n" % (size - size // 2, body[size // 2 :])
    stream = (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (size, body)
        + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked
        + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nlo"
    )
    step = step or len(stream)
    pieces = [stream[i : i + step] for i in range(0, len(stream), step)]
    got = outcome(ResponseReader(b"lo"), pieces)
    assert got == outcome(ReferenceReader(b"lo"), pieces)
    ok = size <= MAX_CHECKED_BODY
    assert got == ([Response(200, True, ok), Response(200, True, ok), Response(200, True)], None)

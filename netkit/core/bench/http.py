"""HTTP/1.1 for ``netkit bench``, sans-I/O: the request every connection sends
(:class:`HTTPRequest`, serialized once), the answer expected (:class:`StatusCheck`, an optional
body check) and :class:`ResponseReader`, which feeds received bytes to httptools' response
parser and hands back each complete response in order.

httptools is the binding of llhttp (Node's parser, the one uvicorn uses): a C state machine
that de-chunks bodies and follows ``Content-Length`` and keep-alive (RFC 9112), fast enough
that parsing is not what limits a load generator written in Python. netkit already depends on
it for proxy's HTTP API (``net/http_api.py``), so a second parser would add nothing.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, NamedTuple

import httptools

from netkit.core.addresses import HTTPURL
from netkit.errors import ConfigError, PeerProtocolError, Setting

METHOD, HEADER, EXPECT_STATUS = Setting("method"), Setting("header"), Setting("expect_status")

MAX_HEAD: Final = 64 * 1024
"""The most bytes a response's status line and headers may take (httptools has no limit)."""
MAX_CHECKED_BODY: Final = 1 << 20
"""The most bytes of a body kept for the body check; a longer body fails it."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2 token
# Set by netkit itself: a user's value would make the request lie about its body.
_FRAMING = ("content-length", "transfer-encoding")
_FRAMING_BYTES = frozenset(name.encode() for name in _FRAMING)


def parse_header(text: str) -> tuple[str, str]:
    """``Name: value`` (curl's ``-H``) as a (name, value) pair.

    Raises:
        ConfigError: no colon, a name that is not an HTTP token, or a line break in it.
    """
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.fullmatch(name):
        raise ConfigError((HEADER, f" {text!r}: expected 'Name: value'"))
    if "\r" in value or "\n" in value:
        raise ConfigError((HEADER, f" {text!r}: a header value cannot hold a line break"))
    if name.lower() in _FRAMING:
        raise ConfigError((HEADER, f" {text!r}: netkit sets {name} from the body"))
    return name, value


@dataclass(frozen=True)
class HTTPRequest:
    """The request a bench connection sends, again and again.

    Attributes:
        method: ``GET``, ``HEAD``, ``POST`` ... (any token; methods are case-sensitive).
        resource: the request target (path and query).
        host: the ``Host`` header, unless ``headers`` has one.
        headers: (name, value) pairs, in order.
        body: sent with a ``Content-Length`` (also 0 for POST, PUT and PATCH).
    """

    method: str = "GET"
    resource: str = "/"
    host: str = "localhost"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.method):
            raise ConfigError((METHOD, f" {self.method!r} is not an HTTP method"))

    def serialize(self) -> bytes:
        """The request's bytes (RFC 9112 3: request line, headers, empty line, body)."""
        given = {name.lower() for name, _ in self.headers}
        lines = [f"{self.method} {self.resource} HTTP/1.1"]
        if "host" not in given:
            lines.append(f"Host: {self.host}")
        if "user-agent" not in given:
            lines.append("User-Agent: netkit-bench")
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class StatusCheck:
    """Which status codes answer a request well (``--expect-status``); others are errors.

    Attributes:
        ranges: inclusive (low, high) code ranges.
        text: as given, for messages.
    """

    ranges: tuple[tuple[int, int], ...] = ((200, 299),)
    text: str = "2xx"

    @classmethod
    def parse(cls, text: str, *, option: Setting = EXPECT_STATUS) -> StatusCheck:
        """``2xx``, ``200``, ``200,301``, ``200-399`` (comma-separated, any mix).

        ``option`` is the setting errors name (``lb --check-expect`` parses the same codes).

        Raises:
            ConfigError: an item that is none of these, or a code outside 100-599.
        """
        ranges = []
        for item in text.split(","):
            item = item.strip().lower()
            if re.fullmatch(r"[1-5]xx", item):
                low = int(item[0]) * 100
                ranges.append((low, low + 99))
                continue
            m = re.fullmatch(r"([0-9]{3})(?:-([0-9]{3}))?", item)
            if not m:
                raise ConfigError(
                    (option, f" {text!r}: expected codes as in 200, 2xx, 200-399 or 200,301")
                )
            low, high = int(m.group(1)), int(m.group(2) or m.group(1))
            if not 100 <= low <= high <= 599:
                raise ConfigError((option, f" {text!r}: codes are 100-599, low to high"))
            ranges.append((low, high))
        return cls(tuple(ranges), text)

    def accepts(self, status: int) -> bool:
        """True when ``status`` is one of the expected codes."""
        return any(low <= status <= high for low, high in self.ranges)

    def codes(self) -> frozenset[int]:
        """Every expected code (a set lookup per response in a run's hot path)."""
        return frozenset(code for low, high in self.ranges for code in range(low, high + 1))


class Response(NamedTuple):
    """One complete final response (a named tuple: one is made per response).

    Attributes:
        status: its status code.
        keep_alive: the connection may carry another request (HTTP/1.1 and no
            ``Connection: close``).
        body_ok: the body check held (True without a check).
    """

    status: int
    keep_alive: bool
    body_ok: bool = True


class _Framing:
    """A second parser that follows a connection's responses from a message boundary, with
    ``on_header``: it tells whether the body of the response in progress runs to the end of
    the connection (RFC 9112 6.3: it may have one, and no ``Content-Length`` or
    ``Transfer-Encoding`` says where it ends)."""

    def __init__(self) -> None:
        self._framed = False  # the current response has a framing header
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        """httptools: a response begins."""
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header line."""
        if name.lower() in _FRAMING_BYTES:
            self._framed = True

    def body_to_eof(self) -> bool:
        """The body of the response in progress ends with the connection."""
        status = self.parser.get_status_code()
        if status in (204, 304) or 100 <= status < 200:
            return False  # RFC 9112 6.3: no body
        return not self._framed


def _parse(parser: httptools.HttpResponseParser, data: bytes | bytearray | memoryview) -> None:
    """``parser.feed_data(data)``, its errors as :class:`PeerProtocolError` (as
    :meth:`ResponseReader.feed` maps them: the same bytes, parsed again)."""
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        raise PeerProtocolError("the server switched protocols (101)") from None
    except httptools.HttpParserError as exc:
        raise PeerProtocolError(f"malformed HTTP response: {exc}") from None


class ResponseReader:
    """The responses on one connection, parsed as bytes arrive (httptools callbacks).

    1xx interim responses (``100 Continue``) are skipped; a response whose body runs to the
    end of the connection completes at :meth:`eof`.

    httptools calls back into Python for every callback the object has (it looks them up
    when the parser is made), ``on_header`` once per header line (nginx sends eight), which
    costs more than parsing the rest. This parser has no ``on_header``, and ``on_body`` only
    with a body check (a C-level ``list.append``: the pieces are judged when the response
    completes, or bounded into a buffer when it continues in the next read). The headers
    matter only when the connection ends inside a body (does it run to the end?): whenever a
    response continues past the end of a read, a :class:`_Framing` parser follows the
    stream from the start of that read (a message boundary, or it was already following)
    until a read ends between responses. Responses that fit in one read, the usual case,
    are parsed once.

    Args:
        expect_body: bytes each response body must contain, or None for no check.
    """

    on_body: Callable[[bytes], None]
    """httptools: (part of) the body, de-chunked (with a body check only)."""
    _follows_framing: ClassVar[bool] = True  # HEAD responses have no body to follow

    def __init__(self, expect_body: bytes | None = None) -> None:
        self.expect_body = expect_body
        self.responses: deque[Response] = deque()
        self._pieces: list[bytes] = []  # the current body's pieces from the current read
        if expect_body is not None:
            self.on_body = self._pieces.append
        self._parser = httptools.HttpResponseParser(self)
        self._framing: _Framing | None = None  # following the stream (see above)
        self._body = bytearray()  # the current body's pieces from earlier reads (bounded)
        self._body_over = False  # ... were over MAX_CHECKED_BODY
        self._head = 0  # bytes of the current head seen in whole reads
        self._begins = 0
        self._in_head = True
        self._started = False
        # (status, keep-alive, body_ok) as an int -> its Response: one object per kind, not
        # one per response (llhttp reads three digits: at most 4,000).
        self._made: dict[int, Response] = {}

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        """httptools: a response begins."""
        self._in_head = self._started = True
        self._head = 0
        self._begins += 1

    def on_headers_complete(self) -> None:
        """httptools: the head is complete."""
        self._in_head = False

    def _keep_pieces(self) -> None:
        """Move the body's pieces into :attr:`_body`, up to :data:`MAX_CHECKED_BODY` (a
        longer body fails the check)."""
        body = self._body
        for piece in self._pieces:
            if len(body) + len(piece) > MAX_CHECKED_BODY:
                self._body_over = True
            elif not self._body_over:
                body += piece
        self._pieces.clear()

    def on_message_complete(self) -> None:
        """httptools: the response is complete; 1xx interim responses are not answers."""
        self._started = False
        parser = self._parser
        status = parser.get_status_code()
        body_ok = True
        if self.expect_body is not None:
            pieces = self._pieces
            if len(pieces) == 1 and not self._body and not self._body_over:  # in one read
                body_ok = len(pieces[0]) <= MAX_CHECKED_BODY and self.expect_body in pieces[0]
                pieces.clear()
            else:
                self._keep_pieces()
                body_ok = not self._body_over and self.expect_body in self._body
                self._body.clear()
                self._body_over = False
        if 100 <= status < 200:
            return
        keep_alive = parser.should_keep_alive()
        key = status << 2 | keep_alive << 1 | body_ok
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = Response(status, keep_alive, body_ok)
        self.responses.append(made)

    # --- feeding ---------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse ``data``; complete responses are appended to :attr:`responses`.

        Raises:
            PeerProtocolError: the bytes are not an HTTP/1.1 response, a head is over
                :data:`MAX_HEAD` bytes, or the server switched protocols.
        """
        in_head, begins = self._in_head, self._begins
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise PeerProtocolError("the server switched protocols (101)") from None
        except httptools.HttpParserError as exc:
            raise PeerProtocolError(f"malformed HTTP response: {exc}") from None
        if self._in_head and in_head and begins == self._begins:
            # The whole read was head of one response (httptools keeps a header line until
            # it ends, however long): bounded here, within one read of the limit.
            self._head += len(data)
            if self._head > MAX_HEAD:
                raise PeerProtocolError(f"response head over {MAX_HEAD} bytes")
        framing = self._framing
        if framing is not None:
            _parse(framing.parser, data)
            if not self._started:
                self._framing = None  # between responses again
        elif self._started and self._follows_framing:
            # A response continues in the next read; this read began between responses
            # (had one been under way, a _Framing would be following).
            self._framing = framing = _Framing()
            _parse(framing.parser, data)
        if self._pieces and self._started:  # a body continues in the next read
            self._keep_pieces()

    def eof(self) -> bool:
        """The connection ended: complete a response whose body runs to the end.

        Returns:
            True when that completed a response; False when none was under way.

        Raises:
            PeerProtocolError: the connection ended inside a response.
        """
        if not self._started:
            return False
        framing = self._framing
        if self._in_head or framing is None or not framing.body_to_eof():
            raise PeerProtocolError("the connection closed in the middle of a response")
        self.on_message_complete()
        self.responses[-1] = self.responses[-1]._replace(keep_alive=False)
        return True


class HeadResponseReader(ResponseReader):
    """The responses to HEAD requests on one connection: each ends with its head, whatever
    its ``Content-Length`` or ``Transfer-Encoding`` say (RFC 9110 9.3.2, RFC 9112 6.3).

    httptools cannot be told that a response answers a HEAD (llhttp's way, a return value of
    1 from ``on_headers_complete``, is not reachable from Python): its parser would wait for
    the body the headers announce. So the stream is cut at the end of each head, the first
    CRLF CRLF (llhttp accepts no other line end, so it is where llhttp itself ends the head),
    and each head is parsed by a fresh parser. Keep-alive is decided from the version and
    ``Connection`` alone, as llhttp's ``should_keep_alive`` also counts a missing
    ``Content-Length`` (a body to EOF), which a HEAD response does not have.
    """

    _follows_framing = False

    def __init__(self) -> None:
        super().__init__(None)
        self._tail = b""  # the last bytes fed of the current head (a CRLF CRLF may straddle)
        self._close = self._keep = False  # Connection: close / keep-alive in this head

    def on_message_begin(self) -> None:
        """httptools: a response begins."""
        super().on_message_begin()
        self._close = self._keep = False

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header line; ``Connection`` options decide keep-alive."""
        if name.lower() == b"connection":
            options = {option.strip().lower() for option in value.split(b",")}
            self._close |= b"close" in options
            self._keep |= b"keep-alive" in options

    def on_headers_complete(self) -> None:
        """httptools: the head is complete, and so is the response (1xx are interim)."""
        self._in_head = self._started = False
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return
        if self._parser.get_http_version() == "1.1":
            keep_alive = not self._close  # RFC 9112 9.3: persistent unless "close"
        else:
            keep_alive = self._keep and not self._close
        self.responses.append(Response(status, keep_alive))

    def on_message_complete(self) -> None:
        """httptools: nothing more; the head's end completed the response."""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse ``data``, cut at the end of each head (see the class docstring).

        Raises:
            PeerProtocolError: as :meth:`ResponseReader.feed`.
        """
        data = bytes(data)
        start = 0
        while start < len(data):
            end = (self._tail + data[start:]).find(b"\r\n\r\n")
            if end < 0:
                super().feed(data[start:])
                self._tail = (self._tail + data[start:])[-3:]
                return
            cut = start + end + 4 - len(self._tail)  # the tail holds no CRLF CRLF: cut > start
            super().feed(data[start:cut])
            self._parser = httptools.HttpResponseParser(self)  # the next head, from scratch
            self._tail = b""
            start = cut

    def eof(self) -> bool:
        """The connection ended: no response runs to the end of a connection.

        Raises:
            PeerProtocolError: the connection ended inside a head.
        """
        if self._started:
            raise PeerProtocolError("the connection closed in the middle of a response")
        return False


@dataclass(frozen=True)
class HTTPLoad:
    """What each request of an HTTP run is, and how its answer is judged (``-m``, ``-H``,
    ``--body``, ``--expect-status``, ``--expect-body``); the URL gives the rest.

    Attributes:
        expect_body: bytes every response body must contain, or None.
    """

    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    status: StatusCheck = StatusCheck()
    expect_body: bytes | None = None

    def __post_init__(self) -> None:
        self.request_for(HTTPURL(False, "localhost", 80))  # refuses a bad method at once
        if self.head_only and self.expect_body is not None:
            raise ConfigError("--expect-body: responses to HEAD have no body to check")

    @property
    def head_only(self) -> bool:
        """Responses have no body whatever their headers say: the method is HEAD."""
        return self.method == "HEAD"

    def reader(self) -> ResponseReader:
        """A reader for one connection's responses."""
        return HeadResponseReader() if self.head_only else ResponseReader(self.expect_body)

    def request_for(self, url: HTTPURL) -> HTTPRequest:
        """The request sent to ``url``."""
        return HTTPRequest(self.method, url.resource, url.host_header, self.headers, self.body)

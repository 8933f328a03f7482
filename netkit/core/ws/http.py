"""HTTP/1.1 as the WebSocket opening handshake uses it (RFC 7230, RFC 6455 4.1-4.2): heads and headers.

Heads are read line by line out of a :class:`~netkit.core.buffers.ReceiveBuffer` with
websockets' limits: 8 KiB per line, 128 header lines (past them the server answers 431).
Bytes that cannot start an HTTP message (a TLS ClientHello) are told apart as soon as they
arrive, not when a line end comes. Header names are matched case-insensitively and
list-valued headers (``Connection``, ``Upgrade``, ``Sec-WebSocket-Protocol``,
``Sec-WebSocket-Extensions``) are split on commas, across repeated header lines too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from netkit.core.buffers import ReceiveBuffer
from netkit.errors import PeerProtocolError

MAX_LINE: Final = 8192
MAX_HEADERS: Final = 128
# The most bytes a head can take before it is either complete or refused: the start line,
# MAX_HEADERS header lines and the empty line, each with CRLF, after up to MAX_HEADERS empty
# lines. A receive buffer that can hold this never overflows during the handshake.
MAX_HEAD: Final = (MAX_HEADERS + 2) * (MAX_LINE + 2) + 2 * MAX_HEADERS
_TOKEN_RE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_STR_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible ASCII, space, tab and obs-text (RFC 7230 field-value), no control characters.
_VALUE_RE: Final = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")


def is_token(text: str) -> bool:
    """Tell whether ``text`` is an HTTP token (RFC 7230 3.2.6): a header name, a subprotocol."""
    return _TOKEN_STR_RE.fullmatch(text) is not None


class InvalidHandshake(PeerProtocolError):
    """The peer's side of the opening handshake is malformed or does not agree with ours.

    There is no WebSocket connection yet, so there is no close code to answer with.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, close_code=None)


class UpgradeRefused(InvalidHandshake):
    """The server answered the upgrade request with something other than 101.

    Attributes:
        status_code: the HTTP status code (e.g. 403).
        reason: the reason phrase (e.g. "Forbidden").
        headers: the response headers.
    """

    def __init__(self, status_code: int, reason: str, headers: Headers) -> None:
        super().__init__(f"upgrade refused: {status_code} {reason}".rstrip())
        self.status_code = status_code
        self.reason = reason
        self.headers = headers


class Headers:
    """HTTP header lines in arrival order, looked up case-insensitively.

    Args:
        items: ``(name, value)`` pairs.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get_all(self, name: str) -> list[str]:
        """Return every value of header ``name``, in order."""
        lname = name.lower()
        return [v for n, v in self._items if n.lower() == lname]

    def get(self, name: str) -> str | None:
        """Return the value of a header that must appear at most once.

        Raises:
            InvalidHandshake: the header appears more than once.
        """
        values = self.get_all(name)
        if len(values) > 1:
            raise InvalidHandshake(f"more than one {name} header")
        return values[0] if values else None

    def tokens(self, name: str) -> list[str]:
        """Return the comma-separated elements of every ``name`` header, stripped, in order."""
        return [t.strip() for v in self.get_all(name) for t in v.split(",") if t.strip()]


def parse_extension_header(values: Iterable[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse ``Sec-WebSocket-Extensions`` values (9.1) into ``(name, [(param, value)])`` pairs.

    Parameter values may be tokens or quoted strings; a parameter without ``=`` has value None.

    Raises:
        InvalidHandshake: the header does not follow the grammar.
    """
    result: list[tuple[str, list[tuple[str, str | None]]]] = []
    for header in values:
        for element in _split_quoted(header, ","):
            if not element.strip():
                continue
            parts = _split_quoted(element, ";")
            name = parts[0].strip()
            if not _TOKEN_STR_RE.fullmatch(name):
                raise InvalidHandshake(f"invalid extension name {name!r}")
            params: list[tuple[str, str | None]] = []
            for part in parts[1:]:
                pname, eq, pvalue = part.partition("=")
                pname, pvalue = pname.strip(), pvalue.strip()
                if not _TOKEN_STR_RE.fullmatch(pname):
                    raise InvalidHandshake(f"invalid extension parameter {part!r}")
                if not eq:
                    params.append((pname, None))
                    continue
                if len(pvalue) >= 2 and pvalue[0] == pvalue[-1] == '"':
                    pvalue = re.sub(r"\\(.)", r"\1", pvalue[1:-1])
                if not _TOKEN_STR_RE.fullmatch(pvalue):
                    raise InvalidHandshake(f"invalid extension parameter value {part!r}")
                params.append((pname, pvalue))
            result.append((name, params))
    return result


def _split_quoted(text: str, sep: str) -> list[str]:
    # Split on ``sep`` outside double-quoted strings (with backslash escapes).
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise InvalidHandshake(f"unterminated quoted string in {text!r}")
    parts.append(text[start:])
    return parts


class HeadTooLarge(Exception):
    """A line or the header section is over the limits (the server answers 400 or 431)."""

    def __init__(self, message: str, *, in_headers: bool) -> None:
        super().__init__(message)
        self.in_headers = in_headers  # past the start line: the header section is too large


def _start_prefix(buf: ReceiveBuffer) -> bytes:
    # The first bytes of the start line (empty lines before it are ignored, RFC 7230 3.5).
    return bytes(buf.view(64)).lstrip(b"\r\n")


def not_a_request(buf: ReceiveBuffer) -> bool:
    """Tell whether the bytes so far cannot begin an HTTP request line (method SP ...).

    Checked before the head is parsed, so that the verdict is the same however the bytes
    were split.
    """
    prefix = _start_prefix(buf)
    method = _TOKEN_RE.match(prefix)
    end = method.end() if method else 0
    return end < len(prefix) and (end == 0 or prefix[end] != 0x20)


def tls_hint(buf: ReceiveBuffer) -> str:
    # 0x16 is a TLS handshake record (RFC 8446 5.1); the message is the same however the
    # bytes were split, so it names no more than the first byte.
    return " (a TLS handshake: use wss://)" if _start_prefix(buf)[:1] == b"\x16" else ""


def not_a_response(buf: ReceiveBuffer) -> bool:
    """Tell whether the bytes so far cannot begin an HTTP status line (``HTTP/``)."""
    prefix = _start_prefix(buf)[:5]
    return not b"HTTP/".startswith(prefix)


def read_head(buf: ReceiveBuffer) -> tuple[str, Headers] | None:
    """Read an HTTP head (start line + headers + empty line) from ``buf``, or None if incomplete.

    Consumes the head on success and leaves what follows (a body, or WebSocket frames).
    Lines end in CRLF; a bare LF is accepted too (RFC 7230 3.5).

    Raises:
        HeadTooLarge: a line is longer than MAX_LINE or there are more than MAX_HEADERS.
        InvalidHandshake: a header line does not parse.
    """
    data = buf.view()
    pos = skipped = 0
    lines: list[bytes] = []
    while True:
        end = bytes(data[pos : pos + MAX_LINE + 2]).find(b"\n")
        if end < 0:
            if len(data) - pos > MAX_LINE + 1:
                raise HeadTooLarge("line too long", in_headers=bool(lines))
            return None
        line = bytes(data[pos : pos + end])
        pos += end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > MAX_LINE:
            raise HeadTooLarge("line too long", in_headers=bool(lines))
        if not line:
            if not lines:
                # RFC 7230 3.5: ignore empty lines before the start line (a few: they
                # count as lines, or endless CRLFs would fill the buffer).
                skipped += 1
                if skipped > MAX_HEADERS:
                    raise HeadTooLarge("too many empty lines", in_headers=False)
                continue
            break
        lines.append(line)
        if len(lines) > MAX_HEADERS + 1:
            raise HeadTooLarge("too many headers", in_headers=True)
    buf.consume(pos)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN_RE.fullmatch(name):
            # Also rejects obs-fold continuation lines (RFC 7230 3.2.4).
            raise InvalidHandshake(f"invalid header line {line[:80]!r}")
        value = value.strip(b" \t")
        if not _VALUE_RE.fullmatch(value):
            raise InvalidHandshake(f"invalid header value for {name.decode()}")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    try:
        start = lines[0].decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidHandshake("start line is not ASCII") from exc
    return start, Headers(headers)


def http_response(
    status: int,
    reason: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """Serialize an HTTP/1.1 response head, and its body when ``status`` is not 101.

    Args:
        status: the status code.
        reason: the reason phrase.
        headers: header lines; ``Content-Length`` is added for non-101 responses.
        body: the body of a non-101 response.

    Returns:
        The bytes to send.
    """
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if status != 101:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

"""What a WebSocket connection reports: the events of :mod:`~netkit.core.ws.protocol`.

The opening handshake's outcome comes first (RFC 6455 section 4): on a server
:class:`Accepted`, :class:`HealthCheck` or :class:`Rejected` (each with the HTTP answer the
protocol queued), on a client :class:`HandshakeResponse`. Then the connection's (sections
5-7): :class:`Message`, :class:`Ping`, :class:`Pong`, :class:`CloseReceived`, and
:class:`ConnectionClosed` last.

:class:`Message` is built once per message and is therefore a plain slots dataclass; the
others are frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.frames import Opcode
from netkit.core.ws.http import Headers
from netkit.core.ws.mask import Buffer
from netkit.errors import PeerProtocolError

__all__ = [
    "Accepted",
    "CloseReceived",
    "ConnectionClosed",
    "Event",
    "HandshakeResponse",
    "HealthCheck",
    "Message",
    "Ping",
    "Pong",
    "Rejected",
    "Request",
]


@dataclass(slots=True)
class Message:
    """A complete data message (not frozen: a frozen dataclass costs three times as much to
    build, and one is built per message).

    Attributes:
        data: the payload. A memoryview of the receive buffer for a single uncompressed frame
            (valid until the buffer is next written), a bytearray for a fragmented message
            (joined), bytes for a compressed one (decompressed).
        text: a text message (valid UTF-8, checked) rather than binary.
    """

    data: Buffer
    text: bool = False

    def __repr__(self) -> str:
        # Payloads can be megabytes: show the size and a prefix only.
        head = bytes(self.data[:32])
        more = "..." if len(self.data) > 32 else ""
        return f"Message({head!r}{more}, len={len(self.data)}, text={self.text})"

    @property
    def opcode(self) -> Opcode:
        """The opcode of the message's first frame."""
        return Opcode.TEXT if self.text else Opcode.BINARY

    def as_text(self) -> str:
        """Decode a text message (already validated, so this cannot fail for text)."""
        return bytes(self.data).decode("utf-8")


@dataclass(frozen=True)
class Ping:
    """A ping from the peer (5.5.2); a pong has already been queued if ``auto_pong`` is on.

    Attributes:
        payload: the ping's application data (copied: at most 125 bytes).
    """

    payload: bytes = b""


@dataclass(frozen=True)
class Pong:
    """A pong from the peer (5.5.3).

    Attributes:
        payload: the pong's application data (copied: at most 125 bytes).
    """

    payload: bytes = b""


@dataclass(frozen=True)
class CloseReceived:
    """The peer sent a close frame (5.5.1); if we had not sent one, an echo is queued.

    Attributes:
        code: the status code, 1005 if the frame had none.
        reason: the reason, possibly empty.
    """

    code: int
    reason: str = ""


@dataclass(frozen=True)
class ConnectionClosed:
    """The TCP connection is closed (:meth:`Protocol.receive_eof`); the last event.

    Attributes:
        code: the close code received, 1006 if the connection dropped without one (7.1.5).
        reason: the close reason received.
        error: the peer's protocol violation that made us fail the connection, if any.
    """

    code: int
    reason: str = ""
    error: PeerProtocolError | None = None


# --- the opening handshake -------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A parsed HTTP request head.

    Attributes:
        method: e.g. ``GET``.
        target: the request target as sent (path and query).
        version: e.g. ``HTTP/1.1``.
        headers: the request headers.
    """

    method: str
    target: str
    version: str
    headers: Headers

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]


@dataclass(frozen=True)
class Accepted:
    """The upgrade is accepted: send ``response``, then speak WebSocket.

    Attributes:
        request: the client's request.
        response: the 101 response to send.
        subprotocol: the chosen subprotocol, or None.
        deflate: the agreed permessage-deflate parameters, or None.
    """

    request: Request
    response: bytes
    subprotocol: str | None = None
    deflate: DeflateParams | None = None


@dataclass(frozen=True)
class HealthCheck:
    """A plain ``GET`` of the health path without Upgrade: send ``response`` (200) and close.

    Attributes:
        request: the client's request.
        response: the ``200 OK`` response with body ``ok``.
    """

    request: Request
    response: bytes


@dataclass(frozen=True)
class Rejected:
    """The request cannot be upgraded: send ``response`` and close.

    Attributes:
        status_code: 400, 403, 404, 405, 426, 431, or 503 (:func:`unavailable`).
        message: why, for logs.
        response: the HTTP response to send.
        request: the request, or None if it did not parse.
    """

    status_code: int
    message: str
    response: bytes
    request: Request | None = None


@dataclass(frozen=True)
class HandshakeResponse:
    """A server's accepted (101) response, checked against our request.

    Attributes:
        status_code: always 101.
        reason: the reason phrase.
        headers: the response headers.
        subprotocol: the subprotocol the server chose among ours, or None.
        deflate: the agreed permessage-deflate parameters, or None if not in use.
    """

    status_code: int
    reason: str
    headers: Headers
    subprotocol: str | None = None
    deflate: DeflateParams | None = None


Event = (
    Message
    | Ping
    | Pong
    | CloseReceived
    | ConnectionClosed
    | Accepted
    | HealthCheck
    | Rejected
    | HandshakeResponse
)

"""What a WebSocket connection reports (RFC 6455 sections 5-7): the events of :mod:`~netkit.core.ws.protocol`.

:class:`Message` is built once per message and is therefore a plain slots dataclass; the
others are frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

from netkit.core.ws.frames import Opcode
from netkit.core.ws.mask import Buffer
from netkit.errors import PeerProtocolError

__all__ = ["CloseReceived", "ConnectionClosed", "Event", "Message", "Ping", "Pong"]


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


Event = Message | Ping | Pong | CloseReceived | ConnectionClosed

"""How a WebSocket ↔ byte-stream bridge maps the end of one side onto the other (sans-I/O).

A bridge (``ws-server --to``, ``ws-client --listen``, ``ws-client --stdio``) carries binary
messages as bytes and bytes as binary messages; what it must decide is what each way of
ending means on the other side. The mapping, both ways:

============================  ===============================================
stream side                   WebSocket side
============================  ===============================================
EOF (FIN: shutdown write)     close 1000 (normal closure), after every byte
reset, or a TLS error         close 1011 (unexpected condition), reason says
close 1000, 1001 or 1005      shutdown write (FIN), after every byte
any other close code          reset (RST): the stream has no codes to say it
no close frame (1006)         reset (RST)
============================  ===============================================

A close frame from the WebSocket peer is a half-close: the stream gets its FIN, and our
reply waits until the stream has sent its own (:class:`BridgeServerProtocol`,
:class:`BridgeClientProtocol`), so what the stream still sends is delivered, as a TCP
half-close allows (within the bridge's linger time). A FIN is what a clean close looks like
on a byte stream, a reset what a broken one looks like, so a program on either side sees
the other end's kind of ending.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from netkit.core.ws.client import ClientProtocol
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.server import ServerProtocol

# The close codes a stream passes on as a FIN (RFC 6455 7.4.1: the normal ones).
CLEAN_CODES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD})


class StreamEnd(enum.Enum):
    """How a byte stream ends: a FIN (its writer is done) or a reset (it broke)."""

    FIN = "fin"
    RESET = "reset"

    @classmethod
    def for_close(cls, code: int | None) -> StreamEnd:
        """What a WebSocket close with ``code`` (None: no close frame) becomes on the stream."""
        return cls.FIN if code is not None and code in CLEAN_CODES else cls.RESET

    def close_frame(self, detail: str = "") -> WSClose:
        """The close frame the WebSocket side sends when the stream ended this way.

        Args:
            detail: why, for a reset (``connection reset by 127.0.0.1:5000``); cut to fit.
        """
        if self is StreamEnd.FIN:
            return WSClose(CloseCode.NORMAL_CLOSURE, "")
        return WSClose(CloseCode.INTERNAL_ERROR, _fit(detail or "stream reset"))


@dataclass(frozen=True)
class WSClose:
    """A close frame to send: code and reason (at most 123 bytes of UTF-8)."""

    code: int
    reason: str


def _fit(reason: str) -> str:
    # RFC 6455 5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore")


class BridgeServerProtocol(ServerProtocol):
    """The server side of a bridge: the client's close is a half-close, answered once the
    stream has ended too (:meth:`~netkit.core.ws.protocol.Protocol.answer_close`)."""

    __slots__ = ()
    hold_close_reply = True


class BridgeClientProtocol(ClientProtocol):
    """The client side of a bridge: the server's close is answered once the stream ended."""

    __slots__ = ()
    hold_close_reply = True

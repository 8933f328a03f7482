"""What ``ws-server`` does with messages: echo, broadcast (a chat room) or sink."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from netkit.core.ws.frames import CloseCode
from netkit.core.ws.handshake import ServerHandshake
from netkit.core.ws.protocol import Message
from netkit.errors import PeerProtocolError
from netkit.net.ws import WebSocketServerConnection, WSTimeouts
from netkit.net.zerocopy import Buffer


class Mode(enum.Enum):
    """What ws-server does with each message (``--mode``)."""

    ECHO = "echo"  # send it back
    BROADCAST = "broadcast"  # send it to every other member of the room (a chat)
    SINK = "sink"  # count it and drop it

    @property
    def single_process(self) -> bool:
        """True when every client must be served by one process (the room is in memory)."""
        return self is Mode.BROADCAST


# As module constants for the per-message path: Mode.ECHO looked up on the class costs 0.14 us
# a message, a module global 0.01 us (timeit, Python 3.11).
_ECHO, _BROADCAST = Mode.ECHO, Mode.BROADCAST
SLOW_MEMBER_SLACK = 4 << 20  # bytes a broadcast member may lag behind, beyond one message


class Room:
    """The connections of one broadcast room (one per server process)."""

    def __init__(self) -> None:
        self.members: set[ModeConnection] = set()


class ModeConnection(WebSocketServerConnection):
    """A server connection that handles messages as its mode says and logs its events.

    Args:
        mode: what to do with each message (a broadcast goes to every other member of
            ``room``).
        log: receives (event, fields); None to log nothing.
        log_messages: also log every message, ping and pong (JSON output).
        message_logger: given the peer, returns what logs each message, called with its type
            (``text``/``binary``) and size: the per-message path, prepared once per
            connection. Without it messages go to ``log``.
    """

    def __init__(
        self,
        handshake: ServerHandshake,
        *,
        mode: Mode,
        room: Room,
        log: Callable[[str, dict[str, Any]], None] | None,
        log_messages: bool,
        max_size: int | None,
        timeouts: WSTimeouts,
        message_logger: Callable[[str], Callable[..., None]] | None = None,
    ) -> None:
        super().__init__(handshake, max_size=max_size, timeouts=timeouts, on_event=log)
        self.mode = mode
        self.room = room
        self.log = log
        self.log_messages = log_messages and log is not None
        self.message_logger = message_logger
        self._log_message: Callable[..., None] | None = None

    def on_open(self) -> None:
        if self.mode is Mode.BROADCAST:
            self.room.members.add(self)
        if self.log_messages:
            log = self.log
            assert log is not None
            if self.message_logger is not None:
                self._log_message = self.message_logger(self.peer)
            else:
                peer = self.peer
                self._log_message = lambda kind, size: log(
                    "message", {"peer": peer, "type": kind, "size": size}
                )
        if self.log is not None:
            self.log(
                "open",
                {
                    "peer": self.peer,
                    "path": self.resource,
                    "subprotocol": self.subprotocol,
                    "compress": self.ws.deflate is not None,
                },
            )

    def on_message(self, message: Message) -> None:
        text = message.text
        if self._log_message is not None:
            self._log_message("text" if text else "binary", len(message.data))
        if self.mode is _ECHO:
            # The payload is a view of the receive buffer, written out as is (no copy).
            self.send_message(message.data, text=text)
        elif self.mode is _BROADCAST:
            others = [m for m in self.room.members if m is not self]
            if others:
                # One copy shared by every recipient: a slow member's transport may keep the
                # object longer than the receive buffer stays valid.
                data = bytes(message.data)
                for member in others:
                    if member.lagging():
                        member.drop_slow()
                    else:
                        member.send_message(data, text=text)

    def lagging(self) -> bool:
        """True when this member has not read what the room sent it (memory would grow)."""
        transport = self.transport
        limit = SLOW_MEMBER_SLACK + (self.ws.max_size or 0)
        return transport is not None and transport.get_write_buffer_size() > limit

    def drop_slow(self) -> None:
        """Close a member that does not keep up (1008), rather than buffer without bound."""
        self.room.members.discard(self)
        if self.log is not None:
            buffered = self.transport.get_write_buffer_size() if self.transport else 0
            self.log("slow_client", {"peer": self.peer, "buffered": buffered})
        self.start_close(CloseCode.POLICY_VIOLATION, "not reading fast enough")

    def on_ping(self, payload: Buffer) -> None:
        if self.log_messages:
            assert self.log is not None
            self.log("ping", {"peer": self.peer, "size": len(payload)})

    def on_pong(self, payload: Buffer) -> None:
        if self.log_messages:
            assert self.log is not None
            fields: dict[str, Any] = {"peer": self.peer}
            if self.last_rtt is not None:
                fields["rtt_ms"] = round(self.last_rtt * 1000, 3)
            self.log("pong", fields)

    def on_closed(self, code: int, reason: str, error: PeerProtocolError | None) -> None:
        self.room.members.discard(self)
        sent = self.ws.close_sent
        if error is not None and sent is not None and self.ws.close_received is None:
            # We failed the connection (7.1.7) and read nothing after: its code is the one
            # we sent (1009 to a decompression bomb), not 1006.
            code, reason = sent
        if self.log is not None and self.upgraded:
            fields: dict[str, Any] = {
                "peer": self.peer,
                "code": code,
                "reason": reason,
                "messages_in": self.messages_in,
                "messages_out": self.messages_out,
            }
            if error is not None:
                fields["error"] = str(error)
                fields["sent_code"] = error.close_code
            self.log("close", fields)

"""WebSocket server connections: :class:`WebSocketServerConnection` (the upgrade, /health and
refusals answered by :class:`~netkit.core.ws.server.ServerProtocol`), and what ``ws-server``
does with messages (:class:`ModeConnection`: echo, broadcast to a chat room, or sink), or an
application coroutine serving each client (:class:`HandlerConnection`, the public API's
``ws_server(handler=...)``)."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Any

from netkit.core.ws.events import Accepted, HandshakeResponse, HealthCheck, Message, Rejected
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.protocol import State
from netkit.core.ws.server import ServerHandshake, ServerProtocol
from netkit.errors import PeerProtocolError
from netkit.net.server import ServerConnection
from netkit.net.ws import WebSocketConnection, WSTimeouts
from netkit.net.ws_inbox import MessageInbox
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


def _messages_to_log(peer: str) -> Callable[..., None]:
    """A marker, compared by identity: messages go to the connection's own log."""
    raise AssertionError("a marker: ModeConnection logs messages to its log itself")


class WebSocketServerConnection(WebSocketConnection, ServerConnection):
    """A server-side connection: answers the upgrade (or /health), then speaks WebSocket.

    Args:
        handshake: the server's handshake policy (paths, origins, subprotocols, deflate).
        on_event: receives (event name, fields) for logging: ``open``, ``health``, ``close``.
            Refusals (HTTP 4xx/5xx) are the server's ``rejected`` events
            (:meth:`~netkit.net.server.StreamServer.refuse`).
    """

    ws: ServerProtocol

    def __init__(
        self,
        handshake: ServerHandshake,
        *,
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(handshake, max_size=max_size, timeouts=timeouts)
        self.on_event = on_event

    def new_protocol(self, handshake: object, max_size: int | None) -> ServerProtocol:
        assert isinstance(handshake, ServerHandshake)
        return ServerProtocol(handshake, buffer=self.rbuf, max_size=max_size)

    @property
    def handshake(self) -> ServerHandshake:
        """The server's handshake policy (paths, origins, subprotocols, deflate)."""
        return self.ws.policy

    @property
    def upgraded(self) -> bool:
        """True once the client's upgrade was accepted (it may have closed since)."""
        return self.ws.upgraded

    def on_connect(self) -> None:
        WebSocketConnection.on_connect(self)
        ServerConnection.on_connect(self)  # after the timer: a refusal replaces it (linger)

    def on_close(self, exc: Exception | None) -> None:
        ServerConnection.on_close(self, exc)

    def turn_away(self, reason: str) -> None:
        """Answer 503 with ``Retry-After: 1`` (websocketd, HAProxy), not a bare TCP close."""
        self.ws.turn_away(reason)
        self._dispatch()

    def on_handshake(self, event: Accepted | HealthCheck | Rejected | HandshakeResponse) -> None:
        if isinstance(event, Accepted):
            if event.subprotocol is not None:  # else the class default (see net/ws.py)
                self.subprotocol = event.subprotocol
            self.resource = event.request.target
            self._opened()
            return
        self.flush()  # the answer goes out before the connection is counted and closed
        if isinstance(event, Rejected):
            self.server.refuse(self, event.message, status=event.status_code)
        elif isinstance(event, HealthCheck):
            self._emit("health", path=event.request.path)
        self.linger_close()

    def begin_drain(self) -> None:
        """Server shutdown: 1001 Going Away to this client, then wait for its close.

        A client still in the opening handshake gets 503 instead (it may retry elsewhere);
        one already answered is left to finish reading its answer.
        """
        if self.ws.state is not State.CONNECTING:
            self.start_close(CloseCode.GOING_AWAY, "server shutting down")
        elif not self.ws.answered:
            self.turn_away("shutting down")

    def _emit(self, name: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(name, {"peer": self.peer, **fields})


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
        # One attribute for both: what makes the per-message logger (see net/ws.py on
        # attributes), _messages_to_log for messages to ``log``, None to log none.
        self._message_logger = (
            (message_logger or _messages_to_log) if log_messages and log is not None else None
        )
        self._log_message: Callable[..., None] | None = None

    @property
    def log(self) -> Callable[[str, dict[str, Any]], None] | None:
        """Receives (event, fields); None to log nothing."""
        return self.on_event

    @property
    def log_messages(self) -> bool:
        """True when every message, ping and pong is logged."""
        return self._message_logger is not None

    def on_open(self) -> None:
        if self.mode is Mode.BROADCAST:
            self.room.members.add(self)
        if self._message_logger is not None:
            log = self.log
            assert log is not None
            if self._message_logger is not _messages_to_log:
                self._log_message = self._message_logger(self.peer)
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


class HandlerConnection(MessageInbox, WebSocketServerConnection):
    """A server connection served by an application coroutine instead of a :class:`Mode`.

    Once the connection is open, ``handler(self)`` runs as a task (kept in ``tasks`` until it
    ends); it reads with :meth:`receive` and writes with :meth:`send`. When it returns, the
    connection closes with 1000; when it raises, with 1011 and the error goes to
    ``on_error``; either way the server goes on serving its other clients.

    Args:
        handler: the application coroutine.
        tasks: where the running handlers are kept (the server's owner waits for them).
        on_error: receives what a handler raised.
    """

    def __init__(
        self,
        handshake: ServerHandshake,
        handler: Callable[[HandlerConnection], Awaitable[None]],
        *,
        tasks: set[asyncio.Task[None]],
        on_error: Callable[[BaseException], None],
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
    ) -> None:
        super().__init__(handshake, max_size=max_size, timeouts=timeouts)
        self.handler = handler
        self.tasks = tasks
        self.on_error = on_error

    def on_open(self) -> None:
        task = self._loop.create_task(self._serve())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self) -> None:
        try:
            await self.handler(self)
        except Exception as exc:  # the application's bug: this client gets 1011, others go on
            self.on_error(exc)
            self.start_close(CloseCode.INTERNAL_ERROR, "handler error")
        else:
            self.start_close(CloseCode.NORMAL_CLOSURE)

"""The asyncio adapter around :mod:`netkit.core.ws`: it only moves bytes and runs timers.

One :class:`WebSocketConnection` per connection shares its pooled receive buffer with the
sans-I/O :class:`~netkit.core.ws.protocol.Protocol`: the kernel writes into
``Protocol.writable()``, events come back as memoryview slices of that same buffer, and what
the protocol wants sent is written as ``[header, payload]`` buffers (scatter-gather).

Timers are loop handles, not tasks, so ten thousand idle connections cost no coroutine each:
the opening-handshake timeout, the keepalive ping and its pong deadline, and the closing
handshake timeout.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netkit.core.addresses import WSURL
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.frames import MAX_HEADER_SIZE, CloseCode, Side
from netkit.core.ws.handshake import (
    MAX_HEAD,
    Accepted,
    ClientHandshake,
    HandshakeResponse,
    HealthCheck,
    Rejected,
    ServerHandshake,
    unavailable,
)
from netkit.core.ws.protocol import (
    CloseReceived,
    ConnectionClosed,
    Message,
    Ping,
    Pong,
    Protocol,
    State,
)
from netkit.errors import (
    ConnectionLost,
    LocalProtocolError,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
)
from netkit.net.connect import open_stream, translate_connect_error
from netkit.net.protocols import StreamProtocol
from netkit.net.server import ServerConnection
from netkit.net.tls import CERT, KEY
from netkit.net.zerocopy import Buffer

# As module constants: an Enum member looked up on its class costs 0.1 us (Python 3.11).
_CONNECTING, _OPEN, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSED


@dataclass(frozen=True)
class WSTimeouts:
    """Timers of a WebSocket connection, in seconds (None disables one).

    Defaults follow the websockets library: 10 s for each handshake, a ping every 20 s that
    must be answered within 20 s.
    """

    open: float | None = 10.0
    close: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0


class WebSocketConnection(StreamProtocol):
    """Common machinery of WebSocket clients and servers.

    Subclasses run the opening handshake (:meth:`handshake_data`) and then receive events
    through :meth:`on_open`, :meth:`on_message`, :meth:`on_ping`, :meth:`on_pong` and
    :meth:`on_closed`.

    Attributes:
        ws: the sans-I/O protocol.
        close_code, close_reason: what the peer's close frame said (1006 when there was none).
        messages_in, messages_out: counters.
    """

    side: Side

    def __init__(
        self, *, max_size: int | None = 1 << 20, timeouts: WSTimeouts = WSTimeouts()
    ) -> None:
        # The buffer must hold one whole frame (header included); no limit means up to 1 GiB.
        # And a whole request head, so that a large one is answered (431), never overflows:
        # frames cannot use the extra room, the parser refuses any over max_size first.
        frame = (max_size or (1 << 30)) + MAX_HEADER_SIZE
        super().__init__(max_buffer=max(frame, MAX_HEAD))
        self.ws = Protocol(self.side, state=_CONNECTING, buffer=self.rbuf, max_size=max_size)
        self.timeouts = timeouts
        self.close_code: int | None = None
        self.close_reason = ""
        self.messages_in = 0
        self.messages_out = 0
        self.subprotocol: str | None = None
        self.resource = "/"
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._ping_handle: asyncio.TimerHandle | None = None
        self._pong_deadline: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._ping_sent_at = 0.0
        self.last_rtt: float | None = None
        self._dispatching = False  # in _dispatch: it flushes once at the end
        self._lingering = False  # an HTTP answer sent, half-closed, reading to the client's EOF

    # --- bytes in -----------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        # Nothing may escape get_buffer: the loop would log a fatal error and reset the
        # connection (uvloop, asyncio). read_buffer only raises BufferFull; the rest is a guard.
        try:
            return self.ws.read_buffer()
        except NetkitError as exc:
            return self.overflow(exc)
        except Exception as exc:  # a bug: fail this connection, keep serving the others
            return self.overflow(LocalProtocolError(f"internal error reading: {exc!r}"))

    def buffer_updated(self, nbytes: int) -> None:
        if self.error is not None:
            return
        self.bytes_in += nbytes
        try:
            if self._lingering:
                # Answered and half-closed: discard what the client still sends.
                self.rbuf.commit(nbytes)
                self.rbuf.consume(len(self.rbuf))
            elif self.ws.state is _CONNECTING:
                self.rbuf.commit(nbytes)
                self.handshake_data()
            else:
                self.ws.commit(nbytes)
                self._dispatch()
        except NetkitError as exc:
            self.fail(exc)
            return
        except Exception as exc:  # a bug: as in get_buffer, never out to the loop
            self.fail(LocalProtocolError(f"internal error handling data: {exc!r}"))
            return
        if self.views_released() and not self.rbuf.release():
            # Part of a frame (or of the handshake) waits: a few bytes need not hold a chunk.
            self.rbuf.stash()

    def eof_received(self) -> bool | None:
        if self._lingering:
            return None  # the client has read our answer: close
        if self.ws.state is not _CLOSED:
            self.ws.receive_eof()
            self._dispatch()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self.ws.state is not _CLOSED:
            self.ws.receive_eof()
            self._dispatch()
        super().connection_lost(exc)

    def handshake_data(self) -> None:
        """Bytes arrived while CONNECTING (in ``self.rbuf``): advance the opening handshake."""
        raise NotImplementedError

    def linger_close(self) -> None:
        """Close after an HTTP answer, so that the peer reads it rather than a reset.

        Closing a socket with unread input sends RST, which can destroy the answer before the
        client reads it (a 431 to a large head). So half-close, discard what still comes, and
        close on the client's EOF or after the closing timeout (nginx's lingering close).
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._cancel_timers()
        self.rbuf.consume(len(self.rbuf))
        if not transport.can_write_eof():
            transport.close()  # TLS: close_notify, then close
            return
        if not self._half_close(transport):
            return
        self._lingering = True
        self._timer = self._loop.call_later(self.timeouts.close or 2.0, self._close_timed_out)

    def _half_close(self, transport: asyncio.Transport) -> bool:
        """Send our FIN and keep reading; False when the peer has already reset the connection.

        A client that reads part of an answer and closes resets the connection, and asyncio's
        ``write_eof`` then raises ENOTCONN. Nothing is left to read or report: close, as
        nginx's lingering close does when ``shutdown()`` fails.
        """
        try:
            transport.write_eof()
        except OSError:
            transport.abort()
            return False
        return True

    def _dispatch(self) -> None:
        # Replies sent while handling these events go out together in the flush at the end:
        # one write for every echo of a read.
        self._dispatching = True
        try:
            for event in self.ws.events_received():
                if type(event) is Message:
                    self.messages_in += 1
                    self.on_message(event)
                elif isinstance(event, Ping):
                    self.on_ping(event.payload)
                elif isinstance(event, Pong):
                    self._pong_received(event.payload)
                elif isinstance(event, CloseReceived):
                    self.close_code, self.close_reason = event.code, event.reason
                    self.on_close_received(event.code, event.reason)
                elif isinstance(event, ConnectionClosed):
                    if self.close_code is None:
                        self.close_code, self.close_reason = event.code, event.reason
                    self.on_closed(event.code, event.reason, event.error)
        finally:
            self._dispatching = False
        self.flush()

    # --- bytes out ----------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the protocol queued; close or arm the closing timeout as it says."""
        data = self.ws.data_to_send()
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # nowhere to send it
        if data:
            # As self.write(*data), without packing the list into arguments and back.
            self.bytes_out += sum(map(len, data))
            self._writelines(data)
        if self.ws.state is _OPEN:
            return  # nothing to close, no closing timeout to arm
        if self.ws.should_close_transport():
            self._cancel_timers()
            if self.ws.error is not None and transport.can_write_eof():
                # We failed the connection: half-close, so the peer reads our close frame
                # before the connection goes (closing with its data unread would send RST).
                if self._half_close(transport):
                    self._timer = self._loop.call_later(
                        self.timeouts.close or 2.0, self._close_timed_out
                    )
            else:
                transport.close()
        elif self.ws.close_expected() and self._timer is None and self.timeouts.close:
            self._timer = self._loop.call_later(self.timeouts.close, self._close_timed_out)

    def send_message(self, data: Buffer | str, *, text: bool | None = None) -> None:
        """Send one message: text for ``str`` (or ``text=True``), binary otherwise."""
        if self.ws.state is not _OPEN:
            return  # closing: RFC 6455 5.5.1 forbids data after a close frame
        if text if text is not None else isinstance(data, str):
            self.ws.send_text(data)
        else:
            assert not isinstance(data, str)
            self.ws.send_binary(data)
        self.messages_out += 1
        if not self._dispatching:  # else _dispatch flushes
            self.flush()

    def send_ping(self, payload: bytes = b"") -> None:
        """Send a ping now; its pong updates :attr:`last_rtt`."""
        if self.ws.state is _OPEN and self.ws.close_sent is None:
            self._ping_payload = payload or os.urandom(4)
            self._ping_sent_at = time.perf_counter()  # not loop.time(): 1 ms under uvloop
            self.ws.send_ping(self._ping_payload)
            self.flush()

    def start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (no-op when already closing)."""
        if self.ws.state is _OPEN:
            self.ws.send_close(code, reason)
            self.flush()
        elif self.ws.state is _CONNECTING:
            self.abort()

    # --- timers -------------------------------------------------------------------------

    def on_connect(self) -> None:
        if self.timeouts.open:
            self._timer = self._loop.call_later(self.timeouts.open, self._open_timed_out)

    def _opened(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.timeouts.ping_interval:
            self._ping_handle = self._loop.call_later(self.timeouts.ping_interval, self._keepalive)
        self.on_open()

    def _open_timed_out(self) -> None:
        self._timer = None
        if self.ws.state is _CONNECTING:
            self.fail(OperationTimeout(f"opening handshake with {self.peer} timed out"))

    def _close_timed_out(self) -> None:
        self._timer = None
        self.abort()

    def _keepalive(self) -> None:
        self._ping_handle = None
        if self.ws.state is not _OPEN:
            return
        if self._pong_deadline is None:  # one keepalive ping in flight at a time
            self.send_ping()
            if self.timeouts.ping_timeout:
                self._pong_deadline = self._loop.call_later(
                    self.timeouts.ping_timeout, self._pong_missed
                )
        if self.timeouts.ping_interval:
            self._ping_handle = self._loop.call_later(self.timeouts.ping_interval, self._keepalive)

    def _pong_received(self, payload: Buffer) -> None:
        if self._ping_payload is not None and bytes(payload) == self._ping_payload:
            self.last_rtt = time.perf_counter() - self._ping_sent_at
            self._ping_payload = None
            if self._pong_deadline is not None:
                self._pong_deadline.cancel()
                self._pong_deadline = None
            self.on_keepalive_pong(self.last_rtt)
        self.on_pong(payload)

    def _pong_missed(self) -> None:
        self._pong_deadline = None
        if self.ws.state is _OPEN:
            # 1011: the peer is unresponsive (RFC 6455 7.4.1). It is presumed dead, so the
            # close frame is sent and the connection dropped without waiting for a reply.
            self.ws.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self.flush()
            self.error = OperationTimeout(f"no pong from {self.peer} in time")
            if self.transport is not None:
                self.transport.close()

    def _cancel_timers(self) -> None:
        for handle in (self._timer, self._ping_handle, self._pong_deadline):
            if handle is not None:
                handle.cancel()
        self._timer = self._ping_handle = self._pong_deadline = None

    # --- events for subclasses ----------------------------------------------------------

    def on_open(self) -> None:
        """The opening handshake succeeded."""

    def on_message(self, message: Message) -> None:
        """A message arrived. ``message.data`` is valid only during this call."""

    def on_ping(self, payload: Buffer) -> None:
        """A ping arrived (the protocol already answered it)."""

    def on_pong(self, payload: Buffer) -> None:
        """A pong arrived."""

    def on_keepalive_pong(self, rtt: float) -> None:
        """A pong answered our keepalive ping, ``rtt`` seconds after it was sent."""

    def on_close_received(self, code: int, reason: str) -> None:
        """The peer's close frame arrived (the TCP connection may stay open a while)."""

    def on_closed(self, code: int, reason: str, error: PeerProtocolError | None) -> None:
        """The connection is closed (code 1006 when no close frame was received)."""


# --- server -------------------------------------------------------------------------------


class WebSocketServerConnection(WebSocketConnection, ServerConnection):
    """A server-side connection: answers the upgrade (or /health), then speaks WebSocket.

    Args:
        handshake: the server's handshake policy (paths, origins, subprotocols, deflate).
        on_event: receives (event name, fields) for logging: ``open``, ``health``, ``close``.
            Refusals (HTTP 4xx/5xx) are the server's ``rejected`` events
            (:meth:`~netkit.net.server.StreamServer.refuse`).
    """

    side = Side.SERVER

    def __init__(
        self,
        handshake: ServerHandshake,
        *,
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(max_size=max_size, timeouts=timeouts)
        self.handshake = handshake
        self.on_event = on_event
        self.upgraded = False

    def on_connect(self) -> None:
        WebSocketConnection.on_connect(self)
        ServerConnection.on_connect(self)  # after the timer: a refusal replaces it (linger)

    def on_close(self, exc: Exception | None) -> None:
        ServerConnection.on_close(self, exc)

    def turn_away(self, reason: str) -> None:
        """Answer 503 with ``Retry-After: 1`` (websocketd, HAProxy), not a bare TCP close."""
        self._refuse(unavailable(reason))

    def _refuse(self, result: Rejected) -> None:
        self.server.refuse(
            self, result.message, response=result.response, status=result.status_code
        )
        self.linger_close()

    def handshake_data(self) -> None:
        result = self.handshake.receive_request(self.rbuf)
        if result is None:
            return
        assert self.transport is not None
        if isinstance(result, Rejected):
            self._refuse(result)
            return
        self.write(result.response)
        if isinstance(result, Accepted):
            self.upgraded = True
            self.subprotocol = result.subprotocol
            self.resource = result.request.target
            self.ws.open(deflate=result.deflate)
            self._opened()
            self._dispatch()
            return
        if isinstance(result, HealthCheck):
            self._emit("health", path=result.request.path)
        self.linger_close()

    def begin_drain(self) -> None:
        """Server shutdown: 1001 Going Away to this client, then wait for its close.

        A client still in the opening handshake gets 503 instead (it may retry elsewhere);
        one already answered is left to finish reading its answer.
        """
        if self.ws.state is not _CONNECTING:
            self.start_close(CloseCode.GOING_AWAY, "server shutting down")
        elif not self._lingering:
            self.turn_away("shutting down")

    def _emit(self, name: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(name, {"peer": self.peer, **fields})


# --- client -------------------------------------------------------------------------------


class WebSocketClientConnection(WebSocketConnection):
    """A client connection: sends the upgrade request and resolves :attr:`opened`.

    Received messages go to :meth:`on_message`; the default keeps copies in :attr:`inbox`,
    read them with :meth:`receive`.

    Attributes:
        opened: resolved when the opening handshake succeeded; fails with the error otherwise
            (:class:`~netkit.core.ws.handshake.UpgradeRefused` for a non-101 answer).
        response: the server's 101 response (headers, subprotocol, deflate), once open.
        inbox: ``(is_text, data)`` per received message (:meth:`receive` also says when the
            connection is over).
        initiated_close: we sent the first close frame (as asked through :meth:`start_close`).
    """

    side = Side.CLIENT
    pause_reading_on_backpressure = False  # we send masked copies, never views of rbuf

    def __init__(
        self,
        handshake: ClientHandshake,
        *,
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
    ) -> None:
        super().__init__(max_size=max_size, timeouts=timeouts)
        self.handshake = handshake
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self.inbox: asyncio.Queue[tuple[bool, bytes]] = asyncio.Queue()
        self._ended = False  # on_closed ran: nothing more will be put in the inbox
        self._wakeup: asyncio.Future[None] | None = None
        self.deflate: DeflateParams | None = None
        self.response: HandshakeResponse | None = None
        self.initiated_close = False
        self.close_timed_out = False  # the closing timeout passed: the connection was dropped
        # Called with the round-trip time of each keepalive ping (ws-client --json reports it).
        self.on_keepalive_rtt: Callable[[float], None] | None = None
        # Pings sent through ping(): payload -> (time sent, waiter for the round-trip time).
        self._pings: dict[bytes, tuple[float, asyncio.Future[float | None]]] = {}

    def on_connect(self) -> None:
        super().on_connect()
        self.write(self.handshake.request())

    def handshake_data(self) -> None:
        response = self.handshake.receive_response(self.rbuf)  # raises UpgradeRefused etc.
        if response is None:
            return
        self.response = response
        self.subprotocol = response.subprotocol
        self.deflate = response.deflate
        self.ws.open(deflate=response.deflate)
        self._opened()
        if not self.opened.done():
            self.opened.set_result(None)
        self._dispatch()

    def _close_timed_out(self) -> None:
        self.close_timed_out = True
        super()._close_timed_out()

    def on_keepalive_pong(self, rtt: float) -> None:
        if self.on_keepalive_rtt is not None:
            self.on_keepalive_rtt(rtt)

    def on_message(self, message: Message) -> None:
        # Kept for later: the view is only valid during this call, so this is a copy.
        self.inbox.put_nowait((bool(message.text), bytes(message.data)))
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def on_pong(self, payload: Buffer) -> None:
        entry = self._pings.pop(bytes(payload), None)
        if entry is not None:
            self.last_rtt = time.perf_counter() - entry[0]
            if not entry[1].done():
                entry[1].set_result(self.last_rtt)

    def on_closed(self, code: int, reason: str, error: PeerProtocolError | None) -> None:
        self._ended = True
        self._wake()
        for _, waiter in self._pings.values():
            if not waiter.done():
                waiter.set_result(None)
        self._pings.clear()

    def on_close(self, exc: Exception | None) -> None:
        if isinstance(exc, ssl.SSLError) and self.error is None:
            # A TLS alert after our side of the handshake: TLS 1.3 servers refuse a client
            # certificate this way, on our first read (during the upgrade).
            self.error = translate_connect_error(exc, self.peer)
        if not self.opened.done():
            tls = self.transport is not None and self.transport.get_extra_info("ssl_object")
            self.opened.set_exception(
                self.error
                or ConnectionLost(
                    f"{self.peer} closed the connection during the opening handshake",
                    # Not sure enough for a TLS error: the server said nothing.
                    hint=(
                        "a TLS server that refuses a client certificate without an alert "
                        "closes like this: check ",
                        CERT,
                        " and ",
                        KEY,
                    )
                    if tls and self.bytes_in == 0
                    else None,
                )
            )

    # --- for applications ---------------------------------------------------------------

    async def receive(self) -> tuple[bool, bytes] | None:
        """Wait for the next message, ``(is_text, data)``; None once the connection is closed."""
        while self.inbox.empty():
            if self._ended:
                return None
            self._wakeup = self._loop.create_future()
            await self._wakeup
        return self.inbox.get_nowait()

    def send(self, data: Buffer | str, *, text: bool | None = None) -> bool:
        """Send one message (as :meth:`send_message`); False when no longer OPEN (not sent)."""
        if self.ws.state is not _OPEN:
            return False
        self.send_message(data, text=text)
        return True

    def ping(self, payload: bytes = b"") -> asyncio.Future[float | None]:
        """Send a ping (4 random bytes when ``payload`` is empty).

        Returns:
            A future for the round-trip time in seconds, resolved when the matching pong
            arrives; None if the connection closes first or was not open.
        """
        waiter: asyncio.Future[float | None] = self._loop.create_future()
        if self.ws.state is not _OPEN or self.ws.close_sent is not None:
            waiter.set_result(None)
            return waiter
        payload = payload or os.urandom(4)
        self._pings[payload] = (time.perf_counter(), waiter)
        # Not send_ping(): that one is the keepalive's, and a ping of ours must not replace
        # the payload its pong deadline waits for.
        self.ws.send_ping(payload)
        self.flush()
        return waiter

    def start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake, remembering that we did (:attr:`initiated_close`)."""
        if self.ws.state is _OPEN and self.ws.close_received is None:
            self.initiated_close = True
        super().start_close(code, reason)

    async def close_and_wait(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and wait until the connection is gone.

        The closing timeout (:attr:`WSTimeouts.close`) bounds the wait: the connection is
        dropped when the server does not finish the handshake in time.
        """
        self.start_close(code, reason)
        # Shielded: a caller cancelled while waiting must not cancel the shared future.
        await asyncio.shield(self.closed)

    @property
    def close_initiator(self) -> str | None:
        """Who started the closing handshake: ``client``, ``server``, or None (no close frame)."""
        if self.initiated_close or self.ws.error is not None or self.error is not None:
            return "client"
        if self.ws.close_received is not None:
            return "server"
        return None


async def connect_ws(
    url: WSURL,
    factory: Callable[[], WebSocketClientConnection],
    *,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    timeout: float | None = 10.0,
    retry_for: float = 0.0,
) -> WebSocketClientConnection:
    """Connect to ``url`` (TCP, TLS or Unix) and finish the opening handshake.

    Args:
        timeout: one deadline for the TCP connect, the TLS handshake and the HTTP upgrade
            together (websockets' ``open_timeout``); None: no deadline.
        retry_for: keep retrying a refused connection (or a missing socket file) this long.

    Raises:
        ConnectError, TLSError, OperationTimeout: connecting failed.
        UpgradeRefused: the server answered something other than 101 (status in the error).
        InvalidHandshake: the 101 response was not valid.
        ConnectionLost: the server closed the connection during the handshake.
    """

    async def upgrade(protocol: StreamProtocol) -> None:
        assert isinstance(protocol, WebSocketClientConnection)
        await protocol.opened

    conn = await open_stream(
        url.transport,
        factory,
        ssl_context=ssl_context,
        server_hostname=server_hostname or (url.host if url.unix_path is None else None),
        timeout=timeout,
        retry_for=retry_for,
        handshake=upgrade,
    )
    assert isinstance(conn, WebSocketClientConnection)
    return conn

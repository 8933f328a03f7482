"""The WebSocket client connection (:class:`WebSocketClientConnection` around
:class:`~netkit.core.ws.client.ClientProtocol`) and :func:`connect_ws`, which dials and
finishes the opening handshake."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

from netkit.core.addresses import WSURL
from netkit.core.ws.client import ClientHandshake, ClientProtocol
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.events import Accepted, HandshakeResponse, HealthCheck, Message, Rejected
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.protocol import State
from netkit.core.ws.tunnel import ProxyURL
from netkit.errors import ConnectionLost
from netkit.net.connect import open_stream, translate_connect_error
from netkit.net.protocols import StreamProtocol
from netkit.net.tls import CERT, KEY
from netkit.net.ws import WSTimeouts
from netkit.net.ws_inbox import MessageInbox

_OPEN = State.OPEN


class WebSocketClientConnection(MessageInbox):
    """A client connection: sends the upgrade request and resolves :attr:`opened`.

    Received messages go to :meth:`on_message`; the default keeps copies in :attr:`inbox`,
    read them with :meth:`receive` (:class:`~netkit.net.ws_inbox.MessageInbox`).

    Attributes:
        opened: resolved when the opening handshake succeeded; fails with the error otherwise
            (:class:`~netkit.core.ws.http.UpgradeRefused` for a non-101 answer).
        response: the server's 101 response (headers, subprotocol, deflate), once open.
        initiated_close: we sent the first close frame (as asked through :meth:`start_close`).
    """

    ws: ClientProtocol
    pause_reading_on_backpressure = False  # we send masked copies, never views of rbuf

    def __init__(
        self,
        handshake: ClientHandshake,
        *,
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
    ) -> None:
        super().__init__(handshake, max_size=max_size, timeouts=timeouts)
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self.deflate: DeflateParams | None = None
        self.response: HandshakeResponse | None = None
        self.initiated_close = False
        self.close_timed_out = False  # the closing timeout passed: the connection was dropped
        # Called with the round-trip time of each keepalive ping (ws-client --json reports it).
        self.on_keepalive_rtt: Callable[[float], None] | None = None

    def new_protocol(self, handshake: object, max_size: int | None) -> ClientProtocol:
        assert isinstance(handshake, ClientHandshake)
        return ClientProtocol(handshake, buffer=self.rbuf, max_size=max_size)

    @property
    def handshake(self) -> ClientHandshake:
        """The opening handshake's request (URL, headers, subprotocols, compression)."""
        return self.ws.handshake

    def on_connect(self) -> None:
        super().on_connect()
        self.ws.send_request()
        self.flush()

    def on_handshake(self, event: Accepted | HealthCheck | Rejected | HandshakeResponse) -> None:
        assert isinstance(event, HandshakeResponse)
        self.response = event
        self.subprotocol = event.subprotocol
        self.deflate = event.deflate
        self._opened()
        if not self.opened.done():
            self.opened.set_result(None)

    def _close_timed_out(self) -> None:
        self.close_timed_out = True
        super()._close_timed_out()

    def on_keepalive_pong(self, rtt: float) -> None:
        if self.on_keepalive_rtt is not None:
            self.on_keepalive_rtt(rtt)

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

    def start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake, remembering that we did (:attr:`initiated_close`)."""
        if self.ws.state is _OPEN and self.ws.close_received is None:
            self.initiated_close = True
        super().start_close(code, reason)

    @property
    def close_initiator(self) -> str | None:
        """Who started the closing handshake: ``client``, ``server``, or None (no close frame)."""
        if self.initiated_close or self.ws.error is not None or self.error is not None:
            return "client"
        if self.ws.close_received is not None:
            return "server"
        return None


class EchoClientConnection(WebSocketClientConnection):
    """A client connection that sends every message back, with its type, as it arrives
    (``ws-client --echo``, the client conformance suites drive).

    The echo leaves from :meth:`on_message`, before the frames that follow it in the same read
    are handled: a message is echoed even when the next frame breaks the protocol and fails
    the connection, as the Autobahn suite expects of a strict client. The message is also kept
    in the inbox, for the session to show.

    Attributes:
        echoed: per received message, in order, whether its echo was sent (not once the
            connection was no longer open); the reader of the inbox pops one per message.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.echoed: deque[bool] = deque()

    def on_message(self, message: Message) -> None:
        super().on_message(message)  # kept (and recorded, with --record) before its echo
        # send() copies (masking) before the view of the receive buffer goes away.
        self.echoed.append(self.send(message.data, text=message.text))


async def connect_ws(
    url: WSURL,
    factory: Callable[[], WebSocketClientConnection],
    *,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    timeout: float | None = 10.0,
    retry_for: float = 0.0,
    proxy: ProxyURL | None = None,
    own_tls: bool = False,
) -> WebSocketClientConnection:
    """Connect to ``url`` (TCP, TLS or Unix) and finish the opening handshake.

    Args:
        timeout: one deadline for the TCP connect, the TLS handshake and the HTTP upgrade
            together (websockets' ``open_timeout``); None: no deadline.
        retry_for: keep retrying a refused connection (or a missing socket file) this long.
        proxy: connect through this HTTP proxy (CONNECT); TLS for wss:// runs through it.
        own_tls: TLS through netkit's own layer (see :func:`~netkit.net.connect.open_stream`).

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
        proxy=proxy,
        own_tls=own_tls,
    )
    assert isinstance(conn, WebSocketClientConnection)
    return conn

"""WebSocket for test suites: :func:`ws_server` (``netkit ws-server``'s modes, or your own
handler) and :func:`ws_connect`, both speaking through one :class:`WebSocket` object.

Both are async context managers over netkit's own WebSocket stack (``netkit.core.ws``, the
sans-I/O protocol; ``netkit.net.ws*``, the asyncio adapter), the code ``ws-server`` and
``ws-client`` run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from netkit.api.servers import StreamListener, TLSSetting, serving_stream
from netkit.core.access import AccessList
from netkit.core.addresses import WSURL, parse_ws_url
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.protocol import State
from netkit.core.ws.redirect import RedirectPolicy
from netkit.core.ws.server import (
    ServerHandshake,
    listen_address,
    parse_origins,
    resource_path,
    server_url,
)
from netkit.core.ws.tunnel import parse_proxy_url
from netkit.errors import ConfigError, ConnectionLost, UsageError
from netkit.net.server import EventHook, ServerConnection, StreamServer
from netkit.net.tls import ClientTLS
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection
from netkit.net.ws_dial import Dialer, tls_per_url
from netkit.net.ws_inbox import MessageInbox
from netkit.net.ws_server import HandlerConnection, Mode, ModeConnection, Room

MAX_MESSAGE = 1 << 30


class WebSocket:
    """One open WebSocket connection, client side (:func:`ws_connect`) or server side (what a
    :func:`ws_server` handler gets).

    Text messages are ``str``, binary ones ``bytes``, both ways. ``async for message in ws``
    reads until the connection closes; :attr:`close_code` and :attr:`close_reason` then say
    how it ended.
    """

    def __init__(self, conn: MessageInbox) -> None:
        self._conn = conn
        self._receiving = False

    async def _receive(self) -> tuple[bool, bytes] | None:
        # One reader at a time, as in websockets: two would race for each message.
        if self._receiving:
            raise UsageError("recv() is already waiting for a message in another task")
        self._receiving = True
        try:
            return await self._conn.receive()
        finally:
            self._receiving = False

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send one message: text for ``str``, binary otherwise; returns once the transport
        accepted it (waiting while the peer does not read).

        Raises:
            ConnectionLost: the connection is closing or closed.
        """
        if not self._conn.send(message):
            raise self._closed_error()
        await self._conn.drain()

    async def recv(self) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises:
            ConnectionLost: the connection closed (see :attr:`close_code`).
            UsageError: another task is already waiting in ``recv`` (or iterating).
        """
        item = await self._receive()
        if item is None:
            raise self._closed_error()
        is_text, data = item
        return data.decode("utf-8") if is_text else data

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        while (item := await self._receive()) is not None:
            is_text, data = item
            yield data.decode("utf-8") if is_text else data

    async def ping(self, data: bytes = b"") -> float:
        """Send a ping and wait for its pong.

        Returns:
            The round-trip time in seconds.

        Raises:
            ConnectionLost: the connection closed before the pong came.
        """
        rtt = await self._conn.ping(data)
        if rtt is None:
            raise self._closed_error()
        return rtt

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close with ``code`` and ``reason`` and wait until the connection is gone (the
        closing timeout bounds the wait). Closing a closed connection does nothing."""
        await self._conn.close_and_wait(code, reason)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, by either side."""
        await asyncio.shield(self._conn.closed)

    @property
    def open(self) -> bool:
        """True until the closing handshake starts."""
        return self._conn.ws.state is State.OPEN and self._conn.ws.close_sent is None

    @property
    def close_code(self) -> int | None:
        """The close code the peer sent (1006 when the connection ended without one); None
        while open."""
        return self._conn.close_code

    @property
    def close_reason(self) -> str:
        """The reason the peer gave with its close code ("" if none)."""
        return self._conn.close_reason

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the opening handshake, if any."""
        return self._conn.subprotocol

    @property
    def path(self) -> str:
        """The request target (path and query) the client asked for."""
        conn = self._conn
        if isinstance(conn, WebSocketClientConnection):
            return conn.handshake.resource
        return conn.resource

    @property
    def remote_address(self) -> str:
        """The peer's address (``127.0.0.1:50412``, ``unix:...``)."""
        return self._conn.peer

    def _closed_error(self) -> ConnectionLost:
        conn = self._conn
        if conn.error is not None:
            return ConnectionLost(f"WebSocket to {conn.peer} failed: {conn.error}")
        if conn.close_code is None:
            return ConnectionLost(f"WebSocket to {conn.peer} is closing")
        reason = f" ({conn.close_reason})" if conn.close_reason else ""
        return ConnectionLost(f"WebSocket to {conn.peer} closed with {conn.close_code}{reason}")

    def __repr__(self) -> str:
        state = "open" if self.open else f"closed {self.close_code}"
        return f"<WebSocket {self.remote_address} {state}>"


Handler = Callable[[WebSocket], Awaitable[None]]
"""An application's coroutine serving one client of :func:`ws_server`."""


class WebSocketServer(StreamListener):
    """A running :func:`ws_server`: its address, ``active`` and ``stats`` (see
    :class:`StreamListener`), ``url``, and what its handlers raised.

    Attributes:
        url: the URL clients connect to (``ws://127.0.0.1:41235/``, ``wss://...``,
            ``ws+unix:///path.sock:/``).
        errors: what handlers raised, in order (each of those clients got close 1011).
    """

    def __init__(
        self, server: StreamServer, url: str, ca_file: Path | None, errors: list[BaseException]
    ) -> None:
        super().__init__(server, ca_file=ca_file)
        self.url = url
        self.errors = errors


@contextlib.asynccontextmanager
async def ws_server(
    endpoint: str = "127.0.0.1:0",
    *,
    mode: str | None = None,
    handler: Handler | None = None,
    paths: Sequence[str] = (),
    subprotocols: Sequence[str] = (),
    origins: Sequence[str] = (),
    compress: bool = False,
    max_size: int = 1 << 20,
    tls: TLSSetting = None,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    open_timeout: float | None = 10.0,
    close_timeout: float | None = 10.0,
    max_connections: int | None = None,
    allow: Iterable[str] | str = (),
    deny: Iterable[str] | str = (),
    drain_timeout: float = 1.0,
    on_event: EventHook | None = None,
) -> AsyncIterator[WebSocketServer]:
    """Run a WebSocket server for the ``async with`` block. What ``netkit ws-server`` runs.

    Each client is served by ``mode`` (``echo``, the default: each message back;
    ``broadcast``: to every other client; ``sink``: read and drop), or by ``handler``, a
    coroutine given each connection as a :class:`WebSocket`: when it returns the client gets
    close 1000, when it raises close 1011 (and :attr:`WebSocketServer.errors` keeps the error). ``GET /health``
    answers 200. When the block ends, clients get 1001 (going away) and ``drain_timeout``
    seconds to close; handlers still running then are cancelled.

    Args:
        endpoint: ``HOST:PORT`` (port 0 works), ``unix:/path``, or a URL
            (``ws://127.0.0.1:0/chat`` serves only ``/chat``; ``wss://`` needs ``tls``).
        paths: serve only these paths (404 otherwise).
        subprotocols: the subprotocols we speak, in order of preference.
        origins: the allowed ``Origin`` values (403 otherwise); ``none`` admits clients
            that send none.
        compress: accept permessage-deflate.
        max_size: the largest message accepted (close 1009 beyond).
        tls: None, True (self-signed), a :class:`ServerTLS` or an :class:`ssl.SSLContext`.
        ping_interval, ping_timeout: keepalive pings (None: off), in seconds.
        open_timeout, close_timeout: limits on the opening and closing handshakes.
        max_connections: clients beyond this get 503.
        allow, deny: networks or addresses to serve only, and never to serve (deny wins;
            see :func:`~netkit.api.servers.echo_server`): a denied client is reset at
            accept, before its handshake (a ``denied`` event).
        on_event: called with (event name, fields) for each server event.

    Yields:
        The running :class:`WebSocketServer` (its ``url``).

    Raises:
        EndpointError: ``endpoint`` does not parse.
        ConfigError: a bad mode, path, origin, size or TLS setting.
        BindError: the address is in use.
    """
    where, wants_tls, url_path = listen_address(endpoint)
    if wants_tls and tls is None:
        raise ConfigError("a wss:// endpoint needs tls (True, a ServerTLS or an SSLContext)")
    if mode is not None and handler is not None:
        raise ConfigError(f"give a mode ({mode!r}) or a handler, not both")
    try:
        handling = Mode(mode or "echo")
    except ValueError:
        names = ", ".join(m.value for m in Mode)
        raise ConfigError(f"mode {mode!r}: choose one of {names}") from None
    if not 0 < max_size <= MAX_MESSAGE:
        raise ConfigError("max_size must be between 1 byte and 1 GiB")
    access = AccessList(allow, deny)
    served = [resource_path(p) for p in paths or ([] if url_path is None else [url_path])]
    handshake = ServerHandshake(
        paths=served or None,
        origins=parse_origins(origins),
        subprotocols=tuple(subprotocols),
        deflate=DeflateParams() if compress else None,
    )
    timeouts = WSTimeouts(open_timeout, close_timeout, ping_interval, ping_timeout)
    room, tasks = Room(), set[asyncio.Task[None]]()
    errors: list[BaseException] = []

    def factory() -> ServerConnection:
        if handler is None:
            return ModeConnection(
                handshake,
                mode=handling,
                room=room,
                log=None,
                log_messages=False,
                max_size=max_size,
                timeouts=timeouts,
            )
        return HandlerConnection(
            handshake,
            lambda conn: handler(WebSocket(conn)),
            tasks=tasks,
            on_error=errors.append,
            max_size=max_size,
            timeouts=timeouts,
        )

    try:
        async with serving_stream(
            where,
            factory,
            tls=tls,
            max_connections=max_connections,
            drain_timeout=drain_timeout,
            on_event=on_event,
            access=access,
        ) as (server, ca_file):
            url = server_url(
                server.address, server.ssl_context is not None, served[0] if served else "/"
            )
            yield WebSocketServer(server, url, ca_file, errors)
    finally:
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)


@contextlib.asynccontextmanager
async def ws_connect(
    url: str,
    *,
    tls: ClientTLS | ssl.SSLContext | None = None,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    compress: bool = False,
    max_size: int = 1 << 20,
    open_timeout: float | None = 10.0,
    close_timeout: float | None = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    retry_for: float = 0.0,
    proxy: str | None = None,
    max_redirects: int = 0,
    allow_insecure_redirect: bool = False,
) -> AsyncIterator[WebSocket]:
    """Open a WebSocket connection for the ``async with`` block; when the block ends it is
    closed (1000) if still open. What ``netkit ws-client`` connects with.

    Args:
        url: ``ws://HOST:PORT/path``, ``wss://...``, ``ws+unix:///path.sock:/path``.
        tls: for ``wss://``: a :class:`ClientTLS` (CA file, client certificate, ``insecure``)
            or an :class:`ssl.SSLContext`; None trusts the system's CAs.
        subprotocols: to offer, in order of preference.
        headers: more request headers, ``(name, value)``.
        origin: the ``Origin`` header.
        compress: offer permessage-deflate.
        max_size: the largest message accepted (close 1009 beyond).
        open_timeout: one deadline for connecting, TLS and the upgrade (None: none).
        close_timeout: how long the closing handshake may take.
        ping_interval, ping_timeout: keepalive pings (None: off), in seconds.
        retry_for: keep retrying a refused connection this many seconds.
        proxy: connect through this HTTP proxy, ``http://[user:pass@]host:port`` (CONNECT;
            TLS for ``wss://`` runs through the tunnel to the server).
        max_redirects: follow up to this many redirects of the upgrade (301, 302, 303, 307,
            308; ``http`` -> ``ws``, ``https`` -> ``wss``); 0: a redirect is a refused upgrade.
        allow_insecure_redirect: follow a redirect from ``wss://`` to ``ws://``.

    Yields:
        The open :class:`WebSocket`.

    Raises:
        EndpointError: ``url`` does not parse.
        ConfigError: TLS settings for a ``ws://`` URL, or unusable ones.
        ConnectError: refused, unreachable, no such socket file.
        TLSError: the TLS handshake failed.
        OperationTimeout: not open within ``open_timeout``.
        UpgradeRefused: the server answered with another status than 101 (a
            :class:`PeerProtocolError`).
        ProxyRefused: the proxy answered CONNECT with another status than 2xx (a
            :class:`ConnectError`, with ``status_code``).
        PeerProtocolError: a redirect loop, too many redirects, or wss:// to ws://.
    """
    target = parse_ws_url(url)
    if tls is not None and not target.secure and not max_redirects:
        raise ConfigError(f"TLS settings need a wss:// URL, not {url!r}")
    if not 0 < max_size <= MAX_MESSAGE:
        raise ConfigError("max_size must be between 1 byte and 1 GiB")
    if max_redirects < 0:
        raise ConfigError("max_redirects cannot be negative")
    tls_for = tls_per_url(tls)
    tls_for(target)  # unusable TLS settings fail here, before connecting

    def handshake(url: WSURL) -> ClientHandshake:
        return ClientHandshake.from_url(
            url, headers=headers, subprotocols=subprotocols, origin=origin, compress=compress
        )

    first = handshake(target)
    timeouts = WSTimeouts(open_timeout, close_timeout, ping_interval, ping_timeout)
    dialer = Dialer(
        target,
        lambda to: WebSocketClientConnection(
            first if to == target else handshake(to), max_size=max_size, timeouts=timeouts
        ),
        tls_for,
        proxy=parse_proxy_url(proxy) if proxy is not None else None,
        redirects=RedirectPolicy(max_redirects, allow_insecure_redirect) if max_redirects else None,
        timeout=open_timeout,
        retry_for=retry_for,
    )
    conn = await dialer.open()
    try:
        yield WebSocket(conn)
        await conn.close_and_wait()
    finally:
        conn.abort()  # a no-op after the closing handshake; drops the connection on errors


__all__ = ["Handler", "WebSocket", "WebSocketServer", "ws_connect", "ws_server"]

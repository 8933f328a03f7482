"""Stream server lifecycle: listen, track connections, cap them, drain on shutdown."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.net.accept import Acceptor
from netkit.net.protocols import StreamProtocol
from netkit.net.sockets import (
    SocketOptions,
    create_tcp_listener,
    create_unix_listener,
    listener_address,
    unlink_unix_listener,
)
from netkit.net.tls_layer import accept_tls


@dataclass
class ServerStats:
    """Totals over a server's life, merged across worker processes."""

    accepted: int = 0
    rejected: int = 0
    active: int = 0
    peak: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    aborted_at_drain: int = 0
    accept_errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a summary."""
        return {
            "connections": self.accepted,
            "rejected": self.rejected,
            "peak_connections": self.peak,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "errors": self.errors,
            "aborted_at_drain": self.aborted_at_drain,
            "accept_errors": self.accept_errors,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    def merge(self, other: dict[str, Any]) -> None:
        """Add a worker's summary (from :meth:`as_dict`)."""
        self.accepted += other.get("connections", 0)
        self.rejected += other.get("rejected", 0)
        self.peak += other.get("peak_connections", 0)
        self.bytes_in += other.get("bytes_in", 0)
        self.bytes_out += other.get("bytes_out", 0)
        self.errors += other.get("errors", 0)
        self.aborted_at_drain += other.get("aborted_at_drain", 0)
        self.accept_errors += other.get("accept_errors", 0)


class ServerConnection(StreamProtocol):
    """A server-side connection that reports to its :class:`StreamServer`."""

    server: StreamServer

    def begin_drain(self) -> None:
        """The server is shutting down: close as soon as no exchange is in flight.

        The default waits for the peer to close; protocols with message boundaries close at
        the next boundary.
        """

    def turn_away(self, reason: str) -> None:
        """The server will not serve this connection (at its connection limit, shutting down).

        Raw bytes have no way to say why, so the default resets the connection; protocols that
        can answer (HTTP: a 503) override this to say so, then close.
        """
        self.server.refuse(self, reason)
        self.abort()

    def on_connect(self) -> None:
        self.server._register(self)

    def on_close(self, exc: Exception | None) -> None:
        self.server._unregister(self)


def make_listener(
    endpoint: TCPEndpoint | UnixEndpoint,
    *,
    reuse_port: bool = False,
    socket_mode: int | None = 0o660,
    options: SocketOptions = SocketOptions(),
) -> socket.socket:
    """Create the listening socket for ``endpoint`` (see :mod:`netkit.net.sockets`)."""
    if isinstance(endpoint, UnixEndpoint):
        return create_unix_listener(endpoint, mode=socket_mode, options=options)
    return create_tcp_listener(endpoint, reuse_port=reuse_port, options=options)


# OpenSSL reasons a user meets on a TLS port, in words.
_TLS_REASONS = {
    "HTTP_REQUEST": "plain HTTP sent to a TLS port",
    "WRONG_VERSION_NUMBER": "not a TLS handshake",
    "UNSUPPORTED_PROTOCOL": "the client offers only TLS versions below 1.2",
    "NO_SHARED_CIPHER": "no cipher suite in common",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust our certificate's CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected our certificate",
}


def handshake_failure(exc: OSError | ssl.SSLError) -> str:
    """One line on why a client's TLS handshake failed; never empty.

    The event loops report a connection lost mid-handshake as a bare ``ConnectionResetError()``
    (no errno, no text), which used to come out as "TLS: ".
    """
    reason = getattr(exc, "reason", None)
    if reason:
        words = _TLS_REASONS.get(reason)
        return f"TLS handshake failed: {reason}" + (f" ({words})" if words else "")
    if isinstance(exc, ConnectionResetError) and exc.errno is None:
        return (
            "TLS handshake failed: the client closed the connection before it ended"
            " (a client that does not trust the certificate does this)"
        )
    return f"TLS handshake failed: {exc.strerror or exc or type(exc).__name__}"


class StreamServer:
    """Serves connections made by ``factory`` on an already-listening socket.

    Args:
        sock: the listening socket (from :func:`make_listener`).
        factory: builds one :class:`ServerConnection` per accepted connection.
        ssl_context: TLS for every connection, or None.
        max_connections: connections beyond this are turned away at once
            (:meth:`ServerConnection.turn_away`) and counted as rejected.
        on_event: called with (event name, fields) for per-connection events.
    """

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], ServerConnection],
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        unix_endpoint: UnixEndpoint | None = None,
    ) -> None:
        self.sock = sock
        self.address = listener_address(sock)
        self.factory = factory
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.on_event = on_event
        self.unix_endpoint = unix_endpoint
        self.stats = ServerStats()
        self.connections: set[ServerConnection] = set()
        self.draining = False
        self._acceptor: Acceptor | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def _make(self) -> ServerConnection:
        conn = self.factory()
        conn.server = self
        return conn

    async def start(self) -> None:
        """Start accepting connections."""
        self._acceptor = Acceptor(self.sock, self._accepted, self._acceptor_event)
        self._acceptor.start()

    def _acceptor_event(self, event: str, fields: dict[str, Any]) -> None:
        self.stats.accept_errors = self._acceptor.errors if self._acceptor else 0
        if self.on_event:
            self.on_event(event, fields)

    def _accepted(self, conn: socket.socket, peer: str) -> None:
        task = asyncio.get_running_loop().create_task(self._attach(conn, peer))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _attach(self, conn: socket.socket, peer: str) -> None:
        # A transport for the accepted socket (and the TLS handshake, when there is TLS:
        # netkit's own layer, which sends the alert when a handshake fails).
        try:
            if self.ssl_context is not None:
                await accept_tls(conn, self._make, self.ssl_context)
            else:
                await asyncio.get_running_loop().connect_accepted_socket(self._make, conn)
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            self.stats.errors += 1
            if self.on_event:
                self.on_event("handshake_failed", {"peer": peer, "error": handshake_failure(exc)})

    def refuse(
        self, conn: ServerConnection, reason: str, *, response: bytes = b"", **fields: Any
    ) -> None:
        """Count ``conn`` as turned away and report it (``rejected``), with ``response`` sent.

        Every refusal goes through here: over the connection limit, during the drain, and a
        protocol's own (an HTTP 4xx/5xx), so that the summary's ``rejected`` counts them all.
        The caller closes the connection.

        Args:
            response: bytes to send the client first (an HTTP answer), if its protocol has one.
            fields: more fields for the event (``status``).
        """
        if response and conn.transport is not None and not conn.transport.is_closing():
            conn.write(response)
        self.stats.rejected += 1
        if self.on_event:
            self.on_event("rejected", {"peer": conn.peer, "reason": reason, **fields})

    def _register(self, conn: ServerConnection) -> None:
        if self.draining:
            conn.turn_away("shutting down")
            return
        if self.max_connections is not None and len(self.connections) >= self.max_connections:
            conn.turn_away(f"at the connection limit ({self.max_connections})")
            return
        self.connections.add(conn)
        self._idle.clear()
        self.stats.accepted += 1
        self.stats.active = len(self.connections)
        self.stats.peak = max(self.stats.peak, self.stats.active)
        if self.on_event:
            self.on_event("connected", {"peer": conn.peer})

    def _unregister(self, conn: ServerConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.stats.active = len(self.connections)
        self.stats.bytes_in += conn.bytes_in
        self.stats.bytes_out += conn.bytes_out
        if conn.error is not None:
            self.stats.errors += 1
        if self.on_event:
            fields: dict[str, Any] = {
                "peer": conn.peer,
                "bytes_in": conn.bytes_in,
                "bytes_out": conn.bytes_out,
                "duration_s": round(conn.duration, 6),
            }
            if conn.error is not None:
                fields["error"] = str(conn.error)
            self.on_event("disconnected", fields)
        if not self.connections:
            self._idle.set()

    async def drain(self, timeout: float, forced: asyncio.Event | None = None) -> None:
        """Stop accepting, let connections finish for up to ``timeout`` s, then abort the rest."""
        self.stop_accepting()
        if self.unix_endpoint is not None:
            unlink_unix_listener(self.unix_endpoint)
        for conn in list(self.connections):
            conn.begin_drain()
        waiters = [asyncio.ensure_future(self._idle.wait())]
        if forced is not None:
            waiters.append(asyncio.ensure_future(forced.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        remaining = list(self.connections)
        self.stats.aborted_at_drain = len(remaining)
        for conn in remaining:
            conn.abort()
        if remaining:
            # Wait for connection_lost so their bytes are counted in the summary.
            await asyncio.wait([c.closed for c in remaining], timeout=1.0)

    def stop_accepting(self) -> None:
        """Close the listener: new clients are refused from now on (existing ones go on)."""
        self.draining = True
        if self._acceptor is not None:
            self._acceptor.stop()
        for task in self._handshakes:
            task.cancel()  # TLS handshakes not finished: those clients never got in
        if self.sock.fileno() >= 0:
            self.sock.close()

    def close_listener(self) -> None:
        """Close the listening socket and remove its file (when it is ours)."""
        self.stop_accepting()
        if self.unix_endpoint is not None:
            unlink_unix_listener(self.unix_endpoint)


# --- running a server command --------------------------------------------------------------


@dataclass
class ServeResult:
    """How a server run ended."""

    stats: ServerStats
    interrupted: bool
    address: str


async def serve_until_signal(
    sock: socket.socket,
    factory: Callable[[], ServerConnection],
    *,
    ssl_context: ssl.SSLContext | None,
    max_connections: int | None,
    drain_timeout: float,
    unix_endpoint: UnixEndpoint | None,
    on_listening: Callable[[str], None] | None,
    on_event: Callable[[str, dict[str, Any]], None] | None,
    on_draining: Callable[[int], None] | None = None,
) -> ServeResult:
    """Serve on ``sock`` until SIGINT/SIGTERM, then drain gracefully.

    A second signal during the drain stops it at once.
    """
    from netkit.net.runtime import ShutdownSignal

    shutdown = ShutdownSignal()
    shutdown.install()
    server = StreamServer(
        sock,
        factory,
        ssl_context=ssl_context,
        max_connections=max_connections,
        on_event=on_event,
        unix_endpoint=unix_endpoint,
    )
    try:
        await server.start()
        if on_listening is not None:
            on_listening(server.address)
        await shutdown.requested.wait()
        server.stop_accepting()  # before "draining" is announced: from then on, refused
        if on_draining is not None:
            on_draining(len(server.connections))
        await server.drain(drain_timeout, shutdown.forced)
    finally:
        server.close_listener()
        shutdown.uninstall()
    return ServeResult(server.stats, shutdown.interrupted, server.address)

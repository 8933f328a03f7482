"""The server lifecycle every netkit server shares, and the stream server built on it.

:class:`Server` accepts (through :class:`~netkit.net.accept.Acceptor`), caps, tracks, drains
(:meth:`Server.drain`), stops accepting and keeps :class:`ServerStats`;
:class:`StreamServer` (tcp-echo, ws-server, bench's echo server) and
:class:`~netkit.net.relay.RelayServer` (proxy, lb) are the two kinds of server on it.
:func:`running` is the lifecycle every one of them goes through (start, serve, stop accepting,
drain, close); :func:`serve_until_signal` runs it until a stop signal (the commands), the public
API's context managers for the length of their block.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from netkit.core.access import AccessList, unix_socket_error
from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.net.accept import Acceptor
from netkit.net.protocols import StreamProtocol
from netkit.net.runtime import run_until_signal
from netkit.net.sockets import (
    SocketOptions,
    create_tcp_listener,
    create_unix_listener,
    force_rst,
    listener_address,
    unlink_unix_listener,
)
from netkit.net.tls_layer import accept_tls

EventHook = Callable[[str, dict[str, Any]], None]
"""Receives (event name, fields) for every event a server reports."""


def quiet_events(hook: EventHook | None) -> frozenset[str]:
    """The events ``hook`` does nothing with unless they report bytes undelivered.

    A hook says so with a ``quiet_events`` attribute (the command's printer without
    ``--json`` shows a relay's ``closed`` event only then); a server need not build such an
    event's fields otherwise (a relay closes thousands of connections a second).
    """
    return getattr(hook, "quiet_events", frozenset())


@dataclass
class ServerStats:
    """What every server counts over its life; each kind of server adds its own totals."""

    accepted: int = 0
    rejected: int = 0
    denied: int = 0
    active: int = 0
    peak: int = 0
    aborted_at_drain: int = 0
    accept_errors: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def uptime(self) -> float:
        """Seconds since the server was made, rounded for a summary."""
        return round(time.monotonic() - self.started, 3)

    # The summary's JSON keys, in order, each with the attribute it reports; each kind of
    # server words its own (a relay says cut_at_drain, a stream server aborted_at_drain).
    SUMMARY: ClassVar[tuple[tuple[str, str], ...]] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a summary, as :attr:`SUMMARY` words it, with ``denied`` (clients
        an allow/deny list turned away) beside ``rejected`` in every kind of server's."""
        summary: dict[str, Any] = {}
        for key, attribute in self.SUMMARY:
            summary[key] = getattr(self, attribute)
            if attribute == "rejected":
                summary["denied"] = self.denied
        return summary


@dataclass
class StreamStats(ServerStats):
    """A stream server's totals: bytes each way and connections that ended in error."""

    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0

    SUMMARY: ClassVar[tuple[tuple[str, str], ...]] = (
        ("connections", "accepted"),
        ("rejected", "rejected"),
        ("peak_connections", "peak"),
        ("bytes_in", "bytes_in"),
        ("bytes_out", "bytes_out"),
        ("errors", "errors"),
        ("aborted_at_drain", "aborted_at_drain"),
        ("accept_errors", "accept_errors"),
        ("uptime_s", "uptime"),
    )


class Server:
    """Accepts, caps, tracks, drains, stops accepting and counts: the lifecycle of a server.

    Every client is checked against :attr:`access` (see :meth:`restrict`) before the kind of
    server sees it: a denied client is reset at accept, before a byte is read from it or a TLS
    handshake begins, reported (``denied``) and counted (``stats.denied``). The address checked
    is the socket's peer: behind a PROXY-protocol sender, the proxy in front, whose header is
    not read yet (allowing only trusted proxies is what makes their headers believable); a
    kind of server that learns another address later may check it with :meth:`denies`.

    A kind of server says what an accepted socket becomes (:meth:`accepted`), when a client
    counts as a connection (:meth:`track`, :meth:`untrack`), how its connections are asked to
    finish (:meth:`begin_drain`) and cut (:meth:`cut`). Construct it on the running loop.

    Args:
        sock: the listening socket (from :func:`make_listener`).
        stats: the totals this server keeps.
        max_connections: the cap; :attr:`full` says when it is reached.
        on_event: called with (event name, fields) for every event.
        unix_endpoint: the Unix socket's path, removed when the server stops listening.
        before_accept: see :class:`~netkit.net.accept.Acceptor`.

    Attributes:
        access: the allow/deny lists every client is checked against (empty: everyone).
    """

    PEER_FIELD: ClassVar[str] = "peer"
    """The events' name for a client's address (a relay's events say ``client``)."""

    def __init__(
        self,
        sock: socket.socket,
        stats: ServerStats,
        *,
        max_connections: int | None = None,
        on_event: EventHook | None = None,
        unix_endpoint: UnixEndpoint | None = None,
        before_accept: Callable[[], OSError | None] | None = None,
    ) -> None:
        self.sock = sock
        self.address = listener_address(sock)
        self.stats = stats
        self.max_connections = max_connections
        self.on_event = on_event
        self.unix_endpoint = unix_endpoint
        self.connections: dict[Hashable, Any] = {}
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._before_accept = before_accept
        self.access = AccessList()
        self.acceptor = Acceptor(
            sock, self._admit, self._acceptor_event, before_accept=before_accept
        )

    # --- what a kind of server provides ---------------------------------------------------

    def accepted(self, conn: socket.socket, peer: str) -> None:
        """A client was accepted: make it a connection (or turn it away)."""
        raise NotImplementedError

    def begin_drain(self) -> None:
        """The drain began: ask every connection to finish."""

    async def cut(self) -> int:
        """The drain timed out: end every connection still open, and return how many."""
        raise NotImplementedError

    # --- the lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start accepting connections."""
        self.acceptor.start()

    def restrict(self, access: AccessList) -> None:
        """Serve only the clients ``access`` allows, from the next accept on.

        Raises:
            ConfigError: rules for a Unix socket, whose clients have no address to match.
        """
        _check_access(access, self.sock)
        self.access = access

    def denies(self, host: str, peer: str) -> bool:
        """Check the client at ``host`` (``peer`` as the events show it): when the lists deny
        it, count it and report it (``denied``, with the rule that matched) and return True;
        the caller turns it away."""
        verdict = self.access.check(host)
        if verdict.allowed:
            return False
        self.stats.denied += 1
        self.emit("denied", {self.PEER_FIELD: peer, "rule": verdict.rule})
        return True

    def _admit(self, conn: socket.socket, peer: str) -> None:
        # Every accepted client passes here first: with allow/deny lists, a denied one is
        # reset at once (nothing read, no TLS handshake) and the kind of server never sees it.
        if self.access and conn.family != socket.AF_UNIX:
            try:
                host = conn.getpeername()[0]
            except OSError:  # reset before we looked: gone already
                conn.close()
                return
            if self.denies(host, peer):
                force_rst(conn)
                conn.close()
                return
        self.accepted(conn, peer)

    def emit(self, event: str, fields: dict[str, Any]) -> None:
        """Report an event to :attr:`on_event`."""
        if self.on_event is not None:
            self.on_event(event, fields)

    def _acceptor_event(self, event: str, fields: dict[str, Any]) -> None:
        self.stats.accept_errors = self.acceptor.errors
        self.emit(event, fields)

    @property
    def full(self) -> bool:
        """True when :attr:`max_connections` connections are open."""
        return self.max_connections is not None and len(self.connections) >= self.max_connections

    def rejected(self, fields: dict[str, Any]) -> None:
        """Count a client turned away and report it (``rejected``); the caller closes it."""
        self.stats.rejected += 1
        self.emit("rejected", fields)

    def track(self, key: Hashable, value: Any) -> None:
        """A new connection, open until :meth:`untrack`: counted, and waited for at drain."""
        self.connections[key] = value
        self._idle.clear()
        self.stats.accepted += 1
        self.stats.active = len(self.connections)
        self.stats.peak = max(self.stats.peak, self.stats.active)

    def untrack(self, key: Hashable) -> bool:
        """A connection ended; False when it was never tracked (turned away)."""
        if key not in self.connections:
            return False
        del self.connections[key]
        self.stats.active = len(self.connections)
        if not self.connections:
            self._idle.set()
        self.acceptor.wake()  # descriptors were freed: a client paused in the backlog may go
        return True

    def stopped_accepting(self) -> None:
        """Called once the acceptor stopped, before the listener closes."""

    def stop_accepting(self) -> None:
        """Close the listener: new clients are refused from now on (existing ones go on)."""
        self.draining = True
        self.acceptor.stop()
        self.stopped_accepting()
        if self.sock.fileno() >= 0:
            self.sock.close()

    def close_listener(self) -> None:
        """Close the listening socket and remove its file (when it is ours)."""
        self.stop_accepting()
        if self.unix_endpoint is not None:
            unlink_unix_listener(self.unix_endpoint)

    def listen_on(self, sock: socket.socket, unix_endpoint: UnixEndpoint | None = None) -> None:
        """Accept on a new listening socket from now on (the previous one, if still open, is
        closed first and its file removed).

        Args:
            sock: the new listener (from :func:`make_listener`).
            unix_endpoint: its path, when it is a Unix socket this server created.

        Raises:
            ConfigError: a Unix socket while allow/deny lists are set.
        """
        _check_access(self.access, sock)
        if self.sock.fileno() >= 0:
            self.close_listener()
        else:
            self.acceptor.stop()
        errors = self.acceptor.errors
        self.sock, self.address, self.unix_endpoint = sock, listener_address(sock), unix_endpoint
        self.acceptor = Acceptor(
            sock, self._admit, self._acceptor_event, before_accept=self._before_accept
        )
        self.acceptor.errors = errors
        self.draining = False
        self.acceptor.start()

    async def drain(self, timeout: float, forced: asyncio.Event | None = None) -> int:
        """Stop accepting, let connections finish for up to ``timeout`` s (or until ``forced``
        is set), then cut the rest.

        Returns:
            How many connections had to be cut (also in ``stats.aborted_at_drain``).
        """
        self.close_listener()
        self.begin_drain()
        waiters = [asyncio.ensure_future(self._idle.wait())]
        if forced is not None:
            waiters.append(asyncio.ensure_future(forced.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self.stats.accept_errors = self.acceptor.errors
        self.stats.aborted_at_drain = await self.cut()
        return self.stats.aborted_at_drain

    async def close(self) -> None:
        """Release what the server holds beyond its listener (called last, once)."""
        self.close_listener()


def _check_access(access: AccessList, sock: socket.socket) -> None:
    # A Unix socket's clients have no address: rules there could only deny everyone.
    if access and sock.family == socket.AF_UNIX:
        raise unix_socket_error()


@contextlib.asynccontextmanager
async def running(
    server: Server,
    *,
    drain_timeout: float,
    forced: asyncio.Event | None = None,
    on_draining: Callable[[int], None] | None = None,
) -> AsyncIterator[Server]:
    """Serve inside the ``async with`` block; when it ends, stop accepting and drain.

    The one lifecycle of a server: :func:`serve_until_signal` (the commands) and the public
    API's context managers (``netkit.echo_server`` ...) both run it. A block that raises
    skips the drain; the server is closed in every case.

    Args:
        drain_timeout: how long open connections may finish once the block ends.
        forced: set to cut the drain short.
        on_draining: called with the number of open connections when the drain begins (the
            listener is closed by then: from then on, new clients are refused).
    """
    try:
        server.start()
        yield server
        server.stop_accepting()
        if on_draining is not None:
            on_draining(len(server.connections))
        await server.drain(drain_timeout, forced)
    finally:
        await server.close()


async def serve_until_signal(
    server: Server,
    *,
    drain_timeout: float,
    on_listening: Callable[[Server], None] | None = None,
    on_draining: Callable[[int], None] | None = None,
    while_serving: Callable[[asyncio.Event], Awaitable[None]] | None = None,
    on_reload: Callable[[], None] | None = None,
) -> bool:
    """Serve until SIGINT/SIGTERM (see :func:`~netkit.net.runtime.run_until_signal`), then drain.

    A second signal during the drain stops it at once.

    Args:
        on_listening: called once the server accepts.
        on_draining: called with the number of open connections when the drain begins (the
            listener is closed by then: from then on, new clients are refused).
        while_serving: awaited instead of the stop signal; it must return once the event it
            gets is set (a live status display).
        on_reload: called on SIGHUP instead of stopping.

    Returns:
        True when the stop came from SIGINT (exit 130).
    """
    async with (
        run_until_signal(on_reload) as shutdown,
        running(
            server, drain_timeout=drain_timeout, forced=shutdown.forced, on_draining=on_draining
        ),
    ):
        if on_listening is not None:
            on_listening(server)
        if while_serving is not None:
            await while_serving(shutdown.requested)
        else:
            await shutdown.requested.wait()
    return shutdown.interrupted


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


class StreamServer(Server):
    """Serves connections made by ``factory`` on an already-listening socket.

    Args:
        sock: the listening socket (from :func:`make_listener`).
        factory: builds one :class:`ServerConnection` per accepted connection.
        ssl_context: TLS for every connection, or None.
        max_connections: connections beyond this are turned away at once
            (:meth:`ServerConnection.turn_away`) and counted as rejected.
        on_event: called with (event name, fields) for per-connection events.
        unix_endpoint: the Unix socket's path, removed when the server stops listening.
        stats: the totals to keep, when a kind of stream server counts more (a bridge).
    """

    stats: StreamStats
    connections: dict[Hashable, ServerConnection]

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], ServerConnection],
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        on_event: EventHook | None = None,
        unix_endpoint: UnixEndpoint | None = None,
        stats: StreamStats | None = None,
    ) -> None:
        super().__init__(
            sock,
            stats if stats is not None else StreamStats(),
            max_connections=max_connections,
            on_event=on_event,
            unix_endpoint=unix_endpoint,
        )
        self.factory = factory
        self.ssl_context = ssl_context
        self._handshakes: set[asyncio.Task[None]] = set()

    def _make(self) -> ServerConnection:
        conn = self.factory()
        conn.server = self
        return conn

    def accepted(self, conn: socket.socket, peer: str) -> None:
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
            self.emit("handshake_failed", {"peer": peer, "error": handshake_failure(exc)})

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
        self.rejected({"peer": conn.peer, "reason": reason, **fields})

    def _register(self, conn: ServerConnection) -> None:
        if self.draining:
            conn.turn_away("shutting down")
            return
        if self.full:
            conn.turn_away(f"at the connection limit ({self.max_connections})")
            return
        self.track(conn, conn)
        self.emit("connected", {"peer": conn.peer})

    def _unregister(self, conn: ServerConnection) -> None:
        if not self.untrack(conn):
            return
        self.stats.bytes_in += conn.bytes_in
        self.stats.bytes_out += conn.bytes_out
        if conn.error is not None:
            self.stats.errors += 1
        fields: dict[str, Any] = {
            "peer": conn.peer,
            "bytes_in": conn.bytes_in,
            "bytes_out": conn.bytes_out,
            "duration_s": round(conn.duration, 6),
        }
        if conn.error is not None:
            fields["error"] = str(conn.error)
        self.emit("disconnected", fields)

    def begin_drain(self) -> None:
        for conn in list(self.connections.values()):
            conn.begin_drain()

    async def cut(self) -> int:
        remaining: list[ServerConnection] = list(self.connections.values())
        for conn in remaining:
            conn.abort()
        if remaining:
            # Wait for connection_lost so their bytes are counted in the summary.
            await asyncio.wait([c.closed for c in remaining], timeout=1.0)
        return len(remaining)

    def stopped_accepting(self) -> None:
        for task in self._handshakes:
            task.cancel()  # TLS handshakes not finished: those clients never got in

"""Echo servers for test suites: :func:`echo_server` (TCP, Unix, TLS; raw or framed, what
``netkit tcp-echo serve`` runs) and :func:`udp_echo_server` (``netkit udp-echo serve``).

Each is an async context manager that listens before its block starts (port 0 works: the
handle says the real address) and, when the block ends, stops accepting, lets open
connections finish for ``drain_timeout`` seconds and closes the rest: the lifecycle of every
netkit server (:func:`netkit.net.server.running`).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from netkit.core.access import AccessList, unix_socket_error
from netkit.core.addresses import (
    TCPEndpoint,
    UnixEndpoint,
    parse_datagram_endpoint,
    parse_stream_endpoint,
)
from netkit.errors import ConfigError
from netkit.net import datagram
from netkit.net.echo import EchoConnection, FramedEchoConnection, check_max_frame
from netkit.net.server import (
    EventHook,
    ServerConnection,
    StreamServer,
    make_listener,
    running,
)
from netkit.net.sockets import SocketOptions, create_udp_socket, listener_address
from netkit.net.streamtest import StreamTestConnection
from netkit.net.tls import ClientTLS, ServerTLS, client_context, server_context
from netkit.net.udp_sink import UDPSinkServer, receiver_options

TLSSetting = ServerTLS | ssl.SSLContext | bool | None
"""A server's TLS: None (plain), True (a throwaway self-signed certificate), a
:class:`ServerTLS` (certificate files) or a ready :class:`ssl.SSLContext`."""


def server_tls(tls: TLSSetting) -> tuple[ssl.SSLContext | None, Path | None]:
    """The context a listener uses for ``tls``, and the CA file clients should trust
    (self-signed only).

    Raises:
        ConfigError: a certificate or key that cannot be used, or a ``tls`` of another type.
    """
    if tls is None or tls is False:
        return None, None
    if tls is True:
        tls = ServerTLS(self_signed=True)
    if isinstance(tls, ssl.SSLContext):
        return tls, None
    if not isinstance(tls, ServerTLS):
        raise ConfigError(
            f"tls {tls!r}: give True (self-signed), a netkit.ServerTLS or an ssl.SSLContext"
        )
    return server_context(tls)


class Listening:
    """What every server handle says: where it listens, and how to trust its TLS.

    Attributes:
        address: the bound address as an endpoint string: ``127.0.0.1:41235``,
            ``[::1]:41235`` or ``unix:/path``.
        host, port: the bound host and port (None for a Unix socket).
        path: the Unix socket's path (None for TCP).
        tls: True when clients must speak TLS.
        ca_file: the CA certificate that signed a self-signed server's certificate (None
            otherwise): trust it in clients, e.g. with :meth:`client_ssl_context`.
    """

    def __init__(self, address: str, *, tls: bool = False, ca_file: Path | None = None) -> None:
        self.address = address
        self.tls = tls
        self.ca_file = ca_file
        self.path: str | None = (
            address.removeprefix("unix:") if address.startswith("unix:") else None
        )
        self.host: str | None = None
        self.port: int | None = None
        if self.path is None:
            host, _, port = address.rpartition(":")
            self.host, self.port = host.strip("[]"), int(port)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's self-signed certificate (TLS 1.2+).

        Raises:
            ConfigError: the server has no self-signed certificate to trust.
        """
        if self.ca_file is None:
            raise ConfigError(
                "client_ssl_context() needs a server started with tls=True (self-signed)"
            )
        return client_context(ClientTLS(enabled=True, cacert=self.ca_file))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}{' (TLS)' if self.tls else ''}>"


class StreamListener(Listening):
    """A running stream server (TCP, Unix or TLS): its address (see :class:`Listening`), the
    connections open now and its totals."""

    def __init__(self, server: StreamServer, *, ca_file: Path | None) -> None:
        super().__init__(server.address, tls=server.ssl_context is not None, ca_file=ca_file)
        self._server = server

    @property
    def active(self) -> int:
        """Connections open now."""
        return len(self._server.connections)

    @property
    def stats(self) -> dict[str, Any]:
        """The totals so far, as the command's ``--json`` summary has them: ``connections``,
        ``bytes_in``, ``bytes_out``, ``errors``, ``rejected``, ``peak_connections`` ..."""
        return self._server.stats.as_dict()


class EchoServer(StreamListener):
    """A running :func:`echo_server`: ``address``, ``host``, ``port``, ``path``, ``tls``,
    ``ca_file``, ``active`` and ``stats`` (see :class:`StreamListener`)."""


@contextlib.asynccontextmanager
async def serving_stream(
    where: TCPEndpoint | UnixEndpoint,
    factory: Callable[[], ServerConnection],
    *,
    tls: TLSSetting,
    max_connections: int | None,
    drain_timeout: float,
    on_event: EventHook | None,
    access: AccessList,
) -> AsyncIterator[tuple[StreamServer, Path | None]]:
    """A :class:`StreamServer` listening on ``where`` for the block (TLS as ``tls`` says,
    serving the clients ``access`` allows), with the CA file of a self-signed one. Shared by
    the echo and WebSocket servers."""
    if access and isinstance(where, UnixEndpoint):
        raise unix_socket_error()
    ssl_context, ca_file = server_tls(tls)
    sock = make_listener(where)
    try:
        server = StreamServer(
            sock,
            factory,
            ssl_context=ssl_context,
            max_connections=max_connections,
            on_event=on_event,
            unix_endpoint=where if isinstance(where, UnixEndpoint) else None,
        )
        server.restrict(access)
    except BaseException:
        sock.close()
        raise
    async with running(server, drain_timeout=drain_timeout):
        yield server, ca_file


@contextlib.asynccontextmanager
async def echo_server(
    endpoint: str = "127.0.0.1:0",
    *,
    framed: bool = False,
    max_frame: int = 16 << 20,
    mode: str = "echo",
    tls: TLSSetting = None,
    idle_timeout: float | None = None,
    max_connections: int | None = None,
    allow: Iterable[str] | str = (),
    deny: Iterable[str] | str = (),
    drain_timeout: float = 1.0,
    on_event: EventHook | None = None,
) -> AsyncIterator[EchoServer]:
    """Run an echo server for the ``async with`` block: every byte (or, ``framed``, every
    length-prefixed frame) goes back to its sender. What ``netkit tcp-echo serve`` runs.

    Args:
        endpoint: where to listen: ``HOST:PORT`` (port 0: the kernel picks one), ``:PORT``
            (loopback), ``[::1]:PORT`` or ``unix:/path``. Loopback unless told otherwise.
        framed: echo whole frames, each a 4-byte big-endian length and its payload.
        max_frame: the largest frame accepted with ``framed`` (bytes, up to 1 GiB).
        mode: ``echo``, or ``stream``: serve :func:`bench`'s stream tests instead (iperf3's
            server: forward, reverse, bidir; what ``tcp-echo serve --mode stream`` runs).
        tls: None, True (a throwaway self-signed certificate: see
            :attr:`EchoServer.ca_file`), a :class:`ServerTLS` or an :class:`ssl.SSLContext`.
        idle_timeout: close a connection idle this many seconds (None: never).
        max_connections: reset clients beyond this many open connections.
        allow, deny: networks or addresses (``"10.0.0.0/8"``, ``"::1"``) to serve only, and
            never to serve (deny wins), as :class:`~netkit.core.access.AccessList` checks
            them; a denied client is reset at accept (a ``denied`` event). TCP only.
        drain_timeout: seconds open connections may finish when the block ends.
        on_event: called with (event name, fields) for each event (``connected``,
            ``disconnected``, ``rejected``, ``denied`` ...), as ``--json`` prints them.

    Yields:
        The running :class:`EchoServer` (its ``address``, ``port``, ``stats``).

    Raises:
        EndpointError: ``endpoint`` does not parse.
        ConfigError: a bad TLS setting, ``max_frame``, ``mode`` or allow/deny rule.
        BindError: the address is in use or not ours to bind.
    """
    limit = check_max_frame(max_frame) if framed else 0
    access = AccessList(allow, deny)
    if mode not in ("echo", "stream") or (framed and mode == "stream"):
        raise ConfigError(f"mode {mode!r}: give 'echo' (framed or not) or 'stream'")

    def factory() -> ServerConnection:
        if mode == "stream":
            return StreamTestConnection(idle_timeout=idle_timeout)
        if framed:
            return FramedEchoConnection(max_frame=limit, idle_timeout=idle_timeout)
        return EchoConnection(idle_timeout=idle_timeout)

    async with serving_stream(
        parse_stream_endpoint(endpoint),
        factory,
        tls=tls,
        max_connections=max_connections,
        drain_timeout=drain_timeout,
        on_event=on_event,
        access=access,
    ) as (server, ca_file):
        yield EchoServer(server, ca_file=ca_file)


class UDPEchoServer(Listening):
    """A running :func:`udp_echo_server`: its address (see :class:`Listening`) and totals."""

    def __init__(self, address: str, server: datagram.UDPEchoServer | UDPSinkServer) -> None:
        super().__init__(address)
        self._server = server

    @property
    def stats(self) -> dict[str, Any]:
        """The totals so far, as ``udp-echo serve --json`` sums them up: ``datagrams_in``,
        ``datagrams_out``, ``bytes_in``, ``bytes_out``, ``dropped_on_purpose``, ``peers`` ...
        (a sink's: ``counted``, ``starts``, ``reports``, ``malformed`` ...)"""
        return self._server.stats.as_dict()


@contextlib.asynccontextmanager
async def udp_echo_server(
    endpoint: str = "127.0.0.1:0",
    *,
    max_size: int = datagram.MAX_UDP_PAYLOAD,
    drop_every: int = 0,
    allow: Iterable[str] | str = (),
    deny: Iterable[str] | str = (),
    on_event: EventHook | None = None,
    mode: str = "echo",
) -> AsyncIterator[UDPEchoServer]:
    """Run a UDP echo server for the ``async with`` block: every datagram goes back to its
    sender (not to ports below 1024, nor to its own port). What ``netkit udp-echo serve`` runs.

    With ``mode="sink"`` it echoes nothing: it receives UDP bitrate tests
    (:func:`netkit.bench` with ``bitrate``), counts each sender's datagrams and reports them
    to it, as ``netkit udp-echo serve --mode sink`` does.

    Args:
        endpoint: where to listen: ``HOST:PORT`` (port 0: the kernel picks one), ``:PORT``
            (loopback) or ``[::1]:PORT``.
        max_size: the largest datagram echoed; larger ones are counted and dropped.
        drop_every: drop every Nth datagram (to test a client's loss handling), 0 = never;
            a sink drops every Nth test datagram of each sender.
        allow, deny: networks or addresses to answer only, and never to answer (see
            :func:`echo_server`); a datagram from a denied source is counted (``denied`` in
            :attr:`UDPEchoServer.stats`) and not answered.
        on_event: called with (event name, fields): ``denied`` (once per denied source,
            with the ``rule`` that matched).

    Yields:
        The running :class:`UDPEchoServer`.

    Raises:
        EndpointError: ``endpoint`` does not parse.
        ConfigError: ``max_size`` is not a UDP payload size, ``drop_every`` is negative, a
            bad allow/deny rule, a ``mode`` other than ``echo`` and ``sink``.
        BindError: the address is in use or not ours to bind.
    """
    datagram.check_max_size(max_size)
    if drop_every < 0:
        raise ConfigError(f"drop_every {drop_every}: give 0 (never) or more")
    if mode not in ("echo", "sink"):
        raise ConfigError(f"mode {mode!r}: choose echo or sink")
    access = AccessList(allow, deny)

    def denied(peer: str, rule: str | None) -> None:
        if on_event is not None:
            on_event("denied", {"peer": peer, "rule": rule})

    options = receiver_options() if mode == "sink" else SocketOptions()
    sock, _ = create_udp_socket(parse_datagram_endpoint(endpoint), bind=True, options=options)
    try:
        server: datagram.UDPEchoServer | UDPSinkServer
        if mode == "sink":
            server = UDPSinkServer(sock, drop_every=drop_every, access=access, on_denied=denied)
        else:
            server = datagram.UDPEchoServer(
                sock, max_size=max_size, drop_every=drop_every, access=access, on_denied=denied
            )
        server.start()
        try:
            yield UDPEchoServer(listener_address(sock), server)
        finally:
            server.stop()
    finally:
        sock.close()


__all__ = [
    "EchoServer",
    "Listening",
    "StreamListener",
    "UDPEchoServer",
    "echo_server",
    "udp_echo_server",
]

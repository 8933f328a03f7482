"""Servers that bridge, on the one server lifecycle (:class:`~netkit.net.server.StreamServer`).

* ``ws-server --to ENDPOINT``: each WebSocket client (:class:`BridgeConnection`) gets its own
  connection to a TCP or Unix endpoint (:class:`StreamTarget`, dialled through
  :func:`~netkit.net.connect.open_stream`, TLS optional).
* ``ws-client URL --listen ENDPOINT``: each client of a TCP or Unix listener
  (:class:`ListenerSide`) gets its own WebSocket connection to the URL
  (:class:`~netkit.net.ws_bridge.WSTarget`).

Both count in :class:`BridgeStats` (the stream server's totals and the relay's: bytes up and
down, undelivered, upstream failures) and report each bridge's end as a relay does, a
``closed`` event (:func:`report`).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from dataclasses import dataclass, field
from typing import Any, ClassVar

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.flow import RelayRecord
from netkit.core.ws.bridge import BridgeServerProtocol
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.server import ServerHandshake, ServerProtocol
from netkit.errors import NetkitError
from netkit.net.connect import open_stream
from netkit.net.server import ServerConnection, StreamServer, StreamStats
from netkit.net.sockets import SocketOptions
from netkit.net.ws import WSTimeouts
from netkit.net.ws_bridge import Bridge, BridgedWS, StreamSide, WSTarget
from netkit.net.ws_server import WebSocketServerConnection

_ids = itertools.count(1)  # the closed events' ids, per process (as a relay's)


@dataclass
class BridgeStats(StreamStats):
    """A bridging server's totals: the stream server's, and the bytes it relayed each way
    (``up``: client → upstream), the bytes it could not deliver and the upstreams it could
    not reach."""

    bytes_up: int = 0
    bytes_down: int = 0
    undelivered: int = 0
    failed_upstream: int = 0

    SUMMARY: ClassVar[tuple[tuple[str, str], ...]] = (
        *StreamStats.SUMMARY,
        ("bytes_up", "bytes_up"),
        ("bytes_down", "bytes_down"),
        ("undelivered_bytes", "undelivered"),
        ("upstream_failures", "failed_upstream"),
    )


def report(server: StreamServer, bridge: Bridge) -> None:
    """Count a finished bridge in ``server``'s totals and report it (``closed``)."""
    stats = server.stats
    up, down = bridge.record.up, bridge.record.down
    if isinstance(stats, BridgeStats):
        stats.bytes_up += up.delivered
        stats.bytes_down += down.delivered
        stats.undelivered += up.undelivered + down.undelivered
    server.emit("closed", bridge.close_fields())


def upstream_failed(server: StreamServer, client: str, upstream: str, error: Exception) -> None:
    """Count and report an upstream that could not be reached (``upstream_failed``)."""
    if isinstance(server.stats, BridgeStats):
        server.stats.failed_upstream += 1
    server.emit("upstream_failed", {"client": client, "upstream": upstream, "error": str(error)})


@dataclass(frozen=True)
class StreamTarget:
    """The TCP or Unix endpoint WebSocket clients are bridged to, and how to reach it.

    Attributes:
        ssl_context, server_hostname: TLS to the endpoint, or None.
        timeout: the deadline for connecting (and the TLS handshake).
        options: socket options set before connecting.
    """

    endpoint: TCPEndpoint | UnixEndpoint
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    timeout: float | None = 10.0
    options: SocketOptions = field(default_factory=SocketOptions)

    async def dial(self, bridge: Bridge) -> StreamSide:
        """Connect a :class:`StreamSide` for ``bridge``.

        Raises:
            ConnectError, TLSError, OperationTimeout: as :func:`open_stream` does.
        """
        made = await open_stream(
            self.endpoint,
            lambda: StreamSide(bridge),
            ssl_context=self.ssl_context,
            server_hostname=self.server_hostname,
            timeout=self.timeout,
            options=self.options,
            own_tls=True,  # pausing reading loses nothing when the upstream closes meanwhile
        )
        assert isinstance(made, StreamSide)
        return made


class BridgeConnection(BridgedWS, WebSocketServerConnection):
    """A WebSocket client of ``ws-server --to``: once its upgrade is accepted, the target is
    dialled and its messages relayed there (held, one read at most, until it is connected).

    Args:
        target: where each client is bridged to.
        on_event: receives the ``open`` event (as ws-server's other modes log it).
    """

    _dialling: asyncio.Task[None] | None = None

    def __init__(
        self,
        handshake: ServerHandshake,
        target: StreamTarget,
        *,
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
        on_event: Any = None,
    ) -> None:
        super().__init__(handshake, max_size=max_size, timeouts=timeouts, on_event=on_event)
        self.target = target

    def new_protocol(self, handshake: object, max_size: int | None) -> ServerProtocol:
        assert isinstance(handshake, ServerHandshake)
        return BridgeServerProtocol(handshake, buffer=self.rbuf, max_size=max_size)

    def begin_drain(self) -> None:
        """Server shutdown: as every WebSocket server (1001), or answer a close we held."""
        if self.bridge is not None and self.ws.close_reply_held:
            self.bridge.end_ws_now()
        else:
            super().begin_drain()

    def on_open(self) -> None:
        record = RelayRecord(
            next(_ids), self.peer, upstream=str(self.target.endpoint), path=self.resource
        )
        bridge = Bridge(
            record, ws_is_client=True, on_done=self._done, linger=self.timeouts.close or 10.0
        )
        bridge.attach_ws(self)  # reading pauses until the upstream is connected
        self._emit("open", path=self.resource, subprotocol=self.subprotocol)
        self._dialling = self._loop.create_task(self._dial(bridge))

    async def _dial(self, bridge: Bridge) -> None:
        try:
            stream = await self.target.dial(bridge)
        except (NetkitError, OSError) as exc:
            upstream_failed(self.server, self.peer, str(self.target.endpoint), exc)
            bridge.fail_stream(exc)
            return
        bridge.attach_stream(stream)

    def _done(self, bridge: Bridge) -> None:
        report(self.server, bridge)


class ListenerSide(StreamSide, ServerConnection):
    """A client of ``ws-client --listen``: its own WebSocket connection to the target URL is
    opened when it connects; what it sends first waits in its buffer until then.

    Args:
        target: the URL each client is bridged to.
    """

    def __init__(self, target: WSTarget) -> None:
        super().__init__(
            Bridge(
                RelayRecord(0, "?", upstream=str(target.url)),
                ws_is_client=False,
                on_done=self._done,
            )
        )
        self.target = target
        self._dialling: asyncio.Task[None] | None = None

    def on_connect(self) -> None:
        ServerConnection.on_connect(self)
        if self not in self.server.connections:
            return  # turned away (at the connection limit, or draining)
        self.bridge.record.id = next(_ids)
        self.bridge.record.client = self.peer
        self.bridge.attach_stream(self)  # reading pauses until the WebSocket is open
        self._dialling = asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        try:
            await self.target.dial(self.bridge)
        except (NetkitError, OSError) as exc:
            upstream_failed(self.server, self.peer, str(self.target.url), exc)
            self.bridge.fail_ws(exc)
            return
        self.flush_held()

    def on_close(self, exc: Exception | None) -> None:
        StreamSide.on_close(self, exc)
        ServerConnection.on_close(self, exc)

    def begin_drain(self) -> None:
        """Server shutdown: close the WebSocket with 1001 (the client then gets a FIN)."""
        ws = self.bridge.ws
        if ws is not None and ws.ws.close_reply_held:
            self.bridge.end_ws_now()
        elif ws is not None:
            ws.start_close(CloseCode.GOING_AWAY, "bridge shutting down")

    def _done(self, bridge: Bridge) -> None:
        report(self.server, bridge)

"""Tests for the WebSocket adapters (netkit.net.ws, ws_client, ws_server) in-process: each
adapter against the other side's sans-I/O protocol (netkit.core.ws.server / client) driven by
hand over a socketpair or a loopback connection, under the asyncio loop and uvloop."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from netkit.core.addresses import parse_ws_url
from netkit.core.ws.client import ClientHandshake, ClientProtocol
from netkit.core.ws.events import (
    Accepted,
    CloseReceived,
    ConnectionClosed,
    Event,
    HandshakeResponse,
    Message,
    Ping,
    Pong,
    Rejected,
)
from netkit.core.ws.protocol import Protocol
from netkit.core.ws.server import ServerHandshake, ServerProtocol
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection
from netkit.net.ws_server import Mode, ModeConnection, Room

if TYPE_CHECKING:
    from conftest import Runner, Serve

URL = parse_ws_url("ws://127.0.0.1:1/")
NO_PINGS = WSTimeouts(ping_interval=None, ping_timeout=None)


class Peer:
    """A sans-I/O protocol on one end of a socket, driven by hand: the other adapter's peer."""

    def __init__(self, proto: Protocol, sock: socket.socket) -> None:
        self.proto = proto
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.pending: list[Event] = []
        sock.setblocking(False)

    async def flush(self) -> None:
        for buf in self.proto.data_to_send():
            await self.loop.sock_sendall(self.sock, buf)

    async def next_event(self) -> Event:
        """The next event, reading (and answering, as the protocol queues) as needed."""
        while True:
            self.pending += self.proto.events_received()
            await self.flush()
            if self.pending:
                return self.pending.pop(0)
            data = await self.loop.sock_recv(self.sock, 65536)
            if data:
                self.proto.receive_data(data)
            else:
                self.proto.receive_eof()

    async def events(self, count: int) -> list[Event]:
        return [await self.next_event() for _ in range(count)]


async def client_over_socketpair(
    server: ServerProtocol,
) -> tuple[WebSocketClientConnection, Peer, socket.socket]:
    ours, theirs = socket.socketpair()
    peer = Peer(server, theirs)
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: WebSocketClientConnection(ClientHandshake.from_url(URL), timeouts=NO_PINGS),
        sock=ours,
    )
    assert isinstance(await peer.next_event(), Accepted)
    await asyncio.wait_for(conn.opened, 5)
    return conn, peer, theirs


def test_the_client_adapter_against_a_core_server(run: Runner) -> None:
    async def main() -> None:
        conn, peer, theirs = await client_over_socketpair(ServerProtocol(ServerHandshake()))
        try:
            assert conn.response is not None and conn.response.status_code == 101
            assert conn.send("hello")
            (message,) = await peer.events(1)
            assert isinstance(message, Message) and message.as_text() == "hello"
            peer.proto.send_binary(b"\x00back")
            await peer.flush()
            assert await conn.receive() == (False, b"\x00back")
            rtt = conn.ping(b"p1")  # the core server answers the ping
            (ping,) = await peer.events(1)
            assert ping == Ping(b"p1")
            got = await asyncio.wait_for(rtt, 5)
            assert got is not None and got > 0 and conn.last_rtt == got
            conn.start_close(1000, "done")
            (close,) = await peer.events(1)
            assert close == CloseReceived(1000, "done")
            theirs.close()  # as a server does once the closing handshake is over
            await asyncio.wait_for(conn.closed, 5)
            assert conn.close_code == 1000 and conn.close_initiator == "client"
            assert await conn.receive() is None
        finally:
            conn.abort()
            theirs.close()

    run(main())


def test_a_ping_still_in_flight_resolves_to_none_when_the_connection_goes(run: Runner) -> None:
    async def main() -> None:
        server = ServerProtocol(ServerHandshake(), auto_pong=False)  # never answers pings
        conn, peer, theirs = await client_over_socketpair(server)
        try:
            rtt = conn.ping()
            (ping,) = await peer.events(1)
            assert isinstance(ping, Ping) and len(ping.payload) == 4  # a random payload
            theirs.close()
            assert await asyncio.wait_for(rtt, 5) is None
            assert conn.close_code == 1006
        finally:
            conn.abort()

    run(main())


def test_a_refusal_fails_opening_with_the_status(run: Runner) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        peer = Peer(ServerProtocol(ServerHandshake(paths={"/elsewhere"})), theirs)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: WebSocketClientConnection(ClientHandshake.from_url(URL), timeouts=NO_PINGS),
            sock=ours,
        )
        try:
            rejected = await peer.next_event()
            assert isinstance(rejected, Rejected) and rejected.status_code == 404
            try:
                await asyncio.wait_for(conn.opened, 5)
            except Exception as exc:
                assert getattr(exc, "status_code", None) == 404
            else:
                raise AssertionError("opened despite a 404")
        finally:
            conn.abort()
            theirs.close()

    run(main())


def test_the_server_adapter_against_a_core_client(run: Runner, serve: Serve) -> None:
    log: list[tuple[str, dict[str, Any]]] = []

    def factory() -> ModeConnection:
        return ModeConnection(
            ServerHandshake(),
            mode=Mode.ECHO,
            room=Room(),
            log=lambda name, fields: log.append((name, fields)),
            log_messages=True,
            max_size=1 << 20,
            # A keepalive ping right away: the core client answers it, the server logs the rtt.
            timeouts=WSTimeouts(ping_interval=0.01, ping_timeout=5.0),
        )

    async def main() -> None:
        async with serve(factory) as h:
            sock = socket.create_connection((h.endpoint.host, h.endpoint.port))
            peer = Peer(ClientProtocol(ClientHandshake.from_url(URL)), sock)
            try:
                assert isinstance(peer.proto, ClientProtocol)
                peer.proto.send_request()
                await peer.flush()
                assert isinstance(await peer.next_event(), HandshakeResponse)
                peer.proto.send_text("echo me")
                await peer.flush()
                seen: list[Event] = []
                while not any(isinstance(e, Message) for e in seen):
                    seen.append(await peer.next_event())  # pings are answered as they come
                message = next(e for e in seen if isinstance(e, Message))
                assert message.as_text() == "echo me"
                while not any(name == "pong" for name, _ in log):
                    assert isinstance(await peer.next_event(), Ping)
                pong = next(fields for name, fields in log if name == "pong")
                assert pong["rtt_ms"] >= 0
                peer.proto.send_close(1000)
                await peer.flush()
                events = [await peer.next_event()]
                while not isinstance(events[-1], ConnectionClosed):
                    events.append(await peer.next_event())
                assert CloseReceived(1000, "") in events  # the server echoed and closed TCP
                assert not any(isinstance(e, Pong) for e in events)
            finally:
                sock.close()
        names = [name for name, _ in log]
        assert names[0] == "open" and "message" in names and names[-1] == "close"

    run(main())

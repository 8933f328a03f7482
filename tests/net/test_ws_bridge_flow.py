"""The bridge in-process, on asyncio and uvloop: flow control both ways (a side that cannot
take more stops the other side's reading, and nothing is lost once it can), with the counts
the ``closed`` event reports."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

from netkit.core.addresses import TCPEndpoint, parse_ws_url
from netkit.core.flow import RelayRecord
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.server import ServerHandshake
from netkit.net.server import StreamServer
from netkit.net.ws import WSTimeouts
from netkit.net.ws_bridge import Bridge, WSTarget
from netkit.net.ws_bridge_serve import BridgeConnection, BridgeStats, StreamTarget
from netkit.net.ws_client import WebSocketClientConnection, connect_ws

MIB = 1 << 20
QUIET = WSTimeouts(ping_interval=None)


async def until(condition: Any, what: str) -> None:
    """Wait (bounded) for ``condition()``: the loop gets on with the transfer meanwhile."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def bridge_to(upstream: asyncio.Server, serve: Any) -> Any:
    port = upstream.sockets[0].getsockname()[1]
    target = StreamTarget(TCPEndpoint("127.0.0.1", port))

    def factory() -> BridgeConnection:
        return BridgeConnection(ServerHandshake(), target, max_size=2 * MIB, timeouts=QUIET)

    return serve(factory, stats=BridgeStats())


async def open_client(endpoint: TCPEndpoint) -> WebSocketClientConnection:
    url = parse_ws_url(f"ws://127.0.0.1:{endpoint.port}/")
    handshake = ClientHandshake.from_url(url)
    conn = await connect_ws(
        url,
        lambda: WebSocketClientConnection(handshake, max_size=2 * MIB, timeouts=QUIET),
        ssl_context=None,
    )
    assert isinstance(conn, WebSocketClientConnection)
    return conn


def the_bridge(server: StreamServer) -> Bridge:
    (conn,) = server.connections.values()
    assert isinstance(conn, BridgeConnection) and conn.bridge is not None
    return conn.bridge


def test_a_slow_upstream_stops_the_websocket_being_read(run, serve):
    data = os.urandom(24 * MIB)

    async def main() -> None:
        go, got = asyncio.Event(), hashlib.sha256()

        async def upstream_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await go.wait()  # reads nothing until told
            while chunk := await reader.read(MIB):
                got.update(chunk)
            writer.close()

        upstream = await asyncio.start_server(upstream_side, "127.0.0.1", 0)
        async with upstream, await bridge_to(upstream, serve) as harness:
            client = await open_client(harness.endpoint)
            for start in range(0, len(data), MIB):
                client.send(data[start : start + MIB])
            bridge = the_bridge(harness.server)
            await until(lambda: bridge.stream is not None and bridge.stream.writing_paused, "")
            ws = bridge.ws
            assert ws is not None and ws.transport is not None
            await until(lambda: not ws.transport.is_reading(), "the WebSocket paused")
            # What the bridge holds is bounded: at most a message or two, not the 24 MiB.
            stream = bridge.stream
            assert stream is not None
            assert stream.transport.get_write_buffer_size() <= 3 * MIB  # type: ignore[attr-defined]
            go.set()
            await until(lambda: bridge.to_stream.delivered == len(data), "all delivered")
            await client.close_and_wait()
            closed = (await harness.wait_events("closed"))[0]
        assert got.digest() == hashlib.sha256(data).digest()
        assert closed["bytes_up"] == len(data) and "undelivered" not in closed
        assert harness.server.stats.bytes_up == len(data)

    run(main())


def test_a_slow_websocket_client_stops_the_upstream_being_read(run, serve):
    data = os.urandom(24 * MIB)

    async def main() -> None:
        async def upstream_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(data)
            await writer.drain()
            writer.write_eof()
            await reader.read()  # to the bridge's FIN
            writer.close()

        upstream = await asyncio.start_server(upstream_side, "127.0.0.1", 0)
        async with upstream, await bridge_to(upstream, serve) as harness:
            client = await open_client(harness.endpoint)
            assert client.transport is not None
            client.transport.pause_reading()  # a client that does not read for now
            await until(lambda: len(harness.server.connections) == 1, "the client is in")
            bridge = the_bridge(harness.server)
            await until(lambda: bridge.stream is not None, "the upstream is connected")
            stream = bridge.stream
            await until(lambda: not stream.transport.is_reading(), "the upstream paused")  # type: ignore[union-attr]
            ws = bridge.ws
            assert ws is not None and ws.transport is not None
            assert ws.transport.get_write_buffer_size() <= 3 * MIB
            client.transport.resume_reading()
            received = hashlib.sha256()
            size = 0
            while (message := await client.receive()) is not None:
                received.update(message[1])
                size += len(message[1])
            closed = (await harness.wait_events("closed"))[0]
        assert size == len(data) and received.digest() == hashlib.sha256(data).digest()
        assert client.close_code == 1000  # the upstream's FIN
        assert closed["bytes_down"] == len(data) and closed["end"] == "upstream sent EOF"

    run(main())


class ListStream:
    """A byte stream that keeps what it is given (a :class:`StreamPeer` for the tests)."""

    writing_paused = False

    def __init__(self) -> None:
        self.data = bytearray()
        self.finished = asyncio.Event()

    def write(self, data: Any) -> None:
        self.data += data

    def finish(self) -> None:
        self.finished.set()

    def reset(self) -> int:
        raise AssertionError("not reset in these tests")

    def close(self) -> None:
        self.finished.set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_half_closed_peer_may_send_for_longer_than_the_closing_timeout(run, serve):
    # The upstream ends first: the server sends close 1000 and waits for the reply, which a
    # bridging client holds while its own stream still sends. 1.2 s of trickle against a
    # 0.3 s closing timeout: it counts from the last message, so nothing is cut.
    async def main() -> None:
        got = bytearray()

        async def upstream_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write_eof()  # nothing to say
            got.extend(await reader.read())  # to the bridge's FIN
            writer.close()

        upstream = await asyncio.start_server(upstream_side, "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        target = StreamTarget(TCPEndpoint("127.0.0.1", port))
        closing = WSTimeouts(ping_interval=None, close=0.3)

        def factory() -> BridgeConnection:
            return BridgeConnection(ServerHandshake(), target, timeouts=closing)

        async with upstream, serve(factory, stats=BridgeStats()) as harness:
            bridge = Bridge(RelayRecord(1, "test"), ws_is_client=False, on_done=lambda _: None)
            stream = ListStream()
            bridge.attach_stream(stream)
            url = parse_ws_url(f"ws://127.0.0.1:{harness.endpoint.port}/")
            conn = await WSTarget(url, ClientHandshake.from_url(url), timeouts=closing).dial(bridge)
            await stream.finished.wait()  # the server's close (the upstream's EOF), held
            assert conn.ws.close_reply_held
            for _ in range(12):
                bridge.stream_data(b"still talking ")
                await asyncio.sleep(0.1)
            bridge.stream_eof()  # now the reply goes
            await conn.closed
            closed = (await harness.wait_events("closed"))[0]
        assert bytes(got) == b"still talking " * 12
        assert conn.close_code == 1000 and conn.error is None
        assert closed["bytes_up"] == len(got) and "undelivered" not in closed

    run(main())

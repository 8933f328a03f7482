"""Tests for netkit.net.protocols: the BufferedProtocol base - pooled buffers, limits, flow control."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from netkit.net.echo import EchoConnection, echo_once
from netkit.net.server import ServerConnection
from netkit.net.sockets import SocketOptions

if TYPE_CHECKING:
    from conftest import Runner, Serve

BLAST = 2 << 20


class Hoarder(ServerConnection):
    """Never consumes anything, so its receive buffer fills up."""

    def __init__(self) -> None:
        super().__init__(max_buffer=64 * 1024)


class Blaster(ServerConnection):
    """Writes BLAST bytes as soon as it is connected."""

    def on_connect(self) -> None:
        super().on_connect()
        self.write(b"z" * BLAST)


class Parts(ServerConnection):
    """Answers every byte with three buffers written in one write() call."""

    def data_ready(self) -> None:
        self.rbuf.consume(len(self.rbuf))
        self.write(b"one,", bytearray(b"two,"), memoryview(b"three"))


async def raw_client(endpoint, *, rcvbuf: int | None = None) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await loop.sock_connect(sock, (endpoint.host, endpoint.port))
    return sock


async def read_until_eof(sock: socket.socket, limit: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) <= limit:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("more data than expected")


async def read_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, min(65536, n - len(data)))
        assert chunk, "EOF before all data arrived"
        data += chunk
    return bytes(data)


def test_receive_buffer_is_released_between_messages(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            client = await h.connect()
            for seq in range(3):
                await echo_once(client, seq, b"m" * 1000, framed=False, timeout=5)
                (conn,) = h.server.connections
                # An idle connection holds no receive memory; the client's is free too.
                assert conn.rbuf.capacity == 0
                assert client.rbuf.capacity == 0
            assert conn.bytes_in == conn.bytes_out == 3000
            assert conn.peer.startswith("127.0.0.1:")
            assert conn.duration >= 0

    run(main())


async def overflow_a_hoarder(serve: Serve) -> dict:
    """Send a Hoarder more than its 64 KiB buffer; return the server's disconnect event."""
    async with serve(Hoarder) as h:
        sock = await raw_client(h.endpoint)
        with sock:
            loop = asyncio.get_running_loop()
            # The server may reset the connection before everything is sent.
            with contextlib.suppress(ConnectionError):
                await loop.sock_sendall(sock, b"q" * (200 * 1024))
            (gone,) = await h.wait_events("disconnected")
        assert h.server.stats.errors == 1
        return gone  # type: ignore[no-any-return]


def test_buffer_full_ends_the_connection_with_an_error(serve: Serve) -> None:
    # asyncio's loop only: under uvloop this crashes the process (see the test below).
    async def main() -> dict:
        async with asyncio.timeout(10):
            return await overflow_a_hoarder(serve)

    gone = asyncio.run(main())
    assert gone["error"] == "more than 65536 bytes buffered without a complete message"
    # It stopped at the limit; nothing past it was kept.
    assert 0 < gone["bytes_in"] <= 64 * 1024


_UVLOOP_BUFFER_FULL = """
import asyncio, socket, uvloop
from netkit.core.addresses import TCPEndpoint
from netkit.net.server import ServerConnection, StreamServer, make_listener

class Hoarder(ServerConnection):
    def __init__(self):
        super().__init__(max_buffer=64 * 1024)

async def main():
    loop = asyncio.get_running_loop()
    sock = make_listener(TCPEndpoint("127.0.0.1", 0))
    gone = loop.create_future()

    def on_event(name, fields):
        if name == "disconnected" and not gone.done():
            gone.set_result(fields)

    server = StreamServer(sock, Hoarder, on_event=on_event)
    server.start()
    client = socket.socket()
    client.setblocking(False)
    await loop.sock_connect(client, sock.getsockname())
    try:
        await loop.sock_sendall(client, b"q" * (200 * 1024))
    except ConnectionError:
        pass
    async with asyncio.timeout(5):
        await gone
    client.close()
    await server.drain(0)
    server.close_listener()
    print("errors", server.stats.errors)

uvloop.run(main())
"""


def test_buffer_full_under_uvloop_does_not_crash() -> None:
    pytest.importorskip("uvloop")
    # In a child process, because the failure mode is a segmentation fault.
    proc = subprocess.run(
        [sys.executable, "-c", _UVLOOP_BUFFER_FULL],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.split() == ["errors", "1"]


def test_peer_half_close_closes_the_connection(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            sock = await raw_client(h.endpoint)
            with sock:
                loop = asyncio.get_running_loop()
                await loop.sock_sendall(sock, b"last words")
                sock.shutdown(socket.SHUT_WR)
                # Everything sent before EOF is echoed, then the server closes too.
                assert await read_until_eof(sock, 100) == b"last words"
            (gone,) = await h.wait_events("disconnected")
            assert "error" not in gone

    run(main())


def test_write_sends_the_parts_in_order(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(Parts) as h:
            sock = await raw_client(h.endpoint)
            with sock:
                loop = asyncio.get_running_loop()
                await loop.sock_sendall(sock, b"?")
                assert await read_exactly(sock, 13) == b"one,two,three"
                (conn,) = h.server.connections
                assert conn.bytes_out == 13

    run(main())


def test_write_before_the_connection_is_made_is_refused(run: Runner) -> None:
    async def main() -> None:
        conn = EchoConnection()
        for parts in ([b"one"], [b"one", b"two"]):  # the one-part path and the vectored one
            with pytest.raises(RuntimeError, match="write before the connection was made"):
                conn.write(*parts)

    run(main())


def test_write_backpressure_pauses_reading_until_drained(run: Runner, serve: Serve) -> None:
    small = SocketOptions(sndbuf=64 * 1024)

    async def main() -> None:
        async with serve(Blaster, listener_options=small) as h:
            sock = await raw_client(h.endpoint, rcvbuf=64 * 1024)
            with sock:
                await h.wait_events("connected")
                (conn,) = h.server.connections
                # uvloop restarts reading after connection_made; the protocol re-pauses with
                # call_soon from there, so a call_soon made now runs after it (FIFO).
                turn = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_soon(turn.set_result, None)
                await turn
                # The transport had to buffer: reading is paused until it drains.
                assert conn.transport.get_write_buffer_size() > 0
                assert not conn.transport.is_reading()
                drained = asyncio.ensure_future(conn.drain())
                data = await read_exactly(sock, BLAST)
                assert data == b"z" * BLAST
                await drained
                assert conn.transport.get_write_buffer_size() == 0
                assert conn.transport.is_reading()
                assert conn.bytes_out == BLAST

    run(main())


def test_drain_returns_at_once_when_nothing_is_buffered(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            client = await h.connect()
            await echo_once(client, 0, b"x", framed=False, timeout=5)
            async with asyncio.timeout(1):
                await client.drain()
            assert client.transport.is_reading()

    run(main())

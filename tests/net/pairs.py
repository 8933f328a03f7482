"""Helpers for in-process relay tests: socket pairs, a relay between them, a backend.

A relay under test sits between two pairs: ``client`` (the test's end) ↔ ``relay_client`` and
``relay_upstream`` ↔ ``upstream`` (the test's end). :func:`start_relay` puts a splice or a
buffered relay there, as the relay server would.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from netkit.core.addresses import TCPEndpoint
from netkit.core.faults import ConnectionFaults
from netkit.core.flow import RelayRecord
from netkit.net.buffered import BufferedRelay
from netkit.net.splice import SpliceRelay


def tcp_pair(*, rcvbuf: int | None = None) -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking TCP sockets on 127.0.0.1 (``rcvbuf`` on the first)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        a.connect(listener.getsockname())
        b, _ = listener.accept()
    for sock in (a, b):
        sock.setblocking(False)
    return a, b


def unix_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking Unix stream sockets."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@dataclass
class Ends:
    """The test's two ends and the relay's two sockets between them."""

    client: socket.socket
    relay_client: socket.socket
    relay_upstream: socket.socket
    upstream: socket.socket

    def close(self) -> None:
        """Close the test's ends (the relay closes its own)."""
        self.client.close()
        self.upstream.close()


def ends(kind: str = "tcp", *, client_rcvbuf: int | None = None) -> Ends:
    """Two pairs of ``kind`` (``tcp`` or ``unix``) for a relay to sit between."""
    if kind == "tcp":
        client, relay_client = tcp_pair(rcvbuf=client_rcvbuf)
        relay_upstream, upstream = tcp_pair()
    else:
        client, relay_client = unix_pair()
        relay_upstream, upstream = unix_pair()
    return Ends(client, relay_client, relay_upstream, upstream)


async def read_until_eof(sock: socket.socket, *, limit: int | None = None) -> bytes:
    """Everything ``sock`` receives until EOF (or a reset, or ``limit`` bytes)."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    while limit is None or len(got) < limit:
        try:
            chunk = await loop.sock_recv(sock, 1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


async def wait_until(condition: object) -> None:
    """Poll a condition the code under test has no event for (bounded by the test's timeout)."""
    assert callable(condition)
    while not condition():
        await asyncio.sleep(0.005)


async def start_relay(
    pair: Ends, path: str, drawn: ConnectionFaults | None = None, **splice_options: Any
) -> tuple[SpliceRelay | BufferedRelay, RelayRecord]:
    """A started relay of ``path`` on the pair's middle sockets: ``splice`` (a pipe from the
    first byte), ``splice-auto`` (the relay server's: copies, then splices past
    :data:`~netkit.net.splice.SPLICE_AFTER` bytes) or ``buffered``."""
    record = RelayRecord(1, "test")
    if path.startswith("splice"):
        if path == "splice":
            splice_options.setdefault("splice_after", 0)
        relay = SpliceRelay(pair.relay_client, pair.relay_upstream, record, **splice_options)
        relay.start()
        return relay, record
    loop = asyncio.get_running_loop()
    buffered = BufferedRelay(record, drawn or ConnectionFaults(), random.Random(1))
    # Upstream first, as the relay server does.
    await loop.create_connection(lambda: buffered.upstream, sock=pair.relay_upstream)
    await loop.connect_accepted_socket(lambda: buffered.client, pair.relay_client)
    buffered.start()
    return buffered, record


@asynccontextmanager
async def replying_backend(
    reply: bytes = b"", reading: asyncio.Event | None = None
) -> AsyncIterator[tuple[TCPEndpoint, asyncio.Future[bytes]]]:
    """A loopback server that reads its first client to EOF, sends ``reply`` and closes.

    Yields its endpoint and a future with what it read. With ``reading``, it reads nothing
    before that event is set (a stalled backend).
    """
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if reading is not None:
            await reading.wait()
        data = await reader.read()
        if not received.done():
            received.set_result(data)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield TCPEndpoint("127.0.0.1", server.sockets[0].getsockname()[1]), received

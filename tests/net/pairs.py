"""Connected socket pairs for in-process relay tests, and reading a socket to its end.

A relay under test sits between two pairs: ``client`` (the test's end) ↔ ``relay_client`` and
``relay_upstream`` ↔ ``upstream`` (the test's end).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass


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

"""Tests for netkit.net.datagram's echo server: loop guard, bounded peer table, byte counts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from netkit.core.addresses import UDPEndpoint
from netkit.net.datagram import UDPEchoServer, answerable
from netkit.net.sockets import create_udp_socket

if TYPE_CHECKING:
    from conftest import Runner


@contextlib.contextmanager
def bound_server_socket() -> Iterator[socket.socket]:
    sock, _ = create_udp_socket(UDPEndpoint("127.0.0.1", 0), bind=True)
    with sock:
        yield sock


def client_socket(server: socket.socket) -> socket.socket:
    """A UDP socket of its own (a distinct peer) connected to ``server``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.connect(server.getsockname())
    sock.setblocking(False)
    return sock


async def echo_of(client: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` from ``client`` and wait for what comes back (uvloop has no sock_sendto)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(client, payload)
    return await loop.sock_recv(client, 65536)


@pytest.mark.parametrize(
    ("source", "answered"),
    [
        (("127.0.0.1", 40000), True),
        (("127.0.0.1", 1024), True),
        (("::1", 40000, 0, 0), True),
        (("127.0.0.1", 7007), False),  # the server's own port: an echo to itself
        (("10.1.2.3", 7007), False),  # another echo server on the same port: a ping-pong
        (("127.0.0.1", 0), False),  # cannot be answered (RFC 768)
        (("127.0.0.1", 7), False),  # echo
        (("127.0.0.1", 19), False),  # chargen
        (("::1", 1023, 0, 0), False),
    ],
)
def test_answerable(source: tuple[object, ...], answered: bool) -> None:
    assert answerable(source, 7007) is answered


def test_a_datagram_from_the_servers_own_address_is_not_echoed(run: Runner[None]) -> None:
    async def main() -> None:
        with bound_server_socket() as sock, client_socket(sock) as client:
            # The server's own socket sends to itself: the forged-source case, for real.
            sock.sendto(b"loop?", sock.getsockname())
            server = UDPEchoServer(sock)
            server.start()
            try:
                # Datagrams on one socket are read in order: once the client's echo is
                # back, the self-addressed one was handled (and any echo of it queued).
                assert await echo_of(client, b"one") == b"one"
                assert await echo_of(client, b"two") == b"two"
            finally:
                server.stop()
            stats = server.stats
            assert (stats.received, stats.echoed, stats.refused_source) == (3, 2, 1)
            assert stats.as_dict()["peers"] == 1

    run(main())


def test_peer_table_is_bounded_and_later_peers_are_still_answered(run: Runner[None]) -> None:
    async def main() -> None:
        seen: list[str] = []
        full: list[int] = []
        with bound_server_socket() as sock:
            server = UDPEchoServer(
                sock, on_peer=seen.append, on_peer_table_full=full.append, max_peers=3
            )
            server.start()
            clients = [client_socket(sock) for _ in range(6)]
            try:
                for i, client in enumerate(clients):
                    assert await echo_of(client, b"%d" % i) == b"%d" % i
                # A tracked peer and an untracked one come back: no new events.
                assert await echo_of(clients[0], b"again") == b"again"
                assert await echo_of(clients[5], b"again") == b"again"
            finally:
                server.stop()
                for client in clients:
                    client.close()
        assert len(seen) == 3
        assert full == [3]
        assert server.stats.echoed == 8
        summary = server.stats.as_dict()
        assert summary["peers"] == 3 and summary["peer_table_full"] is True

    run(main())


def test_bytes_in_counts_the_real_size_of_oversize_datagrams(run: Runner[None]) -> None:
    async def main() -> None:
        with bound_server_socket() as sock, client_socket(sock) as client:
            server = UDPEchoServer(sock, max_size=100)
            server.start()
            loop = asyncio.get_running_loop()
            try:
                await loop.sock_sendall(client, b"x" * 200)
                await loop.sock_sendall(client, b"y" * 200)
                # The small one is echoed once the two large ones were read.
                assert await echo_of(client, b"z" * 100) == b"z" * 100
            finally:
                server.stop()
        stats = server.stats
        assert (stats.oversize, stats.bytes_in, stats.bytes_out) == (2, 500, 100)

    run(main())

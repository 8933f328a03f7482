"""The relay shared by proxy and lb, run in the test's loop against real loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.net.accept import DescriptorReserve
from netkit.net.echo import EchoConnection
from netkit.net.relay import RelayOptions, RelayServer
from netkit.net.server import make_listener
from netkit.net.upstreams import FixedUpstream, Upstream
from tests.net.conftest import EventLog, Runner, Serve, descriptor_limit, hog_descriptors
from tests.net.pairs import read_until_eof, replying_backend, wait_until

pytestmark = pytest.mark.timeout(60)

TEN_MB = 10_000_000


class RelayHarness(EventLog):
    """A RelayServer on 127.0.0.1 and the events it reported."""

    def __init__(self, server: RelayServer) -> None:
        super().__init__()
        self.server = server
        host, port = server.sock.getsockname()[:2]
        self.address = (host, port)

    async def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, self.address)
        return sock


@contextlib.asynccontextmanager
async def relay_to(
    upstream: TCPEndpoint | UnixEndpoint,
    options: RelayOptions,
    connector: Upstream | None = None,
) -> AsyncIterator[RelayHarness]:
    """Run a RelayServer that relays every client to ``upstream`` (or through ``connector``)."""
    sock = make_listener(TCPEndpoint("127.0.0.1", 0))
    server = RelayServer(sock, connector or FixedUpstream(upstream, timeout=5), options)
    harness = RelayHarness(server)
    server.on_event = harness.record
    server.start()
    try:
        yield harness
    finally:
        await server.drain(0)


# --- item 10: half-close and undelivered bytes --------------------------------------------


def test_half_close_toward_a_tls_upstream_delivers_the_whole_reply(
    run: Runner[None], serve: Serve, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # TLS cannot half-close: the client's FIN must not close the upstream while its reply
    # is still coming (HAProxy keeps reading the server until it closes).
    payload = os.urandom(TEN_MB)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with serve(EchoConnection, ssl_context=server_ssl) as backend:
            options = RelayOptions(upstream_tls=client_ssl, upstream_sni="localhost")
            async with relay_to(backend.endpoint, options) as relay:
                client = await relay.connect()
                reader = asyncio.ensure_future(read_until_eof(client))
                await loop.sock_sendall(client, payload)
                client.shutdown(socket.SHUT_WR)  # close_notify to the upstream, which ends
                received = await reader
                client.close()
                assert len(received) == TEN_MB
                assert received == payload
                (closed,) = await relay.wait_events("closed")
                assert closed["end"] == "closed" and "undelivered" not in closed

    run(main())


def test_bytes_a_dead_upstream_refused_are_undelivered(run: Runner[None]) -> None:
    # An upstream that closes without reading: the relay's writes to it fail, and what it
    # took from the client and could not deliver is reported (the counts add up).
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        upstream = TCPEndpoint("127.0.0.1", listener.getsockname()[1])
        sent = 4 << 20
        async with relay_to(upstream, RelayOptions(splice=False)) as relay:
            client = await relay.connect()
            conn, _ = await loop.sock_accept(listener)
            conn.close()
            sender = asyncio.ensure_future(loop.sock_sendall(client, b"x" * sent))
            (closed,) = await relay.wait_events("closed")
            sender.cancel()
            client.close()
            listener.close()
            totals = relay.server.stats
        assert closed["end"] != "closed", closed
        assert "undelivered" in closed, closed
        lost = closed["undelivered"]["up"]
        assert lost > 0
        assert closed["bytes_up"] + lost <= sent
        assert totals.undelivered == lost + closed["undelivered"]["down"]

    run(main())


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
def test_bytes_a_stalled_client_never_got_are_undelivered_exactly(
    run: Runner[None], splice: bool
) -> None:
    # A client that stops reading; the relay is then cut. Every byte the relay counts as
    # delivered is one the client can still read: bytes_down is exact.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        upstream = TCPEndpoint("127.0.0.1", listener.getsockname()[1])
        async with relay_to(upstream, RelayOptions(splice=splice)) as relay:
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            await loop.sock_connect(client, relay.address)
            conn, _ = await loop.sock_accept(listener)
            sender = asyncio.ensure_future(loop.sock_sendall(conn, b"y" * (32 << 20)))
            await wait_until(
                lambda: any(
                    r is not None and r.record.down.received > (1 << 20)
                    for r in relay.server.connections.values()
                )
            )
            await relay.server.drain(0)
            (closed,) = await relay.wait_events("closed")
            received = await read_until_eof(client)
            sender.cancel()
            conn.close()
            client.close()
            listener.close()
        assert "undelivered" in closed, closed
        assert closed["undelivered"]["down"] > 0
        assert len(received) == closed["bytes_down"]

    run(main())


# --- item 11: out of descriptors ----------------------------------------------------------


async def echoes(sock: socket.socket, data: bytes) -> bool:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, data)
    return await read_until_eof(sock, limit=len(data)) == data


def test_the_reserve_shrinks_back_after_a_burst_of_connecting_clients(
    run: Runner[None], serve: Serve
) -> None:
    # While clients wait for their upstream each holds a reserved descriptor; once they are
    # relayed the reserve must not keep them: the next accept gives the extra ones back.
    async def main() -> None:
        opened = asyncio.Event()
        async with serve(EchoConnection) as backend:

            class Gated(FixedUpstream):
                async def connect(self, client: str) -> tuple[socket.socket, str]:
                    await opened.wait()
                    return await super().connect(client)

            connector = Gated(backend.endpoint, timeout=5)
            async with relay_to(backend.endpoint, RelayOptions(splice=False), connector) as relay:
                server = relay.server
                clients = [await relay.connect() for _ in range(16)]
                await wait_until(lambda: server._connecting == 16)
                clients.append(await relay.connect())  # accepted while 16 are connecting
                await wait_until(lambda: server._connecting == 17)
                assert len(server.reserve) >= 16 + server._spare
                opened.set()
                for sock in clients:
                    assert await echoes(sock, b"ping")
                late = await relay.connect()  # accepted with none connecting
                assert await echoes(late, b"late")
                # The accept loop refilled once more after the late client, which was still
                # connecting then: one for it, the spare ones and the slack, not the burst's seventeen.
                assert len(server.reserve) <= 1 + server._spare + DescriptorReserve.SLACK
                for sock in [*clients, late]:
                    sock.close()

    run(main())


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
def test_an_upstream_socket_that_hits_our_descriptor_limit_turns_the_client_away(
    run: Runner[None], serve: Serve, splice: bool, tmp_path: Path
) -> None:
    # Something else in the process took every descriptor, the relay's reserve included:
    # the client is turned away (reset, counted), not kept waiting for ever holding its
    # socket; once descriptors are back, a fresh client is relayed. (A Unix upstream: its
    # socket is opened with no await after the hog, so no other thread can free one between.)
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with serve(EchoConnection, endpoint=UnixEndpoint(str(tmp_path / "echo"))) as backend:
            hogged: list[int] = []
            hog = True

            class Hogging(FixedUpstream):
                async def connect(self, client: str) -> tuple[socket.socket, str]:
                    if hog:
                        hogged.extend(hog_descriptors())
                    return await super().connect(client)

            connector = Hogging(backend.endpoint, timeout=5)
            async with relay_to(backend.endpoint, RelayOptions(splice=splice), connector) as relay:
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                client.setblocking(False)
                try:
                    with descriptor_limit(64):
                        await loop.sock_connect(client, relay.address)
                        (rejected,) = await relay.wait_events("rejected")
                finally:
                    for fd in hogged:
                        os.close(fd)
                assert "Too many open files" in rejected["reason"]
                assert await read_until_eof(client) == b""
                client.close()
                (closed,) = relay.named("closed")
                assert closed["end"].startswith("turned away")
                assert relay.server.stats.rejected == 1
                hog = False
                fresh = await relay.connect()
                assert await echoes(fresh, b"served")
                fresh.close()

    run(main())


# --- the server around the two relays ----------------------------------------------------


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
def test_a_request_half_closed_through_the_server_gets_its_whole_reply(
    run: Runner[None], splice: bool
) -> None:
    reply = os.urandom(1 << 20)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with (
            replying_backend(reply) as (upstream, received),
            relay_to(upstream, RelayOptions(splice=splice)) as relay,
        ):
            client = await relay.connect()
            await loop.sock_sendall(client, b"request")
            client.shutdown(socket.SHUT_WR)
            assert await received == b"request"
            assert await read_until_eof(client) == reply
            client.close()
            (closed,) = await relay.wait_events("closed")
        assert closed["end"] == "closed" and "undelivered" not in closed
        assert closed["path"] == ("splice" if splice else "buffered")
        assert (closed["bytes_up"], closed["bytes_down"]) == (7, len(reply))
        totals = relay.server.stats
        assert (totals.bytes_up, totals.bytes_down, totals.undelivered) == (7, len(reply), 0)

    run(main())


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
def test_the_proxy_header_goes_first(run: Runner[None], splice: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with (
            replying_backend(b"") as (upstream, received),
            relay_to(upstream, RelayOptions(splice=splice, proxy_protocol=1)) as relay,
        ):
            client = await relay.connect()
            await loop.sock_sendall(client, b"payload")
            client.shutdown(socket.SHUT_WR)
            got = await received
            host, port = client.getsockname()[:2]
            client.close()
        assert got == f"PROXY TCP4 {host} 127.0.0.1 {port} {relay.address[1]}\r\n".encode() + (
            b"payload"
        )

    run(main())


def test_a_refused_upstream_resets_the_client_and_is_counted(run: Runner[None]) -> None:
    async def main() -> None:
        with socket.socket() as closed_port:
            closed_port.bind(("127.0.0.1", 0))  # bound, never listening: refused
            upstream = TCPEndpoint("127.0.0.1", closed_port.getsockname()[1])
            async with relay_to(upstream, RelayOptions()) as relay:
                client = await relay.connect()
                (failed,) = await relay.wait_events("upstream_failed")
                assert await read_until_eof(client) == b""
                client.close()
                (closed,) = await relay.wait_events("closed")
        assert failed["error"] == f"connection refused by {upstream}"
        assert closed["end"] == f"upstream failed: connection refused by {upstream}"
        assert relay.server.stats.failed_upstream == 1

    run(main())


def test_tls_from_clients_is_terminated(
    run: Runner[None], serve: Serve, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async def main() -> None:
        async with (
            serve(EchoConnection) as backend,
            relay_to(backend.endpoint, RelayOptions(client_tls=server_ssl)) as relay,
        ):
            reader, writer = await asyncio.open_connection(
                *relay.address, ssl=client_ssl, server_hostname="localhost"
            )
            writer.write(b"over tls")
            assert await reader.readexactly(8) == b"over tls"
            writer.close()
            (closed,) = await relay.wait_events("closed")
        assert closed["path"] == "buffered" and closed["bytes_up"] == 8

    run(main())

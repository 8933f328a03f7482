"""PROXY protocol accept on the relay (net/proxy_header.py through RelayServer), on loopback.

The header is read before anything else; the client it names is reported, hashed and sent
onward; the payload after it is relayed intact on either path; a bad, missing or late header
closes that client with ``proxy_header_rejected`` while the others are served.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from netkit.core.addresses import TCPEndpoint
from netkit.core.proxy_protocol import V2_SIGNATURE, Accept, decode, encode_v1, encode_v2
from netkit.net.relay import RelayOptions
from netkit.net.upstreams import FixedUpstream
from tests.net.conftest import Runner
from tests.net.pairs import read_until_eof, replying_backend
from tests.net.test_relay import relay_to

pytestmark = pytest.mark.timeout(60)

REAL = ("203.0.113.7", 40123)
DEST = ("198.51.100.1", 443)


class Remembering(FixedUpstream):
    """A fixed upstream that remembers which client each connection was for (lb hashes it)."""

    def __init__(self, endpoint: TCPEndpoint) -> None:
        super().__init__(endpoint, timeout=5)
        self.clients: list[str] = []

    async def connect(self, client: str) -> tuple[socket.socket, str]:
        self.clients.append(client)
        return await super().connect(client)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
@pytest.mark.parametrize("version", [1, 2])
def test_the_named_client_is_reported_hashed_and_sent_onward(
    run: Runner[None], splice: bool, version: int
) -> None:
    header = encode_v1(REAL, DEST) if version == 1 else encode_v2(REAL, DEST)
    payload = bytes(range(256)) * 64  # the header and the payload arrive in one segment

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with replying_backend(b"reply") as (upstream, received):
            connector = Remembering(upstream)
            options = RelayOptions(
                splice=splice, proxy_protocol=2, accept_proxy_protocol=Accept.ANY
            )
            async with relay_to(upstream, options, connector) as relay:
                client = await relay.connect()
                await loop.sock_sendall(client, header + payload)
                client.shutdown(socket.SHUT_WR)
                assert await read_until_eof(client) == b"reply"
                peer = f"127.0.0.1:{client.getsockname()[1]}"
                client.close()
                (closed,) = await relay.wait_events("closed")
            got = await received
        sent_on, size = decode(got)  # type: ignore[misc]
        assert (sent_on.source, sent_on.destination) == (REAL, DEST)
        assert got[size:] == payload
        assert connector.clients == ["203.0.113.7:40123"]
        assert (closed["client"], closed["via"], closed["bytes_up"]) == (
            "203.0.113.7:40123", peer, len(payload)
        )  # fmt: skip
        assert closed["path"] == ("splice" if splice else "buffered")

    run(main())


def test_a_header_sent_one_byte_at_a_time_is_read_whole(run: Runner[None]) -> None:
    header = encode_v2(("2001:db8::5", 1), ("2001:db8::6", 2))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with replying_backend(b"") as (upstream, received):
            options = RelayOptions(accept_proxy_protocol=Accept.V2)
            async with relay_to(upstream, options) as relay:
                client = await relay.connect()
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(header)):
                    await loop.sock_sendall(client, header[i : i + 1])
                    await asyncio.sleep(0)  # let the relay peek at each piece
                await loop.sock_sendall(client, b"after")
                client.shutdown(socket.SHUT_WR)
                assert await read_until_eof(client) == b""
                client.close()
                (closed,) = await relay.wait_events("closed")
            assert await received == b"after"
        assert closed["client"] == "[2001:db8::5]:1"

    run(main())


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "no PROXY header"),
        (V2_SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x0c" + b"\0" * 12, "signature mismatch"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "not a port"),
        (V2_SIGNATURE + b"\x21\x11\x00\x0c" + b"\0" * 12, "no PROXY header"),  # v2 on a v1 port
    ],
)
def test_a_bad_header_closes_that_client_and_the_next_is_served(
    run: Runner[None], garbage: bytes, reason: str
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with replying_backend(b"ok") as (upstream, received):
            async with relay_to(upstream, RelayOptions(accept_proxy_protocol=Accept.V1)) as relay:
                bad = await relay.connect()
                await loop.sock_sendall(bad, garbage)
                (rejected,) = await relay.wait_events("proxy_header_rejected")
                assert await read_until_eof(bad) == b""  # closed (reset), nothing relayed
                bad.close()
                good = await relay.connect()
                await loop.sock_sendall(good, encode_v1(REAL, DEST) + b"hello")
                good.shutdown(socket.SHUT_WR)
                assert await read_until_eof(good) == b"ok"
                good.close()
                await relay.wait_events("closed", 2)
            assert await received == b"hello"
        assert reason in rejected["reason"] and rejected["client"].startswith("127.0.0.1:")
        first, second = relay.named("closed")
        assert first["end"].startswith("proxy header rejected: ") and first["bytes_up"] == 0
        assert second["client"] == "203.0.113.7:40123"
        assert relay.server.stats.bad_proxy_headers == 1
        assert relay.server.stats.as_dict()["proxy_headers_rejected"] == 1

    run(main())


@pytest.mark.parametrize("sent", [b"", b"PROXY TCP4 1.2.3.4"])
def test_a_header_not_complete_in_time_is_rejected_at_the_timeout(
    run: Runner[None], sent: bytes
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with replying_backend(b"") as (upstream, _):
            options = RelayOptions(accept_proxy_protocol=Accept.ANY, proxy_header_timeout=0.3)
            async with relay_to(upstream, options) as relay:
                client = await relay.connect()
                began = time.perf_counter()
                await loop.sock_sendall(client, sent)
                (rejected,) = await relay.wait_events("proxy_header_rejected")
                waited = time.perf_counter() - began
                assert await read_until_eof(client) == b""
                client.close()
        assert 0.29 <= waited < 3, waited
        assert f"within 0.3s ({len(sent)} bytes came)" in rejected["reason"]

    run(main())


def test_a_client_that_closes_before_its_header_is_rejected(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        options = RelayOptions(accept_proxy_protocol=Accept.ANY)
        async with replying_backend(b"") as (upstream, _), relay_to(upstream, options) as relay:
            client = await relay.connect()
            await loop.sock_sendall(client, b"PROXY TCP")
            client.close()
            (rejected,) = await relay.wait_events("proxy_header_rejected")
        assert "closed after 9 bytes" in rejected["reason"]

    run(main())


@pytest.mark.parametrize(
    "header", [V2_SIGNATURE + b"\x20\x00\x00\x00", b"PROXY UNKNOWN\r\n"], ids=["local", "unknown"]
)
def test_local_and_unknown_use_the_connections_own_addresses(
    run: Runner[None], header: bytes
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with replying_backend(b"") as (upstream, received):
            options = RelayOptions(proxy_protocol=1, accept_proxy_protocol=Accept.ANY)
            async with relay_to(upstream, options) as relay:
                client = await relay.connect()
                port = client.getsockname()[1]
                await loop.sock_sendall(client, header + b"x")
                client.shutdown(socket.SHUT_WR)
                await read_until_eof(client)
                client.close()
                (closed,) = await relay.wait_events("closed")
            got = await received
        assert got == encode_v1(("127.0.0.1", port), ("127.0.0.1", relay.address[1])) + b"x"
        assert closed["client"] == f"127.0.0.1:{port}" and "via" not in closed

    run(main())

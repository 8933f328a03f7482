"""Upstream addresses resolved once (net/resolved.py, net/upstreams.py): a literal IP is never
resolved, a name is resolved at start and again at each refresh (lb: each check round), and
a name whose addresses all failed is resolved anew; relays work to a backend given by name.
Real sockets on loopback, in process, on asyncio and uvloop."""

from __future__ import annotations

import socket

import pytest

from netkit.core.addresses import TCPEndpoint
from netkit.core.balance.backends import Backend
from netkit.errors import ConnectError
from netkit.net.echo import EchoConnection
from netkit.net.relay import RelayOptions
from netkit.net.resolved import AddressBook
from netkit.net.upstreams import FixedUpstream, balanced_pool
from tests.net.conftest import Runner, Serve
from tests.net.pairs import wait_until
from tests.net.test_relay import echoes, relay_to

pytestmark = pytest.mark.timeout(30)


def test_a_literal_is_known_at_once_and_a_name_is_resolved_once_until_refreshed(
    run: Runner[None],
) -> None:
    async def main() -> None:
        book = AddressBook()
        literal, name = TCPEndpoint("127.0.0.1", 80), TCPEndpoint("localhost", 80)
        assert book.cached(literal) == [(socket.AF_INET, ("127.0.0.1", 80))]
        assert book.cached(name) is None
        found = await book.lookup(name)
        assert found and all(addr[1] == 80 for _, addr in found)
        assert await book.lookup(name) == found and book.cached(name) == found
        assert book.resolutions == 1
        await book.refresh()  # names only: the literal is not resolved
        assert book.resolutions == 2
        book.forget(literal)
        book.forget(name)
        assert book.cached(literal) is not None and book.cached(name) is None

    run(main())


def test_proxy_to_a_literal_never_asks_the_resolver(run: Runner[None], serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as backend:
            upstream = FixedUpstream(backend.endpoint, timeout=5)
            async with relay_to(backend.endpoint, RelayOptions(), upstream) as relay:
                for i in range(10):
                    sock = await relay.connect()
                    assert await echoes(sock, b"ping %d" % i)
                    sock.close()
            assert upstream.addresses.resolutions == 0

    run(main())


def test_lb_to_a_backend_named_localhost_resolves_it_at_each_check_round_not_per_client(
    run: Runner[None], serve: Serve
) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as backend:
            named = TCPEndpoint("localhost", backend.endpoint.port)
            pool = balanced_pool([Backend(named)], check_interval=0.2)
            async with relay_to(named, RelayOptions(), pool) as relay:
                for i in range(20):
                    sock = await relay.connect()
                    assert await echoes(sock, b"ping %d" % i)
                    sock.close()
                resolved = pool.addresses.resolutions
                assert 1 <= resolved <= 3  # at start (and a client racing it), not 20 times
                await wait_until(lambda: pool.addresses.resolutions >= resolved + 2)
                sock = await relay.connect()
                assert await echoes(sock, b"after a refresh")
                sock.close()

    run(main())


def test_a_name_whose_addresses_all_refused_is_resolved_again_next_time(
    run: Runner[None],
) -> None:
    async def main() -> None:
        with socket.socket() as placeholder:  # a port nothing listens on
            placeholder.bind(("127.0.0.1", 0))
            port = placeholder.getsockname()[1]
        upstream = FixedUpstream(TCPEndpoint("localhost", port), timeout=5)
        for attempt in (1, 2):
            with pytest.raises(ConnectError):
                await upstream.connect("test")
            assert upstream.addresses.resolutions == attempt

    run(main())

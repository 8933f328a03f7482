"""What an idle ws-server connection keeps (issue 14's idle-memory regression).

CPython 3.11-3.13 keeps an instance's attributes in a compact values array, keyed by its
class, while the instances of that class use at most 30 distinct attribute names; past that
each instance carries a whole dict: 1.6 KiB instead of 0.3 KiB for a ws-server connection,
which was most of the regression (``benchmarks/README.md``, issue 14). These tests count the
names a connection sets over a whole life (upgrade, message, keepalive ping and pong, close)
and check that nothing of the handshake outlives it.
"""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any

from netkit.core.addresses import WSURL, parse_endpoint
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.events import Accepted, Request
from netkit.core.ws.http import Headers
from netkit.core.ws.server import ServerHandshake
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection, connect_ws
from netkit.net.ws_server import Mode, ModeConnection, Room

if TYPE_CHECKING:
    from conftest import Runner, Serve

# CPython's limit on the attribute names of one class's instances kept shared-keyed
# (SHARED_KEYS_MAX_SIZE in Objects/dictobject.c).
SHARED_KEYS_MAX = 30


class Watched(ModeConnection):
    """A ModeConnection whose test can wait for its keepalive pong and its close."""

    def __init__(self) -> None:
        super().__init__(
            ServerHandshake(),
            mode=Mode.ECHO,
            room=Room(),
            log=lambda _name, _fields: None,
            log_messages=False,
            max_size=1 << 20,
            timeouts=WSTimeouts(ping_interval=3600, ping_timeout=60),  # pinged by hand
        )
        self.ponged = asyncio.Event()

    def on_keepalive_pong(self, rtt: float) -> None:
        self.ponged.set()


async def open_one(h: Any, message: bytes) -> tuple[WebSocketClientConnection, Watched]:
    """A client connection to the harness's server, one message echoed, and its server side."""
    url = parse_endpoint(f"ws://127.0.0.1:{h.endpoint.port}/")
    assert isinstance(url, WSURL)
    client = await connect_ws(
        url,
        lambda: WebSocketClientConnection(ClientHandshake(f"127.0.0.1:{h.endpoint.port}")),
        ssl_context=None,
        timeout=5,
    )
    client.send_message(message)
    assert await client.receive() == (False, message)
    (conn,) = h.server.connections.values()
    assert isinstance(conn, Watched)
    return client, conn


def test_a_ws_server_connection_stays_within_the_shared_keys_limit(
    run: Runner, serve: Serve
) -> None:
    async def main() -> None:
        async with serve(Watched) as h:
            client, conn = await open_one(h, b"hello")
            names = set(vars(conn))
            conn._keepalive()  # a keepalive ping now: its tracker, its deadline
            await conn.ponged.wait()
            assert conn.last_rtt is not None
            names |= set(vars(conn))
            client.start_close()
            await conn.closed
            assert conn.close_code == 1000
            names |= set(vars(conn))
            client.abort()
        # Watched's own ponged included: the names of every life here fit the limit.
        assert len(names) <= SHARED_KEYS_MAX, sorted(names)

    run(main())


def test_an_upgraded_connection_keeps_nothing_of_its_request(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(Watched) as h:
            client, conn = await open_one(h, b"x")
            kept: list[Any] = [conn.ws, *vars(conn).values()]
            kept += gc.get_referents(conn.ws)
            held = [type(o).__name__ for o in kept if isinstance(o, Request | Headers | Accepted)]
            assert held == []
            assert conn.upgraded and conn.resource == "/"
            client.abort()

    run(main())

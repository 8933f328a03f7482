"""netkit.ws_server and netkit.ws_connect over real loopback and Unix sockets: messages both
ways, pings, close codes and reasons, handlers (and a handler's crash), TLS, and the errors."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

import netkit
from netkit import ClientTLS, ConfigError, ConnectError, ConnectionLost, PeerProtocolError


def test_echo_mode_text_binary_ping_and_close(run) -> None:
    async def main() -> None:
        async with netkit.ws_server() as server:
            assert server.url == f"ws://127.0.0.1:{server.port}/"
            async with netkit.ws_connect(server.url) as ws:
                await ws.send("héllo")
                assert await ws.recv() == "héllo"
                await ws.send(b"\x00\xff")
                assert await ws.recv() == b"\x00\xff"
                rtt = await ws.ping()
                assert 0 < rtt < 1
                assert ws.open and ws.close_code is None
            assert not ws.open and ws.close_code == 1000
            with pytest.raises(ConnectionLost, match="closed with 1000"):
                await ws.recv()
            with pytest.raises(ConnectionLost):
                await ws.send("late")

    run(main())


def test_handler_closes_with_its_code_and_reason(run) -> None:
    async def shout(ws: netkit.WebSocket) -> None:
        assert ws.path == "/room?x=1"
        async for message in ws:
            if message == "bye":
                await ws.close(4000, "done")
                return
            assert isinstance(message, str)
            await ws.send(message.upper())

    async def main() -> None:
        async with (
            netkit.ws_server(handler=shout) as server,
            netkit.ws_connect(server.url + "room?x=1") as ws,
        ):
            await ws.send("abc")
            assert await ws.recv() == "ABC"
            await ws.send("bye")
            assert [m async for m in ws] == []
            assert (ws.close_code, ws.close_reason) == (4000, "done")

    run(main())


def test_a_crashing_handler_gets_1011_and_others_are_served(run) -> None:
    async def fragile(ws: netkit.WebSocket) -> None:
        async for message in ws:
            if message == "crash":
                raise ValueError("boom")
            await ws.send(message)

    async def main() -> None:
        async with netkit.ws_server(handler=fragile) as server:
            async with netkit.ws_connect(server.url) as other, netkit.ws_connect(server.url) as ws:
                await ws.send("crash")
                await ws.wait_closed()
                assert ws.close_code == 1011
                await other.send("still here")
                assert await other.recv() == "still here"
            assert [type(e) for e in server.errors] == [ValueError]

    run(main())


def test_server_exit_sends_going_away(run) -> None:
    async def main() -> None:
        url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        leave = asyncio.Event()

        async def serve() -> None:
            async with netkit.ws_server(handler=lambda ws: ws.wait_closed()) as server:
                url.set_result(server.url)
                await leave.wait()  # then leave the block with the client still connected

        task = asyncio.create_task(serve())
        async with netkit.ws_connect(await url) as ws:
            leave.set()
            await ws.wait_closed()
            assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        await task

    run(main())


def test_broadcast_mode(run) -> None:
    async def main() -> None:
        async with (
            netkit.ws_server(mode="broadcast") as server,
            netkit.ws_connect(server.url) as a,
            netkit.ws_connect(server.url) as b,
        ):
            # b joined the room before its 101 was sent: no wait needed.
            await a.send("to the room")
            assert await b.recv() == "to the room"

    run(main())


def test_unix_socket_server_and_url(run, tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"

    async def main() -> None:
        async with netkit.ws_server(f"unix:{path}") as server:
            assert server.url == f"ws+unix://{path}:/"
            async with netkit.ws_connect(server.url) as ws:
                await ws.send("over unix")
                assert await ws.recv() == "over unix"

    run(main())


def test_wss_with_a_self_signed_server(run) -> None:
    async def main() -> None:
        async with netkit.ws_server("wss://127.0.0.1:0/secure", tls=True) as server:
            assert server.url.startswith("wss://") and server.url.endswith("/secure")
            trust = ClientTLS(cacert=server.ca_file)
            async with netkit.ws_connect(server.url, tls=trust) as ws:
                await ws.send("over tls")
                assert await ws.recv() == "over tls"
            # Without trusting its CA the handshake fails with netkit's TLS error.
            with pytest.raises(netkit.TLSError):
                async with netkit.ws_connect(server.url):
                    pass

    run(main())


def test_refused_connect_is_a_connect_error(run) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        async with netkit.ws_connect(f"ws://127.0.0.1:{port}/", open_timeout=2):
            pass

    with pytest.raises(ConnectError, match="refused"):
        run(main())


def test_wrong_path_is_refused_with_its_status(run) -> None:
    async def main() -> None:
        async with (
            netkit.ws_server(paths=["/chat"]) as server,
            netkit.ws_connect(f"ws://{server.address}/other"),
        ):
            pass

    with pytest.raises(PeerProtocolError, match="404"):
        run(main())


def test_one_reader_at_a_time(run) -> None:
    async def main() -> None:
        async with netkit.ws_server() as server, netkit.ws_connect(server.url) as ws:
            first = asyncio.create_task(ws.recv())
            await asyncio.sleep(0)  # one loop turn: the task runs to its wait (deterministic)
            with pytest.raises(netkit.UsageError, match="already waiting"):
                await ws.recv()
            await ws.send("for the first")
            assert await first == "for the first"

    run(main())


def test_a_client_over_the_limit_gets_503(run) -> None:
    async def main() -> None:
        async with (
            netkit.ws_server(max_connections=1) as server,
            netkit.ws_connect(server.url) as first,
        ):
            with pytest.raises(PeerProtocolError, match="503"):
                async with netkit.ws_connect(server.url):
                    pass
            await first.send("still served")
            assert await first.recv() == "still served"
            assert server.stats["rejected"] == 1

    run(main())


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: netkit.ws_server(mode="shout"), "mode 'shout'"),
        (lambda: netkit.ws_server(mode="sink", handler=print), "or a handler, not both"),
        (lambda: netkit.ws_server("wss://127.0.0.1:0/"), "needs tls"),
        (lambda: netkit.ws_server(tls=ClientTLS()), "give True"),  # a client's settings
        (lambda: netkit.ws_connect("ws://127.0.0.1:1/", tls=ClientTLS()), "need a wss:// URL"),
        (
            lambda: netkit.ws_connect("wss://127.0.0.1:1/", tls=ClientTLS(cacert=Path("/nope"))),
            "cannot read CA file",
        ),
    ],
)
def test_bad_settings_are_usage_errors(run, call, words: str) -> None:
    async def main() -> None:
        async with call():
            raise AssertionError("must not start")

    with pytest.raises(ConfigError, match=words):
        run(main())

"""Allow/deny lists on every kind of server, in-process over 127.0.0.1 and ::1.

127.0.0.2 is another loopback source address: a client bound to it is "another machine" that
the rules can deny while 127.0.0.1 is served. ::1 is the only IPv6 loopback, so IPv6 is tested
with rules that match ::1 or do not.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

import netkit
from netkit import ConfigError
from netkit.core.access import NO_ALLOW_RULE, AccessList
from netkit.net.echo import EchoConnection
from netkit.net.server import StreamServer, running
from tests.net.conftest import EventLog


async def turned_away(host: str, port: int, source: str) -> None:
    """Connect from ``source``: the server resets the connection without reading a byte."""
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    except ConnectionResetError:
        return  # reset before the connect completed on our side
    try:
        writer.write(b"hello")
        async with asyncio.timeout(5):
            assert await reader.read(100) == b""
    except ConnectionResetError:
        pass
    finally:
        writer.close()


async def echoed(host: str, port: int, source: str, data: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(data)
    async with asyncio.timeout(5):
        got = await reader.readexactly(len(data))
    writer.close()
    await writer.wait_closed()
    return got


def test_echo_server_denies_one_client_and_serves_the_others(run: Any) -> None:
    events = EventLog()

    async def main() -> dict[str, Any]:
        async with netkit.echo_server(deny=["127.0.0.2"], on_event=events.record) as server:
            assert server.host and server.port
            await turned_away(server.host, server.port, "127.0.0.2")
            denied = (await events.wait_events("denied"))[0]
            assert denied["peer"].startswith("127.0.0.2:") and denied["rule"] == "deny 127.0.0.2/32"
            assert await echoed(server.host, server.port, "127.0.0.1") == b"ping"
        return server.stats

    stats = run(main())
    assert (stats["denied"], stats["connections"], stats["errors"]) == (1, 1, 0)
    # The denied client never became a connection: no connected event names it.
    assert all(not f["peer"].startswith("127.0.0.2") for f in events.named("connected"))


def test_an_allow_list_turns_away_everyone_it_does_not_name(run: Any) -> None:
    events = EventLog()

    async def main() -> dict[str, Any]:
        async with netkit.echo_server(allow="127.0.0.1", on_event=events.record) as server:
            assert server.host and server.port
            await turned_away(server.host, server.port, "127.0.0.2")
            assert await echoed(server.host, server.port, "127.0.0.1") == b"ping"
        return server.stats

    stats = run(main())
    assert stats["denied"] == 1 and stats["connections"] == 1
    assert events.named("denied")[0]["rule"] == NO_ALLOW_RULE


@pytest.mark.parametrize(
    ("allow", "deny", "served"),
    [
        (["::1"], [], True),
        (["::/0"], ["fd00::/8"], True),
        (["fd00::/8"], [], False),
        ([], ["::1/128"], False),
        (["::1"], ["::/0"], False),  # deny wins
    ],
)
def test_ipv6_rules_that_match_or_not_the_loopback(
    run: Any, allow: list[str], deny: list[str], served: bool
) -> None:
    events = EventLog()

    async def main() -> dict[str, Any]:
        async with netkit.echo_server(
            "[::1]:0", allow=allow, deny=deny, on_event=events.record
        ) as server:
            assert server.port
            if served:
                assert await echoed("::1", server.port, "::1") == b"ping"
            else:
                await turned_away("::1", server.port, "::1")
        return server.stats

    stats = run(main())
    assert (stats["connections"], stats["denied"]) == ((1, 0) if served else (0, 1))
    if not served:
        assert events.named("denied")[0]["peer"].startswith("[::1]:")


def test_an_ipv4_mapped_client_of_a_dual_stack_listener_matches_ipv4_rules(run: Any) -> None:
    # netkit's own [::] listeners are IPv6-only; a dual-stack socket handed to a server sees
    # IPv4 clients as ::ffff:a.b.c.d, and the IPv4 rules still apply to them.
    events = EventLog()

    async def main() -> dict[str, Any]:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::ffff:127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        server = StreamServer(sock, EchoConnection, on_event=events.record)
        server.restrict(AccessList(allow=["127.0.0.0/8"], deny=["127.0.0.2"]))
        async with running(server, drain_timeout=1.0):
            await turned_away("127.0.0.1", port, "127.0.0.2")
            assert await echoed("127.0.0.1", port, "127.0.0.1") == b"ping"
        return server.stats.as_dict()

    stats = run(main())
    assert (stats["denied"], stats["connections"]) == (1, 1)
    denied = events.named("denied")[0]
    assert denied["rule"] == "deny 127.0.0.2/32" and "::ffff:127.0.0.2" in denied["peer"]


def test_a_tls_server_denies_before_the_handshake(run: Any) -> None:
    events = EventLog()

    async def main() -> dict[str, Any]:
        async with netkit.echo_server(tls=True, deny="127.0.0.2", on_event=events.record) as server:
            assert server.host and server.port
            context = server.client_ssl_context()
            with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
                async with asyncio.timeout(5):
                    await asyncio.open_connection(
                        server.host, server.port, ssl=context, local_addr=("127.0.0.2", 0)
                    )
            reader, writer = await asyncio.open_connection(
                server.host, server.port, ssl=context, local_addr=("127.0.0.1", 0)
            )
            writer.write(b"safe")
            assert await reader.readexactly(4) == b"safe"
            writer.close()
        return server.stats

    stats = run(main())
    assert (stats["denied"], stats["connections"], stats["errors"]) == (1, 1, 0)
    assert not events.named("handshake_failed")  # no handshake was ever begun


def test_a_websocket_server_denies_at_accept(run: Any) -> None:
    events = EventLog()

    async def main() -> dict[str, Any]:
        async with netkit.ws_server(deny=["127.0.0.2"], on_event=events.record) as server:
            host, port = server.host, server.port
            assert host and port
            await turned_away(host, port, "127.0.0.2")
            async with netkit.ws_connect(server.url) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
        return server.stats

    stats = run(main())
    assert (stats["denied"], stats["connections"]) == (1, 1)
    assert events.named("denied")[0]["rule"] == "deny 127.0.0.2/32"


@pytest.mark.parametrize("kind", ["proxy", "load_balancer"])
def test_a_relay_denies_without_opening_the_upstream(run: Any, kind: str) -> None:
    events = EventLog()

    async def main() -> tuple[Any, int]:
        async with netkit.echo_server() as echo:
            relay = (
                netkit.proxy(echo.address, deny="127.0.0.2", on_event=events.record)
                if kind == "proxy"
                else netkit.load_balancer([echo.address], deny="127.0.0.2", on_event=events.record)
            )
            async with relay as r:
                assert r.host and r.port
                await turned_away(r.host, r.port, "127.0.0.2")
                assert await echoed(r.host, r.port, "127.0.0.1") == b"ping"
                totals = r.totals
                if isinstance(r, netkit.LoadBalancer):
                    relayed = r.backends[0]["total"]  # health checks are not relayed clients
                else:
                    relayed = echo.stats["connections"]
        return totals, relayed

    totals, relayed = run(main())
    assert (totals.denied, totals.connections) == (1, 1)
    assert relayed == 1  # only the allowed client reached the upstream
    denied = events.named("denied")[0]
    assert denied["client"].startswith("127.0.0.2:") and denied["rule"] == "deny 127.0.0.2/32"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_udp_echo_server_does_not_answer_a_denied_source(run: Any, host: str) -> None:
    events = EventLog()
    # Over IPv4 127.0.0.2 is denied; over IPv6 ::1 is denied and the IPv4 side serves.
    deny, other = ("127.0.0.2", "127.0.0.1") if host == "127.0.0.1" else ("::1", None)
    # Datagrams are read in order: the allowed one's reply shows the three before it were
    # read; with no other source (IPv6), one datagram and its event.
    sent = 3 if other else 1

    async def main() -> dict[str, Any]:
        async with netkit.udp_echo_server(
            f"[{host}]:0" if ":" in host else f"{host}:0", deny=deny, on_event=events.record
        ) as server:
            assert server.port
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as denied_sock:
                denied_sock.bind((deny, 0))
                for _ in range(sent):
                    denied_sock.sendto(b"let me in", (host, server.port))
                await events.wait_events("denied")
                if other is not None:
                    with socket.socket(family, socket.SOCK_DGRAM) as allowed:
                        allowed.bind((other, 0))
                        allowed.setblocking(False)
                        allowed.sendto(b"hello", (host, server.port))
                        async with asyncio.timeout(5):
                            reply = await asyncio.get_running_loop().sock_recv(allowed, 100)
                        assert reply == b"hello"
                denied_sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    denied_sock.recv(100)  # nothing came back to the denied source
            return server.stats

    stats = run(main())
    assert stats["denied"] == sent and len(events.named("denied")) == 1  # reported once
    assert stats["datagrams_out"] == (1 if other else 0)


def test_rules_on_a_unix_socket_are_a_usage_error(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"

    async def main() -> None:
        with pytest.raises(ConfigError, match="Unix socket"):
            async with netkit.echo_server(f"unix:{path}", allow=["127.0.0.1"]):
                pass
        with pytest.raises(ConfigError, match="Unix socket"):
            async with netkit.proxy("127.0.0.1:9", listen=f"unix:{path}", deny="::1"):
                pass

    run(main())
    assert not path.exists()


def test_a_bad_rule_fails_before_listening(run: Any) -> None:
    async def main() -> None:
        with pytest.raises(ConfigError, match="host bits are set"):
            async with netkit.echo_server(allow=["10.0.0.1/8"]):
                pass
        with pytest.raises(ConfigError, match="allow 'nope'"):
            async with netkit.udp_echo_server(allow="nope"):
                pass

    run(main())


def test_a_udp_proxy_opens_no_flow_for_a_denied_source(run: Any) -> None:
    events = EventLog()

    async def main() -> dict[str, Any]:
        async with (
            netkit.udp_echo_server() as echo,
            netkit.udp_proxy(echo.address, deny=["127.0.0.2"], on_event=events.record) as p,
        ):
            assert p.host and p.port
            loop = asyncio.get_running_loop()
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as denied,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as allowed,
            ):
                denied.bind(("127.0.0.2", 0))
                allowed.bind(("127.0.0.1", 0))
                for sock in (denied, allowed):
                    sock.setblocking(False)
                denied.sendto(b"let me in", (p.host, p.port))
                allowed.sendto(b"hello", (p.host, p.port))
                async with asyncio.timeout(5):
                    assert await loop.sock_recv(allowed, 100) == b"hello"
                with pytest.raises(BlockingIOError):
                    denied.recv(100)
            return p.stats

    stats = run(main())
    assert (stats["denied"], stats["flows"]) == (1, 1)
    assert events.named("denied")[0]["client"].startswith("127.0.0.2:")
    assert len(events.named("flow_opened")) == 1

"""netkit.proxy() and netkit.load_balancer() in-process, over real loopback and Unix sockets.

Every scenario runs on asyncio and on uvloop (``run``, tests/api/conftest.py). The proxy's
faults are changed while a connection is open and measured on real round trips:
latency is there after ``add`` and gone after ``clear``; ``cut`` closes the open connection
and refuses new ones; ``restore`` accepts again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from netkit.api.proxy import load_balancer, proxy, stream_endpoint
from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.faults import Latency, Refuse
from netkit.errors import ConfigError, FaultExists, NoSuchFault

Runner = Callable[[Coroutine[Any, Any, None]], None]


@asynccontextmanager
async def echo_backend(
    name: bytes = b"", *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """A loopback server that sends ``name`` on connect, then echoes (over TLS with ``tls``);
    yields its address."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name)
        with contextlib.suppress(ConnectionResetError):  # a proxy cut it
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def open_tcp(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    """Seconds for one byte to go through and come back."""
    started = time.perf_counter()
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    return time.perf_counter() - started


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- addresses ---------------------------------------------------------------------------


class _Handle:
    address = "127.0.0.1:9"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:8080", TCPEndpoint("127.0.0.1", 8080)),
        (("::1", 8080), TCPEndpoint("::1", 8080)),
        (Path("/tmp/x.sock"), UnixEndpoint("/tmp/x.sock")),
        ("unix:/tmp/x.sock", UnixEndpoint("/tmp/x.sock")),
        (_Handle(), TCPEndpoint("127.0.0.1", 9)),
    ],
)
def test_stream_endpoint_takes_every_way_of_naming_an_address(
    target: Any, expected: TCPEndpoint | UnixEndpoint
) -> None:
    assert stream_endpoint(target) == expected


def test_stream_endpoint_refuses_what_names_no_address() -> None:
    with pytest.raises(ConfigError, match="names no stream endpoint"):
        stream_endpoint(42)  # type: ignore[arg-type]


# --- load balancer -----------------------------------------------------------------------


def test_load_balancer_spreads_round_robin_and_reports_its_backends(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            echo_backend(b"a") as a,
            echo_backend(b"b") as b,
            load_balancer([a, b], check_interval=60) as lb,
        ):
            assert lb.port != 0 and lb.address == f"127.0.0.1:{lb.port}"
            seen = []
            for _ in range(4):
                reader, writer = await open_tcp(lb.address)
                seen.append(await reader.readexactly(1))
                writer.close()
                await writer.wait_closed()
            assert seen == [b"a", b"b", b"a", b"b"]
            rows = {row["backend"]: row for row in lb.backends}
            assert [rows[a]["total"], rows[b]["total"]] == [2, 2]
            assert {row["state"] for row in rows.values()} == {"up"}
            assert lb.totals.connections == 4

    run(scenario())


def test_load_balancer_fails_over_from_a_backend_that_refuses(run: Runner) -> None:
    async def scenario() -> None:
        dead = f"127.0.0.1:{free_port()}"
        events: list[tuple[str, dict[str, Any]]] = []
        async with (
            echo_backend(b"live") as live,
            load_balancer(
                [dead, f"{live},weight=1"],
                check_interval=60,
                on_event=lambda e, f: events.append((e, f)),
            ) as lb,
        ):
            for _ in range(3):
                reader, writer = await open_tcp(lb.address)
                assert await reader.readexactly(4) == b"live"
                writer.close()
            states = {row["backend"]: row["state"] for row in lb.backends}
            assert states == {dead: "down", live: "up"}
            assert ("health", "down") in [(e, f.get("new")) for e, f in events]

    run(scenario())


def test_load_balancer_listens_on_a_unix_socket(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "lb.sock"

    async def scenario() -> None:
        async with echo_backend(b"u") as backend, load_balancer([backend], listen=path) as lb:
            assert lb.address == f"unix:{path}"
            reader, writer = await asyncio.open_unix_connection(str(path))
            assert await reader.readexactly(1) == b"u"
            writer.close()
            assert (lb.path, lb.host, lb.port) == (str(path), None, None)
        assert not path.exists()  # removed when the block ends

    run(scenario())


def test_load_balancer_refuses_an_unknown_policy(run: Runner) -> None:
    async def scenario() -> None:
        async with load_balancer(["127.0.0.1:1"], policy="fastest"):
            pass

    with pytest.raises(ConfigError, match="fastest"):
        run(scenario())


# --- proxy -------------------------------------------------------------------------------


def test_proxy_relays_on_the_port_it_bound_and_counts_live_bytes(run: Runner) -> None:
    async def scenario() -> None:
        async with echo_backend() as backend, proxy(backend) as p:
            assert p.port != 0 and p.address == f"127.0.0.1:{p.port}"
            assert p.upstream == backend
            reader, writer = await open_tcp(p.address)
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"hello"
            totals = p.totals
            assert (totals.connections, totals.active) == (1, 1)
            assert (totals.bytes_up, totals.bytes_down) == (5, 5)
        assert await closed_by_peer(reader)  # leaving the block closed it

    run(scenario())


def test_latency_added_to_a_live_connection_then_cleared(run: Runner) -> None:
    async def scenario() -> None:
        async with echo_backend() as backend, proxy(backend) as p:
            reader, writer = await open_tcp(p.address)
            await round_trip(reader, writer)  # also connects the proxy upstream: not timed
            p.add(Latency(100, direction="down"))
            delayed = [await round_trip(reader, writer) for _ in range(3)]
            # Every trip is delayed by the whole latency (never less), and one at least by
            # about the latency alone (a busy machine slows some down).
            assert min(delayed) >= 0.1 and min(delayed) < 0.3, delayed
            p.clear()
            on_time = [await round_trip(reader, writer) for _ in range(3)]
            assert min(on_time) < 0.1, on_time
            writer.close()

    run(scenario())


def test_faults_are_named_replaced_and_removed(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            echo_backend() as backend,
            proxy(backend, faults={"slow": Latency(10)}) as p,
        ):
            assert p.faults == [("slow", Latency(10))]
            assert p.add(Latency(20, direction="up")) == "latency_upstream"
            with pytest.raises(FaultExists):
                p.add(Latency(30), name="slow")
            p.replace("slow", Latency(40))
            with pytest.raises(NoSuchFault):
                p.replace("fast", Latency(40))
            assert p.remove("latency_upstream") == Latency(20, direction="up")
            assert p.faults == [("slow", Latency(40))]
            with pytest.raises(NoSuchFault):
                p.remove("latency_upstream")

    run(scenario())


def test_a_refuse_fault_turns_away_new_connections_until_removed(run: Runner) -> None:
    async def scenario() -> None:
        async with echo_backend(b"ok") as backend, proxy(backend) as p:
            name = p.add(Refuse())
            reader, writer = await open_tcp(p.address)
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await reader.readexactly(2)
            writer.close()
            p.remove(name)
            reader, writer = await open_tcp(p.address)
            assert await reader.readexactly(2) == b"ok"
            writer.close()
            assert p.totals.faults_injected == 1

    run(scenario())


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the peer closed the connection (FIN or RST)."""
    try:
        return await reader.read(1) == b""
    except ConnectionResetError:
        return True


def test_cut_closes_and_refuses_then_restore_accepts_on_the_same_port(run: Runner) -> None:
    async def scenario() -> None:
        async with echo_backend() as backend, proxy(backend) as p:
            port = p.port
            reader, writer = await open_tcp(p.address)
            await round_trip(reader, writer)
            await p.cut()
            assert not p.enabled
            assert await closed_by_peer(reader)
            writer.close()
            with pytest.raises(ConnectionRefusedError):
                await open_tcp(p.address)
            await p.restore()
            assert p.enabled and p.port == port
            reader, writer = await open_tcp(p.address)
            await round_trip(reader, writer)
            writer.close()

    run(scenario())


def test_cut_and_restore_on_a_unix_socket(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "proxy.sock"

    async def scenario() -> None:
        async with echo_backend() as backend, proxy(backend, listen=path) as p:
            assert p.address == f"unix:{path}"
            await p.cut()
            with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
                await asyncio.open_unix_connection(str(path))
            await p.restore()
            reader, writer = await asyncio.open_unix_connection(str(path))
            await round_trip(reader, writer)
            writer.close()
        assert not path.exists()

    run(scenario())


@pytest.fixture(scope="module")
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a trustme certificate for 127.0.0.1, and a client that trusts it."""
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def test_proxy_terminates_tls_from_clients(
    run: Runner, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, client_ctx = tls_pair

    async def scenario() -> None:
        async with echo_backend() as backend, proxy(backend, tls=server_ctx) as p:
            reader, writer = await asyncio.open_connection(p.host, p.port, ssl=client_ctx)
            writer.write(b"secret")
            assert await reader.readexactly(6) == b"secret"
            p.add(Latency(100, direction="down"))
            assert await round_trip(reader, writer) >= 0.1  # faults apply inside TLS too
            writer.close()

    run(scenario())


def test_proxy_speaks_tls_to_its_upstream(
    run: Runner, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, client_ctx = tls_pair

    async def scenario() -> None:
        async with (
            echo_backend(b"tls", tls=server_ctx) as backend,
            proxy(backend, upstream_tls=client_ctx) as p,
        ):
            reader, writer = await open_tcp(p.address)  # plain to the proxy
            assert await reader.readexactly(3) == b"tls"
            writer.write(b"up")
            assert await reader.readexactly(2) == b"up"
            writer.close()

    run(scenario())


def test_a_self_signed_tls_proxy_says_which_ca_to_trust(run: Runner) -> None:
    async def scenario() -> None:
        async with echo_backend(b"hi") as backend, proxy(backend, tls=True) as p:
            assert p.tls and p.ca_file is not None
            reader, writer = await asyncio.open_connection(
                p.host, p.port, ssl=p.client_ssl_context()
            )
            assert await reader.readexactly(2) == b"hi"
            writer.close()

    run(scenario())


def test_set_upstream_sends_new_connections_elsewhere(run: Runner) -> None:
    async def scenario() -> None:
        async with echo_backend(b"a") as a, echo_backend(b"b") as b, proxy(a) as p:
            first, first_writer = await open_tcp(p.address)
            assert await first.readexactly(1) == b"a"
            p.set_upstream(b)
            assert p.upstream == b
            second, second_writer = await open_tcp(p.address)
            assert await second.readexactly(1) == b"b"
            first_writer.write(b"still a")  # the open connection stayed where it was
            assert await first.readexactly(7) == b"still a"
            first_writer.close()
            second_writer.close()

    run(scenario())


def test_a_block_that_raises_still_closes_every_connection(run: Runner) -> None:
    async def scenario() -> None:
        async with echo_backend() as backend:
            with pytest.raises(RuntimeError, match="test failed"):
                async with proxy(backend) as p:
                    reader, writer = await open_tcp(p.address)
                    await round_trip(reader, writer)
                    raise RuntimeError("test failed")
            assert await closed_by_peer(reader)
            with pytest.raises(ConnectionRefusedError):
                await open_tcp(p.address)
            writer.close()

    run(scenario())

"""Tests for netkit.net.server: StreamServer life cycle, connection cap, drain, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import stat
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.buffers import frame_header
from netkit.errors import ConnectError, ConnectionLost
from netkit.net.connect import open_stream
from netkit.net.echo import EchoClientConnection, EchoConnection, FramedEchoConnection, echo_once
from netkit.net.relay import RelayOptions, RelayServer, RelayStats
from netkit.net.server import (
    Server,
    StreamServer,
    StreamStats,
    make_listener,
    serve_until_signal,
)
from netkit.net.upstreams import FixedUpstream
from netkit.net.workers import merge_summaries
from tests.net.conftest import EventLog

if TYPE_CHECKING:
    from conftest import Runner, Serve


class Watch:
    """Events a test can wait on, set by the server-side connection below."""

    def __init__(self) -> None:
        self.bytes_in = 0
        self.received = asyncio.Event()
        self.draining = asyncio.Event()


class WatchedFramedEcho(FramedEchoConnection):
    def __init__(self, watch: Watch) -> None:
        super().__init__(max_frame=1 << 16)
        self.watch = watch

    def data_ready(self) -> None:
        super().data_ready()
        self.watch.bytes_in = self.bytes_in
        self.watch.received.set()

    def begin_drain(self) -> None:
        super().begin_drain()
        self.watch.draining.set()


async def received_at_least(watch: Watch, nbytes: int) -> None:
    while watch.bytes_in < nbytes:
        watch.received.clear()
        await watch.received.wait()


# --- listening ---------------------------------------------------------------------------


def test_make_listener_tcp() -> None:
    with make_listener(TCPEndpoint("127.0.0.1", 0)) as sock:
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM


def test_make_listener_unix_mode(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    with make_listener(UnixEndpoint(str(path)), socket_mode=0o600) as sock:
        assert sock.family == socket.AF_UNIX
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_server_address_and_events(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            assert h.server.address == f"127.0.0.1:{h.endpoint.port}"
            client = await h.connect()
            await echo_once(client, 0, b"abc", framed=False, timeout=5)
            (connected,) = await h.wait_events("connected")
            assert connected["peer"] == "127.0.0.1:{}".format(
                client.transport.get_extra_info("sockname")[1]
            )
            stats = h.server.stats
            assert (stats.accepted, stats.active, stats.peak) == (1, 1, 1)
            client.close()
            (gone,) = await h.wait_events("disconnected")
            assert gone["peer"] == connected["peer"]
            assert gone["bytes_in"] == gone["bytes_out"] == 3
            assert gone["duration_s"] >= 0
            assert (stats.active, stats.peak) == (0, 1)
            assert not h.server.connections

    run(main())


def test_user_on_event_is_called(run: Runner, serve: Serve) -> None:
    seen: list[str] = []

    async def main() -> None:
        async with serve(EchoConnection, on_event=lambda name, fields: seen.append(name)) as h:
            client = await h.connect()
            client.close()
            await h.wait_events("disconnected")

    run(main())
    assert seen == ["connected", "disconnected"]


# --- connection cap ----------------------------------------------------------------------


def test_max_connections_rejects_the_extra_connection(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection, max_connections=1) as h:
            first = await h.connect()
            await echo_once(first, 0, b"first", framed=False, timeout=5)
            second = await h.connect()  # the kernel accepts; the server drops it at once
            await second.closed
            assert h.server.stats.rejected == 1
            assert h.server.stats.accepted == 1
            assert len(h.server.connections) == 1
            assert h.named("connected") and len(h.named("connected")) == 1
            # The first connection is unaffected.
            await echo_once(first, 1, b"still here", framed=False, timeout=5)
            # Once it leaves, there is room again.
            first.close()
            await h.wait_events("disconnected")
            third = await h.connect()
            await echo_once(third, 0, b"third", framed=False, timeout=5)
            assert (h.server.stats.accepted, h.server.stats.rejected) == (2, 1)

    run(main())


def test_rejected_connection_cannot_echo(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection, max_connections=0) as h:
            client = await h.connect()
            with pytest.raises(ConnectionLost):
                await echo_once(client, 0, b"x", framed=False, timeout=5)
            assert h.server.stats.rejected == 1
            assert h.server.stats.accepted == 0

    run(main())


def test_a_turned_away_connection_is_logged(run: Runner, serve: Serve) -> None:
    # Over the limit, a client used to vanish without an event (#13 item 7).
    async def main() -> None:
        async with serve(EchoConnection, max_connections=1) as h:
            first = await h.connect()
            await echo_once(first, 0, b"first", framed=False, timeout=5)
            second = await h.connect()
            await second.closed
            (rejected,) = await h.wait_events("rejected")
            port = second.transport.get_extra_info("sockname")[1]
            assert rejected == {
                "peer": f"127.0.0.1:{port}",
                "reason": "at the connection limit (1)",
            }
            h.server.draining = True  # as drain() sets it, before the listener closes
            third = await h.connect()
            await third.closed
            events = await h.wait_events("rejected", 2)
            assert events[1]["reason"] == "shutting down"
            assert h.server.stats.rejected == 2

    run(main())


# --- drain -------------------------------------------------------------------------------


def test_drain_without_connections_returns_at_once(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            async with asyncio.timeout(2):  # far less than the drain timeout
                await h.server.drain(30)
            assert h.server.draining
            assert h.server.stats.aborted_at_drain == 0
            # The listener is closed: new connections are refused.
            with pytest.raises(ConnectError, match="connection refused"):
                await open_stream(h.endpoint, EchoClientConnection, timeout=5)

    run(main())


def test_drain_aborts_an_idle_raw_connection_after_the_timeout(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with serve(EchoConnection) as h:
            client = await h.connect()
            await echo_once(client, 0, b"hi", framed=False, timeout=5)
            start = loop.time()
            await h.server.drain(0.2)
            assert loop.time() - start >= 0.19
            assert h.server.stats.aborted_at_drain == 1
            assert not h.server.connections
            await client.closed
            # Aborted connections are still counted in the summary.
            assert h.server.stats.bytes_in == h.server.stats.bytes_out == 2

    run(main())


def test_drain_waits_for_a_raw_connection_the_peer_closes(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            client = await h.connect()
            await echo_once(client, 0, b"hi", framed=False, timeout=5)
            drain = asyncio.ensure_future(h.server.drain(30))
            client.close()
            async with asyncio.timeout(5):
                await drain
            assert h.server.stats.aborted_at_drain == 0

    run(main())


def test_framed_drain_closes_a_connection_between_frames(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(lambda: FramedEchoConnection(max_frame=1024)) as h:
            client = await h.connect()
            await echo_once(client, 0, b"frame", framed=True, timeout=5)
            async with asyncio.timeout(2):  # not the 30 s drain timeout
                await h.server.drain(30)
            assert h.server.stats.aborted_at_drain == 0
            await client.closed
            assert client.eof  # closed gracefully, not reset
            assert client.error is None

    run(main())


def test_framed_drain_finishes_the_frame_in_flight(run: Runner, serve: Serve) -> None:
    watch = Watch()
    payload = bytes(range(200))

    async def main() -> None:
        async with serve(lambda: WatchedFramedEcho(watch)) as h:
            client = await h.connect()
            message = frame_header(len(payload)) + payload
            waiter = client.expect(message)
            client.write(message[:100])
            await received_at_least(watch, 100)
            drain = asyncio.ensure_future(h.server.drain(30))
            await watch.draining.wait()
            # Mid-frame: the connection stays open until the frame is complete.
            assert not client.closed.done()
            assert not drain.done()
            client.write(message[100:])
            await waiter  # the whole frame was echoed ...
            await client.closed  # ... and then the server closed
            assert client.eof
            async with asyncio.timeout(2):
                await drain
            assert h.server.stats.aborted_at_drain == 0
            assert h.server.stats.bytes_out == len(message)

    run(main())


def test_drain_stops_early_when_forced(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            client = await h.connect()
            await echo_once(client, 0, b"x", framed=False, timeout=5)
            forced = asyncio.Event()
            forced.set()
            async with asyncio.timeout(2):
                await h.server.drain(30, forced)
            assert h.server.stats.aborted_at_drain == 1
            await client.closed

    run(main())


def test_connections_during_drain_are_rejected(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            h.server.draining = True  # as drain() sets it, before the listener closes
            client = await h.connect()
            await client.closed
            assert h.server.stats.rejected == 1

    run(main())


def test_unix_server_close_listener_removes_the_file(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "srv.sock"
    endpoint = UnixEndpoint(str(path))

    async def main() -> None:
        server = StreamServer(make_listener(endpoint), EchoConnection, unix_endpoint=endpoint)
        server.start()
        try:
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
            client = await open_stream(endpoint, EchoClientConnection, timeout=5)
            client.abort()
            await client.closed
            await server.drain(0)
            assert not path.exists()  # drain already removes the file
        finally:
            server.close_listener()
        assert not path.exists()

    run(main())


def test_close_listener_without_start_closes_the_socket(run: Runner) -> None:
    async def main() -> socket.socket:
        sock = make_listener(TCPEndpoint("127.0.0.1", 0))
        server = StreamServer(sock, EchoConnection)
        server.close_listener()
        return sock

    sock = run(main())
    assert sock.fileno() == -1


# --- ServerStats -------------------------------------------------------------------------


def test_each_kind_of_server_words_its_summary_in_order() -> None:
    """One as_dict for every server: the keys, their order and the attribute behind each."""
    stream = StreamStats(accepted=3, aborted_at_drain=1, bytes_in=7).as_dict()
    assert list(stream) == [
        "connections", "rejected", "denied", "peak_connections", "bytes_in", "bytes_out",
        "errors", "aborted_at_drain", "accept_errors", "uptime_s",
    ]  # fmt: skip
    assert (stream["connections"], stream["aborted_at_drain"], stream["bytes_in"]) == (3, 1, 7)
    relay = RelayStats(accepted=4, failed_upstream=2, undelivered=5, faults=1, aborted_at_drain=6)
    d = relay.as_dict()
    assert list(d) == [
        "connections", "rejected", "denied", "upstream_failures", "proxy_headers_rejected",
        "peak_connections", "bytes_up", "bytes_down", "undelivered_bytes", "faults_injected",
        "accept_errors", "uptime_s", "cut_at_drain",
    ]  # fmt: skip
    assert (d["connections"], d["upstream_failures"], d["undelivered_bytes"]) == (4, 2, 5)
    assert (d["faults_injected"], d["cut_at_drain"], d["uptime_s"] >= 0) == (1, 6, True)


def test_stream_stats_as_dict_and_merged_across_workers() -> None:
    stats = StreamStats(accepted=3, rejected=1, peak=2, bytes_in=10, bytes_out=9, errors=1)
    d: dict[str, Any] = stats.as_dict()
    assert {k: v for k, v in d.items() if k != "uptime_s"} == {
        "connections": 3,
        "rejected": 1,
        "denied": 0,
        "peak_connections": 2,
        "bytes_in": 10,
        "bytes_out": 9,
        "errors": 1,
        "aborted_at_drain": 0,
        "accept_errors": 0,
    }
    assert d["uptime_s"] >= 0
    other = StreamStats(accepted=1, aborted_at_drain=2, peak=1, accept_errors=5).as_dict()
    total = merge_summaries([StreamStats().as_dict(), d, other, {}])
    assert (total["connections"], total["rejected"], total["peak_connections"]) == (4, 1, 3)
    assert (total["bytes_in"], total["bytes_out"], total["errors"]) == (10, 9, 1)
    assert (total["aborted_at_drain"], total["accept_errors"]) == (2, 5)
    assert list(total) == list(d)  # the fields in their order, each once


# --- TLS handshake failures ----------------------------------------------------------------


def test_every_failed_tls_handshake_says_why(
    run: Runner, serve: Serve, server_ssl: ssl.SSLContext
) -> None:
    # A connection lost mid-handshake reached the event as a bare ConnectionResetError()
    # and came out as "TLS: " (#13 item 23).
    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ssl) as h:
            address = (h.endpoint.host, h.endpoint.port)
            for n, first_bytes in enumerate(
                (b"", b"GET / HTTP/1.1\r\n\r\n", b"\x00\x01garbage\r\n")
            ):
                reader, writer = await asyncio.open_connection(*address)
                writer.write(first_bytes)
                writer.write_eof()
                with contextlib.suppress(ConnectionError):
                    await reader.read()  # until the server gives up on us
                writer.close()
                await h.wait_events("handshake_failed", n + 1)  # one at a time: in order
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.check_hostname = False
            old.verify_mode = ssl.CERT_NONE
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
            with pytest.raises((ssl.SSLError, OSError)):
                await asyncio.open_connection(*address, ssl=old)
            errors = [e["error"] for e in await h.wait_events("handshake_failed", 4)]
        assert errors[0] == (
            "TLS handshake failed: the client closed the connection before it ended"
            " (a client that does not trust the certificate does this)"
        )
        assert errors[1] == "TLS handshake failed: HTTP_REQUEST (plain HTTP sent to a TLS port)"
        assert errors[2] == "TLS handshake failed: WRONG_VERSION_NUMBER (not a TLS handshake)"
        assert errors[3].startswith("TLS handshake failed: ")
        assert all(e.removeprefix("TLS handshake failed:").strip() for e in errors)

    run(main())


# --- the lifecycle every server shares (a stream server, and the relay server) -----------


class Lifecycle(EventLog):
    """A server of one kind on 127.0.0.1 (an echo server, or a relay to one), its events,
    and raw-socket clients."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server
        server.on_event = self.record
        self.address = server.sock.getsockname()[:2]
        self.clients: list[socket.socket] = []

    async def connect(self) -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        self.clients.append(sock)
        await asyncio.get_running_loop().sock_connect(sock, self.address)
        return sock

    async def echoes(self, sock: socket.socket, data: bytes) -> bool:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, data)
        got = b""
        while len(got) < len(data) and (chunk := await loop.sock_recv(sock, 65536)):
            got += chunk
        return got == data

    async def ended(self, sock: socket.socket) -> bool:
        """True once the server closed or reset ``sock`` (reading to the end)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionResetError):
            while await loop.sock_recv(sock, 65536):
                pass
        return True


@contextlib.asynccontextmanager
async def lifecycle(kind: str, **options: Any) -> AsyncIterator[Lifecycle]:
    """A started :class:`StreamServer` (``stream``) or :class:`RelayServer` (``relay``, in front
    of an echo server); drained and closed on exit."""
    sock = make_listener(TCPEndpoint("127.0.0.1", 0))
    backend: StreamServer | None = None
    server: Server
    if kind == "stream":
        server = StreamServer(sock, EchoConnection, **options)
    else:
        backend = StreamServer(make_listener(TCPEndpoint("127.0.0.1", 0)), EchoConnection)
        backend.start()
        host, port = backend.sock.getsockname()[:2]
        upstream = FixedUpstream(TCPEndpoint(host, port), timeout=5)
        server = RelayServer(sock, upstream, RelayOptions(), **options)
    harness = Lifecycle(server)
    server.start()
    try:
        yield harness
    finally:
        for client in harness.clients:
            client.close()
        await server.drain(1.0)
        await server.close()
        if backend is not None:
            await backend.drain(1.0)


KINDS = pytest.mark.parametrize("kind", ["stream", "relay"])


@KINDS
def test_lifecycle_counts_a_connection_and_its_bytes(run: Runner, kind: str) -> None:
    async def main() -> None:
        async with lifecycle(kind) as h:
            client = await h.connect()
            assert await h.echoes(client, b"x" * 1000)
            assert (h.server.stats.accepted, h.server.stats.active) == (1, 1)
            client.close()
            await h.wait_events("disconnected" if kind == "stream" else "closed")
            stats = h.server.stats.as_dict()
            assert (stats["connections"], stats["peak_connections"]) == (1, 1)
            assert h.server.stats.active == 0 and not h.server.connections
            moved = ("bytes_in", "bytes_out") if kind == "stream" else ("bytes_up", "bytes_down")
            assert [stats[k] for k in moved] == [1000, 1000]

    run(main())


@KINDS
def test_lifecycle_caps_connections_and_makes_room_again(run: Runner, kind: str) -> None:
    async def main() -> None:
        async with lifecycle(kind, max_connections=1) as h:
            first = await h.connect()
            assert await h.echoes(first, b"first")
            # The kernel accepts; the server turns it away (a reset can beat connect's return).
            with contextlib.suppress(ConnectionResetError):
                assert await h.ended(await h.connect())
            (rejected,) = await h.wait_events("rejected")
            assert rejected["reason"]
            assert (h.server.stats.rejected, h.server.stats.accepted) == (1, 1)
            assert await h.echoes(first, b"still served")
            first.close()
            await h.wait_events("disconnected" if kind == "stream" else "closed")
            third = await h.connect()
            assert await h.echoes(third, b"room again")
            assert h.server.stats.peak == 1

    run(main())


@KINDS
def test_lifecycle_stop_accepting_refuses_new_clients_and_serves_the_rest(
    run: Runner, kind: str
) -> None:
    async def main() -> None:
        async with lifecycle(kind) as h:
            client = await h.connect()
            assert await h.echoes(client, b"before")
            h.server.stop_accepting()
            assert h.server.draining and h.server.sock.fileno() == -1
            with pytest.raises(ConnectionRefusedError):
                await h.connect()
            assert await h.echoes(client, b"after")

    run(main())


@KINDS
def test_lifecycle_drain_waits_for_connections_to_finish(run: Runner, kind: str) -> None:
    async def main() -> None:
        async with lifecycle(kind) as h:
            client = await h.connect()
            assert await h.echoes(client, b"in flight")
            drain = asyncio.ensure_future(h.server.drain(30))
            assert await h.echoes(client, b"served while draining")
            assert not drain.done()
            client.close()
            assert await drain == 0
            assert h.server.stats.aborted_at_drain == 0

    run(main())


@KINDS
def test_lifecycle_drain_cuts_what_is_left_at_the_timeout(run: Runner, kind: str) -> None:
    async def main() -> None:
        async with lifecycle(kind) as h:
            clients = [await h.connect() for _ in range(2)]
            for client in clients:
                assert await h.echoes(client, b"open")
            assert await h.server.drain(0.05) == 2
            for client in clients:
                assert await h.ended(client)
            assert h.server.stats.aborted_at_drain == 2
            key = "aborted_at_drain" if kind == "stream" else "cut_at_drain"
            assert h.server.stats.as_dict()[key] == 2

    run(main())


@KINDS
def test_lifecycle_drain_ends_at_once_when_forced(run: Runner, kind: str) -> None:
    async def main() -> None:
        async with lifecycle(kind) as h:
            client = await h.connect()
            assert await h.echoes(client, b"open")
            forced = asyncio.Event()
            drain = asyncio.ensure_future(h.server.drain(30, forced))
            assert await h.echoes(client, b"still open")
            forced.set()
            async with asyncio.timeout(5):  # not the 30 s drain timeout
                assert await drain == 1
            assert await h.ended(client)

    run(main())


@KINDS
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_until_signal_drains_on_a_stop_signal(run: Runner, kind: str, sig: int) -> None:
    async def main() -> None:
        async with lifecycle(kind) as h:
            h.server.acceptor.stop()  # serve_until_signal starts it again
            seen: list[Any] = []

            async def client_then_signal(server: Server) -> None:
                client = await h.connect()
                assert await h.echoes(client, b"served")
                os.kill(os.getpid(), sig)  # drains: the client is still served, then leaves
                await asyncio.wait_for(asyncio.shield(draining), 5)
                assert await h.echoes(client, b"while draining")
                client.close()

            draining: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            tasks: list[asyncio.Task[None]] = []
            interrupted = await serve_until_signal(
                h.server,
                drain_timeout=30,
                on_listening=lambda s: tasks.append(asyncio.ensure_future(client_then_signal(s))),
                on_draining=draining.set_result,
            )
            await tasks[0]
            seen.append(draining.result())
            assert interrupted is (sig == signal.SIGINT)
            assert seen == [1]
            assert h.server.stats.aborted_at_drain == 0
            assert h.server.sock.fileno() == -1

    run(main())

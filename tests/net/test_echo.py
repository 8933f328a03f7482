"""Tests for netkit.net.echo: echo servers (raw and framed) and the verifying client, on real
loopback TCP, Unix sockets and TLS, under both the asyncio loop and uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.buffers import frame_header
from netkit.errors import CheckFailed, ConnectError, ConnectionLost, OperationTimeout, TLSError
from netkit.net.connect import open_stream
from netkit.net.echo import (
    EchoClientConnection,
    EchoConnection,
    EchoResult,
    FramedEchoConnection,
    echo_once,
)
from netkit.net.server import ServerConnection
from netkit.net.sockets import SocketOptions
from netkit.net.tls import ClientTLS, ServerTLS, client_context, server_context

if TYPE_CHECKING:
    from conftest import Runner, Serve, TLSFiles


MIB = 1 << 20


def framed_factory(max_frame: int = 4 * MIB, **kwargs: object) -> object:
    return lambda: FramedEchoConnection(max_frame=max_frame, **kwargs)  # type: ignore[arg-type]


# --- raw and framed round trips ----------------------------------------------------------


def test_raw_echo(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            client = await h.connect()
            total = 0
            for seq, payload in enumerate([b"hello", b"x", bytes(range(256)) * 10]):
                result = await echo_once(client, seq, payload, framed=False, timeout=5)
                assert isinstance(result, EchoResult)
                assert (result.seq, result.size) == (seq, len(payload))
                assert result.rtt > 0
                total += len(payload)
            assert client.bytes_out == client.bytes_in == total
            client.close()
            (gone,) = await h.wait_events("disconnected")
            assert gone["bytes_in"] == gone["bytes_out"] == total
            assert "error" not in gone
            assert h.server.stats.bytes_in == h.server.stats.bytes_out == total
            assert h.server.stats.errors == 0

    run(main())


def test_framed_echo(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(framed_factory()) as h:
            client = await h.connect()
            payloads = [b"one", b"", b"three" * 1000, b"\x00" * 5000, b""]
            for seq, payload in enumerate(payloads):
                result = await echo_once(client, seq, payload, framed=True, timeout=5)
                assert result.size == len(payload)
            expected = sum(4 + len(p) for p in payloads)
            assert client.bytes_out == client.bytes_in == expected

    run(main())


def test_framed_echo_of_back_to_back_frames(run: Runner, serve: Serve) -> None:
    # Several frames in one write: the server echoes each, in order.
    async def main() -> None:
        async with serve(framed_factory()) as h:
            client = await h.connect()
            frames = [frame_header(len(p)) + p for p in (b"a", b"", b"bc" * 3000, b"d")]
            stream = b"".join(frames)
            waiter = client.expect(stream)
            client.write(stream)
            await waiter
            assert client.bytes_in == len(stream)

    run(main())


@pytest.mark.parametrize("framed", [False, True], ids=["raw", "framed"])
def test_one_mib_message(run: Runner, serve: Serve, framed: bool) -> None:
    payload = os.urandom(MIB)

    async def main() -> None:
        factory = framed_factory(2 * MIB) if framed else EchoConnection
        async with serve(factory) as h:
            client = await h.connect()
            result = await echo_once(client, 0, payload, framed=framed, timeout=8)
            assert result.size == MIB
            result = await echo_once(client, 1, payload[::-1], framed=framed, timeout=8)
            assert result.size == MIB

    run(main())


def test_raw_echo_larger_than_socket_buffers(run: Runner, serve: Serve) -> None:
    small = SocketOptions(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    payload = os.urandom(4 * MIB)

    async def main() -> None:
        async with serve(EchoConnection, listener_options=small) as h:
            client = await h.connect(options=small)
            result = await echo_once(client, 0, payload, framed=False, timeout=0.5)
            assert result.size == len(payload)

    run(main())


def test_unix_socket_echo(run: Runner, serve: Serve, tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    endpoint = UnixEndpoint(str(path))

    async def main() -> None:
        async with serve(framed_factory(), endpoint=endpoint) as h:
            assert h.server.address == f"unix:{path}"
            client = await h.connect()
            assert (await echo_once(client, 0, b"over unix", framed=True, timeout=5)).size == 9
        # close_listener removed the socket file it created
        assert not path.exists()

    run(main())


def test_tls_handshake_through_open_stream(run: Runner, serve: Serve, tls_files: TLSFiles) -> None:
    server_ctx, _ = server_context(ServerTLS(cert=tls_files.cert, key=tls_files.key))
    client_ctx = client_context(ClientTLS(enabled=True, cacert=tls_files.ca))

    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ctx) as h:
            client = await h.connect(ssl_context=client_ctx, server_hostname="localhost")
            ssl_object = client.transport.get_extra_info("ssl_object")
            assert ssl_object is not None
            assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
            assert ("DNS", "localhost") in ssl_object.getpeercert()["subjectAltName"]

    run(main())


# A TLS server used to pause reading for good right after the handshake (write limits of 0
# on an SSL transport that still held handshake output); these cover both TLS versions.
@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
@pytest.mark.parametrize("framed", [False, True], ids=["raw", "framed"])
def test_tls_echo(
    run: Runner, serve: Serve, tls_files: TLSFiles, framed: bool, version: str
) -> None:
    import ssl

    server_ctx, _ = server_context(ServerTLS(cert=tls_files.cert, key=tls_files.key))
    server_ctx.maximum_version = getattr(ssl.TLSVersion, version)
    client_ctx = client_context(ClientTLS(enabled=True, cacert=tls_files.ca))
    payload = os.urandom(200_000)

    async def main() -> None:
        factory = framed_factory() if framed else EchoConnection
        async with serve(factory, ssl_context=server_ctx) as h:
            client = await h.connect(ssl_context=client_ctx, server_hostname="localhost", timeout=2)
            assert client.transport.get_extra_info("ssl_object").version() == version.replace(
                "_", "."
            )
            await h.wait_events("connected")
            for seq, data in enumerate([b"over tls", payload, b"" if framed else b"!"]):
                result = await echo_once(client, seq, data, framed=framed, timeout=2)
                assert result.size == len(data)

    run(main())


# --- failures the server handles ---------------------------------------------------------


def test_frame_over_the_limit_drops_only_that_connection(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(framed_factory(max_frame=1024)) as h:
            good = await h.connect()
            await echo_once(good, 0, b"before", framed=True, timeout=5)
            bad = await h.connect()
            with pytest.raises(ConnectionLost):
                await echo_once(bad, 0, b"x" * 2048, framed=True, timeout=5)
            (gone,) = await h.wait_events("disconnected")
            assert gone["error"] == "frame of 2048 bytes exceeds the 1024-byte limit"
            assert h.server.stats.errors == 1
            # The frame's payload was never echoed; the other client is unaffected.
            assert gone["bytes_out"] == 0
            assert (await echo_once(good, 1, b"y" * 1024, framed=True, timeout=5)).size == 1024
            assert len(h.server.connections) == 1

    run(main())


def test_frame_over_the_limit_is_refused_from_its_header(run: Runner, serve: Serve) -> None:
    # Only the 4-byte header is sent: the server must not wait for the payload.
    async def main() -> None:
        async with serve(framed_factory(max_frame=1024)) as h:
            client = await h.connect()
            client.write(frame_header(10 * MIB))
            await client.closed
            (gone,) = await h.wait_events("disconnected")
            assert "exceeds the 1024-byte limit" in gone["error"]
            assert gone["bytes_in"] == 4

    run(main())


def test_idle_timeout_closes_a_silent_connection(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with serve(lambda: EchoConnection(idle_timeout=0.2)) as h:
            start = loop.time()
            client = await h.connect()
            await client.closed
            assert loop.time() - start >= 0.19
            assert client.eof  # a graceful close, not a reset
            assert client.error is None
            (gone,) = await h.wait_events("disconnected")
            assert "error" not in gone
            assert h.server.stats.errors == 0

    run(main())


def test_idle_timeout_framed(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(framed_factory(idle_timeout=0.2)) as h:
            client = await h.connect()
            assert (await echo_once(client, 0, b"once", framed=True, timeout=5)).size == 4
            await client.closed
            assert client.eof

    run(main())


def test_no_idle_timeout_by_default(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            client = await h.connect()
            await echo_once(client, 0, b"a", framed=False, timeout=5)
            (conn,) = h.server.connections
            assert conn.idle_timeout is None
            assert conn._idle is None

    run(main())


# --- the verifying client ----------------------------------------------------------------


class CorruptingEcho(ServerConnection):
    """Echoes with byte 3 flipped."""

    def data_ready(self) -> None:
        data = bytearray(self.rbuf.view())
        self.rbuf.consume(len(data))
        if len(data) > 3:
            data[3] ^= 0xFF
        self.write(bytes(data))


class DoubleEcho(ServerConnection):
    """Echoes everything twice."""

    def data_ready(self) -> None:
        data = bytes(self.rbuf.view())
        self.rbuf.consume(len(data))
        self.write(data + data)


class HalfEchoThenClose(ServerConnection):
    """Echoes the first half of what it gets, then closes."""

    def data_ready(self) -> None:
        data = bytes(self.rbuf.view())
        self.rbuf.consume(len(data))
        self.write(data[: len(data) // 2])
        self.close()


class Silent(ServerConnection):
    """Reads and drops everything."""

    def data_ready(self) -> None:
        self.rbuf.consume(len(self.rbuf))


def test_client_detects_a_corrupted_echo(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(CorruptingEcho) as h:
            client = await h.connect()
            with pytest.raises(CheckFailed, match=r"echo from 127\.0\.0\.1:\d+ differs at byte 3"):
                await echo_once(client, 0, b"abcdefgh", framed=False, timeout=5)

    run(main())


def test_client_detects_unexpected_extra_bytes(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(DoubleEcho) as h:
            client = await h.connect()
            # The extra bytes may arrive with the echo and abort the connection first.
            with contextlib.suppress(ConnectionLost):
                await echo_once(client, 0, b"abcd", framed=False, timeout=5)
            await client.closed
            assert isinstance(client.error, CheckFailed)
            assert "unexpected bytes arrived" in str(client.error)

    run(main())


def test_client_reports_a_short_echo(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(HalfEchoThenClose) as h:
            client = await h.connect()
            with pytest.raises(ConnectionLost, match=r"closed the connection after echoing 2 of 4"):
                await echo_once(client, 0, b"abcd", framed=False, timeout=5)
            assert client.eof

    run(main())


def test_client_times_out(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(Silent) as h:
            client = await h.connect()
            with pytest.raises(
                OperationTimeout, match=r"no complete echo of message 7 .* within 0.1s"
            ):
                await echo_once(client, 7, b"anyone?", framed=False, timeout=0.1)

    run(main())


# --- open_stream failures ----------------------------------------------------------------


def test_open_stream_refused(run: Runner) -> None:
    import socket

    async def main() -> None:
        with socket.socket() as bound:  # bound, not listening: connections are refused
            bound.bind(("127.0.0.1", 0))
            port = bound.getsockname()[1]
            with pytest.raises(ConnectError, match=f"connection refused by 127.0.0.1:{port}"):
                await open_stream(TCPEndpoint("127.0.0.1", port), EchoClientConnection, timeout=5)

    run(main())


def test_open_stream_missing_unix_socket(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "absent.sock"

    async def main() -> None:
        with pytest.raises(ConnectError, match=f"no socket at unix:{path}"):
            await open_stream(UnixEndpoint(str(path)), EchoClientConnection, timeout=5)

    run(main())


def test_open_stream_untrusted_certificate(run: Runner, serve: Serve, tls_files: TLSFiles) -> None:
    server_ctx, _ = server_context(ServerTLS(cert=tls_files.cert, key=tls_files.key))
    untrusting = client_context(ClientTLS(enabled=True))

    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ctx) as h:
            with pytest.raises(TLSError, match="not trusted") as info:
                await h.connect(ssl_context=untrusting, server_hostname="localhost")
            hint = info.value.describe(lambda name: f"--{name}")[1]
            assert hint is not None and "--cacert" in hint

    run(main())


def test_open_stream_insecure_accepts_untrusted(
    run: Runner, serve: Serve, tls_files: TLSFiles
) -> None:
    server_ctx, _ = server_context(ServerTLS(cert=tls_files.cert, key=tls_files.key))
    insecure = client_context(ClientTLS(enabled=True, insecure=True))

    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ctx) as h:
            # Neither the CA nor the name (127.0.0.1 vs. "example.test") is checked.
            client = await h.connect(ssl_context=insecure, server_hostname="example.test")
            assert client.transport.get_extra_info("ssl_object") is not None

    run(main())


def test_open_stream_applies_socket_options(run: Runner, serve: Serve) -> None:
    import socket

    async def main() -> None:
        async with serve(EchoConnection) as h:
            client = await h.connect(options=SocketOptions(nodelay=False, keepalive=True))
            sock = client.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1

    run(main())

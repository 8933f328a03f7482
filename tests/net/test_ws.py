"""Tests for netkit.net.ws: the WebSocket receive path on real loopback sockets, under both the
asyncio loop and uvloop — handshakes split across reads, bytes that are not HTTP, large heads,
memory that follows what arrived, and events handled in order before a failure."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import trustme

from netkit.core.addresses import WSURL, parse_endpoint
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.server import ServerHandshake
from netkit.errors import OperationTimeout, TLSError
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection, connect_ws
from netkit.net.ws_server import Mode, ModeConnection, Room
from tests.core.ws.test_ws_protocol import (
    IN_ORDER_CASES,
    PAYLOAD,
    PAYLOAD1,
    PAYLOAD2,
    autobahn_frame,
    chops_of,
)
from tests.net.conftest import ThreadListener, switching_protocols

if TYPE_CHECKING:
    from conftest import Runner, Serve

MIB = 1 << 20
KEY = base64.b64encode(os.urandom(16))
REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PAUSE = 0.05  # a deliberate delay between two writes, so that they arrive in two reads


def masked(opcode_byte: int, payload: bytes) -> bytes:
    """A client frame with a zero masking key (the payload goes as is), 7-bit length."""
    assert len(payload) < 126
    return bytes((opcode_byte, 0x80 | len(payload))) + bytes(4) + payload


def echo_server(
    events: list[tuple[str, dict[str, Any]]],
    *,
    max_size: int | None = MIB,
    handshake: ServerHandshake | None = None,
) -> Callable[[], ModeConnection]:
    room = Room()
    return lambda: ModeConnection(
        handshake or ServerHandshake(),
        mode=Mode.ECHO,
        room=room,
        log=lambda name, fields: events.append((name, fields)),
        log_messages=False,
        max_size=max_size,
        timeouts=WSTimeouts(ping_interval=None),
    )


def catch_loop_errors() -> list[dict[str, Any]]:
    """Record what the running loop reports ("Fatal error on transport", ...)."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    return errors


async def open_raw(h: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(h.endpoint.host, h.endpoint.port)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """An HTTP response with Content-Length: (head, body)."""
    head = await read_head(reader)
    lines = head.lower().split(b"\r\n")
    length = next(int(line[15:]) for line in lines if line.startswith(b"content-length:"))
    return head, await reader.readexactly(length)


# --- item 1: a handshake that arrives in more than one read -------------------------------


@pytest.mark.parametrize("split", [2, 20, 100])
def test_request_in_two_writes_is_upgraded(run: Runner, serve: Serve, split: int) -> None:
    async def main() -> None:
        errors = catch_loop_errors()
        events: list[tuple[str, dict[str, Any]]] = []
        async with serve(echo_server(events)) as h:
            reader, writer = await open_raw(h)
            writer.write(REQUEST[:split])
            await writer.drain()
            await asyncio.sleep(PAUSE)
            writer.write(REQUEST[split:])
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 101 ")
            writer.write(masked(0x81, b"hi"))
            assert await reader.readexactly(4) == b"\x81\x02hi"
            writer.close()
        assert errors == []

    run(main())


def test_request_and_first_frame_split_at_every_byte_over_loopback(
    run: Runner, serve: Serve
) -> None:
    """The handshake moved into core/ws/server.py: the request and the frame right behind it,
    in two writes apart at every split point, are upgraded and echoed, never reset."""
    stream = REQUEST + masked(0x81, b"hi")

    async def main() -> None:
        errors = catch_loop_errors()
        async with serve(echo_server([])) as h:
            for split in range(1, len(stream)):
                reader, writer = await open_raw(h)
                writer.write(stream[:split])
                await writer.drain()
                await asyncio.sleep(PAUSE / 5)
                writer.write(stream[split:])
                head = await read_head(reader)
                assert head.startswith(b"HTTP/1.1 101 "), (split, head)
                assert await reader.readexactly(4) == b"\x81\x02hi", split
                writer.close()
        assert errors == []

    run(main())


async def _split_101_server(
    splits: list[int], pause: float = PAUSE
) -> tuple[asyncio.Server, Callable[[], None]]:
    """A raw server that writes its 101 in pieces, PAUSE apart, then a text frame ``hi``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        response = switching_protocols(await read_head(reader)) + b"\x81\x02hi"
        start = 0
        for end in [*splits, len(response)]:
            writer.write(response[start:end])
            await writer.drain()
            await asyncio.sleep(pause)
            start = end
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.close


@pytest.mark.parametrize("splits", [[2], [20], [34], [34, 60, 100]])
def test_client_reads_a_101_written_in_pieces(run: Runner, splits: list[int]) -> None:
    async def main() -> None:
        errors = catch_loop_errors()
        server, stop = await _split_101_server(splits)
        port = server.sockets[0].getsockname()[1]
        url = parse_endpoint(f"ws://127.0.0.1:{port}/")
        assert isinstance(url, WSURL)
        conn = await connect_ws(
            url,
            lambda: WebSocketClientConnection(ClientHandshake(f"127.0.0.1:{port}")),
            ssl_context=None,
            timeout=5,
        )
        assert await conn.receive() == (True, b"hi")
        conn.abort()
        await conn.closed
        stop()
        assert errors == []

    run(main())


def test_client_reads_a_101_and_frame_split_at_every_byte(run: Runner) -> None:
    """ClientProtocol (core/ws/client.py) reads the 101 and the frame behind it however two
    writes split them over loopback."""

    async def main() -> None:
        errors = catch_loop_errors()
        # The 101: status line 34, Upgrade 20, Connection 21, Sec-WebSocket-Accept 22 + 28 + 2,
        # end of head 2; then the 4-byte frame.
        for split in range(1, 34 + 20 + 21 + 52 + 2 + 4):
            server, stop = await _split_101_server([split], pause=PAUSE / 5)
            port = server.sockets[0].getsockname()[1]
            url = parse_endpoint(f"ws://127.0.0.1:{port}/")
            assert isinstance(url, WSURL)
            conn = await connect_ws(
                url,
                functools.partial(WebSocketClientConnection, ClientHandshake(f"127.0.0.1:{port}")),
                ssl_context=None,
                timeout=5,
            )
            assert await conn.receive() == (True, b"hi"), split
            conn.abort()
            await conn.closed
            stop()
        assert errors == []

    run(main())


# --- ws-client (#13 item 4): one deadline for the whole opening ---------------------------


class SlowTLSServer(ThreadListener):
    """A wss server in a thread, slow on purpose: it waits ``tls_delay`` before the TLS
    handshake and ``upgrade_delay`` before answering 101 (None: it never answers)."""

    def __init__(
        self, ctx: ssl.SSLContext, *, tls_delay: float, upgrade_delay: float | None
    ) -> None:
        self.ctx, self.tls_delay, self.upgrade_delay = ctx, tls_delay, upgrade_delay
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(10)
            time.sleep(self.tls_delay)  # the slowness under test, not synchronisation
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                if self.upgrade_delay is not None and head:
                    time.sleep(self.upgrade_delay)
                    tls.sendall(switching_protocols(head))
                while tls.recv(4096):  # until the client goes
                    pass


async def open_wss(port: int, client_ssl: ssl.SSLContext, timeout: float) -> float:
    """Open ws:// over TLS to 127.0.0.1:port; how long it took (it raises on failure)."""
    url = parse_endpoint(f"wss://127.0.0.1:{port}/")
    assert isinstance(url, WSURL)
    started = time.perf_counter()
    conn = await connect_ws(
        url,
        lambda: WebSocketClientConnection(ClientHandshake(f"127.0.0.1:{port}")),
        ssl_context=client_ssl,
        server_hostname="localhost",
        timeout=timeout,
    )
    conn.abort()
    await conn.closed
    return time.perf_counter() - started


def test_the_open_timeout_bounds_tcp_tls_and_upgrade_together(
    run: Runner, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # Each stage alone takes less than the timeout; together they take more: time out.
    slow = SlowTLSServer(server_ssl, tls_delay=0.6, upgrade_delay=0.6)
    quick = SlowTLSServer(server_ssl, tls_delay=0.1, upgrade_delay=0.1)

    async def main() -> None:
        assert await open_wss(quick.port, client_ssl, timeout=1.0) < 1.0
        with pytest.raises(OperationTimeout, match=r"opening handshake .* timed out"):
            await open_wss(slow.port, client_ssl, timeout=1.0)

    try:
        run(main())
    finally:
        slow.stop()
        quick.stop()


def test_one_deadline_covers_a_slow_tls_handshake_and_the_upgrade(
    run: Runner, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # TLS takes 0.6 of the timeout and the upgrade is never answered: the error comes when
    # the one deadline passes, not a whole timeout after the TLS handshake.
    server = SlowTLSServer(server_ssl, tls_delay=0.6, upgrade_delay=None)

    async def main() -> None:
        started = time.perf_counter()
        with pytest.raises(OperationTimeout):
            await open_wss(server.port, client_ssl, timeout=1.0)
        elapsed = time.perf_counter() - started
        assert 0.9 <= elapsed < 1.45, elapsed

    try:
        run(main())
    finally:
        server.stop()


def test_keepalive_pongs_are_reported_with_their_rtt(run: Runner, serve: Serve) -> None:
    # ws-client --json reports each pong to a keepalive ping with its round-trip time; a
    # ping of the application's own (the prompt's /ping) is not one of them.
    async def main() -> None:
        events: list[tuple[str, dict[str, Any]]] = []
        async with serve(echo_server(events)) as h:
            url = parse_endpoint(f"ws://127.0.0.1:{h.endpoint.port}/")
            assert isinstance(url, WSURL)
            timeouts = WSTimeouts(ping_interval=0.05, ping_timeout=5)
            conn = await connect_ws(
                url,
                lambda: WebSocketClientConnection(ClientHandshake("x"), timeouts=timeouts),
                ssl_context=None,
                timeout=5,
            )
            rtts: asyncio.Queue[float] = asyncio.Queue()
            conn.on_keepalive_rtt = rtts.put_nowait
            own = await conn.ping(b"mine")
            assert own is not None and own > 0
            for _ in range(3):
                rtt = await rtts.get()
                assert 0 < rtt < 1
            assert conn.last_rtt is not None and conn.last_rtt > 0
            conn.abort()
            await conn.closed

    run(main())


# --- ws-client (#13 item 8): a client certificate refused is a TLS error --------------------


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
@pytest.mark.parametrize("client_cert", ["none", "untrusted"])
def test_a_refused_client_certificate_is_a_tls_error(
    run: Runner,
    ca: trustme.CA,
    server_cert: trustme.LeafCert,
    client_ssl: ssl.SSLContext,
    version: ssl.TLSVersion,
    client_cert: str,
) -> None:
    # Python's ssl module (OpenSSL) sends the alert, as openssl s_server does. Under TLS 1.3
    # it arrives after our side of the handshake is done: on the first read, in the upgrade.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.maximum_version = version
    if client_cert == "untrusted":
        trustme.CA().issue_cert("client.test").configure_cert(client_ssl)
    server = SlowTLSServer(server_ctx, tls_delay=0, upgrade_delay=None)
    expected = "certificate required" if version is ssl.TLSVersion.TLSv1_3 else "handshake failure"

    async def main() -> None:
        with pytest.raises(TLSError) as caught:
            await open_wss(server.port, client_ssl, timeout=5)
        if client_cert == "untrusted":
            assert "does not trust the CA of our client certificate (alert: unknown ca)" in str(
                caught.value
            )
        else:
            assert f"(alert: {expected})" in str(caught.value)
        hint = caught.value.describe(lambda name: f"--{name}")[1]
        assert hint is not None and "--cert" in hint

    try:
        run(main())
    finally:
        server.stop()


class BrokenHandshake(ModeConnection):
    """A connection whose handshake code has a bug (raises something unexpected)."""

    def on_handshake(self, event: object) -> None:
        raise RuntimeError("a bug")


def test_an_unexpected_error_fails_one_connection_not_the_loop(run: Runner, serve: Serve) -> None:
    # Nothing escapes buffer_updated: the connection is failed, no "Fatal error on transport".
    async def main() -> None:
        errors = catch_loop_errors()
        broken = True

        def factory() -> ModeConnection:
            cls = BrokenHandshake if broken else ModeConnection
            return cls(
                ServerHandshake(),
                mode=Mode.ECHO,
                room=Room(),
                log=None,
                log_messages=False,
                max_size=MIB,
                timeouts=WSTimeouts(ping_interval=None),
            )

        async with serve(factory) as h:
            reader, writer = await open_raw(h)
            writer.write(REQUEST)
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
            writer.close()
            broken = False
            reader, writer = await open_raw(h)
            writer.write(REQUEST)
            assert (await read_head(reader)).startswith(b"HTTP/1.1 101 ")
            writer.close()
        assert errors == []

    run(main())


# --- item 2: bytes that are not HTTP, a head too large ------------------------------------


def test_tls_client_hello_to_a_plain_server_is_400(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        errors = catch_loop_errors()
        events: list[tuple[str, dict[str, Any]]] = []
        async with serve(echo_server(events)) as h:
            reader, writer = await open_raw(h)
            writer.write(b"\x16\x03\x01\x00\x05hello")
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 400 ")
            assert b"not an HTTP request" in body
            writer.write_eof()
            assert await reader.read() == b""  # closed, not reset
            writer.close()
            (rejected,) = h.named("rejected")  # the server's event: counted in its summary
            assert rejected["status"] == 400
            assert h.server.stats.rejected == 1
        assert errors == []

    run(main())


class HalfCloseAfterReset(ModeConnection):
    """Half-closes after its 400 only once the client has read part of it and reset."""

    reset: threading.Event

    def linger_close(self) -> None:
        assert self.reset.wait(5)
        super().linger_close()


def test_a_client_that_resets_before_the_half_close_is_no_internal_error(
    run: Runner, serve: Serve
) -> None:
    # A client that reads the first bytes of the 400 and closes resets the connection; the
    # half-close after it (shutdown) then failed with ENOTCONN under asyncio, reported as
    # "internal error handling data: OSError(107, ...)" (seen fuzzing a live server).
    reset = threading.Event()

    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello")
            assert sock.recv(12) == b"HTTP/1.1 400"  # the rest unread: close sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.set()

    async def main() -> None:
        errors = catch_loop_errors()
        conns: asyncio.Queue[HalfCloseAfterReset] = asyncio.Queue()

        def factory() -> HalfCloseAfterReset:
            conn = HalfCloseAfterReset(
                ServerHandshake(), mode=Mode.ECHO, room=Room(), log=None, log_messages=False,
                max_size=MIB, timeouts=WSTimeouts(ping_interval=None),
            )  # fmt: skip
            conn.reset = reset
            conns.put_nowait(conn)
            return conn

        async with serve(factory) as h:
            thread = threading.Thread(target=client, args=(h.endpoint.port,))
            thread.start()
            conn = await asyncio.wait_for(conns.get(), 5)
            await asyncio.wait_for(conn.closed, 5)
            thread.join()
            (rejected,) = h.named("rejected")
            assert rejected["status"] == 400
        assert conn.error is None, conn.error  # the client went away: nothing to report
        assert errors == []

    run(main())


@pytest.mark.parametrize(
    "head",
    [
        # one header line of 70 KiB (past websockets' 8 KiB line limit)
        b"GET / HTTP/1.1\r\nCookie: " + b"a" * (70 << 10) + b"\r\n\r\n",
        # 200 header lines, 80 KiB (past websockets' 128 headers)
        b"GET / HTTP/1.1\r\n" + (b"X-Pad: " + b"b" * 400 + b"\r\n") * 200 + b"\r\n",
    ],
    ids=["long-line", "many-headers"],
)
@pytest.mark.parametrize("max_size", [MIB, 1024])
def test_a_head_over_64k_is_431_then_closed(
    run: Runner, serve: Serve, head: bytes, max_size: int
) -> None:
    # Also under a --max-size smaller than the head: the head has its own limits.
    async def main() -> None:
        errors = catch_loop_errors()
        async with serve(echo_server([], max_size=max_size)) as h:
            reader, writer = await open_raw(h)
            writer.write(head)  # all of it: the server must not reset us for unread bytes
            await writer.drain()
            response, _ = await read_response(reader)
            assert response.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
        assert errors == []

    run(main())


def test_a_large_valid_head_is_upgraded_under_a_small_max_size(run: Runner, serve: Serve) -> None:
    # 100 headers of 700 bytes (70 KiB) are within websockets' limits: upgraded.
    padding = b"".join(b"X-Pad-%d: " % i + b"c" * 690 + b"\r\n" for i in range(100))
    request = REQUEST[:-2] + padding + b"\r\n"

    async def main() -> None:
        async with serve(echo_server([], max_size=1024)) as h:
            reader, writer = await open_raw(h)
            writer.write(request)
            assert (await read_head(reader)).startswith(b"HTTP/1.1 101 ")
            writer.write(masked(0x82, b"ok"))
            assert await reader.readexactly(4) == b"\x82\x02ok"
            writer.close()

    run(main())


# --- item 3: memory follows the bytes that arrived ----------------------------------------


class RecordingConnection(ModeConnection):
    """An echo connection that signals every read, for tests to wait on (no sleeping)."""

    def __init__(self, read: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(ServerHandshake(), **kwargs)
        self.read = read

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        self.read.set()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("declared", "max_size", "clients"), [(1 << 20, MIB, 50), (10**7, 16 * MIB, 4)]
)
def test_declared_sizes_do_not_allocate(
    run: Runner, serve: Serve, declared: int, max_size: int, clients: int
) -> None:
    # Issue 13 item 3: 200 connections declaring ~1 MiB with 17 bytes each grew the server by
    # 1,080 KiB each; each must hold what it sent. (Few clients for the large limit: a
    # regression would allocate max_size each.)

    async def main() -> None:
        read = asyncio.Event()
        conns: list[RecordingConnection] = []

        def factory() -> RecordingConnection:
            conn = RecordingConnection(
                read,
                mode=Mode.ECHO,
                room=Room(),
                log=None,
                log_messages=False,
                max_size=max_size,
                timeouts=WSTimeouts(ping_interval=None),
            )
            conns.append(conn)
            return conn

        header = b"\x82\xff" + declared.to_bytes(8, "big") + bytes(4)
        sent = len(REQUEST) + len(header) + 17
        async with serve(factory) as h:
            writers = []
            for _ in range(clients):
                reader, writer = await open_raw(h)
                writer.write(REQUEST)
                await read_head(reader)
                writer.write(header)
                writers.append(writer)

            async def server_read(total: int) -> None:
                while len(conns) < clients or any(c.bytes_in < total for c in conns):
                    read.clear()
                    await read.wait()

            # The payload in a later read: the next get_buffer sees the header.
            await server_read(sent - 17)
            for writer in writers:
                writer.write(b"x" * 17)
            await server_read(sent)
            # What arrived (header and 17 bytes), not the declared size nor a 64 KiB chunk.
            capacities = [c.rbuf.capacity for c in conns]
            assert max(capacities) <= len(header) + 17, capacities
            for writer in writers:
                writer.close()

    run(main())


# --- item 25: Autobahn strictness over a real socket --------------------------------------


async def upgraded(
    h: Any, extensions: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await open_raw(h)
    request = REQUEST
    if extensions:
        request = request[:-2] + b"Sec-WebSocket-Extensions: " + extensions + b"\r\n\r\n"
    writer.write(request)
    assert (await read_head(reader)).startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame with a 7-bit length: (first byte, payload)."""
    b0, length = await asyncio.wait_for(reader.readexactly(2), 2)
    return b0, await reader.readexactly(length)


@pytest.mark.parametrize("case", IN_ORDER_CASES)
def test_ws_server_echoes_before_failing(run: Runner, serve: Serve, case: str) -> None:
    frames, echo = IN_ORDER_CASES[case]

    async def main() -> None:
        errors = catch_loop_errors()
        async with serve(echo_server([])) as h:
            reader, writer = await upgraded(h)
            writer.write(b"".join(frames))  # one write: one read on loopback
            assert await read_frame(reader) == (0x81, echo)
            b0, payload = await read_frame(reader)
            assert b0 == 0x88 and int.from_bytes(payload[:2], "big") == 1002
            assert await reader.read() == b"", "nothing after the close frame (no pong)"
            writer.close()
        assert errors == []

    run(main())


@pytest.mark.parametrize(
    ("case", "cuts"),
    [("6.4.3", [len(PAYLOAD1), len(PAYLOAD1 + PAYLOAD2)]), ("6.4.4", [12, 13])],
)
def test_ws_server_fails_fast_on_invalid_utf8(
    run: Runner, serve: Serve, case: str, cuts: list[int]
) -> None:
    first, second, _third = chops_of(autobahn_frame(1, PAYLOAD), cuts)

    async def main() -> None:
        async with serve(echo_server([])) as h:
            reader, writer = await upgraded(h)
            writer.write(first)
            await writer.drain()
            await asyncio.sleep(PAUSE)
            writer.write(second)  # the third chop is never sent: the close must come first
            b0, payload = await read_frame(reader)
            assert b0 == 0x88 and int.from_bytes(payload[:2], "big") == 1007
            writer.close()

    run(main())


# --- item 7: the close event reports the code sent when the server failed the connection ---


def test_decompression_bomb_close_event_reports_1009(run: Runner, serve: Serve) -> None:
    bomb = zlib.compressobj(wbits=-15)
    data = bomb.compress(bytes(4 * MIB)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4]  # RFC 7692 7.2.1: the 00 00 ff ff tail is left off
    assert len(data) < 65536
    frame = b"\xc2\xfe" + len(data).to_bytes(2, "big") + bytes(4) + data  # RSV1, binary

    async def main() -> None:
        events: list[tuple[str, dict[str, Any]]] = []
        handshake = ServerHandshake(deflate=DeflateParams())
        async with serve(echo_server(events, handshake=handshake)) as h:
            reader, writer = await upgraded(h, b"permessage-deflate")
            writer.write(frame)
            b0, payload = await read_frame(reader)
            assert b0 == 0x88 and int.from_bytes(payload[:2], "big") == 1009
            writer.write(b"\x88\x82" + bytes(4) + payload[:2])  # the client's echo
            assert await reader.read() == b""
            writer.close()
            await h.wait_events("disconnected")
        (closed,) = [fields for name, fields in events if name == "close"]
        assert closed["code"] == 1009, closed
        assert closed["sent_code"] == 1009

    run(main())


# --- item 7: refusals are HTTP answers, events and counts ----------------------------------


def test_over_max_connections_is_503_with_retry_after(run: Runner, serve: Serve) -> None:
    # Was a bare TCP close with no event; websocketd and HAProxy answer 503.
    async def main() -> None:
        errors = catch_loop_errors()
        async with serve(echo_server([]), max_connections=1) as h:
            reader1, writer1 = await upgraded(h)
            reader2, writer2 = await open_raw(h)
            writer2.write(REQUEST)
            head, body = await read_response(reader2)
            assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
            assert b"\r\nRetry-After: 1\r\n" in head
            assert body == b"503 Service Unavailable: at the connection limit (1)\n"
            writer2.write_eof()
            assert await reader2.read() == b""  # closed after the answer, not reset
            writer2.close()
            (rejected,) = h.named("rejected")
            assert rejected["status"] == 503
            assert rejected["reason"] == "at the connection limit (1)"
            assert (h.server.stats.accepted, h.server.stats.rejected) == (1, 1)
            writer1.write(masked(0x81, b"hi"))  # the first client is unaffected
            assert await reader1.readexactly(4) == b"\x81\x02hi"
            writer1.close()
        assert errors == []

    run(main())


def test_http_refusals_count_as_rejected(run: Runner, serve: Serve) -> None:
    # The summary said "rejected: 0" after HTTP 4xx answers.
    handshake = ServerHandshake(paths={"/chat"}, origins={"https://app.test"})
    requests = {
        404: REQUEST,  # GET /, not /chat
        405: b"POST /health HTTP/1.1\r\nHost: x\r\n\r\n",
        403: REQUEST.replace(b"GET / ", b"GET /chat "),  # no Origin
        400: b"\x16\x03\x01\x00\x05hello",
    }

    async def main() -> None:
        async with serve(echo_server([], handshake=handshake)) as h:
            for status, request in requests.items():
                reader, writer = await open_raw(h)
                writer.write(request)
                head, _ = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 %d " % status), head
                if status == 405:
                    assert b"\r\nAllow: GET, HEAD\r\n" in head
                writer.close()
            events = await h.wait_events("rejected", len(requests))
            assert [e["status"] for e in events] == list(requests)
            assert h.server.stats.rejected == len(requests)
            health = await open_raw(h)
            health[1].write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(health[0]))[1] == b"ok\n"
            health[1].close()
            assert h.server.stats.rejected == len(requests)  # a health check is no refusal

    run(main())


def test_drain_answers_503_to_a_handshake_in_progress(run: Runner, serve: Serve) -> None:
    # Was a reset: a client half-way through its handshake got nothing it could act on.
    async def main() -> None:
        errors = catch_loop_errors()
        async with serve(echo_server([])) as h:
            reader, writer = await open_raw(h)
            writer.write(REQUEST[:20])  # the rest never comes before the drain
            await h.wait_events("connected")
            drain = asyncio.create_task(h.server.drain(5))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in head
            assert body.endswith(b": shutting down\n")
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await drain  # ends when the client has read its answer, not at the timeout
            assert h.server.stats.aborted_at_drain == 0
            (rejected,) = h.named("rejected")
            assert (rejected["status"], rejected["reason"]) == (503, "shutting down")
        assert errors == []

    run(main())


def test_ws_server_modes_are_an_enum() -> None:
    assert [m.value for m in Mode] == ["echo", "broadcast", "sink"]
    assert [m for m in Mode if m.single_process] == [Mode.BROADCAST]

"""netkit's MemoryBIO TLS layer under StreamServer and the relay: alerts, transfers, closes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl

import pytest
import trustme

from netkit.net.echo import EchoConnection
from netkit.net.protocols import StreamProtocol
from netkit.net.relay import RelayOptions
from netkit.net.tls_layer import TLSTransport, connect_tls
from tests.net.conftest import Runner, Serve
from tests.net.test_relay import read_until_eof, relay_to

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def mtls_server(ca: trustme.CA, server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server context that requires a client certificate from the trustme CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(ctx)
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _without_certificate(address: tuple[str, int], ctx: ssl.SSLContext) -> ssl.SSLError:
    """Connect with no client certificate; the SSLError the client ends with."""
    with socket.create_connection(address, timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"hello")
                tls.recv(5)  # TLS 1.3: the server's verdict arrives after our Finished
        except ssl.SSLError as exc:
            return exc
    raise AssertionError("the server accepted a client without a certificate")


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_a_server_sends_the_alert_when_a_client_certificate_is_missing(
    run: Runner[None],
    serve: Serve,
    mtls_server: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
    version: str,
) -> None:
    # openssl s_server answers a missing certificate with an alert; the client then knows
    # why instead of seeing a bare close ("unexpected EOF").
    client_ssl.maximum_version = ssl.TLSVersion[version]
    expected = {
        "TLSv1_3": "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSv1_2": "SSLV3_ALERT_HANDSHAKE_FAILURE",
    }[version]

    async def main() -> None:
        async with serve(EchoConnection, ssl_context=mtls_server) as harness:
            address = (harness.endpoint.host, harness.endpoint.port)
            loop = asyncio.get_running_loop()
            exc = await loop.run_in_executor(None, _without_certificate, address, client_ssl)
            assert exc.reason == expected, exc
            (failed,) = await harness.wait_events("handshake_failed")
            assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in failed["error"]

    run(main())


def test_a_relay_sends_the_alert_when_a_client_certificate_is_missing(
    run: Runner[None], serve: Serve, mtls_server: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async def main() -> None:
        async with (
            serve(EchoConnection) as backend,
            relay_to(backend.endpoint, RelayOptions(client_tls=mtls_server)) as relay,
        ):
            loop = asyncio.get_running_loop()
            exc = await loop.run_in_executor(None, _without_certificate, relay.address, client_ssl)
            assert exc.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED", exc
            (closed,) = await relay.wait_events("closed")
            assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in closed["end"]

    run(main())


class Collector(StreamProtocol):
    """A client that keeps what it receives and notes the EOF."""

    pause_reading_on_backpressure = False

    def __init__(self) -> None:
        super().__init__()
        self.received = bytearray()
        self.eof = asyncio.get_running_loop().create_future()
        self._arrived = asyncio.Event()

    def data_ready(self) -> None:
        self.received += self.rbuf.view()
        self.rbuf.consume(len(self.rbuf))
        self._arrived.set()

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            self._arrived.clear()
            await self._arrived.wait()

    def on_eof(self) -> bool | None:
        if not self.eof.done():
            self.eof.set_result(None)
        return True

    def on_close(self, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_exception(exc or ConnectionResetError("closed without EOF"))


async def tls_client(address: tuple[str, int], ctx: ssl.SSLContext) -> Collector:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, address)
    _, protocol = await connect_tls(sock, Collector, ctx, server_hostname="localhost")
    assert isinstance(protocol, Collector)
    return protocol


@pytest.mark.parametrize("size", [1, 5, 1 << 20, 24 << 20], ids=["1B", "5B", "1MiB", "24MiB"])
def test_round_trips_through_a_tls_echo_server_with_a_half_close(
    run: Runner[None],
    serve: Serve,
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
    size: int,
) -> None:
    # The client sends, half-closes (close_notify, reading on), and gets every byte back
    # before the server's own close_notify.
    payload = os.urandom(size)

    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ssl) as harness:
            client = await tls_client((harness.endpoint.host, harness.endpoint.port), client_ssl)
            assert client.transport is not None
            assert client.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
            client.write(payload)
            client.transport.write_eof()
            await client.eof
            assert bytes(client.received) == payload
            (gone,) = await harness.wait_events("disconnected")
            assert gone["bytes_in"] == gone["bytes_out"] == size
            client.close()

    run(main())


def test_the_server_side_exposes_the_tls_session(
    run: Runner[None], serve: Serve, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ssl) as harness:
            client = await tls_client((harness.endpoint.host, harness.endpoint.port), client_ssl)
            await harness.wait_events("connected")
            (conn,) = harness.server.connections
            transport = conn.transport
            assert isinstance(transport, TLSTransport)
            assert transport.get_extra_info("ssl_object").version() == "TLSv1.3"
            assert transport.get_extra_info("peername") is not None
            assert transport.get_extra_info("socket") is not None
            client.close()
            await harness.wait_events("disconnected")

    run(main())


def test_a_server_close_is_a_clean_eof_for_the_client(
    run: Runner[None], serve: Serve, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # close() sends close_notify after what was written: a TLS client sees a clean EOF.
    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ssl) as harness:
            address = (harness.endpoint.host, harness.endpoint.port)
            client = await tls_client(address, client_ssl)
            client.write(b"last words")
            await client.wait_for(10)  # echoed: the server has nothing left to send
            (conn,) = harness.server.connections
            conn.close()
            await client.eof
            assert bytes(client.received) == b"last words"

    run(main())


def test_a_tls_client_that_half_closes_still_gets_the_reply(
    run: Runner[None], serve: Serve, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # Item 10, the client side: a TLS 1.3 client's close_notify is its FIN, not a close; the
    # relay passes it on and keeps sending the reply.
    payload = os.urandom(10_000_000)

    async def main() -> None:
        async with (
            serve(EchoConnection) as backend,
            relay_to(backend.endpoint, RelayOptions(client_tls=server_ssl)) as relay,
        ):
            client = await tls_client(relay.address, client_ssl)
            client.write(payload)
            assert client.transport is not None
            client.transport.write_eof()
            await client.eof
            assert len(client.received) == len(payload)
            assert bytes(client.received) == payload
            client.close()
            (closed,) = await relay.wait_events("closed")
            assert closed["end"] == "closed" and "undelivered" not in closed

    run(main())


def test_a_malformed_client_hello_is_answered_with_an_alert(
    run: Runner[None], serve: Serve, server_ssl: ssl.SSLContext
) -> None:
    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ssl) as harness:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, (harness.endpoint.host, harness.endpoint.port))
            await loop.sock_sendall(sock, b"\x16\x03\x01\x00\x05hello")
            (failed,) = await harness.wait_events("handshake_failed")
            assert failed["error"].startswith("TLS handshake failed: ")
            reply = await read_until_eof(sock)
            assert reply[:1] == b"\x15", reply  # a TLS alert record, then the close
            sock.close()

    run(main())


def test_a_corrupt_record_ends_the_relay_as_an_error_not_a_clean_close(
    run: Runner[None], serve: Serve, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # After the handshake the client sends an application-data record whose bytes cannot be
    # authenticated: the layer aborts the connection, and the relay must not call that a
    # clean close ("closed") — the client's stream was cut, not ended.
    def client(address: tuple[str, int]) -> None:
        raw = socket.create_connection(address, timeout=5)
        with raw, client_ssl.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"fine")
            assert tls.recv(4) == b"fine"
            # type 23 (application data), TLS 1.2 on the wire, 64 bytes of garbage, written
            # under the TLS object
            raw_fd = os.dup(tls.fileno())
            try:
                os.write(raw_fd, b"\x17\x03\x03\x00\x40" + os.urandom(64))
            finally:
                os.close(raw_fd)
            with contextlib.suppress(OSError):
                tls.recv(1)  # the relay's alert or close

    async def main() -> None:
        async with (
            serve(EchoConnection) as backend,
            relay_to(backend.endpoint, RelayOptions(client_tls=server_ssl)) as relay,
        ):
            await asyncio.to_thread(client, relay.address)
            (closed,) = await relay.wait_events("closed")
            assert closed["end"] == "TLS error from client: DECRYPTION_FAILED_OR_BAD_RECORD_MAC", (
                closed
            )

    run(main())

"""Tests for netkit.net.connect: connect_raw, open_stream's retry with back-off, and the
translation of connect errors (real sockets on loopback, Unix sockets in tmp_path, trustme)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.errors import (
    ConnectError,
    ConnectionLost,
    OperationTimeout,
    ResourceExhausted,
    TLSError,
)
from netkit.net.connect import Backoff, connect_raw, open_stream, translate_connect_error
from netkit.net.echo import EchoClientConnection, EchoConnection, echo_once
from netkit.net.sockets import SocketOptions, create_tcp_listener
from tests.net.conftest import Runner, Serve, descriptor_limit, hog_descriptors

if TYPE_CHECKING:
    from conftest import Handshake


def closed_port() -> int:
    """A loopback port nobody listens on (bound, never listening: it stays ours)."""
    listener = create_tcp_listener(TCPEndpoint("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    listener.close()
    return port


# --- connect_raw -------------------------------------------------------------------------


def test_connect_raw_returns_a_connected_non_blocking_socket(
    run: Runner[None], serve: Serve
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with serve(EchoConnection) as server:
            sock = await connect_raw(
                server.endpoint, timeout=5, options=SocketOptions(rcvbuf=1 << 17)
            )
            with sock:
                assert not sock.getblocking()
                # Set before the connect, so the window the kernel advertises can use it.
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 17
                await loop.sock_sendall(sock, b"raw")
                assert await loop.sock_recv(sock, 16) == b"raw"

    run(main())


def test_connect_raw_unix(run: Runner[None], serve: Serve, tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with serve(EchoConnection, endpoint=UnixEndpoint(str(tmp_path / "s"))) as server:
            with await connect_raw(server.endpoint, timeout=5) as sock:
                assert sock.family == socket.AF_UNIX
                await loop.sock_sendall(sock, b"unix")
                assert await loop.sock_recv(sock, 16) == b"unix"

    run(main())


def test_connect_raw_resolves_a_name(run: Runner[None], serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as server:
            port = server.endpoint.port
            with await connect_raw(TCPEndpoint("localhost", port), timeout=5) as sock:
                assert sock.getpeername()[1] == port

    run(main())


def test_connect_raw_refused(run: Runner[None]) -> None:
    port = closed_port()

    async def main() -> None:
        with pytest.raises(ConnectError, match=f"connection refused by 127.0.0.1:{port}"):
            await connect_raw(TCPEndpoint("127.0.0.1", port), timeout=5)

    run(main())


def test_connect_raw_missing_unix_socket(run: Runner[None], tmp_path: Path) -> None:
    path = tmp_path / "none.sock"

    async def main() -> None:
        with pytest.raises(ConnectError, match="no socket at unix:"):
            await connect_raw(UnixEndpoint(str(path)), timeout=5)

    run(main())


def test_connect_raw_times_out(run: Runner[None]) -> None:
    # A listener whose backlog is full: the kernel drops further SYNs, the connect hangs.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        port = listener.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            for _ in range(8):  # fill the accept queue (backlog 0 still admits one or two)
                sock = socket.socket()
                sock.setblocking(False)
                fillers.append(sock)
                try:
                    async with asyncio.timeout(0.2):
                        await loop.sock_connect(sock, ("127.0.0.1", port))
                except TimeoutError:
                    break
            else:
                pytest.skip("the kernel accepted every connect: no full backlog to time out on")
            with pytest.raises(OperationTimeout, match=f"timed out connecting to 127.0.0.1:{port}"):
                await connect_raw(TCPEndpoint("127.0.0.1", port), timeout=0.2)
        finally:
            for sock in fillers:
                sock.close()
            listener.close()

    run(main())


def test_connect_raw_out_of_descriptors_is_a_local_error(run: Runner[None]) -> None:
    port = closed_port()

    async def main() -> None:
        hogged: list[int] = []
        try:
            with descriptor_limit(64):
                hogged.extend(hog_descriptors())
                with pytest.raises(ResourceExhausted, match="cannot open a socket to"):
                    await connect_raw(TCPEndpoint("127.0.0.1", port), timeout=5)
        finally:
            for fd in hogged:
                os.close(fd)

    run(main())


# --- open_stream and the back-off ---------------------------------------------------------


def test_backoff_doubles_to_its_limit_and_resets() -> None:
    backoff = Backoff(first=0.05, limit=0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05


def test_open_stream_retries_until_the_service_is_up(run: Runner[None], tmp_path: Path) -> None:
    # The socket file appears only after the first attempts failed: open_stream keeps trying
    # (tcp-echo client --retry) and connects once the server listens.
    path = tmp_path / "late.sock"
    endpoint = UnixEndpoint(str(path))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        attempts = 0
        real = loop.sock_connect

        async def counting(sock: socket.socket, address: object) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 3:  # the service comes up after the third failure
                server = socket.socket(socket.AF_UNIX)
                server.bind(str(path))
                server.listen()
                started.append(server)
            await real(sock, address)

        started: list[socket.socket] = []
        loop.sock_connect = counting  # type: ignore[method-assign]
        try:
            conn = await open_stream(endpoint, EchoClientConnection, timeout=5, retry_for=5)
        finally:
            del loop.sock_connect
        assert attempts == 3
        conn.abort()
        for server in started:
            server.close()

    run(main())


def test_open_stream_gives_up_after_retry_for(run: Runner[None]) -> None:
    port = closed_port()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ConnectError, match="connection refused"):
            await open_stream(
                TCPEndpoint("127.0.0.1", port), EchoClientConnection, timeout=5, retry_for=0.3
            )
        assert 0.1 <= loop.time() - start < 2

    run(main())


def test_open_stream_does_not_retry_a_failed_handshake(run: Runner[None], serve: Serve) -> None:
    # What the opening handshake raised is its verdict: never retried, never re-worded.
    calls = 0

    async def refuse(_protocol: object) -> None:
        nonlocal calls
        calls += 1
        raise ConnectError("the upgrade was refused")

    async def main() -> None:
        async with serve(EchoConnection) as server:
            with pytest.raises(ConnectError, match=r"^the upgrade was refused$"):
                await open_stream(
                    server.endpoint,
                    EchoClientConnection,
                    timeout=5,
                    retry_for=5,
                    handshake=refuse,  # type: ignore[arg-type]
                )
        assert calls == 1

    run(main())


def test_open_stream_by_name_and_echo(run: Runner[None], serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as server:
            endpoint = TCPEndpoint("localhost", server.endpoint.port)
            conn = await open_stream(endpoint, EchoClientConnection, timeout=5)
            assert isinstance(conn, EchoClientConnection)
            result = await echo_once(conn, 1, b"by name", framed=False, timeout=5)
            assert result.size == 7
            conn.close()
            await conn.closed

    run(main())


def test_open_stream_tls_checks_the_host_name_by_default(
    run: Runner[None], serve: Serve, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # With no server_hostname, the endpoint's host is the name checked (127.0.0.2 is not in
    # the certificate; 127.0.0.1 is).
    async def main() -> None:
        async with serve(EchoConnection, ssl_context=server_ssl) as server:
            conn = await open_stream(
                server.endpoint, EchoClientConnection, ssl_context=client_ssl, timeout=5
            )
            conn.close()
            with pytest.raises(TLSError, match="is for another name"):
                await open_stream(
                    server.endpoint,
                    EchoClientConnection,
                    ssl_context=client_ssl,
                    server_hostname="other.test",
                    timeout=5,
                )

    run(main())


# --- connect error translation -----------------------------------------------------------


def test_translate_refused_from_a_real_connect() -> None:
    # A bound socket that does not listen: connecting is refused, and the port stays ours.
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        with socket.socket() as client:
            client.settimeout(5)
            with pytest.raises(ConnectionRefusedError) as info:
                client.connect(("127.0.0.1", port))
    error = translate_connect_error(info.value, f"127.0.0.1:{port}")
    assert isinstance(error, ConnectError)
    assert str(error) == f"connection refused by 127.0.0.1:{port}"


def test_translate_refused_after_closing_a_listener() -> None:
    listener = create_tcp_listener(TCPEndpoint("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with socket.socket() as client:
        client.settimeout(5)
        try:
            client.connect(("127.0.0.1", port))
        except ConnectionRefusedError as exc:
            error = translate_connect_error(exc, f"127.0.0.1:{port}")
        else:  # pragma: no cover - another process took the port in between
            pytest.skip("the closed port was reused by someone else")
    assert isinstance(error, ConnectError)
    assert "connection refused by 127.0.0.1:" in str(error)


def test_translate_missing_socket_file(tmp_path: Path) -> None:
    path = tmp_path / "nobody.sock"
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(FileNotFoundError) as info:
        client.connect(str(path))
    error = translate_connect_error(info.value, f"unix:{path}")
    assert isinstance(error, ConnectError)
    assert str(error) == f"no socket at unix:{path}"


def test_translate_stale_socket_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(ConnectionRefusedError) as info:
        client.connect(str(path))
    error = translate_connect_error(info.value, f"unix:{path}")
    assert (
        str(error) == f"connection refused by unix:{path} (no server listens on that socket file)"
    )


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_translate_a_path_that_is_no_socket(tmp_path: Path, kind: str) -> None:
    # The kernel refuses a connect to a directory or a plain file with ECONNREFUSED, as if a
    # server had gone: say what the path is instead.
    path = tmp_path / kind
    path.mkdir() if kind == "directory" else path.write_bytes(b"")
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(ConnectionRefusedError) as info:
        client.connect(str(path))
    error = translate_connect_error(info.value, f"unix:{path}")
    expected = "it is a directory, not a socket" if kind == "directory" else "it is not a socket"
    assert str(error) == f"connection refused by unix:{path} ({expected})"


def test_translate_tls_verification_failure(
    tls_handshake: Handshake, server_ssl: ssl.SSLContext
) -> None:
    # The default client context trusts the system CAs, not our trustme CA.
    client = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        tls_handshake(server_ssl, client)
    error = translate_connect_error(info.value, "localhost:443")
    assert isinstance(error, TLSError)
    assert str(error).startswith("TLS certificate of localhost:443 not trusted: ")
    assert "self" in str(error) or "issuer" in str(error)  # OpenSSL's verify message
    hint = error.describe(lambda name: f"--{name}")[1]  # as the command line shows it
    assert hint is not None and "--cacert" in hint and "--insecure" in hint


@pytest.mark.parametrize("name", ["other.test", "127.0.0.2"])
def test_translate_tls_name_mismatch_suggests_sni(
    tls_handshake: Handshake, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext, name: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        tls_handshake(server_ssl, client_ssl, server_hostname=name)
    error = translate_connect_error(info.value, f"{name}:443")
    assert isinstance(error, TLSError)
    assert str(error).startswith(f"TLS certificate of {name}:443 is for another name: ")
    assert name in str(error)
    # The CA is trusted: the cure is --sni, not --cacert or --insecure.
    hint = error.describe(lambda name: {"server_hostname": "--sni"}.get(name, name))[1]
    assert hint is not None and "--sni" in hint
    assert "cacert" not in hint and "insecure" not in hint


def test_translate_tls_handshake_failure_from_a_real_handshake() -> None:
    # A TLS client talking to a plain-text server: OpenSSL sees no TLS record.
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
        b.settimeout(5)
        client = ssl.create_default_context()
        with pytest.raises(ssl.SSLError) as info:
            client.wrap_socket(b, server_hostname="localhost")
    assert not isinstance(info.value, ssl.SSLCertVerificationError)
    error = translate_connect_error(info.value, "localhost:443")
    assert isinstance(error, TLSError)
    assert str(error) == f"TLS handshake with localhost:443 failed: {info.value.reason}"
    assert info.value.reason == "WRONG_VERSION_NUMBER"


def test_translate_ssl_error_without_reason() -> None:
    exc = ssl.SSLError(1, "Closed before TLS handshake with data in receive buffer")
    error = translate_connect_error(exc, "T")
    assert isinstance(error, TLSError)
    assert str(error).startswith("TLS handshake with T failed")


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), ConnectError,
         "cannot resolve T: Name or service not known"),
        (TimeoutError(), OperationTimeout, "timed out connecting to T"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), ConnectionLost,
         "connection to T was reset"),
        (BrokenPipeError(errno.EPIPE, "pipe"), ConnectionLost, "connection to T was reset"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), ConnectError,
         "cannot connect to T: Network is unreachable"),
        (OSError("odd"), ConnectError, "cannot connect to T: odd"),
        (RuntimeError("weird"), ConnectError, "cannot connect to T: weird"),
    ],
)  # fmt: skip
def test_translate_connect_error_table(exc: BaseException, kind: type, message: str) -> None:
    error = translate_connect_error(exc, "T")
    assert type(error) is kind
    assert str(error).startswith(message)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "requires a client certificate"),
        ("TLSV1_ALERT_UNKNOWN_CA", "does not trust the CA of our client certificate"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", "rejected our client certificate"),
        ("SSLV3_ALERT_HANDSHAKE_FAILURE", "refused the handshake"),
        ("SSLV3_ALERT_CERTIFICATE_EXPIRED", "says our client certificate has expired"),
    ],
)
def test_translate_tls_alerts_in_words(reason: str, words: str) -> None:
    # What OpenSSL raises when the server sends the alert: reason set, as the ssl module does.
    exc = ssl.SSLError(1, f"[SSL: {reason}] alert")
    exc.reason = reason  # type: ignore[misc]
    error = translate_connect_error(exc, "T")
    assert isinstance(error, TLSError)
    assert str(error).startswith(f"TLS handshake with T failed: the server {words}")
    assert "(alert: " in str(error) and reason not in str(error)


def test_translate_connect_error_passes_netkit_errors_through() -> None:
    original = OperationTimeout("already translated")
    assert translate_connect_error(original, "T") is original

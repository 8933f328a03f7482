"""Tests for lb's richer active checks (netkit.net.health with netkit.core.balance.checks and
netkit.net.backend_tls): TLS checks verified, refused when untrusted and with a client
certificate for mutual TLS; HTTP checks judged by status, flipping a backend down on a 500 and
up again on a 200; the PROXY header a check starts with, parsed by the backend. Real loopback
servers (asyncio's, trustme certificates), under both loops."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import TYPE_CHECKING

import pytest
import trustme

from netkit.core.addresses import TCPEndpoint
from netkit.core.balance.backends import Backend, parse_backend
from netkit.core.balance.checks import HTTPCheck, parse_check
from netkit.core.balance.health import HealthEvent
from netkit.core.balance.state import BackendState
from netkit.core.proxy_protocol import Accept, HeaderParser, ProxyHeader
from netkit.errors import ConfigError
from netkit.net.backend_tls import BackendTLS
from netkit.net.health import CheckResult, HealthChecker, run_check
from netkit.net.tls import ClientTLS, client_context
from tests.net.conftest import ThreadListener

if TYPE_CHECKING:
    from conftest import Runner

INTERVAL = 0.02


async def answer_with(
    status: list[int],
) -> tuple[asyncio.Server, int]:
    """An HTTP server answering every request with ``status[0]`` (the test flips it)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            body = b"fine" if status[0] < 400 else b"broken"
            writer.write(
                f"HTTP/1.1 {status[0]} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def tls_server(ctx: ssl.SSLContext) -> tuple[asyncio.Server, int]:
    """A TLS server that closes each connection once its handshake is done."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


def backend_tls(ca: trustme.CA | None, client: trustme.LeafCert | None = None) -> BackendTLS:
    ctx = client_context(ClientTLS(True))
    if ca is not None:
        ca.configure_trust(ctx)
    if client is not None:
        client.configure_cert(ctx)
    return BackendTLS(ctx)


# --- TLS ------------------------------------------------------------------------------------


def test_tls_check_passes_when_verified_and_fails_untrusted_naming_why(
    run: Runner[None], ca: trustme.CA, server_ssl: ssl.SSLContext
) -> None:
    async def main() -> None:
        server, port = await tls_server(server_ssl)
        backend = Backend(TCPEndpoint("127.0.0.1", port), tls=True)
        trusted = await run_check(
            backend.endpoint, timeout=5, tls=backend_tls(ca).handshake(backend)
        )
        untrusted = await run_check(
            backend.endpoint, timeout=5, tls=backend_tls(trustme.CA()).handshake(backend)
        )
        wrong_name = await run_check(
            backend.endpoint,
            timeout=5,
            tls=backend_tls(ca).handshake(parse_backend(f"127.0.0.1:{port},sni=other.example")),
        )
        server.close()
        await server.wait_closed()
        assert trusted.ok, trusted.detail
        assert not untrusted.ok and not untrusted.skipped
        assert untrusted.detail.startswith(f"TLS certificate of 127.0.0.1:{port} not trusted")
        assert not wrong_name.ok and "is for another name" in wrong_name.detail

    run(main())


def test_tls_check_with_a_client_certificate_for_a_backend_that_requires_one(
    run: Runner[None], ca: trustme.CA, server_cert: trustme.LeafCert
) -> None:
    async def main() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_cert.configure_cert(ctx)
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED

        # A TLS 1.3 server judges the client certificate after the client's handshake is
        # over: an HTTP check waits for the answer, so it sees the refusal either way.
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
            writer.close()

        mtls = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        port = mtls.sockets[0].getsockname()[1]
        backend = Backend(TCPEndpoint("127.0.0.1", port), tls=True)
        check = HTTPCheck("/health")
        with_cert = await run_check(
            backend.endpoint,
            timeout=5,
            http=check,
            tls=backend_tls(ca, ca.issue_cert("lb.client")).handshake(backend),
        )
        without = await run_check(
            backend.endpoint, timeout=5, http=check, tls=backend_tls(ca).handshake(backend)
        )
        mtls.close()
        await mtls.wait_closed()
        assert with_cert.ok and with_cert.status == 204, with_cert.detail
        assert not without.ok and without.status is None
        assert "certificate" in without.detail or "closed" in without.detail, without.detail

    run(main())


# --- HTTP -----------------------------------------------------------------------------------


def test_http_check_marks_down_on_500_and_up_again_on_200(run: Runner[None]) -> None:
    async def main() -> None:
        status = [200]
        server, port = await answer_with(status)
        state = BackendState(Backend(TCPEndpoint("127.0.0.1", port)), rise=2, fall=2)
        events: asyncio.Queue[HealthEvent] = asyncio.Queue()
        checker = HealthChecker(
            [state],
            interval=INTERVAL,
            timeout=2,
            http=parse_check("http:/healthz"),
            on_event=events.put_nowait,
        )
        async with checker:
            status[0] = 500
            down = await events.get()
            assert (down.new, down.source, down.status) == ("down", "check", 500)
            assert down.reason.endswith("HTTP 500 from GET /healthz (expected 2xx,3xx)")
            assert down.check_ms is not None and down.check_ms > 0
            assert down.as_dict()["status"] == 500 and "check_ms" in down.as_dict()
            status[0] = 200
            up = await events.get()
            assert (up.new, up.status) == ("up", 200)
            row = state.as_dict(0.0)  # the last check, for the table and the metrics
            assert row["check_status"] == 200 and row["check_ms"] > 0
        server.close()
        await server.wait_closed()

    run(main())


def test_http_check_expect_names_the_codes(run: Runner[None]) -> None:
    async def main() -> None:
        status = [301]
        server, port = await answer_with(status)
        endpoint = TCPEndpoint("127.0.0.1", port)
        default = await run_check(endpoint, timeout=5, http=parse_check("http:/"))
        strict = await run_check(endpoint, timeout=5, http=parse_check("http:/", "200"))
        server.close()
        await server.wait_closed()
        assert default.ok and default.status == 301 and default.detail.startswith("HTTP 301 in")
        assert not strict.ok and strict.status == 301
        assert strict.detail == "HTTP 301 from GET / (expected 200)"

    run(main())


def test_http_check_bounds_the_answer_and_refuses_what_is_not_http(run: Runner[None]) -> None:
    async def main() -> None:
        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                for _ in range(100):  # more than the check reads, less than the test waits
                    writer.write(b"x" * 4096)
                    await writer.drain()
                await reader.read()
            writer.close()

        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"SSH-2.0-OpenSSH\r\n")
            with contextlib.suppress(ConnectionError):
                await reader.read()
            writer.close()

        async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            writer.close()

        results = []
        for handler in (endless, garbage, truncated):
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            results.append(
                await run_check(TCPEndpoint("127.0.0.1", port), timeout=5, http=HTTPCheck())
            )
            server.close()
            await server.wait_closed()
        too_long, not_http, cut_short = results
        assert not too_long.ok and "no complete HTTP answer" in too_long.detail
        assert too_long.seconds < 4  # judged on the bound, not the timeout
        assert not not_http.ok and "malformed HTTP response" in not_http.detail
        assert not cut_short.ok and cut_short.status is None
        assert cut_short.detail.endswith(
            "gave no HTTP answer to GET /: the connection closed in the middle of a response"
        )

    run(main())


def test_parse_check() -> None:
    assert parse_check("tcp") is None
    assert parse_check("http") == HTTPCheck("/")
    check = parse_check("http:/healthz?full=1", "2xx,301")
    assert check is not None and check.path == "/healthz?full=1"
    assert check.expect.accepts(204) and check.expect.accepts(301) and not check.expect.accepts(302)
    assert b"GET /healthz?full=1 HTTP/1.1\r\nHost: b:80\r\n" in check.request("b:80")
    for bad, words in (
        ("udp", "expected tcp, or http:/PATH"),
        ("http:healthz", "must start with /"),
        ("http:/a b", "no spaces"),
    ):
        with pytest.raises(ConfigError, match=words):
            parse_check(bad)
    with pytest.raises(ConfigError) as caught:
        parse_check("http:/", "20x")
    message, _ = caught.value.describe(lambda s: "--" + s.replace("_", "-"))
    assert message.startswith("--check-expect '20x': expected codes")


# --- the PROXY header -------------------------------------------------------------------------


class ProxyThenTLS(ThreadListener):
    """A backend that reads a PROXY header in clear, then TLS on the same connection (as
    netkit and HAProxy servers with accept-proxy and ssl do), then answers HTTP 200."""

    def __init__(self, version: int, ctx: ssl.SSLContext) -> None:
        self.version, self.ctx = version, ctx
        self.headers: list[ProxyHeader] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with contextlib.suppress(OSError), conn:
            parser = HeaderParser(Accept.V1 if self.version == 1 else Accept.V2)
            while parser.header is None:
                peeked = conn.recv(parser.wanted(), socket.MSG_PEEK)
                if not peeked:
                    return
                conn.recv(parser.feed(peeked))  # exactly the header's bytes, no more
            self.headers.append(parser.header)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += tls.recv(4096)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("version", [1, 2])
def test_check_starts_with_the_proxy_header_before_tls(
    run: Runner[CheckResult], version: int, ca: trustme.CA, server_ssl: ssl.SSLContext
) -> None:
    server = ProxyThenTLS(version, server_ssl)
    backend = Backend(TCPEndpoint("127.0.0.1", server.port), tls=True)

    async def main() -> CheckResult:
        return await run_check(
            backend.endpoint,
            timeout=5,
            http=HTTPCheck(),
            send_proxy=version,
            tls=backend_tls(ca).handshake(backend),
        )

    try:
        result = run(main())
    finally:
        server.stop()
    assert result.ok and result.status == 200, result.detail
    [header] = server.headers
    assert header.version == version
    assert header.destination == ("127.0.0.1", server.port)  # the backend, as the check saw it
    assert header.source is not None and header.source[0] == "127.0.0.1"


def test_backend_tls_server_names() -> None:
    tls = BackendTLS(client_context(ClientTLS(True)))
    assert tls.handshake(parse_backend("127.0.0.1:1")) is None  # plain text
    assert tls.server_name(parse_backend("db.internal:5432,tls")) == "db.internal"
    assert tls.server_name(parse_backend("127.0.0.1:1,tls")) == "127.0.0.1"
    assert tls.server_name(parse_backend("127.0.0.1:1,sni=api.example")) == "api.example"
    assert parse_backend("127.0.0.1:1,sni=api.example").tls  # sni= implies tls
    shared = BackendTLS(tls.context, sni="all.example")
    assert shared.server_name(parse_backend("127.0.0.1:1,tls")) == "all.example"
    assert shared.server_name(parse_backend("127.0.0.1:1,sni=own.example")) == "own.example"
    assert str(parse_backend("h:1,tls,sni=n.example")) == "h:1,tls,sni=n.example"


def test_http_check_reads_an_answer_cut_at_every_point(run: Runner[None]) -> None:
    # Real networks split replies: the check must judge the same status wherever the cut is.
    answers = [
        b"HTTP/1.1 500 Broken\r\nContent-Length: 6\r\n\r\nbroken",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfine\r\n0\r\n\r\n",
    ]

    async def main() -> list[tuple[int | None, bool]]:
        seen = []
        for answer in answers:
            for at in range(1, len(answer)):

                async def handle(
                    reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter,
                    at: int = at,
                    answer: bytes = answer,
                ) -> None:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with contextlib.suppress(ConnectionError):
                        await reader.readuntil(b"\r\n\r\n")
                        writer.write(answer[:at])
                        await writer.drain()
                        writer.write(answer[at:])
                        await writer.drain()
                        await reader.read()
                    writer.close()

                server = await asyncio.start_server(handle, "127.0.0.1", 0)
                port = server.sockets[0].getsockname()[1]
                result = await run_check(
                    TCPEndpoint("127.0.0.1", port), timeout=5, http=HTTPCheck()
                )
                server.close()
                await server.wait_closed()
                seen.append((result.status, result.ok))
        return seen

    seen = run(main())
    assert seen == [(500, False)] * (len(answers[0]) - 1) + [(200, True)] * (len(answers[1]) - 1)

"""netkit.bench against an HTTP/1.1 server written in the test (asyncio, port 0): the HTTP
keyword arguments (method, headers, body, expect_status, expect_body) reach the wire and the
checks, and bench_sync takes them too."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import netkit
from netkit import BenchResult, CheckFailed, ConfigError
from netkit.core.bench.plan import Scenario


class Server:
    """Keep-alive HTTP/1.1: ``/echo`` answers 200 with the request body, ``/teapot`` 418,
    anything else 200 ``fine``; the first requests' method, headers and body are kept."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                line, *fields = head.decode("latin-1").split("\r\n")[:-2]
                method, path, _ = line.split(" ")
                headers = {k.lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if len(self.seen) < 5:
                    self.seen.append((method, headers, body))
                status, answer = {"/echo": (200, body), "/teapot": (418, b"no")}.get(
                    path, (200, b"fine")
                )
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(answer), answer)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        async with server:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_http_keywords_reach_the_wire_and_the_checks(run: Any) -> None:
    srv = Server()

    async def main() -> tuple[BenchResult, BenchResult, BenchResult]:
        async with srv.serving() as base:
            posted = await netkit.bench(
                f"{base}/echo",
                requests=40,
                connections=2,
                method="POST",
                headers={"X-Token": "abc"},
                body='{"k": 1}',
                expect_body='"k"',
            )
            teapot = await netkit.bench(
                f"{base}/teapot", requests=30, expect_status=418, fail_if=["status_4xx<30"]
            )
            wrong = await netkit.bench(f"{base}/ok", requests=20, expect_body=b"gone", check=False)
            return posted, teapot, wrong

    posted, teapot, wrong = run(main())
    method, headers, body = srv.seen[0]
    assert (method, headers["x-token"], body) == ("POST", "abc", b'{"k": 1}')
    assert posted.scenario is Scenario.REQUEST and posted.transport == "http"
    assert posted.requests == 40 and posted.statuses == {200: 40} and not posted.errors
    assert posted.connects == 2
    assert teapot.requests == 30 and teapot.statuses == {418: 30}
    assert wrong.requests == 0 and wrong.errors == {"mismatch": 20}


def test_an_unexpected_status_fails_the_run(run: Any) -> None:
    async def main() -> None:
        async with Server().serving() as base:
            with pytest.raises(CheckFailed, match="no request succeeded"):
                await netkit.bench(f"{base}/teapot", requests=10)
            with pytest.raises(ConfigError, match="header"):
                await netkit.bench(f"{base}/", requests=1, headers=["no colon"])
            with pytest.raises(ConfigError, match="http://"):
                await netkit.bench("127.0.0.1:1", requests=1, method="POST")

    run(main())


def test_bench_sync_takes_the_http_keywords() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201 if data == b"x" * 100 else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            result = netkit.bench_sync(
                url, requests=25, method="PUT", body=b"x" * 100, expect_status="201"
            )
        finally:
            server.shutdown()
    assert result.statuses == {201: 25} and result.requests == 25

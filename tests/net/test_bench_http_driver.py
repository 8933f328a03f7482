"""Tests for netkit.net.bench.http: the HTTP/1.1 driver against an asyncio HTTP server written
here (TCP, TLS with trustme, a Unix socket), under both loops: keep-alive reuse, pipelining,
status checks, chunked bodies, servers that close after each response or answer garbage, and
the open loop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import parse_http_url
from netkit.core.bench.http import HTTPLoad, StatusCheck
from netkit.core.bench.plan import LoadPlan
from netkit.net.bench.worker import Target, run_worker

if TYPE_CHECKING:
    import trustme
    from conftest import Runner

pytestmark = pytest.mark.timeout(30)


def plan(**kw: Any) -> LoadPlan:
    kw.setdefault("duration", 0.25)
    kw.setdefault("connections", 2)
    kw.setdefault("total_connections", kw["connections"])
    return LoadPlan(**kw)


# --- the server ------------------------------------------------------------------------------

Answer = Callable[[bytes, bytes, int], bytes]
"""(request head, body, request number on its connection) -> the bytes to answer with."""


def ok(body: bytes = b"hello") -> Answer:
    return lambda head, req_body, n: (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


@dataclass
class HTTPServer:
    """Counts connections and requests; answers each request with ``answer``."""

    answer: Answer
    close_after: bool = False  # close the connection after each response
    split: Callable[[int], int] | None = None  # request n's answer goes in two writes, here
    connections: int = 0
    requests: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                self.requests += 1
                n += 1
                if len(self.heads) < 5:
                    self.heads.append(head)
                    self.bodies.append(body)
                answer = self.answer(head, body, n)
                if self.split is not None:  # two writes, the client's loop runs between
                    cut = self.split(n)
                    writer.write(answer[:cut])
                    await writer.drain()
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                    answer = answer[cut:]
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def http_server(
    server: HTTPServer, *, ssl_ctx: ssl.SSLContext | None = None, unix: Path | None = None
) -> AsyncIterator[str]:
    """Serve ``server``; yields its URL."""
    if unix is not None:
        srv = await asyncio.start_unix_server(server.handle, str(unix))
        url = f"http+unix://{unix}:/path?q=1"
    else:
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_ctx)
        port = srv.sockets[0].getsockname()[1]
        url = f"{'https' if ssl_ctx else 'http'}://127.0.0.1:{port}/path?q=1"
    try:
        yield url
    finally:
        srv.close()
        for writer in server.writers:
            writer.transport.abort()
        await srv.wait_closed()


async def bench(
    p: LoadPlan, url: str, load: HTTPLoad | None = None, ctx: ssl.SSLContext | None = None
) -> Any:
    target = Target(parse_http_url(url), ctx, None, load or HTTPLoad())
    return await run_worker(p, target, handle_signals=False)


# --- tests -----------------------------------------------------------------------------------


def test_keep_alive_connections_are_reused(run: Runner) -> None:
    async def main() -> None:
        server = HTTPServer(ok())
        async with http_server(server) as url:
            r = await bench(plan(connections=3, warmup=0.0), url)
        assert r.requests > 50
        assert not r.errors
        assert r.statuses == {200: r.requests}
        assert server.connections == 3 == r.connects  # every request rode the same three
        assert r.transport == "http"
        assert r.size == len(server.heads[0])  # the request's bytes (no body)
        assert r.latency.count == r.requests
        head = server.heads[0]
        assert head.startswith(b"GET /path?q=1 HTTP/1.1\r\n")
        assert b"Host: 127.0.0.1:" in head

    run(main())


def test_pipelined_requests_on_one_connection(run: Runner) -> None:
    async def main() -> None:
        server = HTTPServer(ok())
        async with http_server(server) as url:
            r = await bench(plan(connections=1, pipeline=8, requests=400, duration=None), url)
        assert r.requests == 400 == server.requests
        assert server.connections == 1
        assert not r.errors

    run(main())


def test_head_responses_end_with_their_heads_pipelined_and_split(run: Runner) -> None:
    # Each answer announces 5 body bytes and sends none (RFC 9110 9.3.2), cut in two writes
    # at a point that moves: a reader waiting for the 5 bytes would eat the next head.
    head_only = lambda head, body, n: (  # noqa: E731
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" if head.startswith(b"HEAD ") else b"?"
    )

    async def main() -> None:
        server = HTTPServer(head_only, split=lambda n: n % 37)
        async with http_server(server) as url:
            load = HTTPLoad("HEAD")
            r = await bench(plan(connections=2, pipeline=4, requests=120, duration=None), url, load)
        assert r.requests == 120 == server.requests and server.connections == 2
        assert r.statuses == {200: 120} and not r.errors

    run(main())


def test_method_headers_and_body_are_sent(run: Runner) -> None:
    async def main() -> None:
        server = HTTPServer(ok())
        load = HTTPLoad("POST", (("X-Test", "yes"), ("Host", "example.test")), b"payload!")
        async with http_server(server) as url:
            r = await bench(plan(connections=1, requests=5, duration=None), url, load)
        assert r.requests == 5
        head = server.heads[0]
        assert head.startswith(b"POST /path?q=1 HTTP/1.1\r\n")
        assert b"X-Test: yes\r\n" in head
        assert b"Host: example.test\r\n" in head and b"Host: 127.0.0.1" not in head
        assert b"Content-Length: 8\r\n" in head
        assert server.bodies[0] == b"payload!"

    run(main())


def test_unexpected_statuses_are_errors_counted_by_code(run: Runner) -> None:
    def answer(head: bytes, body: bytes, n: int) -> bytes:
        status = b"503 Busy" if n % 2 == 0 else b"200 OK"
        return b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok"

    async def main() -> None:
        server = HTTPServer(answer)
        async with http_server(server) as url:
            r = await bench(plan(connections=1, requests=10, duration=None), url)
            accepting = await bench(
                plan(connections=1, requests=10, duration=None),
                url,
                HTTPLoad(status=StatusCheck.parse("2xx,503")),
            )
        assert r.statuses == {200: 5, 503: 5}
        assert r.requests == 5  # only the expected ones are requests and latency samples
        assert r.latency.count == 5
        assert r.errors == {"status": 5}
        assert "503" in r.error_samples["status"]
        assert accepting.requests == 10 and not accepting.errors

    run(main())


def test_chunked_bodies_and_the_body_check(run: Runner) -> None:
    def answer(head: bytes, body: bytes, n: int) -> bytes:
        # 100 Continue first, then a chunked body split inside its words
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nhell\r\n3\r\no w\r\n4\r\norld\r\n0\r\n\r\n"
        )

    async def main() -> None:
        server = HTTPServer(answer)
        async with http_server(server) as url:
            good = await bench(
                plan(connections=2, pipeline=3, requests=60, duration=None),
                url,
                HTTPLoad(expect_body=b"lo wor"),
            )
            bad = await bench(
                plan(connections=1, requests=5, duration=None),
                url,
                HTTPLoad(expect_body=b"goodbye"),
            )
        assert good.requests == 60 and not good.errors
        assert good.statuses == {200: 60}  # the 100s are not answers
        assert bad.requests == 0
        assert bad.errors == {"mismatch": 5}

    run(main())


def test_an_answer_split_in_two_writes_at_every_point(run: Runner) -> None:
    # Real networks split replies: the answer to request n reaches the client in two writes,
    # cut at byte n-1 (0: all in the second), over every point of a 100 Continue followed by
    # a chunked 200; each must be read whole, once, with its body checked.
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nhell\r\n3\r\no w\r\n4\r\norld\r\n0\r\n\r\n"
    )
    points = len(answer) + 1

    async def main() -> None:
        server = HTTPServer(lambda head, body, n: answer, split=lambda n: (n - 1) % points)
        async with http_server(server) as url:
            r = await bench(
                plan(connections=1, requests=points, duration=None),
                url,
                HTTPLoad(expect_body=b"hello world"),
            )
        assert server.connections == 1 and server.requests == points
        assert r.requests == points and not r.errors
        assert r.statuses == {200: points}

    run(main())


def test_large_bodies_on_many_connections_share_the_read_buffer(run: Runner) -> None:
    # Every connection of a run reads into one buffer: bodies larger than it (several reads
    # each), interleaved over 4 connections, half of them (every other connection's) without
    # the needle at their end. Each verdict must be its own response's.
    filler = bytes(range(256)) * 1200  # 300 KiB
    needle = b"needle-at-the-end"
    sent = {"with": 0, "without": 0}

    marked = contextvars.ContextVar("marked", default=False)  # per connection (its task)

    def answer(head: bytes, body: bytes, n: int) -> bytes:
        sent["with" if marked.get() else "without"] += 1
        body = filler + (needle if marked.get() else b"-" * len(needle))
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    class Alternating(HTTPServer):
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            marked.set(self.connections % 2 == 1)
            await super().handle(reader, writer)

    async def main() -> None:
        server = Alternating(answer)
        async with http_server(server) as url:
            r = await bench(
                plan(connections=4, requests=40, duration=None), url, HTTPLoad(expect_body=needle)
            )
        assert sent["with"] + sent["without"] == 40
        assert sent["with"] and sent["without"]
        assert r.requests == sent["with"]
        assert r.errors == {"mismatch": sent["without"]}
        assert r.statuses == {200: 40}

    run(main())


def test_a_server_that_closes_after_each_response(run: Runner) -> None:
    def answer(head: bytes, body: bytes, n: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    async def main() -> None:
        server = HTTPServer(answer, close_after=True)
        async with http_server(server) as url:
            r = await bench(plan(connections=2, requests=40, duration=None), url)
        assert r.requests == 40
        assert not r.errors
        # One connection per request (the server may also see one begun as the run ended).
        assert server.connections - 1 <= r.connects <= server.connections
        assert r.connects >= 40

    run(main())


def test_a_body_that_ends_with_the_connection(run: Runner) -> None:
    def answer(head: bytes, body: bytes, n: int) -> bytes:
        return b"HTTP/1.0 200 OK\r\n\r\nuntil the end"

    async def main() -> None:
        server = HTTPServer(answer, close_after=True)
        async with http_server(server) as url:
            r = await bench(
                plan(connections=1, requests=10, duration=None),
                url,
                HTTPLoad(expect_body=b"the end"),
            )
        assert r.requests == 10
        assert not r.errors

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.0 200 OK\r\nServer: t\r\n\r\nuntil the end",  # the body ends with the connection
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 13\r\n\r\nuntil the end",
    ],
    ids=["to-eof", "content-length"],
)
def test_a_closing_answer_split_in_two_writes_at_every_point(run: Runner, answer: bytes) -> None:
    # Where a body ends is read from the headers only when a response spans reads (a second
    # parser follows the stream then): the answer to request n comes in two writes, cut at
    # byte n-1, over every point, each on a connection the server closes after it. Each must
    # end where its framing says: whole, once, with its body checked.
    points = len(answer) + 1

    async def main() -> None:
        cuts = iter(range(points))  # one request per connection: cut by the run's count
        server = HTTPServer(
            lambda head, body, n: answer, close_after=True, split=lambda n: next(cuts)
        )
        async with http_server(server) as url:
            r = await bench(
                plan(connections=1, requests=points, duration=None),
                url,
                HTTPLoad(expect_body=b"the end"),
            )
        assert r.requests == points and not r.errors, r.errors
        assert r.statuses == {200: points}
        assert r.connects == points

    run(main())


def test_garbage_is_counted_as_protocol_errors(run: Runner) -> None:
    async def main() -> None:
        server = HTTPServer(lambda head, body, n: b"SSH-2.0-OpenSSH\r\n\r\n")
        async with http_server(server) as url:
            r = await bench(plan(connections=2, duration=0.2), url)
        assert r.requests == 0
        assert r.errors["protocol"] >= 1
        assert set(r.errors) <= {"protocol", "reset", "closed"}

    run(main())


def test_open_loop_keeps_its_rate(run: Runner) -> None:
    async def main() -> None:
        server = HTTPServer(ok())
        async with http_server(server) as url:
            r = await bench(plan(connections=2, rate=400.0, duration=0.5), url)
        # 200 due in 0.5 s: each sent or reported missed (a loaded machine may give the loop
        # its turn too late for a few at the end).
        assert 150 <= r.requests + r.missed <= 260
        assert not r.errors
        assert r.missed <= 10, r.missed

    run(main())


def test_https_with_a_trusted_certificate(
    run: Runner, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async def main() -> None:
        server = HTTPServer(ok())
        async with http_server(server, ssl_ctx=server_ssl) as url:
            r = await bench(plan(connections=2), url, ctx=client_ssl)
        assert r.transport == "https"
        assert r.requests > 10 and not r.errors
        assert server.connections == 2

    run(main())


def test_http_over_a_unix_socket(run: Runner, tmp_path: Path, ca: trustme.CA) -> None:
    async def main() -> None:
        server = HTTPServer(ok())
        async with http_server(server, unix=tmp_path / "api.sock") as url:
            r = await bench(plan(connections=2, requests=50, duration=None), url)
        assert r.transport == "http+unix"
        assert r.requests == 50 and not r.errors
        assert server.heads[0].startswith(b"GET /path?q=1 HTTP/1.1\r\nHost: localhost\r\n")

    run(main())


def test_a_server_that_never_answers_times_out(run: Runner) -> None:
    async def main() -> None:
        never = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await never.wait()  # reads nothing, answers nothing; cancelled at close

        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            r = await bench(
                plan(connections=1, duration=0.3, timeout=0.1), f"http://127.0.0.1:{port}/"
            )
        finally:
            srv.close()
        assert r.requests == 0
        assert r.errors["timeout"] >= 1

    run(main())

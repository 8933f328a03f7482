"""The JSON API's HTTP/1.1 connection (httptools) over loopback, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from netkit.core.addresses import TCPEndpoint
from netkit.core.http_api import ApiError, Request, Response
from netkit.net.http_api import MAX_BODY, MAX_HEAD, ApiConnection, api_connection
from netkit.net.server import StreamServer, make_listener

if TYPE_CHECKING:
    from conftest import Runner


async def answer(request: Request) -> Response:
    """Echo the request as JSON; ``/slow/N`` answers after N ms, ``/boom`` fails, ``/nope`` 418."""
    if request.path.startswith("/slow/"):
        await asyncio.sleep(int(request.path[6:]) / 1000)
    if request.path == "/boom":
        raise RuntimeError("kaboom")
    if request.path == "/nope":
        raise ApiError("no", 418)
    return Response.json(
        {"method": request.method, "path": request.path, "body": request.body.decode()}
    )


@asynccontextmanager
async def api() -> AsyncIterator[tuple[StreamServer, int]]:
    server = StreamServer(make_listener(TCPEndpoint("127.0.0.1", 0)), api_connection(answer))
    server.start()
    try:
        yield server, server.sock.getsockname()[1]
    finally:
        await server.drain(1.0)
        await server.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def test_keep_alive_and_pipelined_requests_are_answered_in_order(run: Runner[None]) -> None:
    async def main() -> None:
        async with api() as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # The first answer takes longest: the second and third must still come after it.
            writer.write(
                b"GET /slow/50 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n"
            )
            answers = [await read_response(reader) for _ in range(3)]
            assert [json.loads(body)["path"] for _, _, body in answers] == ["/slow/50", "/b", "/c"]
            assert json.loads(answers[1][2])["body"] == "hi"
            assert json.loads(answers[2][2])["body"] == "abc"
            writer.write(b"GET /d HTTP/1.1\r\nConnection: close\r\n\r\n")
            status, headers, _ = await read_response(reader)
            assert (status, headers["connection"]) == (200, "close")
            assert await reader.read() == b""  # closed after the answer
            writer.close()

    run(main())


def test_requests_split_into_two_writes_at_every_byte_are_answered(run: Runner[None]) -> None:
    # A real network splits a request anywhere: head, body, and the next pipelined request.
    raw = (
        b'POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{"name": "a"}'
        b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
    )

    async def main() -> None:
        async with api() as (_, port):
            for cut in range(1, len(raw)):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writer.write(raw[:cut])
                await writer.drain()
                writer.write(raw[cut:])
                first = await read_response(reader)
                second = await read_response(reader)
                assert first[0] == 200 and json.loads(first[2]) == {
                    "method": "POST",
                    "path": "/proxies",
                    "body": '{"name": "a"}',
                }, cut
                assert second[0] == 200 and json.loads(second[2])["path"] == "/version", cut
                writer.close()
                await writer.wait_closed()

    run(main())


def test_bad_requests_get_answers_and_never_stop_the_server(run: Runner[None]) -> None:
    async def ask(port: int, raw: bytes) -> tuple[int, bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        status, _, body = await read_response(reader)
        rest = await reader.read()  # the connection ends after an error that ends it
        writer.close()
        return status, body, rest

    async def main() -> None:
        async with api() as (server, port):
            status, body, _ = await ask(port, b"NONSENSE\r\n\r\n")
            assert status == 400 and json.loads(body)["status"] == 400
            big = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(big)  # answered before the body is sent
            status, _, body = await read_response(reader)
            assert status == 413 and b"body over" in body
            writer.close()
            chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
            count = MAX_BODY // 65536 + 1
            status, body, _ = await ask(port, chunked + chunk * count + b"0\r\n\r\n")
            assert status == 413
            browser = b"GET / HTTP/1.1\r\nUser-Agent: Mozilla/5.0\r\nConnection: close\r\n\r\n"
            status, body, _ = await ask(port, browser)
            assert (status, json.loads(body)) == (
                403,
                {"error": "User agent not allowed", "status": 403},
            )
            status, body, _ = await ask(port, b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert (status, json.loads(body)["error"]) == (500, "RuntimeError: kaboom")
            status, body, _ = await ask(port, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert (status, json.loads(body)) == (418, {"error": "no", "status": 418})
            status, body, _ = await ask(port, b"GET /fine HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert status == 200  # still serving
            assert server.stats.accepted == 7

    run(main())


def test_a_half_closed_client_still_gets_its_answer(run: Runner[None]) -> None:
    async def main() -> None:
        async with api() as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow/30 HTTP/1.1\r\n\r\n")
            writer.write_eof()
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["path"] == "/slow/30"
            assert await reader.read() == b""
            writer.close()

    run(main())


def test_an_idle_client_is_closed_and_others_are_served(run: Runner[None]) -> None:
    async def main() -> None:
        server = StreamServer(
            make_listener(TCPEndpoint("127.0.0.1", 0)),
            lambda: ApiConnection(answer, idle_timeout=0.2),
        )
        server.start()
        port = server.sock.getsockname()[1]
        try:
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            idle_writer.write(b"GET /half")  # never finished
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow/300 HTTP/1.1\r\n\r\n")  # busy longer than the timeout
            status, _, _ = await read_response(reader)
            assert status == 200
            assert await idle_reader.read() == b""  # closed for idling
            writer.close()
            idle_writer.close()
        finally:
            await server.drain(1.0)
            await server.close()

    run(main())


def test_garbage_never_stops_the_server(run: Runner[None]) -> None:
    import random

    rng = random.Random(15)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(40)]
    payloads += [b"GET / HTTP/1.1\r\n" + p + b"\r\n\r\n" for p in payloads[:20]]

    async def main() -> None:
        async with api() as (server, port):
            for payload in payloads:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)
                writer.write_eof()
                answer = await reader.read()  # a 400, or nothing: never a hang
                assert answer == b"" or answer.startswith(b"HTTP/1.1 ")
                writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n")
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["path"] == "/ok"
            writer.close()
            assert server.stats.accepted == len(payloads) + 1

    run(main())


def test_an_endless_request_head_is_refused_with_431(run: Runner[None]) -> None:
    async def main() -> None:
        async with api() as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # One header over the limit, never ended: refused once the limit is passed (just
            # past it: every byte sent is read before the close, so no reset overtakes the 431).
            head = b"GET / HTTP/1.1\r\nX-Long: "
            writer.write(head + b"a" * (MAX_HEAD + 1 - len(head)))
            status, _, body = await read_response(reader)
            assert (status, json.loads(body)["status"]) == (431, 431)
            writer.close()
            assert server.stats.accepted == 1

    run(main())

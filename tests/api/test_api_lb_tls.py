"""netkit.load_balancer() to TLS backends with HTTP checks, in-process over real loopback
sockets, on asyncio and uvloop: the traffic and the checks verified with the context given,
an HTTP check taking the backend down on 500 (the health event carrying the status)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import trustme

from netkit.api.proxy import load_balancer
from netkit.core.addresses import TCPEndpoint

Runner = Callable[[Coroutine[Any, Any, None]], None]


def test_load_balancer_speaks_tls_to_backends_and_checks_them_over_http(run: Runner) -> None:
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    status = [200]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            request = await reader.readuntil(b"\r\n\r\n")
            code = status[0] if request.startswith(b"GET /healthz ") else 200
            writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok".encode())
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_event(name: str, fields: dict[str, Any]) -> None:
            if name == "health":
                events.put_nowait(fields)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        backend = str(TCPEndpoint("127.0.0.1", server.sockets[0].getsockname()[1]))
        async with (
            server,
            load_balancer(
                [backend],
                backend_tls=client_ctx,
                check="http:/healthz",
                check_interval=0.03,
                check_timeout=5,
                rise=1,
                fall=1,
                on_event=on_event,
            ) as lb,
        ):
            host, port = lb.address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain to lb, TLS onward
            assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
            writer.close()
            await writer.wait_closed()
            assert events.empty()  # its checks passed
            status[0] = 503
            down = await events.get()
            assert (down["backend"], down["new"], down["status"]) == (backend, "down", 503)
            assert "HTTP 503 from GET /healthz (expected 2xx,3xx)" in down["reason"]

    run(scenario())

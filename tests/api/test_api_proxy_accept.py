"""``proxy(..., accept_proxy_protocol=...)`` and ``load_balancer(...)`` in-process: the client a
PROXY header names is the one in events and totals; a bad header is refused and counted; the
header comes before a TLS handshake, as HAProxy's ``send-proxy`` to a TLS server sends it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

import pytest

from netkit.api.proxy import load_balancer, proxy
from netkit.core.proxy_protocol import encode_v1, encode_v2
from netkit.errors import ConfigError
from tests.api.test_api_proxy import Runner, echo_backend, tls_pair

__all__ = ["tls_pair"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(60)

REAL = ("192.0.2.10", 5555)
DEST = ("192.0.2.20", 443)


async def connect_with(address: str, header: bytes, **tls: Any) -> tuple[Any, Any]:
    """Connect, send ``header`` in the clear, then go on as a stream (over TLS with ``tls``)."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(header)
    sock.setblocking(False)
    return await asyncio.open_connection(sock=sock, **tls)


def test_proxy_reports_the_named_client_and_counts_bad_headers(run: Runner) -> None:
    async def scenario() -> None:
        events: list[tuple[str, dict[str, Any]]] = []
        refused = asyncio.Event()

        def on_event(name: str, fields: dict[str, Any]) -> None:
            events.append((name, fields))
            if name == "proxy_header_rejected":
                refused.set()

        async with (
            echo_backend(b"") as backend,
            proxy(backend, accept_proxy_protocol="v2", on_event=on_event) as p,
        ):
            reader, writer = await connect_with(p.address, encode_v2(REAL, DEST) + b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            bad_reader, bad_writer = await connect_with(p.address, encode_v1(REAL, DEST))
            await refused.wait()  # v1 on a v2-only proxy: refused, and reset
            with contextlib.suppress(ConnectionResetError):
                assert await bad_reader.read() == b""
            bad_writer.close()
            assert p.totals.proxy_headers_rejected == 1
        closed = [fields for name, fields in events if name == "closed"]
        named = [c for c in closed if "via" in c]
        assert [c["client"] for c in named] == ["192.0.2.10:5555"]
        assert named[0]["via"].startswith("127.0.0.1:") and named[0]["bytes_up"] == 4
        (rejected,) = [fields for name, fields in events if name == "proxy_header_rejected"]
        assert "v2 expected" in rejected["reason"]

    run(scenario())


def test_the_header_comes_before_the_tls_handshake(
    run: Runner, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, client_ctx = tls_pair

    async def scenario() -> None:
        async with (
            echo_backend(b"") as backend,
            proxy(backend, tls=server_ctx, accept_proxy_protocol="any") as p,
        ):
            reader, writer = await connect_with(
                p.address, encode_v1(REAL, DEST), ssl=client_ctx, server_hostname="127.0.0.1"
            )
            writer.write(b"secret")
            assert await reader.readexactly(6) == b"secret"
            writer.close()

    run(scenario())


def test_load_balancer_hashes_the_named_client(run: Runner) -> None:
    async def scenario() -> None:
        events: list[tuple[str, dict[str, Any]]] = []
        async with (
            echo_backend(b"a") as a,
            echo_backend(b"b") as b,
            load_balancer(
                [a, b], policy="source", check_interval=60, accept_proxy_protocol=1,
                on_event=lambda *e: events.append(e),
            ) as lb,
        ):  # fmt: skip
            seen = set()
            for port in range(5):  # one named host from five source ports: one backend
                header = encode_v1(("198.51.100.9", 1000 + port), DEST)
                reader, writer = await connect_with(lb.address, header)
                seen.add(await reader.readexactly(1))
                writer.close()
            assert len(seen) == 1
        clients = {fields["client"] for name, fields in events if name == "closed"}
        assert clients <= {f"198.51.100.9:{1000 + port}" for port in range(5)}

    run(scenario())


def test_a_bad_accept_value_is_a_config_error(run: Runner) -> None:
    async def scenario() -> None:
        with pytest.raises(ConfigError, match="v1, v2 or any"):
            async with proxy("127.0.0.1:9", accept_proxy_protocol="v9"):
                pass
        with pytest.raises(ConfigError, match="proxy_header_timeout"):
            async with load_balancer(["127.0.0.1:9"], proxy_header_timeout=0):
                pass

    run(scenario())

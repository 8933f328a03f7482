"""Tests for netkit.net.upstreams: a fixed upstream, and a balanced pool with failover."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from netkit.core.addresses import TCPEndpoint
from netkit.core.balance.backends import parse_backends
from netkit.core.balance.health import HealthEvent
from netkit.core.balance.pool import BackendPool
from netkit.errors import ConnectError
from netkit.net.echo import EchoConnection
from netkit.net.relay import RelayOptions, RelayServer
from netkit.net.server import make_listener
from netkit.net.upstreams import BalancedPool, FixedUpstream, balance_key, merge_snapshots
from tests.net.conftest import EventLog, Runner, Serve

pytestmark = pytest.mark.timeout(30)


def refused_endpoint() -> TCPEndpoint:
    """A loopback port nothing listens on (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return TCPEndpoint("127.0.0.1", port)


def test_a_fixed_upstream_connects_every_client_to_its_endpoint(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as backend:
            upstream = FixedUpstream(backend.endpoint, timeout=5)
            for client in ("127.0.0.1:1000", "unix:(client)"):
                sock, label = await upstream.connect(client)
                assert label == str(backend.endpoint)
                assert sock.getpeername()[1] == backend.endpoint.port
                sock.close()

    run(main())


def test_a_balanced_pool_fails_over_past_a_refusing_backend(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as good:
            dead = refused_endpoint()
            backends = parse_backends([str(dead), str(good.endpoint)])
            health: list[HealthEvent] = []
            pool = BalancedPool(
                BackendPool(backends, algorithm="roundrobin", fall=1),
                connect_timeout=5,
                on_health=health.append,
            )
            labels = []
            for _ in range(3):
                sock, label = await pool.connect("127.0.0.1:5000")
                sock.close()
                labels.append(label)
            assert labels == [str(good.endpoint)] * 3  # never handed the one that refused
            assert [(e.backend, e.new) for e in health] == [(str(dead), "down")]
            pool.relay_ended(str(good.endpoint), 10, 20)
            rows = {row["backend"]: row for row in pool.snapshot()}
            assert rows[str(good.endpoint)]["bytes_up"] == 10
            assert rows[str(good.endpoint)]["bytes_down"] == 20
            assert rows[str(dead)]["failed"] == 1

    run(main())


def test_a_balanced_pool_with_no_backend_left_says_so(run: Runner) -> None:
    async def main() -> None:
        pool = BalancedPool(
            BackendPool(parse_backends([str(refused_endpoint())]), algorithm="roundrobin"),
            connect_timeout=5,
        )
        with pytest.raises(ConnectError, match="last: "):
            await pool.connect("127.0.0.1:5000")

    run(main())


def test_balance_key_is_the_client_host() -> None:
    assert balance_key("127.0.0.1:5000") == "127.0.0.1"
    assert balance_key("[::1]:5000") == "::1"
    assert balance_key("unix:(client)") == "unix:(client)"


def test_merge_snapshots_adds_counters_and_keeps_the_rest() -> None:
    a = [{"backend": "b1", "state": "up", "weight": 3, "active": 1, "total": 5, "failed": 0,
          "bytes_up": 10, "bytes_down": 20}]  # fmt: skip
    b = [{"backend": "b1", "state": "down", "weight": 3, "active": 2, "total": 7, "failed": 1,
          "bytes_up": 1, "bytes_down": 2}]  # fmt: skip
    (row,) = merge_snapshots([a, b])
    assert row == {"backend": "b1", "state": "up", "weight": 3, "active": 3, "total": 12,
                   "failed": 1, "bytes_up": 11, "bytes_down": 22}  # fmt: skip
    assert merge_snapshots([]) == []
    assert a[0]["total"] == 5  # the inputs are left alone


class Recording(FixedUpstream):
    """A fixed upstream that records the server's calls of its hooks."""

    def __init__(self, endpoint: TCPEndpoint) -> None:
        super().__init__(endpoint, timeout=5)
        self.calls: list[tuple[Any, ...]] = []

    def start(self) -> None:
        self.calls.append(("start",))

    async def stop(self) -> None:
        self.calls.append(("stop",))

    def relay_ended(self, upstream: str, bytes_up: int, bytes_down: int) -> None:
        self.calls.append(("ended", upstream, bytes_up, bytes_down))


def test_the_relay_server_calls_its_upstreams_hooks(run: Runner, serve: Serve) -> None:
    async def main() -> tuple[list[tuple[Any, ...]], str]:
        loop = asyncio.get_running_loop()
        async with serve(EchoConnection) as backend:
            upstream = Recording(backend.endpoint)
            listener = make_listener(TCPEndpoint("127.0.0.1", 0))
            server = RelayServer(listener, upstream, RelayOptions())
            log = EventLog()
            server.on_event = log.record
            server.start()
            assert upstream.calls == [("start",)]
            with socket.socket() as client:
                client.setblocking(False)
                await loop.sock_connect(client, listener.getsockname())
                await loop.sock_sendall(client, b"12345")
                got = b""
                while len(got) < 5:
                    got += await loop.sock_recv(client, 64)
            await log.wait_events("closed")  # the relay ends once both sides have closed
            upstream.endpoint = refused_endpoint()  # the next client's upstream fails
            with socket.socket() as failed:
                failed.setblocking(False)
                await loop.sock_connect(failed, listener.getsockname())
                (_, refused) = await log.wait_events("closed", 2)
            assert refused["end"].startswith("upstream failed")
            await server.drain(1)
            await server.close()
            return upstream.calls, str(backend.endpoint)

    calls, label = run(main())
    assert calls[0] == ("start",) and calls[-1] == ("stop",)
    # one relay_ended for the relayed client, none for the one whose upstream failed
    assert [c for c in calls if c[0] == "ended"] == [("ended", label, 5, 5)]

"""Tests for lb's queue (netkit.net.backend_queue, through netkit.net.upstreams.BalancedPool):
a client that finds every backend full waits, first come first served, for a free slot; it
is closed after the queue timeout, refused when the queue is full; real loopback backends."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from netkit.core.balance.backends import parse_backends
from netkit.core.balance.pool import BackendPool
from netkit.core.balance.queue import QueueCounters
from netkit.errors import ConnectError, OperationTimeout
from netkit.net.echo import EchoConnection
from netkit.net.upstreams import BalancedPool
from tests.net.conftest import Runner, Serve

pytestmark = pytest.mark.timeout(30)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (checked as the loop turns), at most ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def full_pool(
    specs: list[str], events: list[tuple[str, dict[str, Any]]], **queue: Any
) -> BalancedPool:
    return BalancedPool(
        BackendPool(parse_backends(specs)),
        connect_timeout=5,
        queue=QueueCounters(**queue),
        on_queue=lambda kind, fields: events.append((kind, fields)),
    )


def test_a_full_backend_queues_clients_in_order_and_serves_them_as_slots_free(
    run: Runner, serve: Serve
) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as backend:
            events: list[tuple[str, dict[str, Any]]] = []
            pool = full_pool([f"{backend.endpoint},maxconn=1"], events, timeout=10)
            first, label = await pool.connect("127.0.0.1:1")
            served: list[str] = []

            async def client(name: str) -> socket.socket:
                sock, _ = await pool.connect(f"127.0.0.1:{name}")
                served.append(name)
                return sock

            second = asyncio.create_task(client("2"))
            await until(lambda: pool.queue.counters.current == 1)
            third = asyncio.create_task(client("3"))
            await until(lambda: pool.queue.counters.current == 2)
            first.close()
            pool.relay_ended(label, 0, 0)  # one slot: the oldest waiter gets it
            (await second).close()
            assert served == ["2"] and pool.queue.counters.current == 1
            pool.relay_ended(label, 0, 0)
            (await third).close()
            assert served == ["2", "3"]
            pool.relay_ended(label, 0, 0)
            counts = pool.queue_snapshot()
            assert (counts["current"], counts["max"], counts["queued"]) == (0, 2, 2)
            assert counts["timed_out"] == counts["refused"] == 0
            assert [(kind, f["client"], f["waiting"]) for kind, f in events] == [
                ("queued", "127.0.0.1:2", 1),
                ("queued", "127.0.0.1:3", 2),
            ]

    run(main())


def test_a_newcomer_waits_behind_the_queue_even_when_a_slot_is_free(
    run: Runner, serve: Serve
) -> None:
    # The freed slot is promised to the head of the queue, not to whoever asks next.
    async def main() -> None:
        async with serve(EchoConnection) as backend:
            pool = full_pool([f"{backend.endpoint},maxconn=1"], [], timeout=10)
            first, label = await pool.connect("127.0.0.1:1")
            order: list[str] = []

            async def client(name: str) -> None:
                sock, _ = await pool.connect(f"127.0.0.1:{name}")
                order.append(name)
                sock.close()
                pool.relay_ended(label, 0, 0)

            waiting = asyncio.create_task(client("queued"))
            await until(lambda: pool.queue.counters.current == 1)
            first.close()
            pool.relay_ended(label, 0, 0)
            late = asyncio.create_task(client("late"))  # before "queued" has run again
            await asyncio.gather(waiting, late)
            assert order == ["queued", "late"]

    run(main())


def test_a_queued_client_times_out_with_an_event(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as backend:
            events: list[tuple[str, dict[str, Any]]] = []
            pool = full_pool([f"{backend.endpoint},maxconn=1"], events, timeout=0.2)
            held, _ = await pool.connect("127.0.0.1:1")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(OperationTimeout, match=r"stayed full for 0\.2s"):
                await pool.connect("127.0.0.1:2")
            assert loop.time() - started >= 0.19
            held.close()
            assert [(kind, f["client"]) for kind, f in events] == [
                ("queued", "127.0.0.1:2"),
                ("queue_timeout", "127.0.0.1:2"),
            ]
            counts = pool.queue_snapshot()
            assert (counts["current"], counts["queued"], counts["timed_out"]) == (0, 1, 1)

    run(main())


def test_a_full_queue_refuses_at_once_and_no_queue_is_the_old_refusal(
    run: Runner, serve: Serve
) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as backend:
            events: list[tuple[str, dict[str, Any]]] = []
            pool = full_pool([f"{backend.endpoint},maxconn=1"], events, limit=1, timeout=10)
            held, label = await pool.connect("127.0.0.1:1")
            waiting = asyncio.create_task(pool.connect("127.0.0.1:2"))
            await until(lambda: pool.queue.counters.current == 1)
            with pytest.raises(ConnectError, match=r"so is the queue \(1 waiting\)"):
                await pool.connect("127.0.0.1:3")
            assert [(kind, f["client"]) for kind, f in events] == [
                ("queued", "127.0.0.1:2"),
                ("queue_full", "127.0.0.1:3"),
            ]
            held.close()
            pool.relay_ended(label, 0, 0)
            (await waiting)[0].close()
            assert pool.queue_snapshot()["refused"] == 1

            none = full_pool([f"{backend.endpoint},maxconn=1"], events, limit=0)
            held, _ = await none.connect("127.0.0.1:1")
            with pytest.raises(ConnectError, match=r"maxconn reached"):
                await none.connect("127.0.0.1:2")
            held.close()
            assert none.queue_snapshot()["queued"] == 0

    run(main())


def test_a_backend_added_while_clients_wait_takes_them(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as one, serve(EchoConnection) as two:
            pool = full_pool([f"{one.endpoint},maxconn=1"], [], timeout=10)
            held, _ = await pool.connect("127.0.0.1:1")
            waiting = asyncio.create_task(pool.connect("127.0.0.1:2"))
            await until(lambda: pool.queue.counters.current == 1)
            pool.apply(parse_backends([f"{one.endpoint},maxconn=1", str(two.endpoint)]))
            sock, label = await waiting
            assert label == str(two.endpoint)
            sock.close()
            held.close()

    run(main())

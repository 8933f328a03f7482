"""The relay's direct path (issue 19 item 6): a short connection set up at accept, with no
task, when nothing has to wait; anything that waits still goes through the connection's task.

Real sockets on loopback: a netkit echo backend, a RelayServer in front of it, through a
fixed upstream (proxy) and a balanced pool (lb).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.balance.backends import Backend
from netkit.core.faults import Latency
from netkit.errors import ConnectError
from netkit.net.connect import dial_now
from netkit.net.echo import EchoConnection
from netkit.net.idle import IdleTimer
from netkit.net.relay import RelayOptions
from netkit.net.splice import SpliceRelay
from netkit.net.upstreams import Upstream, balanced_pool
from tests.net.conftest import Runner, Serve
from tests.net.pairs import read_until_eof, wait_until
from tests.net.test_relay import RelayHarness, echoes, relay_to


@contextlib.asynccontextmanager
async def echo_relay(
    serve: Serve,
    options: RelayOptions,
    upstream: Callable[[TCPEndpoint | UnixEndpoint], Upstream] | None = None,
) -> AsyncIterator[RelayHarness]:
    """A relay in front of an echo backend (through ``upstream(backend)`` when given)."""
    async with serve(EchoConnection) as backend:
        connector = upstream(backend.endpoint) if upstream is not None else None
        async with relay_to(backend.endpoint, options, connector) as relay:
            yield relay


def test_dial_now_connects_at_once_on_loopback_and_refuses_at_once(run: Runner[None]) -> None:
    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            endpoint = TCPEndpoint("127.0.0.1", listener.getsockname()[1])
            dialled = dial_now(
                endpoint, [(socket.AF_INET, (endpoint.host, endpoint.port))], timeout=5
            )
            assert isinstance(dialled, socket.socket)  # no coroutine: nothing to wait for
            with dialled:
                assert dialled.getpeername() == listener.getsockname()
                assert dialled.getblocking() is False
        with pytest.raises(ConnectError, match="connection refused"):
            dial_now(endpoint, [(socket.AF_INET, (endpoint.host, endpoint.port))], timeout=5)

    run(main())


@pytest.mark.parametrize("pool", [False, True], ids=["fixed", "balanced"])
def test_a_short_connection_is_relayed_with_no_task(
    run: Runner[None], serve: Serve, pool: bool
) -> None:
    async def main() -> None:
        lb = (lambda b: balanced_pool([Backend(b)], check_interval=3600)) if pool else None
        async with echo_relay(serve, RelayOptions(), lb) as relay:
            client = await relay.connect()
            assert await echoes(client, b"short")
            server = relay.server
            (live,) = server.connections.values()
            assert isinstance(live, SpliceRelay) and not server._tasks  # set up at accept
            client.shutdown(socket.SHUT_WR)
            assert await read_until_eof(client) == b""
            client.close()
            (closed,) = await relay.wait_events("closed")
            assert not server.connections and not server._watched
        assert closed["end"] == "closed" and closed["path"] == "splice"
        assert (closed["bytes_up"], closed["bytes_down"]) == (5, 5)
        assert relay.server.stats.bytes_up == relay.server.stats.bytes_down == 5

    run(main())


def test_a_fault_set_later_moves_a_direct_relay_to_the_buffered_path(
    run: Runner[None], serve: Serve
) -> None:
    # The relay was set up at accept with no task (no fault then); a data fault arrives:
    # it hands over, a task takes over, and every byte still arrives in order.
    async def main() -> None:
        async with echo_relay(serve, RelayOptions(seed=1)) as relay:
            client = await relay.connect()
            assert await echoes(client, b"before")
            server = relay.server
            assert not server._tasks
            server.faults.add(Latency(1))
            await wait_until(lambda: bool(server._tasks))
            assert await echoes(client, b"after the hand-over")
            client.close()
            (closed,) = await relay.wait_events("closed")
        assert closed["path"] == "splice+buffered"
        assert closed["bytes_up"] == closed["bytes_down"] == len(b"before") + 19

    run(main())


def test_an_idle_direct_relay_is_closed_by_its_timer(run: Runner[None], serve: Serve) -> None:
    async def main() -> None:
        async with echo_relay(serve, RelayOptions(idle_timeout=0.2)) as relay:
            client = await relay.connect()
            assert await echoes(client, b"then silence")
            assert await read_until_eof(client) == b""  # closed with a FIN, not reset
            client.close()
            (closed,) = await relay.wait_events("closed")
        assert closed["end"] == "idle timeout"

    run(main())


def test_a_quiet_hook_gets_no_closed_event_for_a_clean_close(
    run: Runner[None], serve: Serve
) -> None:
    # The command's printer without --json shows a closed connection only when bytes went
    # undelivered: a clean close costs it no event (a hook without the attribute gets all).
    async def main() -> None:
        async with echo_relay(serve, RelayOptions()) as relay:
            seen: list[str] = []

            def quiet(event: str, fields: dict[str, object]) -> None:
                seen.append(event)

            quiet.quiet_events = frozenset({"closed"})  # type: ignore[attr-defined]
            relay.server.on_event = quiet
            client = await relay.connect()
            assert await echoes(client, b"x")
            client.close()
            await wait_until(lambda: relay.server.stats.bytes_up == 1)
            assert not relay.server.connections
        assert "closed" not in seen

    run(main())


def test_a_relayed_connection_leaves_no_reference_cycle(run: Runner[None], serve: Serve) -> None:
    # A relay that ends is freed by reference counting: thousands end a second, and cycles
    # left to the garbage collector cost collections.
    async def main() -> None:
        async with echo_relay(serve, RelayOptions(idle_timeout=600)) as relay:
            gc.collect()
            gc.disable()
            try:
                for n in range(1, 21):
                    client = await relay.connect()
                    assert await echoes(client, b"cycle?")
                    client.close()
                    await wait_until(lambda n=n: relay.server.stats.bytes_down == 6 * n)
                await asyncio.sleep(0)
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                left = [o for o in gc.garbage if isinstance(o, SpliceRelay | IdleTimer)]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
        assert left == []

    run(main())

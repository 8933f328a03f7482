"""ChaosConnection in-process: a StreamServer in the test's event loop, websockets clients."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import connect

from netkit.core.ws.chaos import parse_chaos_specs
from netkit.core.ws.server import ServerHandshake
from netkit.net.ws import WSTimeouts
from netkit.net.ws_chaos import ChaosConnection
from netkit.net.ws_server import Mode, Room
from tests.net.test_ws import catch_loop_errors

if TYPE_CHECKING:
    from conftest import Runner, Serve


def chaos_server(
    specs: Sequence[str],
    events: list[tuple[str, dict[str, Any]]],
    *,
    mode: Mode = Mode.ECHO,
    max_size: int = 1 << 20,
) -> Callable[[], ChaosConnection]:
    faults, room, numbers = parse_chaos_specs(specs), Room(), itertools.count(1)
    return lambda: ChaosConnection(
        ServerHandshake(),
        chaos=faults,
        seed=3,
        numbers=numbers.__next__,
        mode=mode,
        room=room,
        log=lambda name, fields: events.append((name, fields)),
        log_messages=False,
        max_size=max_size,
        timeouts=WSTimeouts(ping_interval=None),
    )


def named(events: list[tuple[str, dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    return [fields for event, fields in events if event == name]


def test_broadcast_fragments_what_each_member_receives(run: Runner, serve: Serve) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def main() -> None:
        factory = chaos_server(["fragment=4", "interleave=1"], events, mode=Mode.BROADCAST)
        async with serve(factory) as h:
            url = f"ws://127.0.0.1:{h.endpoint.port}/"
            # A member joins the room before its 101 goes out: once connected, both are in.
            async with connect(url) as alice, connect(url) as bob:
                await alice.send("hello bob")
                assert await bob.recv() == "hello bob"
                await bob.send("héllo ∑ everyone")
                assert await alice.recv() == "héllo ∑ everyone"

    run(main())
    fragments = [f for f in named(events, "fault") if f["fault"] == "fragment"]
    assert [f["frames"] for f in fragments] == [4, 4]


def test_a_late_pong_still_waiting_when_the_client_leaves(run: Runner, serve: Serve) -> None:
    made: list[ChaosConnection] = []

    async def main() -> list[dict[str, Any]]:
        errors = catch_loop_errors()
        events: list[tuple[str, dict[str, Any]]] = []
        factory = chaos_server(["late-pong=30s"], events)
        async with serve(lambda: made.append(factory()) or made[-1]) as h:
            url = f"ws://127.0.0.1:{h.endpoint.port}/"
            async with connect(url) as ws:
                waiter = await ws.ping()
                await ws.send("bye")
                assert await ws.recv() == "bye"
                assert not waiter.done()  # the pong is still held by the server
                assert len(made[0]._handles) == 1
            await h.wait_events("disconnected")
        return errors

    assert run(main()) == []
    assert made[0]._handles == set()  # the pong's timer went with the connection
    assert made[0].close_code == 1000

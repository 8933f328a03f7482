"""Fault timelines through the public API: proxy(timeline=...), udp_proxy(timeline=...) and
handle.run_timeline(), typed steps and text, over real loopback sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import netkit
from netkit import ConfigError, Latency, Loss, Step, TimedFault, Timeline
from tests.api.test_api_udp_proxy import Client

WAIT = 5.0


class Steps:
    """The events a proxy reports; wait for one step's."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        self.events.append((event, fields))
        self.changed.set()

    def of(self, name: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == name]

    async def reached(self, index: int) -> None:
        async with asyncio.timeout(WAIT):
            while not any(f["index"] == index for f in self.of("timeline_step")):
                self.changed.clear()
                await self.changed.wait()


async def trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    started = time.perf_counter()
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    return time.perf_counter() - started


def test_proxy_runs_a_timeline_from_the_start_of_its_block(run) -> None:
    steps = Steps()
    timeline = Timeline([Step(0, [Latency(150)]), Step(0.3)])  # typed: 150 ms, then clear

    async def main() -> list[float]:
        async with (
            netkit.echo_server() as echo,
            netkit.proxy(echo, timeline=timeline, on_event=steps) as proxy,
        ):
            assert [name for name, _ in proxy.faults] == ["timeline_latency"]
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            times = [await trip(reader, writer)]
            await steps.reached(1)
            times.append(await trip(reader, writer))
            writer.close()
            return times

    slow, fast = run(main())
    assert slow >= 0.150 and fast < 0.100, (slow, fast)
    assert [f["index"] for f in steps.of("timeline_step")] == [0, 1]
    assert steps.of("timeline_end") == [{"cycles": 1, **steps.of("timeline_end")[0]}]


def test_run_timeline_on_a_udp_proxy_with_text_and_timed_faults(run) -> None:
    steps = Steps()

    async def main() -> tuple[bytes, list[Any]]:
        async with (
            netkit.udp_echo_server("127.0.0.1:0") as echo,
            netkit.udp_proxy(echo.address, on_event=steps) as proxy,
        ):
            timeline = "0s loss=100%,down; 200ms clear"
            running = proxy.run_timeline(timeline, timed=[TimedFault(Latency(1), duration=0.1)])
            assert {name for name, _ in proxy.faults} == {"timeline_loss_downstream", "latency"}
            await steps.reached(1)
            client = Client("127.0.0.1", proxy.port)
            try:
                reply = await client.exchange(b"back")
            finally:
                client.close()
            await running.wait()
            return reply, proxy.faults

    reply, left = run(main())
    assert reply == b"back" and left == []


def test_a_timeline_a_relay_cannot_apply_is_refused_naming_the_step(run) -> None:
    async def main() -> None:
        async with (
            netkit.udp_echo_server("127.0.0.1:0") as echo,
            netkit.udp_proxy(echo.address) as proxy,
        ):
            with pytest.raises(ConfigError, match=r"timeline step 2 \(at 1s\): --slice"):
                proxy.run_timeline(Timeline([Step(0, [Loss(0.1)]), Step(1, [netkit.Slice(10)])]))
            with pytest.raises(ConfigError, match=r"timeline step 1 \('0s lossy=1'\)"):
                proxy.run_timeline("0s lossy=1")
            assert proxy.faults == []

    run(main())


def test_the_block_stops_a_timeline_that_repeats_forever(run) -> None:
    steps = Steps()

    async def main() -> tuple[netkit.TimelineRun, int, int]:
        async with (
            netkit.echo_server() as echo,
            netkit.proxy(echo, on_event=steps) as proxy,
        ):
            running = proxy.run_timeline("0s latency=1; 50ms clear", repeat="forever")
            await steps.reached(1)
        seen = len(steps.events)
        await asyncio.sleep(0.12)  # two more cycles' time: no step may come
        return running, seen, len(steps.events)

    running, seen, after = run(main())
    assert not running.running and steps.of("timeline_repeat") and after == seen

"""Fault timelines on running relays, in process: each step fires on time (its event within
50 ms of its offset, timed here with perf_counter) and changes what live connections and flows
get; TCP and UDP relays, asyncio and uvloop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from netkit.core.faults import Latency
from netkit.core.timeline import TimedFault, Timeline
from netkit.errors import ConfigError
from netkit.net.relay import RelayOptions, RelayServer
from netkit.net.timeline import TimelineRun, timeline_running
from tests.net.conftest import Runner
from tests.net.test_relay_faults import echo_server, relay_to
from tests.net.test_relay_live import round_trip
from tests.net.test_udp_relay import recv, relay

TOLERANCE = 0.050  # the bound on a step's lateness


@dataclass
class Recorder:
    """Every event a relay reports, with the perf_counter time it arrived."""

    began: float = field(default_factory=time.perf_counter)
    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        self.events.append((event, fields, time.perf_counter() - self.began))
        self.changed.set()

    def append(self, item: tuple[str, dict[str, Any]]) -> None:
        """As an event list (what relay_to hands its events to)."""
        self(*item)

    @property
    def sink(self) -> Any:
        """Itself, where relay_to takes an event list."""
        return self

    def named(self, name: str) -> list[tuple[dict[str, Any], float]]:
        return [(f, t) for e, f, t in self.events if e == name]

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    async def step(self, index: int, cycle: int = 0) -> None:
        """Wait for a step's event."""
        await self.until(
            lambda: any(
                f["index"] == index and f["cycle"] == cycle for f, _ in self.named("timeline_step")
            )
        )


def on_time(recorder: Recorder, began: float) -> list[tuple[float, float]]:
    """(due, measured) for every timeline event, seconds since the run began."""
    offset = began - recorder.began
    return [(f["due_s"], t - offset) for e, f, t in recorder.events if e.startswith("timeline_")]


def assert_on_time(pairs: list[tuple[float, float]]) -> None:
    for due, measured in pairs:
        assert due <= measured + 0.001 and measured - due < TOLERANCE, pairs


def test_tcp_steps_fire_on_time_and_change_live_connections(run: Runner) -> None:
    # Latency from 0 s, none from 0.3 s, latency again from 0.6 s (+: added), clear at 0.9 s.
    timeline = Timeline.parse(
        "0s latency=150ms,down; 300ms clear; 600ms + latency=150ms; 900ms clear"
    )
    recorder = Recorder()

    async def main() -> tuple[list[float], float]:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(), None) as (server, port),
        ):
            server.on_event = recorder
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            began = time.perf_counter()
            async with timeline_running(server, timeline) as running:
                assert running is not None
                times = [await round_trip(reader, writer)]  # under step 0
                await recorder.step(1)
                times.append(await round_trip(reader, writer))
                await recorder.step(2)
                times.append(await round_trip(reader, writer))
                await running.wait()
                assert list(server.faults) == []
            writer.close()
            return times, began

    times, began = run(main())
    assert times[0] >= 0.150 and times[1] < 0.100 and times[2] >= 0.150, times
    steps = recorder.named("timeline_step")
    assert [(f["index"], f["at_s"]) for f, _ in steps] == [(0, 0), (1, 0.3), (2, 0.6), (3, 0.9)]
    assert steps[0][0]["faults"][0]["name"] == "timeline_latency_downstream"
    assert len(recorder.named("timeline_end")) == 1
    assert_on_time(on_time(recorder, began))


def test_udp_steps_fire_on_time_and_change_flows(run: Runner) -> None:
    timeline = Timeline.parse("0s loss=100%; 300ms clear; 600ms loss=100%,down; 900ms clear")
    recorder = Recorder()

    async def main() -> tuple[list[bool], float]:
        async with relay() as r:
            r.server.on_event = recorder
            with r.client() as client:
                began = time.perf_counter()
                async with timeline_running(r.server, timeline) as running:
                    assert running is not None
                    client.send(b"lost")  # under step 0: lost
                    await recorder.until(lambda: r.server.stats.faults >= 1)
                    await recorder.step(1)
                    client.send(b"back")
                    replies = [await recv(client) == b"back"]
                    await recorder.step(2)
                    client.send(b"down")
                    await recorder.until(lambda: r.server.stats.faults >= 2)
                    await recorder.step(3)
                    client.send(b"again")
                    replies.append(await recv(client) == b"again")
                    await running.wait()
        return replies, began

    replies, began = run(main())
    assert replies == [True, True]
    steps = recorder.named("timeline_step")
    assert [f["faults"][0]["fault"] for f, _ in steps if f["faults"]] == ["loss", "loss"]
    assert_on_time(on_time(recorder, began))


def test_a_repeating_timeline_starts_over_on_time(run: Runner) -> None:
    timeline = Timeline.parse("0s latency=5ms; 100ms latency=10ms; 200ms clear", repeat=2)
    recorder = Recorder()

    async def main() -> float:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(), recorder.sink) as (server, _),
        ):
            began = time.perf_counter()
            run_ = TimelineRun(server, timeline)
            run_.start()
            await run_.wait()
            assert run_.done and list(server.faults) == []
            return began

    began = run(main())
    names = [
        (e, f.get("index"), f.get("cycle"))
        for e, f, _ in recorder.events
        if e.startswith("timeline_")
    ]
    assert names == [
        ("timeline_step", 0, 0), ("timeline_step", 1, 0), ("timeline_step", 2, 0),
        ("timeline_repeat", None, 1),
        ("timeline_step", 0, 1), ("timeline_step", 1, 1), ("timeline_step", 2, 1),
        ("timeline_repeat", None, 2),
        ("timeline_step", 0, 2), ("timeline_step", 1, 2), ("timeline_step", 2, 2),
        ("timeline_end", None, None),
    ]  # fmt: skip
    assert [f["due_s"] for f, _ in recorder.named("timeline_step")] == pytest.approx(
        [0, 0.1, 0.2, 0.2, 0.3, 0.4, 0.4, 0.5, 0.6]
    )
    assert_on_time(on_time(recorder, began))


def test_for_removes_a_timed_fault_on_time(run: Runner) -> None:
    recorder = Recorder()

    async def main() -> tuple[float, list[Any]]:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(), recorder.sink) as (server, _),
        ):
            began = time.perf_counter()
            async with timeline_running(server, timed=[TimedFault(Latency(5), duration=0.2)]):
                assert [name for name, _ in server.faults] == ["latency"]  # there at once
                await recorder.until(lambda: bool(recorder.named("fault_removed")))
                return time.perf_counter() - began, list(server.faults)

    took, left = run(main())
    assert left == [] and 0.2 <= took < 0.2 + TOLERANCE, took
    assert recorder.named("timeline_step") == []  # timed faults alone are no timeline


def test_stopping_a_run_leaves_the_faults_and_reports_nothing_more(run: Runner) -> None:
    recorder = Recorder()

    async def main() -> list[tuple[str, Any]]:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(), recorder.sink) as (server, _),
        ):
            run_ = TimelineRun(server, Timeline.parse("0s latency=5; 200ms clear"))
            run_.start()
            await run_.stop()
            await asyncio.sleep(0.3)  # past the second step: it must not come
            return list(server.faults)

    assert run(main()) == [("timeline_latency", Latency(5))]
    assert len(recorder.named("timeline_step")) == 1


def test_a_step_the_relay_cannot_apply_is_refused_before_it_runs(run: Runner) -> None:
    async def main() -> None:
        async with relay() as r:
            with pytest.raises(ConfigError, match=r"timeline step 2 \(at 1s\): --blackhole-after"):
                TimelineRun(r.server, Timeline.parse("0s loss=5%; 1s blackhole"))
            assert list(r.server.faults) == []
        async with echo_server() as upstream, relay_to(upstream, RelayOptions()) as (server, _):
            assert isinstance(server, RelayServer)
            with pytest.raises(ConfigError, match=r"timeline step 1 \(at 0s\): --loss"):
                TimelineRun(server, Timeline.parse("0s loss=5%"))

    run(main())

"""Durations are measured with a high-resolution clock, under both loops (issue 13 item 6).

uvloop's ``loop.time()`` has millisecond resolution: a round trip over loopback measured with
it reads 0.000 or 1.000 ms. Every duration netkit reports comes from ``time.perf_counter``
(or ``perf_counter_ns``), and a latency is never recorded from a timer that fired early.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import WSURL
from netkit.core.bench.plan import LoadPlan
from netkit.core.ws.handshake import ClientHandshake, ServerHandshake
from netkit.net.bench.worker import Target, run_worker
from netkit.net.echo import EchoConnection
from netkit.net.health import run_check
from netkit.net.ws import WebSocketClientConnection, WSTimeouts, connect_ws
from netkit.net.ws_server import Mode, ModeConnection, Room

if TYPE_CHECKING:
    from conftest import Runner, Serve

NETKIT = Path(__file__).resolve().parents[2] / "netkit"


def whole_ms(seconds: float) -> bool:
    """True when ``seconds`` is a whole number of milliseconds (as a 1 ms clock gives)."""
    return abs(seconds * 1000 - round(seconds * 1000)) < 1e-9


def ws_echo() -> Any:
    return lambda: ModeConnection(
        ServerHandshake(), mode=Mode.ECHO, room=Room(), log=None, log_messages=False,
        max_size=1 << 20, timeouts=WSTimeouts(),
    )  # fmt: skip


def test_websocket_ping_rtts_have_sub_millisecond_resolution(run: Runner, serve: Serve) -> None:
    """ws-client's /ping (ping()) and the keepalive's last_rtt (send_ping) alike."""

    class Keepalive(WebSocketClientConnection):
        rtts: list[float]

        def on_pong(self, payload: Any) -> None:
            super().on_pong(payload)
            self.rtts.append(self.last_rtt)

    async def main() -> tuple[list[float], list[float]]:
        async with serve(ws_echo()) as h:
            url = WSURL(False, "127.0.0.1", h.endpoint.port, "/")
            ws = await connect_ws(
                url,
                lambda: Keepalive(ClientHandshake(url.host_header, url.resource)),
                ssl_context=None,
            )
            assert isinstance(ws, Keepalive)
            ws.rtts = []
            pings = []
            for _ in range(20):
                rtt = await ws.ping()
                assert rtt is not None
                pings.append(rtt)
            for _ in range(20):
                before = len(ws.rtts)
                ws.send_ping()
                while len(ws.rtts) == before:
                    await ws.ping()  # a second ping after it: its pong comes after ours
            ws.abort()
            return pings, ws.rtts

    pings, keepalive = run(main())
    for rtts in (pings, keepalive):
        assert all(0 <= r < 1.0 for r in rtts), rtts
        assert not all(whole_ms(r) for r in rtts), rtts


def test_health_check_times_have_sub_millisecond_resolution(run: Runner, serve: Serve) -> None:
    """lb's check times and its ``last_check`` ("passed in 0.0 ms" under uvloop before)."""

    async def main() -> list[float]:
        async with serve(EchoConnection) as h:
            results = [await run_check(h.endpoint, timeout=2.0) for _ in range(10)]
        assert all(r.ok for r in results)
        return [r.seconds for r in results]

    seconds = run(main())
    assert not all(whole_ms(s) for s in seconds), seconds


def test_connect_open_loop_records_no_latency_from_an_early_timer(
    run: Runner, serve: Serve
) -> None:
    """bench --scenario connect --rate: 88 of 400 samples were exactly 0 ns under uvloop,
    because an attempt began when the loop's timer fired, up to 1 ms before its intended
    time, and its latency was counted from that intended time."""

    async def main() -> Any:
        async with serve(EchoConnection) as h:
            p = LoadPlan(
                scenario="connect", connections=2, total_connections=2, duration=0.5, rate=400
            )
            return await run_worker(p, Target(h.endpoint), handle_signals=False)

    r = run(main())
    assert r.requests > 100 and not r.errors
    assert r.latency.min > 0, "a latency of exactly 0 ns was recorded"
    # A loopback connect takes tens of microseconds at the very least.
    assert r.latency.min >= 10_000, r.latency.min


# The loop's clock read as the first operand of a subtraction is a duration being measured.
_LOOP_CLOCK_MEASURE = re.compile(r"(loop|_loop|get_running_loop\(\))\.time\(\)\s*-")


def test_the_loop_clock_is_used_for_scheduling_only() -> None:
    """``loop.time()`` may set deadlines and timers, never measure a duration (STYLE.md 13)."""
    offenders = []
    for path in sorted(NETKIT.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _LOOP_CLOCK_MEASURE.search(line):
                offenders.append(f"{path.relative_to(NETKIT.parent)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    ("line", "measures"),
    [
        ("seconds = loop.time() - start", True),
        ("self.last_rtt = self._loop.time() - self._ping_sent_at", True),
        ("x = asyncio.get_running_loop().time() - t0", True),
        ("remaining = self.last + self.timeout - self.loop.time()", False),
        ("deadline = loop.time() + seconds", False),
    ],
)
def test_the_loop_clock_pattern(line: str, measures: bool) -> None:
    assert bool(_LOOP_CLOCK_MEASURE.search(line)) is measures

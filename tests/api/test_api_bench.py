"""netkit.bench and netkit.bench_sync against netkit's own servers on loopback: the result's
counts, percentiles and HDR histogram, thresholds, and the errors."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

import netkit
from netkit import BenchResult, CheckFailed, ConfigError


def test_bench_echo_over_tcp(run) -> None:
    async def main() -> BenchResult:
        async with netkit.echo_server() as server:
            return await netkit.bench(server.address, connections=2, requests=200, size=100)

    result = run(main())
    assert result.requests == 200 and result.error_count == 0
    assert result.latency.count == 200 and result.latency.hdr.get_total_count() == 200
    lat = result.latency_ms()
    assert lat is not None and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert result.bytes_sent == result.bytes_received == 200 * 100
    assert result.as_dict()["histogram"]["count"] == 200


def test_bench_stream_reverse_against_a_stream_server(run) -> None:
    async def main() -> tuple[BenchResult, dict]:
        async with netkit.echo_server(mode="stream") as server:
            result = await netkit.bench(
                server.address, scenario="stream", direction="reverse", duration=0.3
            )
        return result, server.stats

    result, stats = run(main())
    assert result.direction == "reverse" and not result.errors
    assert result.bytes_received == result.peer_sent > 0
    # The server wrote its answer line and result record besides the data.
    assert stats["bytes_out"] == result.peer_sent + 19 + 32
    with pytest.raises(ConfigError, match="mode 'sink'"):
        run(netkit.echo_server(mode="sink").__aenter__())
    with pytest.raises(ConfigError, match="choose one of forward, reverse, bidir"):
        run(netkit.bench("127.0.0.1:9", scenario="stream", direction="up"))


def test_bench_websocket_and_udp(run) -> None:
    async def main() -> tuple[BenchResult, BenchResult]:
        async with netkit.ws_server() as ws, netkit.udp_echo_server() as udp:
            over_ws = await netkit.bench(ws.url, requests=50)
            over_udp = await netkit.bench(f"udp://{udp.address}", requests=50)
            return over_ws, over_udp

    over_ws, over_udp = run(main())
    assert (over_ws.transport, over_ws.requests) == ("ws", 50)
    assert (over_udp.transport, over_udp.requests) == ("udp", 50)


def test_a_udp_bitrate_test_against_a_sink(run) -> None:
    async def main() -> tuple[BenchResult, dict[str, object]]:
        async with netkit.udp_echo_server(mode="sink", drop_every=3) as sink:
            result = await netkit.bench(
                f"udp://{sink.address}", bitrate="1M", requests=60, size=100, check=False
            )
            return result, sink.stats

    result, stats = run(main())
    tally = result.datagrams
    assert tally is not None
    assert (tally.sent, tally.received, tally.lost, tally.loss_pct) == (60, 40, 20, 100 / 3)
    assert stats["dropped_on_purpose"] == 20 and stats["reports"] == 1
    with pytest.raises(CheckFailed, match="loss_pct"):
        run(_lossy_gate())


async def _lossy_gate() -> None:
    async with netkit.udp_echo_server(mode="sink", drop_every=2) as sink:
        await netkit.bench(
            f"udp://{sink.address}", bitrate=800_000, requests=20, size=100, fail_if=["loss_pct>1"]
        )


def test_thresholds_hold_or_raise(run) -> None:
    async def main() -> None:
        async with netkit.echo_server() as server:
            held = await netkit.bench(server.address, requests=20, fail_if=["errors>0"])
            assert held.requests == 20
            with pytest.raises(CheckFailed, match="threshold"):
                await netkit.bench(server.address, requests=20, fail_if=["rps<1e12"])

    run(main())


def test_a_run_in_which_nothing_succeeded_fails_unless_unchecked(run) -> None:
    async def main() -> BenchResult:
        async with netkit.echo_server(tls=True) as server:  # plain TCP to a TLS port
            with pytest.raises(CheckFailed, match="no request succeeded"):
                await netkit.bench(server.address, requests=5, timeout=1)
            return await netkit.bench(server.address, requests=5, timeout=1, check=False)

    result = run(main())
    assert result.requests == 0 and result.error_count > 0


def test_nothing_to_connect_to(run) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(netkit.ConnectError, match="refused"):
        run(netkit.bench(f"127.0.0.1:{port}", requests=1, timeout=1))


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"scenario": "flood"}, "scenario 'flood'"),
        ({"connections": 0}, "connections"),
        ({"duration": 1, "requests": 5}, "not both"),
        ({"scenario": "stream", "rate": 10}, "rate"),
        ({"fail_if": ["p99>>5"]}, "fail_if"),
    ],
)
def test_bad_settings_are_usage_errors(run, settings: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        run(netkit.bench("127.0.0.1:9", **settings))  # type: ignore[arg-type]


def test_bench_sync_from_plain_code() -> None:
    # A server on its own loop in a thread; bench_sync runs its own loop in this one.
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    address: list[str] = []

    async def serve() -> None:
        async with netkit.echo_server() as server:
            address.append(server.address)
            stop.append(asyncio.Event())
            ready.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)
        result = netkit.bench_sync(address[0], requests=30)
        assert result.requests == 30 and result.error_count == 0
    finally:
        if stop:
            loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


def test_bench_sync_inside_a_running_loop_says_to_await(run) -> None:
    async def main() -> None:
        netkit.bench_sync("127.0.0.1:9", requests=1)

    with pytest.raises(netkit.UsageError, match=r"await netkit\.bench"):
        run(main())

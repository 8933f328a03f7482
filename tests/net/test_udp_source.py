"""Tests for netkit.net.udp_source (a sink's reverse bitrate tests) and ``bench -b --reverse``
over real UDP sockets on loopback: the cookie a forged address never sees, a test that stops
when its client goes quiet, the cap on tests at once, and the exact loss the client counts
when the sink skips every Nth datagram."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

import pytest

import netkit.net.udp_source
from netkit.core.addresses import UDPEndpoint
from netkit.core.bench.bitrate import Control, ControlKind, parse_control
from netkit.core.bench.plan import LoadPlan, Scenario
from netkit.core.probe import MAGIC
from netkit.core.streamtest import Direction
from netkit.errors import ConfigError, ConnectError
from netkit.net.bench.worker import Target, run_worker
from netkit.net.sockets import create_udp_socket
from netkit.net.udp_sink import UDPSinkServer

if TYPE_CHECKING:
    from conftest import Runner

LOCAL = UDPEndpoint("127.0.0.1", 0)


def client(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", port))
    return sock


async def answer_to(sock: socket.socket, control: Control) -> Control:
    """Send ``control``; the next control datagram that comes back (test datagrams skipped)."""
    sock.send(control.encode())
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        while True:
            data = await loop.sock_recv(sock, 65536)
            if not data.startswith(MAGIC):
                answer = parse_control(data)
                assert answer is not None
                return answer


def reverse(token: int, cookie: int = 0, bitrate: int = 100_000, size: int = 100) -> Control:
    return Control(ControlKind.REVERSE, token, bitrate=bitrate, size=size, cookie=cookie)


def test_only_the_cookie_starts_a_test_and_silence_ends_it(run: Runner) -> None:
    async def main() -> None:
        sock, _ = create_udp_socket(LOCAL, bind=True)
        sink = UDPSinkServer(sock)
        sink.start()
        me = client(sock.getsockname()[1])
        try:
            first = await answer_to(me, reverse(7))
            assert first.kind is ControlKind.COOKIE and first.cookie
            wrong = await answer_to(me, reverse(7, cookie=first.cookie ^ 1))
            assert wrong == first  # a wrong cookie gets the cookie again, and nothing starts
            assert not sink.sources.running
            other = await answer_to(me, reverse(8))
            assert other.cookie != first.cookie  # one cookie per token
            started = await answer_to(me, reverse(7, cookie=first.cookie))
            assert started == Control(ControlKind.STARTED, 7)
            source = sink.sources.running[me.getsockname()]
            # no keepalive from here on: the sink stops within KEEPALIVE_S
            async with asyncio.timeout(5):
                await source.done.wait()
            received = 0
            while True:
                try:
                    data = me.recv(65536)
                except BlockingIOError:
                    break
                received += data.startswith(MAGIC)
            stopped = await answer_to(me, Control(ControlKind.STOP, 7))
            assert stopped == Control(ControlKind.STOPPED, 7, sent=source.sent)
            assert stopped.sent == received > 0
            # a resent STOP gets the same answer; another token gets none
            assert await answer_to(me, Control(ControlKind.STOP, 7)) == stopped
            unknown = await answer_to(me, Control(ControlKind.STOP, 8))
            assert unknown.kind is ControlKind.UNKNOWN
            # a late REVERSE of the finished test does not start it again
            late = await answer_to(me, reverse(7, cookie=first.cookie))
            assert late.kind is ControlKind.UNKNOWN and not sink.sources.running
        finally:
            me.close()
            sink.stop()
            sock.close()

    run(main())


def test_tests_at_once_are_capped(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netkit.net.udp_source, "MAX_SOURCES", 2)

    async def main() -> list[ControlKind]:
        sock, _ = create_udp_socket(LOCAL, bind=True)
        sink = UDPSinkServer(sock)
        sink.start()
        clients = [client(sock.getsockname()[1]) for _ in range(3)]
        kinds = []
        try:
            for token, me in enumerate(clients):
                cookie = (await answer_to(me, reverse(token))).cookie
                kinds.append((await answer_to(me, reverse(token, cookie=cookie))).kind)
        finally:
            for me in clients:
                me.close()
            sink.stop()
            sock.close()
        return kinds

    started, busy = ControlKind.STARTED, ControlKind.UNKNOWN
    assert run(main()) == [started, started, busy]


def reverse_plan(**kw: Any) -> LoadPlan:
    kw.setdefault("connections", 1)
    kw.setdefault("total_connections", kw["connections"])
    return LoadPlan(
        scenario=Scenario.BITRATE, direction=Direction.REVERSE, size=200, timeout=2.0, **kw
    )


def test_bench_reverse_counts_the_exact_loss_of_a_sink_skipping_every_nth(run: Runner) -> None:
    async def main() -> Any:
        sock, _ = create_udp_socket(LOCAL, bind=True)
        sink = UDPSinkServer(sock, drop_every=5)
        sink.start()
        try:
            target = Target(UDPEndpoint("127.0.0.1", sock.getsockname()[1]))
            plan = reverse_plan(duration=0.5, bitrate=1.6e6)
            return await run_worker(plan, target, handle_signals=False)
        finally:
            sink.stop()
            sock.close()

    r = run(main())
    t = r.datagrams
    assert t is not None and t.streams == 1
    assert t.sent > 400  # 1,000 datagrams/s for half a second
    assert t.lost == t.sent // 5  # the sink skipped every 5th: nothing else was lost
    assert t.received == t.sent - t.lost and r.requests == t.received
    assert (t.duplicates, t.out_of_order, t.corrupt) == (0, 0, 0)
    assert r.bytes_received == t.received * 200 and r.missed == 0


def test_reverse_needs_a_bitrate_run_and_a_duration() -> None:
    with pytest.raises(ConfigError, match="reverse"):
        LoadPlan(scenario=Scenario.ECHO, direction=Direction.REVERSE)
    with pytest.raises(ConfigError, match="duration"):
        reverse_plan(requests=10, duration=None, bitrate=1e6)
    with pytest.raises(ConfigError, match="bidir"):
        LoadPlan(scenario=Scenario.BITRATE, bitrate=1e6, direction=Direction.BIDIR)


def test_reverse_against_an_echo_server_says_so(run: Runner) -> None:
    from netkit.net.datagram import UDPEchoServer

    async def main() -> None:
        sock, _ = create_udp_socket(LOCAL, bind=True)
        server = UDPEchoServer(sock)
        server.start()
        try:
            target = Target(UDPEndpoint("127.0.0.1", sock.getsockname()[1]))
            await run_worker(reverse_plan(duration=0.3, bitrate=1e6), target, handle_signals=False)
        finally:
            server.stop()
            sock.close()

    with pytest.raises(ConnectError, match="echo server, not a sink"):
        run(main())

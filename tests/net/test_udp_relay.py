"""The UDP relay in-process: real UDP sockets on 127.0.0.1 and ::1, an echo server upstream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import UDPEndpoint
from netkit.core.datagram_faults import (
    BurstLoss,
    Corrupt,
    DropFirst,
    Duplicate,
    Loss,
    Rate,
    Reorder,
    Truncate,
)
from netkit.core.faults import Bandwidth, Fault, Latency
from netkit.errors import ConfigError
from netkit.net.datagram import MAX_UDP_PAYLOAD, UDPEchoServer
from netkit.net.sockets import create_udp_socket, describe
from netkit.net.udp_relay import UDPRelayOptions, UDPRelayServer

if TYPE_CHECKING:
    from conftest import Runner

HOSTS = ["127.0.0.1", "::1"]
WAIT = 5.0  # seconds any single expected event or reply may take


@dataclass
class Relay:
    """A relay in front of an echo server, and every event it reported."""

    server: UDPRelayServer
    echo: UDPEchoServer
    host: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> tuple[Any, ...]:
        return self.server.sock.getsockname()  # type: ignore[no-any-return]

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        self.events.append((event, fields))
        self.changed.set()

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == event]

    async def until(self, check: Callable[[], bool]) -> None:
        """Wait (bounded) until ``check()`` holds: checked at each event, and every 10 ms for
        what no event reports (counters)."""
        async with asyncio.timeout(WAIT):
            while not check():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.01):
                        await self.changed.wait()

    def client(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((self.host, 0))
        sock.connect(self.address)
        sock.setblocking(False)
        return sock


@contextlib.asynccontextmanager
async def relay(
    host: str = "127.0.0.1", faults: list[Fault] | None = None, **options: Any
) -> AsyncIterator[Relay]:
    echo_sock, _ = create_udp_socket(UDPEndpoint(host, 0), bind=True)
    relay_sock, _ = create_udp_socket(UDPEndpoint(host, 0), bind=True)
    max_flows = options.pop("max_flows", 1024)
    echo = UDPEchoServer(echo_sock)
    family = echo_sock.family
    holder: list[Relay] = []
    server = UDPRelayServer(
        relay_sock,
        (family, echo_sock.getsockname()),
        UDPRelayOptions(faults=faults or [], **options),
        max_flows=max_flows,
        on_event=lambda e, f: holder[0].on_event(e, f),
    )
    harness = Relay(server, echo, host)
    holder.append(harness)
    echo.start()
    server.start()
    try:
        yield harness
    finally:
        await server.close()
        if echo_sock.fileno() >= 0:
            echo.stop()
            echo_sock.close()


async def recv(sock: socket.socket, timeout: float = WAIT) -> bytes:
    async with asyncio.timeout(timeout):
        return await asyncio.get_running_loop().sock_recv(sock, 65536)


async def nothing_within(sock: socket.socket, seconds: float) -> bool:
    """True when no datagram arrives within ``seconds`` (used only to show an absence)."""
    try:
        await recv(sock, seconds)
    except TimeoutError:
        return True
    return False


def received(r: Relay, client: socket.socket) -> int:
    """Datagrams the relay has received from ``client`` so far."""
    flow = r.server.connections.get(client.getsockname())
    return 0 if flow is None else flow.up.received


# --- relaying ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
def test_datagrams_pass_whole_both_ways(run: Runner[None], host: str) -> None:
    sizes = [0, 1, 1400, 9000, MAX_UDP_PAYLOAD]

    async def main() -> None:
        async with relay(host) as r:
            client = r.client()
            with client:
                for size in sizes:
                    payload = bytes((i * 7 + size) % 256 for i in range(size))
                    client.send(payload)
                    assert await recv(client) == payload
            (opened,) = r.named("flow_opened")
            assert opened["id"] == 1
            flow = next(iter(r.server.connections.values()))
            assert flow.up.sent == flow.down.sent == len(sizes)
            assert flow.up.bytes_sent == flow.down.bytes_sent == sum(sizes)
            assert r.echo.stats.received == len(sizes)

    run(main())


@pytest.mark.parametrize("host", HOSTS)
def test_replies_reach_the_client_that_sent(run: Runner[None], host: str) -> None:
    async def main() -> None:
        async with relay(host) as r:
            clients = [r.client() for _ in range(20)]
            try:
                for round_ in range(3):
                    for i, c in enumerate(clients):
                        c.send(f"client {i} round {round_}".encode())
                    for i, c in enumerate(clients):
                        assert await recv(c) == f"client {i} round {round_}".encode()
            finally:
                for c in clients:
                    c.close()
            assert len(r.server.connections) == 20
            assert r.server.stats.accepted == 20
            locals_ = {f["local"] for f in r.named("flow_opened")}
            assert len(locals_) == 20  # one upstream socket per flow

    run(main())


def test_idle_flows_are_reaped(run: Runner[None]) -> None:
    async def main() -> None:
        async with relay(idle_timeout=0.2) as r:
            with r.client() as client:
                client.send(b"hello")
                assert await recv(client) == b"hello"
                await r.until(lambda: bool(r.named("flow_closed")))
            (closed,) = r.named("flow_closed")
            assert closed["end"] == "idle timeout"
            assert closed["datagrams_up"] == closed["datagrams_down"] == 1
            assert not r.server.connections
            assert r.server.stats.datagrams_up == 1

    run(main())


def test_flows_beyond_the_cap_are_turned_away_until_one_closes(run: Runner[None]) -> None:
    async def main() -> None:
        async with relay(max_flows=2, idle_timeout=0.3) as r:
            a, b, c = r.client(), r.client(), r.client()
            with a, b, c:
                for s in (a, b):
                    s.send(b"in")
                    assert await recv(s) == b"in"
                c.send(b"late")
                await r.until(lambda: bool(r.named("rejected")))
                c.send(b"later")  # counted, not reported again
                await r.until(lambda: r.server.stats.rejected == 2)
                assert len(r.named("rejected")) == 1
                assert await nothing_within(c, 0.05)
                await r.until(lambda: not r.server.connections)  # both reaped
                c.send(b"now")
                assert await recv(c) == b"now"

    run(main())


def test_a_flood_of_clients_is_held_to_the_cap(run: Runner[None]) -> None:
    async def main() -> None:
        async with relay(max_flows=50) as r:
            clients = [r.client() for _ in range(300)]
            try:
                stats = r.server.stats
                for n, c in enumerate(clients, 1):
                    c.send(b"x")
                    if n % 30 == 0:  # in bursts the socket's receive buffer holds
                        await r.until(lambda: stats.accepted + stats.rejected == n)  # noqa: B023
            finally:
                for c in clients:
                    c.close()
            assert len(r.server.connections) == 50
            assert r.server.stats.peak == 50
            assert r.server.stats.rejected == 250

    run(main())


def test_held_datagrams_are_bounded(run: Runner[None]) -> None:
    # Every datagram delayed 10 s: the flow holds at most its queue, the relay its budget.
    async def main() -> None:
        async with relay(faults=[Latency(10_000, direction="up")], hold_bytes=50_000) as r:
            with r.client() as client:
                for n in range(1, 201):
                    client.send(bytes(1000))
                    if n % 20 == 0:  # in bursts the socket's receive buffer holds
                        await r.until(lambda: received(r, client) == n)  # noqa: B023
            assert r.server.budget.held == 50_000
            overflow = [f for f in r.named("datagram_fault") if f["fault"] == "overflow"]
            assert len(overflow) == 150
            assert r.server.stats.dropped == 150

    run(main())


def test_a_datagram_from_the_relay_itself_opens_no_flow(run: Runner[None]) -> None:
    # Its replies would come back in as requests: relayed back and forth for ever.
    async def main() -> None:
        async with relay() as r:
            assert r.server._open(r.address) is None
            assert r.named("rejected") == [
                {"client": describe(r.address), "reason": "from the relay itself"}
            ]
            assert not r.server.connections and r.server.stats.rejected == 1

    run(main())


def test_upstream_without_a_listener_is_reported(run: Runner[None]) -> None:
    async def main() -> None:
        async with relay() as r:
            r.echo.stop()
            r.echo.sock.close()  # nothing listens at the upstream's port any more
            with r.client() as client:
                client.send(b"anyone?")
                await r.until(lambda: bool(r.named("upstream_refused")))
                client.send(b"anyone??")
                await r.until(lambda: r.server.stats.upstream_refused >= 1)

    run(main())


# --- faults -----------------------------------------------------------------------------------

PAYLOADS = [f"datagram {i:03d}".encode() * 4 for i in range(40)]


async def exchange(r: Relay, payloads: list[bytes], expect: int) -> list[bytes]:
    """Send every payload from one client, then collect ``expect`` replies."""
    with r.client() as client:
        for p in payloads:
            client.send(p)
        replies = [await recv(client) for _ in range(expect)]
        assert await nothing_within(client, 0.05)  # and nothing more
    return replies


def bits_apart(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


# Each fault, the replies expected for PAYLOADS, and a check of them.
FAULT_CASES: list[tuple[Fault, int, Callable[[list[bytes]], bool]]] = [
    (Loss(1.0, direction="up"), 0, lambda got: got == []),
    (BurstLoss(1.0, 0.0), 1, lambda got: got == PAYLOADS[:1]),  # good once, then bad for ever
    (Duplicate(1.0, direction="up"), 80, lambda got: got == [p for p in PAYLOADS for _ in "12"]),
    (Reorder(0.3, gap=2, max_hold=200), 40, lambda got: sorted(got) == PAYLOADS != got),
    (Corrupt(1.0, bits=3, direction="down"), 40, lambda got: all(bits_apart(a, b) == 3 for a, b in zip(got, PAYLOADS, strict=True))),
    (Truncate(1.0, size=10), 40, lambda got: got == [p[:10] for p in PAYLOADS]),
    (Latency(30, jitter=20), 40, lambda got: got == PAYLOADS),
    (Rate(1_000, queue=5, direction="up"), 6, lambda got: got == PAYLOADS[:6]),
    (DropFirst(3, direction="up"), 37, lambda got: got == PAYLOADS[3:]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "expect", "check"), FAULT_CASES, ids=lambda v: getattr(v, "name", "")
)
def test_each_fault_on_a_relayed_echo(
    run: Runner[None], fault: Fault, expect: int, check: Callable[[list[bytes]], bool]
) -> None:
    async def main() -> None:
        async with relay(faults=[fault], seed=7) as r:
            started = time.perf_counter()
            got = await exchange(r, PAYLOADS, expect)
            elapsed = time.perf_counter() - started
            assert check(got), got
            (drawn,) = r.named("fault")
            assert drawn["fault"] == fault.name
            if isinstance(fault, Latency):
                assert elapsed >= 0.02  # 30 ms ± 20 each way, order kept
            else:
                injected = r.named("datagram_fault")
                assert injected and {f["fault"] for f in injected} == {fault.name}

    run(main())


def test_seeded_loss_of_30_percent_through_the_relay(run: Runner[None]) -> None:
    # 10,000 datagrams in batches; each batch's replies are awaited (all but those the relay
    # reports lost), so the kernel never drops any and every loss is the fault's.
    async def main() -> tuple[list[tuple[int, str]], int]:
        async with relay(faults=[Loss(0.3, direction="up")], seed=42) as r:
            with r.client() as client:
                for batch in range(100):
                    before = len(r.named("datagram_fault"))
                    for i in range(100):
                        client.send((batch * 100 + i).to_bytes(4, "big"))
                    await r.until(
                        lambda: received(r, client) == (batch + 1) * 100  # noqa: B023
                    )
                    lost = len(r.named("datagram_fault")) - before
                    for _ in range(100 - lost):
                        await recv(client)
            sequence = [(f["seq"], f["fault"]) for f in r.named("datagram_fault")]
            return sequence, r.echo.stats.received

    sequence, echoed = run(main())
    assert abs(len(sequence) / 10_000 - 0.3) <= 0.03
    assert echoed == 10_000 - len(sequence)
    again, _ = run(main())
    assert again == sequence


def test_identical_seeds_give_identical_faults_different_seeds_do_not(run: Runner[None]) -> None:
    faults: list[Fault] = [Loss(0.2), Duplicate(0.2), Corrupt(0.2), Truncate(0.2)]

    async def main(seed: int) -> list[tuple[Any, ...]]:
        async with relay(faults=faults, seed=seed) as r:
            with r.client() as client:
                for p in PAYLOADS:
                    client.send(p)
                await r.until(lambda: received(r, client) == len(PAYLOADS))
                flow = r.server.connections[client.getsockname()]
                echo = r.echo.stats
                await r.until(
                    lambda: echo.received == flow.up.sent and flow.down.received == echo.echoed
                )
            return [
                (f["direction"], f["seq"], f["fault"], f.get("bits"))
                for f in r.named("datagram_fault")
            ]

    first = run(main(11))
    assert first and run(main(11)) == first
    assert run(main(12)) != first


def test_a_fault_added_while_running_applies_to_open_flows(run: Runner[None]) -> None:
    async def main() -> None:
        async with relay() as r:
            with r.client() as client:
                client.send(b"before")
                assert await recv(client) == b"before"
                r.server.faults.add(Loss(1.0, direction="up"))
                client.send(b"after")
                await r.until(lambda: bool(r.named("datagram_fault")))
                assert await nothing_within(client, 0.05)
                r.server.faults.clear()
                client.send(b"again")
                assert await recv(client) == b"again"
                # A stream fault cannot apply to datagrams: refused, not set and ignored.
                with pytest.raises(ConfigError, match="not to UDP"):
                    r.server.faults.add(Bandwidth(1000))
                assert len(r.server.faults) == 0
            assert [e for e, _ in r.events if e.startswith("fault")] == [
                "fault_added",
                "faults_cleared",
            ]

    run(main())


# --- drain ------------------------------------------------------------------------------------


def test_drain_lets_a_quiet_flow_close_and_turns_new_clients_away(run: Runner[None]) -> None:
    async def main() -> None:
        async with relay(drain_quiet=0.1) as r:
            with r.client() as client, r.client() as late:
                client.send(b"request")
                assert await recv(client) == b"request"
                draining = asyncio.ensure_future(r.server.drain(WAIT))
                await r.until(lambda: r.server.draining)
                late.send(b"too late")
                client.send(b"still served")  # an open flow goes on while it drains
                assert await recv(client) == b"still served"
                assert await draining == 0
            (closed,) = r.named("flow_closed")
            assert closed["end"] == "drained" and closed["datagrams_down"] == 2
            assert r.named("rejected")[0]["reason"] == "shutting down"

    run(main())


def test_drain_cuts_flows_still_busy_at_the_timeout(run: Runner[None]) -> None:
    async def main() -> None:
        async with relay(drain_quiet=5.0) as r:
            with r.client() as client:
                client.send(b"x")
                assert await recv(client) == b"x"
                assert await r.server.drain(0.1) == 1
            (closed,) = r.named("flow_closed")
            assert closed["end"] == "drain timeout"

    run(main())


# --- allow/deny lists --------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
def test_a_denied_source_opens_no_flow_and_gets_no_reply(run: Runner[None], host: str) -> None:
    from netkit.core.access import AccessList

    async def main() -> None:
        async with relay(host) as r:
            # IPv4: 127.0.0.2 is denied, 127.0.0.1 relayed; IPv6 (::1 only): ::1 is denied.
            denied_host = "127.0.0.2" if host == "127.0.0.1" else "::1"
            r.server.restrict(AccessList(deny=[denied_host]))
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as denied:
                denied.bind((denied_host, 0))
                denied.setblocking(False)
                source = describe(denied.getsockname())
                for _ in range(3):
                    denied.sendto(b"let me in", r.address)
                await r.until(lambda: r.server.stats.denied == 3)
                if host == "127.0.0.1":
                    with r.client() as allowed:
                        allowed.send(b"hello")
                        assert await recv(allowed) == b"hello"
                with pytest.raises(BlockingIOError):
                    denied.recv(100)  # nothing came back
            assert len(r.named("denied")) == 1  # the source is reported once
            event = r.named("denied")[0]
            assert event["client"] == source
            assert event["rule"] == f"deny {denied_host}/{32 if '.' in denied_host else 128}"
            assert source not in [f["client"] for f in r.named("flow_opened")]
            assert r.server.stats.as_dict()["denied"] == 3
            assert r.server.stats.accepted == (1 if host == "127.0.0.1" else 0)

    run(main())

"""The relay changed while it runs, in process: faults on live connections, disable/enable,
relisten, set_upstream; real loopback sockets, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.faults import AcceptDelay, Latency, LimitData, Slice
from netkit.net.buffered import BufferedRelay
from netkit.net.relay import RelayOptions, RelayServer
from netkit.net.server import make_listener
from netkit.net.splice import SpliceRelay
from netkit.net.upstreams import FixedUpstream
from tests.net.conftest import Runner
from tests.net.pairs import replying_backend, wait_until
from tests.net.test_relay_faults import counter_stream, echo_server, out_of_place, relay_to

Events = list[tuple[str, dict]]
DELAY_MS = 200  # the latency added; a fast round trip on loopback is well under half of it


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    """Seconds for 4 bytes to go through the relay to the echo server and back."""
    started = time.perf_counter()
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def stalled_relay_report(server: RelayServer, seconds: float = 8.0) -> AsyncIterator[None]:
    """Fail with the state of every relayed connection if the block takes over ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        state = []
        for relay in server.connections.values():
            if relay is None:
                continue
            flows = {
                f.name: (f.received, f.delivered, f.held, f.eof, getattr(f, "fin_sent", None))
                for f in relay.record.flows
            }
            sides = (
                {
                    name: (
                        side.transport is not None and side.transport.is_reading(),
                        side._write_paused,
                        side.release_timer is not None,
                        side.flow.next_due,
                    )
                    for name, side in (("client", relay.client), ("upstream", relay.upstream))
                }
                if isinstance(relay, BufferedRelay)
                else {}
            )
            state.append(f"{type(relay).__name__} flows={flows} sides={sides}")
        raise AssertionError(f"stalled after {seconds}s: {state}") from None


def named(events: Events, name: str) -> list[dict]:
    return [fields for event, fields in events if event == name]


def test_a_latency_fault_never_delivers_early(run: Runner) -> None:
    # One way, upstream -> client, timed from the upstream's write to the client's read: each
    # byte waits the whole delay. Due times planned from uvloop's clock (read once per loop
    # iteration, in whole milliseconds) let bytes through up to 1 ms early.
    async def main() -> list[float]:
        accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

        async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put(writer)

        upstream = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        options = RelayOptions(faults=[Latency(20, direction="down")])
        async with upstream, relay_to(TCPEndpoint("127.0.0.1", port), options) as (_, relay_port):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
            source = await accepted.get()
            times = []
            for _ in range(40):
                started = time.perf_counter()
                source.write(b"x")
                await reader.readexactly(1)
                times.append(time.perf_counter() - started)
            writer.close()
            source.close()
            return times

    times = run(main())
    assert min(times) >= 0.020, sorted(times)[:5]


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
def test_latency_added_and_removed_mid_connection(run: Runner, splice: bool) -> None:
    # toxiproxy: a toxic added to a proxy slows its open connections from that moment on.
    events: Events = []

    async def main() -> tuple[list[float], RelayServer]:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(splice=splice), events) as (server, port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            times = [await round_trip(reader, writer)]
            name = server.faults.add(Latency(DELAY_MS, direction="down"))
            times.append(await round_trip(reader, writer))
            server.faults.remove(name)
            times.append(await round_trip(reader, writer))
            times.append(await round_trip(reader, writer))
            writer.close()
            await wait_until(lambda: not server.connections)
            return times, server

    times, server = run(main())
    before, slowed, *after = times
    assert before < DELAY_MS / 2000, times
    assert slowed >= DELAY_MS / 1000, times  # never early
    assert max(after) < DELAY_MS / 2000, times
    (closed,) = named(events, "closed")
    assert closed["path"] == ("splice+buffered" if splice else "buffered")
    assert closed["bytes_up"] == closed["bytes_down"] == 16 and "undelivered" not in closed
    (fault,) = named(events, "fault")  # the live connection got it
    assert fault["name"] == "latency_downstream" and fault["latency_ms"] == DELAY_MS
    assert [e for e, _ in events if e.startswith("fault_")] == ["fault_added", "fault_removed"]
    assert named(events, "fault_added")[0] == {
        "name": "latency_downstream",
        **Latency(DELAY_MS, direction="down").as_dict(),
    }
    assert server.stats.faults == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["down", "up"])
def test_a_spliced_stream_moves_to_the_buffered_path_mid_stream_in_order(
    run: Runner, direction: str
) -> None:
    # A continuous stream through the splice path gets a data fault while the splice pipe
    # holds bytes (the reader stalls): the relay moves to the buffered path, the pipe's bytes
    # go first, and every byte arrives once, in order; then the fault is removed mid-stream.
    payload = counter_stream((16 << 20) // 4)  # 16 MiB of 4-byte counters
    events: Events = []

    async def main() -> bytes:
        reading = asyncio.Event()  # upstream: the backend reads once the fault is in place
        if direction == "down":
            reading.set()
        async with (
            replying_backend(payload if direction == "down" else b"", reading) as (up, got),
            relay_to(up, RelayOptions(splice=True), events) as (server, port),
        ):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            if direction == "up":
                sending = asyncio.ensure_future(loop.sock_sendall(sock, payload))
            else:
                sock.shutdown(socket.SHUT_WR)  # the backend answers at EOF
            await wait_until(lambda: server.connections.get(1) is not None)
            relay = server.connections[1]
            assert relay is not None
            flow = relay.record.down if direction == "down" else relay.record.up
            # Nobody reads yet (downstream: the client; upstream: the backend): wait for
            # bytes in the pipe.
            await wait_until(lambda: flow.held > 0)
            server.faults.add(Slice(64 << 10, delay=1), "slices")
            assert isinstance(relay, SpliceRelay) and relay.handed_over is not None
            assert len(relay.handed_over[direction == "down"]) > 0  # the pipe's bytes
            reading.set()
            received = bytearray()
            # Inside the test's own 10 s: if the stream stalls, say where it stood (it timed
            # out once in a full-suite run, uvloop-up, and never again in 106 runs).
            async with stalled_relay_report(server):
                if direction == "down":
                    removed = False
                    while chunk := await loop.sock_recv(sock, 1 << 20):
                        received += chunk
                        if not removed and len(received) > len(payload) // 2:
                            server.faults.remove("slices")  # held bytes go at once, in order
                            removed = True
                else:
                    await sending
                    server.faults.remove("slices")
                    sock.shutdown(socket.SHUT_WR)
                    received += await got
                    while await loop.sock_recv(sock, 1 << 16):
                        pass
            sock.close()
            await wait_until(lambda: not server.connections)
            return bytes(received)

    received = run(main())
    assert len(received) == len(payload)
    assert out_of_place(received) == 0
    assert received == payload
    (closed,) = named(events, "closed")
    assert closed["path"] == "splice+buffered"
    assert closed[f"bytes_{direction}"] == len(payload) and "undelivered" not in closed


def test_clear_removes_every_fault_from_live_connections(run: Runner) -> None:
    events: Events = []

    async def main() -> list[float]:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(splice=False), events) as (server, port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            server.faults.add(Latency(DELAY_MS // 2, direction="up"))
            server.faults.add(Latency(DELAY_MS // 2, direction="down"))
            slowed = await round_trip(reader, writer)
            server.faults.clear()
            fast = await round_trip(reader, writer)
            writer.close()
            assert len(server.faults) == 0
            return [slowed, fast]

    slowed, fast = run(main())
    assert slowed >= DELAY_MS / 1000 - 0.002 and fast < DELAY_MS / 2000, (slowed, fast)
    assert named(events, "faults_cleared") == [
        {"names": ["latency_upstream", "latency_downstream"]}
    ]


def test_a_byte_limit_added_mid_connection_counts_from_that_moment(run: Runner) -> None:
    # toxiproxy's limit_data added to an open connection counts the bytes from then on.
    events: Events = []

    async def main() -> bytes:
        async with (
            replying_backend() as (upstream, got),
            relay_to(upstream, RelayOptions(splice=False), events) as (server, port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"a" * 1000)
            await wait_until(lambda: server.connections.get(1) is not None)
            relay = server.connections[1]
            assert relay is not None
            await wait_until(lambda: relay.record.up.delivered == 1000)
            server.faults.add(LimitData(100, direction="up"))
            writer.write(b"b" * 300)
            received = await got
            await reader.read()
            writer.close()
            await wait_until(lambda: not server.connections)
            return received

    received = run(main())
    assert received == b"a" * 1000 + b"b" * 100
    (closed,) = named(events, "closed")
    assert closed["end"] == "fault: limit-data" and closed["bytes_up"] == 1100


def test_disable_closes_connections_and_refuses_new_ones_enable_listens_again(
    run: Runner,
) -> None:
    events: Events = []

    async def main() -> None:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(), events) as (server, port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await round_trip(reader, writer)
            assert server.enabled
            await server.disable()
            assert not server.enabled and not server.connections
            assert await reader.read() == b""  # closed (FIN: nothing was in flight)
            writer.close()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            await server.disable()  # already disabled: nothing happens
            await server.enable()
            assert server.enabled and server.address == f"127.0.0.1:{port}"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await round_trip(reader, writer)
            writer.close()

    run(main())
    assert named(events, "disabled") == [{"address": events_address(events), "closed": 1}]
    assert len(named(events, "enabled")) == 1
    assert named(events, "closed")[0]["end"] == "proxy disabled"


def events_address(events: Events) -> str:
    return str(named(events, "enabled")[0]["address"])


def test_set_upstream_sends_new_connections_elsewhere(run: Runner) -> None:
    events: Events = []

    async def main() -> tuple[bytes, bytes]:
        async with (
            replying_backend(b"one") as (first, _),
            replying_backend(b"two") as (second, _),
            relay_to(first, RelayOptions(), events) as (server, port),
        ):
            old_reader, old_writer = await asyncio.open_connection("127.0.0.1", port)
            await wait_until(lambda: server.connections.get(1) is not None)
            server.set_upstream(second)
            new_reader, new_writer = await asyncio.open_connection("127.0.0.1", port)
            for writer in (old_writer, new_writer):
                writer.write_eof()
            replies = await old_reader.read(), await new_reader.read()
            old_writer.close()
            new_writer.close()
            return replies

    assert run(main()) == (b"one", b"two")  # the live connection stayed where it was
    (changed,) = named(events, "upstream_changed")
    assert changed["upstream"] != changed["previous"]
    assert [f["upstream"] for f in named(events, "closed")] == [
        changed["previous"],
        changed["upstream"],
    ]


def test_relisten_moves_the_listener_and_keeps_live_connections(run: Runner) -> None:
    events: Events = []

    async def main() -> None:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(), events) as (server, port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await round_trip(reader, writer)
            await server.relisten(TCPEndpoint("127.0.0.1", 0))
            new_port = int(server.address.rpartition(":")[2])
            assert new_port not in (0, port)
            await round_trip(reader, writer)  # the live connection goes on
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            other_reader, other_writer = await asyncio.open_connection("127.0.0.1", new_port)
            await round_trip(other_reader, other_writer)
            for w in (writer, other_writer):
                w.close()

    run(main())
    (moved,) = named(events, "relistened")
    assert moved["address"] != moved["previous"]


def test_disable_resets_clients_still_waiting_for_their_relay(run: Runner) -> None:
    # A client held by accept-delay is dropped at once, not left to the garbage collector.
    events: Events = []

    async def main() -> float:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(faults=[AcceptDelay(5000)]), events) as (server, port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await wait_until(lambda: server.connections)  # accepted, waiting out its delay
            started = time.perf_counter()
            await server.disable()
            with pytest.raises(ConnectionResetError):
                await reader.read()
            writer.close()
            return time.perf_counter() - started

    assert run(main()) < 2.0
    (closed,) = named(events, "closed")
    assert closed["end"] == "proxy disabled" and closed["upstream"] == ""
    assert named(events, "disabled")[0]["closed"] == 0  # none was relaying


def test_disable_right_after_a_hand_over_ends_the_connection(run: Runner) -> None:
    # The splice relay handed its sockets over; the buffered relay is not up yet when the
    # server is disabled: the connection still ends, nothing is left open.
    events: Events = []

    async def main() -> None:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(splice=True), events) as (server, port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await round_trip(reader, writer)
            server.faults.add(Latency(10))
            await server.disable()
            assert not server.connections
            with pytest.raises(ConnectionResetError):
                await reader.read()
            writer.close()

    run(main())
    (closed,) = named(events, "closed")
    assert closed["end"] == "proxy disabled" and "undelivered" not in closed


def test_a_fault_removed_before_the_take_over_still_moves_every_byte_in_order(
    run: Runner,
) -> None:
    # The upstream stalls, so the splice pipe is full and the hand-over's preface cannot be
    # sent at once; the fault is gone before the buffered relay is up (it relays without
    # faults), and the client keeps sending: nothing may overtake or overwrite the preface.
    payload = counter_stream((8 << 20) // 4)
    events: Events = []

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        go = asyncio.Event()
        received: asyncio.Future[bytes] = loop.create_future()

        async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await go.wait()
            received.set_result(await reader.read())
            writer.close()

        backend = await asyncio.start_server(stalled, "127.0.0.1", 0)
        upstream = TCPEndpoint("127.0.0.1", backend.sockets[0].getsockname()[1])
        async with backend, relay_to(upstream, RelayOptions(splice=True), events) as (server, port):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            sending = asyncio.ensure_future(loop.sock_sendall(sock, payload))
            await wait_until(lambda: server.connections.get(1) is not None)
            relay = server.connections[1]
            assert relay is not None
            await wait_until(lambda: relay.record.up.held > 0)
            server.faults.add(Latency(1))
            server.faults.clear()
            await wait_until(lambda: getattr(server.connections.get(1), "relaying", False))
            go.set()
            await sending
            sock.shutdown(socket.SHUT_WR)
            data = await received
            sock.close()
            await wait_until(lambda: not server.connections)
            return data

    received = run(main())
    assert len(received) == len(payload) and out_of_place(received) == 0
    (closed,) = named(events, "closed")
    assert closed["path"] == "splice+buffered" and closed["bytes_up"] == len(payload)


def test_a_unix_listener_is_removed_when_disabled_and_bound_again_when_enabled(
    run: Runner, tmp_path
) -> None:
    path = tmp_path / "relay.sock"
    endpoint = UnixEndpoint(str(path))

    async def main() -> None:
        async with echo_server() as upstream:
            sock = make_listener(endpoint)
            server = RelayServer(
                sock, FixedUpstream(upstream, timeout=5), RelayOptions(), unix_endpoint=endpoint
            )
            server.start()
            try:
                reader, writer = await asyncio.open_unix_connection(str(path))
                await round_trip(reader, writer)
                await server.disable()
                assert not path.exists()
                assert await reader.read() == b""
                writer.close()
                await server.enable()
                reader, writer = await asyncio.open_unix_connection(str(path))
                await round_trip(reader, writer)
                writer.close()
            finally:
                await server.drain(1.0)
                await server.close()
            assert not path.exists()

    run(main())


def test_a_live_faults_probability_is_drawn_once_per_connection_and_repeats(
    run: Runner,
) -> None:
    # toxiproxy's toxicity: each open connection gets the toxic or not, once; with a seed
    # the same connections get it on every run.

    async def main() -> list[int]:
        events: Events = []
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(seed=3), events) as (server, port),
        ):
            clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(12)]
            for reader, writer in clients:
                await round_trip(reader, writer)  # every connection is relaying
            server.faults.add(Latency(1, probability=0.5))
            for reader, writer in clients:
                await round_trip(reader, writer)
                writer.close()
        return sorted(fields["id"] for fields in named(events, "fault"))

    first, second = run(main()), run(main())
    assert first == second
    assert 0 < len(first) < 12

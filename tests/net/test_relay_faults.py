"""The relay under faults, in process: real loopback sockets, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from netkit.core.addresses import TCPEndpoint
from netkit.core.faults import Refuse, parse_fault
from netkit.net.relay import RelayOptions, RelayServer
from netkit.net.upstreams import FixedUpstream
from tests.net.pairs import replying_backend

COUNTERS = (8 << 20) // 4  # 8 MiB of 4-byte big-endian counters


def counter_stream(count: int) -> bytes:
    return struct.pack(f">{count}I", *range(count))


def out_of_place(received: bytes) -> int:
    """How many 4-byte counters are not where the sent stream had them."""
    values = struct.unpack(f">{len(received) // 4}I", received[: len(received) // 4 * 4])
    return sum(1 for i, v in enumerate(values) if v != i)


@asynccontextmanager
async def relay_to(
    upstream: TCPEndpoint, options: RelayOptions, events: list[tuple[str, dict]] | None = None
) -> AsyncIterator[tuple[RelayServer, int]]:
    """A RelayServer on a loopback port in front of ``upstream``; yields it and its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    server = RelayServer(
        listener,
        FixedUpstream(upstream, timeout=5),
        options,
        on_event=lambda e, f: events.append((e, f)) if events is not None else None,
    )
    server.start()
    try:
        yield server, listener.getsockname()[1]
    finally:
        await server.drain(1.0)
        listener.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "faults",
    [[("slice", "1000"), ("latency", "1")], [("latency", "5:2")]],
    ids=["slice-1000-latency-1", "latency-5-jitter-2"],
)
def test_faults_keep_the_byte_order(run, faults):
    # Faults may delay bytes, never reorder them (toxiproxy's latency toxic keeps order).
    payload = counter_stream(COUNTERS)

    async def main() -> bytes:
        async with replying_backend() as (upstream, received):
            options = RelayOptions(faults=[parse_fault(k, v) for k, v in faults], seed=1)
            async with relay_to(upstream, options) as (_, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)
                writer.write_eof()
                await reader.read()  # the relay passes the upstream's close on
                writer.close()
                return await received

    received = run(main())
    assert len(received) == len(payload)
    assert out_of_place(received) == 0


@asynccontextmanager
async def echo_server() -> AsyncIterator[TCPEndpoint]:
    """A loopback server that echoes until EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield TCPEndpoint("127.0.0.1", server.sockets[0].getsockname()[1])


IDLE = 0.3


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
def test_a_silent_client_is_closed_at_the_idle_timeout(run, splice):
    # nginx stream's proxy_timeout: silent both ways this long, the connection is closed (FIN).
    events: list[tuple[str, dict]] = []

    async def main() -> tuple[float, bytes]:
        async with echo_server() as upstream:
            options = RelayOptions(splice=splice, idle_timeout=IDLE)
            async with relay_to(upstream, options, events) as (_, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"hi")
                assert await reader.readexactly(2) == b"hi"
                start = time.perf_counter()
                rest = await reader.read()  # b"" on a FIN; a reset raises
                waited = time.perf_counter() - start
                writer.close()
                return waited, rest

    waited, rest = run(main())
    assert rest == b""
    assert IDLE - 0.05 <= waited < IDLE + 2, waited
    closed = [fields for event, fields in events if event == "closed"]
    assert closed and closed[0]["end"] == "idle timeout"
    assert closed[0]["path"] == ("splice" if splice else "buffered")


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
def test_an_active_client_outlives_the_idle_timeout(run, splice):
    events: list[tuple[str, dict]] = []

    async def main() -> None:
        async with echo_server() as upstream:
            options = RelayOptions(splice=splice, idle_timeout=IDLE)
            async with relay_to(upstream, options, events) as (_, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                for _ in range(8):  # 8 x IDLE / 3: well past the timeout, never silent that long
                    writer.write(b"x")
                    assert await reader.readexactly(1) == b"x"
                    await asyncio.sleep(IDLE / 3)
                writer.write_eof()
                assert await reader.read() == b""
                writer.close()

    run(main())
    closed = [fields for event, fields in events if event == "closed"]
    assert closed and closed[0]["end"] == "closed"


def test_refuse_resets_the_client_and_reports_the_fault(run):
    events: list[tuple[str, dict]] = []

    async def main() -> None:
        async with (
            echo_server() as upstream,
            relay_to(upstream, RelayOptions(faults=[Refuse()]), events) as (server, port),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            with pytest.raises(ConnectionResetError):
                await reader.read()
            writer.close()
            assert server.stats.faults == 1

    run(main())
    assert [e for e, _ in events] == ["fault", "closed"]
    assert events[0][1]["fault"] == "refuse"
    assert events[1][1]["end"] == "fault: refuse"


@pytest.mark.parametrize(
    ("fault", "path"),
    [(("limit_data", "1KiB"), "buffered"), (("slow_close", "10ms"), "splice")],
    ids=["data-fault-buffered", "fin-fault-splice"],
)
def test_only_data_faults_take_the_buffered_path(run, fault, path):
    # A fault that needs the bytes in user space moves the connection off splice; a FIN
    # delay does not.
    events: list[tuple[str, dict]] = []

    async def exchange() -> None:
        async with echo_server() as upstream:
            options = RelayOptions(splice=True, faults=[parse_fault(*fault)])
            async with relay_to(upstream, options, events) as (_, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"hello")
                assert await reader.readexactly(5) == b"hello"
                writer.write_eof()
                await reader.read()
                writer.close()

    run(exchange())
    closed = [fields for event, fields in events if event == "closed"]
    assert closed[0]["path"] == path

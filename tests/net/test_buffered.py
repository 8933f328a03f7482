"""Tests for netkit.net.buffered: BufferedRelay between real socket pairs (loopback TCP and
Unix socketpairs) on asyncio and uvloop, in process: both directions, half-close, data faults
and the bytes that were not delivered."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest

from netkit.core.faults import ConnectionFaults, draw, parse_fault
from netkit.core.flow import RelayRecord
from netkit.net.buffered import FAULT_HIGH_WATER, BufferedRelay
from tests.net.conftest import Runner
from tests.net.pairs import Ends, ends, read_until_eof, start_relay, wait_until

pytestmark = pytest.mark.timeout(60)


def faults(*specs: tuple[str, str]) -> ConnectionFaults:
    return draw([parse_fault(kind, value) for kind, value in specs], random.Random(1))


async def start(
    pair: Ends, drawn: ConnectionFaults | None = None
) -> tuple[BufferedRelay, RelayRecord]:
    relay, record = await start_relay(pair, "buffered", drawn)
    assert isinstance(relay, BufferedRelay)
    return relay, record


def test_bytes_that_arrive_before_the_client_side_is_up_wait(run: Runner[None]) -> None:
    # The upstream speaks first, before the server has attached the client's transport.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("unix")
        record = RelayRecord(1, "test")
        relay = BufferedRelay(record, ConnectionFaults(), random.Random(1))
        await loop.create_connection(lambda: relay.upstream, sock=pair.relay_upstream)
        await loop.sock_sendall(pair.upstream, b"banner")
        await wait_until(lambda: len(relay.upstream.rbuf) == 6)
        await loop.connect_accepted_socket(lambda: relay.client, pair.relay_client)
        relay.start()
        assert await read_until_eof(pair.client, limit=6) == b"banner"
        relay.close("done")
        await relay.done
        pair.close()

    run(main())


def test_limit_data_delivers_exactly_n_bytes_then_closes(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("tcp")
        relay, record = await start(pair, faults(("limit_data", "1000,up")))
        await loop.sock_sendall(pair.client, b"a" * 600)
        await loop.sock_sendall(pair.client, b"b" * 600)
        got = await read_until_eof(pair.upstream)
        await relay.done
        assert got == b"a" * 600 + b"b" * 400
        assert record.end == "fault: limit-data"
        assert record.up.delivered == 1000
        pair.close()

    run(main())


def test_reset_after_bytes_resets_both_sides(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("tcp")
        relay, record = await start(pair, faults(("reset_after", "100")))
        await loop.sock_sendall(pair.upstream, b"z" * 500)
        got = await read_until_eof(pair.client)  # a reset ends the read too
        await relay.done
        assert got == b"z" * 100
        assert record.end == "fault: reset"
        with pytest.raises(ConnectionResetError):
            await loop.sock_sendall(pair.upstream, b"more" * 100_000)
        pair.close()

    run(main())


def test_slices_with_latency_keep_the_byte_order(run: Runner[None]) -> None:
    count = 50_000  # 4-byte counters, 200 kB

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        pair = ends("unix")
        drawn = faults(("slice", "1000"), ("latency", "5:4"))
        relay, record = await start(pair, drawn)
        payload = struct.pack(f">{count}I", *range(count))
        await loop.sock_sendall(pair.client, payload)
        pair.client.shutdown(socket.SHUT_WR)  # passed on once the held bytes are out
        got = await read_until_eof(pair.upstream)
        assert record.up.held == 0
        relay.close("done")
        await relay.done
        pair.close()
        return got

    got = run(main())
    assert struct.unpack(f">{count}I", got) == tuple(range(count))


def test_held_bytes_past_the_high_water_pause_the_source(run: Runner[None]) -> None:
    # A long latency holds everything: the relay stops reading at FAULT_HIGH_WATER instead of
    # copying without bound; the rest waits in the kernel.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("unix")
        relay, record = await start(pair, faults(("latency", "10s,up")))
        sender = asyncio.ensure_future(loop.sock_sendall(pair.client, b"h" * (8 << 20)))
        await wait_until(lambda: record.up.held >= FAULT_HIGH_WATER)
        held = record.up.held
        for _ in range(20):  # give the loop every chance to read more
            await asyncio.sleep(0)
        assert record.up.held < FAULT_HIGH_WATER + (1 << 20)
        assert record.up.held == record.up.received and held <= record.up.held
        assert not sender.done()
        relay.abort("done")
        await relay.done
        sender.cancel()
        assert record.as_dict()["undelivered"]["up"] == record.up.received
        pair.close()

    run(main())


def test_blackholed_bytes_are_received_and_never_delivered(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("unix")
        relay, record = await start(pair, faults(("blackhole_after", "0,up")))
        await wait_until(lambda: record.up.blackholed)  # its timer fires on the next turn
        await loop.sock_sendall(pair.client, b"lost" * 1000)
        await wait_until(lambda: record.up.received == 4000)
        await loop.sock_sendall(pair.upstream, b"still flows")  # only "up" is swallowed
        assert await read_until_eof(pair.client, limit=11) == b"still flows"
        relay.close("done")
        await relay.done
        assert record.up.delivered == 0
        assert record.as_dict()["undelivered"] == {"up": 4000, "down": 0}
        pair.close()

    run(main())


def test_a_dead_upstream_leaves_the_client_s_bytes_undelivered(run: Runner[None]) -> None:
    # The upstream resets while the relay still has the client's bytes to write: they are
    # reported, and the counts add up.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("tcp")
        relay, record = await start(pair)
        sent = 8 << 20
        sender = asyncio.ensure_future(loop.sock_sendall(pair.client, b"x" * sent))
        await wait_until(lambda: record.up.received > (1 << 20))
        pair.upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        pair.upstream.close()  # RST, with bytes unread in its queue
        await relay.done
        sender.cancel()
        assert record.end == "reset by upstream"
        assert record.up.undelivered > 0
        assert record.up.delivered + record.up.undelivered == record.up.received <= sent
        pair.client.close()

    run(main())

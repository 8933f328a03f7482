"""The stream test's wire format read in pieces over real sockets: the server's hello parser
with the hello (and the data behind it) cut at every point into two writes, and bench's
client with the server's answer line and its 32-byte result record each cut at every point."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import TCPEndpoint
from netkit.core.bench.plan import LoadPlan
from netkit.core.streamtest import OK_LINE, RESULT_SIZE, Direction, StreamReport, hello
from netkit.net.bench.worker import Target, run_worker
from netkit.net.streamtest import StreamTestConnection

if TYPE_CHECKING:
    from conftest import Runner, Serve

pytestmark = pytest.mark.timeout(120)

DATA = bytes(range(256)) * 4  # 1 KiB after the hello


async def two_writes(writer: asyncio.StreamWriter, data: bytes, at: int) -> None:
    """``data`` as two segments: ``data[:at]``, then the rest (Nagle off, drained between)."""
    writer.write(data[:at])
    await writer.drain()
    writer.write(data[at:])
    await writer.drain()


def nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def test_the_server_reads_a_hello_cut_at_every_point(run: Runner[Any], serve: Serve) -> None:
    first = hello(Direction.FORWARD) + DATA[:16]  # the hello and the start of the data

    async def main() -> list[int]:
        counted = []
        async with serve(StreamTestConnection) as h:
            for at in range(1, len(first)):
                reader, writer = await asyncio.open_connection(h.endpoint.host, h.endpoint.port)
                nodelay(writer)
                await two_writes(writer, first, at)
                assert await reader.readline() == OK_LINE
                writer.write(DATA[16:])
                writer.write_eof()
                record = await reader.read()
                writer.close()
                counted.append(StreamReport.decode(record[-RESULT_SIZE:], "server").received)
        return counted

    assert run(main()) == [len(DATA)] * (len(hello(Direction.FORWARD)) + 15)


class SplittingServer:
    """A stream test server of the test's own: it answers the hello and writes its result
    record each cut into two writes where told, and counts what it read."""

    def __init__(self, direction: Direction, answer_at: int, record_at: int) -> None:
        self.direction, self.answer_at, self.record_at = direction, answer_at, record_at
        self.received = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nodelay(writer)
        await reader.readline()
        await two_writes(writer, OK_LINE, self.answer_at)
        sent = 0
        if self.direction is Direction.REVERSE:
            writer.write(DATA)
            sent = len(DATA)
        while chunk := await reader.read(65536):
            self.received += len(chunk)
        record = StreamReport(self.received, sent, 1_000_000).encode()
        await two_writes(writer, record, self.record_at)
        writer.close()


@pytest.mark.parametrize("direction", [Direction.FORWARD, Direction.REVERSE])
def test_bench_reads_the_answer_and_the_record_cut_at_every_point(
    run: Runner[Any], direction: Direction
) -> None:
    cuts = [(a, RESULT_SIZE) for a in range(1, len(OK_LINE))]
    cuts += [(len(OK_LINE), r) for r in range(1, RESULT_SIZE)]

    async def one(answer_at: int, record_at: int) -> None:
        peer = SplittingServer(direction, answer_at, record_at)
        server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        plan = LoadPlan(
            scenario="stream",
            connections=1,
            total_connections=1,
            duration=0.02,
            size=4096,
            direction=direction,
        )
        async with server:
            r = await run_worker(plan, Target(TCPEndpoint("127.0.0.1", port)), handle_signals=False)
        where = f"answer cut at {answer_at}, record at {record_at}"
        assert not r.errors, (where, r.error_samples)
        assert r.peer_received == peer.received == r.bytes_sent, where
        if direction is Direction.REVERSE:
            assert r.bytes_received == r.peer_sent == len(DATA), where

    async def main() -> None:
        for answer_at, record_at in cuts:
            await one(answer_at, record_at)

    run(main())

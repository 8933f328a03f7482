"""Tests for netkit.net.zerocopy: vectored writes to real transports, in order and uncopied."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

from netkit.core.buffers import frame_header
from netkit.net.zerocopy import SMALL_JOIN, Buffer, has_vectored_writelines, write_parts

if TYPE_CHECKING:
    from conftest import Runner


async def read_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def write_and_read(parts: Sequence[Buffer]) -> tuple[bytes, asyncio.BaseTransport]:
    """write_parts() on a real transport over a socketpair; return what the peer read."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    b.setblocking(False)
    transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=a)
    try:
        write_parts(transport, parts)  # type: ignore[arg-type]
        expected = sum(len(p) for p in parts)
        return await read_exactly(b, expected), transport
    finally:
        transport.close()
        b.close()


CASES = {
    "small": [frame_header(5), b"hello"],
    "large": [frame_header(300_000), bytes(range(256)) * 1172],
    "three-mixed": [b"head", bytearray(b"x" * 5000), memoryview(b"tail" * 2000)],
    "with-empty": [b"", b"a", b"", b"b" * SMALL_JOIN, b""],
    "at-threshold": [b"a" * (SMALL_JOIN - 10), b"b" * 10],
}


@pytest.mark.parametrize("name", list(CASES))
def test_write_parts_sends_everything_in_order(run: Runner, name: str) -> None:
    parts = CASES[name]

    async def main() -> bytes:
        data, _ = await write_and_read(parts)
        return data

    assert run(main()) == b"".join(bytes(p) for p in parts)


def test_has_vectored_writelines_per_loop(run: Runner, request: pytest.FixtureRequest) -> None:
    async def main() -> bool:
        _, transport = await write_and_read([b"x"])
        return has_vectored_writelines(transport)

    vectored = run(main())
    if "uvloop" in request.node.callspec.id:
        assert vectored is True  # uvloop's writelines uses writev
    else:
        # CPython's socket transport has its own writelines (sendmsg) from 3.12 on.
        assert vectored is (sys.version_info >= (3, 12))


# --- which transport call write_parts makes (no sockets: a recording transport) ----------


class RecordingTransport(asyncio.WriteTransport):
    """Records write() calls; inherits the joining writelines() of WriteTransport."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[Buffer] = []

    def write(self, data: Buffer) -> None:
        self.writes.append(data)


class VectoredTransport(RecordingTransport):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[list[Buffer]] = []

    def writelines(self, list_of_data) -> None:
        self.lines.append(list(list_of_data))


def test_small_parts_are_joined_into_one_write() -> None:
    transport = RecordingTransport()
    assert has_vectored_writelines(transport) is False
    write_parts(transport, [b"ab", b"cd", bytearray(b"ef")])
    assert transport.writes == [b"abcdef"]


def test_parts_up_to_the_threshold_are_joined() -> None:
    transport = RecordingTransport()
    write_parts(transport, [b"a" * (SMALL_JOIN - 1), b"b"])
    assert len(transport.writes) == 1
    assert len(transport.writes[0]) == SMALL_JOIN


def test_large_parts_are_written_one_by_one_without_copying() -> None:
    transport = RecordingTransport()
    header, payload = frame_header(SMALL_JOIN), memoryview(bytearray(SMALL_JOIN))
    write_parts(transport, [header, payload])
    assert len(transport.writes) == 2
    assert transport.writes[0] is header
    assert transport.writes[1] is payload


def test_vectored_transport_gets_the_parts_as_they_are() -> None:
    transport = VectoredTransport()
    assert has_vectored_writelines(transport) is True
    header, payload = b"\x00\x00\x00\x02", memoryview(b"hi")
    write_parts(transport, [header, payload])
    assert transport.writes == []
    assert len(transport.lines) == 1
    assert transport.lines[0][0] is header
    assert transport.lines[0][1] is payload

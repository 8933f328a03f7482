"""The stdin line reader (netkit.net.lines) on a real pipe."""

from __future__ import annotations

import asyncio
import os

import pytest

from netkit.net.lines import LineReader

pytestmark = pytest.mark.timeout(30)


async def _read_all(fd: int) -> list[bytes]:
    return [line async for line in LineReader(fd).lines()]


def test_lines_split_across_chunks_and_endings() -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"one\r\ntw")
        os.write(write_fd, b"o\n\nthree")  # the last line has no line ending
        os.close(write_fd)
        assert asyncio.run(_read_all(read_fd)) == [b"one", b"two", b"", b"three"]
    finally:
        os.close(read_fd)


def test_more_chunks_than_slots_all_arrive() -> None:
    """The reader thread waits for free slots; every line still arrives, in order."""
    read_fd, write_fd = os.pipe()
    lines = [f"line {i}".encode() for i in range(LineReader._SLOTS * 4)]

    async def main() -> list[bytes]:
        reader = LineReader(read_fd)
        got: list[bytes] = []
        writer = asyncio.get_running_loop().run_in_executor(None, _write_slowly, write_fd, lines)
        async for line in reader.lines():
            got.append(line)
        await writer
        return got

    try:
        assert asyncio.run(main()) == lines
    finally:
        os.close(read_fd)


def _write_slowly(fd: int, lines: list[bytes]) -> None:
    # One write per line: each can arrive as its own chunk.
    for line in lines:
        os.write(fd, line + b"\n")
    os.close(fd)

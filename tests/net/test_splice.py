"""Tests for netkit.net.splice: the pipe pool and SpliceRelay between real socket pairs
(loopback TCP and Unix socketpairs), on asyncio and uvloop, in process."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import os
import resource
import socket
import time

import pytest

from netkit.core.flow import RelayRecord
from netkit.net.accept import DescriptorReserve
from netkit.net.splice import PIPE_SIZE, PIPES, SPLICE_AVAILABLE, PipePool, SpliceRelay
from tests.net.conftest import Runner, _is_open, hog_descriptors
from tests.net.pairs import Ends, ends, read_until_eof, start_relay

pytestmark = [
    pytest.mark.skipif(not SPLICE_AVAILABLE, reason="os.splice is Linux only"),
    pytest.mark.timeout(60),
]


# --- the pipe pool -----------------------------------------------------------------------


def test_a_pipe_is_non_blocking_large_and_reused_once_given_back() -> None:
    pool = PipePool()
    rfd, wfd = pool.acquire()
    try:
        assert os.get_blocking(rfd) is False and os.get_blocking(wfd) is False
        assert fcntl.fcntl(wfd, fcntl.F_GETPIPE_SZ) == PIPE_SIZE
        pool.release((rfd, wfd))
        assert len(pool) == 1
        assert pool.acquire() == (rfd, wfd)
        assert len(pool) == 0
    finally:
        PipePool.discard((rfd, wfd))
    assert not _is_open(rfd) and not _is_open(wfd)


def test_the_pool_keeps_at_most_max_free_pipes() -> None:
    pool = PipePool(max_free=1)
    first, second = pool.acquire(), pool.acquire()
    pool.release(first)
    pool.release(second)  # one too many: closed
    assert len(pool) == 1
    assert all(_is_open(fd) for fd in first)
    assert not any(_is_open(fd) for fd in second)
    PipePool.discard(first)


def test_out_of_descriptors_a_pipe_is_made_of_the_reserve() -> None:
    pool = PipePool()
    reserve = DescriptorReserve()
    # Garbage sockets of earlier tests closed now, and none closed by the collector while we
    # count (a number freed below the reserve's would let a pipe through without it).
    gc.collect()
    gc.disable()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hogged: list[int] = []
    try:
        assert reserve.fill(2) is None
        # The limit just above every open descriptor, the reserve's included; then every
        # free number below it taken: not one more descriptor, until the reserve is spent.
        top = max(int(name) for name in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
        hogged.extend(hog_descriptors())
        with pytest.raises(OSError) as info:
            pool.acquire()
        assert info.value.errno == errno.EMFILE
        pipe = pool.acquire(reserve)  # the two reserved descriptors become the pipe
        assert len(reserve) == 0
        PipePool.discard(pipe)
    finally:
        gc.enable()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in hogged:
            os.close(fd)
        reserve.close()


# --- SpliceRelay ---------------------------------------------------------------------------


async def start(pair: Ends, **options: object) -> tuple[SpliceRelay, RelayRecord]:
    relay, record = await start_relay(pair, "splice", **options)
    assert isinstance(relay, SpliceRelay)
    return relay, record


def test_slow_close_holds_only_its_direction_s_fin(run: Runner[None]) -> None:
    hold = 0.3

    async def main() -> None:
        pair = ends("unix")
        relay, _ = await start(pair, slow_close=(hold, 0.0))
        start_at = time.perf_counter()
        pair.upstream.shutdown(socket.SHUT_WR)
        assert await read_until_eof(pair.client) == b""
        down_fin = time.perf_counter() - start_at
        start_at = time.perf_counter()
        pair.client.shutdown(socket.SHUT_WR)
        assert await read_until_eof(pair.upstream) == b""
        up_fin = time.perf_counter() - start_at
        await relay.done
        assert down_fin < hold
        assert up_fin >= hold - 0.02, up_fin
        pair.close()

    run(main())


def test_finished_relays_give_their_pipes_back_to_the_shared_pool(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = len(PIPES)
        relays = []
        for _ in range(4):
            pair = ends("unix")
            relay, _ = await start(pair)
            relays.append((pair, relay))
            await loop.sock_sendall(pair.client, b"x" * 1000)
            assert await read_until_eof(pair.upstream, limit=1000) == b"x" * 1000
        # Four relays that moved bytes, and no more pipes than one: each gave its pipe back
        # once drained and the next took it again.
        assert len(PIPES) == max(before, 1)
        for pair, relay in relays:
            relay.close("done")
            pair.close()

    run(main())

"""Tests for netkit.net.splice: the pipe pool and SpliceRelay between real socket pairs
(loopback TCP and Unix socketpairs), on asyncio and uvloop, in process."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import time

import pytest

from netkit.core.flow import RelayRecord
from netkit.net.accept import DescriptorReserve
from netkit.net.splice import PIPE_SIZE, PIPES, SPLICE_AVAILABLE, PipePool, SpliceRelay
from tests.net.conftest import Runner, descriptor_limit, hog_descriptors
from tests.net.pairs import Ends, ends, read_until_eof, wait_until

pytestmark = [
    pytest.mark.skipif(not SPLICE_AVAILABLE, reason="os.splice is Linux only"),
    pytest.mark.timeout(60),
]


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


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
    assert not is_open(rfd) and not is_open(wfd)


def test_the_pool_keeps_at_most_max_free_pipes() -> None:
    pool = PipePool(max_free=1)
    first, second = pool.acquire(), pool.acquire()
    pool.release(first)
    pool.release(second)  # one too many: closed
    assert len(pool) == 1
    assert all(is_open(fd) for fd in first)
    assert not any(is_open(fd) for fd in second)
    PipePool.discard(first)


def test_out_of_descriptors_a_pipe_is_made_of_the_reserve() -> None:
    pool = PipePool()
    reserve = DescriptorReserve()
    hogged: list[int] = []
    try:
        with descriptor_limit(2):
            assert reserve.fill(2) is None
            hogged.extend(hog_descriptors())
            with pytest.raises(OSError) as info:
                pool.acquire()
            assert info.value.errno == errno.EMFILE
            pipe = pool.acquire(reserve)  # the two reserved descriptors become the pipe
            assert len(reserve) == 0
            PipePool.discard(pipe)
    finally:
        for fd in hogged:
            os.close(fd)
        reserve.close()


# --- SpliceRelay ---------------------------------------------------------------------------


def start(pair: Ends, **options: object) -> tuple[SpliceRelay, RelayRecord]:
    record = RelayRecord(1, "test")
    relay = SpliceRelay(pair.relay_client, pair.relay_upstream, record, **options)  # type: ignore[arg-type]
    relay.start()
    return relay, record


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_bytes_move_both_ways_and_are_counted_once(run: Runner[None], kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends(kind)
        relay, record = start(pair)
        up, down = os.urandom(3 << 20), os.urandom(2 << 20)
        sending = asyncio.gather(
            loop.sock_sendall(pair.client, up), loop.sock_sendall(pair.upstream, down)
        )
        got_up, got_down = await asyncio.gather(
            read_until_eof(pair.upstream, limit=len(up)),
            read_until_eof(pair.client, limit=len(down)),
        )
        await sending
        assert got_up == up and got_down == down
        assert (record.up.received, record.up.delivered) == (len(up), len(up))
        assert (record.down.received, record.down.delivered) == (len(down), len(down))
        assert record.up.held == record.down.held == 0
        # Drained: no direction keeps a pipe (idle relays hold none).
        assert all(d.pipe is None for d in relay.directions)
        pair.client.shutdown(socket.SHUT_WR)
        pair.upstream.shutdown(socket.SHUT_WR)
        await relay.done
        assert record.end == "closed" and record.path == "splice"
        assert "undelivered" not in record.as_dict()
        assert pair.relay_client.fileno() == -1 and pair.relay_upstream.fileno() == -1
        pair.close()

    run(main())


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_half_close_passes_the_fin_on_and_the_reply_still_flows(
    run: Runner[None], kind: str
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends(kind)
        relay, record = start(pair)
        await loop.sock_sendall(pair.client, b"question")
        pair.client.shutdown(socket.SHUT_WR)
        assert await read_until_eof(pair.upstream) == b"question"  # the FIN came through
        assert not relay.done.done()  # the other direction is still open
        await loop.sock_sendall(pair.upstream, b"answer")
        pair.upstream.shutdown(socket.SHUT_WR)
        assert await read_until_eof(pair.client) == b"answer"
        await relay.done
        assert record.end == "closed"
        assert record.up.eof and record.down.eof
        pair.close()

    run(main())


def test_slow_close_holds_only_its_direction_s_fin(run: Runner[None]) -> None:
    hold = 0.3

    async def main() -> None:
        pair = ends("unix")
        relay, _ = start(pair, slow_close=(hold, 0.0))
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


def test_abort_counts_what_a_stalled_client_never_got(run: Runner[None]) -> None:
    # The client stops reading; bytes pile up in the relay's pipe and the kernel's send
    # queue. After an abort (RST), delivered is exactly what the client can still read.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("tcp", client_rcvbuf=4096)
        relay, record = start(pair)
        sender = asyncio.ensure_future(loop.sock_sendall(pair.upstream, b"y" * (32 << 20)))
        await wait_until(lambda: record.down.received > (1 << 20))
        relay.abort("drain timeout")
        await relay.done
        received = await read_until_eof(pair.client)
        sender.cancel()
        assert record.end == "drain timeout"
        assert record.down.undelivered > 0
        assert len(received) == record.down.delivered
        assert record.as_dict()["undelivered"]["down"] == record.down.undelivered
        pair.close()

    run(main())


def test_a_reset_by_the_upstream_resets_the_client(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("tcp")
        relay, record = start(pair)
        await loop.sock_sendall(pair.upstream, b"before")
        assert await read_until_eof(pair.client, limit=6) == b"before"
        pair.upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        pair.upstream.close()  # RST
        await relay.done
        assert record.end == "reset by upstream"
        with pytest.raises(ConnectionResetError):
            await loop.sock_recv(pair.client, 16)
        pair.client.close()

    run(main())


def test_close_ends_with_a_fin_on_both_sides(run: Runner[None]) -> None:
    # What the idle timeout does: nothing is in flight, both peers see EOF, not a reset.
    async def main() -> None:
        pair = ends("tcp")
        relay, record = start(pair)
        relay.close("idle timeout")
        assert relay.done.done()
        assert await read_until_eof(pair.client) == b""
        assert await read_until_eof(pair.upstream) == b""
        assert record.end == "idle timeout"
        pair.close()

    run(main())


def test_finished_relays_give_their_pipes_back_to_the_shared_pool(run: Runner[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = len(PIPES)
        relays = []
        for _ in range(4):
            pair = ends("unix")
            relay, _ = start(pair)
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

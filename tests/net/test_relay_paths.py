"""What both relays do alike, tested on each (splice, copy-then-splice and buffered) between real socket pairs,
in process, on asyncio and uvloop: bytes both ways counted once, half-close, ending with FINs
or resets, and the bytes that were not delivered."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from netkit.net.splice import SPLICE_AVAILABLE
from tests.net.conftest import Runner
from tests.net.pairs import ends, read_until_eof, start_relay, wait_until

pytestmark = pytest.mark.timeout(60)

PATHS = [
    pytest.param(
        "splice", marks=pytest.mark.skipif(not SPLICE_AVAILABLE, reason="os.splice: Linux")
    ),
    pytest.param(
        "splice-auto", marks=pytest.mark.skipif(not SPLICE_AVAILABLE, reason="os.splice: Linux")
    ),
    "buffered",
]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    """Which relay: ``splice`` (from the first byte), ``splice-auto`` (copy, then splice)
    or ``buffered``."""
    return str(request.param)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_bytes_move_both_ways_and_are_counted_once(run: Runner[None], path: str, kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends(kind)
        relay, record = await start_relay(pair, path)
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
        pair.client.shutdown(socket.SHUT_WR)
        pair.upstream.shutdown(socket.SHUT_WR)
        await relay.done
        assert record.end == "closed" and record.path == path.removesuffix("-auto")
        assert "undelivered" not in record.as_dict()
        pair.close()

    run(main())


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_half_close_passes_the_fin_on_and_the_reply_still_flows(
    run: Runner[None], path: str, kind: str
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends(kind)
        relay, record = await start_relay(pair, path)
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


def test_abort_counts_what_a_stalled_client_never_got(run: Runner[None], path: str) -> None:
    # The client stops reading; bytes pile up in the relay and the kernel's send queue. After
    # an abort (RST), delivered is exactly what the client can still read.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("tcp", client_rcvbuf=4096)
        relay, record = await start_relay(pair, path)
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


def test_a_reset_by_the_upstream_resets_the_client(run: Runner[None], path: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("tcp")
        relay, record = await start_relay(pair, path)
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


def test_close_ends_with_a_fin_on_both_sides(run: Runner[None], path: str) -> None:
    # What the idle timeout does: nothing is in flight, both peers see EOF, not a reset.
    async def main() -> None:
        pair = ends("tcp")
        relay, record = await start_relay(pair, path)
        relay.close("idle timeout")
        assert await read_until_eof(pair.client) == b""
        assert await read_until_eof(pair.upstream) == b""
        await relay.done
        assert record.end == "idle timeout"
        pair.close()

    run(main())

"""The splice relay's late start (HAProxy's splice-auto): each direction copies its first
bytes through Python, then splices; over real socket pairs, in process, on asyncio and
uvloop. Bytes held in Python when the switch comes are sent first: nothing is lost or
reordered."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from netkit.net.splice import SPLICE_AVAILABLE, SpliceRelay
from tests.net.conftest import Runner
from tests.net.pairs import ends, read_until_eof, start_relay, wait_until

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not SPLICE_AVAILABLE, reason="os.splice: Linux"),
]

SPLICE_AFTER = 1 << 20


def small_buffers(*socks: socket.socket) -> None:
    """Small kernel buffers, so a stalled reader stops the relay well before SPLICE_AFTER."""
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_the_switch_to_splice_with_bytes_held_delivers_every_byte_in_order(
    run: Runner[None], kind: str
) -> None:
    # The upstream end does not read at first: the copying relay fills its socket and holds
    # bytes in Python (in flight at the switch); reading then resumes by splice.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends(kind)
        small_buffers(pair.relay_upstream, pair.upstream)
        relay, record = await start_relay(pair, "splice-auto", splice_after=SPLICE_AFTER)
        assert isinstance(relay, SpliceRelay)
        up, down = relay.directions
        payload = os.urandom(4 << 20)
        sending = loop.create_task(loop.sock_sendall(pair.client, payload))
        await wait_until(lambda: up.copied is not None and up.writing)
        assert up.spliced == 0 and record.up.held > 0 and record.up.received < SPLICE_AFTER
        reading = loop.create_task(read_until_eof(pair.upstream, limit=len(payload)))
        await sending
        got = await reading
        assert got == payload
        assert 0 < up.spliced <= len(payload) - SPLICE_AFTER  # copied first, spliced after
        assert (record.up.received, record.up.delivered, record.up.held) == (len(payload),) * 2 + (
            0,
        )
        # The other direction still copies: a short reply takes no pipe.
        await loop.sock_sendall(pair.upstream, b"short reply")
        assert await read_until_eof(pair.client, limit=11) == b"short reply"
        assert down.spliced == 0
        pair.client.shutdown(socket.SHUT_WR)
        pair.upstream.shutdown(socket.SHUT_WR)
        await relay.done
        assert record.end == "closed" and "undelivered" not in record.as_dict()
        pair.close()

    run(main())


def test_a_hand_over_while_copying_passes_the_bytes_held_in_python_first(
    run: Runner[None],
) -> None:
    # A data fault arriving while bytes copied in wait for a full destination: they are
    # handed over, between what the upstream already got and what the client still sends.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pair = ends("tcp")
        relay, record = await start_relay(pair, "splice-auto", splice_after=1 << 30)
        assert isinstance(relay, SpliceRelay)
        up = relay.directions[0]
        payload = os.urandom(8 << 20)

        async def send_all() -> None:
            await loop.sock_sendall(pair.client, payload)
            pair.client.shutdown(socket.SHUT_WR)

        sending = loop.create_task(send_all())
        await wait_until(lambda: up.copied is not None and up.writing)
        held = record.up.held
        assert relay.hand_over() and relay.handed_over is not None
        handed = relay.handed_over[0]
        assert len(handed) == held > 0 and record.up.held == held
        pair.relay_upstream.shutdown(socket.SHUT_WR)
        delivered = await read_until_eof(pair.upstream)
        # The rest is still in the relay's client socket: read it as the next relay would.
        rest = await read_until_eof(pair.relay_client)
        await sending
        assert delivered + handed + rest == payload
        assert len(delivered) == record.up.delivered and up.spliced == 0
        for sock in (pair.relay_client, pair.relay_upstream):
            sock.close()
        pair.close()

    run(main())

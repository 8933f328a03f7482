"""The bridge's sans-I/O part: the end-of-stream ↔ close-code table, and a protocol that holds
its reply to the peer's close (a half-close) until the application answers."""

from __future__ import annotations

import pytest

from netkit.core.ws.bridge import StreamEnd
from netkit.core.ws.events import CloseReceived, Message
from netkit.core.ws.frames import CloseCode, Side
from netkit.core.ws.protocol import Protocol, State
from netkit.errors import LocalProtocolError
from tests.core.ws.conftest import ConnectionPair


class HeldServer(Protocol):
    """A server protocol that holds its close reply, as the bridge's does."""

    __slots__ = ()
    hold_close_reply = True


def held_pair() -> ConnectionPair:
    pair = ConnectionPair()
    pair.server = HeldServer(Side.SERVER)
    return pair


@pytest.mark.parametrize(
    ("code", "end"),
    [
        (1000, StreamEnd.FIN),
        (1001, StreamEnd.FIN),
        (1005, StreamEnd.FIN),  # a close frame without a code
        (1006, StreamEnd.RESET),  # no close frame at all
        (None, StreamEnd.RESET),
        (1002, StreamEnd.RESET),
        (1011, StreamEnd.RESET),
        (4000, StreamEnd.RESET),
    ],
)
def test_a_close_code_becomes_a_fin_or_a_reset(code: int | None, end: StreamEnd) -> None:
    assert StreamEnd.for_close(code) is end


def test_a_stream_end_becomes_1000_or_1011_with_a_reason_that_fits() -> None:
    fin = StreamEnd.FIN.close_frame("ignored")
    assert (fin.code, fin.reason) == (CloseCode.NORMAL_CLOSURE, "")
    reset = StreamEnd.RESET.close_frame("é" * 100)  # 200 bytes of UTF-8
    assert reset.code == CloseCode.INTERNAL_ERROR
    assert len(reset.reason.encode()) <= 123 and reset.reason == "é" * 61
    assert StreamEnd.RESET.close_frame().reason == "stream reset"


def test_a_held_reply_lets_the_server_send_until_it_answers() -> None:
    pair = held_pair()
    pair.client.send_close(1000, "done sending")
    events = pair.send(pair.client)
    assert [type(e) for e in events] == [CloseReceived]
    server = pair.server
    assert server.state is State.CLOSING and server.close_reply_held
    assert server.close_sent is None and not server.close_expected()
    assert pair.wire(server) == b""  # no reply yet
    server.send_binary(b"the rest of the answer")
    events = pair.send(server)
    assert [(type(e), bytes(e.data)) for e in events if isinstance(e, Message)] == [
        (Message, b"the rest of the answer")
    ]
    server.answer_close()  # the client's code, echoed
    assert not server.close_reply_held and server.should_close_transport()
    events = pair.send(server)
    assert [(type(e), e.code) for e in events if isinstance(e, CloseReceived)] == [
        (CloseReceived, 1000)
    ]
    assert pair.client.close_received == (1000, "")


def test_a_held_reply_may_carry_another_code() -> None:
    pair = held_pair()
    pair.client.send_close(1000)
    pair.send(pair.client)
    pair.server.answer_close(1011, "upstream reset the connection")
    pair.send(pair.server)
    assert pair.client.close_received == (1011, "upstream reset the connection")


def test_without_hold_the_reply_is_immediate_and_answer_close_is_misuse() -> None:
    pair = ConnectionPair()
    pair.client.send_close(1000)
    pair.send(pair.client)
    assert pair.server.close_sent == (1000, "") and not pair.server.close_reply_held
    with pytest.raises(LocalProtocolError):
        pair.server.answer_close()
    with pytest.raises(LocalProtocolError):
        pair.server.send_binary(b"after the close")


def test_nothing_after_the_peers_close_is_read_while_the_reply_is_held() -> None:
    pair = held_pair()
    pair.client.send_close(1000)
    close = pair.wire(pair.client)
    pair.server.receive_data(close + b"\x82\x80junk")  # a frame after the close: ignored
    assert [type(e) for e in pair.server.events_received()] == [CloseReceived]

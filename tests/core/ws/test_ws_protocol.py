"""The connection state machine: a client and a server paired in memory, and literal bytes."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netkit.core.buffers import BufferPool, ReceiveBuffer
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.events import CloseReceived, ConnectionClosed, Message, Ping, Pong
from netkit.core.ws.frames import Frame as WireFrame
from netkit.core.ws.frames import FrameWriter, MaskKeys, Opcode, Side, serialize_header
from netkit.core.ws.mask import mask_bytes
from netkit.core.ws.protocol import Protocol, State
from netkit.errors import LocalProtocolError

KEY = b"\x37\xfa\x21\x3d"


def m(payload: bytes) -> bytes:
    """Mask ``payload`` with KEY (the bytes a client puts on the wire after the key)."""
    return bytes(mask_bytes(payload, KEY))


def server_receives(*frames: bytes, **kwargs: Any) -> tuple[Protocol, list[Any]]:
    server = Protocol(Side.SERVER, **kwargs)
    events = []
    for frame in frames:
        server.receive_data(frame)
        events += server.events_received()
    return server, events


def wire(proto: Protocol) -> bytes:
    return b"".join(bytes(b) for b in proto.data_to_send())


def assert_failed(server: Protocol, code: int) -> None:
    assert server.error is not None
    assert server.error.close_code == code
    assert server.state is State.CLOSING
    assert server.should_close_transport()
    assert server.close_sent is not None and server.close_sent[0] == code
    sent = wire(server)
    assert sent[:1] == b"\x88"
    assert struct.unpack("!H", sent[2:4])[0] == code


# --- messages -------------------------------------------------------------------------------


def test_rfc_hello_both_ways(pair: Any) -> None:
    pair.client._writer._keys = type("K", (MaskKeys,), {"next": lambda self: KEY})()
    pair.client.send_text("Hello")
    assert pair.wire(pair.client) == bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58")
    pair.server.send_text("Hello")
    assert pair.wire(pair.server) == bytes.fromhex("81 05 48 65 6c 6c 6f")


def test_single_frame_message_is_a_view_of_the_buffer(pair: Any) -> None:
    pair.client.send_binary(b"\x00\x01\x02")
    (event,) = pair.send(pair.client)
    assert event == Message(memoryview(b"\x00\x01\x02"), text=False)
    assert isinstance(event.data, memoryview)
    assert event.data.obj is pair.server.buffer.view().obj


def test_text_and_binary_round_trip(pair: Any) -> None:
    pair.client.send_text("héllo wörld")
    pair.server.send_binary(bytes(70000))
    (msg,) = pair.send(pair.client)
    assert msg.text and msg.as_text() == "héllo wörld"
    (msg,) = pair.send(pair.server)
    assert not msg.text and bytes(msg.data) == bytes(70000)


def test_fragmented_send_literal_bytes() -> None:
    server = Protocol(Side.SERVER)
    server.send_text("Hello", fragment_size=3)
    assert server.data_to_send() == [
        b"\x01\x03",
        memoryview(b"Hel"),
        b"\x80\x02",
        memoryview(b"lo"),
    ]
    server.send_binary(b"ab", fragment_size=5)
    assert wire(server) == b"\x82\x02ab"
    with pytest.raises(LocalProtocolError):
        server.send_binary(b"ab", fragment_size=0)


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_fragmented_round_trip(pair: Any, size: int) -> None:
    data = bytes(range(256)) * 20
    pair.client.send_binary(data, fragment_size=size)
    (msg,) = pair.send(pair.client)
    assert bytes(msg.data) == data


def test_rfc_fragmented_text_with_interleaved_ping() -> None:
    server, events = server_receives(
        b"\x01\x83" + KEY + m(b"Hel"),
        b"\x89\x84" + KEY + m(b"ping"),
        b"\x80\x82" + KEY + m(b"lo"),
    )
    assert events == [Ping(b"ping"), Message(b"Hello", text=True)]
    assert wire(server) == b"\x8a\x04ping"  # auto-pong, same payload (5.5.2)


def test_pong_event_and_manual_pong() -> None:
    server, events = server_receives(b"\x8a\x82" + KEY + m(b"hi"))
    assert events == [Pong(b"hi")]
    server.send_pong(b"x")
    server.send_ping(b"y")
    assert wire(server) == b"\x8a\x01x\x89\x01y"
    quiet, events = server_receives(b"\x89\x80" + KEY, auto_pong=False)
    assert events == [Ping(b"")] and wire(quiet) == b""


def test_pending_events_survive_a_buffer_write() -> None:
    server = Protocol(Side.SERVER)
    server.receive_data(b"\x82\x83" + KEY + m(b"abc"))
    server.receive_data(b"\x82\x83" + KEY + m(b"xyz"))  # writes the buffer again
    assert [bytes(e.data) for e in server.events_received()] == [b"abc", b"xyz"]


def test_writable_commit_path() -> None:
    server = Protocol(Side.SERVER)
    data = b"\x82\x83" + KEY + m(b"abc")
    view = server.writable(1 << 30)  # capped to what the buffer may hold
    view[: len(data)] = data
    server.commit(len(data))
    assert [bytes(e.data) for e in server.events_received()] == [b"abc"]


# --- UTF-8 (8.1), checked incrementally ---------------------------------------------------

TEXT = "aé€😀z".encode()


@pytest.mark.parametrize("split", range(len(TEXT) + 1))
def test_valid_utf8_fragmented_at_every_byte(split: int) -> None:
    server, events = server_receives(
        bytes([0x01, 0x80 | split]) + KEY + m(TEXT[:split]),
        bytes([0x80, 0x80 | (len(TEXT) - split)]) + KEY + m(TEXT[split:]),
    )
    assert server.error is None
    assert events == [Message(TEXT, text=True)]


@pytest.mark.parametrize(
    ("data", "invalid_at"),
    [
        (b"ab\xe2\x82X", 4),  # a truncated 3-byte sequence, then ASCII
        (b"a\xed\xa0\x80", 2),  # a UTF-16 surrogate: invalid from its second byte
        (b"a\xf4\x90\x80\x80", 2),  # above U+10FFFF
        (b"ab\xff", 2),
        (b"\xc0\xaf", 0),  # overlong
    ],
)
def test_invalid_utf8_caught_on_the_frame_where_it_becomes_invalid(
    data: bytes, invalid_at: int
) -> None:
    for split in range(len(data) + 1):
        server = Protocol(Side.SERVER)
        server.receive_data(bytes([0x01, 0x80 | split]) + KEY + m(data[:split]))
        if split > invalid_at:
            assert_failed(server, 1007)
            continue
        assert server.error is None, split
        # Not final yet: the rest arrives in a second frame (without FIN: fail before the end).
        server.receive_data(bytes([0x00, 0x80 | (len(data) - split)]) + KEY + m(data[split:]))
        assert_failed(server, 1007)


def test_truncated_utf8_at_end_of_message() -> None:
    server, _ = server_receives(b"\x81\x82" + KEY + m(b"\xe2\x82"))
    assert_failed(server, 1007)


def test_invalid_utf8_single_frame() -> None:
    server, events = server_receives(b"\x81\x82" + KEY + m(b"\xce\x28"))
    assert events == []
    assert_failed(server, 1007)


# --- violations -----------------------------------------------------------------------------


def test_continuation_without_message() -> None:
    server, _ = server_receives(b"\x80\x82" + KEY + m(b"lo"))
    assert_failed(server, 1002)


def test_new_data_frame_inside_fragmented_message() -> None:
    server, _ = server_receives(b"\x01\x83" + KEY + m(b"Hel"), b"\x81\x82" + KEY + m(b"lo"))
    assert_failed(server, 1002)


def test_unmasked_client_frame() -> None:
    server, _ = server_receives(b"\x81\x05Hello")
    assert_failed(server, 1002)


def test_rsv1_without_deflate() -> None:
    server, _ = server_receives(b"\xc1\x85" + KEY + m(b"Hello"))
    assert_failed(server, 1002)


def test_close_payload_of_one_byte() -> None:
    server, _ = server_receives(b"\x88\x81" + KEY + m(b"\x03"))
    assert_failed(server, 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_invalid_close_code(code: int) -> None:
    server, events = server_receives(b"\x88\x82" + KEY + m(struct.pack("!H", code)))
    assert events == []
    assert_failed(server, 1002)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1014, 3000, 4999])
def test_valid_close_code_is_echoed(code: int) -> None:
    server, events = server_receives(b"\x88\x82" + KEY + m(struct.pack("!H", code)))
    assert events == [CloseReceived(code, "")]
    assert wire(server) == b"\x88\x02" + struct.pack("!H", code)


def test_invalid_utf8_close_reason() -> None:
    server, _ = server_receives(b"\x88\x83" + KEY + m(b"\x03\xe8\xff"))
    assert_failed(server, 1007)


def test_message_too_big_single_frame() -> None:
    # Refused from the header: the 200 bytes of payload never arrive.
    server, _ = server_receives(b"\x82\xfe\x00\xc8" + KEY, max_size=100)
    assert_failed(server, 1009)


def test_message_too_big_across_fragments() -> None:
    server, events = server_receives(
        b"\x02\x84" + KEY + m(b"abcd"),
        b"\x89\x80" + KEY,  # a ping does not count against the budget
        b"\x00\x84" + KEY + m(b"efgh"),
        b"\x80\x83" + KEY + m(b"ijk"),
        max_size=10,
    )
    assert events == [Ping(b"")]
    assert server.error is not None and server.error.close_code == 1009
    sent = wire(server)
    assert sent.startswith(b"\x8a\x00")  # the pong went out before the failure
    assert sent[2:6] == b"\x88" + bytes([len(sent) - 4]) + b"\x03\xf1"


def test_exactly_max_size_across_fragments() -> None:
    server, events = server_receives(
        b"\x02\x85" + KEY + m(b"abcde"), b"\x80\x85" + KEY + m(b"fghij"), max_size=10
    )
    assert server.error is None
    assert events == [Message(b"abcdefghij")]


def test_nothing_is_processed_after_failing() -> None:
    server, events = server_receives(
        b"\x80\x80" + KEY, b"\x81\x82" + KEY + m(b"hi"), b"\x89\x80" + KEY
    )
    assert events == []
    assert len(server.buffer) == 0
    assert wire(server).count(b"\x88") == 1  # one close frame, no pong


# --- closing handshake (7.1) --------------------------------------------------------------


def test_closing_handshake_client_initiates(pair: Any) -> None:
    pair.client.send_close(1000, "bye")
    assert pair.client.state is State.CLOSING and pair.client.close_expected()
    with pytest.raises(LocalProtocolError):
        pair.client.send_text("late")
    assert pair.send(pair.client) == [CloseReceived(1000, "bye")]
    assert pair.server.state is State.CLOSING
    assert pair.server.should_close_transport()  # 7.1.1: the server closes TCP first
    assert pair.server.data_to_send() == [b"\x88\x02", b"\x03\xe8"]
    pair.client.receive_data(b"\x88\x02\x03\xe8")
    assert pair.client.events_received() == [CloseReceived(1000, "")]
    assert pair.client.close_expected() and not pair.client.should_close_transport()
    pair.client.receive_eof()
    assert pair.client.state is State.CLOSED
    assert pair.client.events_received() == [ConnectionClosed(1000, "")]
    assert pair.client.close_code == 1000


def test_closing_handshake_server_initiates(pair: Any) -> None:
    pair.server.send_close(4000, "app")
    assert pair.wire(pair.server) == b"\x88\x05\x0f\xa0app"
    assert not pair.server.should_close_transport()  # waits for the client's close
    pair.client.receive_data(b"\x88\x05\x0f\xa0app")
    assert pair.client.events_received() == [CloseReceived(4000, "app")]
    echo = pair.client.data_to_send()
    for buf in echo:
        pair.server.receive_data(buf)
    assert pair.server.events_received() == [CloseReceived(4000, "")]
    assert pair.server.should_close_transport()


def test_close_without_code_is_echoed_empty() -> None:
    server, events = server_receives(b"\x88\x80" + KEY)
    assert events == [CloseReceived(1005, "")]
    assert wire(server) == b"\x88\x00"


def test_data_after_close_is_ignored() -> None:
    server, events = server_receives(b"\x88\x80" + KEY + b"\x81\x82" + KEY + m(b"hi"))
    assert events == [CloseReceived(1005, "")]
    assert len(server.buffer) == 0


def test_data_still_delivered_while_waiting_for_close_reply(pair: Any) -> None:
    pair.server.send_close()
    pair.client.send_text("in flight")  # the client has not seen our close yet
    (msg,) = pair.send(pair.client)
    assert msg.as_text() == "in flight"


def test_eof_without_close_is_1006() -> None:
    server = Protocol(Side.SERVER)
    server.receive_eof()
    server.receive_eof()  # idempotent
    assert server.events_received() == [ConnectionClosed(1006, "")]
    assert server.close_code == 1006
    assert server.state is State.CLOSED


def test_eof_after_failure_reports_error() -> None:
    server, _ = server_receives(b"\x80\x80" + KEY)
    server.receive_eof()
    (closed,) = server.events_received()
    assert isinstance(closed, ConnectionClosed)
    assert closed.code == 1006 and closed.error is server.error


def test_misuse_is_local_protocol_error(pair: Any) -> None:
    with pytest.raises(LocalProtocolError):
        pair.client.send_ping(bytes(126))
    with pytest.raises(LocalProtocolError):
        pair.client.send_close(1006)  # reserved: never on the wire
    pair.client.send_close()
    for call in (pair.client.send_close, pair.client.send_ping, pair.client.send_pong):
        with pytest.raises(LocalProtocolError):
            call()
    with pytest.raises(LocalProtocolError):
        Protocol(Side.CLIENT, state=State.CLOSED)


# --- CONNECTING -> OPEN ---------------------------------------------------------------------


def test_connecting_then_open_parses_buffered_frames() -> None:
    buf = ReceiveBuffer()
    client = Protocol(Side.CLIENT, state=State.CONNECTING, buffer=buf)
    assert buf.max_size >= (1 << 20) + 14  # a full-size frame and its header fit
    client.receive_data(b"HTTP/1.1 101 ...\r\n\r\n\x81\x02hi")
    assert client.events_received() == []
    assert len(buf) > 0  # the handshake bytes are left alone
    buf.consume(len(b"HTTP/1.1 101 ...\r\n\r\n"))
    client.open()
    assert client.events_received() == [Message(b"hi", text=True)]
    with pytest.raises(LocalProtocolError):
        client.open()


# --- permessage-deflate ---------------------------------------------------------------------


def test_rfc7692_compressed_hello_frames() -> None:
    client = Protocol(Side.CLIENT, deflate=DeflateParams())
    client.receive_data(bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00"))
    # 7.2.3.1, fragmented: RSV1 on the first frame only.
    client.receive_data(bytes.fromhex("41 03 f2 48 cd") + bytes.fromhex("80 04 c9 c9 07 00"))
    assert client.events_received() == [Message(b"Hello", True), Message(b"Hello", True)]
    server = Protocol(Side.SERVER, deflate=DeflateParams())
    server.send_text("Hello")
    assert wire(server) == bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00")


def test_deflate_pair_round_trip_with_fragments(make_pair: Any) -> None:
    pair = make_pair(deflate=DeflateParams(client_no_context_takeover=True))
    text = " ".join(str(i * i) for i in range(3000))
    pair.server.send_text(text, fragment_size=50)
    frames = pair.server.data_to_send()
    headers = frames[0::2]
    assert headers[0][0] == 0x41  # TEXT, RSV1, not FIN
    assert all(h[0] in (0x00, 0x80) for h in headers[1:])  # no RSV1 on continuations
    for buf in frames:
        pair.client.receive_data(buf)
    (msg,) = pair.client.events_received()
    assert msg.as_text() == text
    pair.client.send_binary(b"raw", compress=False)
    pair.client.send_binary(b"x" * 5000)
    assert [bytes(e.data) for e in pair.send(pair.client)] == [b"raw", b"x" * 5000]


def test_rsv1_on_continuation_or_control_frame_is_1002() -> None:
    server, _ = server_receives(
        b"\x41\x83" + KEY + m(b"\xf2\x48\xcd"),
        b"\xc0\x84" + KEY + m(b"\xc9\xc9\x07\x00"),
        deflate=DeflateParams(),
    )
    assert_failed(server, 1002)
    server, _ = server_receives(b"\xc9\x80" + KEY, deflate=DeflateParams())
    assert_failed(server, 1002)


def test_compressed_message_too_big_is_1009() -> None:
    client = Protocol(Side.CLIENT, deflate=DeflateParams())
    sender = Protocol(Side.SERVER, deflate=DeflateParams())
    sender.send_binary(bytes(2_000_000))
    for buf in sender.data_to_send():
        client.receive_data(buf)
    assert client.error is not None and client.error.close_code == 1009


# --- property test --------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=400), st.sampled_from([Side.CLIENT, Side.SERVER]), st.booleans())
def test_random_bytes_never_raise(data: bytes, side: Side, deflate: bool) -> None:
    proto = Protocol(side, max_size=300, deflate=DeflateParams() if deflate else None)
    proto.receive_data(data)
    proto.events_received()
    proto.receive_eof()
    assert proto.state is State.CLOSED
    if proto.error is not None:
        assert proto.error.close_code in (1002, 1007, 1009)
        assert proto.close_sent is not None


def read_in(proto: Protocol, data: bytes) -> None:
    """Feed ``data`` as the I/O layer does: into :meth:`Protocol.read_buffer`, then commit."""
    while data:
        view = proto.read_buffer()
        n = min(len(view), len(data))
        view[:n] = data[:n]
        proto.commit(n)
        data = data[n:]


def test_bytes_wanted_is_what_the_header_declares():
    server = Protocol(Side.SERVER, max_size=4 << 20)
    header, _payload = FrameWriter(Side.CLIENT).write(WireFrame(Opcode.BINARY, bytes(3 << 20)))
    assert server.bytes_wanted() == 2
    server.receive_data(header)
    assert server.bytes_wanted() == 3 << 20


@pytest.mark.parametrize(("declared", "max_size"), [(1 << 20, 1 << 20), (10**7, 16 << 20)])
def test_memory_follows_what_arrived_not_what_the_header_declares(declared, max_size):
    # Issue 13 item 3: a header declaring ~1 MiB (or 10 MB under a 16 MiB limit) with 17
    # bytes of payload held a buffer of the declared size (up to max_size) at once.
    # Its own pool: no buffer kept from another test's large message.
    server = Protocol(Side.SERVER, max_size=max_size, buffer=ReceiveBuffer(pool=BufferPool()))
    payload = bytes(range(256)) * (declared // 256) + bytes(declared % 256)
    frame = b"".join(FrameWriter(Side.CLIENT).write(WireFrame(Opcode.BINARY, payload)))
    header = len(frame) - declared
    read_in(server, frame[: header + 17])
    chunk = 64 * 1024  # the pool's chunk: what any connection with unread bytes holds
    assert server.buffer.capacity <= chunk
    read_in(server, frame[header + 17 : header + 200_000])
    # Grown as the bytes came, to at most 4 times what arrived.
    assert 200_000 <= server.buffer.capacity <= 4 * 200_000
    read_in(server, frame[header + 200_000 :])
    (message,) = server.events_received()
    assert message.data == payload
    assert server.buffer.capacity <= 2 * len(frame)


# --- small messages: the per-message fast path ------------------------------------------------


def test_small_message_over_max_size_is_1009() -> None:
    # A 7-bit length is still checked against a max_size below 125.
    server, events = server_receives(b"\x82\x8b" + KEY + m(b"hello world"), max_size=10)
    assert events == []
    assert_failed(server, 1009)


def test_small_masked_frame_to_a_client_is_1002() -> None:
    client = Protocol(Side.CLIENT)
    client.receive_data(b"\x82\x82" + KEY + m(b"hi"))
    assert client.events_received() == []
    assert client.error is not None and client.error.close_code == 1002


def test_small_messages_one_byte_at_a_time() -> None:
    # Every split point of a run of small frames, header and payload alike.
    messages = [(b"", False), (b"x", True), (bytes(range(125)), False), ("é€😀".encode(), True)]
    keys = MaskKeys(4)
    stream = b"".join(
        bytes(part)
        for data, text in messages
        for part in FrameWriter(Side.CLIENT, keys=keys).write(
            WireFrame(Opcode.TEXT if text else Opcode.BINARY, data)
        )
    )
    server = Protocol(Side.SERVER)
    events = []
    for i in range(len(stream)):
        server.receive_data(stream[i : i + 1])
        events += [(bytes(e.data), e.text) for e in server.events_received()]
    assert events == messages
    assert server.error is None


@settings(max_examples=100)
@given(
    st.lists(st.tuples(st.binary(max_size=140), st.booleans(), st.booleans()), max_size=12),
    st.sampled_from([Side.CLIENT, Side.SERVER]),
    st.integers(min_value=1, max_value=64),
)
def test_small_and_fragmented_messages_in_any_chunking(
    messages: list[tuple[bytes, bool, bool]], side: Side, chunk: int
) -> None:
    # Binary messages around the 125-byte edge of the fast path, some fragmented (which
    # the fast path must leave alone), fed in chunks of any size: delivered as sent.
    sender = Protocol(Side.SERVER if side is Side.CLIENT else Side.CLIENT)
    for data, fragmented, ping in messages:
        sender.send_binary(data, fragment_size=max(1, len(data) // 2) if fragmented else None)
        if ping:
            sender.send_ping(b"p")
    stream = wire(sender)
    receiver = Protocol(side)
    got = []
    for start in range(0, len(stream), chunk):
        receiver.receive_data(stream[start : start + chunk])
        got += [bytes(e.data) for e in receiver.events_received() if isinstance(e, Message)]
    assert got == [data for data, _, _ in messages]
    assert receiver.error is None


def test_protocol_has_slots_and_a_plain_state() -> None:
    # One Protocol per connection: no per-instance dict (memory per idle connection), and
    # the state is read as an attribute on the per-message path.
    proto = Protocol(Side.SERVER, state=State.CONNECTING)
    assert not hasattr(proto, "__dict__")
    assert proto.state is State.CONNECTING
    proto.open()
    assert proto.state is State.OPEN
    proto.send_close()
    assert proto.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        proto.send_binary(b"late")
    with pytest.raises(LocalProtocolError):
        proto.send_text("late")


# --- Autobahn strictness (issue 13 item 25) -----------------------------------------------


def autobahn_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A client frame as autobahntestsuite's sendFrame() builds it (rsv: the 3-bit field)."""
    header = serialize_header(
        opcode,
        len(payload),
        fin=fin,
        rsv1=bool(rsv & 4),
        rsv2=bool(rsv & 2),
        rsv3=bool(rsv & 1),
        mask_key=KEY,
    )
    return header + m(payload)


HELLO = b"Hello, world!"
# Case id -> the frames it sends (autobahntestsuite/case/caseN_N.py) and the echo expected.
IN_ORDER_CASES = {
    "3.2": ([autobahn_frame(1, HELLO), autobahn_frame(1, HELLO, rsv=2), autobahn_frame(9)], HELLO),
    "3.3": ([autobahn_frame(1, HELLO), autobahn_frame(1, HELLO, rsv=3), autobahn_frame(9)], HELLO),
    "4.1.3": ([autobahn_frame(1, HELLO), autobahn_frame(5), autobahn_frame(9)], HELLO),
    "4.1.4": ([autobahn_frame(1, HELLO), autobahn_frame(6, HELLO), autobahn_frame(9)], HELLO),
    "4.2.3": ([autobahn_frame(1, HELLO), autobahn_frame(13), autobahn_frame(9)], HELLO),
    "4.2.4": ([autobahn_frame(1, HELLO), autobahn_frame(14, HELLO), autobahn_frame(9)], HELLO),
    "5.15": (
        [
            autobahn_frame(1, b"fragment1", fin=False),
            autobahn_frame(0, b"fragment2", fin=True),
            autobahn_frame(0, b"fragment3", fin=False),
            autobahn_frame(1, b"fragment4", fin=True),
        ],
        b"fragment1fragment2",
    ),
}


def echo_app(server: Protocol, reads: list[bytes]) -> bytes:
    """Run an echo application on ``server`` over ``reads``; return everything it sent."""
    sent = b""
    for data in reads:
        server.receive_data(data)
        for event in server.events_received():
            if isinstance(event, Message) and server.state is State.OPEN:
                server.send_text(event.data) if event.text else server.send_binary(event.data)
        sent += wire(server)
    return sent


@pytest.mark.parametrize("case", IN_ORDER_CASES)
@pytest.mark.parametrize("chops", ["one read", "frame-wise"])
def test_valid_message_is_echoed_before_the_bad_frame_fails(case: str, chops: str) -> None:
    # Item 25 (a): events are handled in order, the error after them.
    frames, echo = IN_ORDER_CASES[case]
    reads = [b"".join(frames)] if chops == "one read" else frames
    server = Protocol(Side.SERVER)
    sent = echo_app(server, reads)
    expected_echo = bytes((0x81, len(echo))) + echo
    assert sent.startswith(expected_echo), sent
    close = sent[len(expected_echo) :]
    assert close[:1] == b"\x88" and struct.unpack("!H", close[2:4])[0] == 1002
    assert len(close) == 2 + close[1], "the close frame is last: the ping is not answered"
    assert server.error is not None and server.should_close_transport()


MESSAGE_CLOSE_PING = [
    autobahn_frame(1, HELLO),
    autobahn_frame(8, struct.pack("!H", 1000)),
    autobahn_frame(9, b"late"),
]


@pytest.mark.parametrize(
    "split", [None, *range(1, len(b"".join(MESSAGE_CLOSE_PING)))], ids=lambda n: f"split@{n}"
)
def test_messages_before_a_close_in_the_same_read_are_echoed_first(split: int | None) -> None:
    # Autobahn 7.1.6: a message, the close, then a ping, in one read (or two reads split at
    # every byte). The echo goes out before the close reply (5.5.1 lets an endpoint finish
    # sending first); the ping after the close is not answered.
    data = b"".join(MESSAGE_CLOSE_PING)
    reads = [data] if split is None else [data[:split], data[split:]]
    server = Protocol(Side.SERVER)
    sent = echo_app(server, reads)
    echo = b"\x81\x0d" + HELLO
    assert sent == echo + b"\x88\x02" + struct.pack("!H", 1000), sent
    assert server.state is State.CLOSING and server.close_received == (1000, "")
    assert server.should_close_transport()


def test_a_close_waiting_for_its_messages_is_answered_at_eof() -> None:
    server = Protocol(Side.SERVER)
    server.receive_data(autobahn_frame(1, HELLO) + autobahn_frame(8, struct.pack("!H", 1001)))
    assert server.state is State.OPEN  # the close waits for the message to be handled
    server.receive_eof()
    events = server.events_received()
    assert [type(e).__name__ for e in events] == ["Message", "CloseReceived", "ConnectionClosed"]
    assert wire(server) == b"\x88\x02" + struct.pack("!H", 1001)
    assert server.state is State.CLOSED


def test_failure_waits_only_for_collected_events() -> None:
    server = Protocol(Side.SERVER)
    server.receive_data(autobahn_frame(1, HELLO) + autobahn_frame(5))
    assert server.state is State.OPEN and server.error is None  # the message comes first
    assert server.events_received() == [Message(HELLO, text=True)]
    server.send_text(HELLO)
    sent = wire(server)  # data_to_send(): the reply, then the close frame
    assert sent.startswith(b"\x81\x0d" + HELLO) and sent[15:16] == b"\x88"
    assert server.error is not None and server.state is State.CLOSING
    server.receive_eof()
    (closed,) = server.events_received()
    assert isinstance(closed, ConnectionClosed) and closed.error is server.error


def test_eof_applies_a_pending_failure() -> None:
    server = Protocol(Side.SERVER)
    server.receive_data(autobahn_frame(1, HELLO) + autobahn_frame(1, HELLO, rsv=2))
    server.receive_eof()
    events = server.events_received()
    assert events[0] == Message(HELLO, text=True)
    assert isinstance(events[-1], ConnectionClosed) and events[-1].error is not None


# Autobahn 6.4.1's payload: valid, then 0x110000 encoded (invalid at its second byte), then valid.
PAYLOAD1 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
PAYLOAD2 = b"\xf4\x90\x80\x80"
PAYLOAD3 = b"\x65\x64\x69\x74\x65\x64"
PAYLOAD = PAYLOAD1 + PAYLOAD2 + PAYLOAD3


def chops_of(frame: bytes, payload_cuts: list[int]) -> list[bytes]:
    """Split a masked 7-bit-length frame at offsets of its payload (the header goes first)."""
    cuts = [6 + c for c in payload_cuts]
    return [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)], strict=True)]


@pytest.mark.parametrize(
    ("case", "cuts"),
    [("6.4.3", [len(PAYLOAD1), len(PAYLOAD1 + PAYLOAD2)]), ("6.4.4", [12, 13])],
)
def test_invalid_utf8_fails_before_the_frame_is_complete(case: str, cuts: list[int]) -> None:
    # Item 25 (b): the second chop already makes the text invalid; the third never matters.
    first, second, _third = chops_of(autobahn_frame(1, PAYLOAD), cuts)
    server = Protocol(Side.SERVER)
    server.receive_data(first)
    assert server.error is None, "the first chop is valid"
    server.receive_data(second)
    assert_failed(server, 1007)


def large_text_frame(text: bytes, *, opcode: int = 1, fin: bool = True) -> bytes:
    return serialize_header(opcode, len(text), fin=fin, mask_key=KEY) + bytes(mask_bytes(text, KEY))


LARGE_TEXT = "aé€😀z".encode() * 200  # 2,200 bytes: the general (not small-frame) path


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1000])
def test_large_text_frame_in_pieces_is_checked_as_it_comes(step: int) -> None:
    # Valid: unmasked and decoded piece by piece, never twice; the message is intact.
    frame = large_text_frame(LARGE_TEXT)
    server = Protocol(Side.SERVER)
    for i in range(0, len(frame), step):
        server.receive_data(frame[i : i + step])
    assert server.error is None
    assert server.events_received() == [Message(LARGE_TEXT, text=True)]
    # Invalid in the middle: failed once that piece arrives, long before the end.
    bad = LARGE_TEXT[:1001] + b"\xff" + LARGE_TEXT[1002:]
    frame = large_text_frame(bad)
    server = Protocol(Side.SERVER)
    header = len(frame) - len(bad)
    end = header + 1002
    for i in range(0, end, step):
        server.receive_data(frame[i : min(i + step, end)])
    assert_failed(server, 1007)


@pytest.mark.parametrize("step", [1, 5, 300])
def test_fragmented_text_with_a_ping_in_between_checked_as_it_comes(step: int) -> None:
    first = LARGE_TEXT[:1000]  # cuts "€" after its first byte: the decoder holds it
    second = LARGE_TEXT[1000:]
    wire_bytes = (
        large_text_frame(first, fin=False)
        + autobahn_frame(9, b"p")
        + large_text_frame(second, opcode=0)
    )
    server = Protocol(Side.SERVER)
    for i in range(0, len(wire_bytes), step):
        server.receive_data(wire_bytes[i : i + step])
    events = server.events_received()
    assert events == [Ping(b"p"), Message(bytearray(LARGE_TEXT), text=True)]
    assert server.error is None

"""Frame parser and serializer: RFC 6455 section 5 rules, checked against literal bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.frames import (
    CloseCode,
    Frame,
    FrameParser,
    FrameWriter,
    MaskKeys,
    Opcode,
    Side,
    is_valid_close_code,
    parse_close_payload,
    serialize_close_payload,
    serialize_header,
)
from netkit.core.ws.mask import mask_bytes
from netkit.errors import LocalProtocolError, PeerProtocolError

KEY = b"\x37\xfa\x21\x3d"  # the masking key of RFC 6455 5.7


class FixedKeys(MaskKeys):
    """Always the RFC's key, so that serialized client frames can be compared to literals."""

    def next(self) -> bytes:
        return KEY


def buffer_of(data: bytes) -> ReceiveBuffer:
    buf = ReceiveBuffer()
    buf.extend(data)
    return buf


def parse_all(data: bytes, side: Side, **kwargs: object) -> list[Frame]:
    buf = buffer_of(data)
    parser = FrameParser(side, **kwargs)  # type: ignore[arg-type]
    frames = []
    while (frame := parser.parse(buf)) is not None:
        frames.append(Frame(frame.opcode, bytes(frame.payload), frame.fin, frame.rsv1))
    assert len(buf) == 0, "parser left bytes behind"
    return frames


def wire(frame: Frame, side: Side) -> bytes:
    return b"".join(bytes(b) for b in FrameWriter(side, keys=FixedKeys()).write(frame))


def expect_error(data: bytes, side: Side, code: int, **kwargs: object) -> PeerProtocolError:
    parser = FrameParser(side, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PeerProtocolError) as info:
        parser.parse(buffer_of(data))
    assert info.value.close_code == code
    return info.value


# --- RFC 6455 section 5.7 examples -------------------------------------------------------

HELLO_UNMASKED = bytes.fromhex("81 05 48 65 6c 6c 6f")
HELLO_MASKED = bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58")


def test_rfc_single_frame_unmasked_text() -> None:
    assert parse_all(HELLO_UNMASKED, Side.CLIENT) == [Frame(Opcode.TEXT, b"Hello")]
    assert wire(Frame(Opcode.TEXT, b"Hello"), Side.SERVER) == HELLO_UNMASKED


def test_rfc_single_frame_masked_text() -> None:
    assert parse_all(HELLO_MASKED, Side.SERVER) == [Frame(Opcode.TEXT, b"Hello")]
    assert wire(Frame(Opcode.TEXT, b"Hello"), Side.CLIENT) == HELLO_MASKED


def test_rfc_fragmented_unmasked_text() -> None:
    data = bytes.fromhex("01 03 48 65 6c") + bytes.fromhex("80 02 6c 6f")
    assert parse_all(data, Side.CLIENT) == [
        Frame(Opcode.TEXT, b"Hel", fin=False),
        Frame(Opcode.CONT, b"lo"),
    ]
    assert wire(Frame(Opcode.TEXT, b"Hel", fin=False), Side.SERVER) == data[:5]
    assert wire(Frame(Opcode.CONT, b"lo"), Side.SERVER) == data[5:]


def test_rfc_ping_and_masked_pong() -> None:
    ping = bytes.fromhex("89 05 48 65 6c 6c 6f")
    pong = bytes.fromhex("8a 85 37 fa 21 3d 7f 9f 4d 51 58")
    assert parse_all(ping, Side.CLIENT) == [Frame(Opcode.PING, b"Hello")]
    assert parse_all(pong, Side.SERVER) == [Frame(Opcode.PONG, b"Hello")]
    assert wire(Frame(Opcode.PING, b"Hello"), Side.SERVER) == ping
    assert wire(Frame(Opcode.PONG, b"Hello"), Side.CLIENT) == pong


def test_rfc_256_byte_binary_header() -> None:
    assert serialize_header(Opcode.BINARY, 256) == bytes.fromhex("82 7E 01 00")
    payload = bytes(range(256))
    assert parse_all(b"\x82\x7e\x01\x00" + payload, Side.CLIENT) == [Frame(Opcode.BINARY, payload)]


def test_rfc_64k_binary_header() -> None:
    assert serialize_header(Opcode.BINARY, 65536) == bytes.fromhex("82 7F 00 00 00 00 00 01 00 00")
    payload = b"\xab" * 65536
    frames = parse_all(bytes.fromhex("82 7F 00 00 00 00 00 01 00 00") + payload, Side.CLIENT)
    assert frames == [Frame(Opcode.BINARY, payload)]


# --- round trips of every length encoding -------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("sender", [Side.CLIENT, Side.SERVER])
def test_round_trip_every_length(size: int, sender: Side) -> None:
    receiver = Side.SERVER if sender is Side.CLIENT else Side.CLIENT
    payload = bytes(i % 251 for i in range(size))
    data = b"".join(bytes(b) for b in FrameWriter(sender).write(Frame(Opcode.BINARY, payload)))
    header_len = {0: 2, 1: 2, 125: 2, 126: 4, 65535: 4}.get(size, 10) + (
        4 if sender is Side.CLIENT else 0
    )
    assert len(data) == header_len + size
    assert parse_all(data, receiver) == [Frame(Opcode.BINARY, payload)]


def test_writer_returns_header_and_payload_separately_without_copy() -> None:
    payload = memoryview(bytearray(b"x" * 300))
    buffers = FrameWriter(Side.SERVER).write(Frame(Opcode.BINARY, payload))
    assert buffers[0] == b"\x82\x7e\x01\x2c"
    assert buffers[1] is payload  # a server sends the caller's buffer as is
    assert FrameWriter(Side.SERVER).write(Frame(Opcode.CLOSE)) == [b"\x88\x00"]


def test_client_masks_into_new_bytes_and_leaves_payload_alone() -> None:
    payload = bytearray(b"Hello")
    header, masked = FrameWriter(Side.CLIENT, keys=FixedKeys()).write(Frame(Opcode.TEXT, payload))
    assert header == b"\x81\x85" + KEY
    assert masked == bytes.fromhex("7f 9f 4d 51 58")
    assert payload == b"Hello"


def test_parsed_payload_is_a_view_of_the_receive_buffer_unmasked_in_place() -> None:
    buf = buffer_of(HELLO_MASKED)
    frame = FrameParser(Side.SERVER).parse(buf)
    assert frame is not None
    assert isinstance(frame.payload, memoryview)
    assert frame.payload.obj is buf.view().obj  # same bytearray: no copy
    assert frame.payload == b"Hello"


def test_rsv_bits_round_trip_when_allowed() -> None:
    data = wire(Frame(Opcode.TEXT, b"x", rsv1=True), Side.SERVER)
    assert data[0] == 0xC1
    (frame,) = parse_all(data, Side.CLIENT, rsv1_allowed=True)
    assert frame.rsv1


def test_mask_keys_are_fresh_and_batched() -> None:
    keys = MaskKeys(batch=8)
    drawn = [keys.next() for _ in range(1000)]
    assert all(len(k) == 4 for k in drawn)
    assert len(set(drawn)) > 990  # 32 random bits: collisions are vanishingly rare
    with pytest.raises(ValueError):
        MaskKeys(batch=6)


# --- incomplete input ---------------------------------------------------------------------


def test_need_more_returns_none_and_consumes_nothing() -> None:
    parser = FrameParser(Side.SERVER)
    for cut in range(len(HELLO_MASKED)):
        buf = buffer_of(HELLO_MASKED[:cut])
        assert parser.parse(buf) is None
        assert len(buf) == cut


def test_stream_split_at_every_point_gives_the_same_frames() -> None:
    frames = [
        Frame(Opcode.TEXT, b"Hel", fin=False),
        Frame(Opcode.PING, b"ping"),
        Frame(Opcode.CONT, b"lo"),
        Frame(Opcode.BINARY, bytes(300)),
        Frame(Opcode.BINARY, b""),
        Frame(Opcode.CLOSE, b"\x03\xe8bye"),
    ]
    stream = b"".join(wire(f, Side.CLIENT) for f in frames)
    expected = [Frame(f.opcode, bytes(f.payload), f.fin) for f in frames]
    for split in range(len(stream) + 1):
        buf = ReceiveBuffer()
        parser = FrameParser(Side.SERVER)
        got: list[Frame] = []
        for chunk in (stream[:split], stream[split:]):
            buf.extend(chunk)
            while (frame := parser.parse(buf)) is not None:
                got.append(Frame(frame.opcode, bytes(frame.payload), frame.fin))
        assert got == expected, split


def test_needed_reports_the_frame_size() -> None:
    parser = FrameParser(Side.CLIENT)
    assert parser.needed(buffer_of(b"")) == 2
    assert parser.needed(buffer_of(b"\x82\x7e")) == 4
    assert parser.needed(buffer_of(b"\x82\x7e\x01\x00")) == 4 + 256


# --- violations, each with its close code -------------------------------------------------


def test_64bit_length_with_top_bit_set() -> None:
    expect_error(b"\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00", Side.CLIENT, 1002)


@pytest.mark.parametrize("first", [b"\xc1", b"\xa1", b"\x91", b"\xf1"])
def test_reserved_bits_without_extension(first: bytes) -> None:
    expect_error(first + b"\x00", Side.CLIENT, 1002)


def test_rsv2_rejected_even_with_deflate() -> None:
    expect_error(b"\xa1\x00", Side.CLIENT, 1002, rsv1_allowed=True)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcode(opcode: int) -> None:
    expect_error(bytes([0x80 | opcode, 0x00]), Side.CLIENT, 1002)


def test_control_frame_longer_than_125() -> None:
    # Rejected from the header alone: the 126 bytes of payload never need to arrive.
    expect_error(b"\x89\x7e\x00\x7e", Side.CLIENT, 1002)
    expect_error(b"\x88\x7e\x00\x7e", Side.CLIENT, 1002)


def test_fragmented_control_frame() -> None:
    expect_error(b"\x09\x00", Side.CLIENT, 1002)
    expect_error(b"\x0a\x00", Side.CLIENT, 1002)


def test_unmasked_frame_from_client() -> None:
    expect_error(HELLO_UNMASKED, Side.SERVER, 1002)


def test_masked_frame_from_server() -> None:
    expect_error(b"\x81\x85" + KEY + bytes.fromhex("7f 9f 4d 51 58"), Side.CLIENT, 1002)


def test_max_size_checked_before_the_payload_is_buffered() -> None:
    # Only the header has arrived: the 256-byte frame is refused at once.
    expect_error(b"\x82\x7e\x01\x00", Side.CLIENT, 1009, max_size=255)
    expect_error(b"\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x00", Side.CLIENT, 1009)
    assert parse_all(b"\x82\x7e\x01\x00" + bytes(256), Side.CLIENT, max_size=256)


def test_max_size_does_not_apply_to_control_frames() -> None:
    buf = buffer_of(b"\x89\x05Hello")
    assert FrameParser(Side.CLIENT).parse(buf, max_size=0) is not None


# --- close frame payloads (5.5.1, 7.4) ----------------------------------------------------


def test_close_payload_round_trip() -> None:
    assert serialize_close_payload(1000, "bye") == b"\x03\xe8bye"
    assert parse_close_payload(b"\x03\xe8bye") == (1000, "bye")
    assert parse_close_payload(b"") == (CloseCode.NO_STATUS_RCVD, "")
    assert serialize_close_payload(None) == b""
    assert parse_close_payload(b"\x0f\xa0" + "é".encode()) == (4000, "é")


def test_close_payload_of_one_byte() -> None:
    with pytest.raises(PeerProtocolError) as info:
        parse_close_payload(b"\x03")
    assert info.value.close_code == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(PeerProtocolError) as info:
        parse_close_payload(struct.pack("!H", code))
    assert info.value.close_code == 1002
    if code == CloseCode.NO_STATUS_RCVD:
        assert serialize_close_payload(code) == b""  # "no code": an empty close frame
    else:
        with pytest.raises(LocalProtocolError):
            serialize_close_payload(code)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert is_valid_close_code(code)
    assert parse_close_payload(struct.pack("!H", code)) == (code, "")


def test_close_reason_not_utf8() -> None:
    with pytest.raises(PeerProtocolError) as info:
        parse_close_payload(b"\x03\xe8\xff")
    assert info.value.close_code == 1007


def test_local_misuse_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Frame(Opcode.PING, bytes(126))
    with pytest.raises(LocalProtocolError):
        Frame(Opcode.CLOSE, fin=False)
    with pytest.raises(LocalProtocolError):
        serialize_close_payload(1000, "x" * 124)
    with pytest.raises(LocalProtocolError):
        serialize_close_payload(None, "reason without code")


# --- property tests -----------------------------------------------------------------------

frames_strategy = st.one_of(
    st.builds(
        Frame,
        st.sampled_from([Opcode.CONT, Opcode.TEXT, Opcode.BINARY]),
        st.binary(max_size=70000),
        fin=st.booleans(),
        rsv1=st.booleans(),
    ),
    st.builds(
        Frame, st.sampled_from([Opcode.PING, Opcode.PONG, Opcode.CLOSE]), st.binary(max_size=125)
    ),
)


@given(st.lists(frames_strategy, max_size=5), st.sampled_from([Side.CLIENT, Side.SERVER]))
def test_random_frames_round_trip(frames: list[Frame], sender: Side) -> None:
    receiver = Side.SERVER if sender is Side.CLIENT else Side.CLIENT
    stream = b"".join(b"".join(bytes(b) for b in FrameWriter(sender).write(f)) for f in frames)
    got = parse_all(stream, receiver, rsv1_allowed=True)
    assert got == [Frame(f.opcode, bytes(f.payload), f.fin, f.rsv1) for f in frames]


@given(st.binary(max_size=300), st.sampled_from([Side.CLIENT, Side.SERVER]))
def test_random_bytes_only_raise_peer_protocol_error(data: bytes, side: Side) -> None:
    buf = buffer_of(data)
    parser = FrameParser(side, max_size=200)
    try:
        while parser.parse(buf) is not None:
            pass
    except PeerProtocolError as exc:
        assert exc.close_code in (1002, 1009)


def test_mask_helper_matches_rfc_example() -> None:
    assert mask_bytes(b"Hello", KEY) == bytes.fromhex("7f 9f 4d 51 58")


@pytest.mark.parametrize("side", [Side.CLIENT, Side.SERVER])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONT])
@pytest.mark.parametrize("size", [0, 1, 4, 5, 124, 125, 126, 200, 1 << 16])
@pytest.mark.parametrize("fin", [True, False])
def test_write_data_matches_write(side: Side, opcode: Opcode, size: int, fin: bool) -> None:
    # write_data's table-driven small frames are byte for byte what write() builds.
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    fast = FrameWriter(side, keys=FixedKeys()).write_data(opcode, payload, fin=fin)
    slow = FrameWriter(side, keys=FixedKeys()).write(Frame(opcode, payload, fin=fin))
    assert b"".join(fast) == b"".join(slow)
    assert len(fast) == (2 if size else 1)  # header and payload stay apart

"""Property tests of the WebSocket frame codec and protocol against arbitrary input.

What ``tests/core/ws`` already covers is not repeated here: one-chunk round trips of random
frames (``test_random_frames_round_trip``), random bytes into one parser call and into a
:class:`Protocol` fed at once. This module adds the byte stream cut at arbitrary points (the
outcome must not depend on how reads split it), streams that are almost valid (a real stream
with bytes flipped, dropped or inserted, which reach much deeper than random bytes), ``needed()``,
close payloads, and whole conversations through the state machine.

The only exception a parser may raise on peer input is :class:`PeerProtocolError`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from netkit.core.buffers import BufferPool, ReceiveBuffer
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.events import CloseReceived, ConnectionClosed, Event, Message, Ping, Pong
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
)
from netkit.core.ws.protocol import Protocol
from netkit.errors import PeerProtocolError

# NETKIT_FUZZ_EXAMPLES=5000 runs every property longer, to hunt rather than to check.
EXAMPLES = int(os.environ.get("NETKIT_FUZZ_EXAMPLES", "0")) or 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SIDES = st.sampled_from([Side.CLIENT, Side.SERVER])


def other(side: Side) -> Side:
    return Side.SERVER if side is Side.CLIENT else Side.CLIENT


class FixedKeys(MaskKeys):
    """Masking keys from a seed: the same stream every time, so outcomes can be compared."""

    def __init__(self, seed: int = 0x37FA213D) -> None:
        super().__init__()
        self._next = seed

    def next(self) -> bytes:
        self._next = (self._next * 1103515245 + 12345) & 0xFFFFFFFF
        return self._next.to_bytes(4, "big")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (any order, duplicates allowed: empty reads happen too)."""
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def cuts_for(data: st.DataObject, size: int) -> list[int]:
    return data.draw(st.lists(st.integers(0, size), max_size=8), label="cuts")


# --- strategies -----------------------------------------------------------------------------

# Every length encoding: 7-bit, 16-bit (126..65535) and, rarely, 64-bit (>= 65536).
payloads = st.one_of(
    st.binary(max_size=130),
    st.integers(126, 1000).map(lambda n: bytes(i % 251 for i in range(n))),
    st.integers(65536, 65600).map(lambda n: b"\x5a" * n),
)
data_frames = st.builds(
    Frame,
    st.sampled_from([Opcode.CONT, Opcode.TEXT, Opcode.BINARY]),
    payloads,
    fin=st.booleans(),
    rsv1=st.booleans(),
)
control_frames = st.builds(
    Frame, st.sampled_from([Opcode.PING, Opcode.PONG, Opcode.CLOSE]), st.binary(max_size=125)
)
frames = st.one_of(data_frames, control_frames)


def wire(frame: Frame, side: Side, keys: MaskKeys | None = None) -> bytes:
    return b"".join(bytes(b) for b in FrameWriter(side, keys=keys or FixedKeys()).write(frame))


@st.composite
def almost_valid_streams(draw: st.DrawFn) -> tuple[bytes, Side]:
    """A real stream as ``side`` would receive it, with a few bytes flipped, dropped or added."""
    side = draw(SIDES)
    small = st.binary(max_size=40)
    data_frame = st.builds(
        Frame, st.sampled_from([Opcode.CONT, Opcode.TEXT, Opcode.BINARY]), small, fin=st.booleans()
    )
    chosen = draw(st.lists(st.one_of(data_frame, control_frames), min_size=1, max_size=4))
    stream = bytearray(b"".join(wire(f, other(side)) for f in chosen))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        pos = draw(st.integers(0, len(stream)))
        if action == "flip" and pos < len(stream):
            stream[pos] ^= draw(st.integers(1, 255))
        elif action == "drop" and pos < len(stream):
            del stream[pos]
        elif action == "insert":
            stream[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif action == "truncate":
            del stream[pos:]
    return bytes(stream), side


def arbitrary_streams() -> st.SearchStrategy[tuple[bytes, Side]]:
    return st.one_of(st.tuples(st.binary(max_size=300), SIDES), almost_valid_streams())


# --- FrameParser ------------------------------------------------------------------------------


@dataclass
class ParseOutcome:
    frames: list[tuple[Opcode, bytes, bool, bool]]
    error: tuple[type[PeerProtocolError], int | None, str] | None
    left: int | None  # bytes left unparsed; None after an error (reading stopped there)


def parse_chunks(parser: FrameParser, chunks: list[bytes]) -> ParseOutcome:
    """Feed ``chunks`` one read at a time, parsing everything after each; stop at an error.

    Checks on the way that ``needed()`` agrees with ``parse()``: more than is buffered while
    ``parse()`` says "need more", exactly the frame's size when a frame comes out.
    """
    buf = ReceiveBuffer()
    got: list[tuple[Opcode, bytes, bool, bool]] = []
    try:
        for chunk in chunks:
            buf.extend(chunk)
            while True:
                before = len(buf)
                try:
                    needed = parser.needed(buf)
                except PeerProtocolError:
                    needed = None  # parse() must then raise too
                frame = parser.parse(buf)
                if frame is None:
                    assert needed is not None and needed > before
                    break
                # Copy: the payload is a view that the next extend() may overwrite.
                got.append((frame.opcode, bytes(frame.payload), frame.fin, frame.rsv1))
                if needed is not None:
                    assert before - len(buf) == needed
    except PeerProtocolError as exc:
        return ParseOutcome(got, (type(exc), exc.close_code, str(exc)), None)
    return ParseOutcome(got, None, len(buf))


@FUZZ
@given(st.lists(frames, max_size=6), SIDES, st.data())
def test_random_frames_round_trip_through_any_split(
    sent: list[Frame], sender: Side, data: st.DataObject
) -> None:
    stream = b"".join(wire(f, sender) for f in sent)
    chunks = split(stream, cuts_for(data, len(stream)))
    outcome = parse_chunks(FrameParser(other(sender), max_size=None, rsv1_allowed=True), chunks)
    assert outcome.error is None
    assert outcome.left == 0
    assert outcome.frames == [(f.opcode, bytes(f.payload), f.fin, f.rsv1) for f in sent]


@FUZZ
@given(
    arbitrary_streams(),
    st.sampled_from([None, 0, 20, 125, 200]),
    st.booleans(),
    st.data(),
)
def test_any_split_of_any_stream_parses_the_same(
    stream_side: tuple[bytes, Side], max_size: int | None, rsv1: bool, data: st.DataObject
) -> None:
    stream, side = stream_side

    def make() -> FrameParser:
        return FrameParser(side, max_size=max_size, rsv1_allowed=rsv1)

    whole = parse_chunks(make(), [stream])
    pieces = parse_chunks(make(), split(stream, cuts_for(data, len(stream))))
    assert pieces == whole
    if whole.error is not None:
        assert whole.error[1] in (1002, 1009)


@FUZZ
@given(arbitrary_streams())
def test_byte_by_byte_parses_like_one_read(stream_side: tuple[bytes, Side]) -> None:
    stream, side = stream_side
    whole = parse_chunks(FrameParser(side), [stream])
    assert parse_chunks(FrameParser(side), [stream[i : i + 1] for i in range(len(stream))]) == whole


# --- close payloads ---------------------------------------------------------------------------


@settings(max_examples=max(EXAMPLES, 200), deadline=None)
@given(
    st.one_of(
        st.binary(max_size=125),
        st.tuples(st.integers(0, 65535), st.binary(max_size=123)).map(
            lambda t: t[0].to_bytes(2, "big") + t[1]
        ),
        st.tuples(st.sampled_from([1000, 1001, 1011, 3000, 4999]), st.text(max_size=40)).map(
            lambda t: t[0].to_bytes(2, "big") + t[1].encode()[:123]
        ),
    )
)
def test_close_payload_parses_or_raises_and_round_trips(payload: bytes) -> None:
    try:
        code, reason = parse_close_payload(payload)
    except PeerProtocolError as exc:
        assert exc.close_code in (1002, 1007)
        return
    if not payload:
        assert (code, reason) == (CloseCode.NO_STATUS_RCVD, "")
        assert serialize_close_payload(None) == b""
        return
    assert is_valid_close_code(code)
    assert serialize_close_payload(code, reason) == payload


# --- Protocol ---------------------------------------------------------------------------------

Normalized = tuple[object, ...]


def normalize(event: Event) -> Normalized:
    if isinstance(event, Message):
        return ("message", bytes(event.data), event.text)
    if isinstance(event, Ping | Pong):
        return (type(event).__name__.lower(), event.payload)
    if isinstance(event, CloseReceived):
        return ("close", event.code, event.reason)
    assert isinstance(event, ConnectionClosed)
    err = event.error
    return ("closed", event.code, event.reason, None if err is None else err.close_code)


@dataclass
class ProtocolOutcome:
    events: list[Normalized]
    sent: bytes
    error: int | None
    close_received: tuple[int, str] | None


def feed_protocol(make: Callable[[], Protocol], chunks: list[bytes]) -> ProtocolOutcome:
    """Feed ``chunks`` as separate reads, then EOF. :class:`Protocol` must never raise."""
    proto = make()
    events: list[Normalized] = []
    sent = bytearray()
    for chunk in chunks:
        proto.receive_data(chunk)
        # Normalize at once: delivered messages are views the next read may overwrite.
        events += [normalize(e) for e in proto.events_received()]
        sent += b"".join(bytes(b) for b in proto.data_to_send())
    proto.receive_eof()
    events += [normalize(e) for e in proto.events_received()]
    if proto.error is not None:
        assert proto.error.close_code in (1002, 1007, 1009)
        assert proto.close_sent is not None
    return ProtocolOutcome(
        events,
        bytes(sent),
        None if proto.error is None else proto.error.close_code,
        proto.close_received,
    )


@FUZZ
@given(arbitrary_streams(), st.booleans(), st.sampled_from([None, 50, 300]), st.data())
def test_protocol_outcome_does_not_depend_on_how_reads_split_the_stream(
    stream_side: tuple[bytes, Side], deflate: bool, max_size: int | None, data: st.DataObject
) -> None:
    stream, side = stream_side

    def make() -> Protocol:
        params = DeflateParams() if deflate else None
        return Protocol(side, max_size=max_size, deflate=params, keys=FixedKeys())

    whole = feed_protocol(make, [stream])
    assert feed_protocol(make, split(stream, cuts_for(data, len(stream)))) == whole


# (kind, argument): ("text", (str, fragment_size)), ("binary", (bytes, fragment_size)),
# ("ping", bytes), ("close", (code, reason)).
Step = tuple[str, Any]


@st.composite
def conversations(draw: st.DrawFn) -> list[Step]:
    """What a peer does: messages (some fragmented), pings, and perhaps a close at the end."""
    steps: list[Step] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "binary", "ping"]))
        if kind == "text":
            steps.append(
                ("text", (draw(st.text(max_size=200)), draw(st.none() | st.integers(1, 64))))
            )
        elif kind == "binary":
            steps.append(
                ("binary", (draw(st.binary(max_size=300)), draw(st.none() | st.integers(1, 64))))
            )
        else:
            steps.append(("ping", draw(st.binary(max_size=125))))
    if draw(st.booleans()):
        steps.append(
            ("close", (draw(st.sampled_from([1000, 1001, 3000, 4999])), draw(st.text(max_size=20))))
        )
    return steps


@FUZZ
@given(conversations(), SIDES, st.booleans(), st.data())
def test_random_conversations_arrive_whole_through_any_split(
    steps: list[Step], side: Side, deflate: bool, data: st.DataObject
) -> None:
    params = DeflateParams() if deflate else None
    peer = Protocol(other(side), deflate=params, keys=FixedKeys())
    expected: list[Normalized] = []
    for kind, arg in steps:
        if kind == "text":
            text, fragment = arg
            peer.send_text(text, fragment_size=fragment)
            expected.append(("message", text.encode(), True))
        elif kind == "binary":
            payload, fragment = arg
            peer.send_binary(payload, fragment_size=fragment)
            expected.append(("message", payload, False))
        elif kind == "ping":
            peer.send_ping(arg)
            expected.append(("ping", arg))
        else:
            code, reason = arg
            peer.send_close(code, reason)
            expected.append(("close", code, reason))
    stream = b"".join(bytes(b) for b in peer.data_to_send())

    def make() -> Protocol:
        return Protocol(side, deflate=params, keys=FixedKeys())

    outcome = feed_protocol(make, split(stream, cuts_for(data, len(stream))))
    closed = (
        ("closed", expected[-1][1], expected[-1][2], None)
        if steps and steps[-1][0] == "close"
        else ("closed", 1006, "", None)
    )
    assert outcome.events == [*expected, closed]
    assert outcome.error is None
    # What we answered: a pong per ping (5.5.2) and the close echo (5.5.1), nothing else.
    answers = parse_chunks(FrameParser(other(side), max_size=None), [outcome.sent])
    assert answers.error is None and answers.left == 0
    pings = [e[1] for e in expected if e[0] == "ping"]
    assert [p for op, p, _, _ in answers.frames if op is Opcode.PONG] == pings
    closes = [p for op, p, _, _ in answers.frames if op is Opcode.CLOSE]
    if steps and steps[-1][0] == "close":
        assert closes == [serialize_close_payload(steps[-1][1][0])]
    else:
        assert closes == []


# --- known bugs -------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(st.lists(st.binary(min_size=160, max_size=250), min_size=2, max_size=4), SIDES)
@example([b"a" * 160, b"b" * 160], Side.SERVER)
def test_receive_data_accepts_more_valid_frames_than_the_buffer_holds(
    messages: list[bytes], side: Side
) -> None:
    # A 64-byte pool makes the buffer's cap max_size + 14 = 314 bytes: two frames overflow it.
    buf = ReceiveBuffer(max_size=64, pool=BufferPool(64))
    proto = Protocol(side, max_size=300, buffer=buf)
    stream = b"".join(wire(Frame(Opcode.BINARY, m), other(side)) for m in messages)
    assert len(stream) > buf.max_size
    proto.receive_data(stream)
    assert [bytes(e.data) for e in proto.events_received() if isinstance(e, Message)] == messages

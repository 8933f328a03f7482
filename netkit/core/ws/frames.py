"""WebSocket frames (RFC 6455 section 5): parse straight out of a receive buffer, serialize headers.

Wire format (5.2)::

     0                   1                   2                   3
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               |Masking-key, if MASK set to 1  |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

:class:`FrameParser` returns a :class:`Frame` whose payload is a memoryview slice of the
:class:`~netkit.core.buffers.ReceiveBuffer`, unmasked in place: no copy. Such a view is valid
until the buffer is next written (``writable()``/``extend()``).

:class:`FrameWriter` returns the header bytes and the payload as separate buffers, for
scatter-gather writes (``sendmsg``/``writelines``); a client's payload is masked into new bytes.
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass
from typing import Final

from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.mask import SMALL_MAX, Buffer, mask_bytes, unmask_into, xor_small
from netkit.errors import LocalProtocolError, PeerProtocolError

__all__ = [
    "CONTROL_OPCODES",
    "DATA_OPCODES",
    "DEFAULT_MAX_SIZE",
    "MAX_CONTROL_PAYLOAD",
    "MAX_HEADER_SIZE",
    "CloseCode",
    "Frame",
    "FrameParser",
    "FrameWriter",
    "MaskKeys",
    "Opcode",
    "Side",
    "frame_from",
    "is_valid_close_code",
    "parse_close_payload",
    "serialize_close_payload",
    "serialize_header",
]

DEFAULT_MAX_SIZE: Final = 1 << 20
# 2 bytes + 8 of 64-bit length + 4 of masking key.
MAX_HEADER_SIZE: Final = 14
# 5.5: all control frames MUST have a payload length of 125 bytes or less.
MAX_CONTROL_PAYLOAD: Final = 125

_FIN: Final = 0x80
_RSV1: Final = 0x40
_RSV2: Final = 0x20
_RSV3: Final = 0x10
_OPCODE: Final = 0x0F
_MASK: Final = 0x80
_LEN7: Final = 0x7F

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEAD = struct.Struct("!BB")
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


class Side(enum.Enum):
    """Which end of the connection we are: it decides who masks (5.1)."""

    CLIENT = "client"
    SERVER = "server"


class Opcode(enum.IntEnum):
    """Frame opcodes (5.2, 11.8)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES: Final = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES: Final = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
_OPCODES: Final = {int(op): op for op in Opcode}


class CloseCode(enum.IntEnum):
    """Close status codes (7.4.1), plus the ones registered since (11.7)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS_RCVD = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "the TCP connection dropped"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# 7.4.1/7.4.2: codes an endpoint may put in a close frame. 1004-1006 and 1015 are reserved or
# local-only; 1016-2999 are reserved for future RFCs; 3000-4999 belong to libraries and apps.
_WIRE_CLOSE_CODES: Final = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame on the wire (7.4.1, 7.4.2).

    Args:
        code: a close status code.

    Returns:
        True for 1000-1003, 1007-1014 and 3000-4999.
    """
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


@dataclass(frozen=True, slots=True)
class Frame:
    """One WebSocket frame.

    Attributes:
        opcode: what the frame carries.
        payload: the application (or extension) data, unmasked. From the parser it is a view
            of the receive buffer, valid until the buffer is next written.
        fin: last frame of a message.
        rsv1: reserved bit 1 (permessage-deflate's "compressed" flag).
        rsv2: reserved bit 2.
        rsv3: reserved bit 3.
    """

    opcode: Opcode
    payload: Buffer = b""
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    def __post_init__(self) -> None:
        # 5.5: control frames are short and never fragmented.
        if self.opcode in CONTROL_OPCODES:
            if len(self.payload) > MAX_CONTROL_PAYLOAD:
                raise LocalProtocolError(
                    f"{self.opcode.name} payload of {len(self.payload)} bytes exceeds 125"
                )
            if not self.fin:
                raise LocalProtocolError(f"{self.opcode.name} frame must not be fragmented")


class FrameParser:
    """Parses frames out of a :class:`ReceiveBuffer`, checking every rule of 5.2 on the way.

    Args:
        side: our side; a server requires masked frames, a client unmasked ones (5.1).
        max_size: the largest payload accepted in one frame, checked from the header before
            the payload is buffered (1009). None for no limit.
        rsv1_allowed: an extension using RSV1 (permessage-deflate) was negotiated.
    """

    __slots__ = ("_mask_in", "max_size", "rsv1_allowed", "side")

    def __init__(
        self,
        side: Side,
        *,
        max_size: int | None = DEFAULT_MAX_SIZE,
        rsv1_allowed: bool = False,
    ) -> None:
        self.side = side
        self.max_size = max_size
        self.rsv1_allowed = rsv1_allowed
        # The mask bit of the peer's frames (5.1: a client masks, a server does not).
        self._mask_in = _MASK if side is Side.SERVER else 0

    def _header_size(self, head: memoryview) -> int:
        # Checks everything the first two bytes can tell, then says how long the header is.
        b0, b1 = head[0], head[1]
        # 5.2: RSV1-3 MUST be 0 unless an extension defines them.
        if (b0 & _RSV1 and not self.rsv1_allowed) or b0 & (_RSV2 | _RSV3):
            raise PeerProtocolError("reserved bits set without a negotiated extension")
        opcode = b0 & _OPCODE
        if opcode not in _OPCODES:
            raise PeerProtocolError(f"unknown opcode {opcode:#x}")
        length7 = b1 & _LEN7
        if opcode >= 0x8:
            # 5.5: control frames: payload <= 125 bytes, not fragmented.
            if length7 > MAX_CONTROL_PAYLOAD:
                raise PeerProtocolError("control frame payload longer than 125 bytes")
            if not b0 & _FIN:
                raise PeerProtocolError("fragmented control frame")
        masked = bool(b1 & _MASK)
        # 5.1: a client masks every frame it sends; a server masks none.
        if self.side is Side.SERVER and not masked:
            raise PeerProtocolError("unmasked frame from a client")
        if self.side is Side.CLIENT and masked:
            raise PeerProtocolError("masked frame from a server")
        size = 2 + (4 if masked else 0)
        if length7 == 126:
            size += 2
        elif length7 == 127:
            size += 8
        return size

    def _payload_length(self, header: memoryview) -> int:
        length7 = header[1] & _LEN7
        if length7 < 126:
            return length7
        if length7 == 126:
            (length,) = _U16.unpack_from(header, 2)
            return int(length)
        (length,) = _U64.unpack_from(header, 2)
        # 5.2: the most significant bit of a 64-bit length MUST be 0.
        if length >> 63:
            raise PeerProtocolError("64-bit payload length with the top bit set")
        return int(length)

    def needed(self, buf: ReceiveBuffer) -> int:
        """Tell how many bytes the frame at the front of ``buf`` needs in all, header included.

        A hint for the I/O layer's ``writable(min_size)``; may grow as more of the header
        arrives (2, then the header size, then header plus payload).
        """
        if len(buf) < 2:
            return 2
        head = buf.view(2)
        size = self._header_size(head)
        if len(buf) < size:
            return size
        return size + self._payload_length(buf.view(size))

    def peek(self, buf: ReceiveBuffer) -> tuple[int, int, bytes | None] | None:
        """Look at the header of the frame at the front of ``buf`` without consuming it.

        :meth:`parse` starts with it; a caller checking a frame's payload as it arrives
        (UTF-8 of a long text frame) calls it after :meth:`parse` returned None.

        Raises:
            PeerProtocolError: the first two bytes break a rule of 5.2/5.5.

        Returns:
            ``(header size, payload length, masking key or None)``, or None while the header
            is incomplete.
        """
        if len(buf) < 2:
            return None
        size = self._header_size(buf.view(2))
        if len(buf) < size:
            return None
        header = buf.view(size)
        key = bytes(header[size - 4 : size]) if header[1] & _MASK else None
        return size, self._payload_length(header), key

    def read(
        self, buf: ReceiveBuffer, max_size: int | None = -1, unmasked: int = 0
    ) -> tuple[int, memoryview, int] | None:
        """Return the next complete frame as ``(first header byte, payload, bytes left)``.

        The one frame parser: :meth:`parse` wraps its result in a :class:`Frame`, the
        protocol takes it as is (the first byte says opcode, FIN and RSV bits). A whole small
        data frame (FIN set, no RSV bit, a 7-bit length, masked as the side requires) is
        read by a short path inside it, the frame of ping-pong and chat traffic; it checks
        what the general path would and leaves anything else to it.

        Args:
            buf: the receive buffer; on success the frame's bytes are consumed from it.
            max_size: the payload limit of a data frame for this call (e.g. what remains of a
                message's budget); the default -1 means the parser's own ``max_size``.
            unmasked: how many leading payload bytes the caller already unmasked in place
                (:func:`~netkit.core.ws.mask.unmask_into` with ``start``) while the frame
                was arriving.

        Returns:
            ``(byte 0, payload, left)``: the payload a view of ``buf`` unmasked in place, and
            how many bytes stay buffered after the frame (0: the read ended with it); or None
            while the frame is incomplete.

        Raises:
            PeerProtocolError: a rule of 5.2/5.5 is broken (close code 1002), or the payload
                length exceeds the limit (1009), checked before the payload is buffered.
        """
        limit = self.max_size if max_size == -1 else max_size
        view = buf.view()
        if len(view) < 2:
            return None
        b0 = view[0]
        if (b0 == 0x82 or b0 == 0x81) and not unmasked:
            # The short path. XOR with the expected mask bit: a frame masked the wrong way
            # gets a length over 125 and goes the general way, which refuses it (5.1).
            length = view[1] ^ self._mask_in
            if length <= MAX_CONTROL_PAYLOAD and (limit is None or length <= limit):
                start = 6 if self._mask_in else 2
                end = start + length
                if len(view) < end:
                    return None
                payload = view[start:end]
                if start == 6 and length:
                    # 5.3: unmask in place, the masked bytes are of no further use.
                    unmask_into(payload, view[2:6])
                buf.consume(end)
                return b0, payload, len(view) - end
        head = self.peek(buf)
        if head is None:
            return None
        size, length, key = head
        # Control frames are bounded by 125 bytes already (5.5) and never count against a
        # message's budget: a ping inside a nearly full fragmented message is fine.
        if limit is not None and length > limit and not b0 & 0x08:
            raise PeerProtocolError(
                f"frame of {length} bytes exceeds the {limit}-byte limit", close_code=1009
            )
        if len(view) < size + length:
            return None
        payload = view[size : size + length]
        if key is not None:
            # 5.3: unmask in place, the masked bytes are of no further use.
            unmask_into(payload, key, unmasked)
        buf.consume(size + length)
        return b0, payload, len(view) - size - length

    def parse(
        self, buf: ReceiveBuffer, *, max_size: int | None = -1, unmasked: int = 0
    ) -> Frame | None:
        """As :meth:`read`, the frame as a :class:`Frame`; None if more bytes are needed."""
        item = self.read(buf, max_size, unmasked)
        return None if item is None else frame_from(item[0], item[1])


def frame_from(b0: int, payload: Buffer) -> Frame:
    """The :class:`Frame` with first header byte ``b0`` (opcode, FIN, RSV bits) and ``payload``."""
    return Frame(
        _OPCODES[b0 & _OPCODE],
        payload,
        fin=bool(b0 & _FIN),
        rsv1=bool(b0 & _RSV1),
        rsv2=bool(b0 & _RSV2),
        rsv3=bool(b0 & _RSV3),
    )


class MaskKeys:
    """Fresh, unpredictable 4-byte masking keys, drawn from ``os.urandom`` in batches.

    10.3: the key must be unpredictable to the application that provides the data, hence a
    strong source; one ``urandom`` call per 1024 keys keeps the syscall off the per-frame path.

    Args:
        batch: bytes drawn at a time (a multiple of 4).
    """

    __slots__ = ("_batch", "_offset", "_pool")

    def __init__(self, batch: int = 4096) -> None:
        if batch <= 0 or batch % 4:
            raise ValueError("batch must be a positive multiple of 4")
        self._batch = batch
        self._pool = b""
        self._offset = 0

    def next(self) -> bytes:
        """Return the next key, never handed out before."""
        if self._offset >= len(self._pool):
            self._pool = os.urandom(self._batch)
            self._offset = 0
        key = self._pool[self._offset : self._offset + 4]
        self._offset += 4
        return key


_DEFAULT_KEYS = MaskKeys()


def serialize_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask_key: bytes | None = None,
) -> bytes:
    """Serialize a frame header (5.2): the bytes that go before the payload.

    Args:
        opcode: the frame's opcode.
        length: the payload length.
        fin: last frame of the message.
        rsv1: set RSV1 (permessage-deflate marks the first frame of a compressed message).
        rsv2: set RSV2.
        rsv3: set RSV3.
        mask_key: the 4-byte masking key for a client's frame, None for a server's.

    Returns:
        2 to 14 bytes.

    Raises:
        LocalProtocolError: a negative or 64-bit-overflowing length, or a bad key.
    """
    b0 = (
        (_FIN if fin else 0)
        | (_RSV1 if rsv1 else 0)
        | (_RSV2 if rsv2 else 0)
        | (_RSV3 if rsv3 else 0)
        | opcode
    )
    mask_bit = _MASK if mask_key is not None else 0
    # 5.2: the minimal number of bytes MUST be used to encode the length.
    if 0 <= length < 126:
        header = _HEAD.pack(b0, mask_bit | length)
    elif 126 <= length < 1 << 16:
        header = _HEAD16.pack(b0, mask_bit | 126, length)
    elif 1 << 16 <= length < 1 << 63:
        header = _HEAD64.pack(b0, mask_bit | 127, length)
    else:
        raise LocalProtocolError(f"payload length {length} cannot be framed")
    if mask_key is not None:
        if len(mask_key) != 4:
            raise LocalProtocolError("a masking key is 4 bytes")
        header += mask_key
    return header


# Headers of whole (FIN) text and binary frames with a 7-bit length, by opcode, then length:
# the header of a small message is a table lookup. The masked ones get the key appended.
_SMALL_HEADERS: Final = {
    (opcode, mask): [bytes((_FIN | opcode, mask | n)) for n in range(SMALL_MAX + 1)]
    for opcode in (Opcode.TEXT, Opcode.BINARY)
    for mask in (0, _MASK)
}


class FrameWriter:
    """Serializes frames for one side: a client masks every frame, a server none (5.1).

    Args:
        side: our side.
        keys: where masking keys come from (tests inject fixed ones).
    """

    __slots__ = ("_keys", "_mask", "side")

    def __init__(self, side: Side, *, keys: MaskKeys | None = None) -> None:
        self.side = side
        self._keys = keys if keys is not None else _DEFAULT_KEYS
        self._mask = _MASK if side is Side.CLIENT else 0

    def write(self, frame: Frame) -> list[Buffer]:
        """Return the buffers to send for ``frame``: header, then payload unless it is empty.

        The buffers are never joined, so callers can write them with one scatter-gather call.
        A server's payload is the caller's object itself: it must not change until written.
        A client's payload is masked into new bytes.
        """
        payload = frame.payload
        key = self._keys.next() if self._mask else None
        header = serialize_header(
            frame.opcode,
            len(payload),
            fin=frame.fin,
            rsv1=frame.rsv1,
            rsv2=frame.rsv2,
            rsv3=frame.rsv3,
            mask_key=key,
        )
        if not payload:
            return [header]
        if key is not None:
            # 5.3: masking the caller's payload needs a copy: it is theirs, not ours.
            payload = mask_bytes(payload, key)
        return [header, payload]

    def write_data(
        self, opcode: Opcode, payload: Buffer, *, fin: bool = True, rsv1: bool = False
    ) -> list[Buffer]:
        """As :meth:`write` for a data frame (TEXT, BINARY, CONT), without building a Frame.

        The per-message path: a whole small message costs a table lookup for its header (and
        on a client a key and one XOR), which is most of what ping-pong traffic sends.
        """
        n = len(payload)
        if n <= SMALL_MAX and fin and not rsv1 and opcode:
            header = _SMALL_HEADERS[opcode, self._mask][n]
            if self._mask:
                key = self._keys.next()
                masked = xor_small(payload, int.from_bytes(key, "little"))  # as key_int()
                return [header + key, masked] if n else [header + key]
            return [header, payload] if n else [header]
        return self.write(Frame(opcode, payload, fin=fin, rsv1=rsv1))


def parse_close_payload(payload: Buffer) -> tuple[int, str]:
    """Parse a close frame's payload (5.5.1): an optional code and a UTF-8 reason.

    Args:
        payload: the unmasked payload.

    Returns:
        ``(code, reason)``; ``(1005, "")`` for an empty payload (7.1.5).

    Raises:
        PeerProtocolError: a 1-byte payload or an invalid code (1002), a reason that is not
            UTF-8 (1007).
    """
    n = len(payload)
    if n == 0:
        return CloseCode.NO_STATUS_RCVD, ""
    if n == 1:
        raise PeerProtocolError("close frame with a 1-byte payload")
    (code,) = _U16.unpack_from(payload, 0)
    if not is_valid_close_code(code):
        raise PeerProtocolError(f"invalid close code {code}")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError as exc:
        # 5.5.1 + 8.1: the reason is UTF-8; invalid data gets 1007.
        raise PeerProtocolError("close reason is not valid UTF-8", close_code=1007) from exc
    return int(code), reason


def serialize_close_payload(code: int | None = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
    """Serialize a close frame's payload (5.5.1).

    Args:
        code: the status code, or None for an empty payload (then ``reason`` must be empty).
        reason: a human-readable reason; at most 123 bytes of UTF-8.

    Returns:
        The payload.

    Raises:
        LocalProtocolError: an invalid code, a reason without a code, or a reason too long.
    """
    if code is None or code == CloseCode.NO_STATUS_RCVD:
        if reason:
            raise LocalProtocolError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise LocalProtocolError(f"close code {code} may not be sent")
    data = _U16.pack(code) + reason.encode("utf-8")
    if len(data) > MAX_CONTROL_PAYLOAD:
        raise LocalProtocolError("close reason longer than 123 bytes of UTF-8")
    return data

"""The probe payload netkit's clients send when they generate traffic.

Layout (big-endian)::

    0      4      8             16            24
    | NKP1 | size |  sequence   | send time ns | filler ...

``size`` is the whole payload length, so a truncated or padded echo is caught. The filler is a
repeating pattern derived from the sequence number, so a payload that comes back with the right
header but corrupted bytes is caught too. Datagram tools (udp-echo, multicast) read the sequence
and send time from it; stream tools compare whole payloads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"NKP1"
HEADER = struct.Struct("!4sIQQ")
HEADER_SIZE = HEADER.size  # 24


@dataclass(frozen=True)
class Probe:
    """A decoded probe header."""

    seq: int
    sent_ns: int
    size: int


# Byte i of the filler is (seq + i) mod 256: one slice of this table for any datagram size.
_TABLE = bytes(i & 0xFF for i in range(65536 + 256))


def _filler(seq: int, n: int) -> bytes:
    if n <= 0:
        return b""
    start = seq & 0xFF
    if n <= 65536:
        return _TABLE[start : start + n]
    reps, rest = divmod(n, 256)
    return _TABLE[start : start + 256] * reps + _TABLE[start : start + rest]


def _filler_matches(data: bytes | bytearray | memoryview, seq: int, n: int) -> bool:
    """Whether the ``n`` bytes after the header are the filler of ``seq``.

    ``bytes.startswith`` compares with memcmp whatever buffer it is given: a memoryview
    compared with ``==`` goes item by item (7.4 us against 0.15 us for 1436 bytes, measured),
    which was most of a sink's time per datagram.
    """
    tail = memoryview(data)[HEADER_SIZE:]
    if n <= 65536:
        return _TABLE.startswith(tail, seq & 0xFF)
    return bool(tail == _filler(seq, n))


def make_probe(seq: int, sent_ns: int, size: int = HEADER_SIZE) -> bytes:
    """Build a probe of ``size`` bytes (at least the 24-byte header)."""
    size = max(size, HEADER_SIZE)
    return HEADER.pack(MAGIC, size, seq & 0xFFFFFFFFFFFFFFFF, sent_ns) + _filler(
        seq, size - HEADER_SIZE
    )


def parse_probe(data: bytes | bytearray | memoryview) -> Probe | None:
    """Decode a probe; None if the bytes are not an intact netkit probe."""
    fields = probe_fields(data)
    return None if fields is None else Probe(*fields)


def probe_fields(data: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """:func:`parse_probe` without building a :class:`Probe`: ``(seq, sent_ns, size)``, or
    None (for receivers that count every datagram of a bitrate test)."""
    if len(data) < HEADER_SIZE:
        return None
    magic, size, seq, sent_ns = HEADER.unpack_from(data)
    if magic != MAGIC or size != len(data):
        return None
    if not _filler_matches(data, seq, size - HEADER_SIZE):
        return None
    return seq, sent_ns, size

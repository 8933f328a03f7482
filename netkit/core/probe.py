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


def make_probe(seq: int, sent_ns: int, size: int = HEADER_SIZE) -> bytes:
    """Build a probe of ``size`` bytes (at least the 24-byte header)."""
    size = max(size, HEADER_SIZE)
    return HEADER.pack(MAGIC, size, seq & 0xFFFFFFFFFFFFFFFF, sent_ns) + _filler(
        seq, size - HEADER_SIZE
    )


def parse_probe(data: bytes | bytearray | memoryview) -> Probe | None:
    """Decode a probe; None if the bytes are not an intact netkit probe."""
    if len(data) < HEADER_SIZE:
        return None
    magic, size, seq, sent_ns = HEADER.unpack_from(data)
    if magic != MAGIC or size != len(data):
        return None
    if data[HEADER_SIZE:] != _filler(seq, size - HEADER_SIZE):
        return None
    return Probe(seq=seq, sent_ns=sent_ns, size=size)

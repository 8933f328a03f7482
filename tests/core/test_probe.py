"""Tests for netkit.core.probe: the traffic probe payload."""

from __future__ import annotations

import struct

import pytest

from netkit.core.probe import HEADER_SIZE, MAGIC, Probe, make_probe, parse_probe


def test_header_layout() -> None:
    data = make_probe(seq=0x0102030405060708, sent_ns=0x1112131415161718, size=24)
    assert HEADER_SIZE == 24
    assert data == (
        b"NKP1"
        + b"\x00\x00\x00\x18"
        + b"\x01\x02\x03\x04\x05\x06\x07\x08"
        + b"\x11\x12\x13\x14\x15\x16\x17\x18"
    )


def test_filler_pattern_is_seq_plus_index() -> None:
    data = make_probe(seq=250, sent_ns=0, size=HEADER_SIZE + 10)
    assert data[HEADER_SIZE:] == bytes((250 + i) & 0xFF for i in range(10))


@pytest.mark.parametrize(
    "size", [HEADER_SIZE, HEADER_SIZE + 1, 100, 1472, 65536, 65536 + HEADER_SIZE, 70_000, 200_003]
)
@pytest.mark.parametrize("seq", [0, 1, 255, 256, 2**40 + 7])
def test_round_trip(size: int, seq: int) -> None:
    data = make_probe(seq, sent_ns=123_456_789, size=size)
    assert len(data) == size
    assert parse_probe(data) == Probe(seq=seq, sent_ns=123_456_789, size=size)
    assert parse_probe(bytearray(data)) == Probe(seq=seq, sent_ns=123_456_789, size=size)
    assert parse_probe(memoryview(data)) == Probe(seq=seq, sent_ns=123_456_789, size=size)


def test_large_filler_follows_the_pattern() -> None:
    size = 70_000
    data = make_probe(seq=3, sent_ns=0, size=size)
    assert data[HEADER_SIZE:] == bytes((3 + i) & 0xFF for i in range(size - HEADER_SIZE))


def test_size_below_header_is_raised_to_header() -> None:
    data = make_probe(seq=1, sent_ns=2, size=0)
    assert len(data) == HEADER_SIZE
    assert parse_probe(data) == Probe(seq=1, sent_ns=2, size=HEADER_SIZE)


def test_seq_wraps_to_64_bits() -> None:
    data = make_probe(seq=2**64 + 5, sent_ns=0, size=40)
    probe = parse_probe(data)
    assert probe is not None and probe.seq == 5


@pytest.mark.parametrize("offset", [HEADER_SIZE, HEADER_SIZE + 1, 99, 70_000 - 1])
def test_corrupted_filler_is_rejected(offset: int) -> None:
    data = bytearray(make_probe(seq=9, sent_ns=1, size=70_000 if offset > 99 else 100))
    data[offset] ^= 0x01
    assert parse_probe(data) is None


def test_truncated_and_padded_are_rejected() -> None:
    data = make_probe(seq=9, sent_ns=1, size=100)
    assert parse_probe(data[:-1]) is None
    assert parse_probe(data + b"\x00") is None
    assert parse_probe(data[:HEADER_SIZE]) is None
    assert parse_probe(data[: HEADER_SIZE - 1]) is None
    assert parse_probe(b"") is None


def test_wrong_magic_is_rejected() -> None:
    data = bytearray(make_probe(seq=9, sent_ns=1, size=64))
    assert bytes(data[:4]) == MAGIC
    data[:4] = b"NKP2"
    assert parse_probe(data) is None


def test_wrong_size_field_is_rejected() -> None:
    data = bytearray(make_probe(seq=9, sent_ns=1, size=64))
    struct.pack_into("!I", data, 4, 65)
    assert parse_probe(data) is None


def test_wrong_seq_makes_the_filler_mismatch() -> None:
    data = bytearray(make_probe(seq=9, sent_ns=1, size=64))
    struct.pack_into("!Q", data, 8, 10)
    assert parse_probe(data) is None

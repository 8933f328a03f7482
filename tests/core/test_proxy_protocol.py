"""PROXY protocol v1/v2: serialize and parse side by side, against literal bytes; the
receiving parser fed in pieces of every size."""

from __future__ import annotations

import struct

import pytest

from netkit.core.proxy_protocol import (
    V1_MAX,
    V2_SIGNATURE,
    Accept,
    HeaderParser,
    ProxyHeader,
    crc32c,
    decode,
    encode,
    encode_v1,
    encode_v2,
)
from netkit.errors import ConfigError, PeerProtocolError


def test_v1_tcp4_literal():
    assert encode_v1(("192.0.2.1", 56324), ("192.0.2.2", 443)) == (
        b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n"
    )


def test_v1_tcp6_and_unknown():
    assert encode_v1(("::1", 1), ("::1", 2)) == b"PROXY TCP6 ::1 ::1 1 2\r\n"
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"
    assert encode_v1(("127.0.0.1", 1), ("::1", 2)) == b"PROXY UNKNOWN\r\n"  # mixed families


def test_v2_tcp4_literal():
    header = encode_v2(("127.0.0.1", 1000), ("127.0.0.2", 80))
    assert header == (
        V2_SIGNATURE
        + b"\x21\x11\x00\x0c"
        + bytes([127, 0, 0, 1, 127, 0, 0, 2])
        + b"\x03\xe8\x00\x50"
    )


def test_v2_local_for_unix_peers():
    assert encode_v2(None, None) == V2_SIGNATURE + b"\x20\x00\x00\x00"


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    ("src", "dst"),
    [(("10.1.2.3", 4000), ("10.9.8.7", 443)), (("2001:db8::1", 1), ("2001:db8::2", 65535))],
)
def test_round_trip(version, src, dst):
    data = encode(version, src, dst) + b"payload"
    header, size = decode(data)  # type: ignore[misc]
    assert header == ProxyHeader(src, dst, version)
    assert data[size:] == b"payload"


@pytest.mark.parametrize("version", [1, 2])
def test_every_prefix_needs_more(version):
    data = encode(version, ("10.0.0.1", 1), ("10.0.0.2", 2))
    for cut in range(len(data)):
        assert decode(data[:cut]) is None, cut


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP9 a b c d\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 x y\r\n",
        b"PROXY " + b"x" * 120,
    ],
)
def test_garbage_is_a_peer_error(data):
    with pytest.raises(PeerProtocolError):
        decode(data)


# --- receiving: HeaderParser --------------------------------------------------------------

V2_TCP4 = (
    V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([10, 0, 0, 1, 10, 0, 0, 2]) + b"\x30\x39\x01\xbb"
)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(ver_cmd: int, fam: int, block: bytes) -> bytes:
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", len(block)) + block


def parse_in_pieces(data: bytes, cuts: list[int], accept: Accept = Accept.ANY):
    """Feed ``data`` cut at ``cuts``, each piece as a peek would show it (from the first byte
    not taken yet to the end of what arrived), and return the header and its size."""
    parser = HeaderParser(accept)
    taken = 0
    for end in [*cuts, len(data)]:
        while parser.header is None and taken < end:
            got = parser.feed(data[taken:end])
            assert got > 0 or parser.header is not None
            taken += got
    return parser.header, taken


CASES = [
    (
        encode_v1(("192.0.2.1", 56324), ("192.0.2.2", 443)),
        (("192.0.2.1", 56324), ("192.0.2.2", 443)),
    ),
    (encode_v1(("2001:db8::1", 1), ("::1", 65535)), (("2001:db8::1", 1), ("::1", 65535))),
    (b"PROXY UNKNOWN\r\n", (None, None)),
    (V2_TCP4, (("10.0.0.1", 12345), ("10.0.0.2", 443))),
    (
        encode_v2(("2001:db8::1", 80), ("2001:db8::2", 8080)),
        (("2001:db8::1", 80), ("2001:db8::2", 8080)),
    ),
    (encode_v2("/run/client.sock", "@server"), ("/run/client.sock", "@server")),
    (v2(0x21, 0x00, b""), (None, None)),  # PROXY, AF_UNSPEC: use the real endpoints
    (v2(0x20, 0x00, b""), (None, None)),  # LOCAL
]


@pytest.mark.parametrize(("data", "addresses"), CASES)
def test_every_split_of_every_header_parses_the_same(data, addresses):
    payload = b"\x00payload\r\n"
    wire = data + payload
    for cut in range(1, len(wire)):
        header, size = parse_in_pieces(wire, [cut])
        assert header is not None and (header.source, header.destination) == addresses, cut
        assert size == len(data), cut  # not one byte of the payload was taken
    # and one byte at a time
    header, size = parse_in_pieces(wire, list(range(1, len(wire))))
    assert size == len(data) and (header.source, header.destination) == addresses


def test_local_is_accepted_whatever_its_family_and_block_skipped():
    data = v2(0x20, 0x11, b"\xff" * 12)  # LOCAL with an address block: skipped, not used
    header, size = decode(data + b"rest")  # type: ignore[misc]
    assert header.local and header.source is None and size == len(data)


def test_tlvs_are_skipped_and_kept():
    block = bytes([127, 0, 0, 1, 127, 0, 0, 2]) + b"\x00\x01\x00\x02"
    tlvs = tlv(0x04, b"") + tlv(0x05, b"id-42") + tlv(0xE0, b"x" * 300)
    header, size = decode(v2(0x21, 0x11, block + tlvs) + b"GET")  # type: ignore[misc]
    assert header.source == ("127.0.0.1", 1) and size == 16 + len(block) + len(tlvs)
    assert header.tlvs == ((0x04, b""), (0x05, b"id-42"), (0xE0, b"x" * 300))


def test_a_crc32c_tlv_is_checked():
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4's check value
    block = bytes([127, 0, 0, 1, 127, 0, 0, 2]) + b"\x00\x01\x00\x02"
    blank = v2(0x21, 0x11, block + tlv(0x03, b"\0\0\0\0"))
    good = blank[:-4] + struct.pack("!I", crc32c(blank))
    assert decode(good)[0].source == ("127.0.0.1", 1)  # type: ignore[index]
    bad = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(PeerProtocolError, match="CRC32C"):
        decode(bad)


def test_dgram_over_this_stream_falls_back_to_the_real_endpoints():
    header, _ = decode(v2(0x21, 0x12, V2_TCP4[16:]))  # type: ignore[misc]
    assert header.source is None and header.version == 2


def test_v1_longest_line_is_accepted_and_one_more_byte_is_not():
    longest = b"PROXY UNKNOWN " + b"f" * (V1_MAX - 16) + b"\r\n"
    assert len(longest) == V1_MAX
    assert decode(longest)[1] == V1_MAX  # type: ignore[index]
    too_long = b"PROXY UNKNOWN " + b"f" * (V1_MAX - 15) + b"\r\n"
    with pytest.raises(PeerProtocolError, match="no CRLF"):
        decode(too_long)


def test_the_v1_line_is_taken_in_full_when_the_buffer_is_not():
    # The parser never asks for more than the longest line, and takes no byte past CRLF.
    parser = HeaderParser(Accept.V1)
    assert parser.wanted() == V1_MAX
    assert parser.feed(b"PROXY UNKNOWN\r\nHELLO") == 15 and parser.header is not None
    assert parser.wanted() == 0 and parser.feed(b"more") == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "no PROXY header"),
        (b"\x16\x03\x01\x02\x00", "no PROXY header"),  # a TLS ClientHello
        (b"PROXY TCP9 a b c d\r\n", "expected PROXY"),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "expected PROXY"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 x y\r\n", "not a port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "not a port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "not a port"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "not a TCP4 address"),
        (b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", "not a TCP4 address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not a TCP4 address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not a TCP6 address"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "not a TCP6 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "lone CR or LF"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "lone CR or LF"),
        (b"PROXY " + b"x" * 120, "no CRLF"),
        (b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", "signature mismatch"),
        (v2(0x11, 0x11, V2_TCP4[16:]), "version 1"),
        (v2(0x22, 0x11, V2_TCP4[16:]), "unassigned command"),
        (v2(0x21, 0x41, V2_TCP4[16:]), "family and protocol"),
        (v2(0x21, 0x13, V2_TCP4[16:]), "family and protocol"),
        (v2(0x21, 0x11, V2_TCP4[16:24]), "cannot hold the addresses"),
        (v2(0x21, 0x21, V2_TCP4[16:]), "cannot hold the addresses"),
        (v2(0x21, 0x11, V2_TCP4[16:] + b"\x04\x00"), "truncated TLV"),
        (v2(0x21, 0x11, V2_TCP4[16:] + b"\x04\x00\x09abc"), "runs past"),
        (v2(0x21, 0x11, V2_TCP4[16:] + tlv(0x03, b"abc")), "4 bytes"),
    ],
)
def test_garbage_is_rejected_with_its_reason(data, reason):
    with pytest.raises(PeerProtocolError, match=reason):
        decode(data)


def test_garbage_is_rejected_as_soon_as_it_cannot_be_a_header():
    # A client that sends one wrong byte and waits is turned away now, not at the timeout.
    for first in (b"G", b"\x16", b"\x00", b"PX", b"\r\n\r\n\x01"):
        with pytest.raises(PeerProtocolError):
            HeaderParser().feed(first)
    with pytest.raises(PeerProtocolError, match="version"):  # before its 12 bytes of block
        HeaderParser().feed(V2_SIGNATURE + b"\x31\x11\x00\x0c")


@pytest.mark.parametrize(
    ("accept", "data", "ok"),
    [
        (Accept.V1, b"PROXY UNKNOWN\r\n", True),
        (Accept.V1, V2_TCP4, False),
        (Accept.V2, V2_TCP4, True),
        (Accept.V2, b"PROXY UNKNOWN\r\n", False),
        (Accept.ANY, b"PROXY UNKNOWN\r\n", True),
        (Accept.ANY, V2_TCP4, True),
    ],
)
def test_only_the_accepted_versions_pass(accept, data, ok):
    if ok:
        assert decode(data, accept) is not None
    else:
        with pytest.raises(PeerProtocolError, match="no PROXY header"):
            decode(data, accept)


def test_a_huge_announced_length_allocates_only_what_arrives():
    parser = HeaderParser()
    assert parser.feed(V2_SIGNATURE + b"\x21\x11\xff\xff") == 16
    assert parser.wanted() == 0xFFFF  # what may still come, not what is held
    parser.feed(b"\0" * 100)
    assert parser.received == 116 and parser.header is None


def test_accept_parses_its_names():
    assert [Accept.parse(v) for v in ("v1", "v2", "any", 1, 2)] == [
        Accept.V1, Accept.V2, Accept.ANY, Accept.V1, Accept.V2
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="v1, v2 or any"):
        Accept.parse("v3")


def test_v2_unix_round_trip_literal():
    data = encode_v2("/a", "@b")
    assert data[:16] == V2_SIGNATURE + b"\x21\x31\x00\xd8"
    assert data[16:18] == b"/a" and data[16 + 108 : 16 + 110] == b"\0b"

"""PROXY protocol v1/v2: serialize and parse side by side, against literal bytes."""

from __future__ import annotations

import pytest

from netkit.core.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeader,
    decode,
    encode,
    encode_v1,
    encode_v2,
)
from netkit.errors import PeerProtocolError


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

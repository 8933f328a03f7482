"""HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): tell the upstream who the client is.

Serialize and parse side by side; see haproxy's doc/proxy-protocol.txt. Addresses are
``(host, port)`` pairs; anything else (Unix peers, unknown families) is sent as ``UNKNOWN`` (v1)
or ``LOCAL``/``AF_UNSPEC`` (v2), which tells the upstream to use the connection's own addresses.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from netkit.errors import PeerProtocolError

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included

Address = tuple[str, int]


@dataclass(frozen=True)
class ProxyHeader:
    """A decoded PROXY header: the original source and destination, or None for LOCAL/UNKNOWN."""

    source: Address | None
    destination: Address | None
    version: int


def _family(source: Address, destination: Address) -> int | None:
    try:
        a = ipaddress.ip_address(source[0].split("%", 1)[0])
        b = ipaddress.ip_address(destination[0].split("%", 1)[0])
    except ValueError:
        return None
    return a.version if a.version == b.version else None


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """``PROXY TCP4 src dst sport dport\\r\\n`` (or ``PROXY UNKNOWN\\r\\n``)."""
    family = _family(source, destination) if source and destination else None
    if family is None or source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if family == 4 else "TCP6"
    return f"PROXY {proto} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def encode_v2(source: Address | None, destination: Address | None) -> bytes:
    """The binary v2 header: signature, PROXY command, TCP over IPv4/IPv6 (or LOCAL)."""
    family = _family(source, destination) if source and destination else None
    if family is None or source is None or destination is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)  # LOCAL, AF_UNSPEC
    src = ipaddress.ip_address(source[0].split("%", 1)[0]).packed
    dst = ipaddress.ip_address(destination[0].split("%", 1)[0]).packed
    body = src + dst + struct.pack("!HH", source[1], destination[1])
    fam = 0x11 if family == 4 else 0x21  # AF_INET/AF_INET6 + STREAM
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def encode(version: int, source: Address | None, destination: Address | None) -> bytes:
    """Encode a header of ``version`` 1 or 2."""
    return encode_v1(source, destination) if version == 1 else encode_v2(source, destination)


def decode(data: bytes | bytearray | memoryview) -> tuple[ProxyHeader, int] | None:
    """Parse a header at the start of ``data``.

    Returns:
        The header and its length in bytes, or None when more bytes are needed.

    Raises:
        PeerProtocolError: not a valid PROXY header.
    """
    data = bytes(data[:232])
    if data.startswith(V2_SIGNATURE[: len(data)]) and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        ver_cmd, fam = data[12], data[13]
        (length,) = struct.unpack("!H", data[14:16])
        if ver_cmd >> 4 != 2:
            raise PeerProtocolError("PROXY v2: bad version", close_code=None)
        if len(data) < 16 + length:
            return None
        body = data[16 : 16 + length]
        if ver_cmd & 0x0F == 0 or fam >> 4 == 0:
            return ProxyHeader(None, None, 2), 16 + length
        size = 4 if fam >> 4 == 1 else 16
        if len(body) < 2 * size + 4:
            raise PeerProtocolError("PROXY v2: address block too short", close_code=None)
        src = str(ipaddress.ip_address(body[:size]))
        dst = str(ipaddress.ip_address(body[size : 2 * size]))
        sport, dport = struct.unpack("!HH", body[2 * size : 2 * size + 4])
        return ProxyHeader((src, sport), (dst, dport), 2), 16 + length
    if not data.startswith(b"PROXY "[: len(data)]):
        raise PeerProtocolError("not a PROXY protocol header", close_code=None)
    end = data.find(b"\r\n")
    if end < 0:
        if len(data) >= V1_MAX:
            raise PeerProtocolError("PROXY v1 line too long", close_code=None)
        return None
    parts = data[:end].decode("ascii", "replace").split(" ")
    if parts[1:2] == ["UNKNOWN"]:
        return ProxyHeader(None, None, 1), end + 2
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise PeerProtocolError("malformed PROXY v1 line", close_code=None)
    try:
        return (
            ProxyHeader((parts[2], int(parts[4])), (parts[3], int(parts[5])), 1),
            end + 2,
        )
    except ValueError:
        raise PeerProtocolError("malformed PROXY v1 ports", close_code=None) from None

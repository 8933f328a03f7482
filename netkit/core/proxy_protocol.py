"""HAProxy's PROXY protocol, versions 1 (text) and 2 (binary), both directions.

Serialize and parse side by side, as haproxy's doc/proxy-protocol.txt (2020/03/05) specifies
them; section numbers below are that document's.

* Sending (``proxy``/``lb --proxy-protocol``): :func:`encode` tells the upstream who the client
  is. Addresses are ``(host, port)`` pairs, or a Unix socket's path as a string (v2 only; an
  abstract name starts with ``@``); anything else is sent as ``UNKNOWN`` (v1) or
  ``LOCAL``/``AF_UNSPEC`` (v2), which tells the upstream to use the connection's own addresses.
* Receiving (``--accept-proxy-protocol``): :class:`HeaderParser` takes the bytes as they arrive,
  in pieces of any size, says how many of them belong to the header (so that none past it is
  ever taken from the socket) and raises :class:`~netkit.errors.PeerProtocolError` with the
  reason as soon as they cannot be a valid header. Its memory follows what arrived, never the
  length a v2 header announces.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from dataclasses import dataclass

from netkit.errors import ConfigError, PeerProtocolError, Setting

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (2.1)
V2_FIXED = 16  # signature, version and command, family and protocol, length (2.2)
V2_MAX = V2_FIXED + 0xFFFF  # the length field is 16 bits: no v2 header is longer
UNIX_PATH = 108  # each AF_UNIX address in a v2 header (2.2)

Address = tuple[str, int]
Peer = Address | str
"""``(host, port)`` for TCP, or a Unix socket's path (``@name`` for an abstract one)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A decoded PROXY header.

    Attributes:
        source: the original client, or None when the header says to use the connection's
            own addresses (v1 ``UNKNOWN``, v2 ``LOCAL``, an unspecified family or protocol).
        destination: the address the client connected to, or None likewise.
        version: 1 or 2.
        local: a v2 ``LOCAL`` command (the sender's own connection, e.g. a health check).
        tlvs: v2's type-length-value extensions, as ``(type, value)`` in the order sent.
    """

    source: Peer | None
    destination: Peer | None
    version: int
    local: bool = False
    tlvs: tuple[tuple[int, bytes], ...] = ()


class Accept(enum.Enum):
    """Which PROXY header versions a listener accepts (``--accept-proxy-protocol``)."""

    V1 = "v1"
    V2 = "v2"
    ANY = "any"

    @classmethod
    def parse(cls, value: Accept | str | int) -> Accept:
        """``"v1"``, ``"v2"``, ``"any"`` (or 1, 2) as a member.

        Raises:
            ConfigError: any other value.
        """
        if isinstance(value, Accept):
            return value
        text = f"v{value}" if isinstance(value, int) and not isinstance(value, bool) else value
        for member in cls:
            if member.value == text:
                return member
        raise ConfigError(
            (Setting("accept_proxy_protocol"), f" must be v1, v2 or any, not {value!r}")
        )

    def allows(self, version: int) -> bool:
        """True when a header of ``version`` is accepted."""
        return self is Accept.ANY or self.value == f"v{version}"


# --- sending --------------------------------------------------------------------------------


def _family(source: Peer | None, destination: Peer | None) -> int | None:
    # 4 or 6 when both are IP addresses of one family; 1 (Unix) when both are paths.
    if isinstance(source, str) and isinstance(destination, str):
        return 1
    if not isinstance(source, tuple) or not isinstance(destination, tuple):
        return None
    try:
        a = ipaddress.ip_address(source[0].split("%", 1)[0])
        b = ipaddress.ip_address(destination[0].split("%", 1)[0])
    except ValueError:
        return None
    return a.version if a.version == b.version else None


def encode_v1(source: Peer | None, destination: Peer | None) -> bytes:
    """``PROXY TCP4 src dst sport dport\\r\\n`` (or ``PROXY UNKNOWN\\r\\n``: v1 has no Unix)."""
    family = _family(source, destination)
    if family not in (4, 6) or not isinstance(source, tuple) or not isinstance(destination, tuple):
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if family == 4 else "TCP6"
    src, dst = source[0].split("%", 1)[0], destination[0].split("%", 1)[0]
    return f"PROXY {proto} {src} {dst} {source[1]} {destination[1]}\r\n".encode()


def _unix_bytes(path: str) -> bytes:
    raw = b"\0" + path[1:].encode() if path.startswith("@") else path.encode()
    return raw[:UNIX_PATH].ljust(UNIX_PATH, b"\0")


def encode_v2(source: Peer | None, destination: Peer | None) -> bytes:
    """The binary v2 header: signature, PROXY command, TCP over IPv4/IPv6, a Unix stream
    (or LOCAL, AF_UNSPEC when the addresses are neither)."""
    family = _family(source, destination)
    if isinstance(source, str) and isinstance(destination, str):
        body = _unix_bytes(source) + _unix_bytes(destination)
        return V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", len(body)) + body
    if family is None or not isinstance(source, tuple) or not isinstance(destination, tuple):
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)  # LOCAL, AF_UNSPEC
    src = ipaddress.ip_address(source[0].split("%", 1)[0]).packed
    dst = ipaddress.ip_address(destination[0].split("%", 1)[0]).packed
    body = src + dst + struct.pack("!HH", source[1], destination[1])
    fam = 0x11 if family == 4 else 0x21  # AF_INET/AF_INET6 + STREAM
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def encode(version: int, source: Peer | None, destination: Peer | None) -> bytes:
    """Encode a header of ``version`` 1 or 2."""
    return encode_v1(source, destination) if version == 1 else encode_v2(source, destination)


# --- receiving ------------------------------------------------------------------------------


def _reject(reason: str) -> PeerProtocolError:
    return PeerProtocolError(reason, close_code=None)


class HeaderParser:
    """Receives one PROXY header, fed in pieces of any size.

    ``feed(data)`` returns how many bytes at the start of ``data`` belong to the header; once
    :attr:`header` is set, the rest of ``data`` (and everything after it) is the connection's
    payload. A caller that reads with ``MSG_PEEK`` and then consumes only that many bytes
    leaves the payload in the socket, untouched.

    Args:
        accept: the versions accepted; anything else is rejected (the receiver must never
            guess whether a header is there, section 2: a missing header is an error).
    """

    def __init__(self, accept: Accept = Accept.ANY) -> None:
        self.accept = accept
        self.header: ProxyHeader | None = None
        self._buf = bytearray()
        self._size: int | None = None  # the header's whole length, once known

    @property
    def received(self) -> int:
        """Header bytes taken so far."""
        return len(self._buf)

    def wanted(self) -> int:
        """The most bytes the next read may bring without reading past the header's end
        when the sender stops there (a v1 line's end is found only by reading it)."""
        if self.header is not None:
            return 0
        if self._size is not None:
            return self._size - len(self._buf)
        if self._buf[:1] == b"P" or self.accept is Accept.V1:
            return V1_MAX - len(self._buf)
        return V2_FIXED - len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Take the header's bytes from the start of ``data``.

        Returns:
            How many bytes of ``data`` were the header's (all of them while it is incomplete).

        Raises:
            PeerProtocolError: these bytes cannot start a valid header; the reason says why.
        """
        if self.header is not None:
            return 0
        taken = min(len(data), self.wanted())
        start = len(self._buf)
        self._buf += data[:taken]
        if self._buf[:1] == b"\r" or (self._buf[:1] == b"" and self.accept is Accept.V2):
            return self._feed_v2(taken)
        return self._feed_v1(start, taken)

    # 2.1 Human-readable header format (version 1)

    def _feed_v1(self, start: int, taken: int) -> int:
        buf = self._buf
        if not buf.startswith(V1_PREFIX[: len(buf)]) or not self.accept.allows(1):
            raise _reject(self._not_a_header())
        end = buf.find(b"\r\n", max(0, start - 1))
        if end < 0:
            # Only CRLF ends the line: a lone LF, or a CR followed by anything else, is wrong now.
            cr = buf.find(b"\r", max(0, start - 1))
            if b"\n" in buf[start:] or 0 <= cr < len(buf) - 1:
                raise _reject("PROXY v1: a lone CR or LF in the line")
            if len(buf) >= V1_MAX:
                raise _reject(f"PROXY v1: no CRLF in the first {V1_MAX} bytes")
            return taken
        size = end + 2
        self.header = parse_v1(bytes(buf[:end]))
        del buf[size:]
        return size - start

    # 2.2 Binary header format (version 2)

    def _feed_v2(self, taken: int) -> int:
        buf = self._buf
        n = min(len(buf), len(V2_SIGNATURE))
        if buf[:n] != V2_SIGNATURE[:n]:
            raise _reject(
                "PROXY v2 signature mismatch" if buf[:1] == b"\r" else self._not_a_header()
            )
        if not self.accept.allows(2):
            raise _reject(self._not_a_header())
        if len(buf) < V2_FIXED:
            return taken
        if self._size is None:
            self._size = V2_FIXED + _check_fixed(bytes(buf[:V2_FIXED]))
            if len(buf) < self._size:
                return taken
        if len(buf) >= self._size:
            self.header = parse_v2(bytes(buf))
        return taken

    def _not_a_header(self) -> str:
        shown = bytes(self._buf[:16])
        return f"no PROXY header ({self.accept.value} expected), got {shown!r}"


_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


def _v1_address(text: str, family: str) -> str:
    # Canonical form only: IPv4 as four decimal numbers without leading zeroes, IPv6 as
    # hexadecimal groups (no zone): the advertised family dictates the format.
    pattern = _IPV4 if family == "TCP4" else _IPV6
    if pattern.fullmatch(text) is None:
        raise _reject(f"PROXY v1: {text!r} is not a {family} address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise _reject(f"PROXY v1: {text!r} is not a {family} address") from None
    if address.version != (4 if family == "TCP4" else 6):
        raise _reject(f"PROXY v1: {text!r} is not a {family} address")
    return text


def _v1_port(text: str) -> int:
    if _PORT.fullmatch(text) is None or int(text) > 0xFFFF:
        raise _reject(f"PROXY v1: {text!r} is not a port (0-65535, no leading zeroes)")
    return int(text)


def parse_v1(line: bytes) -> ProxyHeader:
    """A complete v1 line, without its CRLF.

    Raises:
        PeerProtocolError: it does not match the format exactly.
    """
    if b"\r" in line or b"\n" in line:
        raise _reject("PROXY v1: a lone CR or LF in the line")  # only CRLF ends it
    parts = line.decode("ascii", "replace").split(" ")
    if parts[1:2] == ["UNKNOWN"]:
        # "the receiver must ignore anything presented before the CRLF"
        return ProxyHeader(None, None, 1)
    if len(parts) != 6 or parts[0] != "PROXY" or parts[1] not in ("TCP4", "TCP6"):
        raise _reject("PROXY v1: expected PROXY TCP4|TCP6|UNKNOWN SRC DST SPORT DPORT")
    family = parts[1]
    src, dst = _v1_address(parts[2], family), _v1_address(parts[3], family)
    return ProxyHeader((src, _v1_port(parts[4])), (dst, _v1_port(parts[5])), 1)


_COMMANDS = {0x0: "LOCAL", 0x1: "PROXY"}
_ADDRESS_SIZES = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 2 * UNIX_PATH}  # by family (high nibble)


def _check_fixed(fixed: bytes) -> int:
    # The 16 fixed bytes (signature already checked); returns the announced length.
    ver_cmd, fam, length = fixed[12], fixed[13], struct.unpack("!H", fixed[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise _reject(f"PROXY v2: version {ver_cmd >> 4} (only 2 exists)")
    if ver_cmd & 0x0F not in _COMMANDS:
        raise _reject(f"PROXY v2: unassigned command {ver_cmd & 0x0F}")
    if ver_cmd & 0x0F == 0x0:
        return int(length)  # LOCAL: the family is ignored, the block skipped
    if fam >> 4 not in _ADDRESS_SIZES or fam & 0x0F > 0x2:
        raise _reject(f"PROXY v2: unknown family and protocol byte 0x{fam:02x}")
    if length < _ADDRESS_SIZES[fam >> 4]:
        raise _reject(f"PROXY v2: {length} bytes cannot hold the addresses of family 0x{fam:02x}")
    return int(length)


def _tlvs(block: bytes) -> tuple[tuple[int, bytes], ...]:
    # 2.2: type (1 byte), length (2 bytes), value; they fill the rest of the header exactly.
    found: list[tuple[int, bytes]] = []
    at = 0
    while at < len(block):
        if len(block) - at < 3:
            raise _reject("PROXY v2: a truncated TLV")
        kind, length = block[at], struct.unpack("!H", block[at + 1 : at + 3])[0]
        if at + 3 + length > len(block):
            raise _reject(f"PROXY v2: TLV 0x{kind:02x} runs past the header")
        found.append((kind, block[at + 3 : at + 3 + length]))
        at += 3 + length
    return tuple(found)


PP2_TYPE_CRC32C = 0x03


def _check_crc(header: bytes, tlvs: tuple[tuple[int, bytes], ...], tlv_start: int) -> None:
    # 2.2.3: the CRC32c of the whole header with the checksum field zeroed.
    at = tlv_start
    for kind, value in tlvs:
        if kind == PP2_TYPE_CRC32C:
            if len(value) != 4:
                raise _reject("PROXY v2: a CRC32C TLV must hold 4 bytes")
            zeroed = header[: at + 3] + b"\0\0\0\0" + header[at + 7 :]
            if crc32c(zeroed) != struct.unpack("!I", value)[0]:
                raise _reject("PROXY v2: CRC32C checksum mismatch")
        at += 3 + len(value)


def _unix_path(raw: bytes) -> str:
    if raw[:1] == b"\0":  # abstract: the name is everything after the NUL, padding removed
        return "@" + raw[1:].rstrip(b"\0").decode(errors="replace")
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def parse_v2(header: bytes) -> ProxyHeader:
    """A complete v2 header (its 16 fixed bytes and the block they announce).

    Raises:
        PeerProtocolError: it breaks the format.
    """
    length = _check_fixed(header[:V2_FIXED])
    block = header[V2_FIXED : V2_FIXED + length]
    if header[12] & 0x0F == 0x0:
        # LOCAL: "use the real connection endpoints and discard the protocol block".
        return ProxyHeader(None, None, 2, local=True)
    family, protocol = header[13] >> 4, header[13] & 0x0F
    size = _ADDRESS_SIZES[family]
    if family == 0:
        return ProxyHeader(None, None, 2)  # AF_UNSPEC: ignore the address block
    tlvs = _tlvs(block[size:])
    _check_crc(header, tlvs, V2_FIXED + size)
    if protocol != 0x1:
        # UNSPEC or DGRAM over this stream connection: not supported, so fall back to the
        # UNSPEC mode (use the real endpoints), as the spec asks.
        return ProxyHeader(None, None, 2, tlvs=tlvs)
    source: Peer
    destination: Peer
    if family == 0x3:
        source, destination = _unix_path(block[:UNIX_PATH]), _unix_path(block[UNIX_PATH:size])
    else:
        half = (size - 4) // 2
        sport, dport = struct.unpack("!HH", block[2 * half : size])
        source = (str(ipaddress.ip_address(block[:half])), sport)
        destination = (str(ipaddress.ip_address(block[half : 2 * half])), dport)
    return ProxyHeader(source, destination, 2, tlvs=tlvs)


def decode(
    data: bytes | bytearray | memoryview, accept: Accept = Accept.ANY
) -> tuple[ProxyHeader, int] | None:
    """Parse a header at the start of ``data``.

    Returns:
        The header and its length in bytes, or None when more bytes are needed.

    Raises:
        PeerProtocolError: not a valid PROXY header.
    """
    parser = HeaderParser(accept)
    size = 0
    while parser.header is None and size < len(data):
        size += parser.feed(data[size:])
    return None if parser.header is None else (parser.header, size)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B), as PP2_TYPE_CRC32C carries it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF

"""permessage-deflate (RFC 7692): negotiation, and per-message compression with zlib.

Negotiation works on extension offers already split by the handshake parser into
``(name, [(param, value-or-None), ...])``. The client sends :meth:`DeflateParams.offer`; the
server answers with :func:`accept_offer`; the client checks the answer with
:func:`accept_response`. Both ends then build a :class:`PerMessageDeflate` from the agreed
:class:`DeflateParams` and their side.

Compression (7.2.1): deflate the message, flush with ``Z_SYNC_FLUSH``, drop the trailing
``00 00 ff ff``; the first frame of the message carries RSV1. Decompression (7.2.2): append
``00 00 ff ff`` and inflate, never more than the message's remaining ``max_size`` (1009).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from netkit.core.ws.frames import Side
from netkit.core.ws.mask import Buffer
from netkit.errors import LocalProtocolError, PeerProtocolError

EXTENSION_NAME: Final = "permessage-deflate"
_TAIL: Final = b"\x00\x00\xff\xff"
_MIN_BITS: Final = 8
_MAX_BITS: Final = 15

ExtensionParams = Sequence[tuple[str, str | None]]


class InvalidExtension(PeerProtocolError):
    """The peer's permessage-deflate parameters are malformed or break the negotiation rules."""

    def __init__(self, message: str) -> None:
        super().__init__(message, close_code=None)


@dataclass(frozen=True)
class DeflateParams:
    """permessage-deflate parameters (RFC 7692 section 7.1): an offer, a preference, or an agreement.

    Attributes:
        server_no_context_takeover: the server resets its compressor after each message.
        client_no_context_takeover: the client resets its compressor after each message.
        server_max_window_bits: the server compresses with at most this LZ77 window (8..15);
            None means 15.
        client_max_window_bits: the client compresses with at most this window (8..15); None
            means 15. In a client's offer, None sends the bare ``client_max_window_bits``
            ("I can honour a limit, choose one").
        compress_level: zlib level for our own compressor (not negotiated).
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    compress_level: int = 6

    def __post_init__(self) -> None:
        for bits in (self.server_max_window_bits, self.client_max_window_bits):
            if bits is not None and not _MIN_BITS <= bits <= _MAX_BITS:
                raise LocalProtocolError(f"max_window_bits {bits} outside 8..15")

    def offer(self) -> str:
        """Serialize these parameters as a client's ``Sec-WebSocket-Extensions`` offer."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        # 7.1.2.2: the bare parameter tells the server it may limit our window.
        if self.client_max_window_bits is None:
            parts.append("client_max_window_bits")
        else:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)

    def response(self) -> str:
        """Serialize these agreed parameters as a server's response value."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


@dataclass(frozen=True)
class _Parsed:
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int | None
    client_max_window_bits: int | None
    client_max_window_bits_bare: bool


def _window_bits(name: str, value: str | None) -> int:
    # 7.1.2: the value is a decimal integer 8..15, no leading zeros (quoted or not).
    if value is None or not value.isdigit() or value[0] == "0" or len(value) > 2:
        raise InvalidExtension(f"invalid {name} value {value!r}")
    bits = int(value)
    if not _MIN_BITS <= bits <= _MAX_BITS:
        raise InvalidExtension(f"{name}={bits} outside 8..15")
    return bits


def _parse_params(params: ExtensionParams, *, in_offer: bool) -> _Parsed:
    # 7: unknown parameters, duplicates or invalid values make the offer/response invalid.
    seen: set[str] = set()
    values: dict[str, int | None] = {}
    flags = {"server_no_context_takeover": False, "client_no_context_takeover": False}
    bare = False
    for name, value in params:
        name = name.lower()
        if name in seen:
            raise InvalidExtension(f"duplicate parameter {name}")
        seen.add(name)
        if name in flags:
            if value is not None:
                raise InvalidExtension(f"{name} takes no value")
            flags[name] = True
        elif name == "server_max_window_bits":
            values[name] = _window_bits(name, value)
        elif name == "client_max_window_bits":
            if value is None and in_offer:
                bare = True  # 7.1.2.2: a client may send it without a value.
            else:
                values[name] = _window_bits(name, value)
        else:
            raise InvalidExtension(f"unknown parameter {name}")
    return _Parsed(
        flags["server_no_context_takeover"],
        flags["client_no_context_takeover"],
        values.get("server_max_window_bits"),
        values.get("client_max_window_bits"),
        bare,
    )


def _accept_one(params: ExtensionParams, config: DeflateParams) -> DeflateParams | None:
    offer = _parse_params(params, in_offer=True)
    # 7.1.2.1: answer with at most what the client allows for the server's window; a server
    # may also limit its own window unasked.
    server_bits = config.server_max_window_bits
    if offer.server_max_window_bits is not None:
        server_bits = min(server_bits or _MAX_BITS, offer.server_max_window_bits)
    # 7.1.2.2: the server may limit the client's window only if the client said it could.
    client_bits = config.client_max_window_bits
    client_supports = offer.client_max_window_bits_bare or offer.client_max_window_bits is not None
    if client_bits is not None and not client_supports:
        return None  # the configuration we want is not on offer: decline (7).
    if offer.client_max_window_bits is not None:
        client_bits = min(client_bits or _MAX_BITS, offer.client_max_window_bits)
    return DeflateParams(
        # 7.1.1.1: a requested server_no_context_takeover must be accepted as is.
        server_no_context_takeover=offer.server_no_context_takeover
        or config.server_no_context_takeover,
        # 7.1.1.2: the server may add client_no_context_takeover whether offered or not.
        client_no_context_takeover=offer.client_no_context_takeover
        or config.client_no_context_takeover,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        compress_level=config.compress_level,
    )


def accept_offer(
    offers: Sequence[tuple[str, ExtensionParams]], config: DeflateParams | None = None
) -> DeflateParams | None:
    """Server side: pick the first acceptable permessage-deflate offer (RFC 7692 section 5).

    Invalid offers are declined, not fatal: the client may have sent a fallback after them.

    Args:
        offers: the client's extension offers, in its order of preference.
        config: what the server wants (its window limits and context takeover); the default
            accepts whatever the client asks.

    Returns:
        The agreed parameters (serialize them with :meth:`DeflateParams.response`), or None to
        go without compression.
    """
    config = config or DeflateParams()
    for name, params in offers:
        if name.lower() != EXTENSION_NAME:
            continue
        try:
            agreed = _accept_one(params, config)
        except InvalidExtension:
            continue
        if agreed is not None:
            return agreed
    return None


def accept_response(
    params: ExtensionParams, offer: DeflateParams, *, compress_level: int | None = None
) -> DeflateParams:
    """Client side: check the server's permessage-deflate response against our offer (7.1).

    Args:
        params: the parameters of the server's ``permessage-deflate`` response.
        offer: what we offered.
        compress_level: zlib level for our compressor (default: the offer's).

    Returns:
        The agreed parameters.

    Raises:
        InvalidExtension: the response is malformed or grants something we did not offer.
    """
    resp = _parse_params(params, in_offer=False)
    # 7.1.1.1: if we asked the server not to take over context, it must agree.
    if offer.server_no_context_takeover and not resp.server_no_context_takeover:
        raise InvalidExtension("server ignored server_no_context_takeover")
    # 7.1.2.1: the server's window may only shrink below what we allowed.
    if (
        offer.server_max_window_bits is not None
        and resp.server_max_window_bits is not None
        and resp.server_max_window_bits > offer.server_max_window_bits
    ):
        raise InvalidExtension("server_max_window_bits larger than offered")
    if offer.server_max_window_bits is not None and resp.server_max_window_bits is None:
        raise InvalidExtension("server_max_window_bits missing from the response")
    # 7.1.2.2: client_max_window_bits only if offered, and not above the offered value.
    if (
        resp.client_max_window_bits is not None
        and offer.client_max_window_bits is not None
        and resp.client_max_window_bits > offer.client_max_window_bits
    ):
        raise InvalidExtension("client_max_window_bits larger than offered")
    client_bits = resp.client_max_window_bits
    if client_bits is None:
        client_bits = offer.client_max_window_bits
    return DeflateParams(
        server_no_context_takeover=resp.server_no_context_takeover,
        client_no_context_takeover=resp.client_no_context_takeover
        or offer.client_no_context_takeover,
        server_max_window_bits=resp.server_max_window_bits,
        client_max_window_bits=client_bits,
        compress_level=offer.compress_level if compress_level is None else compress_level,
    )


class PerMessageDeflate:
    """Compresses outgoing and decompresses incoming messages for one side of a connection.

    Args:
        params: the agreed parameters.
        side: our side: the ``client_*`` parameters govern the client's compressor and the
            server's decompressor, and the other way round.
    """

    def __init__(self, params: DeflateParams, side: Side) -> None:
        self.params = params
        self.side = side
        if side is Side.CLIENT:
            self._local_no_takeover = params.client_no_context_takeover
            self._remote_no_takeover = params.server_no_context_takeover
            local_bits = params.client_max_window_bits or _MAX_BITS
            remote_bits = params.server_max_window_bits or _MAX_BITS
        else:
            self._local_no_takeover = params.server_no_context_takeover
            self._remote_no_takeover = params.client_no_context_takeover
            local_bits = params.server_max_window_bits or _MAX_BITS
            remote_bits = params.client_max_window_bits or _MAX_BITS
        self._local_bits = local_bits
        # zlib's raw inflate accepts 8..15; a larger window than the peer's is always safe.
        self._remote_bits = remote_bits
        self._compressor = self._new_compressor()
        self._decompressor = zlib.decompressobj(wbits=-self._remote_bits)

    def _new_compressor(self) -> zlib._Compress:
        if self._local_bits == _MIN_BITS:
            # zlib refuses an 8-bit raw deflate window. Level 0 (stored blocks) has no
            # back-references at all, so it honours any window limit.
            return zlib.compressobj(0, zlib.DEFLATED, -9)
        return zlib.compressobj(self.params.compress_level, zlib.DEFLATED, -self._local_bits)

    def compress(self, data: Buffer) -> bytes:
        """Compress a whole message (7.2.1); send it with RSV1 on its first frame.

        Returns:
            The compressed payload, without the trailing ``00 00 ff ff``.
        """
        out = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if out.endswith(_TAIL):
            out = out[:-4]
        if self._local_no_takeover:
            # 7.1.1: a fresh LZ77 window for every message.
            self._compressor = self._new_compressor()
        return out

    def decompress(self, data: Buffer, *, fin: bool, max_size: int | None) -> bytes:
        """Decompress one frame's payload of a compressed message (7.2.2).

        Args:
            data: the frame's payload.
            fin: this is the message's last frame (the stripped tail is appended then).
            max_size: how many decompressed bytes this frame may still produce, or None.

        Returns:
            The decompressed bytes.

        Raises:
            PeerProtocolError: the data does not inflate (1007) or exceeds ``max_size`` (1009).
        """
        d = self._decompressor
        # +1 so that "exactly max_size" and "more than max_size" can be told apart.
        limit = 0 if max_size is None else max_size + 1
        try:
            out = d.decompress(data, limit)
            if fin and not ((max_size is not None and len(out) > max_size) or d.unconsumed_tail):
                out += d.decompress(_TAIL, 0 if max_size is None else limit - len(out))
        except zlib.error as exc:
            raise PeerProtocolError(f"invalid compressed data: {exc}", close_code=1007) from exc
        if max_size is not None and (len(out) > max_size or d.unconsumed_tail):
            raise PeerProtocolError(
                f"decompressed message exceeds the {max_size}-byte limit", close_code=1009
            )
        if fin:
            self._end_message()
        return out

    def _end_message(self) -> None:
        if self._remote_no_takeover or self._decompressor.eof:
            # 7.1.1: the peer starts each message with an empty window; a final (BFINAL) block
            # also ends the stream, so the next message needs a new decompressor.
            self._decompressor = zlib.decompressobj(wbits=-self._remote_bits)

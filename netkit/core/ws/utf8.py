"""UTF-8 checks of text messages (RFC 6455 8.1), as their bytes arrive.

8.1: a text message whose bytes cannot be UTF-8 fails the connection with 1007 as soon as
that is known, not when the message is complete: :class:`TextCheck` feeds the bytes to an
incremental decoder and also checks the incomplete sequence it holds back.
"""

from __future__ import annotations

import codecs
from typing import Final

from netkit.core.ws.mask import Buffer
from netkit.errors import PeerProtocolError

__all__ = ["TextCheck", "invalid_utf8"]

# Allowed range of the second byte of a UTF-8 sequence, by lead byte (RFC 3629 section 4);
# every other continuation byte is 80..BF.
_UTF8_SECOND: Final = {
    **{lead: (0x80, 0xBF) for lead in range(0xC2, 0xE0)},
    0xE0: (0xA0, 0xBF),
    **{lead: (0x80, 0xBF) for lead in (*range(0xE1, 0xED), 0xEE, 0xEF)},
    0xED: (0x80, 0x9F),
    0xF0: (0x90, 0xBF),
    **{lead: (0x80, 0xBF) for lead in range(0xF1, 0xF4)},
    0xF4: (0x80, 0x8F),
}


def invalid_utf8() -> PeerProtocolError:
    """The error that fails a connection over a text message that is not UTF-8 (1007)."""
    return PeerProtocolError("invalid UTF-8 in a text message", close_code=1007)


def _prefix_ok(pending: bytes) -> bool:
    # Python's incremental decoder holds back an incomplete sequence without checking it
    # (b"\xed\xa0" passes until its third byte arrives); check it so as to fail fast.
    bounds = _UTF8_SECOND.get(pending[0])
    if bounds is None:
        return False
    if len(pending) > 1 and not bounds[0] <= pending[1] <= bounds[1]:
        return False
    return all(0x80 <= b <= 0xBF for b in pending[2:])


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class TextCheck:
    """The UTF-8 check of one text message at a time, fed its bytes in pieces.

    The decoder is made on the first bytes fed: a text message in one whole frame is checked
    without it, so most connections never need one (it is an object with a ``__dict__``,
    about 150 bytes of every idle connection otherwise).
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder: codecs.IncrementalDecoder | None = None

    def reset(self) -> None:
        """A new message starts."""
        if self._decoder is not None:
            self._decoder.reset()

    def feed(self, data: Buffer, final: bool) -> None:
        """Check the next bytes of the message; ``final`` for its last ones.

        Raises:
            PeerProtocolError: the bytes cannot be UTF-8 (close code 1007).
        """
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = _Utf8Decoder()
        try:
            # A code point split across frames (or reads) waits in the decoder.
            decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise invalid_utf8() from exc
        pending = decoder.getstate()[0]
        if pending and not _prefix_ok(pending):
            raise invalid_utf8()

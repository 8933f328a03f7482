"""Binary messages as lines of text: ws-client's ``--hex`` and ``--base64``.

A :class:`BinaryEncoding` turns bytes into one line of text and back (and says exactly what is
wrong with a line that does not decode). A :class:`LineSyntax` is the whole convention for a
run: each input line (a MESSAGE argument, a stdin line, a file) becomes a message, binary
(decoded) or text; each received message becomes one line of output.

Text and binary in one run are told apart by prefixes, as websocat's ``--text-prefix`` and
``--binary-prefix`` do (``T hello``, ``B 00ff``): with only an encoding every line is binary;
with a text prefix, the lines that start with it are text; with a binary prefix, only the lines
that start with it are binary (the rest text); with both, every line must start with one of
them. The prefix is removed before sending and added to what is printed, so the output of one
run is valid input to another.
"""

from __future__ import annotations

import base64
import binascii
import enum
import string
from dataclasses import dataclass

from netkit.errors import ConfigError, Setting

_HEX_DIGITS = frozenset(string.hexdigits.encode())
_WHITESPACE = frozenset(string.whitespace.encode())


class BinaryEncoding(enum.Enum):
    """How a binary message is written as text."""

    HEX = "hex"  # two lowercase digits a byte, no separator (input: any case, spaces allowed)
    BASE64 = "base64"  # RFC 4648 section 4, the standard alphabet, padded

    def encode(self, data: bytes) -> bytes:
        """``data`` as one line (no line ending)."""
        if self is BinaryEncoding.HEX:
            return data.hex().encode("ascii")
        return base64.b64encode(data)

    def decode(self, line: bytes) -> bytes:
        """The bytes ``line`` encodes.

        Raises:
            ValueError: ``line`` is not in this encoding; the message says where and why.
        """
        if self is BinaryEncoding.HEX:
            return _decode_hex(line)
        try:
            return base64.b64decode(line, validate=True)
        except binascii.Error as exc:
            where = _first_outside(line, b"+/=")
            if where is not None:
                raise ValueError(f"{_describe(line, where)} is not a base64 character") from None
            raise ValueError(str(exc).rstrip(".").lower()) from None


def _first_outside(line: bytes, extra: bytes) -> int | None:
    """Where the first byte that is neither alphanumeric ASCII nor in ``extra`` is."""
    for index, byte in enumerate(line):
        if not (byte < 128 and (chr(byte).isalnum() or byte in extra)):
            return index
    return None


def _describe(line: bytes, index: int) -> str:
    byte = line[index : index + 1]
    shown = repr(byte.decode("latin-1")) if 32 <= byte[0] < 127 else f"byte 0x{byte[0]:02x}"
    return f"{shown} at column {index + 1}"


def _decode_hex(line: bytes) -> bytes:
    digits = 0
    for index, byte in enumerate(line):
        if byte in _HEX_DIGITS:
            digits += 1
        elif byte not in _WHITESPACE:
            raise ValueError(f"{_describe(line, index)} is not a hex digit")
    if digits % 2:
        raise ValueError(f"{digits} hex digits: a byte takes two")
    try:
        return bytes.fromhex(line.decode("ascii"))
    except ValueError:  # whitespace inside a byte ("0 f")
        raise ValueError("a space splits the two digits of a byte") from None


class MessageKind(enum.Enum):
    """Which kind of message an input line is when it carries no prefix."""

    BINARY = "binary"
    TEXT = "text"
    EITHER_PREFIX = "a prefix"  # both prefixes set: an unprefixed line is a mistake


@dataclass(frozen=True)
class LineSyntax:
    """One run's convention for messages as lines (see the module docstring).

    Attributes:
        encoding: how binary messages are written.
        text_prefix: marks text lines (in and out), if set.
        binary_prefix: marks binary lines (in and out), if set.
    """

    encoding: BinaryEncoding
    text_prefix: bytes = b""
    binary_prefix: bytes = b""

    def __post_init__(self) -> None:
        text, binary = self.text_prefix, self.binary_prefix
        if text and binary and (text.startswith(binary) or binary.startswith(text)):
            raise ConfigError(
                ("the prefixes ", Setting("text_prefix"), " and ", Setting("binary_prefix"),
                 " must not start with one another")
            )  # fmt: skip

    @property
    def unprefixed(self) -> MessageKind:
        """What a line with no prefix is."""
        if self.text_prefix and self.binary_prefix:
            return MessageKind.EITHER_PREFIX
        return MessageKind.TEXT if self.binary_prefix else MessageKind.BINARY

    def parse(self, line: bytes, what: str) -> tuple[bytes, bool]:
        """The message one input line stands for: ``(data, is_text)``.

        Args:
            line: the line, without its line ending.
            what: names the line in an error (``line 3 of standard input``).

        Raises:
            ConfigError: the line is not valid: bad hex or base64 (where and why), not UTF-8
                for a text message, or without a prefix when both prefixes are set.
        """
        if self.text_prefix and line.startswith(self.text_prefix):
            return _text(line, len(self.text_prefix), what), True
        kind = self.unprefixed
        if self.binary_prefix and line.startswith(self.binary_prefix):
            line, kind = line[len(self.binary_prefix) :], MessageKind.BINARY
        if kind is MessageKind.TEXT:
            return _text(line, 0, what), True
        if kind is MessageKind.EITHER_PREFIX:
            raise ConfigError(
                (f"{what} starts with neither ", Setting("text_prefix"), " nor ",
                 Setting("binary_prefix"))
            )  # fmt: skip
        try:
            return self.encoding.decode(line), False
        except ValueError as exc:
            raise ConfigError(f"{what} is not {self.encoding.value}: {exc}") from None

    def render(self, is_text: bool, data: bytes) -> bytes:
        """A received message as one line of output (without the line ending)."""
        if is_text:
            return self.text_prefix + data
        return self.binary_prefix + self.encoding.encode(data)


def _text(line: bytes, start: int, what: str) -> bytes:
    """``line`` from ``start`` on, checked to be UTF-8 (an error counts bytes from the line's
    start, prefix included)."""
    data = line[start:]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = start + exc.start + 1
        raise ConfigError(f"{what} is a text message but not UTF-8 (byte {column})") from None
    return data


def line_syntax(
    *, hex: bool, base64: bool, text_prefix: str | None, binary_prefix: str | None
) -> LineSyntax | None:
    """The syntax the settings ask for; None when binary messages are not written as text.

    Raises:
        ConfigError: both encodings, a prefix without an encoding, an empty prefix, or
            prefixes that start with one another.
    """
    if hex and base64:
        raise ConfigError(("choose one of ", Setting("hex"), " and ", Setting("base64")))
    for name, prefix in (("text_prefix", text_prefix), ("binary_prefix", binary_prefix)):
        if prefix is None:
            continue
        if not (hex or base64):
            raise ConfigError((Setting(name), " needs ", Setting("hex"), " or ", Setting("base64")))
        if not prefix:
            raise ConfigError((Setting(name), " must not be empty"))
    if not (hex or base64):
        return None
    encoding = BinaryEncoding.HEX if hex else BinaryEncoding.BASE64
    return LineSyntax(encoding, (text_prefix or "").encode(), (binary_prefix or "").encode())

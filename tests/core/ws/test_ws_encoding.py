"""core/ws/encoding.py: binary messages as lines of hex or base64, and the prefixes that tell
text from binary in one run."""

from __future__ import annotations

import base64

import pytest

from netkit.core.ws.encoding import BinaryEncoding, LineSyntax, MessageKind, line_syntax
from netkit.errors import ConfigError

ALL_BYTES = bytes(range(256))
HEX = BinaryEncoding.HEX
B64 = BinaryEncoding.BASE64


@pytest.mark.parametrize("encoding", list(BinaryEncoding))
@pytest.mark.parametrize("data", [b"", b"\x00", ALL_BYTES, ALL_BYTES[::-1] * 3 + b"\n\r"])
def test_every_byte_round_trips(encoding, data):
    line = encoding.encode(data)
    assert b"\n" not in line and b" " not in line
    assert encoding.decode(line) == data


def test_literal_encodings():
    # RFC 4648 section 10's test vectors, and hex in lowercase without separators.
    assert [B64.encode(v) for v in (b"f", b"fo", b"foo", b"foob")] == [
        b"Zg==", b"Zm8=", b"Zm9v", b"Zm9vYg==",
    ]  # fmt: skip
    assert HEX.encode(b"\x00\xab\xff") == b"00abff"
    assert base64.b64decode(B64.encode(ALL_BYTES)) == ALL_BYTES


def test_hex_input_takes_any_case_and_spaces_between_bytes():
    # What hex_summary and xxd print reads back.
    assert HEX.decode(b"00 AB\tff") == b"\x00\xab\xff"
    assert HEX.decode(b"") == b""


@pytest.mark.parametrize(
    ("encoding", "line", "says"),
    [
        (HEX, b"0g", "'g' at column 2 is not a hex digit"),
        (HEX, b"abc", "3 hex digits: a byte takes two"),
        (HEX, b"a bcd", "a space splits the two digits of a byte"),
        (HEX, b"00\xff", "byte 0xff at column 3 is not a hex digit"),
        (B64, b"Zm9v!", "'!' at column 5 is not a base64 character"),
        (B64, b"Zm9 v", "' ' at column 4 is not a base64 character"),
        (B64, b"Zm9", "incorrect padding"),
        (B64, b"Zg=a", "discontinuous padding not allowed"),
    ],
)
def test_bad_input_says_where_and_why(encoding, line, says):
    with pytest.raises(ValueError) as caught:
        encoding.decode(line)
    assert str(caught.value) == says


def test_only_an_encoding_makes_every_line_binary():
    syntax = LineSyntax(HEX)
    assert syntax.unprefixed is MessageKind.BINARY
    assert syntax.parse(b"6869", "line 1") == (b"hi", False)
    assert syntax.render(False, b"hi") == b"6869"
    assert syntax.render(True, "é".encode()) == "é".encode()  # text prints as it is
    with pytest.raises(ConfigError, match=r"^line 7 is not hex: 'x' at column 1"):
        syntax.parse(b"x", "line 7")


def test_a_text_prefix_marks_text_both_ways():
    syntax = LineSyntax(B64, text_prefix=b"T ")
    assert syntax.parse(b"T hello", "a") == (b"hello", True)
    assert syntax.parse(b"aGk=", "a") == (b"hi", False)
    assert syntax.render(True, b"hello") == b"T hello"
    assert syntax.render(False, b"hi") == b"aGk="
    # What a run prints is what the next run reads.
    for is_text, data in [(True, b"T x"), (False, ALL_BYTES), (True, b"")]:
        assert syntax.parse(syntax.render(is_text, data), "a") == (data, is_text)
    with pytest.raises(ConfigError, match=r"line 2 is a text message but not UTF-8 \(byte 3\)"):
        syntax.parse(b"T \xff", "line 2")


def test_a_binary_prefix_marks_binary_and_the_rest_is_text():
    syntax = LineSyntax(HEX, binary_prefix=b"b:")
    assert syntax.unprefixed is MessageKind.TEXT
    assert syntax.parse(b"b:00ff", "a") == (b"\x00\xff", False)
    assert syntax.parse(b"00ff", "a") == (b"00ff", True)
    assert syntax.render(False, b"\x00") == b"b:00"
    assert syntax.render(True, b"00") == b"00"


def test_both_prefixes_make_every_line_say_which():
    syntax = LineSyntax(HEX, text_prefix=b"T:", binary_prefix=b"B:")
    assert syntax.parse(b"T:B:x", "a") == (b"B:x", True)
    assert syntax.parse(b"B:ff", "a") == (b"\xff", False)
    with pytest.raises(ConfigError) as caught:
        syntax.parse(b"ff", "line 4 of standard input")
    message, _ = caught.value.describe(lambda setting: "--" + setting.replace("_", "-"))
    assert (
        message == "line 4 of standard input starts with neither --text-prefix nor --binary-prefix"
    )


def test_line_syntax_from_settings():
    assert line_syntax(hex=False, base64=False, text_prefix=None, binary_prefix=None) is None
    assert line_syntax(hex=True, base64=False, text_prefix="t", binary_prefix=None) == LineSyntax(
        HEX, text_prefix=b"t"
    )
    assert line_syntax(hex=False, base64=True, text_prefix=None, binary_prefix="b") == LineSyntax(
        B64, binary_prefix=b"b"
    )
    for kwargs, says in [
        ({"hex": True, "base64": True}, "choose one of hex and base64"),
        ({"text_prefix": "T"}, "text_prefix needs hex or base64"),
        ({"binary_prefix": "B"}, "binary_prefix needs hex or base64"),
        ({"hex": True, "text_prefix": ""}, "text_prefix must not be empty"),
        ({"hex": True, "text_prefix": "ab", "binary_prefix": "a"}, "must not start with one"),
    ]:
        settings = {"hex": False, "base64": False, "text_prefix": None, "binary_prefix": None}
        with pytest.raises(ConfigError, match=says):
            line_syntax(**{**settings, **kwargs})

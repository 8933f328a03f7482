"""The stream test protocol: how ``netkit bench --scenario stream`` and ``netkit tcp-echo serve
--mode stream`` agree on a direction and exchange the receiver's counts (iperf3's modes).

One connection is one stream. The wire, in order::

    client -> server   b"NETKIT-STREAM/1 forward\\n"    (or reverse, bidir): the hello
    server -> client   b"NETKIT-STREAM/1 ok\\n"          (or "... error REASON\\n", then close)
    forward            client -> server: bytes, as fast as the server reads them
    reverse            server -> client: bytes, as fast as the client reads them
    bidir              both at once
    client             half-closes (FIN) when its run ends
    server             stops sending, writes the 32-byte result record, closes:
                       b"NKSTRES1" + received + sent + elapsed_ns (three big-endian u64)

``received`` is every byte the server read after the hello, ``sent`` every byte it wrote
after its answer and before the record, ``elapsed_ns`` the time from its answer to the
client's FIN. The client reads up to the server's close: the last :data:`RESULT_SIZE` bytes
are the record, everything before them the server's data. So each direction has a sender's
count and a receiver's count, as iperf3 reports them, and throughput is never what was
merely written into socket buffers.

An echo server answers the hello with the hello itself: :func:`parse_answer` says so, and
the client can tell the user which server to start instead.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from netkit.errors import PeerProtocolError

MAGIC = b"NETKIT-STREAM/1"
HELLO_LIMIT = 64  # the longest hello or answer line, newline included
RESULT_TAG = b"NKSTRES1"
_RESULT = struct.Struct("!8sQQQ")
RESULT_SIZE = _RESULT.size  # 32
SERVER_HINT = "start the server with 'netkit tcp-echo serve --mode stream'"


class Direction(enum.StrEnum):
    """Which way the bytes of a stream test go (iperf3's default, ``-R`` and ``--bidir``)."""

    FORWARD = "forward"  # client -> server
    REVERSE = "reverse"  # server -> client
    BIDIR = "bidir"  # both at once

    @property
    def client_sends(self) -> bool:
        """True when the client writes data."""
        return self is not Direction.REVERSE

    @property
    def server_sends(self) -> bool:
        """True when the server writes data."""
        return self is not Direction.FORWARD


def hello(direction: Direction) -> bytes:
    """The client's first line."""
    return MAGIC + b" " + direction.value.encode() + b"\n"


OK_LINE = MAGIC + b" ok\n"


def error_line(reason: str) -> bytes:
    """The server's answer to a hello it refuses (one line, ASCII)."""
    text = reason.encode("ascii", "replace").replace(b"\n", b" ")
    return (MAGIC + b" error " + text)[: HELLO_LIMIT - 1] + b"\n"


def take_line(data: bytes | bytearray | memoryview) -> int | None:
    """Where the first line of ``data`` ends (just past its newline), or None if it has not
    arrived yet.

    Raises:
        PeerProtocolError: no newline within :data:`HELLO_LIMIT` bytes.
    """
    end = bytes(data[:HELLO_LIMIT]).find(b"\n")
    if end >= 0:
        return end + 1
    if len(data) >= HELLO_LIMIT:
        raise PeerProtocolError(f"no stream test line within {HELLO_LIMIT} bytes")
    return None


def parse_hello(line: bytes) -> Direction:
    """The direction a client's hello asks for.

    Raises:
        PeerProtocolError: not a hello (the reason is what the server answers).
    """
    head, _, word = line.rstrip(b"\r\n").partition(b" ")
    if head != MAGIC:
        raise PeerProtocolError("not a stream test hello (expected 'NETKIT-STREAM/1 DIRECTION')")
    try:
        return Direction(word.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        names = ", ".join(Direction)
        raise PeerProtocolError(f"unknown direction {word!r}: choose one of {names}") from None


class Answer(enum.Enum):
    """What a server answered to the hello."""

    OK = "ok"
    ECHO = "echo"  # the hello came back: an echo server


def parse_answer(line: bytes, sent: bytes, peer: str) -> Answer:
    """Judge the server's answer ``line`` to the hello ``sent``.

    Raises:
        PeerProtocolError: the server refused (its reason is in the message) or is not a
            stream test server.
    """
    if line == OK_LINE:
        return Answer.OK
    if line == sent:
        return Answer.ECHO
    head, _, rest = line.rstrip(b"\r\n").partition(b" ")
    if head == MAGIC and rest.startswith(b"error "):
        reason = rest[6:].decode("ascii", "replace")
        raise PeerProtocolError(f"{peer} refused the stream test: {reason}")
    raise PeerProtocolError(
        f"{peer} answered the stream test hello with {bytes(line[:40])!r}: not a stream"
        f" test server; {SERVER_HINT}"
    )


@dataclass(frozen=True)
class StreamReport:
    """What the server counted on one connection (its result record).

    Attributes:
        received: bytes it read after the hello.
        sent: bytes it wrote after its answer, before the record.
        elapsed_ns: from its answer to the client's FIN.
    """

    received: int
    sent: int
    elapsed_ns: int

    def encode(self) -> bytes:
        """The 32-byte record."""
        return _RESULT.pack(RESULT_TAG, self.received, self.sent, self.elapsed_ns)

    @classmethod
    def decode(cls, data: bytes, peer: str) -> StreamReport:
        """Parse the last :data:`RESULT_SIZE` bytes a server sent before closing.

        Raises:
            PeerProtocolError: too short, or not a result record.
        """
        if len(data) != RESULT_SIZE:
            raise PeerProtocolError(
                f"{peer} closed the stream test without its result record ({SERVER_HINT})"
            )
        tag, received, sent, elapsed = _RESULT.unpack(data)
        if tag != RESULT_TAG:
            raise PeerProtocolError(
                f"{peer} ended the stream test without a valid result record ({SERVER_HINT})"
            )
        return cls(received, sent, elapsed)

"""The WebSocket connection state machine (RFC 6455 sections 5-7), sans-I/O.

(Over 600 lines: receiving and sending share the state, the closing handshake and the
deflate context; the opening handshake is in server.py/client.py, frames in frames.py,
events in events.py, UTF-8 checks in utf8.py.)

The I/O layer moves bytes; :class:`Protocol` does everything else::

    view = proto.writable()              # or proto.receive_data(data)
    n = sock.recv_into(view); proto.commit(n)   # n == 0: proto.receive_eof()
    for event in proto.events_received(): ...   # Message, Ping, Pong, CloseReceived, ...
    sock.sendmsg(proto.data_to_send())          # header and payload buffers, never joined
    if proto.should_close_transport(): close the socket
    elif proto.close_expected(): arm the closing timeout (then close the socket)

States (:class:`State`) and what moves between them (``_TRANSITIONS``)::

    CONNECTING --open()--> OPEN --send_close() / close received / peer error--> CLOSING
    any state --receive_eof()--> CLOSED

CLOSED means the TCP connection is gone, as in websockets. In CLOSING the peer is expected to
close soon: either it owes us a close frame, or the closing handshake is over and (7.1.1) the
server closes TCP first.

Zero copy on receive: a message that arrives in one uncompressed frame is delivered as a
memoryview of the receive buffer, valid until the buffer is next written (:meth:`writable`,
:meth:`receive_data`); use ``bytes(event.data)`` to keep it. Events still undelivered when the
buffer is written are copied first, so they never change under you. A fragmented message is
joined into a bytearray as its frames arrive: the frames come in separate reads, and the
buffer is reused between reads, so this copy is necessary.
"""

from __future__ import annotations

import enum
from codecs import utf_8_decode as _utf8_decode
from collections.abc import Iterable
from dataclasses import replace
from typing import ClassVar, Final

from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.deflate import DeflateParams, PerMessageDeflate
from netkit.core.ws.events import CloseReceived, ConnectionClosed, Event, Message, Ping, Pong
from netkit.core.ws.frames import (
    CONTROL_OPCODES,
    DEFAULT_MAX_SIZE,
    MAX_HEADER_SIZE,
    CloseCode,
    Frame,
    FrameParser,
    FrameWriter,
    MaskKeys,
    Opcode,
    Side,
    frame_from,
    parse_close_payload,
    serialize_close_payload,
)
from netkit.core.ws.mask import Buffer, unmask_into
from netkit.core.ws.utf8 import TextCheck, invalid_utf8
from netkit.errors import LocalProtocolError, PeerProtocolError

__all__ = ["Protocol", "State"]


class State(enum.IntEnum):
    """Connection states (RFC 6455 section 4 for CONNECTING, section 7 for the rest)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# The states as module constants: an Enum member looked up on its class costs 0.1 us in
# Python 3.11, and the per-message path compares states several times.
_CONNECTING, _OPEN, _CLOSING, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED
_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY
# The least free space read_buffer offers when part of a frame is buffered.
_MIN_READ: Final = 4096

# State transitions as data: (state, what happened) -> next state. Anything missing is misuse.
_TRANSITIONS: Final[dict[tuple[State, str], State]] = {
    (State.CONNECTING, "open"): State.OPEN,
    (State.OPEN, "send_close"): State.CLOSING,
    (State.OPEN, "receive_close"): State.CLOSING,
    (State.CLOSING, "receive_close"): State.CLOSING,
    (State.OPEN, "fail"): State.CLOSING,
    (State.CLOSING, "fail"): State.CLOSING,
    (State.CONNECTING, "eof"): State.CLOSED,
    (State.OPEN, "eof"): State.CLOSED,
    (State.CLOSING, "eof"): State.CLOSED,
}


class Protocol:
    """One side of a WebSocket connection: bytes in, events and bytes out.

    Args:
        side: client or server (who masks, 5.1).
        state: OPEN after a completed handshake (the default), or CONNECTING to let the
            handshake read from :attr:`buffer` first and call :meth:`open` after.
        max_size: the largest message accepted, in bytes after decompression, across
            fragments (1009); None for no limit.
        deflate: the agreed permessage-deflate parameters, or None.
        buffer: the receive buffer to parse, e.g. the one the handshake was read from (bytes
            after the handshake stay in it); its ``max_size`` is raised to fit one frame.
        keys: source of masking keys (tests inject fixed ones).
        auto_pong: answer pings automatically (5.5.2).

    Attributes:
        state: the connection state (read it; only the protocol's own transitions set it).
        close_sent, close_received: the close frames' ``(code, reason)``, once sent/received.
        error: the peer's protocol violation that failed the connection, if any. When it
            follows events parsed from the same read, it is set (and the close frame queued)
            by the next :meth:`data_to_send`, so that replies to those events go first.
    """

    hold_close_reply: ClassVar[bool] = False
    """True in a subclass whose application answers the peer's close itself, when it is done
    sending (:meth:`answer_close`): a bridge, whose peer's close is a half-close (its stream
    may still send). Until then the state is CLOSING and messages may still be sent."""

    # Slots: attribute reads on the per-message path, and less memory per idle connection.
    __slots__ = (
        "_buffer",
        "_close_deferred",
        "_deferred",
        "_deflate",
        "_eof",
        "_events",
        "_msg_compressed",
        "_msg_parts",
        "_msg_size",
        "_msg_text",
        "_output",
        "_parser",
        "_text_checked",
        "_utf8",
        "_writer",
        "auto_pong",
        "close_received",
        "close_sent",
        "error",
        "max_size",
        "side",
        "state",
    )

    def __init__(
        self,
        side: Side,
        *,
        state: State = State.OPEN,
        max_size: int | None = DEFAULT_MAX_SIZE,
        deflate: DeflateParams | None = None,
        buffer: ReceiveBuffer | None = None,
        keys: MaskKeys | None = None,
        auto_pong: bool = True,
    ) -> None:
        if state not in (State.CONNECTING, State.OPEN):
            raise LocalProtocolError(f"a protocol starts CONNECTING or OPEN, not {state.name}")
        self.side = side
        self.max_size = max_size
        self.auto_pong = auto_pong
        self.state: State = state  # read it; transitions set it
        self._buffer = buffer if buffer is not None else ReceiveBuffer()
        if max_size is not None and self._buffer.max_size < max_size + MAX_HEADER_SIZE:
            # A frame of max_size bytes and its header must fit in the buffer at once.
            self._buffer.max_size = max_size + MAX_HEADER_SIZE
        self._parser = FrameParser(side, max_size=max_size)
        self._writer = FrameWriter(side, keys=keys)
        self._deflate: PerMessageDeflate | None = None
        if deflate is not None:
            self._set_deflate(deflate)
        self._events: list[Event] = []
        self._output: list[Buffer] = []
        # The message being received: None between messages.
        self._msg_text: bool | None = None
        self._msg_compressed = False
        self._msg_parts = bytearray()
        self._msg_size = 0
        self._utf8 = TextCheck()
        # Payload bytes of the frame at the front already unmasked in place and fed to _utf8
        # while the frame was arriving (a text frame checked before it is complete).
        self._text_checked = 0
        # A peer error found after events that are still to be handled: it fails the
        # connection once they have been collected (see _fail_in_order).
        self._deferred: PeerProtocolError | None = None
        self._close_deferred = False  # the peer's close waits for the messages before it
        # Closing handshake (7.1.2, 7.1.3).
        self.close_sent: tuple[int, str] | None = None
        self.close_received: tuple[int, str] | None = None
        self.error: PeerProtocolError | None = None
        self._eof = False

    # --- state ----------------------------------------------------------------------------

    @property
    def buffer(self) -> ReceiveBuffer:
        """The receive buffer (write into it through :meth:`writable`/:meth:`commit`)."""
        return self._buffer

    @property
    def deflate(self) -> DeflateParams | None:
        """The permessage-deflate parameters in use, or None."""
        return self._deflate.params if self._deflate is not None else None

    @property
    def close_code(self) -> int | None:
        """The close code to report: received, else 1006 once closed, else None."""
        if self.close_received is not None:
            return self.close_received[0]
        return CloseCode.ABNORMAL_CLOSURE if self.state is _CLOSED else None

    def _transition(self, what: str) -> None:
        try:
            self.state = _TRANSITIONS[self.state, what]
        except KeyError:
            raise LocalProtocolError(
                f"cannot {what.replace('_', ' ')} in state {self.state.name}"
            ) from None

    def _set_deflate(self, params: DeflateParams) -> None:
        self._deflate = PerMessageDeflate(params, self.side)
        # RFC 7692 6: permessage-deflate uses RSV1.
        self._parser.rsv1_allowed = True

    def open(self, *, deflate: DeflateParams | None = None) -> None:
        """Finish CONNECTING: the handshake succeeded. Parses frames already buffered.

        Args:
            deflate: the agreed permessage-deflate parameters, or None.
        """
        self._transition("open")
        if deflate is not None:
            self._set_deflate(deflate)
        self._parse()

    def close_expected(self) -> bool:
        """Tell whether the peer should close the connection soon (arm the closing timeout).

        True in CLOSING: the peer owes us a close frame, or the closing handshake is over and
        the server is to close TCP first (7.1.1). On expiry the I/O layer closes the socket.
        False while we hold our reply to the peer's close (:attr:`hold_close_reply`).
        """
        return self.state is _CLOSING and not self.close_reply_held

    @property
    def close_reply_held(self) -> bool:
        """True while the peer's close waits for our :meth:`answer_close`."""
        return (
            self.hold_close_reply
            and self.close_sent is None
            and self.close_received is not None
            and self.error is None
            and self.state is _CLOSING
        )

    def should_close_transport(self) -> bool:
        """Tell whether we should close the TCP connection once :meth:`data_to_send` is sent.

        True for the server when the closing handshake is over (7.1.1: the server closes
        first) and for either side after failing the connection (7.1.7).
        """
        if self.state is not _CLOSING:
            return False
        if self.error is not None:
            return True
        done = self.close_sent is not None and self.close_received is not None
        return done and self.side is Side.SERVER

    # --- receiving ------------------------------------------------------------------------

    def writable(self, min_size: int = 1) -> memoryview:
        """Return buffer space for the I/O layer to read into (then call :meth:`commit`).

        Undelivered events that point into the buffer are copied first (see module docs).
        ``min_size`` is capped so that it never asks the buffer for more than it may hold.
        """
        if self._events:
            self._detach_events()
        buf = self._buffer
        return buf.writable(max(1, min(min_size, buf.max_size - len(buf))))

    def bytes_wanted(self) -> int:
        """How many more bytes the frame at the front of the buffer needs (at least 1).

        For information only: do not size the buffer by it. The length is what the peer
        declares, not what it sent; :meth:`read_buffer` grows the buffer as bytes arrive.
        """
        return max(1, self._parser.needed(self._buffer) - len(self._buffer))

    def read_buffer(self) -> memoryview:
        """Return buffer space for the next read: the I/O layer's ``get_buffer``.

        Memory follows what arrived, never what a frame header declares: the buffer keeps
        its size while it has room and doubles (a copy, bounded by ``max_size``) when a
        frame fills it, so a peer that declares 100 MB and sends 17 bytes holds one pooled
        chunk. No header is looked at here, so it is the same during the opening handshake
        (HTTP bytes) and after a failure (the bad frame may still be buffered).

        Raises:
            BufferFull: more than ``max_size`` bytes would be buffered.
        """
        if self._events:
            self._detach_events()
        buf = self._buffer
        pending = len(buf)
        if not pending:
            return buf.writable()  # between frames: the per-message path
        room = buf.max_size - pending
        want = _MIN_READ
        if buf.capacity - buf.end < want and self.state is not _CONNECTING and self.error is None:
            # Full: grow toward the frame's end, but to at most 4x (5x for the last step)
            # what arrived: fewer copies than doubling for a large message, and a 100 MB
            # claim with 64 KiB sent gets 256 KiB.
            try:
                rest = self._parser.needed(buf) - pending
            except PeerProtocolError:
                rest = 0  # _parse fails the connection on it
            want = max(want, rest if rest <= 4 * pending else 3 * pending)
        return buf.writable(max(1, min(want, room)))

    def commit(self, nbytes: int) -> None:
        """Record ``nbytes`` read into the last :meth:`writable` view, and parse them."""
        self._buffer.commit(nbytes)
        if self.state is _CONNECTING:
            self._handshake()
        else:
            self._parse()

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes that were read some other way (copied into the buffer), and parse them."""
        # In slices that fit the buffer, parsing between them: valid input larger than the
        # buffer's free room is fine; only a single frame that cannot fit is BufferFull.
        view = memoryview(data).cast("B")
        while len(view):
            self._detach_events()
            room = self._buffer.max_size - len(self._buffer)
            chunk = view[: max(room, 1)]
            self._buffer.extend(chunk)
            view = view[len(chunk) :]
            if self.state is _CONNECTING:
                self._handshake()
            else:
                self._parse()

    def _handshake(self) -> None:
        """Bytes arrived while CONNECTING: the sides' opening handshakes override this
        (:mod:`netkit.core.ws.server`, :mod:`netkit.core.ws.client`). Here they wait in the
        buffer until :meth:`open`."""

    def receive_eof(self) -> None:
        """The peer closed the TCP connection: move to CLOSED and emit ConnectionClosed."""
        if self._eof:
            return
        self._eof = True
        if self._close_deferred:
            self._answer_close()
        if self._deferred is not None:
            self._fail_deferred()
        self._transition("eof")
        code, reason = self.close_received or (CloseCode.ABNORMAL_CLOSURE, "")
        self._events.append(ConnectionClosed(code, reason, self.error))

    def events_received(self) -> list[Event]:
        """Return the events parsed since the last call, and forget them."""
        events, self._events = self._events, []
        return events

    def _detach_events(self) -> None:
        # The buffer is about to be written: copy payloads that still point into it.
        for i, event in enumerate(self._events):
            if isinstance(event, Message) and isinstance(event.data, memoryview):
                self._events[i] = replace(event, data=bytes(event.data))

    def _parse(self) -> None:
        if self._close_deferred:
            self._answer_close()  # more bytes came before the events were collected
        if self._deferred is not None:
            self._fail_deferred()  # more bytes came before the events were collected
        buf = self._buffer
        read = self._parser.read
        while self.state is _OPEN or (
            self.state is _CLOSING and self.close_received is None and self.error is None
        ):
            limit = self.max_size
            if limit is not None and self._msg_text is not None and not self._msg_compressed:
                limit -= self._msg_size  # what is left of this message's budget
            try:
                item = read(buf, limit, self._text_checked)
                if item is None:
                    if self._msg_text is not False and len(buf):  # a text frame may be arriving
                        self._check_text_arriving()
                    return
                b0, payload, left = item
                checked, self._text_checked = self._text_checked, 0
                if (b0 == 0x82 or b0 == 0x81) and self._msg_text is None and not checked:
                    # A whole message in one uncompressed frame (FIN set, no RSV bit): the
                    # per-message path, no Frame built. 8.1: text must be UTF-8.
                    if b0 == 0x81:
                        try:
                            _utf8_decode(payload, "strict", True)
                        except UnicodeDecodeError as exc:
                            raise invalid_utf8() from exc
                    self._events.append(Message(payload, b0 == 0x81))
                    if not left:
                        return  # the read held whole messages: the usual case
                    continue
                self._handle(frame_from(b0, payload), checked)
                if self._close_deferred:
                    break  # 5.5.1: nothing after the peer's close frame is processed
            except PeerProtocolError as exc:
                self._fail_in_order(exc)
                break
        if self.state is not _CONNECTING and len(buf):
            # After the peer's close frame nothing more may come (5.5.1); after failing,
            # 7.1.7 says not to process anything else: drop it.
            buf.consume(len(buf))

    def _check_text_arriving(self) -> None:
        # 8.1: fail fast on invalid UTF-8 in a text frame that has not fully arrived (Autobahn
        # 6.4.3, 6.4.4): unmask what arrived since the last read in place, feed it to the
        # incremental decoder, and remember how far, so that nothing is done twice.
        buf = self._buffer
        head = self._parser.peek(buf)
        if head is None:
            return
        size, length, key = head
        b0 = buf.view(1)[0]
        op = b0 & 0x0F
        if b0 & 0x40:
            return  # compressed: checked once decompressed, when the frame is complete
        if not (
            (op == _TEXT and self._msg_text is None)
            or (op == Opcode.CONT and self._msg_text and not self._msg_compressed)
        ):
            return
        done = self._text_checked
        arrived = buf.view(size + length)[size:]
        if len(arrived) <= done:
            return
        if key is not None:
            unmask_into(arrived, key, done)
        if not done and op == _TEXT:
            self._utf8.reset()  # a new message
        self._text_checked = len(arrived)
        self._utf8.feed(arrived[done:], final=False)

    def _handle(self, frame: Frame, checked: int = 0) -> None:
        op = frame.opcode
        if frame.rsv1 and op in CONTROL_OPCODES:
            # RFC 7692 6: permessage-deflate applies to data messages only.
            raise PeerProtocolError(f"RSV1 set on a {op.name} frame")
        if op is Opcode.PING:
            payload = bytes(frame.payload)
            self._events.append(Ping(payload))
            # 5.5.2: answer with a pong carrying the same data, unless we are closing.
            if self.auto_pong and self.state is _OPEN:
                self._send_frame(Frame(Opcode.PONG, payload))
        elif op is Opcode.PONG:
            self._events.append(Pong(bytes(frame.payload)))
        elif op is Opcode.CLOSE:
            self._receive_close(frame)
        else:
            self._receive_data_frame(frame, checked)

    def _receive_data_frame(self, frame: Frame, checked: int) -> None:
        # checked: leading payload bytes already fed to the UTF-8 decoder as they arrived.
        op = frame.opcode
        if op is Opcode.CONT:
            # 5.4: a continuation needs a fragmented message to continue.
            if self._msg_text is None:
                raise PeerProtocolError("continuation frame without a message to continue")
            if frame.rsv1:
                # RFC 7692 6.1: only the first frame of a message carries RSV1.
                raise PeerProtocolError("RSV1 set on a continuation frame")
        else:
            # 5.4: a new message may not start inside a fragmented one.
            if self._msg_text is not None:
                raise PeerProtocolError("new data frame inside a fragmented message")
            self._msg_text = op is Opcode.TEXT
            self._msg_compressed = frame.rsv1
            self._msg_size = 0
            if not checked:
                self._utf8.reset()
        data: Buffer = frame.payload
        if self._msg_compressed:
            assert self._deflate is not None  # rsv1 is only accepted with deflate
            budget = None if self.max_size is None else self.max_size - self._msg_size
            data = self._deflate.decompress(data, fin=frame.fin, max_size=budget)
        self._msg_size += len(data)
        if self._msg_text:
            self._utf8.feed(data[checked:] if checked else data, frame.fin)
        if frame.fin and not self._msg_parts:
            # A whole message in one frame: hand out the view (or decompressed bytes) as is.
            message = Message(data, self._msg_text)
        else:
            # Fragments arrive in separate reads and the buffer is reused: join them (a copy).
            self._msg_parts += data
            if not frame.fin:
                return
            message = Message(self._msg_parts, self._msg_text)
            self._msg_parts = bytearray()
        self._msg_text = None
        self._events.append(message)

    def _receive_close(self, frame: Frame) -> None:
        code, reason = parse_close_payload(frame.payload)
        self.close_received = (code, reason)
        self._events.append(CloseReceived(code, reason))
        if self.close_sent is None and any(type(event) is Message for event in self._events):
            # 5.5.1 lets an endpoint finish sending before it answers a close: messages that
            # came in the same read before the close frame are handled first, as if they
            # had come in an earlier read, and the reply waits until data_to_send(), after
            # theirs (Autobahn 7.1.6: the echo of the message, then the close).
            self._close_deferred = True
            return
        self._answer_close()

    def _answer_close(self) -> None:
        self._close_deferred = False
        if (
            self.close_sent is None
            and self.close_received is not None
            and not self.hold_close_reply
        ):
            # 5.5.1: reply with a close frame, echoing the status code (when held, the
            # application replies: answer_close).
            code = self.close_received[0]
            self._queue_close(None if code == CloseCode.NO_STATUS_RCVD else code, "")
        self._transition("receive_close")

    def _fail_in_order(self, exc: PeerProtocolError) -> None:
        # Events parsed from the same read before the error are handled first, as if they
        # had come in an earlier read: the failure (and its close frame) waits until the
        # application has collected them and queued its replies, i.e. until data_to_send()
        # (Autobahn 3.2, 4.1.3, 5.15: the echo of a valid message, then the close).
        if self._events:
            self._deferred = exc
        else:
            self._fail(exc)

    def _fail_deferred(self) -> None:
        exc, self._deferred = self._deferred, None
        if exc is not None and self.error is None and self.state is not _CLOSED:
            self._fail(exc)
            self._buffer.consume(len(self._buffer))  # 7.1.7: nothing more is processed

    def _fail(self, exc: PeerProtocolError) -> None:
        # 7.1.7 Fail the WebSocket Connection: send a close frame with the code, stop reading.
        self.error = exc
        self._text_checked = 0
        if self.close_sent is None:
            code = exc.close_code or CloseCode.PROTOCOL_ERROR
            reason = str(exc).encode("utf-8")[:123].decode("utf-8", "ignore")
            self._queue_close(code, reason)
        self._transition("fail")

    # --- sending --------------------------------------------------------------------------

    def data_to_send(self) -> list[Buffer]:
        """Return the buffers to write, in order, and forget them.

        Headers and payloads are separate buffers: write them with one scatter-gather call
        (``socket.sendmsg``, ``transport.writelines``), do not join them.

        A peer error found in the same read after events that were still to be handled
        fails the connection here, after the replies queued while handling them: handle
        :meth:`events_received` first, then call this.
        """
        if self._close_deferred:
            self._answer_close()
        if self._deferred is not None:
            self._fail_deferred()
        out, self._output = self._output, []
        return out

    def send_frames(self, buffers: Iterable[Buffer]) -> None:
        """Queue whole frames serialized elsewhere (``ws-server --chaos``), in order.

        Raises:
            LocalProtocolError: not OPEN, or our close frame was sent.
        """
        if self.state is not _OPEN or self.close_sent is not None:
            raise LocalProtocolError(f"cannot send frames in state {self.state.name}")
        self._output += buffers

    def queued_output(self) -> list[Buffer]:
        """As :meth:`data_to_send` without a deferred close reply or failure (a chaos cut)."""
        out, self._output = self._output, []
        return out

    def _send_frame(self, frame: Frame) -> None:
        self._output.extend(self._writer.write(frame))

    def _send_message(
        self, opcode: Opcode, data: Buffer, fragment_size: int | None, compress: bool
    ) -> None:
        # 5.5.1: no data frames after a close frame (the peer's, unless we hold our reply).
        if self.state is not _OPEN and not self.close_reply_held:
            raise LocalProtocolError(f"cannot send a message in state {self.state.name}")
        if fragment_size is None and (self._deflate is None or not compress):
            self._output += self._writer.write_data(opcode, data)  # the per-message path
            return
        if fragment_size is not None and fragment_size <= 0:
            raise LocalProtocolError("fragment_size must be positive")
        rsv1 = False
        if self._deflate is not None and compress:
            data = self._deflate.compress(data)
            rsv1 = True  # RFC 7692 6: RSV1 on the first frame only.
        write = self._writer.write_data
        if fragment_size is None or len(data) <= fragment_size:
            self._output += write(opcode, data, rsv1=rsv1)
            return
        view = memoryview(data).cast("B")
        for start in range(0, len(view), fragment_size):
            chunk = view[start : start + fragment_size]
            last = start + fragment_size >= len(view)
            self._output += write(opcode, chunk, fin=last, rsv1=rsv1)
            opcode, rsv1 = Opcode.CONT, False

    def send_text(
        self, data: str | Buffer, *, fragment_size: int | None = None, compress: bool = True
    ) -> None:
        """Queue a text message.

        Args:
            data: the text, or its UTF-8 encoding (not re-checked).
            fragment_size: split into frames of at most this many payload bytes.
            compress: use permessage-deflate if negotiated.

        Raises:
            LocalProtocolError: the connection is not OPEN.
        """
        payload = data.encode("utf-8") if isinstance(data, str) else data
        self._send_message(_TEXT, payload, fragment_size, compress)

    def send_binary(
        self, data: Buffer, *, fragment_size: int | None = None, compress: bool = True
    ) -> None:
        """Queue a binary message. On a server the payload is not copied: keep it unchanged
        until :meth:`data_to_send`'s buffers are written.

        Args:
            data: the payload.
            fragment_size: split into frames of at most this many payload bytes.
            compress: use permessage-deflate if negotiated.

        Raises:
            LocalProtocolError: the connection is not OPEN.
        """
        if fragment_size is None and self._deflate is None and self.state is _OPEN:
            self._output += self._writer.write_data(_BINARY, data)  # the per-message path
            return
        self._send_message(_BINARY, data, fragment_size, compress)

    def send_ping(self, payload: Buffer = b"") -> None:
        """Queue a ping (5.5.2).

        Raises:
            LocalProtocolError: a close frame was already sent, or payload > 125 bytes.
        """
        if self.close_sent is not None or self.state is not _OPEN:
            raise LocalProtocolError(f"cannot send a ping in state {self.state.name}")
        self._send_frame(Frame(Opcode.PING, bytes(payload)))

    def send_pong(self, payload: Buffer = b"") -> None:
        """Queue an unsolicited pong (5.5.3), or a reply when ``auto_pong`` is off.

        Raises:
            LocalProtocolError: a close frame was already sent, or payload > 125 bytes.
        """
        if self.close_sent is not None or self.state is not _OPEN:
            raise LocalProtocolError(f"cannot send a pong in state {self.state.name}")
        self._send_frame(Frame(Opcode.PONG, bytes(payload)))

    def send_close(self, code: int | None = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (7.1.2): queue a close frame and move to CLOSING.

        Args:
            code: the status code, or None for a close frame without one.
            reason: at most 123 bytes of UTF-8.

        Raises:
            LocalProtocolError: not OPEN, or an invalid code or reason.
        """
        if self.state is not _OPEN:
            raise LocalProtocolError(f"cannot send a close frame in state {self.state.name}")
        self._queue_close(code, reason)
        self._transition("send_close")

    def answer_close(self, code: int | None = None, reason: str = "") -> None:
        """Send the reply to the peer's close that :attr:`hold_close_reply` held (5.5.1).

        Args:
            code: the status code; by default the peer's, echoed (none if it sent none).
            reason: at most 123 bytes of UTF-8.

        Raises:
            LocalProtocolError: no reply is held.
        """
        if not self.close_reply_held:
            raise LocalProtocolError("no close reply is held")
        assert self.close_received is not None
        if code is None and self.close_received[0] != CloseCode.NO_STATUS_RCVD:
            code = self.close_received[0]
        self._queue_close(code, reason)

    def _queue_close(self, code: int | None, reason: str) -> None:
        payload = serialize_close_payload(code, reason)
        self.close_sent = (code if code is not None else CloseCode.NO_STATUS_RCVD, reason)
        self._send_frame(Frame(Opcode.CLOSE, payload))

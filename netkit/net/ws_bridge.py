"""Bridging a WebSocket connection and a byte stream: :class:`Bridge` joins one of each.

Binary messages become bytes on the stream and what the stream sends becomes binary messages
(one per read), in order, every byte. How each side's end shows on the other (a FIN as close
1000 and back, a reset as 1011 and back) is :mod:`netkit.core.ws.bridge`'s table. The bytes
are counted as the proxy counts them (:class:`~netkit.core.flow.RelayRecord`: a
:class:`~netkit.core.flow.Flow` each way, ``up`` from the client to the upstream), so a
bridge's ``closed`` event reads like a relay's, undelivered bytes included.

The sides: :class:`BridgedWS` is mixed into a WebSocket connection (server or client);
the stream is anything with :class:`StreamPeer`'s methods: :class:`StreamSide` for a TCP or
Unix socket (dialled here, or accepted: :mod:`netkit.net.ws_bridge_serve`), or stdio
(:mod:`netkit.net.ws_stdio`).

Flow control: a side stops reading while the other side's transport holds unsent bytes, so
memory stays bounded and no view of a receive buffer outlives it (views are written without
copies both ways, as the relay writes them).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from netkit.core.addresses import WSURL
from netkit.core.flow import Flow, RelayRecord
from netkit.core.ws.bridge import BridgeClientProtocol, StreamEnd
from netkit.core.ws.client import ClientHandshake, ClientProtocol
from netkit.core.ws.events import Message
from netkit.core.ws.protocol import State
from netkit.errors import PeerProtocolError
from netkit.net.protocols import StreamProtocol
from netkit.net.sockets import force_rst, unsent_bytes
from netkit.net.ws import WebSocketConnection, WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection, connect_ws
from netkit.net.zerocopy import Buffer

_OPEN = State.OPEN


class StreamPeer(Protocol):
    """What a bridge needs of its byte stream."""

    @property
    def writing_paused(self) -> bool:
        """True while the stream holds bytes it could not send yet."""

    def write(self, data: Buffer) -> None:
        """Send ``data`` (a view, valid during the call only unless the stream pauses)."""

    def finish(self) -> None:
        """Send a FIN once every byte written is sent (shutdown write)."""

    def reset(self) -> int:
        """Drop the stream with a reset; returns the bytes written but discarded."""

    def close(self) -> None:
        """The WebSocket side is over: close once the peer is done (FIN sent first)."""

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading`."""

    def resume_reading(self) -> None:
        """Read again."""


class Bridge:
    """One WebSocket connection joined to one byte stream.

    Either side may come first (a server dials its upstream once the client's upgrade is
    accepted; a listener dials the WebSocket once a client connects): until both are
    attached, what arrives is held (at most one read: the side that has data stops reading).

    Args:
        record: the counts and the ``closed`` event's fields; ``up`` is client → upstream.
        ws_is_client: the WebSocket side is the client (``ws-server --to``), so bytes from it
            go ``up``; False when the stream is the client (``ws-client --listen``, stdio).
        on_done: called once, when both sides are over.
        linger: how long a stream we sent a FIN to may take to send its own, once the
            WebSocket is closed, before it is closed anyway.

    Attributes:
        to_stream, to_ws: the flows from the WebSocket to the stream and back.
        ws_close: the close frame received, ``(code, reason)``; None without one.
    """

    def __init__(
        self,
        record: RelayRecord,
        *,
        ws_is_client: bool,
        on_done: Callable[[Bridge], None],
        linger: float = 10.0,
    ) -> None:
        self.record = record
        self.to_stream: Flow = record.up if ws_is_client else record.down
        self.to_ws: Flow = record.down if ws_is_client else record.up
        self.on_done = on_done
        self.linger = linger
        self.ws: BridgedWS | None = None
        self.stream: StreamPeer | None = None
        self.stream_failed = False
        self.ws_done = False
        self.stream_done = False
        self.ws_close: tuple[int, str] | None = None
        self._held: list[bytes] = []  # from the WebSocket before the stream is attached
        self._reported = False
        self._linger: asyncio.TimerHandle | None = None  # for the stream's FIN, our close held
        self.lingered = False  # the stream did not end within the linger time

    # --- attaching ------------------------------------------------------------------------

    @property
    def ws_side(self) -> str:
        """``client`` or ``upstream``: what the WebSocket side is, in the events' words."""
        return "client" if self.to_stream is self.record.up else "upstream"

    @property
    def stream_side(self) -> str:
        """``client`` or ``upstream``: what the stream side is."""
        return "upstream" if self.ws_side == "client" else "client"

    def attach_ws(self, ws: BridgedWS) -> None:
        """The WebSocket is open (its messages come to this bridge from now on)."""
        self.ws = ws
        ws.bridge = self
        self._sync_reading()

    def attach_stream(self, stream: StreamPeer) -> None:
        """The stream is connected: send it what the WebSocket already sent, then relay."""
        self.stream = stream
        held, self._held = self._held, []
        for data in held:
            stream.write(data)
            self.to_stream.gave(len(data))
        if self.ws_close is not None or self.ws_done:
            self._end_stream_as_ws_did()
            if self.ws_done and not self.stream_done:
                stream.close()
        self._sync_reading()

    def fail_stream(self, error: Exception) -> None:
        """The stream could not be connected: close the WebSocket with 1011 saying why."""
        self.stream_failed = self.stream_done = True
        self._held = []
        self._note_end(f"{self.stream_side} unreachable: {error}")
        self._close_ws(StreamEnd.RESET, f"{self.stream_side} unreachable")
        self._sync_reading()  # to read the client's answer to our close
        self._check_done()

    def fail_ws(self, error: Exception) -> None:
        """The WebSocket could not be opened: reset the stream (it has no codes to say why)."""
        self.ws_done = True
        self._note_end(f"{self.ws_side} unreachable: {error}")
        if self.stream is not None and not self.stream_done:
            self.to_stream.fin_sent = True
            self.stream.reset()
        self._check_done()

    # --- from the WebSocket ----------------------------------------------------------------

    def ws_message(self, data: Buffer) -> None:
        """A message arrived: its payload goes to the stream."""
        n = len(data)
        self.to_stream.took(n)
        stream = self.stream
        if stream is None:
            if not self.stream_failed:
                # Kept until the stream is attached: the view is valid only during this call.
                self._held.append(bytes(data))
            return
        if self.stream_done or self.to_stream.fin_sent:
            return  # nowhere to go: counted as received, not delivered
        stream.write(data)
        self.to_stream.gave(n)
        if stream.writing_paused:
            self._sync_reading()

    def ws_close_received(self, code: int, reason: str) -> None:
        """The peer's close frame: a FIN on the stream for a clean code, else a reset.

        After a FIN our reply waits (the protocol holds it) until the stream sends its own,
        or the linger time passes: what the stream sends until then is still delivered.
        """
        self.ws_close = (code, reason)
        self._note_end(f"{self.ws_side} closed with {code}")
        if self.stream is not None:
            self._end_stream_as_ws_did()
        if self.stream_failed:
            self._close_ws(StreamEnd.RESET, f"{self.stream_side} unreachable")
        elif StreamEnd.for_close(code) is StreamEnd.RESET or self.stream_done or self.to_ws.eof:
            self._close_ws(StreamEnd.FIN)  # the stream is over already: answer now
        elif self.ws is not None and self.ws.ws.close_reply_held and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.linger, self._linger_over)

    def end_ws_now(self) -> None:
        """Answer the peer's close now, without waiting for the stream (a server's drain)."""
        self._close_ws(StreamEnd.FIN)

    def _linger_over(self) -> None:
        self._linger = None
        self.lingered = True
        self._close_ws(StreamEnd.FIN)

    def ws_closed(self, code: int, error: PeerProtocolError | None) -> None:
        """The WebSocket connection is gone: end the stream as its close says."""
        self.ws_done = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self.ws_close is None:
            self._note_end(
                f"{self.ws_side} broke the protocol: {error}"
                if error is not None
                else f"{self.ws_side} dropped without a close frame"
            )
        if self.stream is not None:
            self._end_stream_as_ws_did()
            if not self.stream_done:
                self.stream.close()
        self._check_done()

    def ws_backed_up(self) -> None:
        """The WebSocket's transport holds unsent bytes: stop reading the stream."""
        self._sync_reading()

    def ws_drained(self) -> None:
        """The WebSocket's transport sent everything: read the stream again."""
        self._sync_reading()

    def _end_stream_as_ws_did(self) -> None:
        assert self.stream is not None
        if self.stream_done or self.to_stream.fin_sent:
            return
        if self.ws_close is None and not self.ws_done:
            return  # still open
        code = self.ws_close[0] if self.ws_close is not None else None
        if StreamEnd.for_close(code) is StreamEnd.FIN:
            self.to_stream.fin_sent = True
            self.stream.finish()
        else:
            self.to_stream.fin_sent = True
            self.to_stream.lost(self.stream.reset())

    # --- from the stream -----------------------------------------------------------------

    def stream_data(self, data: Buffer) -> None:
        """The stream sent bytes: one binary message."""
        n = len(data)
        self.to_ws.took(n)
        ws = self.ws
        if ws is None or not ws.can_send():
            return  # the WebSocket is closing: counted as received, not delivered
        ws.relay(data)
        self.to_ws.gave(n)

    def stream_eof(self) -> None:
        """The stream's writer is done (FIN): close the WebSocket with 1000."""
        self.to_ws.eof = True
        self._note_end(f"{self.stream_side} sent EOF")
        if self.ws_done and self.stream is not None:
            self.stream.close()
            return
        self._close_ws(StreamEnd.FIN)

    def stream_lost(self, exc: BaseException | None) -> None:
        """The stream is gone (``exc``: it was reset): close the WebSocket as that says."""
        self.stream_done = True
        if exc is not None:
            self._note_end(f"reset by {self.stream_side}")
            self._close_ws(StreamEnd.RESET, f"{self.stream_side} reset the connection")
        else:
            self._close_ws(StreamEnd.FIN)
        self._check_done()

    def stream_backed_up(self) -> None:
        """The stream holds unsent bytes: stop reading the WebSocket."""
        self._sync_reading()

    def stream_drained(self) -> None:
        """The stream sent everything: read the WebSocket again."""
        self._sync_reading()

    # --- both ----------------------------------------------------------------------------

    def _close_ws(self, end: StreamEnd, detail: str = "") -> None:
        # Our close frame: the reply to the peer's (held until now), or the first one.
        ws = self.ws
        if ws is None or ws.ws.close_sent is not None:
            return
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        frame = end.close_frame(detail)
        if ws.ws.close_reply_held:
            self.to_ws.fin_sent = True
            if end is StreamEnd.FIN:
                ws.ws.answer_close()  # the peer's code, echoed (5.5.1)
            else:
                ws.ws.answer_close(frame.code, frame.reason)
            ws.flush()
        elif ws.ws.state is _OPEN:
            self.to_ws.fin_sent = True
            ws.start_close(frame.code, frame.reason)

    def _sync_reading(self) -> None:
        # Each side reads only while the other has room: nothing piles up in memory.
        ws, stream = self.ws, self.stream
        if ws is not None:
            waiting = stream is None and not self.stream_failed
            if waiting or (stream is not None and stream.writing_paused):
                ws.pause_reading()
            else:
                ws.resume_reading()
        if stream is not None and not self.stream_done:
            if ws is None or ws.writing_paused:
                stream.pause_reading()
            else:
                stream.resume_reading()

    def _note_end(self, what: str) -> None:
        if self.record.end == "closed":  # the first thing that ended it
            self.record.end = what

    def _check_done(self) -> None:
        if self.ws_done and self.stream_done and not self._reported:
            self._reported = True
            self.on_done(self)

    def close_fields(self) -> dict[str, object]:
        """The ``closed`` event: the relay's fields, and the WebSocket close both ways."""
        fields: dict[str, object] = dict(self.record.as_dict())
        ws = self.ws
        fields["ws_close_received"] = self.ws_close[0] if self.ws_close else None
        fields["ws_close_sent"] = ws.ws.close_sent[0] if ws and ws.ws.close_sent else None
        return fields


class Switched(StreamProtocol):
    """Either side of a bridge: its reading is switched by the other side's state (flow
    control is the bridge's, not each transport's own)."""

    pause_reading_on_backpressure = False

    @property
    def writing_paused(self) -> bool:
        """True while our transport holds unsent bytes."""
        return self._write_paused

    def pause_reading(self) -> None:
        """Stop reading from the peer (the other side cannot take more now)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the peer again."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class BridgedWS(Switched, WebSocketConnection):
    """Mixed into a WebSocket connection whose messages go to a :class:`Bridge`."""

    bridge: Bridge | None = None

    def views_released(self) -> bool:
        # Messages are views of our buffer written to the stream: reuse it once it sent them.
        bridge = self.bridge
        stream = bridge.stream if bridge is not None else None
        return not self._write_paused and (stream is None or not stream.writing_paused)

    def can_send(self) -> bool:
        """True while messages may be sent: open, or the peer's close answered later."""
        proto = self.ws
        return (proto.state is _OPEN and proto.close_sent is None) or proto.close_reply_held

    def relay(self, data: Buffer) -> None:
        """Send ``data`` as a binary message (also while our close reply is held)."""
        self.ws.send_binary(data)
        self.messages_out += 1
        if not self._dispatching:
            self.flush()

    def on_message(self, message: Message) -> None:
        if self._timer is not None and self.ws.close_sent is not None and self.timeouts.close:
            # Our close waits for a peer that holds its reply while its stream still sends
            # (a bridge's half-close): the closing timeout counts from its last message.
            self._timer.cancel()
            self._timer = self._loop.call_later(self.timeouts.close, self._close_timed_out)
        if self.bridge is not None:
            self.bridge.ws_message(message.data)

    def on_close_received(self, code: int, reason: str) -> None:
        super().on_close_received(code, reason)
        if self.bridge is not None:
            self.bridge.ws_close_received(code, reason)

    def on_closed(self, code: int, reason: str, error: PeerProtocolError | None) -> None:
        super().on_closed(code, reason, error)
        if self.bridge is not None:
            self.bridge.ws_closed(code, error)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.bridge is not None:
            self.bridge.ws_backed_up()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.bridge is not None:
            stream = self.bridge.stream
            if isinstance(stream, StreamSide) and stream.views_released():
                stream.rbuf.release()
            self.bridge.ws_drained()


class StreamSide(Switched):
    """A TCP or Unix socket (plain or TLS) bridged to a WebSocket: a :class:`StreamPeer`."""

    _linger: asyncio.TimerHandle | None = None

    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge

    def data_ready(self) -> None:
        if self.bridge.ws is None:
            self.pause_reading()  # kept in the buffer until the WebSocket is open
            return
        self.bridge.stream_data(self.rbuf.take())

    def flush_held(self) -> None:
        """Send what arrived before the WebSocket was open."""
        if len(self.rbuf):
            self.bridge.stream_data(self.rbuf.take())
            if self.views_released():
                self.rbuf.release()

    def on_eof(self) -> bool | None:
        self.bridge.stream_eof()
        return True  # keep our side open: the WebSocket may still send

    def on_close(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        self.bridge.stream_lost(exc)

    def views_released(self) -> bool:
        # Our reads go out as messages on the WebSocket's transport, views of this buffer.
        ws = self.bridge.ws
        return not self._write_paused and (ws is None or not ws.writing_paused)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.bridge.stream_backed_up()

    def resume_writing(self) -> None:
        super().resume_writing()
        ws = self.bridge.ws
        if ws is not None and ws.views_released():
            ws.rbuf.release()
        self.bridge.stream_drained()

    # --- StreamPeer ------------------------------------------------------------------------

    def finish(self) -> None:
        """Shutdown write once the buffered bytes are sent (TLS: close_notify, then close)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                transport.abort()
        else:
            transport.close()

    def reset(self) -> int:
        """Abort with RST (as the relay resets); returns the bytes it discarded, buffered
        or still in the kernel's send queue (never sent)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return 0
        sock = transport.get_extra_info("socket")
        unsent = transport.get_write_buffer_size() + unsent_bytes(sock)
        force_rst(sock)
        transport.abort()
        return unsent

    def close(self) -> None:
        """Close once the peer sent its FIN too (or after the bridge's linger time)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.bridge.to_ws.eof or self.bridge.lingered:
            transport.close()
            return
        self.finish()
        self.resume_reading()  # read (and count as undelivered) until the peer's FIN
        if self._linger is None:
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(self.bridge.linger, transport.close)


class BridgeClient(BridgedWS, WebSocketClientConnection):
    """A WebSocket client connection bridged to a stream (``ws-client --listen``, stdio).

    Its bridge is known before it connects: messages that come with the server's 101
    answer already go to the stream.
    """

    def __init__(
        self,
        handshake: ClientHandshake,
        bridge: Bridge,
        *,
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
    ) -> None:
        super().__init__(handshake, max_size=max_size, timeouts=timeouts)
        self.bridge = bridge

    def new_protocol(self, handshake: object, max_size: int | None) -> ClientProtocol:
        assert isinstance(handshake, ClientHandshake)
        return BridgeClientProtocol(handshake, buffer=self.rbuf, max_size=max_size)


@dataclass(frozen=True)
class WSTarget:
    """The WebSocket URL a stream is bridged to, and how to open it.

    Attributes:
        handshake: the upgrade request (headers, subprotocols, compression).
        ssl_context, server_hostname: TLS for ``wss://``.
        open_timeout: one deadline for connecting, TLS and the upgrade.
        max_size: the largest message accepted.
    """

    url: WSURL
    handshake: ClientHandshake
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    open_timeout: float | None = 10.0
    max_size: int | None = 1 << 20
    timeouts: WSTimeouts = field(default_factory=WSTimeouts)

    async def dial(self, bridge: Bridge) -> BridgeClient:
        """Connect and upgrade, then attach the connection to ``bridge``.

        Raises:
            ConnectError, TLSError, OperationTimeout, UpgradeRefused ...: as
                :func:`~netkit.net.ws_client.connect_ws` does.
        """
        conn = await connect_ws(
            self.url,
            lambda: BridgeClient(
                self.handshake, bridge, max_size=self.max_size, timeouts=self.timeouts
            ),
            ssl_context=self.ssl_context,
            server_hostname=self.server_hostname,
            timeout=self.open_timeout,
            own_tls=True,  # pausing reading loses nothing when the server closes meanwhile
        )
        assert isinstance(conn, BridgeClient)
        bridge.attach_ws(conn)
        return conn

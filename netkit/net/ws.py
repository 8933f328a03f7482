"""The asyncio adapter around :mod:`netkit.core.ws`: it only moves bytes and runs timers.

One :class:`WebSocketConnection` per connection hands its pooled receive buffer to the
sans-I/O protocol (:class:`~netkit.core.ws.server.ServerProtocol` or
:class:`~netkit.core.ws.client.ClientProtocol`), which alone reads and consumes it: the
kernel writes into ``read_buffer()``, the opening handshake and the frames are the
protocol's, events come back (messages as memoryview slices of that same buffer), and what
the protocol wants sent is written as it says (``[header, payload]`` buffers, scatter-gather).
Pings in flight, the keepalive's and the application's, are one
:class:`~netkit.core.ws.pings.PingTracker`.

Timers are loop handles, not tasks, so ten thousand idle connections cost no coroutine each:
the opening-handshake timeout, the keepalive ping and its pong deadline, and the closing
handshake timeout.

Memory per idle connection: CPython (3.11-3.13) keeps an instance's attributes in a compact
values array shared-keyed with its class while the class's instances use at most 30
distinct attribute names; one name more and each instance carries a full dict (1.6 KiB
instead of 0.3 KiB for a ws-server connection). So what is set only in some lives (the
close frame, the ping tracker, a lingering close, a subprotocol) is a class default that an
instance overrides when it happens, what can be found elsewhere is a property (the loop, the
last round-trip time), and ``tests/net/test_ws_memory.py`` counts the names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from netkit.core.ws.events import (
    Accepted,
    CloseReceived,
    ConnectionClosed,
    Event,
    HandshakeResponse,
    HealthCheck,
    Message,
    Ping,
    Pong,
    Rejected,
)
from netkit.core.ws.frames import MAX_HEADER_SIZE, CloseCode
from netkit.core.ws.http import MAX_HEAD
from netkit.core.ws.pings import PingTracker
from netkit.core.ws.protocol import Protocol, State
from netkit.errors import (
    LocalProtocolError,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
)
from netkit.net.protocols import StreamProtocol
from netkit.net.zerocopy import Buffer

# As module constants: an Enum member looked up on its class costs 0.1 us (Python 3.11).
_CONNECTING, _OPEN, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSED


@dataclass(frozen=True)
class WSTimeouts:
    """Timers of a WebSocket connection, in seconds (None disables one).

    Defaults follow the websockets library: 10 s for each handshake, a ping every 20 s that
    must be answered within 20 s.
    """

    open: float | None = 10.0
    close: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0


class WebSocketConnection(StreamProtocol):
    """Common machinery of WebSocket clients and servers.

    Subclasses build the sans-I/O protocol (:meth:`new_protocol`), take the opening
    handshake's outcome (:meth:`on_handshake`) and then receive events through
    :meth:`on_open`, :meth:`on_message`, :meth:`on_ping`, :meth:`on_pong` and
    :meth:`on_closed`.

    Attributes:
        ws: the sans-I/O protocol.
        close_code, close_reason: what the peer's close frame said (1006 when there was none).
        messages_in, messages_out: counters.
    """

    # Set on an instance only when they happen (see the module docstring).
    _close: tuple[int, str] | None = None  # what the peer's close frame said
    _pings: PingTracker | None = None  # made by the first ping: most connections never send one
    _lingering = False  # an HTTP answer sent, half-closed, reading to the client's EOF
    _pong_deadline: asyncio.TimerHandle | None = None
    subprotocol: str | None = None

    def __init__(
        self,
        handshake: object,
        *,
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
    ) -> None:
        # The buffer must hold one whole frame (header included); no limit means up to 1 GiB.
        # And a whole request head, so that a large one is answered (431), never overflows:
        # frames cannot use the extra room, the parser refuses any over max_size first.
        frame = (max_size or (1 << 30)) + MAX_HEADER_SIZE
        super().__init__(max_buffer=max(frame, MAX_HEAD))
        self.ws = self.new_protocol(handshake, max_size)
        self.timeouts = timeouts
        self.messages_in = 0
        self.messages_out = 0
        self.resource = "/"
        self._timer: asyncio.TimerHandle | None = None
        self._ping_handle: asyncio.TimerHandle | None = None
        self._dispatching = False  # in _dispatch: it flushes once at the end

    @property
    def close_code(self) -> int | None:
        """The peer's close code (1006 when the connection closed without a close frame)."""
        return self._close[0] if self._close is not None else None

    @property
    def close_reason(self) -> str:
        """The reason in the peer's close frame ("" when there was none)."""
        return self._close[1] if self._close is not None else ""

    @property
    def last_rtt(self) -> float | None:
        """The round-trip time of the last ping answered (keepalive or :meth:`send_ping`)."""
        return self._pings.last_rtt if self._pings is not None else None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    @property
    def pings(self) -> PingTracker:
        """The pings in flight (keepalive and :meth:`send_ping`), made on first use."""
        if self._pings is None:
            self._pings = PingTracker()
        return self._pings

    def new_protocol(self, handshake: object, max_size: int | None) -> Protocol:
        """The sans-I/O protocol of this side for ``handshake`` (the server's policy, the
        client's request), reading from ``self.rbuf``."""
        raise NotImplementedError

    # --- bytes in -----------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        # Nothing may escape get_buffer: the loop would log a fatal error and reset the
        # connection (uvloop, asyncio). read_buffer only raises BufferFull; the rest is a guard.
        try:
            return self.ws.read_buffer()
        except NetkitError as exc:
            return self.overflow(exc)
        except Exception as exc:  # a bug: fail this connection, keep serving the others
            return self.overflow(LocalProtocolError(f"internal error reading: {exc!r}"))

    def buffer_updated(self, nbytes: int) -> None:
        if self.error is not None:
            return
        self.bytes_in += nbytes
        try:
            self.ws.commit(nbytes)  # the handshake, frames, or dropped after an HTTP answer
            self._dispatch()
        except NetkitError as exc:
            self.fail(exc)
            return
        except Exception as exc:  # a bug: as in get_buffer, never out to the loop
            self.fail(LocalProtocolError(f"internal error handling data: {exc!r}"))
            return
        if self.views_released() and not self.rbuf.release():
            # Part of a frame (or of the handshake) waits: a few bytes need not hold a chunk.
            self.rbuf.stash()

    def eof_received(self) -> bool | None:
        if self._lingering:
            return None  # the client has read our answer: close
        if self.ws.state is not _CLOSED:
            self.ws.receive_eof()
            self._dispatch()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self.ws.state is not _CLOSED:
            self.ws.receive_eof()
            self._dispatch()
        if self._pings is not None:
            self._pings.clear()
        super().connection_lost(exc)

    def linger_close(self) -> None:
        """Close after an HTTP answer, so that the peer reads it rather than a reset.

        Closing a socket with unread input sends RST, which can destroy the answer before the
        client reads it (a 431 to a large head). So half-close, let the protocol discard
        what still comes, and close on the client's EOF or after the closing timeout
        (nginx's lingering close).
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._cancel_timers()
        if not transport.can_write_eof():
            transport.close()  # TLS: close_notify, then close
            return
        if not self._half_close(transport):
            return
        self._lingering = True
        self._timer = self._loop.call_later(self.timeouts.close or 2.0, self._close_timed_out)

    def _half_close(self, transport: asyncio.Transport) -> bool:
        """Send our FIN and keep reading; False when the peer has already reset the connection.

        A client that reads part of an answer and closes resets the connection, and asyncio's
        ``write_eof`` then raises ENOTCONN. Nothing is left to read or report: close, as
        nginx's lingering close does when ``shutdown()`` fails.
        """
        try:
            transport.write_eof()
        except OSError:
            transport.abort()
            return False
        return True

    def _dispatch(self) -> None:
        # Replies sent while handling these events go out together in the flush at the end:
        # one write for every echo of a read.
        self._dispatching = True
        try:
            for event in self.ws.events_received():
                if type(event) is Message:
                    self.messages_in += 1
                    self.on_message(event)
                else:
                    self._dispatch_other(event)
        finally:
            self._dispatching = False
        self.flush()

    def _dispatch_other(self, event: Event) -> None:
        if isinstance(event, Ping):
            self.on_ping(event.payload)
        elif isinstance(event, Pong):
            self.pings.pong(event.payload, time.perf_counter())
            self.on_pong(event.payload)
        elif isinstance(event, CloseReceived):
            self._close = (event.code, event.reason)
            self.on_close_received(event.code, event.reason)
        elif isinstance(event, ConnectionClosed):
            if self._close is None:
                self._close = (event.code, event.reason)
            self.on_closed(event.code, event.reason, event.error)
        elif not isinstance(event, Message):
            self.on_handshake(event)

    # --- bytes out ----------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the protocol queued; close or arm the closing timeout as it says."""
        data = self.ws.data_to_send()
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # nowhere to send it
        if data:
            # As self.write(*data), without packing the list into arguments and back.
            self.bytes_out += sum(map(len, data))
            self._writelines(data)
        if self.ws.state is _OPEN:
            return  # nothing to close, no closing timeout to arm
        if self.ws.should_close_transport():
            self._cancel_timers()
            if self.ws.error is not None and transport.can_write_eof():
                # We failed the connection: half-close, so the peer reads our close frame
                # before the connection goes (closing with its data unread would send RST).
                if self._half_close(transport):
                    self._timer = self._loop.call_later(
                        self.timeouts.close or 2.0, self._close_timed_out
                    )
            else:
                transport.close()
        elif self.ws.close_expected() and self._timer is None and self.timeouts.close:
            self._timer = self._loop.call_later(self.timeouts.close, self._close_timed_out)

    def send_message(self, data: Buffer | str, *, text: bool | None = None) -> None:
        """Send one message: text for ``str`` (or ``text=True``), binary otherwise."""
        if self.ws.state is not _OPEN:
            return  # closing: RFC 6455 5.5.1 forbids data after a close frame
        if text if text is not None else isinstance(data, str):
            self.ws.send_text(data)
        else:
            assert not isinstance(data, str)
            self.ws.send_binary(data)
        self.messages_out += 1
        if not self._dispatching:  # else _dispatch flushes
            self.flush()

    def send_ping(
        self, payload: bytes = b"", answered: Callable[[float | None], None] | None = None
    ) -> bool:
        """Send a ping now (4 random bytes when ``payload`` is empty) and track it.

        Its pong sets :attr:`last_rtt` and calls ``answered`` with the round-trip time
        (with None if the connection closes first).

        Returns:
            False when no ping can be sent (not open, or closing): ``answered`` is not kept.
        """
        if self.ws.state is not _OPEN or self.ws.close_sent is not None:
            return False
        payload = payload or self.pings.new_payload()
        # perf_counter, not loop.time(): 1 ms under uvloop. The tracker keeps last_rtt.
        self.pings.sent(payload, time.perf_counter(), answered)
        self.ws.send_ping(payload)
        self.flush()
        return True

    def start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (no-op when already closing)."""
        if self.ws.state is _OPEN:
            self.ws.send_close(code, reason)
            self.flush()
        elif self.ws.state is _CONNECTING:
            self.abort()

    # --- timers -------------------------------------------------------------------------

    def on_connect(self) -> None:
        if self.timeouts.open:
            self._timer = self._loop.call_later(self.timeouts.open, self._open_timed_out)

    def _opened(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.timeouts.ping_interval:
            self._ping_handle = self._loop.call_later(self.timeouts.ping_interval, self._keepalive)
        self.on_open()

    def _open_timed_out(self) -> None:
        self._timer = None
        if self.ws.state is _CONNECTING:
            self.fail(OperationTimeout(f"opening handshake with {self.peer} timed out"))

    def _close_timed_out(self) -> None:
        self._timer = None
        self.abort()

    def _keepalive(self) -> None:
        self._ping_handle = None
        if self.ws.state is not _OPEN:
            return
        # One keepalive ping in flight at a time.
        if (
            self._pong_deadline is None
            and self.send_ping(answered=self._keepalive_answered)
            and self.timeouts.ping_timeout
        ):
            self._pong_deadline = self._loop.call_later(
                self.timeouts.ping_timeout, self._pong_missed
            )
        if self.timeouts.ping_interval:
            self._ping_handle = self._loop.call_later(self.timeouts.ping_interval, self._keepalive)

    def _keepalive_answered(self, rtt: float | None) -> None:
        if rtt is None:
            return  # closed before the pong came
        if self._pong_deadline is not None:
            self._pong_deadline.cancel()
            self._pong_deadline = None
        self.on_keepalive_pong(rtt)

    def _pong_missed(self) -> None:
        self._pong_deadline = None
        if self.ws.state is _OPEN:
            # 1011: the peer is unresponsive (RFC 6455 7.4.1). It is presumed dead, so the
            # close frame is sent and the connection dropped without waiting for a reply.
            self.ws.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self.flush()
            self.error = OperationTimeout(f"no pong from {self.peer} in time")
            if self.transport is not None:
                self.transport.close()

    def _cancel_timers(self) -> None:
        for handle in (self._timer, self._ping_handle, self._pong_deadline):
            if handle is not None:
                handle.cancel()
        self._timer = self._ping_handle = self._pong_deadline = None

    # --- events for subclasses ----------------------------------------------------------

    def on_handshake(self, event: Accepted | HealthCheck | Rejected | HandshakeResponse) -> None:
        """The opening handshake's outcome (the protocol queued any answer to send)."""

    def on_open(self) -> None:
        """The opening handshake succeeded."""

    def on_message(self, message: Message) -> None:
        """A message arrived. ``message.data`` is valid only during this call."""

    def on_ping(self, payload: Buffer) -> None:
        """A ping arrived (the protocol already answered it)."""

    def on_pong(self, payload: Buffer) -> None:
        """A pong arrived (after the ping it answers, if any, had its round-trip time)."""

    def on_keepalive_pong(self, rtt: float) -> None:
        """A pong answered our keepalive ping, ``rtt`` seconds after it was sent."""

    def on_close_received(self, code: int, reason: str) -> None:
        """The peer's close frame arrived (the TCP connection may stay open a while)."""

    def on_closed(self, code: int, reason: str, error: PeerProtocolError | None) -> None:
        """The connection is closed (code 1006 when no close frame was received)."""

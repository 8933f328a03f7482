"""``ws-server --chaos``: a server connection that applies a chaos plan to its client.

:class:`ChaosConnection` is a :class:`~netkit.net.ws_server.ModeConnection` (echo,
broadcast or sink as usual) whose :class:`~netkit.core.ws.chaos.ConnectionChaos` decides
what goes wrong: it writes the plan's frames in place of a message (fragments, interleaved
pings, an oversized frame), answers pings late or never, stops reading for a while, and
resets or half-closes the TCP connection without a close frame. Each fault applied is
logged as a ``fault`` event. Servers without ``--chaos`` never use this class: their
connections are untouched.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from netkit.core.ws.chaos import ChaosFault, ConnectionChaos, Cut
from netkit.core.ws.events import Message
from netkit.core.ws.protocol import State
from netkit.core.ws.server import ServerHandshake
from netkit.net.sockets import force_rst
from netkit.net.ws import WSTimeouts
from netkit.net.ws_server import ModeConnection
from netkit.net.zerocopy import Buffer


class ChaosConnection(ModeConnection):
    """A :class:`ModeConnection` that applies the chaos faults drawn for it.

    Args:
        chaos: the faults to draw from.
        seed: the server's seed.
        numbers: gives each connection its number when its opening handshake completes
            (1 for the first; the draws depend on it), shared by the server's connections.
        (the rest): as :class:`ModeConnection`; ``log`` receives the ``fault`` events.
    """

    _hung_up = False  # our FIN is sent: nothing more goes out
    _slow_read: asyncio.TimerHandle | None = None  # resumes reading after a slow-read pause

    def __init__(
        self,
        handshake: ServerHandshake,
        *,
        chaos: Sequence[ChaosFault],
        seed: int,
        numbers: Callable[[], int],
        log: Callable[[str, dict[str, Any]], None] | None,
        timeouts: WSTimeouts,
        **options: Any,
    ) -> None:
        super().__init__(handshake, log=log, timeouts=timeouts, **options)
        self._plan = (chaos, seed, numbers)
        self.chaos = ConnectionChaos((), seed, 0)  # the real one is drawn at on_open
        self.ws.auto_pong = False  # pongs are the plan's to answer, late or never
        self._handles: set[asyncio.TimerHandle] = set()

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        handle: asyncio.TimerHandle

        def run() -> None:
            self._handles.discard(handle)
            callback()

        handle = self._loop.call_later(delay, run)
        self._handles.add(handle)

    def _report(self) -> None:
        for fields in self.chaos.take_events():
            if self.log is not None:
                self.log("fault", {"peer": self.peer, **fields})

    # --- the opening and the cuts --------------------------------------------------------

    def on_open(self) -> None:
        chaos, seed, numbers = self._plan
        self.chaos = ConnectionChaos(chaos, seed, numbers())
        super().on_open()
        for cut in self.chaos.opened():
            if cut.delay:
                self._later(cut.delay, functools.partial(self._cut_after_delay, cut))
            else:
                self._loop.call_soon(self._cut_after_delay, cut)

    def _cut_after_delay(self, cut: Cut) -> None:
        if self.ws.state is State.OPEN and self.chaos.cuts and not self._hung_up:
            self.chaos.cut_fired(cut)
            self._cut(cut)

    def _cut(self, cut: Cut) -> None:
        self._report()
        transport = self.transport
        self._hung_up = True  # from now on nothing goes out, nothing is answered
        if transport is None or transport.is_closing():
            return
        # What was queued before the fault goes out first; a close reply the protocol
        # deferred behind it does not: the point is a connection without a closing handshake.
        pending = self.ws.queued_output()
        if pending:
            self.bytes_out += sum(map(len, pending))
            self._writelines(pending)
        if cut.resets:
            force_rst(transport.get_extra_info("socket"))
            transport.abort()
        elif transport.can_write_eof() and self._half_close(transport):
            # Read on until the client closes (it sees EOF, no close frame: 1006), so that
            # what it still sends is not answered with RST; abort if it never does.
            self._later(self.timeouts.close or 2.0, self.abort)
        else:
            transport.close()

    def flush(self) -> None:
        if self._hung_up:
            self.ws.data_to_send()  # after our FIN nothing more goes out
            if self.ws.state is State.CLOSED and self.transport is not None:
                self.transport.close()
            return
        super().flush()

    # --- messages in and out ------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        if self._hung_up:
            return
        cut, pause = self.chaos.message_received()
        if cut is not None:
            self._cut(cut)
            return
        if pause:
            self._pause_reading(pause)
        self._report()
        super().on_message(message)

    def _pause_reading(self, pause: float) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        running = self._slow_read
        if running is not None:
            if running.when() >= self._loop.time() + pause:
                return  # the pause under way lasts longer
            running.cancel()
        transport.pause_reading()
        self._slow_read = self._loop.call_later(pause, self._resume_reading)

    def _resume_reading(self) -> None:
        self._slow_read = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not (self._write_paused and self.pause_reading_on_backpressure):
            transport.resume_reading()  # else resume_writing resumes it

    def resume_writing(self) -> None:
        super().resume_writing()
        transport = self.transport
        if self._slow_read is not None and transport is not None and not transport.is_closing():
            transport.pause_reading()  # a slow read still runs: the drain must not end it

    def send_message(self, data: Buffer | str, *, text: bool | None = None) -> None:
        if self._hung_up or self.ws.state is not State.OPEN:
            return
        is_text = text if text is not None else isinstance(data, str)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        outgoing = self.chaos.message_sent(payload, is_text)
        self._report()
        if not outgoing.frames:
            super().send_message(payload, text=is_text)
            return
        now = time.perf_counter()
        for ping in outgoing.pings:
            self.pings.sent(ping, now)
        self.ws.send_frames(outgoing.frames)
        self.messages_out += 1
        if not self._dispatching:  # else _dispatch flushes
            self.flush()

    # --- pings ----------------------------------------------------------------------------

    def on_ping(self, payload: Buffer) -> None:
        super().on_ping(payload)
        if self._hung_up:
            return
        delay = self.chaos.ping_received()
        self._report()
        if delay is None:
            return
        answer = bytes(payload)
        if delay:
            self._later(delay, lambda: self._pong(answer))
        else:
            self._pong(answer)

    def _pong(self, payload: bytes) -> None:
        # 5.5.2: a pong answers a ping, unless our close frame went first.
        if self.ws.state is State.OPEN and self.ws.close_sent is None and not self._hung_up:
            self.ws.send_pong(payload)
            if not self._dispatching:
                self.flush()

    def on_close(self, exc: Exception | None) -> None:
        for handle in (*self._handles, self._slow_read):
            if handle is not None:
                handle.cancel()
        self._handles.clear()
        self._slow_read = None
        super().on_close(exc)

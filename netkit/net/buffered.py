"""The buffered path of the relay: two asyncio transports (TLS, data faults, no splice).

Each side is a zero-copy :class:`~netkit.net.protocols.StreamProtocol` that writes views of
its receive buffer to the other side's transport; with data faults it holds copies instead,
released by one timer per direction on the schedule its :class:`~netkit.core.flow.Flow`
keeps, in arrival order. A side stops reading while the other cannot take more, or while its
held bytes pass :data:`FAULT_HIGH_WATER`. A FIN becomes ``write_eof`` on the other side once
its held bytes are out; a TLS side that cannot half-close is kept open and read until it
closes, so its reply is never cut. What a transport still buffered, or the kernel had not
sent, when a connection was reset is counted as undelivered.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable

from netkit.core.faults import BlackholeAfter, ConnectionFaults, Fault, ResetAfter
from netkit.core.flow import Flow, RelayRecord
from netkit.net.protocols import StreamProtocol
from netkit.net.sockets import force_rst, unsent_bytes

FAULT_HIGH_WATER = 1 << 20  # bytes held back by faults before the source is paused
PRECISE = 0.001
"""Seconds before a held piece is due when the relay stops waiting on a loop timer and waits
out the rest one loop iteration at a time (call_soon). Loop timers fire in whole
milliseconds (uvloop's clock, epoll's timeout): a timer alone let bytes out 1-2 ms after
their due time (a 100 ms latency toxic measured 101.9-103.0 ms at p99 on a quiet machine);
with this, 101.2-101.8 ms. The cost: up to a millisecond of loop iterations per release."""


class RelaySide(StreamProtocol):
    """One side of a buffered relay: what it reads moves along :attr:`flow` to :attr:`other`."""

    pause_reading_on_backpressure = False  # the other side's backpressure pauses us

    def __init__(self, relay: BufferedRelay, flow: Flow) -> None:
        super().__init__()
        self.relay, self.flow = relay, flow
        self.other: RelaySide | None = None
        self.release_timer: asyncio.Handle | None = None
        self.unsent = 0  # bytes our transport held after the last write (not yet in the kernel)
        self.was_reset = False
        self.preface = b""  # bytes for our peer before any other (see BufferedRelay.take_over)

    def views_released(self) -> bool:
        return self.other is None or not self.other._write_paused

    def data_ready(self) -> None:
        other = self.other
        if other is None or other.transport is None:
            # The other side is still connecting: keep the bytes, stop reading until it is up.
            if self.transport is not None:
                self.transport.pause_reading()
            return
        view = self.rbuf.view()
        n = len(view)
        flow = self.flow
        flow.took(n)
        if flow.blackholed:
            pass  # swallowed: counted as received, never delivered
        elif flow.shapes_data or flow.held:
            # Held for later (a copy); or bytes are still held from faults since removed,
            # and these must follow them.
            self._hold(bytes(view))
        elif other._write_paused:
            # Read although the other side cannot take more (a pause made in connection_made,
            # which uvloop undoes; a large preface): a view would be queued, and overwritten
            # by the next read before it is sent. A copy, and no more reading for now.
            self.deliver(bytes(view))
            if self.transport is not None:
                self.transport.pause_reading()
        else:
            self.deliver(view)
        self.rbuf.consume(n)

    def deliver(self, data: bytes | memoryview) -> None:
        """Pass bytes to the other side, as far as the flow's byte limits allow."""
        other, flow = self.other, self.flow
        assert other is not None and other.transport is not None
        data = flow.allowance(data)
        if data and other.take(data):
            flow.gave(len(data))
        ending = flow.ending()
        if ending is not None:
            self.relay.fault_end(ending)

    def take(self, data: bytes | memoryview) -> bool:
        """Write bytes from the other side; False when our transport could not take them."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False  # a closing transport drops writes silently
        self.write(data)
        if transport.is_closing():
            return False  # the write failed: the peer is gone (connection_lost follows)
        self.unsent = transport.get_write_buffer_size()
        return True

    def _hold(self, data: bytes) -> None:
        # Due times are on time.perf_counter(), not loop.time(): uvloop's clock is read once
        # per loop iteration and in whole milliseconds, so bytes planned from it went out up
        # to a few milliseconds before their latency was over.
        self.flow.hold(data, time.perf_counter(), self.relay.rng)
        if self.flow.held >= FAULT_HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._arm_release()

    def rearm(self) -> None:
        """The held bytes were planned again: wait for the new first due time."""
        if self.release_timer is not None:
            self.release_timer.cancel()
            self.release_timer = None
        self._arm_release()

    def _arm_release(self) -> None:
        due = self.flow.next_due
        if self.release_timer is None and due is not None:
            # perf_counter: see _hold. Never early: the last stretch is waited out (PRECISE).
            delay = due - time.perf_counter()
            loop = self.relay.loop
            if delay > PRECISE:
                self.release_timer = loop.call_later(delay - PRECISE, self._release)
            else:
                self.release_timer = loop.call_soon(self._release)

    def _release(self) -> None:
        # Deliver every piece that is due, oldest first, then wait for the next one.
        self.release_timer = None
        other = self.other
        # A timer may fire before its time (uvloop rounds to milliseconds): then nothing is
        # due yet and the timer is armed again for what is left.
        for piece in self.flow.due(time.perf_counter()):
            if self.relay.done.done() or other is None or other.transport is None:
                continue
            if not other.transport.is_closing():
                self.deliver(piece)
        self._arm_release()
        transport = self.transport
        if (
            self.flow.held < FAULT_HIGH_WATER // 4
            and transport is not None
            and not transport.is_closing()
            and (other is None or not other._write_paused)
        ):
            transport.resume_reading()
        if self.flow.eof and not self.flow.held:
            self.relay.propagate_eof(self)

    def reset(self) -> None:
        """RST our peer; what it never got is withdrawn from the delivered count."""
        transport = self.transport
        if transport is None or self.was_reset or self.closed.done():
            return
        self.was_reset = True
        sock = transport.get_extra_info("socket")
        self.unsent = transport.get_write_buffer_size() + unsent_bytes(sock)
        force_rst(sock)
        transport.abort()

    def stop_release(self) -> None:
        """Cancel the release timer (the relay is over)."""
        if self.release_timer is not None:
            self.release_timer.cancel()

    def on_connect(self) -> None:
        other = self.other
        if self.preface and other is not None:
            # Bytes a splice pipe held when the relay moved to this path: they came first.
            preface, self.preface = self.preface, b""
            if self.take(preface):
                other.flow.gave(len(preface), held=True)
        if other is not None and other.transport is not None:
            if len(other.rbuf):
                other.data_ready()  # what arrived while we were connecting
            if not self._write_paused:
                other.transport.resume_reading()
        if other is not None and other._write_paused and self.transport is not None:
            # Our bytes have nowhere to go yet (the other side still sends its preface): wait,
            # after uvloop starts reading, which it does right after connection_made.
            self.transport.pause_reading()
            self.relay.loop.call_soon(self._pause_while_blocked)

    def _pause_while_blocked(self) -> None:
        other, transport = self.other, self.transport
        blocked = other is not None and other._write_paused
        if blocked and transport is not None and not transport.is_closing():
            transport.pause_reading()

    def on_eof(self) -> bool | None:
        self.flow.eof = True
        if not self.flow.held:
            self.relay.propagate_eof(self)  # else: once its held bytes are out
        return True  # keep our write side open: the other direction may still flow

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()  # the other side's bytes have nowhere to go

    def resume_writing(self) -> None:
        super().resume_writing()
        self.unsent = 0
        other = self.other
        if other is not None and other.transport is not None and not other.transport.is_closing():
            other.rbuf.release()
            if other.flow.held < FAULT_HIGH_WATER:
                other.transport.resume_reading()

    def on_close(self, exc: Exception | None) -> None:
        if (exc is not None or self.was_reset) and self.unsent and self.other is not None:
            # Lost with the connection: the other side's bytes never reached our peer.
            self.other.flow.lost(self.unsent)
            self.unsent = 0
        self.relay.side_closed(self, exc)


class BufferedRelay:
    """Relays two asyncio transports (TLS, faults, or no splice).

    The server connects :attr:`client` and :attr:`upstream` (protocol factories' results) to
    their transports, then calls :meth:`start`. The faults may change while it relays
    (:meth:`update`).

    Args:
        record: where the bytes are counted (its flows) and the end reason is written.
        faults: the connection's faults.
        rng: the server's seeded RNG (jitter).
        began: when relaying began (``time.perf_counter()``), for a relay that takes over
            from a splice relay; time-based faults count from it. By default, :meth:`start`.
        created: when the connection's relay was set up (the idle timer counts from it).
    """

    def __init__(
        self,
        record: RelayRecord,
        faults: ConnectionFaults,
        rng: random.Random,
        *,
        began: float | None = None,
        created: float | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.record, self.faults, self.rng = record, faults, rng
        if faults.touches_data:
            record.up.plan, record.down.plan = faults.directions["up"], faults.directions["down"]
        self.client = RelaySide(self, record.up)
        self.upstream = RelaySide(self, record.down)
        self.client.other, self.upstream.other = self.upstream, self.client
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.created = self.loop.time() if created is None else created
        self.began = began
        self._timers: list[asyncio.TimerHandle] = []
        record.path = "buffered"

    @property
    def sides(self) -> tuple[RelaySide, RelaySide]:
        """(client, upstream)."""
        return self.client, self.upstream

    @property
    def relaying(self) -> bool:
        """True once started (both transports up)."""
        return self.began is not None

    @property
    def age(self) -> float:
        """Seconds since relaying began (0 before :meth:`start`)."""
        return 0.0 if self.began is None else time.perf_counter() - self.began

    def start(self) -> None:
        """Both transports are connected: arm time-based faults."""
        if self.began is None:
            self.began = time.perf_counter()
        self._arm_timers()
        for side in self.sides:
            if side.flow.eof and not side.flow.fin_sent and not side.flow.held:
                self.propagate_eof(side)  # a FIN the splice relay had not passed on yet

    def _arm_timers(self) -> None:
        # Time-based faults, counted from when relaying began.
        f, age = self.faults, self.age
        if f.reset_after_s is not None:
            self._at(f.reset_after_s - age, self.fault_end, ResetAfter)
        for flow in self.record.flows:
            plan = flow.plan
            flow.blackholed = False
            if plan is None or plan.blackhole_after is None:
                continue
            if plan.blackhole_after <= age:
                flow.blackholed = True
            else:
                self._at(plan.blackhole_after - age, setattr, flow, "blackholed", True)
            if plan.blackhole_close_after:
                # toxiproxy's timeout toxic: swallow, then close after a while.
                closing = plan.blackhole_after + plan.blackhole_close_after
                self._at(closing - age, self.fault_end, BlackholeAfter)

    def _at(self, delay: float, callback: Callable[..., object], *args: object) -> None:
        self._timers.append(self.loop.call_later(max(delay, 0.0), callback, *args))

    def update(self, faults: ConnectionFaults) -> None:
        """The connection's faults changed: apply them from now on.

        Held bytes are planned again under the new faults, in the order they came (a delay
        removed releases them at once); byte limits and time-based faults are re-armed.
        """
        if self.done.done():
            return
        self.faults = faults
        for side in self.sides:
            if side.flow.replan(faults.directions[side.flow.name], self.rng):
                side.rearm()
        if self.began is None:
            return  # not relaying yet: start() arms what the new faults need
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._arm_timers()
        for flow in self.record.flows:
            ending = flow.ending()
            if ending is not None:
                self.fault_end(ending)

    def propagate_eof(self, side: RelaySide) -> None:
        """A side's FIN and all its held bytes are through: pass the FIN on."""
        other = side.other
        if other is None or other.transport is None or other.transport.is_closing():
            return
        if side.flow.fin_sent:
            return  # passed on before this relay took over from a splice relay

        def shutdown() -> None:
            assert other is not None and other.transport is not None
            if other.transport.is_closing() or side.flow.fin_sent:
                return
            side.flow.fin_sent = True
            if other.transport.can_write_eof():
                other.transport.write_eof()  # TLS: close_notify, and the other way stays open
            # else: a transport that cannot half-close; closing it would cut the reply still
            # coming back, so keep it open and reading until that side closes.
            if self.record.up.eof and self.record.down.eof:
                self.close_both()

        delay = self.faults.directions[side.flow.name].slow_close
        if delay:
            self.loop.call_later(delay, shutdown)
        else:
            shutdown()

    def fault_end(self, fault: type[Fault]) -> None:
        """A data fault ends the connection: RST both sides, or close them gracefully."""
        if self.done.done():
            return
        self.record.end = f"fault: {fault.end_reason}"
        for side in self.sides:
            if side.transport is not None:
                if fault.resets:
                    side.reset()
                else:
                    side.transport.close()

    def close_both(self) -> None:
        """Close both transports after flushing."""
        for side in self.sides:
            if side.transport is not None:
                side.transport.close()

    def close(self, reason: str) -> None:
        """End now with a FIN on both sides; a side with bytes it cannot flush gets an RST."""
        if self.record.end == "closed":
            self.record.end = reason
        for side in self.sides:
            transport = side.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size():
                side.reset()  # counts what it could not flush as undelivered
            else:
                transport.close()

    def abort(self, reason: str) -> None:
        """End now with RST on both sides."""
        if self.record.end == "closed":
            self.record.end = reason
        for side in self.sides:
            side.reset()

    def side_closed(self, side: RelaySide, exc: Exception | None) -> None:
        """A transport is gone: finish the other one (RST if this one was reset)."""
        if exc is not None and self.record.end == "closed":
            who = "client" if side.flow.up else "upstream"
            if isinstance(exc, ssl.SSLError):
                # A record that failed to decrypt or verify: the stream was cut, say how.
                self.record.end = f"TLS error from {who}: {exc.reason or exc}"
            else:
                self.record.end = f"reset by {who}"
        other = side.other
        if other is not None and other.transport is not None and not other.transport.is_closing():
            if exc is not None:
                other.reset()
            elif not side.flow.held:
                other.transport.close()
        if all(s.closed.done() or s is side for s in self.sides):
            for timer in self._timers:
                timer.cancel()
            for each in self.sides:
                each.stop_release()
            if not self.done.done():
                self.done.set_result(None)

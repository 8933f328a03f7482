"""The UDP relay behind ``netkit proxy udp://LISTEN udp://UPSTREAM``.

:class:`UDPRelayServer` is a :class:`~netkit.net.server.Server` (the lifecycle every server
shares: cap, track, drain, stats), whose "connections" are *flows*: a flow is one client
address, and gets its own upstream socket, connected to the upstream, as nginx stream and
``socat UDP-LISTEN,fork`` do, so that each reply goes back to the client that caused it. A
flow opens with its client's first datagram and closes when it has been idle for the idle
timeout (both ways silent); flows beyond the cap are turned away, and counted.

Datagrams pass whole: one ``recvfrom_into`` into a buffer larger than any UDP payload, one
``send`` of a view of it, never merged or split. A flow's faults
(:mod:`netkit.core.datagram_faults`) are drawn when it opens; a direction without faults
passes datagrams on at once, without copying them; a direction with faults goes through its
:class:`~netkit.core.datagram_schedule.DatagramSchedule`, which says what to drop, change or
hold, and a timer releases held datagrams when they are due. Every injected fault is an event.

The drain: no new flows; each open flow closes once it has been quiet (nothing sent either way,
nothing held) for :attr:`UDPRelayOptions.drain_quiet` seconds, so that a reply still on its
way gets through; flows still open at the drain timeout are cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from netkit.core.access import DeniedSources
from netkit.core.addresses import UDPEndpoint
from netkit.core.datagram_faults import DATAGRAM_FAULTS, HOLD_BYTES
from netkit.core.datagram_schedule import (
    DatagramSchedule,
    FlowFaults,
    HoldBudget,
    draw_flow,
)
from netkit.core.fault_set import FaultChange, FaultSet
from netkit.core.faults import Fault
from netkit.errors import ResourceExhausted
from netkit.net.datagram import BATCH
from netkit.net.idle import IdleTimer
from netkit.net.server import EventHook, Server, ServerStats
from netkit.net.sockets import OUT_OF_RESOURCES, create_udp_socket, describe

MAX_FLOWS = 1024
"""Flows a UDP relay keeps open at once unless told otherwise (``--max-connections``)."""
DRAIN_QUIET = 1.0
"""Seconds a flow must be quiet, during the drain, before it closes."""
RECEIVE_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF asked for the relay's sockets (the kernel caps it at ``net.core.rmem_max``):
room for a few milliseconds of datagrams at full rate while the relay is not scheduled; the
kernel's default (208 KiB) holds about 2 ms of 64-byte datagrams at 80,000/s."""
# Larger than any UDP payload (IPv4 65,507, IPv6 65,527 bytes): a datagram is never cut.
_RECV_BUFFER = 65536


def resolve_upstream(endpoint: UDPEndpoint) -> tuple[int, tuple[Any, ...]]:
    """The upstream's address family and address, resolved once for every flow.

    Raises:
        ConnectError: the host does not resolve.
    """
    probe, address = create_udp_socket(endpoint, bind=False)
    probe.close()
    return probe.family, address


@dataclass
class UDPRelayOptions:
    """How a :class:`UDPRelayServer` relays.

    Attributes:
        idle_timeout: close a flow silent both ways this long (seconds), or None (never).
        faults: the datagram faults drawn per flow: a list, or a
            :class:`~netkit.core.fault_set.FaultSet` the caller keeps changing.
        seed: seed of every fault draw; None picks one (reported, so a run can be repeated).
        hold_bytes: bytes every flow together may hold (delayed, queued) at once.
        drain_quiet: during the drain, a flow closes once quiet this long (seconds).
    """

    idle_timeout: float | None = 600.0
    faults: list[Fault] | FaultSet = field(default_factory=list)
    seed: int | None = None
    hold_bytes: int = HOLD_BYTES
    drain_quiet: float = DRAIN_QUIET


@dataclass
class UDPRelayStats(ServerStats):
    """A UDP relay's totals: flows, datagrams and bytes each way, faults and drops."""

    datagrams_up: int = 0
    datagrams_down: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    faults: int = 0
    dropped: int = 0
    send_failed: int = 0
    upstream_refused: int = 0

    def count(self, flow: Flow) -> None:
        """Add what ``flow`` passed to the totals (when it closes)."""
        self.datagrams_up += flow.up.sent
        self.datagrams_down += flow.down.sent
        self.bytes_up += flow.up.bytes_sent
        self.bytes_down += flow.down.bytes_sent

    def with_open(self, flows: Iterable[Flow]) -> UDPRelayStats:
        """A copy of these totals with what the open ``flows`` passed so far added."""
        totals = replace(self)
        for flow in flows:
            totals.count(flow)
        return totals

    SUMMARY = (
        ("flows", "accepted"),
        ("rejected", "rejected"),
        ("peak_flows", "peak"),
        ("datagrams_up", "datagrams_up"),
        ("datagrams_down", "datagrams_down"),
        ("bytes_up", "bytes_up"),
        ("bytes_down", "bytes_down"),
        ("faults_injected", "faults"),
        ("dropped_by_faults", "dropped"),
        ("send_failed", "send_failed"),
        ("upstream_refused", "upstream_refused"),
        ("uptime_s", "uptime"),
        ("cut_at_drain", "aborted_at_drain"),
    )


@dataclass
class FlowCounts:
    """One direction of one flow: datagrams and bytes received, and those sent on."""

    received: int = 0
    sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0


class Flow:
    """One client of a UDP relay: its address, its upstream socket, counters and faults."""

    def __init__(self, fid: int, client: tuple[Any, ...], sock: socket.socket) -> None:
        self.id = fid
        self.client = client
        self.peer = describe(client)
        self.sock = sock
        self.up = FlowCounts()
        self.down = FlowCounts()
        self.faults = FlowFaults()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.idle: IdleTimer | None = None
        self.started = time.perf_counter()
        self.refused = False  # the upstream answered with ICMP port unreachable
        self.closed = False

    def counts(self, direction: str) -> FlowCounts:
        """The counters of ``up`` (client -> upstream) or ``down``."""
        return self.up if direction == "up" else self.down

    def touch(self) -> None:
        """A datagram passed: the flow is not idle."""
        if self.idle is not None:
            self.idle.touch()

    @property
    def held(self) -> int:
        """Datagrams its faults hold now."""
        return sum(s.pending for s in self.faults.directions.values() if s is not None)

    def as_dict(self) -> dict[str, Any]:
        """The counters, as the ``flow_closed`` event reports them."""
        return {
            "id": self.id,
            "client": self.peer,
            "datagrams_up": self.up.sent,
            "datagrams_down": self.down.sent,
            "bytes_up": self.up.bytes_sent,
            "bytes_down": self.down.bytes_sent,
            "received_up": self.up.received,
            "received_down": self.down.received,
            "duration_s": round(time.perf_counter() - self.started, 6),
        }


class UDPRelayServer(Server):
    """Relays datagrams between the clients of ``sock`` and ``upstream``, a flow per client.

    With allow/deny lists (:meth:`restrict`), a datagram from a denied source opens no flow and
    is dropped unanswered: each is counted (``stats.denied`` counts datagrams), each source is
    reported once (``denied``).

    Args:
        sock: the bound, non-blocking UDP socket clients send to.
        upstream: the upstream's resolved address, and its family.
        options: idle timeout, faults, seed.
        max_flows: flows open at once; a datagram from a new client beyond this is dropped and
            counted (``rejected``, one event each time the table fills).
        on_event: receives (event, fields): ``flow_opened``, ``fault`` (a flow's faults),
            ``datagram_fault`` (each one injected), ``flow_closed``, ``rejected``, ``denied``,
            ``upstream_refused``, and each change of :attr:`faults`.

    Attributes:
        faults: the named faults, changeable while the relay runs; a change applies to every
            open flow at once (datagrams they hold go on at once) and to new flows.
        seed: the seed every fault draw comes from (the one given, or the one picked).
    """

    PEER_FIELD = "client"
    stats: UDPRelayStats
    connections: dict[Hashable, Flow]

    def __init__(
        self,
        sock: socket.socket,
        upstream: tuple[int, tuple[Any, ...]],
        options: UDPRelayOptions,
        *,
        max_flows: int = MAX_FLOWS,
        on_event: EventHook | None = None,
    ) -> None:
        # A UDP socket has nothing to accept: the base's acceptor is never started, and the
        # socket keeps carrying replies while the relay drains (stop_accepting, below).
        super().__init__(sock, UDPRelayStats(), max_connections=max_flows, on_event=on_event)
        self.family, self.upstream = upstream
        self.options = options
        faults = options.faults
        self.faults = faults if isinstance(faults, FaultSet) else FaultSet(faults)
        self.faults.serve("udp")  # a fault that cannot apply here is refused, never ignored
        self._unsubscribe = self.faults.subscribe(self._faults_changed)
        self.seed: int = (
            options.seed if options.seed is not None else random.SystemRandom().getrandbits(32)
        )
        self.budget = HoldBudget(options.hold_bytes)
        self.loop = asyncio.get_running_loop()
        self._buf = bytearray(_RECV_BUFFER)
        self._view = memoryview(self._buf)
        self._own: tuple[Any, ...] = sock.getsockname()
        self._flows = 0
        self._reading = False
        self._turning_away = False  # a "rejected" event was sent; the next waits for room
        self._denied = DeniedSources()

    # --- the lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start reading datagrams from clients."""
        if not self._reading and self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._from_clients)
            self._reading = True

    def stop_accepting(self) -> None:
        """No new flows from now on; open flows go on (their replies use the socket)."""
        self.draining = True

    def begin_drain(self) -> None:
        for flow in list(self.connections.values()):
            self._quiet_then_close(flow)

    async def cut(self) -> int:
        remaining = list(self.connections.values())
        for flow in remaining:
            self._close(flow, "drain timeout")
        return len(remaining)

    async def close(self) -> None:
        """Close every flow and the socket."""
        self._unsubscribe()
        for flow in list(self.connections.values()):
            self._close(flow, "closed")
        if self._reading:
            self.loop.remove_reader(self.sock.fileno())
            self._reading = False
        self.sock.close()

    # --- flows ----------------------------------------------------------------------------

    def _open(self, client: tuple[Any, ...]) -> Flow | None:
        # A new flow for `client`, or None when it is turned away (reported once per episode).
        if self.access and not self.access.check(client[0]).allowed:
            self._deny(client)
            return None
        if self._from_itself(client):
            # A datagram forged to come from the relay itself: its replies would come back
            # in as new requests, relayed to the upstream and back for ever.
            self.stats.rejected += 1
            self.emit("rejected", {"client": describe(client), "reason": "from the relay itself"})
            return None
        if self.draining or self.full:
            self.stats.rejected += 1
            if not self._turning_away:
                self._turning_away = True
                reason = "shutting down" if self.draining else f"at {self.max_connections} flows"
                self.emit("rejected", {"client": describe(client), "reason": reason})
            return None
        try:
            sock = self._upstream_socket()
        except (ResourceExhausted, OSError) as exc:
            self.stats.rejected += 1
            reason = str(exc) if isinstance(exc, ResourceExhausted) else exc.strerror or str(exc)
            self.emit("rejected", {"client": describe(client), "reason": f"upstream: {reason}"})
            return None
        self._flows += 1
        flow = Flow(self._flows, client, sock)
        self.track(client, flow)
        self._draw(flow)
        fields = {"id": flow.id, "client": flow.peer, "local": describe(sock.getsockname())}
        self.emit("flow_opened", fields)
        for applied in flow.faults.applied:
            self.emit("fault", {"id": flow.id, "client": flow.peer, **applied})
        if self.options.idle_timeout is not None:
            flow.idle = IdleTimer(self.options.idle_timeout, lambda: self._flow_idle(flow))
        self.loop.add_reader(sock.fileno(), self._from_upstream, flow)
        return flow

    def _deny(self, client: tuple[Any, ...]) -> None:
        # A denied source opens no flow and gets no reply: each of its datagrams is counted,
        # and the source reported once (not once per datagram: a flood would flood the log).
        if self._denied.first(client):
            self.denies(client[0], describe(client))
        else:
            self.stats.denied += 1

    def _from_itself(self, client: tuple[Any, ...]) -> bool:
        host, port = self._own[0], self._own[1]
        return bool(client[1] == port and (client[0] == host or host in ("0.0.0.0", "::")))

    def _upstream_socket(self) -> socket.socket:
        try:
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
        except OSError as exc:
            if exc.errno in OUT_OF_RESOURCES:
                raise ResourceExhausted(f"no socket for a new flow: {exc.strerror}") from exc
            raise
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # a smaller buffer is no reason to refuse
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.connect(self.upstream)
        except OSError:
            sock.close()
            raise
        return sock

    def _draw(self, flow: Flow) -> None:
        usable = [f for f in self.faults.faults if isinstance(f, DATAGRAM_FAULTS)]
        flow.faults = draw_flow(usable, self.seed, flow.id, self.budget)

    def _flow_idle(self, flow: Flow) -> None:
        if flow.held and flow.idle is not None:  # datagrams still to go: not idle yet
            flow.idle = IdleTimer(flow.idle.timeout, lambda: self._flow_idle(flow))
            return
        self._close(flow, "drained" if self.draining else "idle timeout")

    def _quiet_then_close(self, flow: Flow) -> None:
        quiet = self.options.drain_quiet
        if self.options.idle_timeout is not None:
            quiet = min(quiet, self.options.idle_timeout)
        since = flow.idle.last if flow.idle is not None else None
        if flow.idle is not None:
            flow.idle.cancel()
        flow.idle = IdleTimer(quiet, lambda: self._flow_idle(flow), since=since)

    def _close(self, flow: Flow, reason: str) -> None:
        if flow.closed:
            return
        flow.closed = True
        if flow.idle is not None:
            flow.idle.cancel()
        for handle in flow.timers.values():
            handle.cancel()
        undelivered = flow.faults.discard()  # held by faults: never sent
        self.loop.remove_reader(flow.sock.fileno())
        flow.sock.close()
        self.untrack(flow.client)
        if not self.full:
            self._turning_away = False
        self.stats.count(flow)
        fields = flow.as_dict() | {"end": reason}
        for direction, schedule in flow.faults.directions.items():
            if schedule is not None:
                fields[f"dropped_{direction}"] = schedule.dropped
        if undelivered:
            fields["undelivered_datagrams"] = undelivered
        self.emit("flow_closed", fields)

    # --- datagrams ------------------------------------------------------------------------

    def _from_clients(self) -> None:
        sock, view, connections = self.sock, self._view, self.connections
        last: Flow | None = None
        for _ in range(BATCH):
            try:
                n, client = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for an earlier reply to a client gone away
            flow = connections.get(client)
            if flow is None:
                flow = self._open(client)
                if flow is None:
                    continue
            if flow is not last:  # once per run of one flow's datagrams is enough
                flow.touch()
                last = flow
            self._arrived(flow, "up", view[:n])

    def _from_upstream(self, flow: Flow) -> None:
        view = self._view
        flow.touch()  # once per readiness: the upstream just sent (or failed)
        for _ in range(BATCH):
            try:
                n = flow.sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._upstream_error(flow, exc)
                return
            self._arrived(flow, "down", view[:n])

    def _arrived(self, flow: Flow, direction: str, data: memoryview) -> None:
        # A datagram arrived for one direction of a flow: on at once, or through its faults.
        counts = flow.up if direction == "up" else flow.down
        counts.received += 1
        counts.bytes_received += len(data)
        schedule = flow.faults.directions[direction]
        if schedule is not None:
            self._through(flow, direction, schedule, bytes(data))  # held: a copy of its own
        elif direction == "up":
            self._send_up(flow, data)
        else:
            self._send_down(flow, data)

    def _send_up(self, flow: Flow, data: memoryview | bytes) -> None:
        try:
            flow.sock.send(data)
        except (BlockingIOError, InterruptedError):
            self.stats.send_failed += 1  # the socket's buffer is full: UDP drops
            return
        except OSError as exc:
            self._upstream_error(flow, exc)
            return
        flow.up.sent += 1
        flow.up.bytes_sent += len(data)

    def _send_down(self, flow: Flow, data: memoryview | bytes) -> None:
        try:
            self.sock.sendto(data, flow.client)
        except OSError:
            self.stats.send_failed += 1  # full buffer, or the client is gone
            return
        flow.down.sent += 1
        flow.down.bytes_sent += len(data)

    def _upstream_error(self, flow: Flow, exc: OSError) -> None:
        # ICMP port unreachable from the upstream arrives on the flow's socket as ECONNREFUSED.
        if exc.errno != errno.ECONNREFUSED:
            self.stats.send_failed += 1
            return
        self.stats.upstream_refused += 1
        if not flow.refused:
            flow.refused = True
            self.emit(
                "upstream_refused",
                {"id": flow.id, "client": flow.peer, "error": "nothing listens there (ICMP)"},
            )

    # --- faults ---------------------------------------------------------------------------

    def _through(self, flow: Flow, direction: str, schedule: DatagramSchedule, data: bytes) -> None:
        # One datagram through its direction's faults: report each, send what is due now,
        # and wake up when the next held one is.
        for injected in schedule.push(time.perf_counter(), data):
            self.stats.faults += 1
            if injected.get("dropped") or injected["fault"] == "overflow":
                self.stats.dropped += 1
            self.emit(
                "datagram_fault",
                {"id": flow.id, "client": flow.peer, "direction": direction, **injected},
            )
        self._release(flow, direction, schedule)

    def _release(self, flow: Flow, direction: str, schedule: DatagramSchedule) -> None:
        if flow.closed:
            return
        send = self._send_up if direction == "up" else self._send_down
        for data in schedule.release(time.perf_counter()):
            send(flow, data)
        due = schedule.next_due
        handle = flow.timers.pop(direction, None)
        if handle is not None:
            handle.cancel()
        if due is not None:
            delay = max(due - time.perf_counter(), 0.0)
            flow.timers[direction] = self.loop.call_later(
                delay, self._release, flow, direction, schedule
            )

    def _faults_changed(self, change: FaultChange) -> None:
        # Every open flow draws again from the changed set; what it held goes on at once.
        self.emit(change.event, change.as_dict())
        for flow in list(self.connections.values()):
            old = flow.faults
            self._draw(flow)
            for direction, schedule in old.directions.items():
                if schedule is not None:
                    send = self._send_up if direction == "up" else self._send_down
                    for data in schedule.release(float("inf")):
                        send(flow, data)
                    handle = flow.timers.pop(direction, None)
                    if handle is not None:
                        handle.cancel()

"""The relay server shared by ``proxy`` and ``lb``: accepts clients and relays each upstream.

For each client it draws the connection's faults, opens the upstream (through the
``connect_upstream`` it was given; PROXY header, TLS on either side), and hands both to one of
two relays, which move the bytes and count them in the connection's
:class:`~netkit.core.flow.RelayRecord`:

* :class:`~netkit.net.splice.SpliceRelay` (Linux, plain TCP/Unix on both sides, no data
  faults): ``os.splice`` through a pipe; payload never enters Python.
* :class:`~netkit.net.buffered.BufferedRelay` (TLS on either side, data faults, no splice):
  asyncio transports, views of the receive buffer or, with faults, copies released on their
  schedule.

Both propagate half-close, bound memory with flow control, and report the bytes that were not
delivered when a connection ends early. The server also caps connections, keeps a descriptor
reserve (out of descriptors, clients wait in the backlog), closes idle relays
(:class:`~netkit.net.idle.IdleTimer`), drains and keeps :class:`RelayTotals`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from netkit.core.faults import (
    Fault,
    Refuse,
    draw,
)
from netkit.core.flow import RelayRecord
from netkit.core.proxy_protocol import encode as encode_proxy_header
from netkit.errors import NetkitError, ResourceExhausted
from netkit.net.accept import Acceptor, DescriptorReserve
from netkit.net.buffered import BufferedRelay
from netkit.net.connect import translate_connect_error
from netkit.net.idle import IdleTimer
from netkit.net.sockets import describe, force_rst
from netkit.net.splice import SPLICE_AVAILABLE, SpliceRelay
from netkit.net.tls_layer import accept_tls, connect_tls

UpstreamConnector = Callable[[str], Awaitable[tuple[socket.socket, str]]]
"""Given the client's address, return a connected upstream socket and its label."""


@dataclass
class RelayOptions:
    """How a :class:`RelayServer` relays.

    Attributes:
        client_tls: terminate TLS from clients with this context.
        upstream_tls: originate TLS to the upstream with this context.
        upstream_sni: server name for the upstream TLS handshake.
        splice: use ``os.splice`` where possible.
        proxy_protocol: send a PROXY header (1 or 2) to the upstream first, or 0.
        idle_timeout: close relays idle this long (seconds), or None.
        faults: fault specs drawn per connection.
        seed: RNG seed for fault draws and jitter (repeatable runs).
    """

    client_tls: ssl.SSLContext | None = None
    upstream_tls: ssl.SSLContext | None = None
    upstream_sni: str | None = None
    splice: bool = True
    proxy_protocol: int = 0
    idle_timeout: float | None = None
    faults: list[Fault] = field(default_factory=list)
    seed: int | None = None


@dataclass
class RelayTotals:
    """Totals over a relay server's life."""

    accepted: int = 0
    rejected: int = 0
    failed_upstream: int = 0
    active: int = 0
    peak: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    undelivered: int = 0
    faults: int = 0
    accept_errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a summary."""
        return {
            "connections": self.accepted,
            "rejected": self.rejected,
            "upstream_failures": self.failed_upstream,
            "peak_connections": self.peak,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "undelivered_bytes": self.undelivered,
            "faults_injected": self.faults,
            "accept_errors": self.accept_errors,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }


class RelayServer:
    """Accepts clients on a listening socket and relays each to an upstream.

    Args:
        sock: the listening socket.
        connect_upstream: opens the upstream for a client (proxy: one endpoint; lb: a choice).
        options: TLS, splice, PROXY protocol, faults.
        max_connections: clients beyond this are refused (RST) and counted.
        on_event: receives (event, fields): ``fault``, ``upstream_failed``, ``closed``, ...
    """

    def __init__(
        self,
        sock: socket.socket,
        connect_upstream: UpstreamConnector,
        options: RelayOptions,
        *,
        max_connections: int | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.sock = sock
        self.address = describe(sock.getsockname())
        self.connect_upstream = connect_upstream
        self.options = options
        self.max_connections = max_connections
        self.on_event = on_event or (lambda _e, _f: None)
        self.totals = RelayTotals()
        self.relays: dict[int, SpliceRelay | BufferedRelay | None] = {}
        self.rng = random.Random(options.seed)
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.loop = asyncio.get_running_loop()
        self.splice = (
            options.splice
            and SPLICE_AVAILABLE
            and not options.client_tls
            and not options.upstream_tls
        )
        # Descriptors held for clients accepted and still opening their upstream (one each),
        # for the next client, and for a splice pipe: a client is accepted only when it can
        # be relayed, so clients beyond the descriptor limit wait in the backlog and are
        # served in turn as others close, instead of each holding a socket it cannot use.
        self.reserve = DescriptorReserve()
        self._connecting = 0
        self._spare = 1 + (2 if self.splice else 0)
        # on_event is looked up at call time: lb wraps it after construction.
        self.acceptor = Acceptor(
            sock,
            self._start,
            lambda e, f: self.on_event(e, f),
            before_accept=lambda: self.reserve.fill(self._connecting + self._spare),
        )

    def start(self) -> None:
        """Start accepting."""
        self.acceptor.start()

    def _start(self, conn: socket.socket, client: str) -> None:
        if self.max_connections is not None and len(self.relays) >= self.max_connections:
            self.totals.rejected += 1
            force_rst(conn)
            conn.close()
            self.on_event("rejected", {"client": client, "reason": "max connections"})
            return
        cid = next(self._ids)
        self.relays[cid] = None
        self._idle.clear()
        self._connecting += 1
        self.totals.accepted += 1
        self.totals.peak = max(self.totals.peak, len(self.relays))
        task = self.loop.create_task(self._handle(cid, conn, client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, cid: int, conn: socket.socket, client: str) -> None:
        record = RelayRecord(cid, client)
        faults = draw(self.options.faults, self.rng)
        for applied in faults.applied:
            self.totals.faults += 1
            self.on_event("fault", {"id": cid, "client": client, **applied})
        upstream: socket.socket | None = None
        connecting = True  # counted in self._connecting until its upstream is open (or not)
        try:
            if faults.refuse:
                force_rst(conn)
                conn.close()
                record.end = f"fault: {Refuse.end_reason}"
                return
            if faults.accept_delay:
                await asyncio.sleep(faults.accept_delay)
            try:
                upstream, record.upstream = await self._connect_upstream(client)
            except NetkitError as exc:
                if isinstance(exc, ResourceExhausted):
                    # Out of descriptors even with the reserve: turn the client away now
                    # rather than hold its socket while it waits (HAProxy closes it too); not
                    # the upstream's fault, so it is counted as rejected.
                    self.totals.rejected += 1
                    record.end = f"turned away: {exc}"
                    event = ("rejected", {"id": cid, "client": client, "reason": str(exc)})
                else:
                    self.totals.failed_upstream += 1
                    record.end = f"upstream failed: {exc}"
                    event = ("upstream_failed", {"id": cid, "client": client, "error": str(exc)})
                self.on_event(*event)
                force_rst(conn)
                conn.close()
                return
            finally:
                self._connecting -= 1
                connecting = False
            header = b""
            if self.options.proxy_protocol:
                header = encode_proxy_header(
                    self.options.proxy_protocol,
                    _tcp_address(conn.getpeername()),
                    _tcp_address(conn.getsockname()),
                )
            relay: SpliceRelay | BufferedRelay
            if self.splice and not faults.touches_data:
                if header:
                    await self.loop.sock_sendall(upstream, header)
                relay = SpliceRelay(
                    conn,
                    upstream,
                    record,
                    slow_close=(
                        faults.directions["up"].slow_close,
                        faults.directions["down"].slow_close,
                    ),
                    on_exhausted=self.acceptor.pause_for,
                    reserve=self.reserve,
                )
                upstream = None  # owned by the relay now
                self.relays[cid] = relay
                relay.start()
            else:
                relay = BufferedRelay(record, faults, self.rng)
                self.relays[cid] = relay
                try:
                    await self._open_upstream_transport(relay, upstream, header)
                except (OSError, ssl.SSLError) as exc:
                    error = translate_connect_error(exc, record.upstream)
                    self.totals.failed_upstream += 1
                    record.end = f"upstream failed: {error}"
                    self.on_event(
                        "upstream_failed", {"id": cid, "client": client, "error": str(error)}
                    )
                    force_rst(conn)
                    conn.close()
                    return
                finally:
                    upstream = None  # the transport owns it (or closed it)
                if self.options.client_tls is not None:
                    # netkit's TLS layer: sends the alert when a handshake fails, half-closes.
                    await accept_tls(conn, lambda: relay.client, self.options.client_tls)
                else:
                    await self.loop.connect_accepted_socket(lambda: relay.client, conn)
                relay.start()
            await self._watch(relay)
        except (OSError, ssl.SSLError, NetkitError) as exc:
            record.end = f"error: {translate_connect_error(exc, client) if isinstance(exc, OSError) else exc}"
            with contextlib.suppress(OSError):
                conn.close()
        finally:
            if connecting:
                self._connecting -= 1
            if upstream is not None:
                upstream.close()
            self._finish(cid, record)

    async def _connect_upstream(self, client: str) -> tuple[socket.socket, str]:
        # Out of descriptors for the upstream socket: spend this client's reserved descriptor
        # and try once more (nothing else can take it: the retry opens its socket before any
        # await); a second failure propagates and the client is turned away.
        try:
            return await self.connect_upstream(client)
        except ResourceExhausted as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError):
                self.acceptor.pause_for(cause)
            if not self.reserve.spend():
                raise
            return await self.connect_upstream(client)

    async def _open_upstream_transport(
        self, relay: BufferedRelay, upstream: socket.socket, header: bytes
    ) -> None:
        # Upstream first (TLS handshake included), and the PROXY header on it before any client
        # byte can flow; bytes that reach either side before the other is up wait in its buffer.
        opts = self.options
        try:
            if opts.upstream_tls is not None:
                # netkit's TLS layer: a client's FIN becomes close_notify, and the reply is
                # still read (HAProxy shuts its SSL server side down the same way).
                await connect_tls(
                    upstream,
                    lambda: relay.upstream,
                    opts.upstream_tls,
                    server_hostname=opts.upstream_sni,
                )
            else:
                await self.loop.create_connection(lambda: relay.upstream, sock=upstream)
        except BaseException:
            upstream.close()
            raise
        if header:
            relay.upstream.write(header)

    async def _watch(self, relay: SpliceRelay | BufferedRelay) -> None:
        # Idle means silent both ways (nginx's stream proxy_timeout), counted from when the
        # relay was set up; it ends with a close, not a reset, as nginx does.
        idle = self.options.idle_timeout
        if idle is None:
            await relay.done
            return
        timer = IdleTimer(idle, lambda: relay.close("idle timeout"), since=relay.created)
        relay.record.on_activity(timer.touch)
        try:
            await relay.done
        finally:
            timer.cancel()

    def _finish(self, cid: int, record: RelayRecord) -> None:
        self.relays.pop(cid, None)
        t = self.totals
        t.bytes_up += record.up.delivered
        t.bytes_down += record.down.delivered
        t.undelivered += record.up.undelivered + record.down.undelivered
        self.on_event("closed", record.as_dict())
        if not self.relays:
            self._idle.set()
        self.acceptor.wake()  # descriptors were freed: a client paused in the backlog may go

    def stop_accepting(self) -> None:
        """Close the listener: new clients are refused from now on (relays go on)."""
        self.acceptor.stop()
        self.reserve.close()
        if self.sock.fileno() >= 0:
            self.sock.close()

    async def drain(self, timeout: float, forced: asyncio.Event | None = None) -> int:
        """Stop accepting, let relays finish for up to ``timeout`` s, then reset the rest.

        Returns:
            How many relays had to be cut.
        """
        self.stop_accepting()
        waiters = [asyncio.ensure_future(self._idle.wait())]
        if forced is not None:
            waiters.append(asyncio.ensure_future(forced.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self.totals.accept_errors = self.acceptor.errors
        cut = [r for r in self.relays.values() if r is not None]
        for relay in cut:
            relay.abort("drain timeout")
        for task in list(self._tasks):
            if not task.done():
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        return len(cut)


def _tcp_address(addr: object) -> tuple[str, int] | None:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return None

"""The relay server shared by ``proxy`` and ``lb``: accepts clients and relays each upstream.

:class:`RelayServer` is a :class:`~netkit.net.server.Server` (the lifecycle every server
shares: accept, cap, track, drain, stats). For each client it draws the connection's faults,
opens the upstream (through the :class:`~netkit.net.upstreams.Upstream` it was given; PROXY
header, TLS on either side), and hands both to one of
two relays, which move the bytes and count them in the connection's
:class:`~netkit.core.flow.RelayRecord`. While nothing has to wait (no PROXY header to read,
no fault set, an upstream that connects at once, a splice relay) this is done in the accept
callback and the relay watched with no task; anything else goes on in the connection's task.

* :class:`~netkit.net.splice.SpliceRelay` (Linux, plain TCP/Unix on both sides, no data
  faults): ``os.splice`` through a pipe; payload never enters Python.
* :class:`~netkit.net.buffered.BufferedRelay` (TLS on either side, data faults, no splice):
  asyncio transports, views of the receive buffer or, with faults, copies released on their
  schedule.

Both propagate half-close, bound memory with flow control, and report the bytes that were not
delivered when a connection ends early. The server also keeps a descriptor reserve (out of
descriptors, clients wait in the backlog), closes idle relays
(:class:`~netkit.net.idle.IdleTimer`) and keeps :class:`RelayStats`.

It can be changed while it runs, as toxiproxy's proxies can: its faults
(:attr:`RelayServer.faults`, a :class:`~netkit.core.fault_set.FaultSet`) apply to every live
connection from the moment they change (a spliced connection that gets a data fault moves to
the buffered path: the splice relay hands its sockets and the bytes in its pipes over, and
those go first); it can stop listening and close its connections
(:meth:`RelayServer.disable`), listen again (:meth:`~RelayServer.enable`), listen elsewhere
(:meth:`~RelayServer.relisten`) and send new connections to another upstream
(:meth:`~RelayServer.set_upstream`). Each change is reported as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import ssl
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from netkit.core.addresses import UnixEndpoint
from netkit.core.fault_set import ConnectionDraw, FaultChange, FaultSet
from netkit.core.faults import ConnectionFaults, Refuse
from netkit.core.flow import RelayRecord
from netkit.core.proxy_protocol import encode as encode_proxy_header
from netkit.errors import NetkitError, PeerProtocolError, ResourceExhausted
from netkit.net.accept import DescriptorReserve
from netkit.net.buffered import BufferedRelay
from netkit.net.connect import translate_connect_error
from netkit.net.idle import IdleTimer
from netkit.net.poller import poller_for
from netkit.net.proxy_header import Origin, read_origin
from netkit.net.relay_changes import Endpoint, RelayChanges, bound_endpoint
from netkit.net.relay_options import RelayOptions, RelayStats
from netkit.net.server import EventHook, make_listener, quiet_events
from netkit.net.sockets import force_rst
from netkit.net.splice import SpliceRelay
from netkit.net.tls_layer import accept_tls, connect_tls
from netkit.net.upstreams import Connected, Connecting, OnwardTLS, Upstream

Relay = SpliceRelay | BufferedRelay
__all__ = ["Relay", "RelayOptions", "RelayServer", "RelayStats"]
NO_FAULTS = ConnectionFaults()  # a connection's faults when none is set (never changed)


class RelayServer(RelayChanges):
    """Accepts clients on a listening socket and relays each to an upstream.

    Args:
        sock: the listening socket.
        upstream: where each client goes (proxy: a fixed endpoint; lb: a balanced pool); told
            when each relay ends.
        options: TLS, splice, PROXY protocol, faults.
        max_connections: clients beyond this are refused (RST) and counted.
        on_event: receives (event, fields): ``fault``, ``upstream_failed``, ``closed``,
            ``proxy_header_rejected`` (with ``accept_proxy_protocol``: the peer and why), and
            one event per change: of :attr:`faults` (``fault_added``, ``fault_updated``,
            ``fault_removed``, ``faults_cleared``: the name and the fault's ``as_dict()``),
            ``disabled``, ``enabled``, ``upstream_changed``, ``relistened``.
        unix_endpoint: the Unix socket's path, removed when the server stops listening.
        listen: makes a listener for :meth:`enable` and :meth:`relisten` (by default
            :func:`~netkit.net.server.make_listener` with its defaults).

    Attributes:
        faults: the named faults, changeable while the server runs: a change applies to
            every live connection from that moment (connection set-up faults, refuse and
            accept-delay, to new connections).
    """

    PEER_FIELD = "client"
    stats: RelayStats
    connections: dict[Hashable, Relay | None]  # by connection id (an int)

    def __init__(
        self,
        sock: socket.socket,
        upstream: Upstream,
        options: RelayOptions,
        *,
        max_connections: int | None = None,
        on_event: EventHook | None = None,
        unix_endpoint: UnixEndpoint | None = None,
        listen: Callable[[Endpoint], socket.socket] = make_listener,
    ) -> None:
        # Descriptors held for clients accepted and still opening their upstream (one each),
        # for the next client, and for a splice pipe: a client is accepted only when it can
        # be relayed, so clients beyond the descriptor limit wait in the backlog and are
        # served in turn as others close, instead of each holding a socket it cannot use.
        self.reserve = DescriptorReserve()
        self._connecting = 0
        super().__init__(
            sock,
            RelayStats(),
            max_connections=max_connections,
            on_event=on_event,
            unix_endpoint=unix_endpoint,
            before_accept=lambda: self.reserve.fill(self._connecting + self._spare),
        )
        self.upstream = upstream
        self.options = options
        self.rng = random.Random(options.seed)
        faults = options.faults
        self.faults = faults if isinstance(faults, FaultSet) else FaultSet(faults)
        self.faults.serve("tcp")  # a fault that cannot apply here is refused, never ignored
        self._unsubscribe = self.faults.subscribe(self._faults_changed)
        # Each connection's draw of the faults (None: none was set when it arrived).
        self._draws: dict[int, tuple[ConnectionDraw | None, RelayRecord]] = {}
        # Relays set up at accept, watched with no task: their idle timers.
        self._watched: dict[int, IdleTimer | None] = {}
        self._listen = listen
        self._endpoint = bound_endpoint(sock, unix_endpoint)
        self.enabled = True
        self._ids = itertools.count(1)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.loop = asyncio.get_running_loop()
        self.splice = options.can_splice(client_tls=options.client_tls is not None)
        self._spare = 1 + (2 if self.splice else 0)
        if self.splice:
            poller_for(self.loop)  # now, not for the first client: it takes a descriptor

    def start(self) -> None:
        """Start the upstream (health checks), then accepting."""
        self.upstream.start()
        super().start()

    async def close(self) -> None:
        self._unsubscribe()
        await super().close()
        await self.upstream.stop()

    # --- changes while running ---------------------------------------------------------

    def _faults_changed(self, change: FaultChange) -> None:
        # Every live connection takes the change now, each with its own draw.
        self.emit(change.event, change.as_dict())
        for cid, (_, record) in list(self._draws.items()):
            draw = self._draw_of(cid)
            relay = self.connections.get(record.id)
            delivered = {"up": record.up.delivered, "down": record.down.delivered}
            age = 0.0 if relay is None else relay.age
            self._report(record, draw.change(change, age=age, delivered=delivered))
            if relay is not None:
                self._update(relay, draw.connection_faults())

    def _draw_of(self, cid: int) -> ConnectionDraw:
        # The connection's draw; one that arrived while no fault was set drew nothing then
        # (an empty set draws nothing and takes nothing from the RNG): its draw is made now.
        draw, record = self._draws[cid]
        if draw is None:
            draw = ConnectionDraw(FaultSet(), self.rng)
            self._draws[cid] = (draw, record)
        return draw

    def _faults_of(self, cid: int) -> ConnectionFaults:
        # The connection's faults as they are now.
        draw = self._draws[cid][0]
        return NO_FAULTS if draw is None else draw.connection_faults()

    def _report(self, record: RelayRecord, applied: list[dict[str, Any]]) -> None:
        for fields in applied:
            self.stats.faults += 1
            self.emit("fault", {"id": record.id, "client": record.client, **fields})

    def _update(self, relay: Relay, faults: ConnectionFaults) -> None:
        if isinstance(relay, BufferedRelay):
            relay.update(faults)
        elif faults.touches_data:
            # The connection's task moves it to the buffered path; a relay set up without
            # a task gets one now.
            cid = relay.record.id
            watched = cid in self._watched
            timer = self._watched.pop(cid, None)
            if relay.hand_over() and watched:
                self._spawn(cid, self._handle_rest(relay, timer))
                self._tasks[cid].add_done_callback(lambda task: self._never_ran(task, relay))
        else:
            relay.slow_close = _slow_close(faults)

    # --- one connection ------------------------------------------------------------------

    def accepted(self, conn: socket.socket, peer: str) -> None:
        if self.full:
            force_rst(conn)
            conn.close()
            self.rejected({"client": peer, "reason": "max connections"})
            return
        cid = next(self._ids)
        self.track(cid, None)
        record = RelayRecord(cid, peer)
        self._draws[cid] = (None, record)
        self._connecting += 1  # until its upstream is asked for (and connected)
        opened: Connecting | None = None
        if self.options.accept_proxy_protocol is None and not self.faults:
            # Nothing to read from the client first, no fault to draw: the upstream is asked
            # now, and while nothing has to wait (it connects at once, the relay splices) the
            # connection is set up and watched with no task (a task per connection costs).
            try:
                opened = self._open_upstream(record)
            except NetkitError as exc:
                opened = _raise(exc)  # reported from the task, a loop turn later, as always
            if isinstance(opened, tuple) and self._splice_now(conn, opened, record, NO_FAULTS):
                self._connecting -= 1
                return
        self._spawn(cid, self._handle(cid, conn, record, opened))

    def _spawn(self, cid: int, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks[cid] = task
        task.add_done_callback(lambda _: self._tasks.pop(cid, None))

    async def _handle(
        self, cid: int, conn: socket.socket, record: RelayRecord, opened: Connecting | None
    ) -> None:
        # ``opened``: the upstream asked for already, at accept (no origin to read, no faults).
        connecting = opened is None  # counted in self._connecting until its upstream is asked
        relaying = False  # from then on the relay owns the client's socket
        try:
            if opened is None:
                origin = await self._origin(conn, record)
                if origin is None:
                    return
                draw = ConnectionDraw(self.faults, self.rng)
                self._draws[cid] = (draw, record)
                self._report(record, draw.applied)
                faults = draw.connection_faults()
                if faults.refuse:
                    self._drop_client(conn, record, f"fault: {Refuse.end_reason}")
                    return
                if faults.accept_delay:
                    await asyncio.sleep(faults.accept_delay)
                connecting = False  # _upstream_for takes it off the count, whatever happens
            else:
                origin = Origin(record.client)
            upstream = await self._upstream_for(conn, record, opened)
            if upstream is None:
                return
            # The faults as they are now: they may have changed while connecting.
            relaying = True
            relay = await self._relay(conn, upstream, record, self._faults_of(cid), origin)
            if relay is not None:
                await self._watch(relay, self._idle_timer(relay))
        except (OSError, ssl.SSLError, NetkitError) as exc:
            self._failed(conn, record, exc)
        except asyncio.CancelledError as exc:
            # Disabled or cut while waiting (accept delay, upstream connect): the client was
            # never relayed, reset it now rather than leave it to the garbage collector.
            if not relaying:
                self._drop_client(conn, record, str(exc.args[0]) if exc.args else "cancelled")
            raise
        finally:
            if connecting:
                self._connecting -= 1  # refused, or cancelled before its upstream was asked
            self._ended(cid, record)

    async def _handle_rest(self, relay: SpliceRelay, timer: IdleTimer | None) -> None:
        # A relay set up at accept (no task) that handed over to the buffered path: the rest
        # of its life, as _handle would have watched it.
        record = relay.record
        try:
            await self._watch(relay, timer)
        except (OSError, ssl.SSLError, NetkitError) as exc:
            self._failed(relay.client, record, exc)
        finally:
            self._ended(record.id, record)

    def _never_ran(self, task: asyncio.Task[None], relay: SpliceRelay) -> None:
        # A take-over task cancelled before it began (disabled, cut right after the hand
        # over): what _watch would have done, nothing took over.
        record = relay.record
        if not task.cancelled() or record.id not in self.connections:
            return  # it ran, and ended the connection itself
        try:
            task.result()
        except asyncio.CancelledError as exc:
            reason = str(exc.args[0]) if exc.args else ""
        relay.abandon(reason or "error: the relay could not move to buffered")
        self._ended(record.id, record)

    def _failed(self, conn: socket.socket, record: RelayRecord, exc: Exception) -> None:
        reason = translate_connect_error(exc, record.client) if isinstance(exc, OSError) else exc
        record.end = f"error: {reason}"
        with contextlib.suppress(OSError):
            conn.close()

    def _ended(self, cid: int, record: RelayRecord) -> None:
        self._draws.pop(cid, None)
        self._finish(cid, record)

    async def _origin(self, conn: socket.socket, record: RelayRecord) -> Origin | None:
        # Who the client is: the socket's peer, or the client its PROXY header names (then
        # reported, hashed and sent onward); None when the header was refused (reported).
        accept = self.options.accept_proxy_protocol
        if accept is None:
            return Origin(record.client)
        try:
            origin = await read_origin(
                conn, record.client, accept, self.options.proxy_header_timeout
            )
        except PeerProtocolError as exc:
            self.stats.bad_proxy_headers += 1
            self.emit(
                "proxy_header_rejected",
                {"id": record.id, "client": record.client, "reason": str(exc)},
            )
            self._drop_client(conn, record, f"proxy header rejected: {exc}")
            return None
        record.client, record.via = origin.client, origin.via
        return origin

    def _drop_client(self, conn: socket.socket, record: RelayRecord, end: str) -> None:
        force_rst(conn)
        conn.close()
        record.end = end

    async def _upstream_for(
        self, conn: socket.socket, record: RelayRecord, opened: Connecting | None
    ) -> socket.socket | None:
        # The client's upstream (asked for now, or ``opened`` at accept), or None when it
        # could not be opened (the client is reset and the failure reported). Counted in
        # self._connecting until then.
        try:
            if opened is None:
                opened = self._open_upstream(record)
            upstream, record.upstream = opened if isinstance(opened, tuple) else await opened
        except NetkitError as exc:
            self._not_opened(conn, record, exc)
            return None
        finally:
            self._connecting -= 1
        return upstream

    def _not_opened(self, conn: socket.socket, record: RelayRecord, exc: NetkitError) -> None:
        # The upstream could not be opened: the client is reset, and the failure reported.
        if isinstance(exc, ResourceExhausted):
            # Out of descriptors even with the reserve: turn the client away now rather
            # than hold its socket while it waits (HAProxy closes it too); not the
            # upstream's fault, so it is counted as rejected.
            self.rejected({"id": record.id, "client": record.client, "reason": str(exc)})
            self._drop_client(conn, record, f"turned away: {exc}")
        else:
            self._upstream_failed(conn, record, exc)

    def _upstream_failed(self, conn: socket.socket, record: RelayRecord, error: Exception) -> None:
        self.stats.failed_upstream += 1
        self.emit(
            "upstream_failed", {"id": record.id, "client": record.client, "error": str(error)}
        )
        self._drop_client(conn, record, f"upstream failed: {error}")

    async def _relay(
        self,
        conn: socket.socket,
        upstream: socket.socket,
        record: RelayRecord,
        faults: ConnectionFaults,
        origin: Origin,
    ) -> SpliceRelay | BufferedRelay | None:
        # The relay between the two sockets, started; None when the upstream's transport
        # could not be set up (reported).
        header = b""
        if self.options.proxy_protocol:
            header = encode_proxy_header(self.options.proxy_protocol, *origin.addresses(conn))
        tls = self._tls_for(record.upstream)
        if self.splice and not faults.touches_data and tls is None:
            try:
                if header:
                    await self.loop.sock_sendall(upstream, header)
            except BaseException:
                upstream.close()
                raise
            return self._spliced(conn, upstream, record, faults)
        # A backend whose TLS handshake fails is as unreachable as one that refuses: the
        # client is tried on another (HAProxy's retry-on conn-failure, which includes the
        # handshake), at most once per backend.
        tries = len(self.upstream.endpoints())
        while True:
            buffered = BufferedRelay(record, faults, self.rng)
            self.connections[record.id] = buffered
            try:
                await self._open_upstream_transport(buffered, upstream, header, tls)
                break
            except (OSError, ssl.SSLError) as exc:
                error = translate_connect_error(exc, record.upstream)
                tries -= 1
                retry = isinstance(exc, ssl.SSLError) and (
                    self.upstream.handshake_failed(record.upstream, error) and tries > 0
                )
                if not retry:
                    self._upstream_failed(conn, record, error)
                    return None
            # That backend's connection ended before it carried a byte; on to another.
            self.upstream.relay_ended(record.upstream, 0, 0)
            record.upstream = ""
            self._connecting += 1  # _upstream_for takes it off the count, whatever happens
            next_upstream = await self._upstream_for(conn, record, None)
            if next_upstream is None:
                return None  # reported, and the client reset
            upstream, tls = next_upstream, self._tls_for(record.upstream)
        if self.options.client_tls is not None:
            # netkit's TLS layer: sends the alert when a handshake fails, half-closes.
            await accept_tls(conn, lambda: buffered.client, self.options.client_tls)
        else:
            await self.loop.connect_accepted_socket(lambda: buffered.client, conn)
        buffered.start()
        return buffered

    def _tls_for(self, upstream: str) -> OnwardTLS | None:
        tls = self.upstream.tls_for(upstream)  # lb: per backend
        if tls is None and self.options.upstream_tls is not None:
            tls = (self.options.upstream_tls, self.options.upstream_sni)
        return tls

    def _splice_now(
        self,
        conn: socket.socket,
        opened: tuple[socket.socket, str],
        record: RelayRecord,
        faults: ConnectionFaults,
    ) -> bool:
        # At accept: splice the client to the upstream just connected and watch the relay
        # with no task, when nothing has to wait (no PROXY header to send, no TLS onward).
        upstream, record.upstream = opened
        if not self.splice or self.options.proxy_protocol or self._tls_for(record.upstream):
            return False
        relay = self._spliced(conn, upstream, record, faults)
        timer = self._idle_timer(relay)
        self._watched[record.id] = timer
        relay.on_end = lambda: self._splice_done(relay, timer)
        return True

    def _spliced(
        self,
        conn: socket.socket,
        upstream: socket.socket,
        record: RelayRecord,
        faults: ConnectionFaults,
    ) -> SpliceRelay:
        splice = SpliceRelay(
            conn,
            upstream,
            record,
            slow_close=_slow_close(faults),
            on_exhausted=self.acceptor.pause_for,
            reserve=self.reserve,
            loop=self.loop,
        )
        self.connections[record.id] = splice
        splice.start()
        return splice

    def _splice_done(self, relay: SpliceRelay, timer: IdleTimer | None) -> None:
        # The end of a relay set up at accept (one that hands over goes on in its task).
        self._watched.pop(relay.record.id, None)
        if timer is not None:
            timer.cancel()
        self._ended(relay.record.id, relay.record)

    def _open_upstream(self, record: RelayRecord) -> Connecting:
        # Out of descriptors for the upstream socket: spend this client's reserved descriptor
        # and try once more (nothing else can take it: the retry opens its socket before any
        # await); a second failure propagates and the client is turned away.
        try:
            return self.upstream.connect_now(record.client)
        except ResourceExhausted as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError):
                self.acceptor.pause_for(cause)
            if not self.reserve.spend():
                raise
            return self.upstream.connect_now(record.client)

    async def _open_upstream_transport(
        self, relay: BufferedRelay, upstream: socket.socket, header: bytes, tls: OnwardTLS | None
    ) -> None:
        # The PROXY header first, in clear before any TLS (HAProxy's send-proxy with ssl, and
        # what --accept-proxy-protocol reads), then the upstream's transport, TLS handshake
        # included, before any client byte can flow (they wait in the client's buffer).
        try:
            if header:
                await self.loop.sock_sendall(upstream, header)
            if tls is not None:
                # netkit's TLS layer: a client's FIN becomes close_notify, and the reply is
                # still read (HAProxy shuts its SSL server side down the same way).
                await connect_tls(upstream, lambda: relay.upstream, tls[0], server_hostname=tls[1])
            else:
                await self.loop.create_connection(lambda: relay.upstream, sock=upstream)
        except BaseException:
            upstream.close()
            raise

    def _idle_timer(self, relay: Relay) -> IdleTimer | None:
        # Idle means silent both ways (nginx's stream proxy_timeout), counted from when the
        # relay was set up; it ends with a close, not a reset, as nginx does (_watch points
        # it at the relay that takes over when a splice relay hands over).
        idle = self.options.idle_timeout
        if idle is None:
            return None
        timer = IdleTimer(
            idle, lambda: relay.close("idle timeout"), since=relay.created, loop=self.loop
        )
        relay.record.on_activity(timer.touch)
        return timer

    async def _watch(self, relay: Relay, timer: IdleTimer | None) -> None:
        # Until the relay ends; a splice relay that handed over (a data fault arrived) is
        # followed by the buffered relay that took over.
        current = relay
        if timer is not None:
            timer.on_idle = lambda: current.close("idle timeout")
        try:
            while True:
                await current.done
                if not isinstance(current, SpliceRelay) or current.relaying:
                    return
                current = await self._take_over(current, self._draw_of(current.record.id))
        except BaseException as exc:
            if isinstance(current, SpliceRelay) and not current.relaying:
                # Handed over, and cancelled (disabled, cut) before the take-over finished.
                reason = exc.args[0] if isinstance(exc, asyncio.CancelledError) and exc.args else ""
                current.abandon(str(reason) or "error: the relay could not move to buffered")
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _take_over(self, splice: SpliceRelay, draw: ConnectionDraw) -> BufferedRelay:
        # The buffered relay on the splice relay's sockets: the bytes its pipes held are sent
        # first (each side's preface), then what the sockets bring, under the new faults.
        assert splice.handed_over is not None
        record = splice.record
        buffered = BufferedRelay(
            record, draw.connection_faults(), self.rng, began=splice.began, created=splice.created
        )
        record.path = "splice+buffered"
        buffered.upstream.preface, buffered.client.preface = splice.handed_over
        self.connections[record.id] = buffered
        try:
            await self.loop.create_connection(lambda: buffered.upstream, sock=splice.upstream)
            await self.loop.connect_accepted_socket(lambda: buffered.client, splice.client)
        except BaseException:
            buffered.abort("")  # the transports made so far (_watch resets the sockets)
            raise
        buffered.start()
        return buffered

    def _finish(self, cid: int, record: RelayRecord) -> None:
        self.untrack(cid)
        t = self.stats
        t.bytes_up += record.up.delivered
        t.bytes_down += record.down.delivered
        t.undelivered += record.up.undelivered + record.down.undelivered
        if record.upstream:
            self.upstream.relay_ended(record.upstream, record.up.delivered, record.down.delivered)
        hook = self.on_event
        if hook is not None and (
            record.up.undelivered or record.down.undelivered or "closed" not in quiet_events(hook)
        ):
            hook("closed", record.as_dict())

    def stopped_accepting(self) -> None:
        self.reserve.close()

    async def cut(self) -> int:
        return await self._end_all("drain timeout", abort=True)

    async def _end_all(self, reason: str, *, abort: bool) -> int:
        # End every relay (RST both sides with ``abort``, else close) and cancel the
        # connections not relaying yet, then wait up to a second for their tasks (and for the
        # relays watched without one to be told). Closed relays get that second to finish
        # (their last bytes are counted); aborted ones are cancelled at once, as a drain's
        # cut always did.
        ended = 0
        waiting: list[asyncio.Future[None]] = []
        for cid, relay in list(self.connections.items()):
            task = self._tasks.get(cid)  # type: ignore[call-overload]
            if relay is None or not relay.relaying:
                if task is not None:
                    task.cancel(reason)  # still connecting, or still setting its relay up
                ended += relay is not None
                continue
            (relay.abort if abort else relay.close)(reason)
            ended += 1
            if task is None:
                waiting.append(relay.done)
            elif abort:
                task.cancel(reason)
        waiting.extend(self._tasks.values())
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=1.0)
            for task in pending:
                task.cancel()
        return ended


async def _raise(exc: NetkitError) -> Connected:
    raise exc


def _slow_close(faults: ConnectionFaults) -> tuple[float, float]:
    return faults.directions["up"].slow_close, faults.directions["down"].slow_close

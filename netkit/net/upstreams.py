"""Where a relay server sends each client: the upstream choice, as objects.

A :class:`~netkit.net.relay.RelayServer` is given one :class:`Upstream`: it asks it for a
connected socket per client (:meth:`Upstream.connect`) and tells it when each relay ends
(:meth:`Upstream.relay_ended`, the explicit event hook). ``proxy`` relays to a
:class:`FixedUpstream`; ``lb`` to a :class:`BalancedPool`, which chooses a backend with the
policies of :mod:`netkit.core.balance`, fails over to the next one when a backend refuses,
and runs the active health checks while the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.balance.backends import Backend
from netkit.core.balance.checks import HTTPCheck
from netkit.core.balance.health import CheckProbe, HealthEvent
from netkit.core.balance.pool import BackendPool, PoolChange
from netkit.core.balance.queue import QueueCounters
from netkit.core.balance.state import BackendState, OnError
from netkit.errors import ConnectError, LocalError, NetkitError, OperationTimeout
from netkit.net.backend_queue import ConnectQueue
from netkit.net.backend_tls import BackendTLS
from netkit.net.connect import Dialled, dial_now, translate_connect_error
from netkit.net.health import DEFAULT_INTERVAL, HealthChecker
from netkit.net.resolved import AddressBook, refresh_every

REFRESH_S = DEFAULT_INTERVAL
"""Seconds between two resolutions of a named upstream (``lb``: its check interval)."""

OnwardTLS = tuple[ssl.SSLContext, str | None]
"""How to speak TLS to an upstream: the client context, and the server name to verify."""

Connected = tuple[socket.socket, str]
"""A socket connected to the upstream, and the upstream's label."""

Connecting = Connected | Coroutine[Any, Any, Connected]
"""What :meth:`Upstream.connect_now` gives: connected now, or the coroutine that finishes."""


class Upstream:
    """Where a relay server's clients go; the base connects nowhere.

    :meth:`start` and :meth:`stop` bracket the server's life (health checks run between them,
    and named upstreams are resolved again every :attr:`refresh_interval` seconds: clients
    connect to addresses resolved already, from :attr:`addresses`).

    Attributes:
        addresses: the upstream endpoints' addresses, resolved once and refreshed.
    """

    refresh_interval = REFRESH_S

    def __init__(self) -> None:
        self.addresses = AddressBook()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._resolving: set[asyncio.Task[None]] = set()

    def endpoints(self) -> list[TCPEndpoint | UnixEndpoint]:
        """Every endpoint clients may be sent to now."""
        return []

    def start(self) -> None:
        """The server started accepting: resolve the named upstreams now and from time to time."""
        self.loop = asyncio.get_running_loop()
        self._refresher = self.loop.create_task(
            refresh_every(self.addresses, self.endpoints, self.refresh_interval)
        )

    async def stop(self) -> None:
        """The server stopped: end whatever :meth:`start` began."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    def resolve_now(self) -> None:
        """Resolve every named endpoint again now, in the background (a reload)."""
        loop = self.loop or asyncio.get_running_loop()
        task = loop.create_task(self.addresses.refresh(self.endpoints()))
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    def dial_now(self, endpoint: TCPEndpoint | UnixEndpoint, timeout: float) -> Dialled:
        """A socket connected to ``endpoint`` at its known addresses, now when the connect
        completes at once (loopback), else a coroutine that finishes it (see
        :func:`~netkit.net.connect.dial_now`). A name not known yet is resolved first (in the
        coroutine); a name whose every address failed is resolved anew next time.

        Raises:
            ConnectError, OperationTimeout, ResourceExhausted: as :func:`connect_raw`.
        """
        known = self.addresses.cached(endpoint)
        if known is None:
            return self._dial_later(endpoint, timeout)
        try:
            dialled = dial_now(endpoint, known, timeout=timeout, loop=self.loop)
        except ConnectError:
            self.addresses.forget(endpoint)
            raise
        if isinstance(dialled, socket.socket):
            return dialled
        return self._forgetting(endpoint, dialled)

    async def _forgetting(
        self, endpoint: TCPEndpoint | UnixEndpoint, dialled: Coroutine[Any, Any, socket.socket]
    ) -> socket.socket:
        try:
            return await dialled
        except ConnectError:
            self.addresses.forget(endpoint)
            raise

    async def _dial_later(
        self, endpoint: TCPEndpoint | UnixEndpoint, timeout: float
    ) -> socket.socket:
        # Resolve the name first (under the same timeout), then connect.
        loop = self.loop or asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                await self.addresses.lookup(endpoint)
        except TimeoutError:
            raise OperationTimeout(f"timed out resolving {endpoint}") from None
        except OSError as exc:
            raise translate_connect_error(exc, str(endpoint)) from exc
        return await self.dial(endpoint, max(0.0, deadline - loop.time()))

    async def dial(self, endpoint: TCPEndpoint | UnixEndpoint, timeout: float) -> socket.socket:
        """:meth:`dial_now`, awaited."""
        dialled = self.dial_now(endpoint, timeout)
        return dialled if isinstance(dialled, socket.socket) else await dialled

    def connect_now(self, client: str) -> Connecting:
        """:meth:`connect` without a coroutine when it need not wait: the connected socket
        and label at once, or the coroutine that finishes (await it).

        The relay asks this; a kind of upstream that only implements :meth:`connect` is
        asked through it (this default).
        """
        return self.connect(client)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass that overrides connect() alone (to wrap it) must be asked through it.
        super().__init_subclass__(**kwargs)
        if "connect" in cls.__dict__ and "connect_now" not in cls.__dict__:
            cls.connect_now = Upstream.connect_now  # type: ignore[method-assign]

    async def connect(self, client: str) -> tuple[socket.socket, str]:
        """A non-blocking socket connected to the upstream for ``client``, and its label.

        Raises:
            ConnectError, OperationTimeout: no upstream could be reached.
            ResourceExhausted: out of descriptors.
        """
        raise NotImplementedError

    def relay_ended(self, upstream: str, bytes_up: int, bytes_down: int) -> None:
        """A relay to ``upstream`` (a label :meth:`connect` returned) ended."""

    def tls_for(self, upstream: str) -> OnwardTLS | None:
        """(context, server name) for TLS to ``upstream`` when it sets its own (None: the
        relay's ``upstream_tls`` option decides)."""
        return None

    def handshake_failed(self, upstream: str, error: NetkitError) -> bool:
        """The TLS handshake with ``upstream`` failed; whether the client may be tried on
        another upstream (False: it is refused)."""
        return False


class FixedUpstream(Upstream):
    """One endpoint for every client (``proxy``).

    Args:
        endpoint: where to connect.
        timeout: seconds allowed per connect.
    """

    def __init__(self, endpoint: TCPEndpoint | UnixEndpoint, *, timeout: float) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.timeout = timeout
        self.label = str(endpoint)
        # The upstream's counters and connect times, kept as lb keeps a backend's (--metrics);
        # a failed connect is only counted: proxy has no health to change.
        self.counts = BackendState(Backend(endpoint), on_error=OnError.IGNORE)

    def retarget(self, endpoint: TCPEndpoint | UnixEndpoint) -> None:
        """Connect to ``endpoint`` from now on."""
        self.endpoint = endpoint
        self.label = str(endpoint)

    def endpoints(self) -> list[TCPEndpoint | UnixEndpoint]:
        return [self.endpoint]

    def connect_now(self, client: str) -> Connecting:
        return self._open()

    async def connect(self, client: str) -> tuple[socket.socket, str]:
        opened = self._open()
        return opened if isinstance(opened, tuple) else await opened

    def _open(self) -> Connecting:
        counts = self.counts
        counts.connect_started()
        started = time.perf_counter()
        try:
            dialled = self.dial_now(self.endpoint, self.timeout)
        except BaseException as exc:
            self._not_connected(exc)
            raise
        if isinstance(dialled, socket.socket):
            counts.connect_succeeded(time.perf_counter() - started)
            return dialled, self.label
        return self._connecting(dialled, started)

    async def _connecting(
        self, dialled: Coroutine[Any, Any, socket.socket], started: float
    ) -> Connected:
        try:
            sock = await dialled
        except BaseException as exc:
            self._not_connected(exc)
            raise
        self.counts.connect_succeeded(time.perf_counter() - started)
        return sock, self.label

    def _not_connected(self, exc: BaseException) -> None:
        # A failed connect is counted; one that could not start (our limits) is not.
        if isinstance(exc, ConnectError | OperationTimeout):
            self.counts.connect_failed(str(exc), 0.0)
        else:
            self.counts.connect_abandoned()

    def relay_ended(self, upstream: str, bytes_up: int, bytes_down: int) -> None:
        self.counts.connection_ended(bytes_up, bytes_down)


def balance_key(client: str) -> str:
    """The part of a client's address a policy hashes: its host (``source``), or the path."""
    return client if client.startswith("unix:") else client.rpartition(":")[0].strip("[]")


class _Attempt:
    """One client's way to a backend: who, until when it may wait, the backends that failed."""

    __slots__ = ("client", "deadline", "last", "tried", "waited")

    def __init__(self, client: str, deadline: float) -> None:
        self.client = client
        self.deadline = deadline  # loop time: the queue's timeout
        self.tried: set[BackendState] = set()
        self.last = ""  # the last failure, for the message when none is left
        self.waited = False  # was in the queue once (a second wait keeps its place)


class _Pending:
    """A connect to a backend, in progress."""

    __slots__ = ("dialled", "started", "state")

    def __init__(
        self, state: BackendState, started: float, dialled: Coroutine[Any, Any, socket.socket]
    ) -> None:
        self.state = state
        self.started = started  # perf_counter() when it began
        self.dialled = dialled


class BalancedPool(Upstream):
    """Backends chosen per client by ``pool``'s policy, with failover and health checks (``lb``).

    A backend that refuses a connection (or does not answer within ``connect_timeout``) is
    marked failed and the client is tried on the next one, so a client is never handed a
    backend that refused; active checks bring it back. A client that finds every backend full
    (``maxconn``) waits in the queue (:mod:`netkit.net.backend_queue`) for a free slot.

    Args:
        pool: the backends and their policy.
        connect_timeout: seconds allowed per backend before trying the next.
        checker: the active health checks, run from :meth:`start` to :meth:`stop`.
        on_health: called with every backend state change the relaying itself causes.
        tls: the TLS for backends reached over TLS (:attr:`Backend.tls`).
        queue: the queue's limit and timeout (default: no limit, ``connect_timeout``, as
            HAProxy's ``timeout queue`` defaults to ``timeout connect``).
        on_queue: called with ``("queued" | "queue_timeout" | "queue_full", fields)`` for
            each client that begins to wait (``waiting``: how many wait now), is closed after
            waiting, or is refused because the queue was full.
    """

    def __init__(
        self,
        pool: BackendPool,
        *,
        connect_timeout: float,
        checker: HealthChecker | None = None,
        on_health: Callable[[HealthEvent], None] | None = None,
        tls: BackendTLS | None = None,
        queue: QueueCounters | None = None,
        on_queue: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.checker = checker
        self.on_health = on_health
        self.tls = tls
        self.queue = ConnectQueue(queue or QueueCounters(timeout=connect_timeout))
        self.on_queue = on_queue
        self.redispatches = 0
        self.on_drained: Callable[[BackendState], None] | None = None
        """Called when the last connection of a draining or removed backend ends."""

    @property
    def refresh_interval(self) -> float:  # type: ignore[override]
        """Names are resolved again at each health-check round."""
        return self.checker.interval if self.checker is not None else REFRESH_S

    def endpoints(self) -> list[TCPEndpoint | UnixEndpoint]:
        return [state.backend.endpoint for state in self.pool.states]

    def start(self) -> None:
        super().start()
        if self.checker is not None:
            self.checker.start()

    async def stop(self) -> None:
        await super().stop()
        if self.checker is not None:
            await self.checker.stop()

    def connect_now(self, client: str) -> Connecting:
        # Backends are tried without a coroutine until one connects (loopback: at once) or
        # the client must wait: for a connect in progress, or in the queue.
        loop = self.loop or asyncio.get_running_loop()
        attempt = _Attempt(client, loop.time() + self.queue.counters.timeout)
        if self.queue.busy and self.queue.counters.enabled:  # first come, first served
            return self._waiting(attempt, None)
        got = self._next(attempt)
        return got if isinstance(got, tuple) else self._waiting(attempt, got)

    async def connect(self, client: str) -> tuple[socket.socket, str]:
        got = self.connect_now(client)
        return got if isinstance(got, tuple) else await got

    def _next(self, attempt: _Attempt) -> Connected | _Pending | None:
        # The next backends in turn, for as long as none makes the client wait: connected
        # (socket, label); a connect in progress; or None, every backend is full and the
        # client waits in the queue. Raises when no backend is left.
        loop = self.loop or asyncio.get_running_loop()
        tried = attempt.tried
        key = balance_key(attempt.client) if self.pool.primary.hashes_clients else ""
        while True:
            state = self.pool.choose(key, loop.time(), tried)
            if state is None:
                if not (self.queue.counters.enabled and self.pool.all_full(tried)):
                    raise ConnectError(f"{self.pool.unavailable(tried)}{attempt.last}")
                return None
            self.redispatches += bool(tried)  # HAProxy's redispatch: on to another server
            state.connect_started()
            started = time.perf_counter()  # not loop.time(): 1 ms under uvloop
            try:
                dialled = self.dial_now(state.backend.endpoint, self.connect_timeout)
            except (LocalError, ConnectError, OperationTimeout) as exc:
                self._failed(state, exc, attempt)
                continue
            if isinstance(dialled, socket.socket):
                state.connect_succeeded(time.perf_counter() - started)
                return dialled, state.name
            return _Pending(state, started, dialled)

    async def _waiting(self, attempt: _Attempt, pending: _Pending | None) -> Connected:
        # The rest of connect_now, for a client that waits: for its connect in progress
        # (``pending``) or for a slot in the queue (None), then for the next backends.
        while True:
            if pending is None:
                await self._queued(attempt.client, attempt.deadline, again=attempt.waited)
                attempt.waited = True
            else:
                state, started = pending.state, pending.started
                try:
                    sock = await pending.dialled
                except (LocalError, ConnectError, OperationTimeout) as exc:
                    self._failed(state, exc, attempt)
                else:
                    state.connect_succeeded(time.perf_counter() - started)
                    return sock, state.name
            got = self._next(attempt)
            if isinstance(got, tuple):
                return got
            pending = got

    def _failed(self, state: BackendState, exc: Exception, attempt: _Attempt) -> None:
        # A connect to ``state`` failed: our descriptor limit (not the backend's fault:
        # raised on), or the backend refused or timed out (marked failed; the next one is
        # tried).
        if isinstance(exc, LocalError):
            state.connect_abandoned()
            self._slot_freed(state)
            raise exc
        loop = self.loop or asyncio.get_running_loop()
        if (event := state.connect_failed(str(exc), loop.time())) and self.on_health:
            self.on_health(event)
        self._slot_freed(state)
        attempt.tried.add(state)
        attempt.last = f" (last: {exc})"

    async def _queued(self, client: str, deadline: float, *, again: bool) -> None:
        # Wait for a slot; a client queued, refused or timed out gets its event.
        def queued(waiting: int) -> None:
            if self.on_queue is not None:
                self.on_queue("queued", {"client": client, "waiting": waiting})

        try:
            await self.queue.wait(deadline, again=again, on_queued=queued)
        except (ConnectError, OperationTimeout) as exc:
            kind = "queue_full" if isinstance(exc, ConnectError) else "queue_timeout"
            if self.on_queue is not None:
                self.on_queue(kind, {"client": client, "error": str(exc)})
            raise
        finally:
            self.queue.pump(self.pool.room())  # a slot promised to this client may be free

    def _slot_freed(self, state: BackendState) -> None:
        self.pool.settle(state)
        self.queue.pump(self.pool.room())

    def relay_ended(self, upstream: str, bytes_up: int, bytes_down: int) -> None:
        drained = self.pool.ended(upstream, bytes_up, bytes_down)
        if drained is not None and self.on_drained is not None:
            self.on_drained(drained)
        if self.queue.waiting:  # (no one waits: no room to count)
            self.queue.pump(self.pool.room())

    def room_changed(self) -> None:
        """A backend came up, joined, was enabled or weighs more (a check, the runtime API):
        clients in the queue get whatever room it has."""
        self.queue.pump(self.pool.room())

    def apply(self, backends: Sequence[Backend]) -> PoolChange:
        """Serve ``backends`` from now on (a reload: :meth:`BackendPool.apply`); newcomers
        are checked from now on, removed backends' checks end by themselves, and clients in
        the queue get any new room."""
        change = self.pool.apply(backends, asyncio.get_running_loop().time())
        self.resolve_now()  # the names of the new list, before their first clients
        if self.checker is not None:
            self.checker.states = [s for s in self.checker.states if not s.removed]
            for state in self.pool.states:
                if state not in self.checker.states:
                    self.checker.add(state)
        self.queue.pump(self.pool.room())
        return change

    def queue_snapshot(self) -> dict[str, Any]:
        """The queue's limits and counts (:meth:`QueueCounters.as_dict`), now."""
        return self.queue.counters.as_dict()

    def tls_for(self, upstream: str) -> OnwardTLS | None:
        if self.tls is None:
            return None
        return self.tls.handshake(self.pool.state(upstream).backend)

    def handshake_failed(self, upstream: str, error: NetkitError) -> bool:
        # A backend whose certificate does not verify is as unusable as one that refuses:
        # a failed connect of its own (counted and ejected), and the client goes on to
        # another backend (a redispatch); the connection that carried the handshake is
        # ended by relay_ended, so it is not taken off the active count here.
        state = self.pool.state(upstream)
        state.connect_started()
        now = asyncio.get_running_loop().time()
        if (event := state.connect_failed(str(error), now)) and self.on_health:
            self.on_health(event)
        self.redispatches += 1
        return True

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per backend (:meth:`BackendPool.snapshot`), now."""
        return self.pool.snapshot(asyncio.get_running_loop().time())


def balanced_pool(
    backends: Sequence[Backend],
    *,
    algorithm: str = "roundrobin",
    rise: int = 2,
    fall: int = 3,
    slowstart: float = 0.0,
    seed: int | None = None,
    check_interval: float = DEFAULT_INTERVAL,
    check_timeout: float | None = None,
    probe: CheckProbe = CheckProbe(),
    http: HTTPCheck | None = None,
    send_proxy: int = 0,
    tls: BackendTLS | None = None,
    connect_timeout: float = 5.0,
    on_health: Callable[[HealthEvent], None] | None = None,
    queue: QueueCounters | None = None,
    on_queue: Callable[[str, dict[str, Any]], None] | None = None,
) -> BalancedPool:
    """``lb``'s upstream: ``backends`` under ``algorithm``, with active health checks and the
    queue (``queue``: its limit and timeout, see :class:`BalancedPool`).

    Every backend state change (from a check, or from a refused connect) goes to ``on_health``.
    ``http``, ``send_proxy`` and ``tls`` are :class:`HealthChecker`'s; ``tls`` serves the
    traffic too.

    Raises:
        ConfigError: a bad algorithm, threshold, interval or timeout.
    """
    pool = BackendPool(
        backends, algorithm=algorithm, rise=rise, fall=fall, slowstart=slowstart, seed=seed
    )
    upstream = BalancedPool(
        pool,
        connect_timeout=connect_timeout,
        on_health=on_health,
        tls=tls,
        queue=queue,
        on_queue=on_queue,
    )

    def checked(event: HealthEvent) -> None:
        upstream.room_changed()
        if on_health is not None:
            on_health(event)

    upstream.checker = HealthChecker(
        pool.states,
        interval=check_interval,
        timeout=check_timeout,
        probe=probe,
        http=http,
        send_proxy=send_proxy,
        tls=tls,
        on_event=checked,
    )
    return upstream


COUNTERS = ("active", "total", "failed", "bytes_up", "bytes_down")
"""The fields of a backend's row that worker processes add up."""


def merge_snapshots(snapshots: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Backend rows from several worker processes (each its own pool) as one table, one row
    per backend name in the order first seen: counters added up, the rest (state, weights,
    connect times) as the first worker that has the backend saw them."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in snapshots:
        for row in rows:
            total = merged.get(row["backend"])
            if total is None:
                merged[row["backend"]] = dict(row)
                continue
            for key in COUNTERS:
                total[key] = total.get(key, 0) + row.get(key, 0)
    return list(merged.values())


QUEUE_COUNTERS = ("current", "queued", "timed_out", "refused")
"""The queue counts that worker processes add up (``max`` is the largest of them)."""


def merge_queues(queues: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The queue rows (:meth:`BalancedPool.queue_snapshot`) of several worker processes as
    one: counts added up, ``max`` the largest, the limits as the first worker has them."""
    if not queues:
        return {}
    merged = dict(queues[0])
    for row in queues[1:]:
        for key in QUEUE_COUNTERS:
            merged[key] = merged.get(key, 0) + row.get(key, 0)
        merged["max"] = max(merged.get("max", 0), row.get("max", 0))
    return merged

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
import time
from collections.abc import Callable, Sequence
from typing import Any

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.balance.backends import Backend
from netkit.core.balance.health import CheckProbe, HealthEvent
from netkit.core.balance.pool import BackendPool
from netkit.core.balance.state import BackendState
from netkit.errors import ConnectError, LocalError, OperationTimeout
from netkit.net.connect import connect_raw, translate_connect_error
from netkit.net.health import DEFAULT_INTERVAL, HealthChecker
from netkit.net.resolved import AddressBook, refresh_every

REFRESH_S = DEFAULT_INTERVAL
"""Seconds between two resolutions of a named upstream (``lb``: its check interval)."""


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

    async def dial(self, endpoint: TCPEndpoint | UnixEndpoint, timeout: float) -> socket.socket:
        """A socket connected to ``endpoint``, at its known addresses (resolved only when not
        known yet; a name whose every address failed is resolved anew next time).

        Raises:
            ConnectError, OperationTimeout, ResourceExhausted: as :func:`connect_raw`.
        """
        loop = self.loop or asyncio.get_running_loop()
        known = self.addresses.cached(endpoint)
        if known is None:
            start = loop.time()
            try:
                async with asyncio.timeout(timeout):
                    known = await self.addresses.lookup(endpoint)
            except TimeoutError:
                raise OperationTimeout(f"timed out resolving {endpoint}") from None
            except OSError as exc:
                raise translate_connect_error(exc, str(endpoint)) from exc
            timeout = max(0.0, timeout - (loop.time() - start))
        try:
            return await connect_raw(endpoint, timeout=timeout, addresses=known, loop=loop)
        except ConnectError:
            self.addresses.forget(endpoint)
            raise

    async def connect(self, client: str) -> tuple[socket.socket, str]:
        """A non-blocking socket connected to the upstream for ``client``, and its label.

        Raises:
            ConnectError, OperationTimeout: no upstream could be reached.
            ResourceExhausted: out of descriptors.
        """
        raise NotImplementedError

    def relay_ended(self, upstream: str, bytes_up: int, bytes_down: int) -> None:
        """A relay to ``upstream`` (a label :meth:`connect` returned) ended."""


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

    def retarget(self, endpoint: TCPEndpoint | UnixEndpoint) -> None:
        """Connect to ``endpoint`` from now on."""
        self.endpoint = endpoint
        self.label = str(endpoint)

    def endpoints(self) -> list[TCPEndpoint | UnixEndpoint]:
        return [self.endpoint]

    async def connect(self, client: str) -> tuple[socket.socket, str]:
        return await self.dial(self.endpoint, self.timeout), self.label


def balance_key(client: str) -> str:
    """The part of a client's address a policy hashes: its host (``source``), or the path."""
    return client if client.startswith("unix:") else client.rpartition(":")[0].strip("[]")


class BalancedPool(Upstream):
    """Backends chosen per client by ``pool``'s policy, with failover and health checks (``lb``).

    A backend that refuses a connection (or does not answer within ``connect_timeout``) is
    marked failed and the client is tried on the next one, so a client is never handed a
    backend that refused; active checks bring it back.

    Args:
        pool: the backends and their policy.
        connect_timeout: seconds allowed per backend before trying the next.
        checker: the active health checks, run from :meth:`start` to :meth:`stop`.
        on_health: called with every backend state change the relaying itself causes.
    """

    def __init__(
        self,
        pool: BackendPool,
        *,
        connect_timeout: float,
        checker: HealthChecker | None = None,
        on_health: Callable[[HealthEvent], None] | None = None,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.checker = checker
        self.on_health = on_health

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

    async def connect(self, client: str) -> tuple[socket.socket, str]:
        loop = self.loop or asyncio.get_running_loop()
        tried: set[BackendState] = set()
        last = ""
        while (state := self.pool.choose(balance_key(client), loop.time(), tried)) is not None:
            state.connect_started()
            started = time.perf_counter()  # not loop.time(): 1 ms under uvloop
            try:
                sock = await self.dial(state.backend.endpoint, self.connect_timeout)
            except LocalError:
                state.connect_abandoned()  # our descriptor limit, not the backend's fault
                raise
            except (ConnectError, OperationTimeout) as exc:
                if (event := state.connect_failed(str(exc), loop.time())) and self.on_health:
                    self.on_health(event)
                tried.add(state)
                last = f" (last: {exc})"
                continue
            state.connect_succeeded(time.perf_counter() - started)
            return sock, state.name
        raise ConnectError(f"{self.pool.unavailable(tried)}{last}")

    def relay_ended(self, upstream: str, bytes_up: int, bytes_down: int) -> None:
        self.pool.state(upstream).connection_ended(bytes_up, bytes_down)

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
    connect_timeout: float = 5.0,
    on_health: Callable[[HealthEvent], None] | None = None,
) -> BalancedPool:
    """``lb``'s upstream: ``backends`` under ``algorithm``, with active health checks.

    Every backend state change (from a check, or from a refused connect) goes to ``on_health``.

    Raises:
        ConfigError: a bad algorithm, threshold, interval or timeout.
    """
    pool = BackendPool(
        backends, algorithm=algorithm, rise=rise, fall=fall, slowstart=slowstart, seed=seed
    )
    checker = HealthChecker(
        pool.states, interval=check_interval, timeout=check_timeout, probe=probe, on_event=on_health
    )
    return BalancedPool(pool, connect_timeout=connect_timeout, checker=checker, on_health=on_health)


COUNTERS = ("active", "total", "failed", "bytes_up", "bytes_down")
"""The fields of a backend's row that worker processes add up."""


def merge_snapshots(snapshots: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Backend rows from several worker processes (each its own pool, in command-line order)
    as one table: counters added up, the rest (state, weights, connect times) as the first
    worker saw them."""
    if not snapshots:
        return []
    merged = [dict(row) for row in snapshots[0]]
    for rows in snapshots[1:]:
        for total, row in zip(merged, rows, strict=False):
            for key in COUNTERS:
                total[key] = total.get(key, 0) + row.get(key, 0)
    return merged

"""The control server beside ``lb`` and ``proxy``: the runtime API (``lb --api``) and the
metrics (``--metrics``) on the JSON-over-HTTP/1.1 server that ``proxy --api`` serves toxiproxy's
API with (:mod:`netkit.net.http_api`).

Routes (errors are toxiproxy's ``{"error", "status"}`` body with the status):

* ``GET /backends``: every backend with its health, admin state, weight and counters.
* ``POST /backends`` ``{"backend": "HOST:PORT[,weight=N][,maxconn=N][,backup]"}``: add one; 201.
* ``GET /backends/{backend}``: one (a Unix socket's path percent-encoded: ``unix:%2Frun%2Fb``).
* ``PATCH`` (or ``POST``) ``/backends/{backend}`` ``{"state": "ready"|"drain"|"maint"}``
  (``{"enabled": true|false}`` for ready/maint) and/or ``{"weight": N}``.
* ``DELETE /backends/{backend}``: remove it (its connections finish); 204.
* ``GET /metrics`` (Prometheus text) and ``GET /stats`` (JSON), on ``--metrics`` and ``--api``.

The operations are :class:`~netkit.core.balance.control.PoolControl`'s; each change is an event
on the command's output through the server's event hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from netkit.core.balance.control import Event, PoolControl, drained
from netkit.core.balance.state import BackendState
from netkit.core.http_api import Request, Response, Routes
from netkit.net.http_api import serving_api
from netkit.net.metrics import MetricsRoutes, Relays
from netkit.net.relay import RelayServer
from netkit.net.server import EventHook, Server
from netkit.net.upstreams import BalancedPool

Route = Callable[..., Awaitable[Response]]


class ControlApi:
    """Answers the control routes: the metrics always, the backends when ``pool`` is given."""

    def __init__(
        self,
        relays: Relays,
        pool: BalancedPool | None = None,
        *,
        on_event: EventHook | None = None,
    ) -> None:
        self.routes = Routes[Route]()
        metrics = MetricsRoutes(relays)
        self.routes.add("/metrics", GET=metrics.metrics)
        self.routes.add("/stats", GET=metrics.stats)
        self.on_event = on_event
        self.upstream = pool
        if pool is not None:
            self.control = PoolControl(pool.pool)
            self.routes.add("/backends", GET=self.backends, POST=self.add)
            one = {"GET": self.show, "PATCH": self.change, "POST": self.change}
            self.routes.add("/backends/{backend}", DELETE=self.remove, **one)

    async def __call__(self, request: Request) -> Response:
        """The response to ``request`` (an :class:`ApiError` for every failure)."""
        route, params = self.routes.match(request.method, request.path)
        return await route(request, **params)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()  # the clock the pool's checks use

    def _emit(self, events: list[Event]) -> None:
        if self.on_event is not None:
            for name, fields in events:
                self.on_event(name, fields)

    async def backends(self, request: Request) -> Response:
        """``GET /backends``."""
        return Response.json({"backends": self.control.backends(self._now())})

    async def show(self, request: Request, backend: str) -> Response:
        """``GET /backends/{backend}``."""
        return Response.json(self.control.find(backend).as_dict(self._now()))

    async def add(self, request: Request) -> Response:
        """``POST /backends``: add a backend, checked from now on; 201 with its row."""
        row, events = self.control.add(request.json(), self._now())
        assert self.upstream is not None
        if self.upstream.checker is not None:
            self.upstream.checker.add(self.control.find(row["backend"]))
        self.upstream.room_changed()  # clients in the queue may go to it
        self._emit(events)
        return Response.json(row, status=201)

    async def change(self, request: Request, backend: str) -> Response:
        """``PATCH /backends/{backend}``: admin state and/or weight; 200 with its row."""
        row, events = self.control.change(backend, request.json(), self._now())
        if self.upstream is not None:
            self.upstream.room_changed()  # enabled again: clients in the queue may go to it
        self._emit(events)
        return Response.json(row)

    async def remove(self, request: Request, backend: str) -> Response:
        """``DELETE /backends/{backend}``; 204."""
        _, events = self.control.remove(backend, self._now())
        self._emit(events)
        return Response.empty()


def control_companion(
    sock: socket.socket | Callable[[], socket.socket],
    *,
    name: str,
    relays: Relays | None = None,
    control: bool = False,
) -> Callable[[Server], contextlib.AbstractAsyncContextManager[None]]:
    """What runs beside a relay server: the control server on ``sock``.

    Args:
        sock: the listener, or what gives it in the serving process (a worker's own).
        name: the server's name in the metrics (their ``proxy`` label).
        relays: the relays the metrics cover (default: the server itself, as ``name``).
        control: serve the backends' runtime API too (the server relays to a pool).
    """

    @contextlib.asynccontextmanager
    async def beside(server: Server) -> AsyncIterator[None]:
        pool: BalancedPool | None = None
        relay = server if isinstance(server, RelayServer) else None
        if control:
            assert relay is not None and isinstance(relay.upstream, BalancedPool)
            pool = relay.upstream
        hook = server.on_event
        if pool is not None and hook is not None:
            pool.on_drained = lambda state: _drained(hook, state)
        covered = relays
        if covered is None:  # the command's own relay (proxy's API server has its relays)
            assert relay is not None
            covered = lambda: [(name, relay)]  # noqa: E731
        api = ControlApi(covered, pool, on_event=hook)
        listener = sock if isinstance(sock, socket.socket) else sock()
        async with serving_api(listener, api, on_event=_control_events(hook)):
            yield

    return beside


def _drained(hook: EventHook, state: BackendState) -> None:
    name, fields = drained(state)
    hook(name, fields)


def _control_events(hook: EventHook | None) -> EventHook | None:
    # The control server's own events beside the relay's, told apart: control_connected ...
    if hook is None:
        return None
    return lambda event, fields: hook(f"control_{event}", fields)

"""toxiproxy's HTTP API over a :class:`~netkit.net.proxy_registry.ProxyRegistry`.

:class:`ToxiproxyApi` answers each route of toxiproxy's ``api.go`` with the same status codes
and bodies: ``GET /version``; ``GET/POST /proxies``; ``GET/POST/PATCH/DELETE
/proxies/{proxy}``; ``GET/POST /proxies/{proxy}/toxics``; ``GET/POST/PATCH/DELETE
/proxies/{proxy}/toxics/{toxic}``; ``POST /reset``; ``POST /populate``; and netkit's
extension, ``GET/POST/DELETE /proxies/{proxy}/timeline`` (a fault timeline run by
:class:`~netkit.net.timeline.TimelineRun`). The JSON is read and written by
:mod:`netkit.core.toxiproxy`; requests arrive through
:class:`~netkit.net.http_api.ApiConnection` (see :func:`api_server`).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from netkit.core.http_api import ApiError, Request, Response, Routes
from netkit.core.toxiproxy import (
    TOXIC_EXISTS,
    TOXIC_NOT_FOUND,
    VERSION,
    ProxySpec,
    Toxic,
    api_error,
    bad_body,
    parse_populate,
    parse_proxy,
    parse_timeline,
    parse_toxic,
    update_proxy,
    update_toxic,
)
from netkit.errors import ConfigError, FaultExists, NoSuchFault, Setting
from netkit.net.http_api import api_connection, serving_api
from netkit.net.proxy_registry import ManagedProxy, ProxyRegistry
from netkit.net.relay import RelayServer
from netkit.net.server import EventHook, Server, StreamServer
from netkit.net.timeline import TimelineRun

Route = Callable[..., Awaitable[Response]]


class ToxiproxyApi:
    """Answers toxiproxy's API requests by acting on ``registry``; call it with a request."""

    def __init__(self, registry: ProxyRegistry) -> None:
        self.registry = registry
        self.routes = Routes[Route]()
        add = self.routes.add
        add("/version", GET=self.version)
        add("/reset", POST=self.reset)
        add("/populate", POST=self.populate)
        add("/proxies", GET=self.proxies, POST=self.create)
        proxy = {"GET": self.show, "POST": self.update, "PATCH": self.update}
        add("/proxies/{proxy}", DELETE=self.delete, **proxy)
        add("/proxies/{proxy}/toxics", GET=self.toxics, POST=self.add_toxic)
        toxic = {"GET": self.show_toxic, "POST": self.update_toxic, "PATCH": self.update_toxic}
        add("/proxies/{proxy}/toxics/{toxic}", DELETE=self.remove_toxic, **toxic)
        timeline = {"GET": self.show_timeline, "POST": self.start_timeline}
        add("/proxies/{proxy}/timeline", DELETE=self.stop_timeline, **timeline)
        self.timelines: dict[str, TimelineRun] = {}

    async def __call__(self, request: Request) -> Response:
        """The response to ``request`` (an :class:`ApiError` for every failure)."""
        route, params = self.routes.match(request.method, request.path)
        try:
            return await route(request, **params)
        except FaultExists:
            raise api_error(TOXIC_EXISTS) from None
        except NoSuchFault:
            raise api_error(TOXIC_NOT_FOUND) from None

    # --- the server and its proxies -----------------------------------------------------

    async def version(self, request: Request) -> Response:
        """``GET /version``: toxiproxy's version line (a JSON object, newline-terminated)."""
        body = f'{{"version": "{VERSION}"}}\n'.encode()
        return Response(200, body, (("Content-Type", "application/json;charset=utf-8"),))

    async def reset(self, request: Request) -> Response:
        """``POST /reset``: every proxy enabled, every toxic removed (and every timeline
        stopped); 204."""
        for proxy in list(self.timelines):
            await self._stop_timeline(proxy)
        await self.registry.reset()
        return Response.empty()

    async def populate(self, request: Request) -> Response:
        """``POST /populate``: create (or keep, or replace) each proxy of a JSON array; 201
        with ``{"proxies": [...]}``, or the error's status with the error in that object."""
        done: list[ManagedProxy] | None = None  # toxiproxy: null when nothing was tried
        try:
            done, error = await self.registry.populate(parse_populate(request.json()))
        except ApiError as exc:
            error = exc
        body: dict[str, Any] = {"proxies": None if done is None else [p.as_json() for p in done]}
        if error is None:
            return Response.json(body, status=201)
        return Response.json(
            {"error": str(error), "status": error.status} | body, status=error.status
        )

    async def proxies(self, request: Request) -> Response:
        """``GET /proxies``: every proxy by name."""
        return Response.json({p.spec.name: p.as_json() for p in self.registry})

    async def create(self, request: Request) -> Response:
        """``POST /proxies``: a new proxy; 201 with its JSON."""
        proxy = await self.registry.create(parse_proxy(request.json()))
        return Response.json(proxy.as_json(), status=201)

    async def show(self, request: Request, proxy: str) -> Response:
        """``GET /proxies/{proxy}``."""
        return Response.json(self.registry.get(proxy).as_json())

    async def update(self, request: Request, proxy: str) -> Response:
        """``POST/PATCH /proxies/{proxy}``: enable/disable, move, change the upstream."""
        current = self.registry.get(proxy)
        asked = update_proxy(_with_state(current), request.json())
        return Response.json((await self.registry.update(proxy, asked)).as_json())

    async def delete(self, request: Request, proxy: str) -> Response:
        """``DELETE /proxies/{proxy}``; 204."""
        await self.registry.delete(proxy)
        await self._stop_timeline(proxy)
        return Response.empty()

    # --- toxics -------------------------------------------------------------------------

    async def toxics(self, request: Request, proxy: str) -> Response:
        """``GET /proxies/{proxy}/toxics``: a JSON array."""
        return Response.json(self.registry.get(proxy).as_json()["toxics"])

    async def add_toxic(self, request: Request, proxy: str) -> Response:
        """``POST /proxies/{proxy}/toxics``: a new toxic, live at once; 200 with its JSON."""
        faults = self.registry.get(proxy).server.faults
        toxic = parse_toxic(request.json())
        faults.add(toxic.fault, toxic.name)
        return Response.json(toxic.as_json())

    async def show_toxic(self, request: Request, proxy: str, toxic: str) -> Response:
        """``GET /proxies/{proxy}/toxics/{toxic}``."""
        faults = self.registry.get(proxy).server.faults
        return Response.json(Toxic(toxic, faults.get(toxic)).as_json())

    async def update_toxic(self, request: Request, proxy: str, toxic: str) -> Response:
        """``POST/PATCH /proxies/{proxy}/toxics/{toxic}``: new attributes or toxicity."""
        faults = self.registry.get(proxy).server.faults
        changed = update_toxic(Toxic(toxic, faults.get(toxic)), request.json())
        faults.replace(toxic, changed.fault)
        return Response.json(changed.as_json())

    async def remove_toxic(self, request: Request, proxy: str, toxic: str) -> Response:
        """``DELETE /proxies/{proxy}/toxics/{toxic}``; 204."""
        self.registry.get(proxy).server.faults.remove(toxic)
        return Response.empty()

    # --- netkit's extension: a fault timeline per proxy ------------------------------------

    async def start_timeline(self, request: Request, proxy: str) -> Response:
        """``POST /proxies/{proxy}/timeline``: run a timeline on the proxy from now (in place
        of one running); 200 with it (see :func:`~netkit.core.toxiproxy.parse_timeline`)."""
        managed = self.registry.get(proxy)
        timeline = parse_timeline(request.json())
        try:
            run = TimelineRun(managed.server, timeline)
        except ConfigError as exc:
            raise bad_body(str(exc)) from None
        await self._stop_timeline(proxy)
        run.start()
        self.timelines[proxy] = run
        return Response.json(_timeline_json(run))

    async def show_timeline(self, request: Request, proxy: str) -> Response:
        """``GET /proxies/{proxy}/timeline``: the last timeline started, and whether it runs."""
        self.registry.get(proxy)
        run = self.timelines.get(proxy)
        if run is None:
            raise ApiError("timeline not found", 404)
        return Response.json(_timeline_json(run))

    async def stop_timeline(self, request: Request, proxy: str) -> Response:
        """``DELETE /proxies/{proxy}/timeline``: stop it (its faults stay); 204."""
        self.registry.get(proxy)
        if not await self._stop_timeline(proxy):
            raise ApiError("timeline not found", 404)
        return Response.empty()

    async def _stop_timeline(self, proxy: str) -> bool:
        run = self.timelines.pop(proxy, None)
        if run is not None:
            await run.stop()
        return run is not None


def _timeline_json(run: TimelineRun) -> dict[str, Any]:
    timeline = run.schedule.timeline
    assert timeline is not None
    return {"timeline": timeline.as_dict(), "running": run.running, "elapsed_s": run.elapsed}


def _with_state(proxy: ManagedProxy) -> ProxySpec:
    # The spec with the relay's state now (an update's fields default to it).
    return replace(proxy.spec, enabled=proxy.server.enabled)


def api_server(
    sock: socket.socket, registry: ProxyRegistry, *, on_event: EventHook | None = None
) -> StreamServer:
    """The HTTP server answering toxiproxy's API on ``sock`` (not yet started)."""
    return StreamServer(sock, api_connection(ToxiproxyApi(registry)), on_event=on_event)


def running_api(
    sock: socket.socket, registry: ProxyRegistry, *, on_event: EventHook | None = None
) -> contextlib.AbstractAsyncContextManager[StreamServer]:
    """Serve toxiproxy's API on ``sock`` while inside; drain the API's clients on the way out.

    Args:
        on_event: the API server's own events (clients connecting, refused).
    """
    return serving_api(sock, ToxiproxyApi(registry), on_event=on_event)


def companion(
    registry: ProxyRegistry,
    *,
    api: socket.socket | None = None,
    adopt: ProxySpec | None = None,
    populate: Sequence[ProxySpec] = (),
) -> Callable[[Server], contextlib.AbstractAsyncContextManager[None]]:
    """What runs beside a command's server (``netkit proxy --api``), in its loop.

    Given the server, it reports the registry's events through the server's hook, takes the
    server in as the proxy ``adopt`` names (the proxy from the command line), creates the
    ``populate`` proxies (``--config``), serves the API on ``api`` (unless the server is the
    API itself), and on the way out stops the API and every proxy the registry made.

    Raises:
        ConfigError: a proxy of ``populate`` could not be created (on entering).
    """

    @contextlib.asynccontextmanager
    async def beside(server: Server) -> AsyncIterator[None]:
        registry.on_event = server.on_event
        try:
            if adopt is not None:
                assert isinstance(server, RelayServer)
                registry.adopt(adopt, server)
            _, error = await registry.populate(list(populate))
            if error is not None:
                raise ConfigError((Setting("config"), f": {error}"))
            if api is None:
                yield
            else:
                async with running_api(api, registry, on_event=_api_events(server.on_event)):
                    yield
        finally:
            await registry.close()

    return beside


def _api_events(hook: EventHook | None) -> EventHook | None:
    # The API server's own events beside a proxy's, told apart: api_connected, api_rejected ...
    if hook is None:
        return None
    return lambda event, fields: hook(f"api_{event}", fields)

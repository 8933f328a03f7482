"""Many named proxies in one process, created, changed and deleted while it runs.

:class:`ProxyRegistry` is what toxiproxy calls its proxy collection: each entry is a
:class:`~netkit.net.relay.RelayServer` (the one relay every netkit proxy uses, splice path
included) with the :class:`~netkit.core.toxiproxy.ProxySpec` it was made from. Its methods
are the operations of toxiproxy's API (create, update, delete, reset, populate), with its
errors (:mod:`netkit.core.toxiproxy`); :mod:`netkit.net.toxiproxy` maps HTTP onto them. Every
change is reported through ``on_event``, each event with its proxy's name: ``proxy_created``,
``proxy_deleted``, ``proxies_reset``, and the relay's own (``fault_added``, ``disabled``,
``upstream_changed`` ...).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netkit.core.addresses import UnixEndpoint, parse_stream_endpoint
from netkit.core.fault_set import FaultSet
from netkit.core.http_api import ApiError
from netkit.core.toxiproxy import PROXY_EXISTS, PROXY_NOT_FOUND, ProxySpec, api_error
from netkit.errors import NetkitError, UsageError
from netkit.net.relay import RelayOptions, RelayServer
from netkit.net.server import EventHook, make_listener
from netkit.net.tls import ClientTLS, ServerTLS, client_context, server_context
from netkit.net.upstreams import FixedUpstream


@dataclass
class ManagedProxy:
    """One proxy of a registry: what it was asked to be, and the relay that is it.

    Attributes:
        owned: False for a relay the registry was given (:meth:`ProxyRegistry.adopt`): its
            owner closes it, the registry only stops it.
    """

    spec: ProxySpec
    server: RelayServer
    owned: bool = True

    def as_json(self) -> dict[str, Any]:
        """toxiproxy's JSON for the proxy, its toxics included."""
        return replace(self.spec, enabled=self.server.enabled).as_json(self.server.faults)


def _api_failure(exc: NetkitError) -> ApiError:
    # A request the user can fix is a 400; a listener that cannot bind a 500, as toxiproxy says.
    return ApiError(str(exc), 400 if isinstance(exc, UsageError) else 500)


class ProxyRegistry:
    """The proxies of one process, by name.

    Args:
        template: the relay options every proxy starts from (splice, idle timeout, PROXY
            protocol); a proxy's spec adds its TLS and seed, and its own fault set.
        connect_timeout: seconds allowed to connect to an upstream.
        on_event: receives (event, fields) for every change, ``proxy`` among the fields.
    """

    def __init__(
        self,
        template: RelayOptions | None = None,
        *,
        connect_timeout: float = 10.0,
        on_event: EventHook | None = None,
    ) -> None:
        self.template = template or RelayOptions()
        self.connect_timeout = connect_timeout
        self.on_event = on_event
        self._proxies: dict[str, ManagedProxy] = {}

    def __iter__(self) -> Iterator[ManagedProxy]:
        return iter(list(self._proxies.values()))

    def __len__(self) -> int:
        return len(self._proxies)

    def get(self, name: str) -> ManagedProxy:
        """The proxy called ``name``.

        Raises:
            ApiError: 404, no such proxy.
        """
        proxy = self._proxies.get(name)
        if proxy is None:
            raise api_error(PROXY_NOT_FOUND)
        return proxy

    def emit(self, proxy: str, event: str, fields: dict[str, Any]) -> None:
        """Report an event of ``proxy``."""
        if self.on_event is not None:
            self.on_event(event, {"proxy": proxy, **fields})

    def _hook(self, name: str) -> EventHook:
        return lambda event, fields: self.emit(name, event, fields)

    def adopt(self, spec: ProxySpec, server: RelayServer) -> ManagedProxy:
        """Take in a relay that already runs (the proxy given on the command line).

        Raises:
            ApiError: 409, the name is taken.
        """
        if spec.name in self._proxies:
            raise api_error(PROXY_EXISTS)
        proxy = ManagedProxy(replace(spec, listen=server.address), server, owned=False)
        self._proxies[spec.name] = proxy
        return proxy

    async def create(self, spec: ProxySpec) -> ManagedProxy:
        """Start a proxy as ``spec`` says (listening unless it is disabled).

        Raises:
            ApiError: 409, the name is taken; 400, TLS settings that do not work; 500, the
                address cannot be bound.
        """
        if spec.name in self._proxies:
            raise api_error(PROXY_EXISTS)
        try:
            server = self._build(spec)
        except NetkitError as exc:
            raise _api_failure(exc) from None
        server.start()
        proxy = ManagedProxy(replace(spec, listen=server.address), server)
        self._proxies[spec.name] = proxy
        self.emit(spec.name, "proxy_created", proxy.as_json())
        if not spec.enabled:
            await server.disable()
        return proxy

    def _build(self, spec: ProxySpec) -> RelayServer:
        listen = parse_stream_endpoint(spec.listen)
        target = parse_stream_endpoint(spec.upstream)
        options = replace(
            self.template,
            client_tls=_server_tls(spec.listen_tls),
            upstream_tls=_client_tls(spec.upstream_tls),
            upstream_sni=_sni(spec.upstream_tls, target),
            seed=spec.seed,
            faults=FaultSet(),
        )
        sock = make_listener(listen)
        try:
            return RelayServer(
                sock,
                FixedUpstream(target, timeout=self.connect_timeout),
                options,
                on_event=self._hook(spec.name),
                unix_endpoint=listen if isinstance(listen, UnixEndpoint) else None,
            )
        except BaseException:
            sock.close()
            raise

    async def update(self, name: str, spec: ProxySpec) -> ManagedProxy:
        """Change a proxy's upstream, listen address and state as ``spec`` says.

        A new upstream takes new connections (those open stay where they are); a new listen
        address moves the listener; disabling closes the listener and every connection, as
        toxiproxy does.

        Raises:
            ApiError: 404, no such proxy; 400/500, the new address does not work.
        """
        proxy = self.get(name)
        server = proxy.server
        try:
            if spec.upstream != proxy.spec.upstream:
                server.set_upstream(parse_stream_endpoint(spec.upstream))
                proxy.spec = replace(proxy.spec, upstream=spec.upstream)
            if _moves(proxy.spec.listen, spec.listen):
                await server.relisten(parse_stream_endpoint(spec.listen))
                proxy.spec = replace(proxy.spec, listen=server.address)
            if spec.enabled and not server.enabled:
                await server.enable()
            elif not spec.enabled and server.enabled:
                await server.disable()
        except NetkitError as exc:
            raise _api_failure(exc) from None
        return proxy

    async def delete(self, name: str) -> None:
        """Stop a proxy (its listener and every connection) and forget it.

        Raises:
            ApiError: 404, no such proxy.
        """
        proxy = self.get(name)
        del self._proxies[name]
        await _stop(proxy)
        self.emit(name, "proxy_deleted", {})

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (toxiproxy's ``POST /reset``)."""
        for proxy in self:
            if not proxy.server.enabled:
                with contextlib.suppress(NetkitError):  # toxiproxy goes on past a bind error
                    await proxy.server.enable()
            proxy.server.faults.clear()
        if self.on_event is not None:
            self.on_event("proxies_reset", {"proxies": list(self._proxies)})

    async def populate(self, specs: list[ProxySpec]) -> tuple[list[ManagedProxy], ApiError | None]:
        """Create each proxy, replacing one of the same name that listens or relays elsewhere
        (one that does not is kept as it is, toxics and all).

        Returns:
            The proxies created or kept, in order, and the error that stopped the rest.
        """
        done: list[ManagedProxy] = []
        for spec in specs:
            existing = self._proxies.get(spec.name)
            try:
                if existing is not None and not _differs(existing.spec, spec):
                    done.append(existing)
                    continue
                if existing is not None:
                    await self.delete(spec.name)
                done.append(await self.create(spec))
            except ApiError as exc:
                return done, exc
        return done, None

    async def close(self) -> None:
        """Stop every proxy the registry made (the process is shutting down); forget all."""
        for name in list(self._proxies):
            proxy = self._proxies.pop(name)
            if proxy.owned:
                await _stop(proxy)


async def _stop(proxy: ManagedProxy) -> None:
    # toxiproxy's stop: the listener closes and every connection with it, at once.
    proxy.server.close_listener()
    await proxy.server.cut()
    if proxy.owned:
        await proxy.server.close()


def _moves(current: str, asked: str) -> bool:
    # Whether ``asked`` names another address than the one bound (port 0: a new port).
    try:
        return parse_stream_endpoint(asked) != parse_stream_endpoint(current)
    except NetkitError:
        return True


def _differs(current: ProxySpec, asked: ProxySpec) -> bool:
    return current.upstream != asked.upstream or _moves(current.listen, asked.listen)


def _server_tls(settings: dict[str, Any] | None) -> ssl.SSLContext | None:
    if settings is None:
        return None
    tls = ServerTLS(
        cert=Path(settings["cert"]) if "cert" in settings else None,
        key=Path(settings["key"]) if "key" in settings else None,
        self_signed=settings.get("self_signed", False),
    )
    return server_context(tls)[0]


def _client_tls(settings: dict[str, Any] | None) -> ssl.SSLContext | None:
    if settings is None:
        return None
    tls = ClientTLS(
        enabled=True,
        cacert=Path(settings["cacert"]) if "cacert" in settings else None,
        insecure=settings.get("insecure", False),
        server_hostname=settings.get("server_hostname"),
    )
    return client_context(tls)


def _sni(settings: dict[str, Any] | None, target: object) -> str | None:
    if settings is None:
        return None
    return settings.get("server_hostname") or getattr(target, "host", None) or "localhost"

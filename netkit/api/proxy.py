"""The proxy and the load balancer as async context managers: netkit's relay inside a program.

``async with proxy(upstream) as p:`` listens (a free loopback port by default) and relays every
connection to ``upstream`` through :class:`~netkit.net.relay.RelayServer`, the relay behind
``netkit proxy``. ``p`` is a :class:`Proxy`: the address it really bound, the relay totals,
and the faults, which change while connections run (``p.add(Latency(100))``, ``p.clear()``)
and take effect on live connections at once; ``await p.cut()`` closes every relayed connection
and refuses new ones until ``await p.restore()`` listens again on the same address.

``async with load_balancer(backends) as lb:`` spreads connections over backends with ``netkit
lb``'s policies, failover and health checks; ``lb`` is a :class:`LoadBalancer` with its
address and the live backend table.

Leaving the block stops listening and closes whatever connection is still open
(``drain_timeout`` seconds of grace first, none by default).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from netkit.api.faults import FaultControls, timelines
from netkit.api.servers import Listening, TLSSetting, server_tls
from netkit.core.access import AccessList, unix_socket_error
from netkit.core.addresses import TCPEndpoint, UnixEndpoint, parse_stream_endpoint
from netkit.core.balance.backends import Backend, parse_backend
from netkit.core.balance.checks import parse_check
from netkit.core.balance.health import CheckProbe
from netkit.core.fault_set import FaultSet
from netkit.core.faults import Fault
from netkit.core.proxy_protocol import Accept
from netkit.core.timeline import Timeline
from netkit.errors import ConfigError
from netkit.net.backend_tls import with_tls
from netkit.net.proxy_header import HEADER_TIMEOUT
from netkit.net.relay import RelayOptions, RelayServer
from netkit.net.server import EventHook, make_listener, running
from netkit.net.upstreams import BalancedPool, FixedUpstream, Upstream, balanced_pool

StreamEndpoint = TCPEndpoint | UnixEndpoint


class HasAddress(Protocol):
    """Anything with an ``address`` (a running server's handle)."""

    @property
    def address(self) -> Any:
        """Where it listens."""


Target = str | tuple[str, int] | TCPEndpoint | UnixEndpoint | os.PathLike[str] | HasAddress
"""Where to connect: ``"127.0.0.1:8080"``, ``"unix:/run/app.sock"``, ``("::1", 8080)``, an
endpoint, a :class:`pathlib.Path` (a Unix socket), or a running server's handle."""


def stream_endpoint(target: Target) -> StreamEndpoint:
    """The TCP or Unix endpoint ``target`` names.

    Raises:
        EndpointError: a string that is not ``HOST:PORT`` or ``unix:/path``.
        ConfigError: something that names no stream endpoint.
    """
    if isinstance(target, TCPEndpoint | UnixEndpoint):
        return target
    if isinstance(target, str):
        return parse_stream_endpoint(target)
    if isinstance(target, tuple) and len(target) >= 2:
        return TCPEndpoint(str(target[0]), int(target[1]))
    if isinstance(target, os.PathLike):
        return UnixEndpoint(os.fspath(target))
    address = getattr(target, "address", None)
    if address is not None and address is not target:
        return stream_endpoint(address)
    raise ConfigError(f"{target!r} names no stream endpoint (use HOST:PORT or unix:/path)")


@dataclass(frozen=True)
class RelayTotals:
    """What a proxy or load balancer relayed so far, open connections included.

    Attributes:
        connections: clients accepted.
        active: connections open now.
        rejected: clients turned away (over ``max_connections``).
        denied: clients turned away at accept by the ``allow``/``deny`` lists.
        bytes_up: bytes delivered client → upstream.
        bytes_down: bytes delivered upstream → client.
        undelivered: bytes received but never delivered (connections that ended early).
        faults_injected: faults drawn for connections.
        upstream_failures: clients whose upstream could not be reached.
        proxy_headers_rejected: clients closed for a missing or bad PROXY header (with
            ``accept_proxy_protocol``).
    """

    connections: int
    active: int
    rejected: int
    denied: int
    bytes_up: int
    bytes_down: int
    undelivered: int
    faults_injected: int
    upstream_failures: int
    proxy_headers_rejected: int = 0


class RelayHandle(Listening):
    """What a running proxy and a running load balancer both have: where they listen (see
    :class:`~netkit.api.servers.Listening`: ``address``, ``host``, ``port``, ``path``, TLS)
    and the relay totals."""

    def __init__(self, server: RelayServer, *, ca_file: Path | None = None) -> None:
        super().__init__(server.address, tls=server.options.client_tls is not None, ca_file=ca_file)
        self.server = server

    @property
    def totals(self) -> RelayTotals:
        """The relay totals now (bytes of open connections included)."""
        stats = self.server.stats
        relays = [r for r in self.server.connections.values() if r is not None]
        return RelayTotals(
            connections=stats.accepted,
            active=len(self.server.connections),
            rejected=stats.rejected,
            denied=stats.denied,
            bytes_up=stats.bytes_up + sum(r.record.up.delivered for r in relays),
            bytes_down=stats.bytes_down + sum(r.record.down.delivered for r in relays),
            undelivered=stats.undelivered,
            faults_injected=stats.faults,
            upstream_failures=stats.failed_upstream,
            proxy_headers_rejected=stats.bad_proxy_headers,
        )


class Proxy(RelayHandle, FaultControls):
    """A running proxy (what :func:`proxy` yields): its address, faults and totals.

    Fault changes apply to every open connection from that moment and to new ones; refuse
    and accept-delay faults act on connections made after the change.
    """

    @property
    def fault_set(self) -> FaultSet:
        """The relay's own fault set (internal: change faults through the methods)."""
        return self.server.faults

    @property
    def relay(self) -> RelayServer:
        """The running relay (internal)."""
        return self.server

    @property
    def upstream(self) -> str:
        """Where new connections are relayed to."""
        upstream = self.server.upstream
        assert isinstance(upstream, FixedUpstream)
        return upstream.label

    def set_upstream(self, upstream: Target) -> None:
        """Relay new connections to ``upstream`` from now on (open ones stay where they are).

        Raises:
            EndpointError, ConfigError: ``upstream`` names no stream endpoint.
        """
        self.server.set_upstream(stream_endpoint(upstream))

    @property
    def enabled(self) -> bool:
        """False between :meth:`cut` and :meth:`restore`."""
        return self.server.enabled

    async def cut(self) -> None:
        """Close every relayed connection and stop listening: new connections are refused."""
        await self.server.disable()

    async def restore(self) -> None:
        """Listen again on the same address after :meth:`cut` (nothing when listening)."""
        await self.server.enable()


class LoadBalancer(RelayHandle):
    """A running load balancer (what :func:`load_balancer` yields): address, backends, totals."""

    @property
    def backends(self) -> list[dict[str, Any]]:
        """One row per backend, in the order given: ``backend``, ``state`` (up/down), ``role``,
        ``weight``, ``active``, ``total``, ``failed``, bytes each way, connect times."""
        pool = self.server.upstream
        assert isinstance(pool, BalancedPool)
        return pool.snapshot()


@asynccontextmanager
async def _relaying(
    upstream: Upstream,
    options: RelayOptions,
    *,
    listen: Target,
    max_connections: int | None,
    access: AccessList,
    on_event: EventHook | None,
    drain_timeout: float,
    before_start: Callable[[RelayServer], None] = lambda server: None,
) -> AsyncIterator[RelayServer]:
    # One relay server's life (the one lifecycle, net/server.py's running); a block that
    # raises cuts every relayed connection too, so none outlives the block.
    where = stream_endpoint(listen)
    if access and isinstance(where, UnixEndpoint):
        raise unix_socket_error()
    sock = make_listener(where)
    try:
        server = RelayServer(
            sock,
            upstream,
            options,
            max_connections=max_connections,
            on_event=on_event,
            unix_endpoint=where if isinstance(where, UnixEndpoint) else None,
        )
        server.restrict(access)
        before_start(server)
    except BaseException:
        sock.close()
        raise
    async with running(server, drain_timeout=drain_timeout):
        try:
            yield server
        except BaseException:
            server.stop_accepting()
            await server.cut()
            raise


def _accepting(accept: str | int | None, timeout: float) -> dict[str, Any]:
    if timeout <= 0:
        raise ConfigError(f"proxy_header_timeout must be more than 0 seconds, not {timeout}")
    return {
        "accept_proxy_protocol": None if accept is None else Accept.parse(accept),
        "proxy_header_timeout": timeout,
    }


def _named(faults: Iterable[Fault] | Mapping[str, Fault]) -> list[tuple[str | None, Fault]]:
    if isinstance(faults, Mapping):
        return list(faults.items())
    return [(None, fault) for fault in faults]


@asynccontextmanager
async def proxy(
    upstream: Target,
    *,
    listen: Target = "127.0.0.1:0",
    faults: Iterable[Fault] | Mapping[str, Fault] = (),
    tls: TLSSetting = None,
    upstream_tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    proxy_protocol: int = 0,
    accept_proxy_protocol: str | int | None = None,
    proxy_header_timeout: float = HEADER_TIMEOUT,
    splice: bool = True,
    connect_timeout: float = 10.0,
    idle_timeout: float | None = None,
    max_connections: int | None = None,
    allow: Iterable[str] | str = (),
    deny: Iterable[str] | str = (),
    seed: int | None = None,
    timeline: Timeline | str | None = None,
    on_event: EventHook | None = None,
    drain_timeout: float = 0.0,
) -> AsyncIterator[Proxy]:
    """Run a proxy with faults in front of ``upstream`` for the duration of the block.

    ``async with proxy("127.0.0.1:6379", faults=[Latency(50)]) as p:`` then connect to
    ``p.address``; change the faults with ``p.add``, ``p.replace``, ``p.remove``,
    ``p.clear``, and take the proxy down and up with ``await p.cut()`` / ``await p.restore()``.

    Args:
        upstream: where to relay each connection (TCP or a Unix socket).
        listen: where to listen; port 0 picks a free port (see :attr:`Proxy.address`).
        faults: the faults to start with, or a mapping of name to fault.
        tls: terminate TLS from clients: True (a throwaway self-signed certificate: see
            :attr:`Proxy.ca_file`), a :class:`~netkit.net.tls.ServerTLS` or an
            :class:`ssl.SSLContext`.
        upstream_tls: speak TLS to the upstream with this client context.
        server_hostname: the name the upstream's certificate must have (default: its host).
        proxy_protocol: send a PROXY header (version 1 or 2) to the upstream first; 0: none.
        accept_proxy_protocol: ``"v1"``, ``"v2"`` or ``"any"``: every client must first send
            a PROXY header of that version (HAProxy's ``send-proxy``); the client it names is
            the one in events and in the header sent onward. A client without a valid one is
            closed (event ``proxy_header_rejected`` with the reason). None: no header is read.
        proxy_header_timeout: seconds a client has to send that header.
        splice: relay with ``os.splice`` when no fault touches the bytes (Linux).
        connect_timeout: seconds allowed to connect to the upstream.
        idle_timeout: close connections silent both ways for this many seconds.
        max_connections: clients beyond this are reset.
        allow, deny: networks or addresses (``"10.0.0.0/8"``, ``"::1"``) to serve only, and
            never to serve (deny wins), as :class:`~netkit.core.access.AccessList` checks
            them; a denied client is reset at accept (a ``denied`` event).
        seed: seed for fault probabilities and jitter (repeatable runs).
        timeline: faults that change on time, from the start of the block (see
            :meth:`Proxy.run_timeline`): a :class:`~netkit.core.timeline.Timeline` or its text.
        on_event: called with (event, fields) for each event (``fault``, ``closed``, ...).
        drain_timeout: seconds open connections get to finish when the block ends.

    Raises:
        BindError: ``listen`` cannot be bound.
        ConfigError, EndpointError: a bad address or option.
    """
    target = stream_endpoint(upstream)
    access = AccessList(allow, deny)
    client_tls, ca_file = server_tls(tls)
    if server_hostname is None:
        server_hostname = target.host if isinstance(target, TCPEndpoint) else "localhost"
    options = RelayOptions(
        client_tls=client_tls,
        upstream_tls=upstream_tls,
        upstream_sni=server_hostname,
        splice=splice,
        proxy_protocol=proxy_protocol,
        **_accepting(accept_proxy_protocol, proxy_header_timeout),
        idle_timeout=idle_timeout,
        seed=seed,
    )

    def add_faults(server: RelayServer) -> None:
        for name, fault in _named(faults):
            server.faults.add(fault, name)

    async with (
        _relaying(
            FixedUpstream(target, timeout=connect_timeout),
            options,
            listen=listen,
            max_connections=max_connections,
            access=access,
            on_event=on_event,
            drain_timeout=drain_timeout,
            before_start=add_faults,
        ) as server,
        timelines(Proxy(server, ca_file=ca_file), timeline) as handle,
    ):
        yield handle


def _backend(spec: Backend | Target) -> Backend:
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, str):
        return parse_backend(spec)
    return Backend(stream_endpoint(spec))


@asynccontextmanager
async def load_balancer(
    backends: Iterable[Backend | Target],
    *,
    listen: Target = "127.0.0.1:0",
    policy: str = "roundrobin",
    check_interval: float = 2.0,
    check_timeout: float | None = None,
    rise: int = 2,
    fall: int = 3,
    check_send: bytes = b"",
    check_expect: str | None = None,
    check: str = "tcp",
    check_send_proxy: bool = False,
    backend_tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    slowstart: float = 0.0,
    connect_timeout: float = 5.0,
    proxy_protocol: int = 0,
    accept_proxy_protocol: str | int | None = None,
    proxy_header_timeout: float = HEADER_TIMEOUT,
    splice: bool = True,
    idle_timeout: float | None = None,
    max_connections: int | None = None,
    allow: Iterable[str] | str = (),
    deny: Iterable[str] | str = (),
    seed: int | None = None,
    on_event: EventHook | None = None,
    drain_timeout: float = 0.0,
) -> AsyncIterator[LoadBalancer]:
    """Run a load balancer over ``backends`` for the duration of the block.

    ``async with load_balancer(["127.0.0.1:8001", "127.0.0.1:8002,weight=3"]) as lb:``
    then connect to ``lb.address``. A backend that refuses a connection is taken out at once
    and the client is tried on the next one; active health checks bring it back.

    Args:
        backends: each ``"ENDPOINT[,weight=N][,maxconn=N][,backup][,tls][,sni=NAME]"``, a
            :class:`~netkit.core.balance.backends.Backend`, or any address :func:`proxy` takes.
        listen: where to listen; port 0 picks a free port.
        policy: ``roundrobin`` (weighted), ``leastconn``, ``random`` (power of two choices)
            or ``source`` (consistent hash of the client's address).
        check_interval: seconds between two health checks of one backend.
        check_timeout: seconds one check may take (default: the interval).
        rise: passing checks in a row that bring a backend up.
        fall: failing checks in a row that take a backend down.
        check_send: bytes a check sends after connecting.
        check_expect: a regular expression the reply must match (default: connecting is
            enough); with an HTTP ``check``, the status codes that pass (``"200"``, ``"2xx"``).
        check: ``"tcp"``, or ``"http:/PATH"``: a ``GET PATH`` whose answer's status is judged
            (HAProxy's ``option httpchk``; 2xx and 3xx pass by default).
        check_send_proxy: start each check with a PROXY header (``proxy_protocol``'s version,
            else v1); with ``proxy_protocol`` checks send it anyway (HAProxy's default).
        backend_tls: speak TLS to every backend with this client context (or only to backends
            written ``HOST:PORT,tls``, when some are); checks speak it too.
        server_hostname: the name TLS backends' certificates must have (default: each one's
            host, or its ``sni=NAME``).
        slowstart: seconds over which a recovered backend ramps up to its weight.
        connect_timeout: seconds allowed per backend before trying the next.
        proxy_protocol: send a PROXY header (version 1 or 2) to the backend first; 0: none.
        accept_proxy_protocol: read a PROXY header from each client first, as :func:`proxy`
            does; the ``source`` policy hashes the client it names.
        proxy_header_timeout: seconds a client has to send that header.
        splice: relay with ``os.splice`` (Linux).
        idle_timeout: close connections silent both ways for this many seconds.
        max_connections: clients beyond this are reset.
        allow, deny: networks or addresses to serve only, and never to serve (see
            :func:`proxy`).
        seed: seed for the ``random`` policy.
        on_event: called with (event, fields) for each event, ``health`` included.
        drain_timeout: seconds open connections get to finish when the block ends.

    Raises:
        BindError: ``listen`` cannot be bound.
        ConfigError, EndpointError: a bad backend, policy or option.
    """
    access = AccessList(allow, deny)
    http_check = parse_check(check, check_expect)
    probe = CheckProbe(check_send, None)
    if check_expect is not None and http_check is None:
        probe = CheckProbe(check_send, CheckProbe.parse(expect=check_expect).expect)
    pool_backends, tls = with_tls([_backend(b) for b in backends], backend_tls, server_hostname)

    def health(event: Any) -> None:
        if on_event is not None:
            on_event("health", event.as_dict())

    pool = balanced_pool(
        pool_backends,
        algorithm=policy,
        rise=rise,
        fall=fall,
        slowstart=slowstart,
        seed=seed,
        check_interval=check_interval,
        check_timeout=check_timeout,
        probe=probe,
        http=http_check,
        send_proxy=proxy_protocol or (1 if check_send_proxy else 0),
        tls=tls,
        connect_timeout=connect_timeout,
        on_health=health,
    )
    options = RelayOptions(
        splice=splice,
        proxy_protocol=proxy_protocol,
        **_accepting(accept_proxy_protocol, proxy_header_timeout),
        idle_timeout=idle_timeout,
        seed=seed,
    )
    async with _relaying(
        pool,
        options,
        listen=listen,
        max_connections=max_connections,
        access=access,
        on_event=on_event,
        drain_timeout=drain_timeout,
    ) as server:
        yield LoadBalancer(server)

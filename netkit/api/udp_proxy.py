"""The UDP relay as an async context manager: netkit's datagram fault proxy inside a program.

``async with udp_proxy("127.0.0.1:5353", faults=[Loss(0.3)], seed=1) as p:`` listens (a free
loopback port by default) and relays each client's datagrams to the upstream through
:class:`~netkit.net.udp_relay.UDPRelayServer`, the relay behind ``netkit proxy udp://...``:
one upstream socket per client flow, so each reply reaches the client that caused it, and
datagrams pass whole. ``p`` is a :class:`UDPProxy`: the address it really bound, the seed of
its fault draws (the same seed and datagrams give the same faults), its totals, and the
faults, which change while flows run (``p.add(Duplicate(0.1))``, ``p.clear()``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from netkit.api.faults import FaultControls, timelines
from netkit.api.servers import Listening
from netkit.core.access import AccessList
from netkit.core.addresses import UDPEndpoint, parse_datagram_endpoint
from netkit.core.fault_set import FaultSet
from netkit.core.faults import Fault
from netkit.core.timeline import Timeline
from netkit.net.server import EventHook, running
from netkit.net.sockets import SocketOptions, create_udp_socket, listener_address
from netkit.net.udp_relay import (
    MAX_FLOWS,
    RECEIVE_BUFFER,
    UDPRelayOptions,
    UDPRelayServer,
    resolve_upstream,
)


class UDPProxy(Listening, FaultControls):
    """A running UDP proxy (what :func:`udp_proxy` yields): its address, seed, faults, totals.

    Fault changes apply to every open flow from that moment and to new ones.
    """

    def __init__(self, server: UDPRelayServer) -> None:
        super().__init__(listener_address(server.sock))
        self.server: UDPRelayServer = server

    @property
    def fault_set(self) -> FaultSet:
        """The relay's own fault set (internal: change faults through the methods)."""
        return self.server.faults

    @property
    def relay(self) -> UDPRelayServer:
        """The running relay (internal)."""
        return self.server

    @property
    def seed(self) -> int:
        """The seed of every fault draw (given, or picked at start)."""
        return self.server.seed

    @property
    def stats(self) -> dict[str, Any]:
        """The totals so far, open flows included, as ``netkit proxy udp://... --json`` sums
        them up: ``flows``, ``datagrams_up``, ``datagrams_down``, ``bytes_up``,
        ``bytes_down``, ``faults_injected``, ``dropped_by_faults`` ..."""
        server = self.server
        stats: dict[str, Any] = server.stats.with_open(server.connections.values()).as_dict()
        return stats


def _endpoint(target: str | tuple[str, int] | UDPEndpoint) -> UDPEndpoint:
    if isinstance(target, UDPEndpoint):
        return target
    if isinstance(target, tuple):
        return UDPEndpoint(str(target[0]), int(target[1]))
    return parse_datagram_endpoint(target)


@asynccontextmanager
async def udp_proxy(
    upstream: str | tuple[str, int] | UDPEndpoint,
    *,
    listen: str | tuple[str, int] | UDPEndpoint = "127.0.0.1:0",
    faults: Iterable[Fault] | Mapping[str, Fault] = (),
    seed: int | None = None,
    idle_timeout: float | None = 600.0,
    max_flows: int = MAX_FLOWS,
    timeline: Timeline | str | None = None,
    allow: Iterable[str] | str = (),
    deny: Iterable[str] | str = (),
    on_event: EventHook | None = None,
    drain_timeout: float = 0.0,
) -> AsyncIterator[UDPProxy]:
    """Run a UDP relay with faults in front of ``upstream`` for the duration of the block.

    Args:
        upstream: where to relay datagrams: ``HOST:PORT`` or ``udp://HOST:PORT``, or a tuple.
        listen: where to listen; port 0 picks a free port (see :attr:`UDPProxy.address`).
        faults: datagram faults (:class:`~netkit.core.datagram_faults.Loss`, ...) and
            :class:`~netkit.core.faults.Latency`, or a mapping of name to fault.
        seed: seed of the fault draws; None picks one (:attr:`UDPProxy.seed`).
        idle_timeout: close a flow silent both ways this long (seconds); None: never.
        max_flows: flows open at once; datagrams of further clients are dropped and counted.
        timeline: faults that change on time, from the start of the block (see
            :meth:`UDPProxy.run_timeline`): a :class:`~netkit.core.timeline.Timeline` or its text.
        allow, deny: networks or addresses to relay for only, and never to relay for (deny
            wins; see :func:`~netkit.api.servers.echo_server`): a denied source opens no
            flow and gets no reply (``denied`` in :attr:`UDPProxy.stats` counts its
            datagrams; a ``denied`` event reports it once).
        on_event: receives ``(event, fields)`` for each event (``flow_opened``,
            ``datagram_fault``, ``flow_closed`` ...), as ``--json`` prints them.
        drain_timeout: seconds open flows may go on quietly after the block.

    Raises:
        EndpointError: an endpoint that is not UDP.
        ConfigError: a fault a UDP relay does not take, or a bad setting.
        BindError: ``listen`` cannot be bound.
        ConnectError: ``upstream`` does not resolve.
    """
    access = AccessList(allow, deny)
    fault_set = FaultSet()
    named = faults.items() if isinstance(faults, Mapping) else ((None, f) for f in faults)
    for name, fault in named:
        fault_set.add(fault, name)
    target = resolve_upstream(_endpoint(upstream))
    sock, _ = create_udp_socket(
        _endpoint(listen), bind=True, options=SocketOptions(rcvbuf=RECEIVE_BUFFER)
    )
    options = UDPRelayOptions(idle_timeout=idle_timeout, faults=fault_set, seed=seed)
    try:
        server = UDPRelayServer(sock, target, options, max_flows=max_flows, on_event=on_event)
        server.restrict(access)
    except BaseException:
        sock.close()
        raise
    async with (
        running(server, drain_timeout=drain_timeout),
        timelines(UDPProxy(server), timeline) as handle,
    ):
        yield handle

"""A relay server's changes while it runs: stop and start listening, listen elsewhere, send
new connections to another upstream (toxiproxy's ``enabled``, ``listen`` and ``upstream``).

:class:`RelayChanges` is the part of :class:`~netkit.net.relay.RelayServer` that makes
them; each change is reported as an event. The server says how its connections are ended
when it is disabled (:meth:`RelayChanges._end_all`).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.errors import ConfigError, NetkitError
from netkit.net.server import Server
from netkit.net.upstreams import FixedUpstream, Upstream

Endpoint = TCPEndpoint | UnixEndpoint


class RelayChanges(Server):
    """Changes to a relay server while it runs (see :class:`~netkit.net.relay.RelayServer`).

    Attributes:
        enabled: False while disabled (not listening).
        upstream: where new connections go.
    """

    enabled: bool
    upstream: Upstream
    _listen: Callable[[Endpoint], socket.socket]
    _endpoint: Endpoint

    async def _end_all(self, reason: str, *, abort: bool) -> int:
        """End every connection (RST with ``abort``, else close); how many were ended."""
        raise NotImplementedError

    async def disable(self) -> None:
        """Stop listening and close every relayed connection (toxiproxy's ``enabled: false``).

        New clients are refused until :meth:`enable`; clients still being connected to the
        upstream are dropped; relays end with a FIN (an RST where bytes could not be flushed),
        and their undelivered bytes are counted, as always.
        """
        if not self.enabled:
            return
        self.enabled = False
        self.close_listener()
        closed = await self._end_all("proxy disabled", abort=False)
        self.emit("disabled", {"address": self.address, "closed": closed})

    async def enable(self) -> None:
        """Listen again, on the address the server had (a port 0 keeps the port it got).

        Raises:
            BindError: the address is taken now.
        """
        if self.enabled:
            return
        self._listen_at(self._endpoint)
        self.enabled = True
        self.emit("enabled", {"address": self.address})

    async def relisten(self, endpoint: Endpoint) -> None:
        """Listen on ``endpoint`` instead (when disabled: from :meth:`enable` on).

        Live connections go on. When the new address cannot be bound, the server listens
        where it did and the error is raised.

        Raises:
            BindError: ``endpoint`` cannot be bound.
        """
        previous = self.address
        if self.enabled:
            try:
                self._listen_at(endpoint)
            except NetkitError:
                with contextlib.suppress(NetkitError):
                    self._listen_at(self._endpoint)
                raise
        else:
            self._endpoint = endpoint
            self.address = str(endpoint)
        self.emit("relistened", {"address": self.address, "previous": previous})

    def _listen_at(self, endpoint: Endpoint) -> None:
        # The old listener is closed first: the new address may be the same port.
        self.close_listener()
        sock = self._listen(endpoint)
        unix = endpoint if isinstance(endpoint, UnixEndpoint) else None
        self.listen_on(sock, unix)
        self._endpoint = bound_endpoint(sock, unix)

    def set_upstream(self, endpoint: Endpoint) -> None:
        """Send new connections to ``endpoint`` (live ones stay where they are).

        Raises:
            ConfigError: the server relays to a balanced pool, not one upstream.
        """
        upstream = self.upstream
        if not isinstance(upstream, FixedUpstream):
            raise ConfigError("this relay balances a pool of backends: it has no one upstream")
        previous = upstream.label
        upstream.retarget(endpoint)
        self.emit("upstream_changed", {"upstream": upstream.label, "previous": previous})


def bound_endpoint(sock: socket.socket, unix: UnixEndpoint | None) -> Endpoint:
    """Where a listener is bound, to bind there again (a port 0 became a real port)."""
    if unix is not None:
        return unix
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        if isinstance(name, bytes):  # an abstract socket: its name starts with NUL
            return UnixEndpoint(name[1:].decode(errors="surrogateescape"), abstract=True)
        return UnixEndpoint(name)
    host, port = sock.getsockname()[:2]
    return TCPEndpoint(host, port)

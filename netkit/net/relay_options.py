"""How a relay server relays (:class:`RelayOptions`) and what it counts (:class:`RelayStats`).

Shared by ``proxy`` and ``lb`` (:class:`~netkit.net.relay.RelayServer`, which re-exports both).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from netkit.core.fault_set import FaultSet
from netkit.core.faults import Fault
from netkit.core.proxy_protocol import Accept
from netkit.net.proxy_header import HEADER_TIMEOUT
from netkit.net.server import ServerStats
from netkit.net.splice import SPLICE_AVAILABLE


@dataclass
class RelayOptions:
    """How a :class:`RelayServer` relays.

    Attributes:
        client_tls: terminate TLS from clients with this context.
        upstream_tls: originate TLS to the upstream with this context.
        upstream_sni: server name for the upstream TLS handshake.
        splice: use ``os.splice`` where possible.
        proxy_protocol: send a PROXY header (1 or 2) to the upstream first, or 0.
        accept_proxy_protocol: read a PROXY header of these versions from each client first
            (the client it names is the one reported, hashed and sent onward), or None.
        proxy_header_timeout: seconds a client has to send that header.
        idle_timeout: close relays idle this long (seconds), or None.
        faults: the faults drawn per connection: a list (each under its default name) or a
            :class:`~netkit.core.fault_set.FaultSet` the caller keeps changing; the server's
            :attr:`RelayServer.faults` is that set.
        seed: RNG seed for fault draws and jitter (repeatable runs).
    """

    client_tls: ssl.SSLContext | None = None
    upstream_tls: ssl.SSLContext | None = None
    upstream_sni: str | None = None
    splice: bool = True
    proxy_protocol: int = 0
    accept_proxy_protocol: Accept | None = None
    proxy_header_timeout: float = HEADER_TIMEOUT
    idle_timeout: float | None = None
    faults: list[Fault] | FaultSet = field(default_factory=list)
    seed: int | None = None

    def can_splice(self, *, client_tls: bool) -> bool:
        """True when relays will use ``os.splice`` (plain sockets on both sides, Linux)."""
        return self.splice and SPLICE_AVAILABLE and not client_tls and not self.upstream_tls


@dataclass
class RelayStats(ServerStats):
    """A relay server's totals: bytes each way, undelivered bytes, upstream failures, faults."""

    failed_upstream: int = 0
    bad_proxy_headers: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    undelivered: int = 0
    faults: int = 0

    SUMMARY = (
        ("connections", "accepted"),
        ("rejected", "rejected"),
        ("upstream_failures", "failed_upstream"),
        ("proxy_headers_rejected", "bad_proxy_headers"),
        ("peak_connections", "peak"),
        ("bytes_up", "bytes_up"),
        ("bytes_down", "bytes_down"),
        ("undelivered_bytes", "undelivered"),
        ("faults_injected", "faults"),
        ("accept_errors", "accept_errors"),
        ("uptime_s", "uptime"),
        ("cut_at_drain", "aborted_at_drain"),
    )

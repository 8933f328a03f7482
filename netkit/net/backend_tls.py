"""TLS to ``lb``'s backends: which backends get it, with which context and server name.

One client context (:func:`netkit.net.tls.client_context`: the system store or ``--cacert``,
a client certificate for mutual TLS, ``--insecure``) serves every TLS backend; each backend
has its own server name: its ``sni=`` option, else ``--backend-sni``, else its host (a name is
sent as SNI and verified; an IP address is verified against the certificate's IP entries and
not sent, as RFC 6066 3 wants). The relay and the health checks ask the same object, so a
check verifies exactly what the traffic will.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace

from netkit.core.addresses import TCPEndpoint
from netkit.core.balance.backends import Backend
from netkit.net.tls import ClientTLS, client_context


@dataclass(frozen=True)
class BackendTLS:
    """The TLS settings for backends that ask for TLS (:attr:`Backend.tls`).

    Attributes:
        context: the client context every TLS backend is reached with.
        sni: the server name for every backend without its own ``sni=`` (None: its host).
    """

    context: ssl.SSLContext
    sni: str | None = None

    def server_name(self, backend: Backend) -> str:
        """The name ``backend``'s handshake sends (when a name) and verifies."""
        if backend.sni is not None:
            return backend.sni
        if self.sni is not None:
            return self.sni
        endpoint = backend.endpoint
        return endpoint.host if isinstance(endpoint, TCPEndpoint) else "localhost"

    def handshake(self, backend: Backend) -> tuple[ssl.SSLContext, str] | None:
        """(context, server name) for ``backend``, or None when it is reached in plain text."""
        return (self.context, self.server_name(backend)) if backend.tls else None


def with_tls(
    backends: Sequence[Backend], context: ssl.SSLContext | None, sni: str | None = None
) -> tuple[list[Backend], BackendTLS | None]:
    """Which backends speak TLS, and with what (``lb --backend-tls``, ``load_balancer()``).

    With ``context``, every backend does, unless some ask for TLS themselves
    (``HOST:PORT,tls``): then only those. Without it, only those that ask, verified against
    the system's CAs. None for the TLS when no backend speaks it.
    """
    if not any(b.tls for b in backends):
        if context is None:
            return list(backends), None
        backends = [replace(b, tls=True) for b in backends]
    if context is None:
        context = client_context(ClientTLS(True))
    return list(backends), BackendTLS(context, sni)

"""Reaching a WebSocket URL the way ws-client is told to: through an HTTP proxy, following
redirects (``-L``), with TLS chosen per URL (a redirect may go from ws:// to wss://).

:class:`Dialer` holds what every attempt needs; :meth:`Dialer.open` makes one attempt, which
may take several connections when the server redirects. ws-client's ``--reconnect`` calls it
again for each try (:mod:`netkit.net.ws_reconnect`).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from netkit.core.addresses import WSURL
from netkit.core.ws.http import UpgradeRefused
from netkit.core.ws.redirect import RedirectChain, RedirectPolicy
from netkit.core.ws.tunnel import ProxyURL
from netkit.errors import ConfigError
from netkit.net.tls import ClientTLS, client_context
from netkit.net.ws_client import WebSocketClientConnection, connect_ws

# TLS for a URL: the context (None for ws://) and the name to check the certificate against.
TLSChoice = tuple[ssl.SSLContext | None, str | None]


def tls_per_url(tls: ClientTLS | ssl.SSLContext | None) -> Callable[[WSURL], TLSChoice]:
    """TLS for each URL a dialer reaches: ``tls`` (a context, or settings; None: the system's
    CAs) for wss://, none for ws://. The context is built once, when first needed (a redirect
    may lead from ws:// to wss://)."""
    contexts: dict[bool, TLSChoice] = {False: (None, None)}

    def choose(url: WSURL) -> TLSChoice:
        if url.secure not in contexts:
            if isinstance(tls, ssl.SSLContext):
                contexts[True] = (tls, None)
            else:
                settings = tls if tls is not None else ClientTLS(enabled=True)
                contexts[True] = (client_context(settings), settings.server_hostname)
        return contexts[url.secure]

    return choose


@dataclass
class Dialer:
    """How to open a client connection to ``url``.

    Attributes:
        url: where to connect first.
        connection: a new connection (its upgrade request) for a URL.
        tls: the TLS settings for a URL.
        proxy: an HTTP proxy to tunnel through (TCP URLs only).
        redirects: follow redirects this way (None: a redirect is a refused upgrade).
        timeout: the opening deadline of each connection (None: none).
        retry_for: keep retrying refused connections this long (``--retry``).
        on_redirect: told ``(status, from, to)`` for each redirect followed.
    """

    url: WSURL
    connection: Callable[[WSURL], WebSocketClientConnection]
    tls: Callable[[WSURL], TLSChoice]
    proxy: ProxyURL | None = None
    redirects: RedirectPolicy | None = None
    timeout: float | None = 10.0
    retry_for: float = 0.0
    on_redirect: Callable[[int, WSURL, WSURL], None] | None = None

    def __post_init__(self) -> None:
        if self.proxy is not None and self.url.unix_path is not None:
            raise ConfigError("a proxy reaches TCP hosts: it cannot be used with ws+unix:// URLs")

    async def open(self) -> WebSocketClientConnection:
        """Connect and finish the opening handshake, following redirects as told.

        Raises:
            What :func:`~netkit.net.ws_client.connect_ws` raises; PeerProtocolError for a
            redirect refused (a loop, too many, a downgrade from TLS).
        """
        chain = RedirectChain(self.url, self.redirects)
        while True:
            url = chain.url
            ctx, server_hostname = self.tls(url)
            try:
                return await connect_ws(
                    url,
                    functools.partial(self.connection, url),
                    ssl_context=ctx,
                    server_hostname=server_hostname,
                    timeout=self.timeout,
                    retry_for=self.retry_for,
                    proxy=self.proxy if url.unix_path is None else None,
                )
            except UpgradeRefused as refused:
                target = chain.follow(refused)
                if target is None:
                    raise
                if self.on_redirect is not None:
                    self.on_redirect(refused.status_code, url, target)

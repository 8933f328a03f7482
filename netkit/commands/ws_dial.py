"""ws-client's flags for reaching a server: ``--reconnect`` and its back-off, ``--resend``,
``--proxy`` and ``-L``, declared once as :class:`DialFlags` (spliced into the command by
:func:`dial_flags`), and the events they report (``reconnect``, ``redirect``).

The behaviour is elsewhere: :mod:`netkit.core.ws.reconnect`, :mod:`netkit.core.ws.tunnel`,
:mod:`netkit.core.ws.redirect`, :mod:`netkit.net.ws_dial`, :mod:`netkit.net.ws_reconnect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer
from rich.markup import escape

from netkit.commands import options as opt
from netkit.console import Output
from netkit.core.addresses import WSURL
from netkit.core.units import parse_duration
from netkit.core.ws.reconnect import ReconnectPlan, ResendPolicy
from netkit.core.ws.redirect import RedirectPolicy
from netkit.core.ws.tunnel import ProxyURL, parse_proxy_url
from netkit.errors import ConfigError
from netkit.net.ws_reconnect import ReconnectAttempt

Reconnect = Annotated[
    bool,
    typer.Option(
        "--reconnect",
        help="When the connection fails or drops (no close frame, or the server closes with 1001 or 1011-1014, or the upgrade is answered 429/5xx), connect again after a jittered exponential back-off; the input goes on where it stopped (see --resend). Each try is a 'reconnect' event.",
    ),
]
ReconnectAttempts = Annotated[
    int | None,
    typer.Option(
        "--reconnect-attempts",
        min=0,
        help="With --reconnect: give up after this many tries in a row (counted again once a connection opens); the last failure sets the exit status. Default: no limit.",
    ),
]
ReconnectDelay = Annotated[
    str,
    typer.Option(
        "--reconnect-delay",
        help="With --reconnect: the first back-off; each next one doubles, each drawn between half and all of it.",
    ),
]
ReconnectMaxDelay = Annotated[
    str,
    typer.Option("--reconnect-max-delay", help="With --reconnect: the longest back-off."),
]
Resend = Annotated[
    ResendPolicy,
    typer.Option(
        "--resend",
        help="With --reconnect, what a new connection sends again. A sent message is acknowledged once any message arrives after it. none: nothing (at most once); unacknowledged: the messages sent after the last one that arrived (at least once); all: everything sent so far.",
    ),
]
Proxy = Annotated[
    str | None,
    typer.Option(
        "--proxy",
        help="Connect through this HTTP proxy with CONNECT: http://[USER:PASS@]HOST:PORT (basic auth); wss:// runs TLS to the server through the tunnel.",
    ),
]
Location = Annotated[
    bool,
    typer.Option(
        "--location",
        "-L",
        help="Follow redirects of the upgrade (301, 302, 303, 307, 308; http -> ws, https -> wss).",
    ),
]
MaxRedirects = Annotated[
    int,
    typer.Option("--max-redirects", min=0, help="With -L: the most redirects followed."),
]
AllowInsecureRedirect = Annotated[
    bool,
    typer.Option(
        "--allow-insecure-redirect",
        help="With -L: follow a redirect from wss:// (or https://) to plain ws://.",
    ),
]


@dataclass(frozen=True)
class DialFlags:
    """ws-client's reconnect, proxy and redirect flags (see :func:`dial_flags`)."""

    reconnect: Reconnect = False
    reconnect_attempts: ReconnectAttempts = None
    reconnect_delay: ReconnectDelay = "500ms"
    reconnect_max_delay: ReconnectMaxDelay = "30s"
    resend: Resend = ResendPolicy.NONE
    proxy: Proxy = None
    location: Location = False
    max_redirects: MaxRedirects = 10
    allow_insecure_redirect: AllowInsecureRedirect = False

    def plan(self) -> ReconnectPlan | None:
        """The reconnect plan, or None without ``--reconnect`` (``--reconnect-attempts``
        implies it)."""
        if not (self.reconnect or self.reconnect_attempts is not None):
            return None
        first = parse_duration(self.reconnect_delay, option="--reconnect-delay", positive=True)
        cap = parse_duration(
            self.reconnect_max_delay, option="--reconnect-max-delay", positive=True
        )
        if cap < first:
            raise ConfigError("--reconnect-max-delay is shorter than --reconnect-delay")
        return ReconnectPlan(first=first, cap=cap, attempts=self.reconnect_attempts)

    def proxy_url(self) -> ProxyURL | None:
        """``--proxy``, parsed."""
        return parse_proxy_url(self.proxy) if self.proxy is not None else None

    def redirects(self) -> RedirectPolicy | None:
        """How ``-L`` follows redirects (None: it was not given)."""
        if not self.location:
            return None
        return RedirectPolicy(self.max_redirects, self.allow_insecure_redirect)


def dial_flags(command: opt.Command) -> opt.Command:
    """Give ``command`` the :class:`DialFlags` in place of its ``dial`` parameter."""
    return opt.flag_group(DialFlags, "dial")(command)


def report_redirect(out: Output, status: int, source: WSURL, target: WSURL) -> None:
    """A redirect was followed (-L): a ``redirect`` event."""
    out.event("redirect", None, status=status, url=str(source), location=str(target))


def report_retry(out: Output, retry: ReconnectAttempt) -> None:
    """A connection is tried again (--reconnect) after ``retry.delay`` seconds: a
    ``reconnect`` event, and a line on stderr for people."""
    error = retry.error.describe(opt.flag_name)[0] if retry.error else retry.closed
    out.event(
        "reconnect",
        None,
        attempt=retry.attempt,
        max_attempts=retry.limit,
        delay_s=round(retry.delay, 3),
        reason=retry.reason.value,
        error=error,
        resent=retry.rewind.resent,
        unacknowledged_dropped=retry.rewind.dropped,
    )
    if not out.json:
        of = f" of {retry.limit}" if retry.limit is not None else ""
        out.err.print(
            escape(f"reconnecting in {retry.delay:.2f}s (attempt {retry.attempt}{of}): {error}")
        )

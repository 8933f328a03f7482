"""What every server command does the same way: listen, report, serve, drain, summarize.

Used by tcp-echo, and by every later server command, so that listeners, TLS, workers, drain
and output behave identically everywhere.
"""

from __future__ import annotations

import signal
import ssl
from collections.abc import Callable
from typing import Any

from rich.markup import escape

from netkit.console import Output
from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.units import format_size
from netkit.net import runtime
from netkit.net.server import (
    ServerConnection,
    ServerStats,
    make_listener,
    serve_until_signal,
)
from netkit.net.sockets import (
    SocketOptions,
    descriptors_needed,
    listener_address,
    raise_nofile_limit,
    unlink_unix_listener,
)
from netkit.net.tls import ServerTLS, server_context
from netkit.net.workers import run_workers
from netkit.status import ExitStatus


def check_open_files(out: Output, max_connections: int | None, *, per_connection: int) -> int:
    """Raise the open-files limit to the hard limit; warn when --max-connections needs more.

    Returns:
        The limit now in force.
    """
    soft, _ = raise_nofile_limit()
    if max_connections is not None:
        needed = descriptors_needed(max_connections, per_connection)
        if needed > soft:
            out.warn(
                f"the open-files limit is {soft}, --max-connections {max_connections} needs about "
                f"{needed}: raise it (ulimit -n {needed}) or expect accepting to pause"
            )
    return soft


def run_server(
    out: Output,
    *,
    name: str,
    endpoint: TCPEndpoint | UnixEndpoint,
    factory: Callable[[], ServerConnection],
    tls: ServerTLS,
    workers: int = 1,
    drain_timeout: float = 10.0,
    max_connections: int | None = None,
    socket_mode: int | None = 0o660,
    options: SocketOptions = SocketOptions(),
    details: dict[str, Any] | None = None,
    url: Callable[[str, bool], str] | None = None,
) -> ExitStatus:
    """Run a stream server command until SIGINT/SIGTERM and print its events and summary.

    Args:
        name: the command, for human output (``tcp-echo``).
        factory: builds one connection protocol; called inside the serving process.
        details: extra fields for the ``listening`` event (mode, limits ...).
        url: builds the ``url`` field of the ``listening`` event from the bound address and
            whether TLS is on (ws://..., for servers whose clients take URLs).

    Returns:
        SUCCESS after SIGTERM, INTERRUPTED after SIGINT.
    """
    details = details or {}
    details["max_open_files"] = check_open_files(out, max_connections, per_connection=1)
    ssl_context: ssl.SSLContext | None = None
    ca_file = None
    if tls.enabled:
        ssl_context, ca_file = server_context(tls)
    unix = endpoint if isinstance(endpoint, UnixEndpoint) else None
    first = make_listener(
        endpoint, reuse_port=workers > 1, socket_mode=socket_mode, options=options
    )
    socks = [first]
    if workers > 1 and unix is None:
        bound = TCPEndpoint(endpoint.host, first.getsockname()[1])  # type: ignore[union-attr]
        socks += [
            make_listener(bound, reuse_port=True, options=options) for _ in range(workers - 1)
        ]
    address = listener_address(first)
    scheme = "tls" if ssl_context else ("unix" if unix else "tcp")

    def announce(_: str) -> None:
        fields: dict[str, Any] = {
            "address": address,
            "transport": scheme,
            "loop": runtime.loop_name(),
            "workers": workers,
            **details,
        }
        if ca_file is not None:
            fields["ca_file"] = str(ca_file)
        shown = address
        if url is not None:
            fields["url"] = shown = url(address, ssl_context is not None)
        human = f"[bold]{name}[/] listening on [cyan]{escape(shown)}[/]"
        extras = ", ".join(f"{k} {v}" for k, v in details.items() if v not in (None, False))
        human += f" ({escape(extras)}{', ' if extras else ''}{runtime.loop_name()}"
        human += f", {workers} workers)" if workers > 1 else ")"
        if ca_file is not None:
            human += f"\nself-signed TLS: clients can trust [cyan]{escape(str(ca_file))}[/]"
        human += "\n[dim]Ctrl-C or SIGTERM to stop[/]"
        out.event("listening", human, **fields)

    def on_event(event: str, fields: dict[str, Any]) -> None:
        if not out.json and event == "accept_paused":
            out.warn(f"not accepting for now: {fields['error']} (raise the open-files limit?)")
        elif not out.json and event == "rejected":
            answer = f" with {fields['status']}" if "status" in fields else ""
            out.warn(f"{fields['peer']}: refused{answer}: {fields['reason']}")
        elif not out.json and "error" in fields:
            out.warn(f"{fields['peer']}: {fields['error']}")
        out.event(event, None, **fields)

    def on_draining(active: int) -> None:
        human = f"draining {active} connection(s), up to {drain_timeout:g}s" if active else None
        out.event("draining", human, active=active, timeout_s=drain_timeout)

    def serve(
        sock_index: int, listening: Callable[[str], None] | None
    ) -> tuple[int, dict[str, Any]]:
        sock = socks[sock_index if unix is None else 0]
        try:
            result = runtime.run(
                lambda: serve_until_signal(
                    sock,
                    factory,
                    ssl_context=ssl_context,
                    max_connections=max_connections,
                    drain_timeout=drain_timeout,
                    unix_endpoint=unix if sock_index == 0 else None,
                    on_listening=listening,
                    on_event=on_event,
                    on_draining=on_draining if listening else None,
                )
            )
        finally:
            out.flush()  # lines buffered for later: a worker ends in os._exit (no atexit)
        code = ExitStatus.INTERRUPTED if result.interrupted else ExitStatus.SUCCESS
        return int(code), result.stats.as_dict()

    if workers == 1:
        code, summary = serve(0, announce)
        stats = ServerStats()
        stats.merge(summary)
        uptime = summary.get("uptime_s", 0.0)
    else:
        codes, summaries, signum = run_workers(
            workers, lambda i: serve(i, None), on_started=lambda: announce(address)
        )
        for sock in socks:
            sock.close()
        if unix is not None:
            unlink_unix_listener(unix)
        stats = ServerStats()
        for s in summaries:
            stats.merge(s)
        uptime = max((s.get("uptime_s", 0.0) for s in summaries), default=0.0)
        code = ExitStatus.INTERRUPTED if signum == signal.SIGINT else max(codes, default=0)
    summary = stats.as_dict() | {"uptime_s": uptime}
    out.event(
        "summary",
        f"served {stats.accepted} connection(s): {format_size(stats.bytes_in)} in, "
        f"{format_size(stats.bytes_out)} out, {stats.errors} error(s)"
        + (f", {stats.rejected} rejected" if stats.rejected else "")
        + (f", {stats.aborted_at_drain} cut at drain" if stats.aborted_at_drain else ""),
        **summary,
    )
    return ExitStatus(code)

"""What ``proxy`` and ``lb`` share: run a RelayServer until a signal, report, drain, summarize."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from netkit.commands.serving import check_open_files
from netkit.console import Output
from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.units import format_size
from netkit.net import runtime
from netkit.net.relay import RelayOptions, RelayServer, UpstreamConnector
from netkit.net.server import make_listener
from netkit.net.sockets import SocketOptions, unlink_unix_listener
from netkit.status import ExitStatus


def status_line(
    server: RelayServer, previous: tuple[float, int, int]
) -> tuple[Text, tuple[float, int, int]]:
    """One line of live stats: connections, bytes each way and the current rates."""
    t = server.totals
    live_up = sum(r.record.up.delivered for r in server.relays.values() if r is not None)
    live_down = sum(r.record.down.delivered for r in server.relays.values() if r is not None)
    up, down = t.bytes_up + live_up, t.bytes_down + live_down
    now = time.perf_counter()
    then, up0, down0 = previous
    span = max(now - then, 1e-6)
    text = Text.assemble(
        ("connections ", "dim"), f"{len(server.relays)} active / {t.accepted} total",
        ("   up ", "dim"), f"{format_size(up)} ({format_size((up - up0) / span)}/s)",
        ("   down ", "dim"), f"{format_size(down)} ({format_size((down - down0) / span)}/s)",
    )  # fmt: skip
    if t.failed_upstream:
        text.append(f"   upstream failures {t.failed_upstream}", "yellow")
    return text, (now, up, down)


def run_relay(
    out: Output,
    *,
    name: str,
    listen: TCPEndpoint | UnixEndpoint,
    connect_upstream: Callable[[], UpstreamConnector],
    options: RelayOptions,
    max_connections: int | None,
    drain_timeout: float,
    socket_mode: int | None,
    sockopts: SocketOptions,
    details: dict[str, Any],
    on_start: Callable[[RelayServer], Callable[[], Awaitable[None]] | None] | None = None,
    final: Callable[[], dict[str, Any]] | None = None,
    extra_status: Callable[[], RenderableType | None] | None = None,
) -> ExitStatus:
    """Serve until SIGINT/SIGTERM: the listening event, live stats on a terminal, a summary.

    Args:
        connect_upstream: called inside the loop; returns the connector for each client.
        on_start: called with the running server (lb starts its health checks there); may
            return a coroutine function to await at shutdown.
        final: extra fields for the summary (lb's per-backend table).
    """
    # A relay holds two sockets (pipes come from a pool, only while bytes are in flight).
    details = details | {"max_open_files": check_open_files(out, max_connections, per_connection=2)}
    sock = make_listener(listen, socket_mode=socket_mode, options=sockopts)
    unix = listen if isinstance(listen, UnixEndpoint) else None

    def on_event(event: str, fields: dict[str, Any]) -> None:
        if not out.json:
            if event == "upstream_failed":
                out.warn(f"{fields['client']}: {fields['error']}")
            elif event == "closed" and "undelivered" in fields:
                out.warn(
                    f"connection {fields['id']} ended ({fields['end']}) with bytes undelivered: {fields['undelivered']}"
                )
            elif event == "accept_paused":
                out.warn(f"accept paused: {fields['error']} (too many open files?)")
        out.event(event, None, **fields)

    async def main() -> tuple[bool, dict[str, Any]]:
        shutdown = runtime.ShutdownSignal()
        shutdown.install()
        server = RelayServer(
            sock,
            connect_upstream(),
            options,
            max_connections=max_connections,
            on_event=on_event,
        )
        server.start()
        cleanup = on_start(server) if on_start is not None else None
        human = f"[bold]{name}[/] listening on [cyan]{escape(server.address)}[/]"
        extras = ", ".join(f"{k} {v}" for k, v in details.items() if v not in (None, False, "", []))
        human += f" ({escape(extras)})" if extras else ""
        human += "\n[dim]Ctrl-C or SIGTERM to stop[/]"
        out.event(
            "listening",
            human,
            address=server.address,
            transport="tls" if options.client_tls else ("unix" if unix else "tcp"),
            splice=server.splice,
            loop=runtime.loop_name(),
            **details,
        )
        try:
            if out.interactive:
                previous = (time.perf_counter(), 0, 0)
                with Live(console=out.out, refresh_per_second=2, transient=True) as live:
                    while not shutdown.requested.is_set():
                        line, previous = status_line(server, previous)
                        more = extra_status() if extra_status else None
                        live.update(Group(line, more) if more is not None else line)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1.0):
                                await shutdown.requested.wait()
            else:
                await shutdown.requested.wait()
            server.stop_accepting()  # before "draining" is announced: from then on, refused
            active = len(server.relays)
            out.event(
                "draining",
                f"draining {active} connection(s), up to {drain_timeout:g}s" if active else None,
                active=active,
                timeout_s=drain_timeout,
            )
            cut = await server.drain(drain_timeout, shutdown.forced)
        finally:
            if cleanup is not None:
                await cleanup()
            shutdown.uninstall()
            sock.close()
            if unix is not None:
                unlink_unix_listener(unix)
        extra = final() if final is not None else {}
        return shutdown.interrupted, server.totals.as_dict() | {"cut_at_drain": cut} | extra

    interrupted, summary = runtime.run(main)
    out.event(
        "summary",
        f"relayed {summary['connections']} connection(s): {format_size(summary['bytes_up'])} up, "
        f"{format_size(summary['bytes_down'])} down"
        + (
            f", {summary['upstream_failures']} upstream failure(s)"
            if summary["upstream_failures"]
            else ""
        )
        + (
            f", {summary['faults_injected']} fault(s) injected"
            if summary["faults_injected"]
            else ""
        )
        + (
            f", {summary['undelivered_bytes']} bytes undelivered"
            if summary["undelivered_bytes"]
            else ""
        ),
        **summary,
    )
    return ExitStatus.INTERRUPTED if interrupted else ExitStatus.SUCCESS

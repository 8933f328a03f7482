"""The one presenter of a server's lifecycle: listen, report, serve, drain, summarize.

Every server command (tcp-echo, ws-server, proxy, lb) hands :func:`run_server` a way to build
its server (a :class:`~netkit.net.server.Server`) and how to word its summary, so that
listeners, TLS, ``--workers``, the events, the drain and the summary behave identically
everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
import ssl
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from netkit.commands.options import ServerFlags
from netkit.console import Output
from netkit.core.access import unix_socket_error
from netkit.core.addresses import TCPEndpoint, UDPEndpoint, UnixEndpoint
from netkit.core.units import format_size
from netkit.net import loop_choice, runtime
from netkit.net.relay import RelayOptions, RelayServer, RelayStats
from netkit.net.server import (
    EventHook,
    Server,
    ServerConnection,
    ServerStats,
    StreamServer,
    StreamStats,
    make_listener,
    serve_until_signal,
)
from netkit.net.sockets import (
    SocketOptions,
    create_udp_socket,
    descriptors_needed,
    listener_address,
    raise_nofile_limit,
    unlink_unix_listener,
)
from netkit.net.tls import server_context
from netkit.net.upstreams import Upstream
from netkit.net.workers import merge_summaries, run_workers
from netkit.status import ExitStatus


class BuildServer(Protocol):
    """Builds the server on a listening socket, inside the serving process's event loop."""

    def __call__(
        self,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int | None,
        on_event: EventHook,
        unix_endpoint: UnixEndpoint | None,
        listen: Callable[[TCPEndpoint | UnixEndpoint], socket.socket],
    ) -> Server: ...


Companion = Callable[[Server], AbstractAsyncContextManager[Any]]
"""What runs beside a server in its loop (see :func:`run_server`)."""


def together(*companions: Companion | None) -> Companion | None:
    """One companion that runs each given one beside the server, entered in order (proxy's
    ``--api`` and ``--timeline``); None when none is given."""
    given = [c for c in companions if c is not None]
    if len(given) <= 1:
        return given[0] if given else None

    @contextlib.asynccontextmanager
    async def beside(server: Server) -> Any:
        async with contextlib.AsyncExitStack() as stack:
            for companion in given:
                await stack.enter_async_context(companion(server))
            yield

    return beside


@dataclass
class Presentation:
    """How a kind of server is shown: its summary line, and optionally more.

    Attributes:
        summarize: the human summary line, from the summary's JSON fields.
        stats: the server's totals, for a summary with every field when no worker sent one.
        status: given the running server, renders a live status line (on a terminal).
        final: extra summary fields, read once the server has drained (lb's backends).
        merge: how to merge those extra fields across worker processes, by field.
    """

    summarize: Callable[[dict[str, Any]], str]
    stats: Callable[[], ServerStats]
    status: Callable[[Server], Callable[[], RenderableType]] | None = None
    final: Callable[[], dict[str, Any]] | None = None
    merge: dict[str, Callable[[list[Any]], Any]] = field(default_factory=dict)


def stream_summary(s: dict[str, Any]) -> str:
    """The summary line of a stream server (tcp-echo, ws-server)."""
    return (
        f"served {s['connections']} connection(s): {format_size(s['bytes_in'])} in, "
        f"{format_size(s['bytes_out'])} out, {s['errors']} error(s)"
        + (f", {s['rejected']} rejected" if s["rejected"] else "")
        + (f", {s['denied']} denied" if s.get("denied") else "")
        + (f", {s['aborted_at_drain']} cut at drain" if s["aborted_at_drain"] else "")
    )


def relay_summary(s: dict[str, Any]) -> str:
    """The summary line of a relay server (proxy, lb)."""
    return (
        f"relayed {s['connections']} connection(s): {format_size(s['bytes_up'])} up, "
        f"{format_size(s['bytes_down'])} down"
        + (f", {s['upstream_failures']} upstream failure(s)" if s["upstream_failures"] else "")
        + (f", {s['denied']} denied" if s.get("denied") else "")
        + (
            f", {s['proxy_headers_rejected']} client(s) without a valid PROXY header"
            if s.get("proxy_headers_rejected")
            else ""
        )
        + (f", {s['faults_injected']} fault(s) injected" if s["faults_injected"] else "")
        + (f", {s['undelivered_bytes']} bytes undelivered" if s["undelivered_bytes"] else "")
    )


STREAM = Presentation(stream_summary, StreamStats)


def build_stream(factory: Callable[[], ServerConnection]) -> BuildServer:
    """Builds a :class:`StreamServer` whose connections ``factory`` makes."""
    return lambda sock, *, listen, **common: StreamServer(sock, factory, **common)


def build_relay(upstream: Upstream, options: RelayOptions) -> BuildServer:
    """Builds a :class:`RelayServer` to ``upstream``, TLS from clients as the listener has it
    (and a listener made as the first was when it is enabled again or moved)."""
    return lambda sock, *, ssl_context, **common: RelayServer(
        sock, upstream, replace(options, client_tls=ssl_context), **common
    )


def relay_status(
    more: Callable[[], RenderableType | None] | None = None,
) -> Callable[[Server], Callable[[], RenderableType]]:
    """A live status for a relay server: :func:`status_line`, and ``more`` under it."""

    def for_server(server: Server) -> Callable[[], RenderableType]:
        assert isinstance(server, RelayServer)
        previous = (time.perf_counter(), 0, 0)

        def render() -> RenderableType:
            nonlocal previous
            line, previous = status_line(server, previous)
            extra = more() if more is not None else None
            return Group(line, extra) if extra is not None else line

        return render

    return for_server


def status_line(
    server: RelayServer, previous: tuple[float, int, int]
) -> tuple[Text, tuple[float, int, int]]:
    """One line of live stats: connections, bytes each way and the current rates."""
    t = server.stats
    relays = [r for r in server.connections.values() if r is not None]
    up = t.bytes_up + sum(r.record.up.delivered for r in relays)
    down = t.bytes_down + sum(r.record.down.delivered for r in relays)
    now = time.perf_counter()
    then, up0, down0 = previous
    span = max(now - then, 1e-6)
    text = Text.assemble(
        ("connections ", "dim"), f"{len(server.connections)} active / {t.accepted} total",
        ("   up ", "dim"), f"{format_size(up)} ({format_size((up - up0) / span)}/s)",
        ("   down ", "dim"), f"{format_size(down)} ({format_size((down - down0) / span)}/s)",
    )  # fmt: skip
    if t.failed_upstream:
        text.append(f"   upstream failures {t.failed_upstream}", "yellow")
    return text, (now, up, down)


RELAY = Presentation(relay_summary, RelayStats, status=relay_status())


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


def _listeners(
    endpoint: TCPEndpoint | UnixEndpoint | UDPEndpoint,
    workers: int,
    socket_mode: int | None,
    options: SocketOptions,
) -> list[socket.socket]:
    # One listener per worker on one port (SO_REUSEPORT); a Unix socket is shared by all;
    # a UDP server has its bound socket (one process: its flows live in that process).
    if isinstance(endpoint, UDPEndpoint):
        return [create_udp_socket(endpoint, bind=True, options=options)[0]]
    first = make_listener(
        endpoint, reuse_port=workers > 1, socket_mode=socket_mode, options=options
    )
    socks = [first]
    if workers > 1 and isinstance(endpoint, TCPEndpoint):
        bound = TCPEndpoint(endpoint.host, first.getsockname()[1])
        socks += [
            make_listener(bound, reuse_port=True, options=options) for _ in range(workers - 1)
        ]
    return socks


def _transport(endpoint: TCPEndpoint | UnixEndpoint | UDPEndpoint, tls: bool) -> str:
    # The listening event's "transport".
    if isinstance(endpoint, UDPEndpoint):
        return "udp"
    return "tls" if tls else ("unix" if isinstance(endpoint, UnixEndpoint) else "tcp")


def _print_event(out: Output) -> EventHook:
    def on_event(event: str, fields: dict[str, Any]) -> None:
        if not out.json:
            who = fields.get("peer", fields.get("client"))
            if event == "accept_paused":
                out.warn(f"not accepting for now: {fields['error']} (raise the open-files limit?)")
            elif event == "denied":
                out.warn(f"{who}: denied ({fields['rule']})")
            elif event in ("rejected", "proxy_header_rejected"):
                answer = f" with {fields['status']}" if "status" in fields else ""
                out.warn(f"{who}: refused{answer}: {fields['reason']}")
            elif event == "closed" and "undelivered" in fields:
                out.warn(
                    f"connection {fields['id']} ended ({fields['end']}) with bytes undelivered: {fields['undelivered']}"
                )
            elif "error" in fields and who is not None:
                out.warn(f"{who}: {fields['error']}")
        out.event(event, _change_line(event, fields) if not out.json else None, **fields)

    # Without --json a closed connection is shown only when bytes went undelivered.
    setattr(on_event, "quiet_events", frozenset() if out.json else frozenset({"closed"}))  # noqa: B010
    return on_event


# Changes made while a server runs (proxy --api, the Python API): one human line each.
_CHANGES = {
    "proxy_created": "proxy created, listening on {listen}",
    "proxy_deleted": "proxy deleted",
    "proxies_reset": "every proxy enabled, every fault removed",
    "fault_added": "fault {name} added",
    "fault_updated": "fault {name} changed",
    "fault_removed": "fault {name} removed",
    "faults_cleared": "faults cleared",
    "disabled": "disabled (not listening, connections closed)",
    "enabled": "enabled, listening on {address}",
    "upstream_changed": "upstream now {upstream}",
    "relistened": "now listening on {address}",
    "timeline_step": "timeline step {index} (at {at_s:g}s, cycle {cycle})",
    "timeline_repeat": "timeline cycle {cycle} begins",
    "timeline_end": "timeline over after {cycles} cycle(s)",
    "backend_added": "backend {spec} added",
    "backend_removed": "backend {backend} removed ({active} connection(s) finishing)",
    "backend_state": "backend {backend} now {admin} (was {previous})",
    "backend_weight": "backend {backend} now weighs {weight} (was {previous})",
    "backend_drained": "backend {backend} drained: no connection left",
}


def _change_line(event: str, fields: dict[str, Any]) -> str | None:
    # The human line of a change event, or None for other events.
    words = _CHANGES.get(event)
    if words is None:
        return None
    with contextlib.suppress(KeyError, IndexError):
        words = words.format(**fields)
    proxy = fields.get("proxy")
    return escape(f"{proxy}: {words}" if proxy else words)


@dataclass
class _Announcer:
    """The ``listening`` and ``draining`` events, announced once (by the only process, or
    the parent)."""

    out: Output
    name: str
    address: str
    transport: str
    workers: int
    details: dict[str, Any]
    fields: dict[str, Any]
    ca_file: Path | None
    url: str | None
    drain_timeout: float

    def announce(self, _server: Server | None = None) -> None:
        fields: dict[str, Any] = {
            "address": self.address,
            "transport": self.transport,
            "loop": loop_choice.loop_name(),
            "workers": self.workers,
            **self.details,
        }
        fields |= self.fields
        if self.ca_file is not None:
            fields["ca_file"] = str(self.ca_file)
        if self.url is not None:
            fields["url"] = self.url
        shown = self.url or self.address
        human = f"[bold]{self.name}[/] listening on [cyan]{escape(shown)}[/]"
        extras = ", ".join(
            f"{k} {v}" for k, v in self.details.items() if v not in (None, False, "", [])
        )
        human += f" ({escape(extras)}{', ' if extras else ''}{loop_choice.loop_name()}"
        human += f", {self.workers} workers)" if self.workers > 1 else ")"
        if self.ca_file is not None:
            human += f"\nself-signed TLS: clients can trust [cyan]{escape(str(self.ca_file))}[/]"
        human += "\n[dim]Ctrl-C or SIGTERM to stop[/]"
        self.out.event("listening", human, **fields)

    def draining(self, active: int) -> None:
        timeout = self.drain_timeout
        human = f"draining {active} connection(s), up to {timeout:g}s" if active else None
        self.out.event("draining", human, active=active, timeout_s=timeout)


async def _live(out: Output, render: Callable[[], RenderableType], stop: asyncio.Event) -> None:
    # The live status line on a terminal, refreshed every second until ``stop``.
    with Live(console=out.out, refresh_per_second=2, transient=True) as live:
        while not stop.is_set():
            live.update(render())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()


def run_server(
    out: Output,
    *,
    name: str,
    endpoint: TCPEndpoint | UnixEndpoint | UDPEndpoint,
    build: BuildServer,
    flags: ServerFlags,
    presentation: Presentation = STREAM,
    per_connection: int = 1,
    options: SocketOptions = SocketOptions(),
    details: dict[str, Any] | None = None,
    url: Callable[[str, bool], str] | None = None,
    fields: Callable[[bool], dict[str, Any]] | None = None,
    companion: Callable[[Server], AbstractAsyncContextManager[Any]] | None = None,
    supervise: Callable[[], AbstractContextManager[Any]] | None = None,
    on_reload: Callable[[], None] | None = None,
) -> ExitStatus:
    """Run a server command until SIGINT/SIGTERM and print its events and summary.

    Args:
        name: the command, for human output (``tcp-echo``).
        build: builds the server on its listener; called inside the serving process.
        flags: the flags every server takes (limits, workers, drain, socket mode, TLS).
        presentation: the summary line, live status and extra summary fields.
        per_connection: descriptors each connection holds (a relay: two).
        details: extra fields for the ``listening`` event (mode, limits ...).
        url: builds the ``url`` field of the ``listening`` event from the bound address and
            whether TLS is on (ws://..., for servers whose clients take URLs).
        fields: more fields for the ``listening`` event (JSON only), given whether TLS is on.
        companion: given the built server, what runs beside it in the same loop (proxy's
            ``--api``): entered before the server starts, left once it has drained. One
            process, or each worker's (the caller makes it work so, or refuses ``--workers``).
        supervise: with ``--workers``, what runs in the parent while the workers serve (the
            control server that asks them all), entered once they are started.
        on_reload: called on SIGHUP (in every worker: the parent forwards it) instead of
            stopping the server.

    Returns:
        SUCCESS after SIGTERM, INTERRUPTED after SIGINT (or the worst worker's code).
    """
    tls, workers, max_connections = flags.tls, flags.workers, flags.max_connections
    drain_timeout, socket_mode = flags.drain_seconds, flags.unix_mode
    access = flags.access
    if access and isinstance(endpoint, UnixEndpoint):
        raise unix_socket_error()
    details = dict(details or {})
    details["max_open_files"] = check_open_files(
        out, max_connections, per_connection=per_connection
    )
    ssl_context, ca_file = server_context(tls) if tls.enabled else (None, None)
    unix = endpoint if isinstance(endpoint, UnixEndpoint) else None
    socks = _listeners(endpoint, workers, socket_mode, options)
    address = listener_address(socks[0])
    announcer = _Announcer(
        out,
        name,
        address,
        _transport(endpoint, ssl_context is not None),
        workers,
        details,
        (fields(ssl_context is not None) if fields is not None else {})
        | (access.as_dict() if access else {}),
        ca_file,
        url(address, ssl_context is not None) if url is not None else None,
        drain_timeout,
    )
    on_event = _print_event(out)

    def serve(index: int, alone: bool) -> tuple[int, dict[str, Any]]:
        if on_reload is not None and not alone:
            # A worker that reloads on SIGHUP must not die of one (its default action) before
            # its loop takes it: the parent forwards SIGHUP to every worker at once.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        sock = socks[index if unix is None else 0]
        for other in socks:  # a worker keeps only its own listener: once it stops accepting,
            if other is not sock:  # no process holds that socket open to queue clients in
                other.close()

        async def main() -> tuple[bool, dict[str, Any]]:
            server = build(
                sock,
                ssl_context=ssl_context,
                max_connections=max_connections,
                on_event=on_event,
                unix_endpoint=unix if index == 0 else None,
                # A relay disabled and enabled again, or moved, listens as it did at start.
                listen=functools.partial(make_listener, socket_mode=socket_mode, options=options),
            )
            server.restrict(access)
            status = presentation.status if alone and out.interactive else None
            async with companion(server) if companion else contextlib.nullcontext():
                interrupted = await serve_until_signal(
                    server,
                    drain_timeout=drain_timeout,
                    on_listening=announcer.announce if alone else None,
                    on_draining=announcer.draining if alone else None,
                    while_serving=(
                        (lambda stop: _live(out, status(server), stop)) if status else None
                    ),
                    on_reload=on_reload,
                )
            final = presentation.final() if presentation.final is not None else {}
            return interrupted, server.stats.as_dict() | final

        try:
            interrupted, summary = runtime.run(main)
        finally:
            out.flush()  # lines buffered for later: a worker ends in os._exit (no atexit)
        return int(ExitStatus.INTERRUPTED if interrupted else ExitStatus.SUCCESS), summary

    if workers == 1:
        code, summary = serve(0, True)
    else:
        code, summary = _serve_in_workers(
            workers, serve, socks, unix, announcer.announce, presentation, supervise
        )
    out.event("summary", presentation.summarize(summary), **summary)
    return ExitStatus(code)


def _serve_in_workers(
    workers: int,
    serve: Callable[[int, bool], tuple[int, dict[str, Any]]],
    socks: list[socket.socket],
    unix: UnixEndpoint | None,
    announce: Callable[[], None],
    presentation: Presentation,
    supervise: Callable[[], AbstractContextManager[Any]] | None = None,
) -> tuple[int, dict[str, Any]]:
    # Fork the workers, wait for them all; their exit code and merged summary.
    with contextlib.ExitStack() as beside:

        def started() -> None:
            for sock in socks:  # the workers have them now
                sock.close()
            if supervise is not None:
                beside.enter_context(supervise())
            announce()

        codes, summaries, signum = run_workers(workers, lambda i: serve(i, False), started)
    if unix is not None:
        unlink_unix_listener(unix)
    empty = presentation.stats().as_dict() | {"uptime_s": 0.0}
    summary = merge_summaries([empty, *summaries], presentation.merge)
    code = ExitStatus.INTERRUPTED if signum == signal.SIGINT else max(codes, default=0)
    return code, summary

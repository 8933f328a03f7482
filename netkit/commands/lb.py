"""``netkit lb``: an L4 load balancer with health checks, on the relay that ``proxy`` uses."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from netkit.commands import options as opt
from netkit.commands.control import control_servers
from netkit.commands.serving import (
    Presentation,
    build_relay,
    relay_status,
    relay_summary,
    run_server,
    together,
)
from netkit.commands.upstream_tls import BackendTLSFlags, backend_tls_flags
from netkit.console import Output
from netkit.core.addresses import parse_stream_endpoint
from netkit.core.balance.backends import Backend, parse_backends
from netkit.core.balance.checks import CHECK_KINDS, parse_check
from netkit.core.balance.health import CheckProbe, HealthEvent
from netkit.core.balance.policies import ALGORITHMS
from netkit.core.balance.queue import QueueCounters
from netkit.core.units import parse_duration
from netkit.errors import ConfigError, UsageError
from netkit.net.backends_file import BackendsFile, read_backends_file
from netkit.net.relay import RelayOptions, RelayStats
from netkit.net.upstreams import BalancedPool, balanced_pool, merge_queues, merge_snapshots

NAME = "lb"
HELP = "L4 load balancer: weighted algorithms, health checks, backups, failover; one command line."
CHECKS = "Health checks"
POOL = "Backends file and queue"


app = typer.Typer(add_completion=False)
"""The command, for :mod:`netkit.cli` (which loads this module only when it is run)."""


@app.command(NAME, help=HELP)
@opt.server_flags
@opt.proxy_accept_flags
@backend_tls_flags
def lb(
    listen: Annotated[
        str, typer.Argument(help="Where to listen: HOST:PORT, :PORT, [::1]:PORT, unix:/path.")
    ],
    backends: Annotated[
        list[str] | None,
        typer.Argument(
            help="Backends: ENDPOINT[,weight=N][,maxconn=N][,backup], e.g. 127.0.0.1:8001,weight=3 unix:/run/b.sock,backup (or --backends-file).",
            show_default=False,
        ),
    ] = None,
    algorithm: Annotated[
        str,
        typer.Option(
            "--algorithm",
            "-a",
            click_type=click.Choice(ALGORITHMS),
            help="roundrobin (weighted), leastconn, random (power of two choices), source (consistent hash of the client address).",
        ),
    ] = "roundrobin",
    check_interval: Annotated[
        str,
        typer.Option(
            "--check-interval", help="Time between active checks.", rich_help_panel=CHECKS
        ),
    ] = "2s",
    check_timeout: Annotated[
        str | None,
        typer.Option(
            "--check-timeout",
            help="Time allowed per check (default: the interval).",
            rich_help_panel=CHECKS,
        ),
    ] = None,
    rise: Annotated[
        int,
        typer.Option(
            "--rise",
            min=1,
            help="Passing checks in a row to bring a backend up.",
            rich_help_panel=CHECKS,
        ),
    ] = 2,
    fall: Annotated[
        int,
        typer.Option(
            "--fall",
            min=1,
            help="Failing checks in a row to take a backend down.",
            rich_help_panel=CHECKS,
        ),
    ] = 3,
    check: Annotated[
        str,
        typer.Option(
            "--check",
            metavar="KIND",
            help=f"What a check does: {CHECK_KINDS} (HAProxy's option httpchk: GET PATH, the"
            " answer's status judged by --check-expect, 2xx or 3xx by default).",
            rich_help_panel=CHECKS,
        ),
    ] = "tcp",
    check_send_proxy: Annotated[
        bool,
        typer.Option(
            "--check-send-proxy",
            help="Start every check with a PROXY header (HAProxy's check-send-proxy): the"
            " --proxy-protocol version, v1 without it. On by default with --proxy-protocol.",
            rich_help_panel=CHECKS,
        ),
    ] = False,
    check_send: Annotated[
        str | None,
        typer.Option(
            "--check-send",
            help="Bytes to send in a check (escapes \\r \\n \\xHH).",
            rich_help_panel=CHECKS,
        ),
    ] = None,
    check_expect: Annotated[
        str | None,
        typer.Option(
            "--check-expect",
            help="Regular expression the reply must match; with --check http:PATH, the status"
            " codes that pass (200, 2xx, 200-399, 200,301).",
            rich_help_panel=CHECKS,
        ),
    ] = None,
    slowstart: Annotated[
        str,
        typer.Option("--slowstart", help="Ramp a recovered backend's weight up over this long."),
    ] = "0",
    connect_timeout: Annotated[
        str,
        typer.Option(
            "--connect-timeout", help="Time allowed to connect to a backend before trying the next."
        ),
    ] = "5s",
    backends_file: Annotated[
        Path | None,
        typer.Option(
            "--backends-file",
            help="Read the backends from this file (one per line, as on the command line; # comments), again on SIGHUP and when it changes: new ones join, removed ones drain.",
            rich_help_panel=POOL,
            dir_okay=False,
        ),
    ] = None,
    queue: Annotated[
        int | None,
        typer.Option(
            "--queue",
            min=0,
            help="At most N clients wait for a slot when every backend is at its maxconn (default: no limit; 0: refuse at once).",
            rich_help_panel=POOL,
            show_default=False,
        ),
    ] = None,
    queue_timeout: Annotated[
        str | None,
        typer.Option(
            "--queue-timeout",
            help="How long a client may wait in the queue before it is closed (default: --connect-timeout).",
            rich_help_panel=POOL,
            show_default=False,
        ),
    ] = None,
    proxy_protocol: opt.ProxyProtocol = None,
    accept: opt.ProxyAcceptFlags = opt.ProxyAcceptFlags(),
    to_backends: BackendTLSFlags = BackendTLSFlags(),
    splice: opt.Splice = True,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for the random algorithm.")
    ] = None,
    idle_timeout: opt.RelayIdleTimeout = opt.RELAY_IDLE_TIMEOUT,
    metrics: opt.Metrics = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            metavar="HOST:PORT",
            help="Serve the runtime API on HOST:PORT (loopback unless a host is given; :0 picks a"
            " port): list the backends; enable, disable, drain, reweight, add and remove them"
            " (GET/POST /backends, GET/PATCH/DELETE /backends/HOST:PORT); /metrics and /stats too.",
            rich_help_panel=opt.CONTROL_PANEL,
        ),
    ] = None,
    server: opt.ServerFlags = opt.ServerFlags(),
    json: opt.Json = False,
) -> None:
    """Spread connections on LISTEN over BACKENDs until SIGINT/SIGTERM/SIGUSR1.

    A backend that refuses a connection is taken out at once and the client is retried on the
    next one, so a client is never handed a backend that refused; active checks (HAProxy's
    defaults: every 2s, rise 2, fall 3) bring it back. Backups serve only when no primary can.
    A client that finds every backend at its maxconn waits in a queue for a free slot.
    SIGHUP reloads --backends-file (without it, SIGHUP changes nothing).
    """
    out = Output(json)
    listen_at = parse_stream_endpoint(listen)
    pool_backends = _initial_backends(backends, backends_file)
    interval = parse_duration(check_interval, option="--check-interval", positive=True)
    timeout = parse_duration(check_timeout, option="--check-timeout") if check_timeout else interval
    connect_limit = parse_duration(connect_timeout, option="--connect-timeout", positive=True)
    idle = opt.idle_timeout(idle_timeout)
    checks = check_kinds(check, check_send, check_expect)
    pool_backends, backend_tls = to_backends.configure(pool_backends)
    version = opt.proxy_protocol_version(proxy_protocol)
    check_proxy = version or (1 if check_send_proxy else 0)  # HAProxy: checks send it too

    def health(event: HealthEvent) -> None:
        if not out.json:
            out.warn(str(event)) if event.new == "down" else out.print(f"[green]{event}[/]")
        out.event("health", None, **event.as_dict())

    upstream = balanced_pool(
        pool_backends,
        algorithm=algorithm,
        rise=rise,
        fall=fall,
        slowstart=parse_duration(slowstart, option="--slowstart"),
        seed=seed,
        check_interval=interval,
        check_timeout=timeout,
        **checks,
        send_proxy=check_proxy,
        tls=backend_tls,
        connect_timeout=connect_limit,
        on_health=health,
        queue=QueueCounters(
            limit=queue,
            timeout=parse_duration(queue_timeout, option="--queue-timeout", positive=True)
            if queue_timeout
            else connect_limit,
        ),
        on_queue=lambda kind, fields: _queue_event(out, kind, fields),
    )
    watcher = (
        BackendsFile(
            backends_file,
            upstream,
            on_reload=lambda kind, f: _reload_event(out, kind, f),
            prepare=functools.partial(_with_tls, to_backends, upstream),
        )
        if backends_file is not None
        else None
    )
    options = RelayOptions(
        splice=splice,
        proxy_protocol=version,
        **accept.relay_options(),
        idle_timeout=idle,
        seed=seed,
    )
    details = {
        "algorithm": algorithm,
        "backends": [str(b) for b in pool_backends],
        "check": check,
        "check_send_proxy": check_proxy,
        "backend_tls": [b.name for b in pool_backends if b.tls],
        "check_interval_s": interval,
        "rise": rise,
        "fall": fall,
        "idle_timeout_s": idle,
        "accept_proxy_protocol": accept.accept_proxy_protocol,
        "backends_file": str(backends_file) if backends_file else None,
        "queue": queue,
        "queue_timeout_s": upstream.queue.counters.timeout,
    }
    control = control_servers(details, name="lb", metrics=metrics, api=api, workers=server.workers)
    code = run_server(
        out,
        name="lb",
        endpoint=listen_at,
        build=build_relay(upstream, options),
        flags=server,
        presentation=Presentation(
            relay_summary,
            RelayStats,
            status=relay_status(
                lambda: Group(
                    backend_table(upstream.snapshot()),
                    *filter(None, [queue_line(upstream.queue_snapshot())]),
                )
            ),
            final=lambda: {"backends": upstream.snapshot(), "queue": upstream.queue_snapshot()},
            merge={"backends": merge_snapshots, "queue": merge_queues},
        ),
        per_connection=2,
        options=opt.socket_options(None, None, False),
        details=details,
        fields=lambda secure: {
            "splice": options.can_splice(client_tls=secure)
            and not all(b.tls for b in pool_backends)  # TLS backends are relayed in Python
        },
        companion=together(control.companion, watcher.watching if watcher is not None else None),
        supervise=control.supervise,
        on_reload=functools.partial(_sighup, out, watcher),
    )
    raise typer.Exit(code)


def _sighup(out: Output, watcher: BackendsFile | None) -> None:
    # Reload the backends file; without one, SIGHUP changes nothing (and says so).
    if watcher is not None:
        watcher.reload("SIGHUP")
    else:
        reason = "no --backends-file to reload"
        _reload_event(out, "reload_ignored", {"trigger": "SIGHUP", "reason": reason})


def _with_tls(
    to_backends: BackendTLSFlags, upstream: BalancedPool, backends: list[Backend]
) -> list[Backend]:
    # A reloaded file's backends get TLS as the first ones did (--backend-tls, ,tls).
    backends, tls = to_backends.configure(backends)
    if tls is not None and upstream.tls is None:
        raise ConfigError("a backend over TLS needs lb started with one (or --backend-tls)")
    return backends


def _initial_backends(given: list[str] | None, path: Path | None) -> list[Backend]:
    # The backends on the command line, or in --backends-file (one or the other).
    if path is None:
        if not given:
            raise ConfigError("no backends given: list them after LISTEN, or give --backends-file")
        return parse_backends(given)
    if given:
        raise ConfigError("give the backends on the command line or in --backends-file, not both")
    return read_backends_file(path)


def _reload_event(out: Output, kind: str, fields: dict[str, Any]) -> None:
    # reloaded / reload_failed / reload_ignored, one line each.
    if kind == "reload_failed":
        human = f"[yellow]reload failed, backends unchanged: {escape(fields['error'])}[/]"
    elif kind == "reload_ignored":
        human = f"[dim]{fields['trigger']}: {escape(fields['reason'])}[/]"
    else:
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (("added", fields["added"]), ("removed", fields["removed"]))
            if names
        ]
        parts += [f"{name}: {what}" for name, what in fields["changed"].items()]
        human = f"reloaded {escape(fields['file'])}: {escape('; '.join(parts) or 'no change')}"
    out.event(kind, None if out.json else human, **fields)


def _queue_event(out: Output, kind: str, fields: dict[str, Any]) -> None:
    # queued (every backend full: it waits) / queue_timeout / queue_full (it is closed).
    if not out.json and kind != "queued":
        out.warn(f"{fields['client']}: {fields['error']}")
    out.event(kind, None, **fields)


def queue_line(queue: dict[str, Any]) -> str | None:
    """The queue's line under the live table (None while nobody ever waited)."""
    if not queue.get("queued") and not queue.get("refused"):
        return None
    return (
        f"[dim]queue[/] {queue['current']} waiting (max {queue['max']}), "
        f"{queue['queued']} queued, {queue['timed_out']} timed out, {queue['refused']} refused"
    )


def check_kinds(check: str, send: str | None, expect: str | None) -> dict[str, Any]:
    """``balanced_pool``'s ``probe`` and ``http`` from ``--check``, ``--check-send`` and
    ``--check-expect`` (a regular expression for TCP checks, status codes for HTTP ones).

    Raises:
        UsageError: ``--check-send`` with an HTTP check.
        ConfigError: a bad kind, path, escape, expression or status code.
    """
    http = parse_check(check, expect)
    if http is not None and send is not None:
        raise UsageError("--check-send is for TCP checks: --check http:PATH sends the request")
    return {"probe": CheckProbe.parse(send, None if http else expect), "http": http}


def backend_table(rows: list[dict[str, Any]]) -> Table:
    """The live per-backend table: state, weight, connections, bytes, connect times."""
    grid = Table(box=None, pad_edge=False, header_style="dim")
    for column in (
        "backend",
        "state",
        "weight",
        "active",
        "total",
        "failed",
        "up",
        "down",
        "connect p50/p99 ms",
    ):
        grid.add_column(column, justify="left" if column in ("backend", "state") else "right")
    for row in rows:
        state = row["state"] + (
            f" ({row['admin']})" if row.get("admin", "ready") != "ready" else ""
        )
        state += " (backup)" if row["role"] == "backup" else ""
        grid.add_row(
            row["backend"],
            f"[green]{state}[/]" if row["state"] == "up" else f"[red]{state}[/]",
            str(row["weight"]),
            str(row["active"]),
            str(row["total"]),
            str(row["failed"]),
            str(row["bytes_up"]),
            str(row["bytes_down"]),
            f"{row['connect_p50_ms']}/{row['connect_p99_ms']}",
        )
    return grid

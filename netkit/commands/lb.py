"""``netkit lb``: an L4 load balancer with health checks, on the relay that ``proxy`` uses."""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from rich.table import Table

from netkit.commands import options as opt
from netkit.commands.serving import (
    Presentation,
    build_relay,
    relay_status,
    relay_summary,
    run_server,
)
from netkit.commands.upstream_tls import BackendTLSFlags, backend_tls_flags
from netkit.console import Output
from netkit.core.addresses import parse_stream_endpoint
from netkit.core.balance.backends import parse_backends
from netkit.core.balance.checks import CHECK_KINDS, parse_check
from netkit.core.balance.health import CheckProbe, HealthEvent
from netkit.core.balance.policies import ALGORITHMS
from netkit.core.units import parse_duration
from netkit.errors import UsageError
from netkit.net.relay import RelayOptions, RelayStats
from netkit.net.upstreams import balanced_pool, merge_snapshots

NAME = "lb"
HELP = "L4 load balancer: weighted algorithms, health checks, backups, failover; one command line."
CHECKS = "Health checks"


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
        list[str],
        typer.Argument(
            help="Backends: ENDPOINT[,weight=N][,maxconn=N][,backup], e.g. 127.0.0.1:8001,weight=3 unix:/run/b.sock,backup."
        ),
    ],
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
    proxy_protocol: opt.ProxyProtocol = None,
    accept: opt.ProxyAcceptFlags = opt.ProxyAcceptFlags(),
    to_backends: BackendTLSFlags = BackendTLSFlags(),
    splice: opt.Splice = True,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for the random algorithm.")
    ] = None,
    idle_timeout: opt.RelayIdleTimeout = opt.RELAY_IDLE_TIMEOUT,
    server: opt.ServerFlags = opt.ServerFlags(),
    json: opt.Json = False,
) -> None:
    """Spread connections on LISTEN over BACKENDs until SIGINT/SIGTERM/SIGHUP/SIGUSR1.

    A backend that refuses a connection is taken out at once and the client is retried on the
    next one, so a client is never handed a backend that refused; active checks (HAProxy's
    defaults: every 2s, rise 2, fall 3) bring it back. Backups serve only when no primary can.
    """
    out = Output(json)
    listen_at = parse_stream_endpoint(listen)
    pool_backends = parse_backends(backends)
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
    )
    options = RelayOptions(
        splice=splice,
        proxy_protocol=version,
        **accept.relay_options(),
        idle_timeout=idle,
        seed=seed,
    )
    code = run_server(
        out,
        name="lb",
        endpoint=listen_at,
        build=build_relay(upstream, options),
        flags=server,
        presentation=Presentation(
            relay_summary,
            RelayStats,
            status=relay_status(lambda: backend_table(upstream.snapshot())),
            final=lambda: {"backends": upstream.snapshot()},
            merge={"backends": merge_snapshots},
        ),
        per_connection=2,
        options=opt.socket_options(None, None, False),
        details={
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
        },
        fields=lambda secure: {
            "splice": options.can_splice(client_tls=secure)
            and not all(b.tls for b in pool_backends)  # TLS backends are relayed in Python
        },
    )
    raise typer.Exit(code)


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
        state = row["state"] + (" (backup)" if row["role"] == "backup" else "")
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

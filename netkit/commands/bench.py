"""``netkit bench``: a load generator for echo, stream and connect scenarios, and ``merge``.

``netkit bench [TARGET] [OPTIONS]`` runs a benchmark (the ``run`` command: the word ``run`` may
be left out); ``netkit bench merge A.json B.json`` combines saved ``--json`` results. Without a
target, netkit's own TCP echo server is started in forked worker processes and benchmarked.

Workers are processes (``--workers``, one per core by default): each runs its share of the
connections and of the rate on its own event loop, writes its result to a file and, when the
live view is on, small progress lines to a pipe. The parent merges the results exactly (counts
and HDR histograms add).
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from netkit.commands import options as opt
from netkit.commands.bench_cluster import Fleet, judge_members, report_members, run_cluster
from netkit.commands.bench_view import LiveView, report
from netkit.console import Output
from netkit.core.addresses import WSURL
from netkit.core.bench.bitrate import DEFAULT_DATAGRAM, parse_bitrate
from netkit.core.bench.http import HTTPLoad, StatusCheck, parse_header
from netkit.core.bench.plan import CHOICES, LoadPlan, Scenario, check_memory, parse_rate
from netkit.core.bench.result import (
    BenchResult,
    merge_results,
    merge_warnings,
)
from netkit.core.bench.stages import parse_stages
from netkit.core.bench.thresholds import (
    DATAGRAM_METRICS,
    METRICS_HELP,
    enforce,
    parse_threshold,
)
from netkit.core.streamtest import Direction
from netkit.core.units import parse_duration, parse_size
from netkit.errors import ConfigError
from netkit.net.bench.embedded import EmbeddedEchoServer
from netkit.net.bench.fanout import run_bench_workers
from netkit.net.bench.worker import Target, make_target, reported_scenario
from netkit.net.workers import available_memory
from netkit.status import ExitStatus

LOAD_PANEL = "Load shape"
RUN_PANEL = "Run"
HTTP_PANEL = "HTTP targets"
CLUSTER_PANEL = "Cluster (Dask)"

DEFAULT_DURATION = "10s"
EMBEDDED_DURATION = "3s"
EMBEDDED_HINT = "benchmarked netkit's own echo server; point it at yours: netkit bench HOST:PORT"
DEFAULT_GATE_HELP = (
    "a run fails (exit 1) when no request succeeded or any echo came back different"
    " (errors.mismatch), with or without --fail-if"
)
DEFAULT_SIZE = {
    Scenario.ECHO: "64",
    Scenario.CONNECT: "64",
    Scenario.STREAM: "256KiB",
    Scenario.BITRATE: str(DEFAULT_DATAGRAM),
}


class BenchGroup(TyperGroup):
    """``bench``'s group: any first argument that is not a subcommand goes to ``run``.

    So ``netkit bench ws://127.0.0.1:8765/ --duration 5s`` is ``netkit bench run ...``, while
    ``netkit bench merge a.json b.json`` is the merge command. (click's
    ``invoke_without_command`` would take the target for a subcommand name.)
    """

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="bench",
    cls=BenchGroup,
    help="Load generator: echo round trips, bulk stream, connection rate; 'bench merge' combines results.",
    add_completion=False,
)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@app.command(
    "run",
    epilog="Without TARGET, netkit's own echo server runs in a child process for a short default "
    "benchmark. Combine saved results with 'netkit bench merge A.json B.json'.",
)
def run(
    target: Annotated[
        str | None,
        typer.Argument(
            help="What to load: HOST:PORT or tcp://HOST:PORT, unix:/path, udp://HOST:PORT, ws://HOST:PORT/path, wss://..., ws+unix:///path.sock:/path, http://HOST:PORT/path, https://..., http+unix:///path.sock:/path. Default: netkit's own echo server."
        ),
    ] = None,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            click_type=click.Choice([s.value for s in CHOICES]),
            help="echo: request/response round trips (named request in reports for an HTTP target); stream: bulk throughput, as iperf3 (the receiver counts; --reverse, --bidir); connect: connections per second.",
        ),
    ] = "echo",
    connections: Annotated[
        int,
        typer.Option(
            "--connections",
            "-c",
            min=1,
            max=100_000,
            help="Connections (concurrent ones, for connect; for stream, parallel streams, as iperf3's -P).",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = 16,
    duration: Annotated[
        str | None,
        typer.Option(
            "--duration",
            "-d",
            help=f"How long to measure (default {DEFAULT_DURATION}; {EMBEDDED_DURATION} without a target).",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            "--requests",
            "-n",
            min=1,
            help="Stop after this many requests instead of after --duration.",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            "-s",
            help="Bytes per request (default 64; for stream 256KiB per write). Over TCP, TLS and Unix sockets, larger requests and writes go out from one reusable 256KiB chunk, as the socket takes them; a WebSocket message is held whole. Refused when that cannot fit in the memory available. Not for HTTP targets: a request is as large as its --body.",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = None,
    pipeline: Annotated[
        int,
        typer.Option(
            "--pipeline",
            "-p",
            min=1,
            max=65536,
            help="Requests in flight per connection.",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = 1,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate",
            "-r",
            help="Open loop: this many requests/s in total (e.g. 5000/s, 20k); latency counts from each request's intended send time.",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = None,
    stages: Annotated[
        str | None,
        typer.Option(
            "--stages",
            help="Ramp the load, as k6's stages: '10s:100/s, 30s:1000/s, 10s:0/s' ramps the arrival rate (open loop, from 0/s), '10s:50, 20s:100' the open connections (closed loop, from 0). Each stage goes linearly from the previous target to its own over its duration (0s jumps); the run lasts their total. Not with --duration, --rate, --requests or --warmup (nor -c, for connections). Per-stage figures in the report; gate one with --fail-if 'p99\\[stage=2]>5ms', each with \\[stage=*].",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = None,
    bitrate: Annotated[
        str | None,
        typer.Option(
            "--bitrate",
            "-b",
            help=f"UDP targets, as iperf3 -u: send sequenced datagrams at this many bits/s in total (100M, 1G; K/M/G are powers of 1000), {DEFAULT_DATAGRAM} bytes each unless --size says otherwise; the receiver (netkit udp-echo serve --mode sink) reports loss, duplicates, out-of-order datagrams and jitter (RFC 3550).",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = None,
    warmup: Annotated[
        str,
        typer.Option(
            "--warmup",
            help="Load without measuring first, for this long.",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = "0s",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            max=256,
            help="Processes sharing the connections and the rate (default: one per core).",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout",
            "-t",
            help="Time allowed to connect, and for each response.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = "5s",
    reverse: Annotated[
        bool,
        typer.Option(
            "--reverse",
            "-R",
            help="As iperf3 -R: the server sends and bench receives and counts. TCP/Unix/TLS stream (serve with 'netkit tcp-echo serve --mode stream'); UDP bitrate runs (-b): the sink (netkit udp-echo serve --mode sink) sends at the bitrate, and loss, duplicates, out-of-order datagrams and jitter are counted here.",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = False,
    bidir: Annotated[
        bool,
        typer.Option(
            "--bidir",
            help="TCP/Unix/TLS stream, as iperf3 --bidir: both directions at once, each counted on its own (serve with 'netkit tcp-echo serve --mode stream').",
            rich_help_panel=LOAD_PANEL,
        ),
    ] = False,
    exchange: Annotated[
        bool,
        typer.Option(
            "--exchange",
            help="connect: send one request and verify its echo before closing.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = False,
    fail_if: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-if",
            help=f"Exit 1 when this holds, e.g. 'p99>5ms', 'errors>0', 'rps<10000' (repeatable). Metrics: {escape(METRICS_HELP)}. Without it too, {DEFAULT_GATE_HELP}.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            "-m",
            help="HTTP: the request method (default GET; a response to HEAD ends with its head).",
            rich_help_panel=HTTP_PANEL,
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            help="HTTP: a request header, 'Name: value' (repeatable; Host replaces the URL's).",
            rich_help_panel=HTTP_PANEL,
        ),
    ] = None,
    body: Annotated[
        str | None,
        typer.Option(
            "--body",
            help="HTTP: the request body (sent with its Content-Length).",
            rich_help_panel=HTTP_PANEL,
        ),
    ] = None,
    body_file: Annotated[
        Path | None,
        typer.Option(
            "--body-file",
            help="HTTP: the request body, read from this file.",
            rich_help_panel=HTTP_PANEL,
        ),
    ] = None,
    expect_status: Annotated[
        str | None,
        typer.Option(
            "--expect-status",
            help="HTTP: the status codes that answer well, e.g. 200, 2xx, 200-399, 200,301 (default 2xx); any other is an error (errors.status).",
            rich_help_panel=HTTP_PANEL,
        ),
    ] = None,
    expect_body: Annotated[
        str | None,
        typer.Option(
            "--expect-body",
            help="HTTP: text every response body must contain; a body without it is an error (errors.mismatch, which fails the run).",
            rich_help_panel=HTTP_PANEL,
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Run on the workers of a Dask cluster: tcp://SCHEDULER:8786, or local:N to start N worker processes here (needs the cluster extra: pip install 'netkit\\[cluster]'). Each member runs --workers processes; connections, requests and --rate are split among members exactly, and all start together.",
            rich_help_panel=CLUSTER_PANEL,
        ),
    ] = None,
    hosts: Annotated[
        int | None,
        typer.Option(
            "--hosts",
            min=1,
            help="--cluster: use this many members (default: all).",
            rich_help_panel=CLUSTER_PANEL,
        ),
    ] = None,
    per_worker: Annotated[
        bool,
        typer.Option(
            "--per-worker",
            help="--cluster: one member per Dask worker, instead of one per distinct host (always so for local:N).",
            rich_help_panel=CLUSTER_PANEL,
        ),
    ] = False,
    fail_if_worker: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-if-worker",
            help="--cluster: exit 1 when any one member's own result crosses this (as --fail-if; repeatable).",
            rich_help_panel=CLUSTER_PANEL,
        ),
    ] = None,
    tls: opt.UseTLS = False,
    cacert: opt.CACert = None,
    cert: opt.ClientCert = None,
    key: opt.ClientKey = None,
    insecure: opt.Insecure = False,
    sni: opt.SNI = None,
    json: opt.Json = False,
) -> None:
    """Benchmark a service: latency percentiles (HDR), throughput and errors by kind.

    TARGET: HOST:PORT or tcp://HOST:PORT (add --tls for TLS), unix:/path, udp://HOST:PORT,
    ws://HOST:PORT/path, wss://..., ws+unix:///path.sock:/path, http://HOST:PORT/path,
    https://..., http+unix:///path.sock:/path (keep-alive HTTP/1.1 requests, pipelined with
    --pipeline); none: netkit's own echo server.

    Exit 0 when the run held, 1 when it failed: no request succeeded, an echo came back
    different, or a --fail-if threshold was crossed (each reason is listed); 2 for bad
    options, 3 when no connection could be made at all.
    """
    out = Output(json)
    thresholds = [parse_threshold(t) for t in fail_if or []]
    worker_thresholds = [parse_threshold(t) for t in fail_if_worker or []]
    if cluster is None and (hosts is not None or per_worker or worker_thresholds):
        raise ConfigError("--hosts, --per-worker and --fail-if-worker need --cluster")
    if duration is not None and requests is not None:
        raise ConfigError("give --duration or --requests, not both")
    embedded = target is None
    seconds = None
    ramp = parse_stages(stages) if stages is not None else None
    if ramp is not None and duration is None:
        seconds = ramp.duration
        if ramp.kind == "connections" and _default("connections"):
            connections = ramp.peak
    elif requests is None:
        default = EMBEDDED_DURATION if embedded else DEFAULT_DURATION
        seconds = parse_duration(duration or default, option="--duration")
    for t in thresholds:
        t.check_stages(len(ramp.stages) if ramp else 0)
    kind = Scenario(scenario)
    if bitrate is not None:
        if kind is not Scenario.ECHO:
            raise ConfigError(f"--bitrate runs its own scenario: leave out --scenario {scenario}")
        kind = Scenario.BITRATE
    direction = _direction(kind, reverse, bidir)
    plan = LoadPlan(
        scenario=kind,
        connections=connections,
        total_connections=connections,
        duration=seconds,
        requests=requests,
        size=parse_size(size or DEFAULT_SIZE[kind], option="--size"),
        pipeline=pipeline,
        rate=parse_rate(rate) if rate is not None else None,
        warmup=parse_duration(warmup, option="--warmup"),
        timeout=parse_duration(timeout, option="--timeout"),
        exchange=exchange,
        stages=ramp,
        bitrate=parse_bitrate(bitrate) if bitrate is not None else None,
        direction=direction,
    )
    if plan.timeout <= 0:
        raise ConfigError("--timeout must be more than 0")
    if plan.bitrate is None:
        for t in thresholds:
            if t.metric in DATAGRAM_METRICS:
                raise ConfigError(
                    f"--fail-if {t.text!r}: {t.metric} is measured by -b/--bitrate runs"
                )
    tls_opts = opt.client_tls(tls, cacert, cert, key, insecure, sni)
    server: EmbeddedEchoServer | None = None
    fleet: Fleet | None = None
    worker_failures: list[str] = []
    cores = _cores()
    try:
        if target is None:
            server = EmbeddedEchoServer(workers=max(1, cores // 2), stream=kind is Scenario.STREAM)
            address = server.start()
            out.event(
                "server",
                f"no target: benchmarking netkit's own echo server ([cyan]tcp-echo serve "
                f"--workers {server.workers}{' --mode stream' if server.stream else ''}[/]) at"
                f" [cyan]{escape(address)}[/]",
                address=address,
                workers=server.workers,
            )
            target = address
            default_workers = max(1, cores - server.workers)
        else:
            default_workers = cores
        where = make_target(
            target,
            tls_opts,
            kind,
            _http_load(method, header, body, body_file, expect_status, expect_body),
        )
        if where.http is not None and size is not None:
            raise ConfigError(
                "--size: an HTTP request is as large as its body (--body, --body-file)"
            )
        if cluster is not None:
            fleet = run_cluster(
                out, cluster, plan, target, tls_opts, where.http, workers or 1, hosts, per_worker
            )
            worker_failures = report_members(out, fleet.outcomes, worker_thresholds)
            result = fleet.merged()
            signum: int | None = int(signal.SIGINT) if fleet.interrupted else None
        else:
            workers = len(plan.split(workers or default_workers))
            available = available_memory()
            if available is not None:  # refused before any worker allocates a byte of it
                check_memory(plan, workers, available, websocket=isinstance(where.endpoint, WSURL))
            result, signum = _execute(out, plan, where, workers)
    finally:
        if server is not None:
            server.stop()
    report(out, result, thresholds)
    if fleet is not None:
        fleet.judge_lost()
    if embedded:
        out.print(f"[dim]{EMBEDDED_HINT}[/]")
    if signum == signal.SIGINT:
        raise typer.Exit(ExitStatus.INTERRUPTED)
    enforce(thresholds, result)
    judge_members(worker_failures)
    raise typer.Exit(ExitStatus.SUCCESS)


def _default(name: str) -> bool:
    """True when option ``name`` was not given on the command line."""
    source = click.get_current_context().get_parameter_source(name)
    return source in (None, click.core.ParameterSource.DEFAULT)


def _direction(kind: Scenario, reverse: bool, bidir: bool) -> Direction:
    """The stream direction ``--reverse`` and ``--bidir`` ask for."""
    if reverse and bidir:
        raise ConfigError("give --reverse or --bidir, not both")
    if reverse and kind is Scenario.BITRATE:
        return Direction.REVERSE  # the sink sends the test
    if (reverse or bidir) and kind is not Scenario.STREAM:
        raise ConfigError("--reverse and --bidir apply to --scenario stream (--reverse to -b too)")
    return Direction.REVERSE if reverse else Direction.BIDIR if bidir else Direction.FORWARD


def _http_load(
    method: str | None,
    headers: list[str] | None,
    body: str | None,
    body_file: Path | None,
    expect_status: str | None,
    expect_body: str | None,
) -> HTTPLoad | None:
    """The HTTP request and checks the flags give (None when no HTTP flag was given)."""
    given = (method, headers, body, body_file, expect_status, expect_body)
    if all(v is None for v in given):
        return None
    if body is not None and body_file is not None:
        raise ConfigError("give --body or --body-file, not both")
    data = b""
    if body is not None:
        data = body.encode("utf-8", "surrogateescape")
    elif body_file is not None:
        try:
            data = body_file.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"--body-file: cannot read {body_file}: {exc.strerror or exc}"
            ) from None
    return HTTPLoad(
        method=method or "GET",
        headers=tuple(parse_header(h) for h in headers or []),
        body=data,
        status=StatusCheck.parse(expect_status) if expect_status is not None else StatusCheck(),
        expect_body=expect_body.encode("utf-8", "surrogateescape")
        if expect_body is not None
        else None,
    )


@app.command("merge")
def merge(
    files: Annotated[
        list[Path], typer.Argument(help="Results saved from 'netkit bench --json' (one or more).")
    ],
    fail_if: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-if", help="Exit 1 when this holds for the merged result (repeatable)."
        ),
    ] = None,
    json: opt.Json = False,
) -> None:
    """Combine results of runs that ran side by side (several machines) into one exact report.

    Counts and HDR histograms add; throughput is the total over the longest duration. The
    same run given twice, or runs of different scenarios or transports, are refused (exit 2);
    runs that did not run side by side are merged with a warning, their throughput taken
    over the union of their time spans.
    The merged result is judged as a run is: it fails when no request succeeded or an echo
    came back different, or when a --fail-if threshold is crossed.
    """
    out = Output(json)
    thresholds = [parse_threshold(t) for t in fail_if or []]
    named: list[tuple[str, BenchResult]] = []
    given: dict[Path, Path] = {}
    for path in files:
        real = path.resolve()
        if real in given:
            raise ConfigError(
                f"{path} is given twice (as {given[real]}): merging a run with itself would"
                " count it twice"
            )
        given[real] = path
        named.append((str(path), _load_result(path)))
    for warning in merge_warnings(named):
        out.warn(warning)
    result = merge_results(r for _, r in named)
    report(out, result, thresholds)
    enforce(thresholds, result)
    raise typer.Exit(ExitStatus.SUCCESS)


def _load_result(path: Path) -> BenchResult:
    """The bench result in a ``--json`` output file (its ``summary`` line)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    found: dict[str, Any] | None = None
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = jsonlib.loads(line)
            if (
                isinstance(record, dict)
                and "histogram" in record
                and record.get("event")
                in (
                    "summary",
                    None,
                )
            ):
                found = record
    if found is None:
        with contextlib.suppress(ValueError):
            record = jsonlib.loads(text)
            found = record if isinstance(record, dict) and "histogram" in record else None
    if found is None:
        raise ConfigError(f"{path}: no bench result in it (save one with 'netkit bench --json')")
    try:
        return BenchResult.from_dict(found)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --- running the workers -------------------------------------------------------------------


def _execute(
    out: Output, plan: LoadPlan, target: Target, workers: int
) -> tuple[BenchResult, int | None]:
    """Run ``plan`` in ``workers`` processes; returns the merged result and the signal that
    stopped the run early, if any.

    Raises:
        NetkitError: a worker could not run at all (the first such error, as it reported it).
    """
    label = reported_scenario(plan, target)
    view = LiveView(out, plan, label) if out.interactive or out.json else None
    reports, signum = run_bench_workers(plan.split(workers), target, follower=view)
    parts = []
    for worker_report in reports:
        if worker_report.error is not None:
            raise worker_report.error
        assert worker_report.result is not None
        parts.append(worker_report.result)
    for i, part in enumerate(parts):
        out.event("worker", None, index=i, **part.as_dict())
    return merge_results(parts), signum

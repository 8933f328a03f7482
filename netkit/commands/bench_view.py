"""How ``netkit bench`` shows a run: the live view while the workers run, and the report.

``LiveView`` is a rich progress bar on a terminal and ``progress`` events with ``--json``;
``report`` is the ``summary`` event and, on a terminal, the table people read.
"""

from __future__ import annotations

from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from netkit.commands.bench_stages import stage_line, stage_now, stage_table
from netkit.console import Output
from netkit.core.bench.bitrate import DatagramTally, format_bitrate
from netkit.core.bench.plan import LoadPlan, Scenario
from netkit.core.bench.result import BenchResult, default_failures
from netkit.core.bench.thresholds import Threshold, check_thresholds
from netkit.core.units import format_size
from netkit.net.bench.fanout import ProgressFollower, ProgressTotals


class LiveView:
    """Progress while the workers run: a rich progress bar on a terminal (elapsed and remaining
    time, current rate, running p99, errors), ``progress`` events with ``--json``.

    For HTTP (scenario ``request``) it also shows the answers by status class: the bar
    the classes other than 2xx, the events all of them (``"statuses": {"2xx": n, ...}``).

    The totals come from a :class:`~netkit.net.bench.fanout.ProgressFollower` (a thread).
    """

    def __init__(self, out: Output, plan: LoadPlan, label: Scenario | None = None) -> None:
        self.out = out
        self.plan = plan
        self.label = label or plan.scenario
        self.http = self.label is Scenario.REQUEST
        self.follower = ProgressFollower(self._show)
        self.progress: Progress | None = None
        self._emitted = 0.0
        if out.interactive:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=out.out,
                transient=True,
            )
            total = (plan.duration or 0) + plan.warmup if plan.requests is None else plan.requests
            self.task = self.progress.add_task(self.label, total=total, stats="starting")

    def start(self, fd: int) -> None:
        """Show the bar, and follow the workers' progress lines on ``fd``."""
        if self.progress is not None:
            self.progress.start()
        self.follower.start(fd)

    def stop(self) -> None:
        """Stop following, and remove the bar."""
        self.follower.stop()
        if self.progress is not None:
            self.progress.stop()

    def _stats(self, totals: ProgressTotals) -> str:
        if self.plan.bitrate is not None:  # no latency: the bitrate sent so far
            sent = format_bitrate(totals.rate * self.plan.size * 8)
            return f"{totals.rate:,.0f} datagrams/s  {sent} sent  errors {totals.errors}"
        return f"{totals.rate:,.0f}/s  p99 {totals.p99_ns / 1e6:.3f} ms  errors {totals.errors}"

    def _show(self, totals: ProgressTotals) -> None:
        stage = stage_now(self.plan.stages, totals.elapsed) if self.plan.stages else {}
        if self.progress is not None:
            others = "".join(
                f"  [red]{cls} {n:,}[/]" for cls, n in totals.statuses.items() if cls != "2xx"
            )
            self.progress.update(
                self.task,
                completed=totals.elapsed if self.plan.requests is None else totals.requests,
                stats=self._stats(totals)
                + others
                + (f"  [dim]{stage_line(stage)}[/]" if stage else ""),
                description="warm-up"
                if totals.warmup
                else f"stage {stage['stage']}/{stage['stages']}"
                if stage
                else self.label,
            )
        elif totals.elapsed - self._emitted >= 1.0:
            self._emitted = totals.elapsed
            http = {"statuses": totals.statuses} if self.http else {}
            self.out.event(
                "progress",
                None,
                phase="warmup" if totals.warmup else "measure",
                elapsed_s=round(totals.elapsed, 3),
                requests=totals.requests,
                rps=round(totals.rate, 1),
                p99_ms=round(totals.p99_ns / 1e6, 4),
                errors=totals.errors,
                **http,
                **stage,
            )


# --- reporting ---------------------------------------------------------------------------


def report(out: Output, result: BenchResult, thresholds: list[Threshold]) -> None:
    """Emit the ``summary`` event; on a terminal, print the run's head line and table."""
    crossed = check_thresholds(thresholds, result)
    failures = default_failures(result)
    checks = [
        {"expr": t.text, "value": t.value(result), "crossed": t in crossed} for t in thresholds
    ]
    out.event(
        "summary",
        None,
        **result.as_dict(),
        thresholds=checks,
        failures=failures,
        ok=not crossed and not failures,
    )
    if out.json:
        return
    loop = f"open loop at {result.rate:,.0f}/s" if result.rate else "closed loop"
    if result.stages:
        ramped = "rate, open loop" if result.stages[0].kind == "rate" else "connections"
        loop = f"{len(result.stages)} stage(s) ramping the {ramped}"
    if result.datagrams is not None:
        loop = f"paced at {format_bitrate(result.datagrams.bitrate)}"
    # Two lines, each short enough for 80 columns with a usual target.
    head = (
        f"[bold]{result.scenario}{' ' + result.direction if result.direction else ''}[/]"
        f" over {result.transport} to [cyan]{escape(result.target)}[/],"
        f" {loop}\n{result.connections} connection(s), {result.workers} worker(s), "
        + (
            f"pipeline {result.pipeline}, "
            if result.scenario in (Scenario.ECHO, Scenario.REQUEST)
            else ""
        )
        + (
            "HTTP/1.1 requests"
            if result.transport.startswith("http")
            else f"{format_size(result.size)} per {result.scenario.unit}"
        )
    )
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    unit = f"{result.scenario.unit}s"
    if result.direction != "reverse" or result.scenario is not Scenario.STREAM:
        # a reverse stream's client writes nothing; a reverse bitrate test counts arrivals
        table.add_row(
            unit,
            f"{result.requests:,} in {result.duration_s:.2f} s = [bold]{result.rps:,.0f}/s[/]",
        )
    directions = result.directions()
    if not directions:
        table.add_row(
            "throughput",
            f"{result.mb_per_s:,.2f} MB/s sent, {result.recv_mb_per_s:,.2f} MB/s received",
        )
    for name, figures in directions.items():
        table.add_row(name, _direction_line(name, figures))
    if directions:
        table.add_row("measured", f"{result.duration_s:.2f} s, then {result.drain_s:.3f} s drain")
    if result.datagrams is not None:
        _datagram_rows(table, result.datagrams, result.duration_s)
        if result.missed:  # the sender fell behind its schedule: the target was not sent
            table.add_row("behind", f"[red]{result.missed:,}[/] datagram(s) due never sent")
    lat = result.latency_ms()
    if lat is not None:
        table.add_row("latency ms", _latency_grid(lat))
        table.add_row("samples", f"{result.latency.count:,}")
    if result.statuses:
        codes = ", ".join(f"{code} {n:,}" for code, n in sorted(result.statuses.items()))
        table.add_row("statuses", codes)
        table.add_row("connections", f"{result.connects:,} opened")
    if result.rate:
        table.add_row("late", f"{result.late:,} sent late, {result.missed:,} never sent")
    if result.error_count:
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(result.errors.items()))
        table.add_row("errors", f"[red]{result.error_count:,}[/] ({kinds})")
        for kind, message in sorted(result.error_samples.items()):
            table.add_row("", f"[dim]{kind}: {escape(message)}[/]")
    else:
        table.add_row("errors", "none")
    for t, check in zip(thresholds, checks, strict=True):
        mark = "[red]crossed[/]" if check["crossed"] else "[green]held[/]"
        table.add_row("fail-if", f"{mark} {escape(t.describe(result))}")
    for reason in failures:
        table.add_row("failed", f"[red]{escape(reason)}[/]")
    out.print(head)
    out.print(table)
    if result.stages:
        out.print(stage_table(result))


def _datagram_rows(table: Table, tally: DatagramTally, seconds: float) -> None:
    """A UDP bitrate run's rows: what the receivers counted, as iperf3's receiver line."""
    table.add_row(
        "received",
        f"{tally.received:,} of {tally.sent:,} datagram(s) at"
        f" [bold]{format_bitrate(tally.bits_per_s(seconds))}[/]"
        f" ({tally.streams} stream(s) reported)",
    )
    table.add_row(
        "lost",
        f"{tally.lost:,} ([bold]{tally.loss_pct:.3f}%[/]), {tally.duplicates:,} duplicate(s),"
        f" {tally.out_of_order:,} out of order"
        + (f", [red]{tally.corrupt:,} corrupt[/]" if tally.corrupt else ""),
    )
    table.add_row("jitter", f"[bold]{tally.jitter_ms:.3f} ms[/] (RFC 3550, at the receiver)")


def _direction_line(name: str, figures: dict[str, float | int | None]) -> str:
    """One direction of a stream test: what its sender wrote and what its receiver got."""
    sender, receiver = ("bench", "server") if name == "forward" else ("server", "bench")

    def part(who: str, what: str, key: str) -> str:
        count, rate = figures[f"{key}_bytes"], figures[f"{key}_mb_per_s"]
        if count is None or rate is None:
            return f"{who} did not report"
        return f"{who} {what} {format_size(int(count))} at {rate:,.0f} MB/s"

    return f"{part(sender, 'sent', 'sender')}, {part(receiver, 'got', 'receiver')}"


# The latency figures, four to a row: each label stands above its value, so no terminal
# width can put a label and its value on different lines (as "p99.99" / "5.236" were).
LATENCY_ROWS = (("min", "p50", "p90", "p99"), ("p99_9", "p99_99", "max", "mean"))


def _latency_grid(lat: dict[str, float]) -> Table:
    grid = Table.grid(padding=(0, 2))
    for _ in LATENCY_ROWS[0]:
        grid.add_column(justify="right", no_wrap=True)
    for names in LATENCY_ROWS:
        grid.add_row(*(f"[dim]{name.replace('_', '.')}[/]" for name in names))
        grid.add_row(*(f"[bold]{lat[name]:.3f}[/]" for name in names))
    return grid

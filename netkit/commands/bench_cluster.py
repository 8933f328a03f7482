"""``netkit bench --cluster``: the flags' values turned into a fleet run, and how it is shown.

The run itself is :class:`netkit.net.bench.cluster.FleetRun`; this module shows the members
chosen, the fleet's progress (a per-member table each second on a terminal, ``progress``
events with ``--json``), each member's result (``member`` events and a table: rate, errors,
p50/p99) and judges the per-member ``--fail-if-worker`` thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.live import Live
from rich.markup import escape
from rich.table import Table

from netkit.console import Output
from netkit.core.bench.cluster import (
    ClusterWorker,
    MemberOutcome,
    fleet_result,
    missing_members,
    parse_cluster,
)
from netkit.core.bench.http import HTTPLoad
from netkit.core.bench.plan import LoadPlan
from netkit.core.bench.result import BenchResult
from netkit.core.bench.thresholds import Threshold, check_thresholds
from netkit.errors import CheckFailed, LocalError
from netkit.net.bench.cluster import FleetRun
from netkit.net.tls import ClientTLS


class FleetView:
    """The fleet while it runs: a table of members (rate, requests, errors, p99) and their
    total, redrawn each second on a terminal; ``progress`` events with ``--json``."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.members: list[ClusterWorker] = []
        self.live: Live | None = None

    def chosen(self, members: list[ClusterWorker]) -> None:
        """The members are chosen: say which, and start the table."""
        self.members = members
        self.out.event(
            "cluster",
            f"{len(members)} cluster member(s): "
            + ", ".join(f"[cyan]{escape(m.address)}[/]" for m in members),
            members=[{"worker": m.address, "host": m.host, "name": m.name} for m in members],
        )
        if self.out.interactive:
            self.live = Live(self._table({}), console=self.out.out, transient=True)
            self.live.start()

    def progress(self, latest: dict[int, dict[str, Any]]) -> None:
        """Each member's latest progress."""
        if self.live is not None:
            self.live.update(self._table(latest))
            return
        self.out.event(
            "progress",
            None,
            rps=round(sum(p["rate"] for p in latest.values()), 1),
            requests=sum(p["requests"] for p in latest.values()),
            errors=sum(p["errors"] for p in latest.values()),
            members=[
                {
                    "index": i,
                    "phase": "warmup" if p["warmup"] else "measure",
                    "elapsed_s": round(p["elapsed"], 3),
                    "requests": p["requests"],
                    "rps": round(p["rate"], 1),
                    "p99_ms": round(p["p99_ns"] / 1e6, 4),
                    "errors": p["errors"],
                }
                for i, p in sorted(latest.items())
            ],
        )

    def stop(self) -> None:
        """Remove the table."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _table(self, latest: dict[int, dict[str, Any]]) -> Table:
        table = Table(title="fleet", title_justify="left", box=None)
        for column in ("member", "rate/s", "requests", "errors", "p99 ms"):
            table.add_column(column, justify="left" if column == "member" else "right")
        for i, member in enumerate(self.members):
            p = latest.get(i)
            if p is None:
                table.add_row(escape(member.address), "-", "-", "-", "-")
                continue
            table.add_row(
                escape(member.address),
                f"{p['rate']:,.0f}",
                f"{p['requests']:,}",
                f"{p['errors']:,}",
                f"{p['p99_ns'] / 1e6:.3f}",
            )
        if latest:
            table.add_row(
                "[bold]total[/]",
                f"[bold]{sum(p['rate'] for p in latest.values()):,.0f}[/]",
                f"{sum(p['requests'] for p in latest.values()):,}",
                f"{sum(p['errors'] for p in latest.values()):,}",
                "",
            )
        return table


@dataclass
class Fleet:
    """What a cluster run ended with.

    Attributes:
        outcomes: each member's.
        interrupted: SIGINT cut the run short.
    """

    outcomes: list[MemberOutcome]
    interrupted: bool

    def merged(self) -> BenchResult:
        """The fleet's result: the exact merge of the members that reported.

        Raises:
            LocalError: no member reported (exit 6, naming them).
        """
        result = fleet_result(self.outcomes)
        if result is None:
            self.judge_lost()
        assert result is not None
        return result

    def judge_lost(self) -> None:
        """Fail (exit 6) when a member has no result: the fleet's figures are partial, so no
        threshold may pass on them. The error names each such member."""
        missing = missing_members(self.outcomes)
        if missing is not None:
            raise LocalError(f"{missing}; what the other members measured is reported")


def run_cluster(
    out: Output,
    cluster: str,
    plan: LoadPlan,
    target: str,
    tls: ClientTLS,
    http: HTTPLoad | None,
    processes: int,
    hosts: int | None,
    per_worker: bool,
) -> Fleet:
    """Run ``plan`` on the cluster ``cluster`` names, showing its progress."""
    view = FleetView(out)
    run = FleetRun(
        parse_cluster(cluster),
        plan,
        target,
        tls,
        http,
        processes,
        hosts=hosts,
        per_worker=per_worker,
        on_members=view.chosen,
        on_progress=view.progress,
    )
    try:
        outcomes, interrupted = run.run()
    finally:
        view.stop()
    return Fleet(outcomes, interrupted)


def report_members(
    out: Output, outcomes: list[MemberOutcome], thresholds: list[Threshold]
) -> list[str]:
    """A ``member`` event per member and, on a terminal, the per-member table; returns why
    members failed their ``--fail-if-worker`` thresholds (one line each)."""
    failed: list[str] = []
    table = Table(title="members", title_justify="left", box=None)
    for column in ("member", "host", "rate/s", "errors", "p50 ms", "p99 ms", ""):
        table.add_column(column, justify="left" if column in ("member", "host", "") else "right")
    for outcome in outcomes:
        result = outcome.result
        crossed = check_thresholds(thresholds, result) if result is not None else []
        if crossed and result is not None:
            failed.append(
                f"member {outcome.index + 1} ({outcome.worker.address}): "
                + "; ".join(t.describe(result) for t in crossed)
            )
        checks = [
            {"expr": t.text, "value": t.value(result), "crossed": t in crossed}
            for t in thresholds
            if result is not None
        ]
        out.event("member", None, **outcome.as_dict(), thresholds=checks)
        table.add_row(*_member_row(outcome, bool(crossed)))
    if not out.json:
        out.print(table)
    return failed


def _member_row(outcome: MemberOutcome, crossed: bool) -> tuple[str, ...]:
    result = outcome.result
    lat = result.latency_ms() if result is not None else None
    note = ""
    if outcome.error:
        note = "[red]lost[/]" if outcome.lost else f"[red]{escape(outcome.error)}[/]"
    elif crossed:
        note = "[red]fail-if-worker crossed[/]"
    return (
        escape(outcome.worker.address),
        escape(outcome.worker.host),
        f"{result.rps:,.0f}" if result is not None else "-",
        f"{result.error_count:,}" if result is not None else "-",
        f"{lat['p50']:.3f}" if lat else "-",
        f"{lat['p99']:.3f}" if lat else "-",
        note,
    )


def judge_members(failed: list[str]) -> None:
    """Fail (exit 1) when a member crossed a ``--fail-if-worker`` threshold."""
    if failed:
        raise CheckFailed("--fail-if-worker crossed by " + "; ".join(failed))

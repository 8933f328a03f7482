"""How ``netkit bench --stages`` shows its stages: the current one in the live view and in
``--json`` progress events (:func:`stage_now`, :func:`stage_line`), and the per-stage table
of the report (:func:`stage_table`)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from netkit.core.bench.result import BenchResult
from netkit.core.bench.stages import StageKind, Stages


def stage_now(stages: Stages, elapsed: float) -> dict[str, Any]:
    """The stage under way ``elapsed`` seconds in, as ``progress`` event fields: ``stage``
    (from 1), ``stages``, ``stage_target`` and the intended ``target_rps`` or
    ``target_connections`` now (the schedule is fixed: this is what it asks for)."""
    i = stages.index_at(elapsed)
    now = stages.value_at(elapsed)
    fields: dict[str, Any] = {
        "stage": i + 1,
        "stages": len(stages.stages),
        "stage_target": stages.stages[i].target,
    }
    if stages.kind is StageKind.RATE:
        fields["target_rps"] = round(now, 1)
    else:
        fields["target_connections"] = stages.connections_at(elapsed)
    return fields


def stage_line(fields: dict[str, Any]) -> str:
    """``now 640/s -> 1,000/s`` for the progress bar (the stage's number is its title)."""
    rate = "target_rps" in fields
    unit = "/s" if rate else " conn"
    now = fields["target_rps"] if rate else fields["target_connections"]
    return f"now {now:,.0f}{unit} -> {fields['stage_target']:,.0f}{unit}"


def stage_table(result: BenchResult) -> Table:
    """One row per stage: its ramp, requests and rate (with the intended rate for rate
    stages), latency percentiles and errors."""
    rate = result.stages[0].kind is StageKind.RATE
    grid = Table(
        box=None, pad_edge=False, padding=(0, 1), collapse_padding=True, caption_justify="left"
    )
    grid.caption = (
        "[dim]latency in ms; want/s: the rate the schedule asked for[/]"
        if rate
        else ("[dim]latency in ms[/]")
    )
    heads = ["stage", "requests", "/s", *(["want/s", "missed"] if rate else [])]
    heads += ["p50", "p99", "max", "errors"]
    for i, head in enumerate(heads):
        grid.add_column(head, justify="left" if i == 0 else "right", no_wrap=True)
    for s in result.stages:
        lat = s.latency
        cells = [s.label(), f"{s.requests:,}", f"{s.rps:,.0f}"]
        if rate:
            cells += [f"{s.intended_rps:,.0f}", f"{s.missed:,}"]
        if lat.count:
            cells += [f"{lat.percentile(q) / 1e6:.3f}" for q in (50, 99, 100)]
        else:
            cells += ["-", "-", "-"]
        errors = sum(s.errors.values())
        cells.append(f"[red]{errors:,}[/]" if errors else "0")
        grid.add_row(*cells)
    return grid

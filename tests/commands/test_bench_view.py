"""``commands/bench_view.py``'s live view in-process: the run's label, and HTTP answers by
status class in ``--json`` progress events and on the bar."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from netkit.commands.bench_view import LiveView
from netkit.console import Output
from netkit.core.bench.plan import LoadPlan, Scenario
from netkit.net.bench.fanout import ProgressTotals

PLAN = LoadPlan(scenario=Scenario.ECHO, connections=2, total_connections=2, duration=5.0)


def totals(statuses: dict[str, int]) -> ProgressTotals:
    return ProgressTotals(1.5, 120, 80.0, 20, 2e6, False, statuses)


def test_progress_events_of_an_http_run_count_status_classes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = Output(json_mode=True)
    view = LiveView(out, PLAN, Scenario.REQUEST)
    view._show(totals({"2xx": 100, "4xx": 15, "5xx": 5}))
    out.flush()
    event = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert event["event"] == "progress"
    assert event["statuses"] == {"2xx": 100, "4xx": 15, "5xx": 5}
    assert event["errors"] == 20


def test_progress_events_of_other_runs_have_no_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = Output(json_mode=True)
    LiveView(out, PLAN)._show(totals({}))
    out.flush()
    assert "statuses" not in json.loads(capsys.readouterr().out.splitlines()[-1])


def test_the_bar_names_the_run_and_shows_the_classes_other_than_2xx() -> None:
    out = Output()
    out.out = Console(record=True, force_terminal=True, width=160)
    view = LiveView(out, PLAN, Scenario.REQUEST)
    assert view.progress is not None
    view._show(totals({"2xx": 100, "4xx": 15, "5xx": 5}))
    (task,) = view.progress.tasks
    assert task.description == "request"
    assert "4xx 15" in task.fields["stats"] and "5xx 5" in task.fields["stats"]
    assert "2xx" not in task.fields["stats"]

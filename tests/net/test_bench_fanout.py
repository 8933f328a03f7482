"""Tests for netkit.net.bench.fanout: real forked workers load a real echo server on loopback;
their results, their errors (as error objects) and their progress come back to the parent."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import netkit.net.bench.fanout
from netkit.core.addresses import TCPEndpoint
from netkit.core.bench.plan import LoadPlan
from netkit.errors import ConnectError, LocalError
from netkit.net.bench.embedded import EmbeddedEchoServer
from netkit.net.bench.fanout import ProgressFollower, ProgressTotals, run_bench_workers
from netkit.net.bench.worker import Target

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def echo() -> Iterator[TCPEndpoint]:
    server = EmbeddedEchoServer(workers=1)
    host, port = server.start().rsplit(":", 1)
    try:
        yield TCPEndpoint(host, int(port))
    finally:
        server.stop()


def test_each_worker_reports_its_own_exact_result(echo: TCPEndpoint) -> None:
    plan = LoadPlan(connections=4, total_connections=4, requests=401, duration=None)
    reports, signum = run_bench_workers(plan.split(2), Target(echo))
    assert signum is None
    assert [r.index for r in reports] == [0, 1]
    assert [r.error for r in reports] == [None, None]
    assert [r.exit_code for r in reports] == [0, 0]
    results = [r.result for r in reports]
    assert [r.requests for r in results if r is not None] == [201, 200]
    assert all(r is not None and r.error_count == 0 for r in results)


def test_a_worker_error_comes_back_as_the_error_object() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        target = TCPEndpoint("127.0.0.1", s.getsockname()[1])
        plan = LoadPlan(connections=2, total_connections=2, duration=5)
        reports, _ = run_bench_workers(plan.split(2), Target(target))
    for report in reports:
        assert report.result is None and report.exit_code == 0
        assert type(report.error) is ConnectError
        assert "refused" in str(report.error)


def test_a_worker_that_dies_is_described_by_how_it_ended(
    monkeypatch: pytest.MonkeyPatch, echo: TCPEndpoint
) -> None:
    async def killed(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(netkit.net.bench.fanout, "run_worker", killed)
    reports, _ = run_bench_workers([LoadPlan(duration=1)], Target(echo))
    (report,) = reports
    assert report.result is None and report.exit_code == -signal.SIGKILL
    assert isinstance(report.error, LocalError)
    assert str(report.error).startswith("bench worker 1 of 1 was killed by SIGKILL")


def test_a_worker_that_crashes_says_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, echo: TCPEndpoint
) -> None:
    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(netkit.net.bench.fanout, "run_worker", crash)
    reports, _ = run_bench_workers([LoadPlan(duration=1)] * 2, Target(echo))
    assert [str(r.error) for r in reports] == [
        "bench worker 1 of 2 exited with code 70 before writing its result",
        "bench worker 2 of 2 exited with code 70 before writing its result",
    ]


def test_progress_lines_reach_the_follower(echo: TCPEndpoint) -> None:
    seen: list[ProgressTotals] = []
    lock = threading.Lock()

    def record(totals: ProgressTotals) -> None:
        with lock:
            seen.append(totals)

    follower = ProgressFollower(record)
    plan = LoadPlan(connections=2, total_connections=2, duration=1.5)
    reports, _ = run_bench_workers(plan.split(2), Target(echo), follower=follower)
    assert all(r.error is None for r in reports)
    with lock:
        assert seen, "no progress totals while the workers ran"
        assert seen[-1].requests > 0 and seen[-1].errors == 0
        assert [t.elapsed for t in seen] == sorted(t.elapsed for t in seen)

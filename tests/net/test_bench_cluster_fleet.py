"""FleetRun in-process against a real Dask scheduler and two workers: the members it
chooses, the progress each sends, the barrier's common start, and the results it collects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import pytest

from netkit.core.bench.cluster import ClusterSpec, ClusterWorker
from netkit.core.bench.plan import LoadPlan
from netkit.errors import ConnectError, OperationTimeout
from netkit.net.bench.cluster import FleetRun, MemberJob, member_task
from netkit.net.tls import ClientTLS
from tests.commands.conftest import ServerProcess, start_netkit
from tests.dask_cluster import DaskCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(dask_two_hosts: DaskCluster) -> DaskCluster:
    return dask_two_hosts


@pytest.fixture
def echo() -> Iterator[ServerProcess]:
    server = start_netkit("tcp-echo", "serve", "127.0.0.1:0")
    yield server
    server.stop()


def fleet(cluster: DaskCluster, target: str, **plan: Any) -> FleetRun:
    settings = {"connections": 4, "total_connections": 4, "duration": 1.5, **plan}
    return FleetRun(
        ClusterSpec(scheduler=cluster.address), LoadPlan(**settings), target, ClientTLS(), None, 1
    )


def test_members_progress_and_a_common_start(cluster: DaskCluster, echo: ServerProcess) -> None:
    run = fleet(cluster, echo.address)
    chosen: list[list[ClusterWorker]] = []
    progress: list[dict[int, dict[str, Any]]] = []
    run.on_members = chosen.append
    run.on_progress = progress.append
    outcomes, interrupted = run.run()
    assert not interrupted
    (members,) = chosen
    assert [m.host for m in members] == ["127.0.0.1", "127.0.0.2"]
    assert [o.worker for o in outcomes] == members
    assert any(set(p) == {0, 1} for p in progress), "progress from both members"
    results = [o.result for o in outcomes]
    assert all(r is not None and r.requests > 0 and not r.error_count for r in results)
    starts = [r.started_at for r in results if r is not None and r.started_at is not None]
    assert len(starts) == 2 and max(starts) - min(starts) < 1.0  # both began at the barrier
    assert [r.connections for r in results if r is not None] == [2, 2]


# A lambda: cloudpickle sends it by value (the scheduler cannot import this test module).
_leftovers = lambda dask_scheduler: sorted(  # noqa: E731
    str(name)
    for name in [
        *dask_scheduler.extensions["queues"].queues,
        *dask_scheduler.extensions["events"]._events,
    ]
    if str(name).startswith("netkit-bench-")
)


def test_an_unreachable_target_fails_at_the_check_naming_every_member(
    cluster: DaskCluster, tmp_path: Path
) -> None:
    run = fleet(cluster, f"unix:{tmp_path}/nothing.sock")
    with distributed.Client(cluster.address, timeout=30) as client:
        before = set(client.run_on_scheduler(_leftovers))
        with pytest.raises(ConnectError) as caught:
            run.run()
        # Called off once every member had returned: the stop was cleared after them.
        assert set(client.run_on_scheduler(_leftovers)) - before == set()
    message = str(caught.value)
    assert "cluster member 1 (tcp://127.0.0.1:" in message
    assert "cluster member 2 (tcp://127.0.0.2:" in message


def test_a_finished_run_leaves_nothing_in_the_scheduler(
    cluster: DaskCluster, echo: ServerProcess
) -> None:
    # The cluster is the session's: a run of another test whose worker was killed mid-run
    # leaves its queues (a dead worker never closes them). Only this run's count here.
    with distributed.Client(cluster.address, timeout=30) as client:
        before = set(client.run_on_scheduler(_leftovers))
        fleet(cluster, echo.address, duration=0.3).run()
        # A member's stop watcher may still be in its last half-second wait on the stop
        # event; the scheduler drops the event when that wait ends.
        deadline = time.monotonic() + 10
        while left := set(client.run_on_scheduler(_leftovers)) - before:
            assert time.monotonic() < deadline, left
            time.sleep(0.05)  # polling the scheduler's state


def test_a_member_never_told_to_start_does_not_load(
    cluster: DaskCluster, echo: ServerProcess
) -> None:
    job = MemberJob(
        run_id="never-started",
        index=0,
        plan=LoadPlan(connections=2, total_connections=2, duration=1.0),
        target=echo.address,
        tls=ClientTLS(),
        http=None,
        processes=1,
        ready_timeout=0.5,
    )
    with distributed.Client(cluster.address, timeout=30) as client:
        answer = client.submit(member_task, job, pure=False).result(timeout=60)
    assert isinstance(answer["error"], OperationTimeout)
    assert "never started" in str(answer["error"])
    assert echo.stop() == 0
    assert echo.event("summary")["connections"] == 1  # the check's, and no load

"""The arithmetic of ``netkit bench --cluster``: the flag, choosing members, splitting the
plan exactly, and the fleet's result."""

from __future__ import annotations

import pytest

from netkit.core.bench.cluster import (
    ClusterSpec,
    ClusterWorker,
    MemberOutcome,
    choose_members,
    fleet_result,
    member_plans,
    missing_members,
    parse_cluster,
)
from netkit.core.bench.plan import LoadPlan, Scenario
from netkit.core.bench.result import BenchResult
from netkit.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("local:3", ClusterSpec(local_workers=3)),
        ("tcp://10.0.0.5:8786", ClusterSpec(scheduler="tcp://10.0.0.5:8786")),
        ("sched.example:9000", ClusterSpec(scheduler="tcp://sched.example:9000")),
        ("sched", ClusterSpec(scheduler="tcp://sched:8786")),
        ("tcp://[::1]:8786", ClusterSpec(scheduler="tcp://[::1]:8786")),
    ],
)
def test_parse_cluster(text: str, spec: ClusterSpec) -> None:
    assert parse_cluster(text) == spec


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("local:0", "local:N takes 1 to 64"),
        ("local:65", "local:N takes 1 to 64"),
        ("tls://h:1", "tls:// schedulers are not supported"),
        ("tcp://h:port", "the port is not a number"),
        ("tcp://h:1/x", "expected tcp://HOST:PORT or local:N"),
    ],
)
def test_parse_cluster_refuses(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_cluster(text)


def worker(host: str, port: int) -> ClusterWorker:
    return ClusterWorker(f"tcp://{host}:{port}", host, f"w{port}")


WORKERS = [worker("10.0.0.2", 5), worker("10.0.0.1", 9), worker("10.0.0.1", 3)]


def test_one_member_per_host_unless_per_worker() -> None:
    assert choose_members(WORKERS, None, False) == [WORKERS[2], WORKERS[0]]
    assert choose_members(WORKERS, None, True) == [WORKERS[2], WORKERS[1], WORKERS[0]]
    assert choose_members(WORKERS, 1, False) == [WORKERS[2]]
    with pytest.raises(ConfigError, match="the cluster has 2 distinct hosts"):
        choose_members(WORKERS, 3, False)
    with pytest.raises(ConfigError, match="no worker"):
        choose_members([], None, False)


@pytest.mark.parametrize(("connections", "members"), [(7, 3), (3, 3), (100, 7)])
def test_member_plans_split_connections_and_rate_exactly(connections: int, members: int) -> None:
    plan = LoadPlan(connections=connections, total_connections=connections, rate=1000.0)
    shares = member_plans(plan, members)
    assert len(shares) == members
    assert sum(p.connections for p in shares) == connections
    # Each connection keeps its own place in the whole run's schedule.
    starts = [p.first_connection + i for p in shares for i in range(p.connections)]
    assert starts == list(range(connections))
    rates = [p.rate * p.connections / p.total_connections for p in shares if p.rate]
    assert sum(rates) == pytest.approx(1000.0)
    intervals = {p.pacing(0).interval_ns for p in shares if p.pacing(0) is not None}
    assert len(intervals) == 1  # every connection of every member paced alike


def test_member_plans_need_a_connection_and_a_request_each() -> None:
    with pytest.raises(ConfigError, match="3 cluster members need at least 3 connections"):
        member_plans(LoadPlan(connections=2, total_connections=2), 3)
    plan = LoadPlan(connections=4, total_connections=4, duration=None, requests=2)
    with pytest.raises(
        ConfigError,
        match=r"3 cluster members need at least 3 connections and requests \(connections 4, requests 2\)",
    ):
        member_plans(plan, 3)
    shares = member_plans(
        LoadPlan(connections=4, total_connections=4, duration=None, requests=9), 2
    )
    assert [p.requests for p in shares] == [5, 4]


def result(requests: int) -> BenchResult:
    r = BenchResult(Scenario.ECHO, "t", "tcp", 1, 1, 1, 64, None, requests=requests, duration_s=1.0)
    r.latency.record(1000 * requests)
    return r


def test_fleet_result_merges_only_members_that_reported() -> None:
    outcomes = [
        MemberOutcome(0, WORKERS[0], result(10)),
        MemberOutcome(
            1, WORKERS[1], error="was lost mid-run (its worker left the cluster)", lost=True
        ),
        MemberOutcome(2, WORKERS[2], result(5)),
    ]
    merged = fleet_result(outcomes)
    assert merged is not None and merged.requests == 15 and merged.latency.count == 2
    assert missing_members(outcomes) == (
        "member 2 (tcp://10.0.0.1:9) was lost mid-run (its worker left the cluster)"
    )
    assert outcomes[1].as_dict()["lost"] is True and "requests" not in outcomes[1].as_dict()
    assert fleet_result([outcomes[1]]) is None
    assert missing_members([outcomes[0]]) is None

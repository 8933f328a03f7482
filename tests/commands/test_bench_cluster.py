"""``netkit bench --cluster`` against a real ``dask scheduler`` and real ``dask worker``
processes that the tests start on loopback.

The two workers of the shared cluster listen on 127.0.0.1 and 127.0.0.2, so the scheduler
sees two distinct hosts. The tests check that the fleet's counts are the sum of the
members', that its histogram is the exact merge of theirs, that --rate and connections are
split exactly, fleet-wide and per-member gates, a worker killed mid-run (reported, the
others' results kept, exit 6), and a target one member cannot reach (the run fails before
any load, naming it: that worker runs in a mount namespace where the target's Unix socket
does not exist).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from netkit.core.bench.histogram import LatencyHistogram
from netkit.status import ExitStatus
from tests.commands.conftest import (
    NETKIT,
    ServerProcess,
    assert_one_line_error,
    json_lines,
    run_netkit,
)
from tests.dask_cluster import DaskCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def shared_cluster(dask_two_hosts: DaskCluster) -> DaskCluster:
    return dask_two_hosts


@pytest.fixture
def echo(netkit_server: Any) -> str:
    return str(netkit_server("tcp-echo", "serve", "127.0.0.1:0").address)


def events(stdout: str, name: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(stdout) if e["event"] == name]


def bench(cluster: DaskCluster, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_netkit("bench", target, "--cluster", cluster.address, "--json", *args, timeout=90)


def test_fleet_counts_and_histogram_are_the_exact_merge_of_the_members(
    shared_cluster: DaskCluster, echo: str
) -> None:
    proc = bench(shared_cluster, echo, "-c", "4", "-d", "1s", "--fail-if", "errors>0")
    assert proc.returncode == 0, proc.stderr
    (chosen,) = events(proc.stdout, "cluster")
    assert sorted(m["host"] for m in chosen["members"]) == ["127.0.0.1", "127.0.0.2"]
    members = events(proc.stdout, "member")
    (summary,) = events(proc.stdout, "summary")
    assert len(members) == 2 and all(m["requests"] > 0 for m in members)
    assert sorted(m["host"] for m in members) == ["127.0.0.1", "127.0.0.2"]
    for key in ("requests", "bytes_sent", "bytes_received", "connections", "connects"):
        assert summary[key] == sum(m[key] for m in members), key
    assert summary["errors"]["total"] == 0
    assert summary["thresholds"] == [{"expr": "errors>0", "value": 0, "crossed": False}]
    merged = LatencyHistogram.decode(members[0]["histogram"]["encoded"])
    merged.add(LatencyHistogram.decode(members[1]["histogram"]["encoded"]))
    assert merged.encode() == summary["histogram"]["encoded"]
    assert summary["histogram"]["count"] == sum(m["histogram"]["count"] for m in members)


def test_rate_is_split_exactly_and_reached(shared_cluster: DaskCluster, echo: str) -> None:
    proc = bench(
        shared_cluster,
        echo,
        "-c",
        "5",
        "-d",
        "2s",
        "--rate",
        "300/s",
        "--fail-if-worker",
        "errors>0",
    )
    assert proc.returncode == 0, proc.stderr
    members = events(proc.stdout, "member")
    (summary,) = events(proc.stdout, "summary")
    # --fail-if-worker held on every member (the gate test sees it crossed).
    assert [m["thresholds"] for m in members] == [
        [{"expr": "errors>0", "value": 0, "crossed": False}]
    ] * 2
    assert sorted(m["connections"] for m in members) == [2, 3]
    assert sorted(m["rate"] for m in members) == pytest.approx([120.0, 180.0])
    assert summary["rate"] == pytest.approx(300.0)
    # Every request due in the 2 s was sent and answered, or counted as never sent.
    due = summary["requests"] + summary["missed"] + summary["errors"]["total"]
    assert due == pytest.approx(600, rel=0.05)  # a few more when the end timer fires late


def test_fleet_and_member_gates(shared_cluster: DaskCluster, echo: str) -> None:
    crossed = bench(shared_cluster, echo, "-c", "2", "-d", "0.3s", "--fail-if", "rps>1")
    assert crossed.returncode == ExitStatus.CHECK_FAILED
    (summary,) = events(crossed.stdout, "summary")
    assert summary["thresholds"][0]["crossed"] is True
    per_member = bench(
        shared_cluster,
        echo,
        "-c",
        "2",
        "-d",
        "0.3s",
        "--hosts",
        "1",
        "--fail-if-worker",
        "requests>1",
    )
    assert per_member.returncode == ExitStatus.CHECK_FAILED
    assert "--fail-if-worker crossed by member 1" in per_member.stderr
    (member,) = events(per_member.stdout, "member")  # --hosts 1: one member
    assert member["thresholds"][0]["crossed"] is True


def test_usage_errors(shared_cluster: DaskCluster, echo: str) -> None:
    too_many = bench(shared_cluster, echo, "--hosts", "9")
    assert too_many.returncode == ExitStatus.USAGE
    assert "--hosts 9: the cluster has 2 distinct hosts" in too_many.stderr
    assert_one_line_error(too_many.stderr)
    alone = run_netkit("bench", echo, "--per-worker")
    assert alone.returncode == ExitStatus.USAGE
    assert_one_line_error(alone.stderr)
    bad = run_netkit("bench", echo, "--cluster", "tls://127.0.0.1:1")
    assert bad.returncode == ExitStatus.USAGE
    assert "tls:// schedulers are not supported" in bad.stderr


def test_unreachable_scheduler_is_a_connection_error(echo: str) -> None:
    proc = run_netkit("bench", echo, "--cluster", "127.0.0.1:1", "-t", "0.5s")
    assert proc.returncode == ExitStatus.CONNECTION_FAILED
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in proc.stderr
    assert_one_line_error(proc.stderr)


def test_a_worker_killed_mid_run_is_reported_and_the_others_kept(
    shared_cluster: DaskCluster, echo: str
) -> None:
    victim = shared_cluster.start_worker("127.0.0.3")
    try:
        proc = subprocess.Popen(
            [
                *NETKIT,
                "bench",
                echo,
                "--cluster",
                shared_cluster.address,
                "--json",
                "-c",
                "3",
                "-d",
                "4s",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        run = ServerProcess(proc, {})
        try:
            while True:  # every member is loading: each has sent progress
                progress = run.wait_for("progress", timeout=60)
                if len(progress["members"]) == 3 and all(
                    m["requests"] > 0 for m in progress["members"]
                ):
                    break
            victim.kill()
            rc = run.wait_exit(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = run.stderr_text()
    finally:
        shared_cluster.forget("127.0.0.3")
    assert rc == ExitStatus.BIND_FAILED, stderr
    assert "was lost mid-run" in stderr and "127.0.0.3" in stderr
    assert_one_line_error(stderr)
    members = {m["host"]: m for m in run.events if m["event"] == "member"}
    assert members["127.0.0.3"]["lost"] is True and "requests" not in members["127.0.0.3"]
    kept = [members[h] for h in ("127.0.0.1", "127.0.0.2")]
    assert all(not m["lost"] and m["requests"] > 0 for m in kept)
    summary = run.event("summary")
    assert summary["requests"] == sum(m["requests"] for m in kept)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare"
)
def test_a_target_one_member_cannot_reach_fails_before_any_load(
    tmp_path: Path, shared_cluster: DaskCluster, netkit_server: Any
) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    server = netkit_server("tcp-echo", "serve", f"unix:{hidden}/echo.sock")
    # This worker's view of the directory is an empty tmpfs: the socket is not there.
    shared_cluster.start_worker(
        "127.0.0.4",
        wrap=[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            f"mount -t tmpfs tmpfs {hidden} && exec",
        ],
    )
    try:
        proc = bench(shared_cluster, server.address, "-c", "3", "-d", "5s")
    finally:
        shared_cluster.stop_worker("127.0.0.4")
    assert proc.returncode == ExitStatus.CONNECTION_FAILED, proc.stderr
    assert_one_line_error(proc.stderr)
    assert "cluster member 3 (tcp://127.0.0.4:" in proc.stderr
    assert not events(proc.stdout, "member") and not events(proc.stdout, "summary")
    # Before any load: the two reachable members' check connections are all it saw.
    assert server.stop(signal.SIGTERM) == 0
    assert server.event("summary")["connections"] == 2


def test_local_cluster_runs_with_no_setup() -> None:
    proc = run_netkit(
        "bench", "--cluster", "local:2", "-c", "2", "-d", "0.5s", "--json", timeout=90
    )
    assert proc.returncode == 0, proc.stderr
    members = events(proc.stdout, "member")
    assert len(members) == 2 and all(m["requests"] > 0 for m in members)
    (summary,) = events(proc.stdout, "summary")
    assert summary["requests"] == sum(m["requests"] for m in members)

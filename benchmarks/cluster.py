"""What ``netkit bench --cluster`` costs over a local bench (issue 20).

Usage::

    python benchmarks/cluster.py [--rounds N] [--seconds S] [--connections C] [--json [PATH]]

Against one netkit echo server (``tcp-echo serve --workers 1``), closed loop, the same
connections and duration, rounds interleaved so that noise falls on every row:

- ``bench -w 1`` and ``bench -w 2``: plain local runs, forked worker processes;
- ``--cluster`` with 1 and 2 Dask workers (one process each, ``--per-worker``), on a
  Dask LocalCluster (a scheduler and two worker processes) started once, before the rounds.

For each: round trips per second (the run's own figure), the CPU the bench processes used
per round trip (the command and, for the cluster, the Dask workers and their forked
children, from /proc), and the start-up: from launching the command to the first
measurement (the earliest ``started_at`` of its result, a wall clock on this machine).
Goal: the cluster run reaches >= 0.95x the local run's rate at the same worker count, and
starts (command to first request) in under 5 s with a running scheduler.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from typing import Any

from harness import (
    add_json_option,
    cpu_seconds,
    free_port,
    log,
    machine,
    med,
    netkit_command,
    ratio_of_medians,
    rotated,
    stop,
    target_line,
    wait_connectable,
    write_json,
)

RATE_GOAL = 0.95
STARTUP_GOAL_S = 5.0


def start_dask(workers: int) -> tuple[Any, Any, list[int]]:
    """A LocalCluster of ``workers`` single-threaded worker processes on 127.0.0.1, a client
    of it, and the workers' pids (for their CPU)."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    )
    client = distributed.Client(cluster)
    client.wait_for_workers(workers, timeout=60)
    return cluster, client, sorted(client.run(os.getpid).values())


def run_bench(args: list[str], workers: list[int]) -> dict[str, Any]:
    """One bench run: its summary, start-up and CPU (its own and ``workers``' families)."""
    before = sum(cpu_seconds(w, reaped=True) for w in workers)
    launched = time.time()
    proc = subprocess.run(
        [*netkit_command(), "bench", *args, "--json"], capture_output=True, text=True, check=False
    )
    after = sum(cpu_seconds(w, reaped=True) for w in workers)
    if proc.returncode != 0:
        raise RuntimeError(f"bench {args} failed: {proc.stderr.strip()}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    summary = next(e for e in events if e["event"] == "summary")
    own = _children_cpu()
    return {
        "rps": summary["rps"],
        "requests": summary["requests"],
        "startup_s": summary["started_at"] - launched,
        "cpu_s": own + (after - before),
    }


_last_children = 0.0


def _children_cpu() -> float:
    """CPU of reaped children (the bench command and its forked workers) since the last call."""
    import resource

    global _last_children
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    spent, _last_children = total - _last_children, total
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    add_json_option(parser)
    args = parser.parse_args()
    port = free_port()
    echo = subprocess.Popen(  # no --json: nothing reads its per-connection events
        [*netkit_command(), "tcp-echo", "serve", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_connectable(port)
    cluster, client, worker_pids = start_dask(2)
    address = cluster.scheduler_address
    try:
        target = f"127.0.0.1:{port}"
        common = [target, "-c", str(args.connections), "-d", f"{args.seconds}s"]
        rows = {
            "bench -w 1": [*common, "-w", "1"],
            "bench -w 2": [*common, "-w", "2"],
            "--cluster, 1 Dask worker": [
                *common,
                "--cluster",
                address,
                "--per-worker",
                "--hosts",
                "1",
            ],
            "--cluster, 2 Dask workers": [*common, "--cluster", address, "--per-worker"],
        }
        _children_cpu()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
        for r in range(args.rounds):
            for name in rotated(list(rows), r):
                log(f"round {r + 1}: {name}")
                runs[name].append(run_bench(rows[name], worker_pids if "cluster" in name else []))
    finally:
        client.close()
        cluster.close()
        stop(echo)
    info = machine(distributed="distributed")
    print(
        f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu']}), Python "
        f"{info['python']}, distributed {info.get('distributed', '?')}, commit {info['commit']};"
        f" {args.rounds} interleaved rounds of {args.seconds:g} s, {args.connections}"
        " connections, medians.\n"
    )
    print("| run | round trips/s | CPU µs per round trip | start-up s |")
    print("|---|---:|---:|---:|")
    for name, samples in runs.items():
        rps = med([s["rps"] for s in samples])
        cpu = med([s["cpu_s"] / s["requests"] * 1e6 for s in samples])
        start = med([s["startup_s"] for s in samples])
        print(f"| {name} | {rps:,.0f} | {cpu:.1f} | {start:.2f} |")
    print()
    ok = True
    for n in (1, 2):
        local = [s["rps"] for s in runs[f"bench -w {n}"]]
        cluster = [s["rps"] for s in runs[f"--cluster, {n} Dask worker{'s' if n > 1 else ''}"]]
        ratio = ratio_of_medians(cluster, local)
        ok = ok and ratio >= RATE_GOAL
        print(
            target_line(
                f"{n} worker(s): cluster rate {ratio:.2f}x local (goal >= {RATE_GOAL}x)",
                ratio >= RATE_GOAL,
            )
        )
    start = max(med([s["startup_s"] for s in runs[name]]) for name in rows if "cluster" in name)
    print(
        target_line(
            f"cluster start-up {start:.2f} s (goal < {STARTUP_GOAL_S:g} s)", start < STARTUP_GOAL_S
        )
    )
    write_json({"machine": info, "runs": runs}, args.json)


if __name__ == "__main__":
    main()

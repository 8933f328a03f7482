"""Short connections and bulk through ``netkit lb --workers 2`` vs HAProxy ``nbthread 2`` (issue 19).

Short connections: one ``netkit tcp-echo serve`` backend; the same driver for every balancer,
``netkit bench HOST:PORT --scenario connect --exchange -c 32 -s 32`` (32 concurrent clients,
each: connect, send 32 B, read the echo, close; one driver process). Per round: connections per
second (the driver's count over its measured window) and the balancer's CPU per connection
(user + sys of its process tree from /proc over the round, divided by the connections made).
Bulk: ``iperf3 -c`` through each balancer to one ``iperf3 -s`` (MB/s, CPU s per GiB).

Rounds alternate between the balancers (order rotated each round); the table gives medians
and ratios of medians. ``--baseline DIR`` adds ``netkit lb`` run from another source tree (e.g.
``git archive main | tar -x -C DIR``): the before figures on the same run.

Goal (issue 19 item 6): rate >= 0.8x HAProxy, CPU per connection <= 1.5x; bulk >= 1.0x.

Run: ``flock /work/bench.lock python benchmarks/lb_short.py [--rounds 5] [--seconds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness import (
    HOST,
    add_json_option,
    cpu_seconds,
    free_port,
    log,
    machine,
    med,
    netkit_command,
    rotated,
    stop,
    wait_connectable,
    write_json,
)
from proxy import Proxy, iperf3_through, start_haproxy, start_netkit

CLIENTS = 32
SIZE = 32
LB = "netkit lb --workers 2"
BASELINE = "netkit lb --workers 2 (baseline tree)"
HAPROXY = "HAProxy 2.6 nbthread 2"


@dataclass
class Rounds:
    """Per-round figures of one balancer."""

    per_s: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    mb_per_s: list[float] = field(default_factory=list)
    cpu_s_per_gib: list[float] = field(default_factory=list)


def start_lb(
    command: list[str],
    env: dict[str, str],
    name: str,
    backend: int,
    *extra: str,
    cwd: str | None = None,
) -> Proxy:
    """``netkit lb --workers 2`` in front of ``backend``, ready when its port accepts.

    ``cwd``: where it runs (``python -m netkit`` imports the tree in its working directory
    first, before PYTHONPATH: the baseline must run in its own tree).
    """
    port = free_port()
    proc = subprocess.Popen(
        [*command, "lb", f"{HOST}:{port}", f"{HOST}:{backend}", "--workers", "2", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )
    try:
        wait_connectable(port)
    except OSError:
        stop(proc)
        raise
    time.sleep(0.5)  # the workers' first health check (not synchronisation: a settling pause)
    return Proxy(name, proc, port)


def drive(port: int, seconds: float) -> tuple[int, float, int]:
    """One driver run: (connections counted, measured seconds, errors)."""
    cmd = [
        *netkit_command(),
        "bench",
        f"{HOST}:{port}",
        "--scenario",
        "connect",
        "--exchange",
        "-c",
        str(CLIENTS),
        "-s",
        str(SIZE),
        "-d",
        f"{seconds:g}s",
        "--workers",
        "1",
        "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, timeout=seconds + 60)
    summary = json.loads(out.stdout.splitlines()[-1])
    return int(summary["requests"]), float(summary["duration_s"]), int(summary["errors"]["total"])


def rate_round(proxy: Proxy, seconds: float) -> tuple[float, float, int]:
    """(connections/s, balancer CPU µs per connection, errors) for one round."""
    assert proxy.proc is not None
    cpu0 = cpu_seconds(proxy.proc.pid)
    made, took, errors = drive(proxy.port, seconds)
    cpu = cpu_seconds(proxy.proc.pid) - cpu0
    return made / took, cpu / max(made, 1) * 1e6, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per short-connection round")
    parser.add_argument("--bulk-rounds", type=int, default=3)
    parser.add_argument("--bulk-seconds", type=float, default=2.0)
    parser.add_argument("--baseline", help="another netkit source tree to run lb from too")
    add_json_option(parser)
    args = parser.parse_args()

    env = dict(os.environ)
    starters: list[tuple[str, Callable[[int, tuple[str, ...]], Proxy]]] = [
        (LB, lambda b, extra: start_lb(netkit_command(), env, LB, b, *extra)),
        (HAPROXY, lambda b, extra: start_haproxy(HAPROXY, [b], 2)),
    ]
    if args.baseline:
        base = os.path.abspath(args.baseline)
        base_env = env | {"PYTHONPATH": base}
        base_cmd = [sys.executable, "-m", "netkit"]
        starters.insert(
            1,
            (
                BASELINE,
                lambda b, extra: start_lb(base_cmd, base_env, BASELINE, b, *extra, cwd=base),
            ),
        )
    results: dict[str, Rounds] = {name: Rounds() for name, _ in starters}

    log(f"short connections: {args.rounds} rounds x {args.seconds:g} s per balancer")
    backend = start_netkit(lambda listen: ["tcp-echo", "serve", listen], "backend")
    proxies: list[Proxy] = []
    try:
        proxies = [start(backend.port, ()) for _, start in starters]
        for r in range(args.rounds):
            for proxy in rotated(proxies, r):
                per_s, cpu_us, errors = rate_round(proxy, args.seconds)
                res = results[proxy.name]
                res.per_s.append(per_s)
                res.cpu_us.append(cpu_us)
                res.errors.append(errors)
                log(
                    f"  round {r + 1} {proxy.name:40} {per_s:7.0f}/s {cpu_us:6.1f} µs/conn {errors} err"
                )
    finally:
        for p in proxies:
            p.close()
        backend.close()

    log(f"bulk: {args.bulk_rounds} rounds x {args.bulk_seconds:g} s of iperf3 per balancer")
    server_port = free_port()
    server = subprocess.Popen(
        ["iperf3", "-s", "-p", str(server_port), "-B", HOST],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxies = []
    try:
        wait_connectable(server_port)
        # Checks would open control connections to iperf3: one at start, then none.
        proxies = [start(server_port, ("--check-interval", "1h")) for _, start in starters]
        for r in range(args.bulk_rounds):
            for proxy in rotated(proxies, r):
                mbps, gib = iperf3_through(proxy, args.bulk_seconds)
                results[proxy.name].mb_per_s.append(mbps)
                results[proxy.name].cpu_s_per_gib.append(gib)
                log(f"  bulk round {r + 1} {proxy.name:40} {mbps:7.0f} MB/s {gib:6.3f} CPU s/GiB")
    finally:
        for p in proxies:
            p.close()
        stop(server)
    report(results, args)


def report(results: dict[str, Rounds], args: argparse.Namespace) -> None:
    """The table (stdout) and the raw figures (--json)."""
    hap = results[HAPROXY]
    info = machine()
    print(
        f"{info['date']}; {info['nproc']} CPUs ({info['cpu']}), commit {info['commit']}; "
        f"{args.rounds} rounds x {args.seconds:g} s short, {args.bulk_rounds} x "
        f"{args.bulk_seconds:g} s bulk, alternated; medians\n"
    )
    print(
        "| balancer | connections/s | CPU µs/conn | errors | vs HAProxy (rate, CPU) | bulk MB/s | CPU s/GiB | bulk vs HAProxy |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for name, res in results.items():
        rate_x = med(res.per_s) / med(hap.per_s)
        cpu_x = med(res.cpu_us) / med(hap.cpu_us)
        bulk_x = med(res.mb_per_s) / med(hap.mb_per_s)
        print(
            f"| {name} | {med(res.per_s):,.0f} | {med(res.cpu_us):.0f} | {sum(res.errors)} | "
            f"{rate_x:.2f}x, {cpu_x:.2f}x | {med(res.mb_per_s):,.0f} | "
            f"{med(res.cpu_s_per_gib):.3f} | {bulk_x:.2f}x |"
        )
    write_json({name: vars(res) for name, res in results.items()}, args.json)


if __name__ == "__main__":
    main()

"""iperf3's modes on loopback: ``netkit bench --scenario stream`` (forward and ``--reverse``)
against ``netkit tcp-echo serve --mode stream``, and ``iperf3 -c`` (and ``-R``) against
``iperf3 -s``, with the same duration and stream count.

Usage::

    python benchmarks/stream.py [--rounds N] [--seconds S] [--streams P] [--json [PATH]]

Both report the receiver's figure: netkit's ``directions.DIR.receiver_mb_per_s`` (what the
server's sink counted, or what bench read in reverse), iperf3's ``end.sum_received``. Rounds
alternate netkit and iperf3 (which goes first rotates), for each direction; medians and
ratios are reported. CPU per GB is user + system time of client and server together (each
process waited for with ``wait4``, so forked bench workers count; the netkit server is read
from /proc before and after the round), per 10^9 bytes received. Issue 18's goal: netkit
>= 0.9x iperf3 forward and reverse.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    HOST,
    START_TIMEOUT_S,
    add_json_option,
    cpu_seconds,
    ensure_tool,
    free_port,
    log,
    machine,
    med,
    netkit_command,
    read_line,
    rotated,
    stop,
    target_line,
    wait_connectable,
    write_json,
)


def run_child(args: list[str], timeout: float) -> tuple[bytes, float]:
    """Run ``args`` to its end: (stdout, CPU seconds of it and every child it reaped)."""
    before = os.times()
    out = subprocess.run(args, capture_output=True, timeout=timeout)
    after = os.times()
    if out.returncode != 0:
        raise RuntimeError(f"{args[:4]} exited {out.returncode}: {out.stderr.decode()[-500:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return out.stdout, cpu


def netkit_round(seconds: float, streams: int, reverse: bool) -> tuple[float, float]:
    """One netkit round: (receiver MB/s, CPU seconds per GB received)."""
    port = free_port()
    server = subprocess.Popen(
        [*netkit_command(), "tcp-echo", "serve", f"{HOST}:{port}", "--mode", "stream"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_connectable(port)
        server_before = cpu_seconds(server.pid)
        args = [*netkit_command(), "bench", f"{HOST}:{port}", "--scenario", "stream"]
        args += ["-c", str(streams), "-w", "1", "-d", f"{seconds:g}s", "--json"]
        out, client_cpu = run_child([*args, *(["--reverse"] if reverse else [])], seconds + 60)
        server_cpu = cpu_seconds(server.pid) - server_before
    finally:
        stop(server)
    (summary,) = [
        e for e in map(json.loads, out.decode().splitlines()) if e.get("event") == "summary"
    ]
    if summary["errors"]["total"]:
        raise RuntimeError(f"netkit bench reported errors: {summary['error_samples']}")
    way = summary["directions"]["reverse" if reverse else "forward"]
    received = int(way["receiver_bytes"])
    return float(way["receiver_mb_per_s"]), (client_cpu + server_cpu) / (received / 1e9)


def iperf3_round(seconds: float, streams: int, reverse: bool) -> tuple[float, float]:
    """One iperf3 round: (receiver MB/s, CPU seconds per GB received)."""
    port = free_port()
    before = os.times()
    server = subprocess.Popen(
        ["iperf3", "-s", "-1", "-p", str(port), "-B", HOST, "--forceflush"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        while b"listening" not in read_line(server, START_TIMEOUT_S):
            pass
        args = ["iperf3", "-c", HOST, "-p", str(port), "-t", f"{seconds:g}", "-P", str(streams)]
        out = subprocess.run(
            [*args, "-J", *(["-R"] if reverse else [])],
            capture_output=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)  # -1: it exits by itself after the one test
    finally:
        stop(server)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    end = json.loads(out)["end"]["sum_received"]
    return float(end["bits_per_second"]) / 8 / 1e6, cpu / (float(end["bytes"]) / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--streams", type=int, default=1, help="parallel streams (-c, -P)")
    add_json_option(parser)
    args = parser.parse_args()
    if not ensure_tool("iperf3", "iperf3"):
        sys.exit("iperf3 is needed (apt-get install iperf3)")
    tools = {"netkit": netkit_round, "iperf3": iperf3_round}
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for direction in ("forward", "reverse"):
        per = figures[direction] = {name: [] for name in tools}
        for r in range(args.rounds):
            for name in rotated(list(tools), r):
                mbs, cpu = tools[name](args.seconds, args.streams, direction == "reverse")
                per[name].append((mbs, cpu))
                log(f"{direction} round {r + 1} {name}: {mbs:,.0f} MB/s, {cpu:.2f} CPU s/GB")
    info = machine(iperf3="iperf3")
    lines = [
        f"{info['date']}, {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']},"
        f" Python {info['python']}, {info['loop']}, commit {info['commit']}",
        f"{args.rounds} alternating rounds of {args.seconds:g} s per tool and direction,"
        f" {args.streams} stream(s); receiver MB/s (10^6 bytes/s), CPU = client + server.",
        "",
        "| direction | netkit MB/s | iperf3 MB/s | netkit/iperf3 | netkit CPU s/GB |"
        " iperf3 CPU s/GB |",
        "|---|---|---|---|---|---|",
    ]
    raw: dict[str, Any] = {"machine": info, "rounds": figures}
    verdicts = []
    for direction, per in figures.items():
        n_rate, i_rate = med([x[0] for x in per["netkit"]]), med([x[0] for x in per["iperf3"]])
        n_cpu, i_cpu = med([x[1] for x in per["netkit"]]), med([x[1] for x in per["iperf3"]])
        ratio = n_rate / i_rate
        lines.append(
            f"| {direction} | {n_rate:,.0f} | {i_rate:,.0f} | {ratio:.2f}x |"
            f" {n_cpu:.2f} | {i_cpu:.2f} |"
        )
        verdicts.append(target_line(f"{direction} >= 0.9x iperf3: {ratio:.2f}x", ratio >= 0.9))
    print("\n".join([*lines, "", *verdicts]))
    write_json(raw, args.json)


if __name__ == "__main__":
    main()

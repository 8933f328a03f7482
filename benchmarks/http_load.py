"""HTTP/1.1 keep-alive load against nginx-light: ``netkit bench`` against wrk and hey (issue 18).

Usage::

    python benchmarks/http_load.py [--runs N] [--seconds S] [--connections C] [--rate R] [--json [PATH]]

Run it with the Python that has netkit installed, under the machine's benchmark lock. Needs
``apt-get install nginx-light wrk hey`` (installed here when missing and root). wrk2 (wrk's
open-loop fork) is not packaged by Debian, so the open loop is netkit's own ``--rate``;
"bombardier" in Debian is a game, not the Go load tester, so hey is the Go reference.

nginx (``worker_processes`` one per CPU, access log off, keep-alive without a request limit)
serves a 17-byte static file on 127.0.0.1. Each round runs every tool once for ``--seconds``
with the same connection count, in an order that rotates from round to round:

- ``wrk -t NPROC -c C --latency`` (closed loop: the C reference);
- ``netkit bench -w NPROC -c C`` (closed loop, every status checked);
- ``netkit bench -w NPROC -c C --rate R`` (open loop at a fixed rate; its p99 counts from each
  request's intended send time);
- ``hey -c C -z S`` (Go, closed loop, one goroutine per connection);
- ``netkit bench -w NPROC -c C --requests C``: one request per connection, netkit's fixed CPU
  cost (start-up, forking the workers, the summary), which the netkit rows also show
  subtracted;
- with ``--before DIR``, netkit's closed loop from another source tree (before/after).

Reported: medians over the rounds of requests/s, p99 and CPU per request (user + system,
from /proc: the load generator with its worker processes, read while it is a zombie, so the
whole run; nginx's workers over the same round), and the ratios against wrk and hey.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    HOST,
    add_json_option,
    cpu_seconds,
    ensure_tool,
    free_port,
    log,
    machine,
    med,
    netkit_command,
    rotated,
    stop,
    target_line,
    wait_connectable,
    write_json,
)

BODY = b"hello from nginx\n"  # 17 bytes
NGINX_CONF = """\
daemon off;
worker_processes {workers};
{user}
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    open_file_cache max=16;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{ listen {host}:{port}; root {d}/www; }}
}}
"""


@dataclass
class Round:
    """One tool's run: requests/s, p99 (ms), and CPU seconds of the tool and of nginx."""

    requests: int
    rps: float
    p99_ms: float
    cpu_s: float
    nginx_cpu_s: float


def start_nginx(d: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """nginx serving ``/small.txt`` from ``d``; returns it and the file's URL."""
    nginx = shutil.which("nginx") or "nginx"
    (d / "www").mkdir()
    (d / "www" / "small.txt").write_bytes(BODY)
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # workers as nobody could not read d
    conf = NGINX_CONF.format(workers=workers, user=user, d=d, host=HOST, port=port)
    (d / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [nginx, "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_connectable(port)
    return proc, f"http://{HOST}:{port}/small.txt"


def measured(
    cmd: list[str], nginx_pid: int, timeout: float, env: dict[str, str] | None = None
) -> tuple[str, float, float]:
    """Run ``cmd`` (with ``env``); its stdout, its CPU seconds (with its reaped children: read from /proc
    while it is a zombie) and nginx's CPU seconds over the run."""
    before = cpu_seconds(nginx_pid)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        try:  # wait without reaping: the zombie's /proc entry has the whole run's CPU
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        finally:
            cpu = cpu_seconds(proc.pid, reaped=True)
            nginx_cpu = cpu_seconds(nginx_pid) - before
            proc.wait(timeout)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err.read()[-500:]!r}")
        return out.read().decode(), cpu, nginx_cpu


def as_ms(value: str, unit: str) -> float:
    """wrk's ``332.00us`` / ``1.20ms`` / ``1.01s`` in milliseconds."""
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url: str, nginx_pid: int, c: int, threads: int, seconds: float) -> Round:
    cmd = ["wrk", "-t", str(threads), "-c", str(c), "-d", f"{seconds:g}s", "--latency", url]
    out, cpu, ncpu = measured(cmd, nginx_pid, seconds + 30)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    total = re.search(r"^\s*(\d+) requests in", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    assert p99 and total and rps, out
    return Round(int(total[1]), float(rps[1]), as_ms(p99[1], p99[2]), cpu, ncpu)


def run_hey(url: str, nginx_pid: int, c: int, seconds: float) -> Round:
    cmd = ["hey", "-c", str(c), "-z", f"{seconds:g}s", "-disable-compression", url]
    out, cpu, ncpu = measured(cmd, nginx_pid, seconds + 30)
    statuses = re.findall(r"\[(\d+)\]\s+(\d+) responses", out)
    if [code for code, _ in statuses] != ["200"] or "Error distribution" in out:
        raise RuntimeError(f"hey saw errors:\n{out}")
    p99 = re.search(r"99% in ([\d.]+) secs", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert p99 and rps, out
    return Round(int(statuses[0][1]), float(rps[1]), float(p99[1]) * 1e3, cpu, ncpu)


def run_netkit(
    url: str,
    nginx_pid: int,
    c: int,
    workers: int,
    seconds: float,
    rate: float | None,
    source: str | None = None,
    requests: int | None = None,
) -> Round:
    cmd = [*netkit_command(), "bench", url, "-c", str(c), "-w", str(workers)]
    cmd += ["--requests", str(requests)] if requests else ["--duration", f"{seconds:g}s"]
    cmd += ["--json", "--expect-body", "hello"]
    if rate is not None:
        cmd += ["--rate", f"{rate:g}"]
    env = {**os.environ, "PYTHONPATH": source} if source else None  # another netkit tree
    out, cpu, ncpu = measured(cmd, nginx_pid, seconds + 30, env)
    (s,) = [e for e in map(json.loads, out.splitlines()) if e["event"] == "summary"]
    if s["errors"]["total"] or set(s["statuses"]) != {"200"}:
        raise RuntimeError(f"netkit bench saw errors: {s['errors']} {s['statuses']}")
    return Round(s["requests"], s["rps"], s["latency_ms"]["p99"], cpu, ncpu)


def report(
    rows: dict[str, list[Round]], args: argparse.Namespace, nproc: int, load: tuple[float, ...]
) -> list[str]:
    """The Markdown table: medians, ratios against wrk and hey, CPU per request."""

    def m(name: str, field: str) -> float:
        return med([getattr(r, field) for r in rows[name]])

    def us_per_request(name: str, field: str, less: float = 0.0) -> float:
        return med([(getattr(r, field) - less) / max(1, r.requests) * 1e6 for r in rows[name]])

    fixed = m(FIXED, "cpu_s")

    info = machine(hdrh="hdrhistogram", httptools="httptools")
    wrk, hey = m("wrk", "rps"), m("hey", "rps")
    lines = [
        f"Date: {info['date']}  ",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, {info['loop']}, httptools {info['httptools']}, "
        f"commit {info['commit']}  ",
        f"Runs: {args.runs} rounds x {args.seconds:g} s, tools interleaved; medians. "
        f"{args.connections} connections, nginx worker_processes {nproc}, GET of a 17-byte "
        f"file, keep-alive. Load average at the start {load[0]:.1f}, at the end "
        f"{os.getloadavg()[0]:.1f} (other jobs share the machine).",
        "",
        "| tool | requests/s | p99 ms | vs wrk | vs hey | tool CPU µs/request | "
        "less start-up and summary | nginx CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in rows:
        if name == FIXED:
            continue
        rps = m(name, "rps")
        less = f"{us_per_request(name, 'cpu_s', fixed):.1f}" if name.startswith("netkit") else ""
        lines.append(
            f"| {name} | {rps:,.0f} | {m(name, 'p99_ms'):.2f} | {rps / wrk:.2f}x | "
            f"{rps / hey:.2f}x | {us_per_request(name, 'cpu_s'):.1f} | {less} | "
            f"{us_per_request(name, 'nginx_cpu_s'):.1f} |"
        )
    closed = m(NETKIT, "rps")
    lines += [
        "",
        f"netkit's fixed CPU cost (start-up, forking the workers, the summary; measured each "
        f"round as a run of one request per connection): {fixed:.2f} s, subtracted in the "
        f"'less' column.",
        "",
        target_line(f"netkit >= 0.6x wrk's rate: {closed / wrk:.2f}x", closed / wrk >= 0.6),
        target_line(f"netkit >= 1.0x hey's rate: {closed / hey:.2f}x", closed / hey >= 1.0),
    ]
    return lines


NETKIT = "netkit bench (closed loop)"
FIXED = "netkit bench, one request per connection"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=10_000, help="netkit's open-loop rate")
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also run netkit's closed loop from this source tree (a folder holding netkit/, "
        "e.g. from git archive COMMIT netkit): before/after figures in the same rounds",
    )
    add_json_option(parser)
    args = parser.parse_args()
    os.environ["PATH"] += ":/usr/sbin"  # nginx is there, outside a non-root PATH
    for tool, package in (("nginx", "nginx-light"), ("wrk", "wrk"), ("hey", "hey")):
        if not ensure_tool(tool, package):
            sys.exit(f"{tool} is needed: apt-get install {package}")
    nproc = os.cpu_count() or 1
    c, s = args.connections, args.seconds
    open_name = f"netkit bench --rate {args.rate:g} (open loop)"
    load = os.getloadavg()
    rows: dict[str, list[Round]] = {"wrk": [], NETKIT: [], open_name: [], "hey": [], FIXED: []}
    with tempfile.TemporaryDirectory() as tmp:
        nginx, url = start_nginx(Path(tmp), nproc)
        try:
            tools = {
                "wrk": lambda: run_wrk(url, nginx.pid, c, nproc, s),
                NETKIT: lambda: run_netkit(url, nginx.pid, c, nproc, s, None),
                open_name: lambda: run_netkit(url, nginx.pid, c, nproc, s, args.rate),
                "hey": lambda: run_hey(url, nginx.pid, c, s),
                FIXED: lambda: run_netkit(url, nginx.pid, c, nproc, s, None, None, c),
            }
            if args.before:
                name = f"netkit bench (closed loop), {args.before}"
                rows[name] = []
                tools[name] = lambda: run_netkit(url, nginx.pid, c, nproc, s, None, args.before)
            for i in range(args.runs):
                for name in rotated(list(tools), i):
                    r = tools[name]()
                    rows[name].append(r)
                    log(f"round {i + 1} {name}: {r.rps:,.0f}/s p99 {r.p99_ms:.2f} ms "
                        f"cpu {r.cpu_s:.2f} s nginx {r.nginx_cpu_s:.2f} s")  # fmt: skip
        finally:
            stop(nginx)
    print("\n".join(report(rows, args, nproc, load)))
    write_json({k: [vars(r) for r in v] for k, v in rows.items()}, args.json)


if __name__ == "__main__":
    main()

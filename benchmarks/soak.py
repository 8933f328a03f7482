"""Soak: lb over three tcp-echo backends, one behind a faulty proxy, a backend killed and restarted.

Usage::

    python benchmarks/soak.py [--duration 60] [--quick] [--json] [--keep]

Run it with the Python that has netkit installed. Everything listens on 127.0.0.1, the run is
bounded (``--duration`` seconds, default 60; ``--quick`` is 20), and every process it starts
runs in its own process group and is stopped in a ``finally`` (then killed, with any child it
left), so nothing outlives the script. Issue 8, item 6.

The set-up::

    bench (echo, verified) ----\\                 /--> tcp-echo B1   (SIGKILLed at 30%, restarted at 55%)
                                +--> lb --------+---> tcp-echo B2
    bench (connect --exchange) /   checks 500ms  \\--> proxy --latency 5:2 --reset-after 2s,p=0.1 --> tcp-echo B3
                                   rise 2 fall 2

Two loads, both verifying every echoed byte: ``bench`` echo (16 long-lived connections, closed
loop) for volume, and ``bench --scenario connect --exchange`` (new connections at 50/s, one
verified request each) so that new connections keep being balanced: towards the dead backend
before it is ejected, and onto the restarted one once it is back.

Pass/fail, one line each, exit 1 when any fails:

* **no corrupted bytes**: bench counted no ``mismatch`` (every echoed byte is compared).
* **no errors after ejection**: errors counted by bench later than one progress interval after
  lb's ``health`` event (B1 ``down``), less the resets the proxy injected on purpose (its
  ``closed`` events with ``end`` = ``fault: reset``, from shortly before that point on), must
  be zero. Errors between the kill and the ejection are shown, and allowed.
* **re-admitted**: lb's ``health`` event (B1 ``up``) after the restart, and then relays to B1
  that carried echoed bytes (lb's ``closed`` events; its checks send nothing).
* **memory flat** (lb and proxy): RSS sampled every second; the median of the last quarter of
  the run is within 20% (or 4 MiB) of the median of the first quarter, warm-up excluded.
* **clean shutdown**: every process stopped with SIGTERM at the end exited 0 (benches too),
  and none was left behind.

``--keep`` keeps every process's JSON events and stderr in a temporary directory (printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import family, log, netkit_command, proc_stat, vm_rss

HOST = "127.0.0.1"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
DRAIN = "1s"  # servers' --drain-timeout, so that stopping them at the end is quick
CHECK_INTERVAL_S = 0.5
PROGRESS_INTERVAL_S = 1.0  # bench's progress events
ECHO_CONNECTIONS = 16
CHURN_RATE = "50/s"
CHURN_CONNECTIONS = 4
SIZE = "512"
PROXY_FAULTS = ["--latency", "5:2", "--reset-after", "2s,p=0.1", "--seed", "1"]
KILL_AT, RESTART_AT = 0.30, 0.55  # fractions of the run
MEMORY_GROWTH = 0.20
MEMORY_SLACK = 4 << 20


def fixed_port() -> int:
    """A free port below the ephemeral range.

    B1 is restarted on its old port; a port from the ephemeral range could meanwhile be taken
    as the source port of one of lb's or bench's outgoing connections, and the restart would
    fail with "address in use".
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(max(1025, low - 12000), low))
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind((HOST, port))
            return port
    raise RuntimeError("no free port below the ephemeral range")


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): tells a process from a later one that
    reused its pid."""
    try:
        return int(proc_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Proc:
    """One netkit process started with ``--json``; a thread collects its events."""

    name: str
    popen: subprocess.Popen[bytes]
    events: list[dict[str, Any]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    eof: bool = False

    def follow(self, log_path: Path) -> None:
        assert self.popen.stdout is not None
        with log_path.open("wb") as saved:
            self._follow(saved)

    def _follow(self, saved: Any) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            saved.write(line)
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                with self.cond:
                    self.events.append(event)
                    self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_for(
        self, name: str, timeout: float, where: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any] | None:
        """The first event called ``name`` that satisfies ``where``; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events:
                    if event.get("event") == name and where(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    return None
                self.cond.wait(left)

    def named(self, name: str) -> list[dict[str, Any]]:
        """Every event called ``name`` so far."""
        with self.cond:
            return [e for e in self.events if e.get("event") == name]


class Fleet:
    """The processes of one soak run; :meth:`close` stops every one of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        # Every process we started or saw below one we started: pid -> start time.
        self.known: dict[int, int | None] = {}
        self.closed = False
        self.exit_codes: dict[str, int | None] = {}  # of the processes stopped with SIGTERM
        self.killed: set[str] = set()

    def start(self, name: str, *args: str) -> Proc:
        with (self.workdir / f"{name}.err").open("wb") as err:
            popen = subprocess.Popen(
                [*netkit_command(), *args, "--json"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # a process group of its own: killpg reaches all of it
            )
        proc = Proc(name, popen)
        self.procs.append(proc)
        self.known[popen.pid] = start_time(popen.pid)
        log_path = self.workdir / f"{name}.jsonl"
        threading.Thread(target=proc.follow, args=(log_path,), daemon=True).start()
        return proc

    def server(self, name: str, *args: str) -> tuple[Proc, str]:
        """Start a server and wait for its ``listening`` event; returns it and its address."""
        proc = self.start(name, *args, "--drain-timeout", DRAIN)
        listening = proc.wait_for("listening", START_TIMEOUT_S)
        if listening is None:
            raise RuntimeError(f"{name} did not start: {self.stderr(proc)}")
        return proc, str(listening["address"])

    def stderr(self, proc: Proc) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / f"{proc.name}.err").read_text().strip()
        return ""

    def note_children(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                for pid in family(proc.popen.pid)[1:]:  # every live process below it
                    self.known.setdefault(pid, start_time(pid))

    def kill(self, proc: Proc) -> None:
        """SIGKILL the process group: a crash, no drain."""
        self.killed.add(proc.name)
        self.note_children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()

    def stop(self, proc: Proc, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait; SIGKILL the group if it will not go. Returns the exit code."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{proc.name} did not stop in {timeout:g}s: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()
        with proc.cond:  # the last events (summary) are read by the follower thread
            proc.cond.wait_for(lambda: proc.eof, timeout=2)
        return proc.popen.returncode

    def close(self) -> int:
        """Stop everything still running (in reverse start order); returns how many processes
        had to be killed afterwards because they outlived their parent."""
        if self.closed:
            return 0
        self.closed = True
        self.note_children()
        for proc in reversed(self.procs):
            if proc.name not in self.killed:
                self.exit_codes[proc.name] = self.stop(proc)
        strays = 0
        for pid, started in self.known.items():
            if started is None or start_time(pid) != started:
                continue  # gone (or the pid now belongs to another process: not ours)
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    os.kill(pid, signal.SIGKILL)
                    strays += 1
        for proc in self.procs:
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()
        return strays


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Timeline:
    start: float = 0.0
    kill: float = 0.0
    eject: float | None = None
    eject_source: str = ""
    restart: float = 0.0
    readmit: float | None = None
    end: float = 0.0


def sample_memory(
    pids: dict[str, int], stop: threading.Event, samples: dict[str, list[tuple[float, int]]]
) -> None:
    """Every second: the RSS of each process in ``pids``, until ``stop``."""
    while not stop.wait(1.0):
        now = time.time()
        for name, pid in pids.items():
            value = vm_rss(pid)
            if value is not None:
                samples[name].append((now, value))


def is_b1(address: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("backend") == address


def run(duration: float, keep: bool) -> tuple[dict[str, Any], list[tuple[str, bool, str]]]:
    """One soak run; returns (figures, [(criterion, passed, detail)]).

    Every process's events and stderr go to a temporary directory, removed at the end unless
    ``keep``.
    """
    workdir = Path(tempfile.mkdtemp(prefix="netkit-soak-"))
    fleet = Fleet(workdir)
    t = Timeline()
    memory: dict[str, list[tuple[float, int]]] = {"lb": [], "proxy": []}
    sampling = threading.Event()
    sampler: threading.Thread | None = None
    strays = 0
    try:
        b1_port = fixed_port()
        b1_address = f"{HOST}:{b1_port}"
        b1, _ = fleet.server("b1", "tcp-echo", "serve", b1_address)
        _, b2_address = fleet.server("b2", "tcp-echo", "serve", f"{HOST}:0")
        _, b3_address = fleet.server("b3", "tcp-echo", "serve", f"{HOST}:0")
        proxy, proxy_address = fleet.server(
            "proxy", "proxy", f"{HOST}:0", b3_address, *PROXY_FAULTS
        )
        lb, lb_address = fleet.server(
            "lb", "lb", f"{HOST}:0", b1_address, b2_address, proxy_address,
            "--check-interval", f"{CHECK_INTERVAL_S * 1000:g}ms", "--rise", "2", "--fall", "2",
        )  # fmt: skip
        log(
            f"lb {lb_address} -> B1 {b1_address}, B2 {b2_address}, proxy {proxy_address} -> B3 {b3_address}"
        )
        sampler = threading.Thread(
            target=sample_memory,
            args=({"lb": lb.popen.pid, "proxy": proxy.popen.pid}, sampling, memory),
            daemon=True,
        )
        t.start = time.time()
        sampler.start()
        seconds = f"{duration:g}s"
        echo = fleet.start(
            "bench-echo", "bench", lb_address, "--duration", seconds,
            "--connections", str(ECHO_CONNECTIONS), "--workers", "1", "--size", SIZE,
        )  # fmt: skip
        churn = fleet.start(
            "bench-connect", "bench", lb_address, "--scenario", "connect", "--exchange",
            "--rate", CHURN_RATE, "--connections", str(CHURN_CONNECTIONS), "--workers", "1",
            "--duration", seconds, "--size", SIZE,
        )  # fmt: skip
        benches = [echo, churn]

        time.sleep(max(0.0, t.start + KILL_AT * duration - time.time()))  # the schedule
        log(f"{time.time() - t.start:5.1f}s  SIGKILL B1")
        t.kill = time.time()
        fleet.kill(b1)
        down = lb.wait_for(
            "health",
            10,
            lambda e: is_b1(b1_address)(e) and e["new"] == "down" and e["ts"] >= t.kill,
        )
        if down is not None:
            t.eject, t.eject_source = float(down["ts"]), str(down.get("source", ""))
            log(
                f"{t.eject - t.start:5.1f}s  lb ejected B1 ({t.eject_source}: {down.get('reason')})"
            )

        time.sleep(max(0.0, t.start + RESTART_AT * duration - time.time()))
        log(f"{time.time() - t.start:5.1f}s  restart B1")
        t.restart = time.time()
        b1_again, _ = fleet.server("b1-restarted", "tcp-echo", "serve", b1_address)
        up = lb.wait_for(
            "health",
            10,
            lambda e: is_b1(b1_address)(e) and e["new"] == "up" and e["ts"] >= t.restart,
        )
        if up is not None:
            t.readmit = float(up["ts"])
            log(f"{t.readmit - t.start:5.1f}s  lb re-admitted B1")

        for bench in benches:
            bench.popen.wait(duration + 60)
        t.end = time.time()
        log(f"{t.end - t.start:5.1f}s  load done")
        sampling.set()
        strays = fleet.close()
        return evaluate(
            t, duration, b1_address, lb, proxy, b1_again, benches, memory, strays, fleet.exit_codes
        )
    finally:
        sampling.set()
        if sampler is not None:
            sampler.join(2)
        strays += fleet.close()
        if strays:
            log(f"{strays} stray process(es) killed")
        if keep:
            log(f"events and stderr of every process: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def errors_before(bench: Proc, when: float) -> int:
    """Cumulative errors in the last progress event before ``when``."""
    errors = 0
    for event in bench.named("progress"):
        if event["ts"] < when:
            errors = int(event["errors"])
    return errors


def errors_at(bench: Proc, when: float) -> tuple[int, float]:
    """Cumulative errors in the first progress event at or after ``when``, and its time."""
    for event in bench.named("progress"):
        if event["ts"] >= when:
            return int(event["errors"]), float(event["ts"])
    summary = bench.named("summary")
    return (int(summary[-1]["errors"]["total"]) if summary else 0), float("inf")


def quarter_medians(samples: list[tuple[float, int]], start: float, end: float) -> tuple[int, int]:
    """Median RSS of the first and the last quarter of the run, after a warm-up (10%, >= 2 s)."""
    warm = start + max(2.0, 0.1 * (end - start))
    span = end - warm
    first = [v for ts, v in samples if warm <= ts < warm + span / 4]
    last = [v for ts, v in samples if ts >= end - span / 4]
    if not first or not last:
        return 0, 0
    return int(statistics.median(first)), int(statistics.median(last))


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def evaluate(
    t: Timeline,
    duration: float,
    b1_address: str,
    lb: Proc,
    proxy: Proc,
    b1_again: Proc,
    benches: list[Proc],
    memory: dict[str, list[tuple[float, int]]],
    strays: int,
    exit_codes: dict[str, int | None],
) -> tuple[dict[str, Any], list[tuple[str, bool, str]]]:
    """The figures and the verdicts of one run."""
    checks: list[tuple[str, bool, str]] = []
    summaries = {}
    for bench in benches:
        found = bench.named("summary")
        if not found:
            raise RuntimeError(f"{bench.name} printed no summary (run with --keep to see why)")
        summaries[bench.name] = found[-1]
    echo, churn = summaries["bench-echo"], summaries["bench-connect"]

    # 1. corruption
    mismatches = sum(int(s["errors"].get("mismatch", 0)) for s in summaries.values())
    verified = sum(int(s["bytes_received"]) for s in summaries.values())
    checks.append(
        (
            "no corrupted bytes",
            mismatches == 0 and verified > 0,
            f"{mismatches} mismatch(es) in {verified:,} verified bytes",
        )
    )

    # 2. errors after the ejection, less the proxy's injected resets
    resets = [e for e in proxy.named("closed") if e.get("end") == "fault: reset"]
    totals = {name: int(s["errors"]["total"]) for name, s in summaries.items()}
    before_kill = sum(errors_before(b, t.kill) for b in benches)
    figures_errors: dict[str, Any] = {"total": sum(totals.values()), "before_kill": before_kill}
    if t.eject is None:
        checks.append(("no errors after ejection", False, "lb never reported B1 down"))
    else:
        cut = t.eject + PROGRESS_INTERVAL_S
        after = 0
        first_ts = float("inf")
        for bench in benches:
            at, ts = errors_at(bench, cut)
            after += totals[bench.name] - at
            first_ts = min(first_ts, ts)
        # A reset shows in bench's next progress snapshot (taken every 0.5 s, sent every 1 s):
        # count the proxy's resets from one progress interval before the cut-off on.
        window = first_ts - PROGRESS_INTERVAL_S
        expected = sum(1 for e in resets if e["ts"] >= window)
        unexplained = max(0, after - expected)
        # Relays to B1 that the kill ended: reset, or closed with a request unanswered (the
        # echo load always has one in flight), as opposed to connect --exchange ones that
        # just finished.
        cut_by_kill = [
            e
            for e in lb.named("closed")
            if e.get("upstream") == b1_address
            and t.kill <= e["ts"] < cut
            and (e["end"] != "closed" or e["bytes_up"] != e["bytes_down"])
        ]
        figures_errors |= {
            "kill_to_ejection_plus_grace": sum(errors_at(b, cut)[0] for b in benches) - before_kill,
            "relays_cut_by_kill": len(cut_by_kill),
            "after_ejection": after,
            "proxy_resets_after_ejection": expected,
            "unexplained_after_ejection": unexplained,
        }
        checks.append(
            (
                "no errors after ejection",
                unexplained == 0,
                f"{after} error(s) after ejection + {PROGRESS_INTERVAL_S:g}s, "
                f"{expected} of them proxy fault resets; unexplained {unexplained}",
            )
        )

    # 3. re-admission: lb says B1 is up, and relays to it carried echoes again
    b1_summary = b1_again.named("summary")
    b1_bytes = int(b1_summary[-1]["bytes_in"]) if b1_summary else None
    relays_after = [
        e
        for e in lb.named("closed")
        if t.readmit is not None
        and e.get("upstream") == b1_address
        and e["ts"] >= t.readmit
        and e["bytes_down"] > 0
    ]
    checks.append(
        (
            "B1 re-admitted after restart",
            t.readmit is not None and bool(relays_after),
            (
                f"up {t.readmit - t.restart:.2f}s after restart"
                if t.readmit is not None
                else "lb never reported B1 up"
            )
            + f"; then {len(relays_after)} relay(s) to it carried "
            f"{sum(e['bytes_down'] for e in relays_after):,} echoed bytes",
        )
    )

    # 4. memory
    mem_figures: dict[str, Any] = {}
    for name, samples in memory.items():
        first, last = quarter_medians(samples, t.start, t.end)
        growth = last - first
        flat = first > 0 and growth <= max(MEMORY_GROWTH * first, MEMORY_SLACK)
        mem_figures[name] = {
            "first_quarter_median": first,
            "last_quarter_median": last,
            "peak": max((v for _, v in samples), default=0),
            "samples": len(samples),
        }
        checks.append(
            (
                f"{name} memory flat",
                flat,
                f"{mib(first)} -> {mib(last)} ({growth / first * 100 if first else 0:+.1f}%), "
                f"peak {mib(mem_figures[name]['peak'])}, {len(samples)} samples",
            )
        )
    unclean = {name: code for name, code in exit_codes.items() if code != 0}
    checks.append(
        (
            "clean shutdown",
            not unclean and strays == 0,
            f"exit codes on SIGTERM: {unclean or 'all 0'}; {strays} stray process(es)",
        )
    )

    health = [
        {k: e.get(k) for k in ("ts", "backend", "new", "source", "reason")}
        for e in lb.named("health")
    ]
    lb_summary = (lb.named("summary") or [{}])[-1]
    proxy_summary = (proxy.named("summary") or [{}])[-1]
    figures = {
        "duration_s": round(t.end - t.start, 1),
        "echo": {
            "requests": echo["requests"],
            "rps": echo["rps"],
            "p99_ms": echo["latency_ms"]["p99"] if echo.get("latency_ms") else None,
            "errors": echo["errors"],
        },
        "connect_exchange": {
            "connections": churn["requests"],
            "errors": churn["errors"],
        },
        "verified_bytes": verified,
        "errors": figures_errors,
        "proxy": {
            "connections": proxy_summary.get("connections"),
            "faults_injected": proxy_summary.get("faults_injected"),
            "resets": len(resets),
        },
        "timeline_s": {
            "kill": round(t.kill - t.start, 2),
            "ejected": round(t.eject - t.start, 2) if t.eject else None,
            "ejection_latency": round(t.eject - t.kill, 3) if t.eject else None,
            "ejected_by": t.eject_source,
            "restart": round(t.restart - t.start, 2),
            "readmitted": round(t.readmit - t.start, 2) if t.readmit else None,
            "readmission_latency": round(t.readmit - t.restart, 3) if t.readmit else None,
        },
        "health_events": [
            h | {"ts": round(float(h["ts"]) - t.start, 2)} for h in health if h["ts"] is not None
        ],
        "lb_backends": [
            {k: b.get(k) for k in ("backend", "state", "total", "failed")}
            for b in lb_summary.get("backends", [])
        ],
        "memory": mem_figures,
        "restarted_b1_bytes_in": b1_bytes,
        "relays_to_b1_after_readmission": len(relays_after),
        "exit_codes": exit_codes,
    }
    return figures, checks


def report(figures: dict[str, Any], checks: list[tuple[str, bool, str]], duration: float) -> None:
    """The figures and one PASS/FAIL line per criterion, on stdout."""
    e, tl, mem = figures["errors"], figures["timeline_s"], figures["memory"]
    rows = [
        ("run", f"{figures['duration_s']} s (asked {duration:g} s)"),
        (
            "echo load",
            f"{figures['echo']['requests']:,} requests, {figures['echo']['rps']:,.0f}/s, "
            f"p99 {figures['echo']['p99_ms']} ms",
        ),
        ("connect --exchange", f"{figures['connect_exchange']['connections']:,} connections"),
        ("verified bytes", f"{figures['verified_bytes']:,}"),
        ("echo errors", json.dumps(figures["echo"]["errors"])),
        ("connect errors", json.dumps(figures["connect_exchange"]["errors"])),
        (
            "errors by phase",
            f"before kill {e['before_kill']}, kill->ejection+grace "
            f"{e.get('kill_to_ejection_plus_grace', '-')} (lb relays to B1 cut by the kill: "
            f"{e.get('relays_cut_by_kill', '-')}), after {e.get('after_ejection', '-')} "
            f"(proxy resets {e.get('proxy_resets_after_ejection', '-')}, unexplained "
            f"{e.get('unexplained_after_ejection', '-')})",
        ),
        (
            "proxy",
            f"{figures['proxy']['connections']} connections, "
            f"{figures['proxy']['faults_injected']} faults drawn, {figures['proxy']['resets']} resets",
        ),
        (
            "B1 killed / ejected",
            f"{tl['kill']} s / {tl['ejected']} s "
            f"({tl['ejection_latency']} s, by {tl['ejected_by'] or '-'})",
        ),
        (
            "B1 restarted / re-admitted",
            f"{tl['restart']} s / {tl['readmitted']} s ({tl['readmission_latency']} s)",
        ),
        (
            "health events",
            "; ".join(
                f"{h['ts']}s {h['backend']} {h['new']} ({h['source']})"
                for h in figures["health_events"]
            ),
        ),
        (
            "lb backends",
            "; ".join(
                f"{b['backend']} {b['state']} total {b['total']} failed {b['failed']}"
                for b in figures["lb_backends"]
            ),
        ),
    ]
    for name, m in mem.items():
        rows.append(
            (
                f"{name} RSS",
                f"{mib(m['first_quarter_median'])} -> {mib(m['last_quarter_median'])}, "
                f"peak {mib(m['peak'])}",
            )
        )
    width = max(len(name) for name, _ in rows)
    print("netkit soak")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print()
    for name, ok, detail in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print(f"\n{'PASS' if all(ok for _, ok, _ in checks) else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--quick", action="store_true", help="a 20 s run")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep every process's events")
    args = parser.parse_args()
    duration = 20.0 if args.quick else args.duration
    if duration < 10:
        parser.error("--duration: at least 10 s (kill, ejection, restart and re-admission)")
    figures, checks = run(duration, args.keep)
    report(figures, checks, duration)
    if args.json:
        print(json.dumps({"figures": figures, "checks": [list(c) for c in checks]}))
    sys.exit(0 if all(ok for _, ok, _ in checks) else 1)


if __name__ == "__main__":
    main()

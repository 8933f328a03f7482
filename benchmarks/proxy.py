"""Compare ``netkit proxy`` and ``netkit lb`` with HAProxy and socat on loopback (issue 4).

Usage::

    python benchmarks/proxy.py [--quick] [--json [PATH]] [--only bulk|memory|rate]

Run it with the Python that has netkit installed (``/tmp/venv/bin/python`` in the dev setup).
Everything runs on 127.0.0.1; every load loop stops after a fixed time *and* a fixed count.
HAProxy, socat and iperf3 are installed with apt-get when missing and the script runs as root;
otherwise their rows are skipped with a hint.

1. **Bulk throughput and CPU per GiB** -- ``iperf3 -c ... -t T -J`` (128 KiB writes, one
   stream, client -> server) through each proxy in front of one ``iperf3 -s``, and straight to
   it (the baseline). Proxies: ``netkit proxy`` (splice, the default, ``--no-splice``, and
   with ``--api`` on and no toxic),
   HAProxy (``mode tcp``, ``option splice-auto``; ``nbthread 1``, the fair comparison with a
   one-thread relay, and HAProxy's default, one thread per CPU) and
   ``socat TCP-LISTEN:P,fork,reuseaddr TCP:...``. Runs are interleaved (run 1 of every
   proxy, then run 2, ...) with the order rotated. The proxy's CPU time (user + sys of its
   process tree, from ``/proc``, with the children socat reaps) over the run is divided by the
   bytes iperf3's server received.
2. **Memory with 200 bulk connections** -- two client processes of this script, 100
   connections each, write 64 KiB chunks as fast as the proxy takes them, to a sink (also
   this script) that discards everything, or, in the *stalled* variant, accepts and never
   reads, so the proxy's flow control is all that bounds it. The proxy tree's RSS (and PSS:
   socat forks one process per connection and shares its pages) is sampled at steady state,
   minus its idle RSS, and so are the bytes queued in the proxy's pipes (splice buffers are
   kernel memory, not RSS).
3. **Short-connection rate** -- connect, send 64 bytes, read the 64-byte echo, close, as fast
   as possible from several client processes for a fixed time, through ``netkit lb`` and
   through HAProxy ``balance roundrobin`` (with ``check``) in front of three
   ``netkit tcp-echo serve`` backends, and straight to one backend, for reference. ``netkit
   lb`` runs without ``--json`` (HAProxy logs nothing here either), with ``--no-splice``, and
   with ``--json`` (an event per connection) for information. Skipped when ``netkit lb`` does
   not exist yet.

Targets (issue 4): proxy throughput >= 1.0x HAProxy and >= 1.5x socat; CPU per GiB <= 1.5x
HAProxy's; memory bounded; lb connection rate >= 0.5x HAProxy. The script ends with a
Markdown block for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HOST,
    START_TIMEOUT_S,
    add_json_option,
    cpu_seconds,
    ensure_tool,
    family,
    free_port,
    listening_port,
    log,
    machine,
    med,
    netkit_command,
    ratio_of_medians,
    read_line,
    rotated,
    stop,
    target_line,
    wait_connectable,
    write_json,
)

MESSAGE = 64
CHUNK = 64 * 1024
MEMORY_CONNECTIONS = 200
MEMORY_CLIENTS = 2
MAX_CONNECTS = 5_000_000  # count bound on one rate client, far above what a few seconds allow
MAX_SENDS = 50_000_000  # count bound on one bulk client (3 TiB of 64 KiB chunks)
RATE_WARMUP_S = 0.3
MAX_HELD = 100_000  # connections a stalled sink keeps (a bound; SIGTERM ends it first)

DIRECT = "iperf3 direct (no proxy)"
NETKIT = "netkit proxy (splice)"
NETKIT_COPY = "netkit proxy --no-splice"
NETKIT_API = "netkit proxy --api (splice, no toxic)"
HAPROXY1 = "HAProxy nbthread 1"
HAPROXY = "HAProxy default threads"
SOCAT = "socat fork"
LB = "netkit lb (roundrobin, splice)"
LB_COPY = "netkit lb --no-splice"
LB_JSON = "netkit lb --json (an event per connection)"
HAPROXY_LB = "HAProxy balance roundrobin nbthread 1"
HAPROXY_LB_DEFAULT = "HAProxy balance roundrobin default threads"
ECHO_DIRECT = "one backend direct (no lb)"


# --- helper processes (this file runs as each of them) -------------------------------------


def sink_server(stall: bool) -> None:
    """Accept connections and discard what they send (or, stalled, never read them)."""

    class Sink(asyncio.BufferedProtocol):
        buf = bytearray(256 * 1024)

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            pass

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Sink, HOST, 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"event": "listening", "address": f"{HOST}:{port}"}), flush=True)
        stopped = asyncio.Event()
        loop.add_signal_handler(15, stopped.set)  # SIGTERM
        async with server:
            await stopped.wait()

    if stall:
        # Accept and keep every connection, never read: only flow control bounds the proxy.
        with socket.create_server((HOST, 0), backlog=1024) as listener:
            port = listener.getsockname()[1]
            print(json.dumps({"event": "listening", "address": f"{HOST}:{port}"}), flush=True)
            held: list[socket.socket] = []
            while len(held) < MAX_HELD:  # SIGTERM ends it long before
                held.append(listener.accept()[0])
        return
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve())


def bulk_client(port: int, connections: int, seconds: float) -> None:
    """Open ``connections`` sockets and write 64 KiB chunks on whichever can take one."""
    socks: list[socket.socket] = []
    for _ in range(connections):
        s = socket.create_connection((HOST, port), timeout=10)
        s.setblocking(False)
        socks.append(s)
    print(json.dumps({"event": "connected", "connections": len(socks)}), flush=True)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE)
    chunk = memoryview(bytearray(CHUNK))
    sent = sends = errors = 0
    deadline = time.monotonic() + seconds
    while sends < MAX_SENDS and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                sent += sock.send(chunk)
                sends += 1
            except BlockingIOError:
                pass
            except OSError:
                errors += 1
                sel.unregister(sock)
    for s in socks:
        s.close()
    print(json.dumps({"event": "result", "bytes": sent, "errors": errors}), flush=True)


def rate_client(port: int, start_at: float, seconds: float) -> None:
    """Connect, send 64 bytes, read the echo, close; count after a warm-up until the end."""
    payload = b"x" * MESSAGE
    buf = bytearray(MESSAGE)
    view = memoryview(buf)
    time.sleep(max(0.0, start_at - time.time()))
    begin = time.monotonic()
    measure_from = begin + RATE_WARMUP_S
    deadline = measure_from + seconds
    total = counted = errors = 0
    now = begin
    while total < MAX_CONNECTS and now < deadline:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.connect((HOST, port))
                s.sendall(payload)
                got = 0
                while got < MESSAGE:
                    n = s.recv_into(view[got:])
                    if n == 0:
                        raise ConnectionError("closed before the echo")
                    got += n
            if buf != payload:
                raise ConnectionError("wrong echo")
            ok = True
        except OSError:
            errors += 1
            ok = False
        total += 1
        now = time.monotonic()
        if ok and now >= measure_from:
            counted += 1
    print(json.dumps({"total": total, "counted": counted, "errors": errors}), flush=True)


# --- /proc ----------------------------------------------------------------------------------


def wait_children_gone(pid: int, timeout: float = 5.0) -> None:
    """Wait until ``pid`` has no children (socat's per-connection ones exit and are reaped)."""
    deadline = time.monotonic() + timeout
    while len(family(pid)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, summed over the process tree."""
    rss = pss = 0
    for p in family(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
    return rss, pss


def tcp_memory() -> int:
    """Bytes of kernel memory in TCP socket buffers, system-wide (``/proc/net/sockstat``)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def pipe_bytes(pid: int) -> int:
    """Bytes waiting in the pipes the process tree holds (FIONREAD on each, opened via /proc)."""
    seen: set[str] = set()
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p}/fd"):
                path = f"/proc/{p}/fd/{fd}"
                with contextlib.suppress(OSError):
                    target = os.readlink(path)
                    if not target.startswith("pipe:") or target in seen:
                        continue
                    seen.add(target)
                    # Opening a pipe through /proc gives one more reader; nothing is read.
                    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                    try:
                        buf = bytearray(4)
                        fcntl.ioctl(rfd, termios.FIONREAD, buf)
                        total += int.from_bytes(buf, sys.byteorder)
                    finally:
                        os.close(rfd)
    return total


# --- the proxies under test ----------------------------------------------------------------


@dataclass
class Proxy:
    """A running proxy (or nothing, for the direct baseline) in front of one upstream."""

    name: str
    proc: subprocess.Popen[bytes] | None
    port: int
    workdir: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        if self.workdir is not None:
            self.workdir.cleanup()


def start_netkit(
    args: Callable[[str], list[str]], name: str, *, json_events: bool = True, attempts: int = 3
) -> Proxy:
    """``netkit ARGS(LISTEN) [--json]``.

    With ``json_events`` it listens on port 0 and the port comes from its ``listening`` line;
    without, it listens on a free port and is ready when that port accepts (no per-connection
    JSON lines to print: HAProxy logs nothing either in this benchmark). Other engineers edit
    the tree while this runs: a start that dies at import is retried.
    """
    for attempt in range(attempts):
        port = 0 if json_events else free_port()
        cmd = [*netkit_command(), *args(f"{HOST}:{port}")] + (["--json"] if json_events else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if json_events:
                port = listening_port(proc)
            else:
                wait_connectable(port)
        except (RuntimeError, OSError):
            if proc.poll() is None and not json_events:
                stop(proc)
                raise
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            stop(proc)
            if attempt == attempts - 1:
                raise RuntimeError(f"{name} did not start: {err.strip()[-500:]}") from None
            log(f"  {name} did not start, retrying in 3 s: {err.strip()[-200:]}")
            time.sleep(3)
            continue
        # With --json every connection is an event line: keep reading them, or a full pipe
        # would stall the process under test.
        threading.Thread(target=discard, args=(proc.stdout,), daemon=True).start()
        threading.Thread(target=discard, args=(proc.stderr,), daemon=True).start()
        return Proxy(name, proc, port)
    raise AssertionError("unreachable")


def discard(stream: IO[bytes] | None) -> None:
    """Read ``stream`` to its end (or until it is closed) and drop what it says."""
    with contextlib.suppress(OSError, ValueError):
        while stream is not None and stream.read(65536):
            pass


def start_netkit_proxy(upstream: int, splice: bool, *, api: bool = False) -> Proxy:
    # api: with toxiproxy's control API on (issue 15: it must relay as fast with no toxic).
    extra = ([] if splice else ["--no-splice"]) + (["--api", f"{HOST}:0"] if api else [])
    return start_netkit(
        lambda listen: ["proxy", listen, f"{HOST}:{upstream}", *extra],
        NETKIT_API if api else NETKIT if splice else NETKIT_COPY,
    )


HAPROXY_CFG = """\
global
    {threads}
    maxconn 4096
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind {host}:{port}
    default_backend be
backend be
    balance roundrobin
{servers}
"""


def start_haproxy(name: str, upstreams: list[int], nbthread: int | None) -> Proxy:
    """``haproxy -f CFG -db`` with a generated config in a temp dir."""
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="netkit-bench-haproxy-")
    check = " check" if len(upstreams) > 1 else ""  # lb: health checks, as netkit lb has
    cfg = HAPROXY_CFG.format(
        threads=f"nbthread {nbthread}" if nbthread else "# nbthread: default (one per CPU)",
        host=HOST,
        port=port,
        servers="\n".join(
            f"    server s{i} {HOST}:{up}{check}" for i, up in enumerate(upstreams, 1)
        ),
    )
    path = Path(workdir.name) / "haproxy.cfg"
    path.write_text(cfg)
    proc = subprocess.Popen(
        ["haproxy", "-f", str(path), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_connectable(port)
    except OSError:
        stop(proc)
        workdir.cleanup()
        raise
    return Proxy(name, proc, port, workdir)


def start_socat(upstream: int) -> Proxy:
    port = free_port()
    cmd = ["socat", f"TCP-LISTEN:{port},bind={HOST},fork,reuseaddr", f"TCP:{HOST}:{upstream}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_connectable(port)
    wait_children_gone(proc.pid)  # the probe connection's child
    return Proxy(SOCAT, proc, port)


def proxy_starters(upstream: int, tools: dict[str, bool]) -> list[tuple[str, Callable[[], Proxy]]]:
    starters: list[tuple[str, Callable[[], Proxy]]] = [
        (NETKIT, lambda: start_netkit_proxy(upstream, True)),
        (NETKIT_COPY, lambda: start_netkit_proxy(upstream, False)),
        (NETKIT_API, lambda: start_netkit_proxy(upstream, True, api=True)),
    ]
    if tools["haproxy"]:
        starters.append((HAPROXY1, lambda: start_haproxy(HAPROXY1, [upstream], 1)))
        starters.append((HAPROXY, lambda: start_haproxy(HAPROXY, [upstream], None)))
    if tools["socat"]:
        starters.append((SOCAT, lambda: start_socat(upstream)))
    return starters


@contextlib.contextmanager
def running(starters: list[tuple[str, Callable[[], Proxy]]]) -> Iterator[list[Proxy]]:
    proxies: list[Proxy] = []
    try:
        for _, start in starters:
            proxies.append(start())
        yield proxies
    finally:
        for p in proxies:
            p.close()


# --- 1. bulk throughput and CPU per GiB ----------------------------------------------------


@dataclass
class Bulk:
    """Per-run results for one proxy."""

    mb_per_s: list[float] = field(default_factory=list)
    cpu_s_per_gib: list[float] = field(default_factory=list)


def iperf3_through(proxy: Proxy, seconds: float) -> tuple[float, float]:
    """One ``iperf3 -c`` run through ``proxy``: (MB/s received, proxy CPU seconds per GiB)."""
    pid = proxy.proc.pid if proxy.proc is not None else None
    cpu0 = cpu_seconds(pid, reaped=True) if pid is not None else 0.0
    for _ in range(20):
        out = subprocess.run(
            ["iperf3", "-c", HOST, "-p", str(proxy.port), "-t", f"{seconds:g}", "-J"],
            capture_output=True,
            timeout=seconds + 30,
        )
        result = json.loads(out.stdout or b"{}")
        # The server may still be closing the previous test (its connections went through a
        # proxy that passes the close on a little later): try again shortly.
        if "busy" not in str(result.get("error", "")):
            break
        time.sleep(0.25)
    if out.returncode != 0 or "error" in result:
        raise RuntimeError(f"iperf3 through {proxy.name}: {result.get('error', out.stderr)!r}")
    received = result["end"]["sum_received"]
    cpu_per_gib = float("nan")
    if pid is not None:
        wait_children_gone(pid)
        cpu_per_gib = (cpu_seconds(pid, reaped=True) - cpu0) / (float(received["bytes"]) / 2**30)
    return float(received["bits_per_second"]) / 8 / 1e6, cpu_per_gib


def bench_bulk(runs: int, seconds: float, tools: dict[str, bool]) -> dict[str, Bulk]:
    """One ``iperf3 -s`` behind every proxy; each run goes through every proxy in turn."""
    server_port = free_port()
    server = subprocess.Popen(
        ["iperf3", "-s", "-p", str(server_port), "-B", HOST, "--forceflush"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, Bulk] = {}
    try:
        while b"listening" not in read_line(server, START_TIMEOUT_S):
            pass
        starters = proxy_starters(server_port, tools)
        with running(starters) as proxies:
            targets = [Proxy(DIRECT, None, server_port), *proxies]
            for run in range(runs):
                for proxy in rotated(targets, run):
                    mbps, cpu = iperf3_through(proxy, seconds)
                    res = results.setdefault(proxy.name, Bulk())
                    res.mb_per_s.append(mbps)
                    res.cpu_s_per_gib.append(cpu)
                    log(
                        f"  bulk run {run + 1}/{runs} {proxy.name:26} {mbps:8.0f} MB/s"
                        f"  {cpu:6.3f} CPU s/GiB"
                    )
    finally:
        stop(server)
    order = [DIRECT] + [name for name, _ in proxy_starters(0, tools)]
    return {name: results[name] for name in order if name in results}


# --- 2. memory with 200 bulk connections ---------------------------------------------------


@dataclass
class Memory:
    """One memory run through one proxy."""

    idle_rss: int
    rss: int  # median over the steady-state samples
    pss: int
    growth: float  # last third of the samples over the first third (RSS)
    pipes: int  # bytes queued in the proxy's pipes (median sample)
    tcp_mem: int  # kernel TCP buffer memory, system-wide (median sample)
    mb_per_s: float
    sent: int  # bytes the clients wrote (stalled: all still held somewhere on the way)
    connections: int
    errors: int


def start_sink(stall: bool) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [sys.executable, __file__, "--sink"] + (["--stall"] if stall else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return proc, listening_port(proc)


def memory_run(start: Callable[[], Proxy], seconds: float) -> Memory:
    """A fresh proxy: idle RSS, then 200 connections writing for ``seconds``, sampled."""
    proxy = start()
    clients: list[subprocess.Popen[bytes]] = []
    try:
        assert proxy.proc is not None
        pid = proxy.proc.pid
        time.sleep(0.3)
        idle_rss, _ = tree_memory(pid)
        per_client = MEMORY_CONNECTIONS // MEMORY_CLIENTS
        for _ in range(MEMORY_CLIENTS):
            cmd = [sys.executable, __file__, "--bulk-client", str(proxy.port)]
            cmd += [str(per_client), f"{seconds:g}"]
            clients.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        connected = sum(int(json.loads(read_line(c, 30))["connections"]) for c in clients)
        started = time.monotonic()
        samples: list[tuple[int, int, int, int]] = []
        time.sleep(min(1.0, seconds / 3))  # ramp-up
        while time.monotonic() - started < seconds - 0.3:
            rss, pss = tree_memory(pid)
            samples.append((rss, pss, pipe_bytes(pid), tcp_memory()))
            time.sleep(0.2)
        results = [json.loads(read_line(c, seconds + 30)) for c in clients]
        third = max(1, len(samples) // 3)
        first = statistics.median(s[0] for s in samples[:third])
        last = statistics.median(s[0] for s in samples[-third:])
        sent = sum(int(r["bytes"]) for r in results)
        return Memory(
            idle_rss=idle_rss,
            rss=int(statistics.median(s[0] for s in samples)),
            pss=int(statistics.median(s[1] for s in samples)),
            growth=last / first,
            pipes=int(statistics.median(s[2] for s in samples)),
            tcp_mem=int(statistics.median(s[3] for s in samples)),
            mb_per_s=sent / seconds / 1e6,
            sent=sent,
            connections=connected,
            errors=sum(int(r["errors"]) for r in results),
        )
    finally:
        for c in clients:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.wait(30)
            stop(c)
        proxy.close()


def bench_memory(
    runs: int, seconds: float, tools: dict[str, bool]
) -> dict[str, dict[str, list[Memory]]]:
    """Every proxy, fresh each run with a fresh sink, reading and stalled."""
    results: dict[str, dict[str, list[Memory]]] = {"reading": {}, "stalled": {}}
    baseline = tcp_memory()
    names = [name for name, _ in proxy_starters(0, tools)]
    for variant, stall in (("reading", False), ("stalled", True)):
        for run in range(runs):
            for name in rotated(names, run):
                sink, sink_port = start_sink(stall)
                try:
                    start = dict(proxy_starters(sink_port, tools))[name]
                    m = memory_run(start, seconds)
                finally:
                    stop(sink)
                results[variant].setdefault(name, []).append(m)
                log(
                    f"  memory ({variant}) run {run + 1}/{runs} {name:26} "
                    f"idle {m.idle_rss / 2**20:6.1f} MiB  +{(m.rss - m.idle_rss) / 2**20:6.1f}"
                    f" MiB RSS  pipes {m.pipes / 2**20:6.1f} MiB  kernel TCP "
                    f"{m.tcp_mem / 2**20:6.0f} MiB  {m.connections} conns  "
                    f"{m.sent / MEMORY_CONNECTIONS / 2**20:6.1f} MiB written each"
                )
                # The next run starts once the kernel has freed this one's socket buffers.
                deadline = time.monotonic() + 10
                while tcp_memory() > baseline + 64 * 2**20 and time.monotonic() < deadline:
                    time.sleep(0.1)
    return results


# --- 3. short-connection rate --------------------------------------------------------------


@dataclass
class Rate:
    """Per-run results for one balancer."""

    per_s: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # balancer CPU per connection
    errors: list[int] = field(default_factory=list)


def netkit_lb_available() -> bool:
    """``netkit lb --help`` exits 0 (the command is being written alongside this script)."""
    try:
        cmd = [*netkit_command(), "lb", "--help"]
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def rate_run(proxy: Proxy, clients: int, seconds: float) -> tuple[float, float, int]:
    """``clients`` processes for ``seconds``: (connections/s, balancer CPU µs each, errors)."""
    pid = proxy.proc.pid if proxy.proc is not None else None
    cpu0 = cpu_seconds(pid, reaped=True) if pid is not None else 0.0
    start_at = time.time() + 0.5  # every client process starts together
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--rate-client",
                str(proxy.port),
                str(start_at),
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(clients)
    ]
    try:
        results = [json.loads(read_line(p, seconds + 30)) for p in procs]
    finally:
        for p in procs:
            stop(p)
    total = sum(int(r["total"]) for r in results)
    cpu_us = (
        (cpu_seconds(pid, reaped=True) - cpu0) / total * 1e6
        if pid is not None and total
        else float("nan")
    )
    return (
        sum(int(r["counted"]) for r in results) / seconds,
        cpu_us,
        sum(int(r["errors"]) for r in results),
    )


def bench_rate(
    runs: int, seconds: float, clients: int, tools: dict[str, bool], lb_ok: bool
) -> dict[str, Rate]:
    """Three ``netkit tcp-echo serve`` backends; lb and HAProxy interleaved run by run."""
    backends: list[Proxy] = []
    results: dict[str, Rate] = {}
    try:
        for i in range(3):
            backend = start_netkit(lambda listen: ["tcp-echo", "serve", listen], f"backend {i + 1}")
            backends.append(backend)
        ports = [b.port for b in backends]
        starters: list[tuple[str, Callable[[], Proxy]]] = []
        if lb_ok:
            backend_args = [f"{HOST}:{p}" for p in ports]

            def lb(name: str, *extra: str, json_events: bool = False) -> Callable[[], Proxy]:
                return lambda: start_netkit(
                    lambda listen: ["lb", listen, *backend_args, *extra],
                    name,
                    json_events=json_events,
                )

            starters.append((LB, lb(LB)))
            starters.append((LB_COPY, lb(LB_COPY, "--no-splice")))
            starters.append((LB_JSON, lb(LB_JSON, json_events=True)))
        if tools["haproxy"]:
            starters.append((HAPROXY_LB, lambda: start_haproxy(HAPROXY_LB, ports, 1)))
            starters.append(
                (HAPROXY_LB_DEFAULT, lambda: start_haproxy(HAPROXY_LB_DEFAULT, ports, None))
            )
        with running(starters) as proxies:
            targets = [*proxies, Proxy(ECHO_DIRECT, None, ports[0])]
            for run in range(runs):
                for proxy in rotated(targets, run):
                    per_s, cpu_us, errors = rate_run(proxy, clients, seconds)
                    res = results.setdefault(proxy.name, Rate())
                    res.per_s.append(per_s)
                    res.cpu_us.append(cpu_us)
                    res.errors.append(errors)
                    log(
                        f"  rate run {run + 1}/{runs} {proxy.name:42} {per_s:8.0f} conn/s "
                        f"{cpu_us:7.1f} µs CPU/conn  {errors} errors"
                    )
    finally:
        for b in backends:
            b.close()
    order = [LB, LB_COPY, LB_JSON, HAPROXY_LB, HAPROXY_LB_DEFAULT, ECHO_DIRECT]
    return {name: results[name] for name in order if name in results}


# --- report --------------------------------------------------------------------------------


def versions() -> str:
    """Versions of the anchors, as they print them."""
    parts = []
    picks: tuple[tuple[list[str], Callable[[str], str]], ...] = (
        (["haproxy", "-v"], lambda s: s.split()[2]),
        (["socat", "-V"], lambda s: s.split("socat version ")[1].split()[0]),
        (["iperf3", "--version"], lambda s: s.split()[1]),
    )
    for cmd, pick in picks:
        with contextlib.suppress(Exception):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
            parts.append(f"{cmd[0]} {pick(out)}")
    return ", ".join(parts)


def code_version() -> str:
    """The commit measured, and whether netkit/ had uncommitted changes."""
    try:
        git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "netkit"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown (no git)"
    commit = head.stdout.strip() or "unknown"
    return f"commit {commit}" + (", plus uncommitted changes in netkit/" if dirty else "")


def report(
    args: argparse.Namespace,
    bulk: dict[str, Bulk] | None,
    memory: dict[str, dict[str, list[Memory]]] | None,
    rate: dict[str, Rate] | None,
    lb_note: str,
) -> tuple[str, dict[str, Any]]:
    """The Markdown block for benchmarks/README.md, and the raw numbers."""
    info = machine()
    flags = (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only != "all" else ""
    )
    lines = [
        f"Date: {info['date']}  ",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, {info['loop']}; {versions()}  ",
        f"Code: {code_version()}  ",
        f"Command: `python benchmarks/proxy.py{flags}`",
        "",
    ]
    targets: list[tuple[str, bool | None]] = []
    ratios: dict[str, float] = {}
    if bulk is not None:
        lines += [
            f"**Bulk throughput** (iperf3 -c -t {args.bulk_seconds:g} -J, one stream, "
            f"{args.bulk_runs} interleaved runs, medians)",
            "",
            "| Path | Runs | MB/s | Proxy CPU s per GiB | netkit (splice) / this: throughput, CPU |",
            "|---|---:|---:|---:|---|",
        ]
        nk = bulk.get(NETKIT)
        for name, b in bulk.items():
            cell = ""
            if nk is not None and name != NETKIT:
                r = ratio_of_medians(nk.mb_per_s, b.mb_per_s)
                c = ratio_of_medians(nk.cpu_s_per_gib, b.cpu_s_per_gib)
                ratios[f"bulk netkit/{name}"] = r
                ratios[f"cpu per GiB netkit/{name}"] = c
                cell = f"{r:.2f}x" + ("" if name == DIRECT else f", {c:.2f}x")
            cpu = "" if name == DIRECT else f"{med(b.cpu_s_per_gib):.3f}"
            lines.append(
                f"| {name} | {len(b.mb_per_s)} | {med(b.mb_per_s):,.0f} | {cpu} | {cell} |"
            )
        lines.append("")
        if nk is not None:
            for name, goal in ((HAPROXY1, 1.0), (SOCAT, 1.5)):
                if name in bulk:
                    r = ratios[f"bulk netkit/{name}"]
                    targets.append((f"proxy throughput >= {goal:g}x {name}: {r:.2f}x", r >= goal))
                else:
                    targets.append((f"proxy throughput >= {goal:g}x {name}: not measured", None))
            if HAPROXY1 in bulk:
                c = ratios[f"cpu per GiB netkit/{HAPROXY1}"]
                targets.append((f"CPU per GiB <= 1.5x {HAPROXY1}'s: {c:.2f}x", c <= 1.5))
            if HAPROXY in bulk:
                r = ratios[f"bulk netkit/{HAPROXY}"]
                c = ratios[f"cpu per GiB netkit/{HAPROXY}"]
                targets.append(
                    (f"(information) against {HAPROXY}: throughput {r:.2f}x, CPU {c:.2f}x", None)
                )
    if memory is not None:
        lines += [
            f"**Memory, {MEMORY_CONNECTIONS} concurrent bulk connections** "
            f"({MEMORY_CLIENTS} client processes, {args.memory_seconds:g} s, "
            f"{args.memory_runs} runs, medians; RSS/PSS of the proxy's process tree minus idle)",
            "",
            "| Upstream | Proxy | Idle RSS | RSS increase | per connection | PSS | in pipes "
            "(kernel) | Kernel TCP buffers (system-wide) | RSS growth last/first third "
            "| Clients' MB/s | Written per connection | Errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for variant, by_proxy in memory.items():
            for name, ms in by_proxy.items():
                inc = med([m.rss - m.idle_rss for m in ms])
                lines.append(
                    f"| {variant} | {name} | {med([m.idle_rss for m in ms]) / 2**20:.1f} MiB | "
                    f"{inc / 2**20:.1f} MiB | {inc / MEMORY_CONNECTIONS / 1024:.0f} KiB | "
                    f"{med([m.pss for m in ms]) / 2**20:.1f} MiB | "
                    f"{med([m.pipes for m in ms]) / 2**20:.1f} MiB | "
                    f"{med([m.tcp_mem for m in ms]) / 2**20:,.0f} MiB | "
                    f"{med([m.growth for m in ms]):.2f} | {med([m.mb_per_s for m in ms]):,.0f} | "
                    f"{med([m.sent for m in ms]) / MEMORY_CONNECTIONS / 2**20:.1f} MiB | "
                    f"{sum(m.errors for m in ms)} |"
                )
        lines.append("")
        for variant in memory:
            for name in (NETKIT, NETKIT_COPY):
                runs_of = memory[variant].get(name)
                if not runs_of:
                    continue
                growth = med([m.growth for m in runs_of])
                conns = min(m.connections for m in runs_of)
                inc = med([m.rss - m.idle_rss for m in runs_of]) / MEMORY_CONNECTIONS
                errors = sum(m.errors for m in runs_of)
                bounded = growth <= 1.10 and conns == MEMORY_CONNECTIONS and not errors
                held = ""
                if variant == "stalled":
                    per = med([m.sent for m in runs_of]) / MEMORY_CONNECTIONS / 2**20
                    held = (
                        f", {per:.1f} MiB accepted per connection in all (kernel buffers included)"
                    )
                targets.append(
                    (
                        f"memory bounded, {name}, {variant} upstream: {conns} connections, "
                        f"{errors} errors, {inc / 1024:.0f} KiB RSS each, RSS growth {growth:.2f} "
                        f"over the steady state (<= 1.10){held}",
                        bounded,
                    )
                )
    if rate is not None:
        lines += [
            f"**Short connections** (connect, send {MESSAGE} B, read the echo, close; "
            f"{args.rate_clients} client processes, {args.rate_seconds:g} s after "
            f"{RATE_WARMUP_S:g} s warm-up, {args.rate_runs} interleaved runs, medians; "
            "3 `netkit tcp-echo serve` backends)",
            "",
            "| Balancer | Runs | Connections/s | Balancer CPU per connection | Errors "
            "| netkit lb / this |",
            "|---|---:|---:|---:|---:|---|",
        ]
        lb = rate.get(LB)
        for name, balancer in rate.items():
            cell = ""
            if lb is not None and name != LB:
                ratios[f"rate lb/{name}"] = x = ratio_of_medians(lb.per_s, balancer.per_s)
                cell = f"{x:.2f}x"
            cpu = "" if name == ECHO_DIRECT else f"{med(balancer.cpu_us):.0f} µs"
            lines.append(
                f"| {name} | {len(balancer.per_s)} | {med(balancer.per_s):,.0f} | {cpu} "
                f"| {sum(balancer.errors)} "
                f"| {cell} |"
            )
        lines.append("")
        if lb is not None and HAPROXY_LB in rate:
            x = ratios[f"rate lb/{HAPROXY_LB}"]
            targets.append((f"lb connection rate >= 0.5x {HAPROXY_LB}: {x:.2f}x", x >= 0.5))
            if LB_COPY in rate:
                y = ratio_of_medians(rate[LB_COPY].per_s, rate[HAPROXY_LB].per_s)
                targets.append((f"(information) {LB_COPY} / {HAPROXY_LB}: {y:.2f}x", None))
    if lb_note:
        targets.append((f"lb connection rate >= 0.5x HAProxy: {lb_note}", None))
    lines.append(
        "The machine was shared: other CPU-heavy work ran on its 2 vCPUs during the runs, so "
        "only same-session ratios mean anything. Placement was not pinned: iperf3's client, its "
        "server and the proxy are three busy processes on two CPUs, so each run's throughput "
        "is partly the scheduler's choice. HAProxy runs with `-db` and a generated config; the "
        "targets compare with `nbthread 1` (one thread, like netkit); the default (one thread "
        "per CPU) is for information. CPU = user + sys of the proxy's process tree from /proc, "
        "including the per-connection children socat forks and reaps. RSS does not include "
        "socket or pipe buffers (kernel memory); 'in pipes' is what the proxy's splice pipes "
        "held, read with FIONREAD. With a stalled upstream, everything the clients wrote is held "
        "somewhere between them and the sink (client send buffer, the proxy's receive, pipe and "
        "send buffers, the sink's receive buffer): 'written per connection' is that total. "
        "'Kernel TCP buffers' is /proc/net/sockstat's TCP mem for the whole machine (clients, "
        "proxy and sink together; tcp_rmem lets one stalled socket queue up to its maximum)."
    )
    lines.append("")
    for text, met in targets:
        lines.append(target_line(text, met))
    raw = {
        "machine": info,
        "settings": vars(args),
        "bulk": None if bulk is None else {k: vars(v) for k, v in bulk.items()},
        "memory": None
        if memory is None
        else {v: {k: [vars(m) for m in ms] for k, ms in d.items()} for v, d in memory.items()},
        "rate": None if rate is None else {k: vars(v) for k, v in rate.items()},
        "ratios": ratios,
        "targets": dict(targets),
    }
    return "\n".join(lines), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    add_json_option(parser)
    parser.add_argument(
        "--only",
        choices=["all", "bulk", "memory", "rate"],
        default="all",
        help="which part to run",
    )
    # Internal modes: this file is also each helper process.
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stall", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-client", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--rate-client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        return sink_server(args.stall)
    if args.bulk_client:
        port, n, s = args.bulk_client
        return bulk_client(int(port), int(n), float(s))
    if args.rate_client:
        port, at, s = args.rate_client
        return rate_client(int(port), float(at), float(s))
    del args.sink, args.stall, args.bulk_client, args.rate_client

    args.bulk_runs, args.bulk_seconds = (2, 1.0) if args.quick else (5, 3.0)
    args.memory_runs, args.memory_seconds = (1, 3.0) if args.quick else (3, 5.0)
    args.rate_runs, args.rate_seconds = (2, 1.0) if args.quick else (5, 3.0)
    args.rate_clients = 3
    tools = {
        "iperf3": ensure_tool("iperf3", "iperf3"),
        "haproxy": ensure_tool("haproxy", "haproxy"),
        "socat": ensure_tool("socat", "socat"),
    }
    bulk = memory = rate = None
    lb_note = ""
    if args.only in ("all", "bulk"):
        if tools["iperf3"]:
            log(f"bulk: {args.bulk_runs} runs x {args.bulk_seconds:g} s per path")
            bulk = bench_bulk(args.bulk_runs, args.bulk_seconds, tools)
        else:
            log("bulk: skipped (no iperf3)")
    if args.only in ("all", "memory"):
        log(f"memory: {args.memory_runs} runs x {args.memory_seconds:g} s per proxy and sink")
        memory = bench_memory(args.memory_runs, args.memory_seconds, tools)
    if args.only in ("all", "rate"):
        lb_ok = netkit_lb_available()
        if not lb_ok:
            lb_note = "not measured (`netkit lb` does not exist yet)"
            log(f"rate: netkit lb: {lb_note}")
        log(f"rate: {args.rate_runs} runs x {args.rate_seconds:g} s per balancer")
        rate = bench_rate(args.rate_runs, args.rate_seconds, args.rate_clients, tools, lb_ok)
    table, raw = report(args, bulk, memory, rate, lb_note)
    print(table)
    write_json(raw, args.json)


if __name__ == "__main__":
    main()

"""Compare netkit's WebSocket server and client with the websockets library on loopback.

Usage::

    python benchmarks/ws.py [--quick] [--json [PATH]] [--pin same|split] [--no-cross]
                            [--only pingpong|bulk|concurrent|memory]
                            [--netkit-log json|text] [--websockets-loop asyncio|uvloop]

Run it with the Python that has netkit and websockets installed (``/tmp/venv/bin/python`` in the
dev setup). Everything runs on 127.0.0.1; every load loop stops after a fixed time *and* a
fixed count.

Servers, each its own process, started once and reused by every client:

- ``netkit ws-server 127.0.0.1:0 --mode echo --ping-interval 0 --max-size 2MiB`` (uvloop,
  netkit's default), its output to a temporary file. The URL comes from its first line; it is
  stopped with SIGTERM. Like the websockets server, it writes nothing per message.
  ``--netkit-log json`` adds ``--json``, which logs one JSON line per message: that shows what
  the logging costs.
- A ``websockets.asyncio.server.serve`` echo server written in this file (``async for message
  in ws: await ws.send(message)``), with default settings except ``max_size=2 MiB``,
  ``ping_interval=None`` and ``compression=None`` (netkit does not compress by default), on the
  stock asyncio loop (``--websockets-loop uvloop`` to see what the loop alone is worth).

Clients, each run a new process (this file again):

- netkit: a ``WebSocketClientConnection`` subclass opened with ``connect_ws``, on uvloop
  (``netkit.net.runtime.run``), driven the way netkit's own load generator (``netkit bench``)
  drives it: ``on_message`` checks the echo and sends the next message;
- websockets: ``websockets.asyncio.client.connect`` with the same settings as its server,
  ``await ws.send(...)`` then ``await ws.recv()`` in a loop (its API is coroutines only).

The two main pairings are netkit client -> netkit server and websockets client -> websockets
server; the two cross pairings are reported for information, so that client and server speed can
be told apart. For a, a third pairing measures the floor of the machine: the same 38 bytes a
WebSocket client sends for a 32-byte message, echoed over raw TCP by a blocking-socket loop on
each side (this file again: no event loop, no framing, no WebSocket). No WebSocket
implementation can ping-pong faster than that on the same CPU placement, so it shows whether a
target is within reach. Tests:

a. **ping-pong**: one connection, 32-byte binary message, closed loop (send, wait for the
   echo, check its length, repeat) for a fixed time after a warm-up; messages per second.
b. **bulk**: one connection, 1 MiB binary message echoed in a closed loop; MB/s of payload
   echoed (10^6 bytes/s, each byte crosses loopback twice).
c. **concurrent**: 1,000 connections from one client process, each in its own closed loop of
   32-byte messages; messages per second in total.
d. **memory**: a fresh server, one warm-up connection, then 1,000 connections that complete
   the handshake and stay idle; server RSS (``VmRSS``) after minus before, per connection.

For a-c, runs are interleaved (run 1 of every pairing, then run 2, ...) with the order rotated
each time; the server's CPU time per message is read from ``/proc`` and the client reports its
own, so the cost of each side can be seen apart from the rate. For a, the CPU each side last ran
on is sampled, because on a small VM a wake-up across CPUs costs more than the echo itself.

Targets (issue 3), netkit pairing over websockets pairing: a >= 3x, b >= 1.5x, c >= 2x, and
memory per idle connection <= 0.75x. The script ends with a Markdown block for
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any, Protocol

from harness import (
    HOST,
    PIN_CHOICES,
    WARMUP_S,
    CpuRow,
    add_json_option,
    add_placement_options,
    connect_blocking,
    cpu_per_message,
    cpu_seconds,
    cpu_table,
    family,
    last_cpu,
    log,
    machine,
    med,
    netkit_command,
    pin,
    rotated,
    rss_kib,
    stop,
    target_line,
    tcp_floor_server,
    write_json,
)

SMALL = 32
LARGE = 1 << 20
MAX_SIZE = 2 << 20  # both servers and clients: 1 MiB messages plus headroom
CONNECTIONS = 1000
OPEN_AT_ONCE = 64  # handshakes in flight while opening many connections
MAX_MESSAGES = 50_000_000  # count bound on one run, far above what a few seconds allow
CONCURRENT_WARMUP_S = 0.5
START_TIMEOUT_S = 15.0
SAMPLE_EVERY_S = 0.02  # CPU placement sampling while a ping-pong run is measured
CPU_GOAL = 0.40  # issue 14: netkit ws-server CPU per 32 B message <= 0.40x websockets

NETKIT = "netkit"
WEBSOCKETS = "websockets"
FLOOR = "tcp"  # the raw TCP floor of test a: blocking sockets, no WebSocket
FLOOR_FRAME = 6 + 32  # what a client sends for a 32-byte message: header, mask key, payload
TESTS = ("pingpong", "bulk", "concurrent")
TEST_TITLES = {
    "pingpong": "a. 32 B ping-pong, 1 connection",
    "bulk": "b. 1 MiB echo, 1 connection",
    "concurrent": f"c. 32 B messages, {CONNECTIONS:,} connections",
}


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout: how the helper processes talk to the orchestrator."""
    print(json.dumps({"event": event, **fields}), flush=True)


def run_loop(main: Callable[[], Awaitable[Any]], loop: str) -> Any:
    """Run ``main()`` on uvloop or on the stock asyncio loop."""

    async def wrapper() -> Any:
        return await main()

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(wrapper())
    return asyncio.run(wrapper())


# --- the websockets server (this file runs as it) -----------------------------------------


def websockets_server(loop: str) -> None:
    """The anchor: a websockets echo server, default settings but for size, pings, compression."""
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with serve(
            echo, HOST, 0, compression=None, max_size=MAX_SIZE, ping_interval=None
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            url = f"ws://{HOST}:{port}/"
            emit("listening", address=f"{HOST}:{port}", url=url)
            await stop.wait()

    run_loop(main, loop)


def tcp_floor_client(url: str, seconds: float) -> dict[str, Any]:
    """The floor's client: FLOOR_FRAME bytes out, the same back, in a blocking closed loop."""
    import socket

    host, _, port = url.removeprefix("tcp://").rpartition(":")
    message = os.urandom(FLOOR_FRAME)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def round_trip() -> None:
            sock.sendall(message)
            got = 0
            while got < FLOOR_FRAME:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the floor's echo server closed the connection")
                got += len(chunk)
            check(got, FLOOR_FRAME)

        end = time.perf_counter() + WARMUP_S
        while time.perf_counter() < end:
            round_trip()
        emit("mark")
        messages = 0
        cpu0 = time.process_time()
        start = time.perf_counter()
        end = start + seconds
        while messages < MAX_MESSAGES and time.perf_counter() < end:
            round_trip()
            messages += 1
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    return {"messages": messages, "bytes": messages * SMALL, "seconds": elapsed,
            "client_cpu": cpu}  # fmt: skip


# --- clients (this file runs as them) ------------------------------------------------------


class Counter:
    """Echoes counted across a test's connections, and the signal for their loops to stop."""

    def __init__(self, limit: int) -> None:
        self.count = 0
        self.limit = limit  # per connection: the count bound of a load loop
        self.stop = False


class EchoConnection(Protocol):
    """What a test needs from a client connection."""

    async def echo(self, payload: bytes) -> int:
        """Send ``payload`` as one binary message; return the length of the echo."""
        ...

    async def echo_loop(self, payload: bytes, counter: Counter) -> None:
        """Closed loop: send ``payload``, wait for its echo (checked), count it, repeat until
        ``counter.stop`` or ``counter.limit`` echoes; each library the way it is meant to be
        driven (netkit: from its message callback; websockets: awaiting send and recv)."""
        ...

    async def aclose(self) -> None:
        """Run the closing handshake (bounded in time)."""
        ...


Opener = Callable[[str], Awaitable[EchoConnection]]


def netkit_opener() -> Opener:
    """Connections built from netkit's client driver: one future per echo, no inbox queue."""
    from netkit.core.addresses import parse_ws_url
    from netkit.core.ws.handshake import ClientHandshake
    from netkit.core.ws.protocol import Message
    from netkit.errors import ConnectionLost
    from netkit.net.ws import WebSocketClientConnection, WSTimeouts, connect_ws

    timeouts = WSTimeouts(ping_interval=None, ping_timeout=None)

    class EchoClient(WebSocketClientConnection):
        waiter: asyncio.Future[int] | None = None
        # echo_loop's state: what to send again, the shared counter, this connection's count.
        looping: tuple[bytes, Counter, asyncio.Future[None]] | None = None
        mine = 0

        def on_message(self, message: Message) -> None:
            if self.looping is not None:
                payload, counter, done = self.looping
                if len(message.data) != len(payload):
                    self.looping = None
                    done.set_exception(RuntimeError(f"echo of {len(payload)} bytes came back "
                                                    f"as {len(message.data)}"))  # fmt: skip
                    return
                counter.count += 1
                self.mine += 1
                if counter.stop or self.mine >= counter.limit:
                    self.looping = None
                    done.set_result(None)
                else:
                    self.send_message(payload)  # the next round trip, from this callback
                return
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(len(message.data))

        def on_close(self, exc: Exception | None) -> None:
            super().on_close(exc)
            lost = ConnectionLost(f"{self.peer} closed the connection")
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_exception(lost)
            if self.looping is not None:
                self.looping[2].set_exception(lost)
                self.looping = None

        async def echo_loop(self, payload: bytes, counter: Counter) -> None:
            done: asyncio.Future[None] = self._loop.create_future()
            self.looping = (payload, counter, done)
            self.send_message(payload)
            await done

        async def echo(self, payload: bytes) -> int:
            waiter: asyncio.Future[int] = self._loop.create_future()
            self.waiter = waiter
            self.send_message(payload)
            return await waiter

        async def aclose(self) -> None:
            self.start_close()
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 10)
            except TimeoutError:
                self.abort()

    async def open_connection(text: str) -> EchoConnection:
        url = parse_ws_url(text)

        def factory() -> EchoClient:
            handshake = ClientHandshake(url.host_header, url.resource)
            return EchoClient(handshake, max_size=MAX_SIZE, timeouts=timeouts)

        conn = await connect_ws(url, factory, ssl_context=None)
        assert isinstance(conn, EchoClient)
        return conn

    return open_connection


def websockets_opener() -> Opener:
    """Connections from ``websockets.asyncio.client.connect``, configured like its server."""
    from websockets.asyncio.client import ClientConnection, connect

    class EchoClient:
        def __init__(self, ws: ClientConnection) -> None:
            self.ws = ws

        async def echo(self, payload: bytes) -> int:
            await self.ws.send(payload)
            return len(await self.ws.recv())

        async def echo_loop(self, payload: bytes, counter: Counter) -> None:
            mine = 0
            while not counter.stop and mine < counter.limit:
                await self.ws.send(payload)
                check(len(await self.ws.recv()), len(payload))
                counter.count += 1
                mine += 1

        async def aclose(self) -> None:
            await self.ws.close()

    async def open_connection(text: str) -> EchoConnection:
        ws = await connect(text, compression=None, max_size=MAX_SIZE, ping_interval=None)
        return EchoClient(ws)

    return open_connection


def check(got: int, expected: int) -> None:
    if got != expected:
        raise RuntimeError(f"echo of {expected} bytes came back as {got}")


async def closed_loop(conn: EchoConnection, size: int, seconds: float) -> dict[str, Any]:
    """One connection in a closed loop of ``size``-byte messages: warm-up, then ``seconds``."""
    return await measure([conn], size, seconds, WARMUP_S)


async def open_many(opener: Opener, url: str, n: int) -> list[EchoConnection]:
    """Open ``n`` connections, at most OPEN_AT_ONCE handshakes at a time."""
    limit = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one() -> EchoConnection:
        async with limit:
            return await opener(url)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def close_all(conns: list[EchoConnection]) -> None:
    limit = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one(conn: EchoConnection) -> None:
        async with limit:
            with contextlib.suppress(Exception):
                await conn.aclose()

    await asyncio.gather(*(one(c) for c in conns))


async def concurrent(opener: Opener, url: str, n: int, seconds: float) -> dict[str, Any]:
    """``n`` connections, each in its own closed loop of 32-byte messages, for ``seconds``."""
    conns = await open_many(opener, url, n)
    try:
        result = await measure(conns, SMALL, seconds, CONCURRENT_WARMUP_S)
    finally:
        await close_all(conns)
    return result | {"connections": n}


async def measure(
    conns: list[EchoConnection], size: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """Run every connection's echo loop; count the echoes of ``seconds`` after ``warmup``."""
    payload = os.urandom(size)
    counter = Counter(MAX_MESSAGES // len(conns))
    tasks = [asyncio.create_task(c.echo_loop(payload, counter)) for c in conns]
    try:
        # Sleeping is the measurement here (a fixed window), not synchronization; a failed
        # loop ends the wait early and fails the run.
        await asyncio.wait(tasks, timeout=warmup, return_when=asyncio.FIRST_EXCEPTION)
        emit("mark")
        count0 = counter.count
        cpu0 = time.process_time()
        start = time.perf_counter()
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
        messages = counter.count - count0
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        counter.stop = True
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in done:
            task.result()  # a failed connection fails the run
        if pending:
            raise RuntimeError(f"{len(pending)} connections did not finish their last echo")
    finally:
        for task in tasks:
            task.cancel()
    return {"messages": messages, "bytes": messages * size, "seconds": elapsed,
            "client_cpu": cpu}  # fmt: skip


async def read_stdin_line() -> str:
    """Wait for the orchestrator's go-ahead without blocking the loop."""
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def idle_connections(opener: Opener, url: str, n: int) -> None:
    """Memory test: warm-up connection; then, on "go", ``n`` idle connections until "done"."""
    conn = await opener(url)
    check(await conn.echo(os.urandom(SMALL)), SMALL)
    await conn.aclose()
    emit("warm")
    await asyncio.wait_for(read_stdin_line(), 60)
    conns = await open_many(opener, url, n)
    emit("ready", connections=len(conns))
    await asyncio.wait_for(read_stdin_line(), 60)
    await close_all(conns)
    emit("result")


def client(kind: str, url: str, tests: list[str], seconds: float, n: int, loop: str) -> None:
    """One client process: run ``tests`` in order against ``url``, one JSON result each."""
    if kind == FLOOR:
        for test in tests:  # the floor is measured for the ping-pong test only
            emit("result", test=test, **tcp_floor_client(url, seconds))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 256:  # one descriptor per connection, plus the interpreter's own
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
    opener = netkit_opener() if kind == NETKIT else websockets_opener()

    async def main() -> None:
        for test in tests:
            if test == "memory":
                await idle_connections(opener, url, n)
                continue
            if test == "concurrent":
                result = await concurrent(opener, url, n, seconds)
            else:
                conn = await opener(url)
                try:
                    result = await closed_loop(
                        conn, SMALL if test == "pingpong" else LARGE, seconds
                    )
                finally:
                    await conn.aclose()
            emit("result", test=test, **result)

    if kind == NETKIT:
        from netkit.net import runtime

        runtime.run(main)  # uvloop, netkit's default
    else:
        run_loop(main, loop)


# --- process plumbing ----------------------------------------------------------------------


def netkit_server_available() -> bool:
    """True once ``netkit ws-server --help`` works."""
    cmd = [*netkit_command(), "ws-server", "--help"]
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0


def settled_rss(pid: int, timeout: float = 3.0) -> int:
    """RSS once it stops moving: two samples 0.2 s apart that agree (or the last one)."""
    time.sleep(0.5)
    deadline = time.monotonic() + timeout
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss_kib(pid)
        if now == last:
            break
        last = now
    return last


@dataclass
class Server:
    """A running server under test."""

    kind: str
    proc: subprocess.Popen[bytes]
    url: str
    log: IO[bytes] | None = None

    def stop(self) -> None:
        """SIGTERM, then wait (harness.stop); then close its output file."""
        stop(self.proc)
        if self.log is not None:
            self.log.close()


def start_server(kind: str, args: argparse.Namespace) -> Server:
    """Start one server and read its URL from its first line (JSON, or netkit's text line)."""
    json_output = kind != NETKIT or args.netkit_log == "json"
    if kind == FLOOR:
        cmd = [sys.executable, __file__, "--serve-tcp-floor"]
    elif kind == NETKIT:
        cmd = [*netkit_command(), "ws-server", f"{HOST}:0", "--mode", "echo"]
        cmd += ["--ping-interval", "0", "--max-size", "2MiB"] + (["--json"] if json_output else [])
    else:
        cmd = [sys.executable, __file__, "--serve-websockets", "--loop", args.websockets_loop]
    # With --json, netkit logs every connection and message as a JSON line: to a file, so that
    # no pipe ever fills up and blocks it.
    out = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the server; Server.stop closes it
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        out.seek(0)
        first = out.readline()
        if first.endswith(b"\n"):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            out.close()
            raise RuntimeError(f"{cmd!r} did not announce a listening address")
        time.sleep(0.02)
    if json_output:
        event = json.loads(first)
        if event.get("event") != "listening":
            raise RuntimeError(f"unexpected first line from {cmd!r}: {event}")
        url = str(event.get("url") or f"ws://{event['address']}/")
    else:  # "ws-server listening on ws://127.0.0.1:PORT/ (mode echo, ...)"
        found = re.search(rb"ws://\S+", first)
        if found is None:
            raise RuntimeError(f"no ws:// URL in the first line from {cmd!r}: {first!r}")
        url = found.group().decode()
    return Server(kind, proc, url, out)


def client_command(
    kind: str, server: Server, tests: list[str], args: argparse.Namespace
) -> list[str]:
    cmd = [sys.executable, __file__, "--client", kind, "--url", server.url]
    cmd += ["--tests", ",".join(tests), "--seconds", str(args.seconds)]
    cmd += ["--connections", str(args.connections), "--loop", args.websockets_loop]
    return cmd


def start_client(cmd: list[str], cpus: set[int] | None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if cpus is not None:
        pin(proc.pid, cpus)
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait for a client to exit; its stderr goes into the error when it failed."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    if proc.returncode != 0:
        raise RuntimeError(f"client {proc.args!r} exited with {proc.returncode}:\n{err[-3000:]}")


def events(proc: subprocess.Popen[bytes], timeout: float) -> Iterator[dict[str, Any] | None]:
    """The client's JSON lines as they come; None every SAMPLE_EVERY_S while it is quiet."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    while time.monotonic() < deadline:
        if b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield json.loads(line)
            continue
        if not select.select([fd], [], [], SAMPLE_EVERY_S)[0]:
            yield None
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        pending += chunk
    raise TimeoutError(f"client {proc.args!r} still running after {timeout:g}s")


# --- the measurements -----------------------------------------------------------------------


@dataclass
class Pairing:
    """A client driving a server, and its per-run results per test."""

    client: str
    server: str
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.client == FLOOR:
            return "raw TCP floor (blocking sockets)"
        return f"{self.client} client → {self.server} server"

    @property
    def main(self) -> bool:
        return self.client == self.server


def run_client(
    pairing: Pairing, server: Server, tests: list[str], args: argparse.Namespace
) -> None:
    """One client process running ``tests``; server CPU and placement read around each window."""
    cpus = PIN_CHOICES[args.pin]
    proc = start_client(client_command(pairing.client, server, tests, args), cpus and cpus[0])
    server_pid = family(server.proc.pid)[-1]
    timeout = len(tests) * (args.seconds + 60) + 60
    try:
        cpu0 = 0.0
        same = samples = 0
        measuring = False
        for event in events(proc, timeout):
            if event is None:
                if measuring:
                    with contextlib.suppress(OSError):
                        same += last_cpu(proc.pid) == last_cpu(server_pid)
                        samples += 1
                continue
            if event["event"] == "mark":
                cpu0, same, samples, measuring = cpu_seconds(server.proc.pid), 0, 0, True
            elif event["event"] == "result":
                server_cpu = cpu_seconds(server.proc.pid) - cpu0
                measuring = False
                n = max(int(event["messages"]), 1)
                row = {
                    "rate": event["messages"] / event["seconds"],
                    "mb_per_s": event["bytes"] / event["seconds"] / 1e6,
                    "client_cpu_us": event["client_cpu"] / n * 1e6,
                    "server_cpu_us": server_cpu / n * 1e6,
                    "same_cpu": same / max(samples, 1),
                }
                pairing.results.setdefault(event["test"], []).append(row)
                log(
                    f"    {event['test']:10} {pairing.name:40} {row['rate']:10,.0f} msg/s "
                    f"{row['mb_per_s']:8,.1f} MB/s  client {row['client_cpu_us']:6.1f} µs "
                    f"server {row['server_cpu_us']:6.1f} µs /msg  same CPU {row['same_cpu']:4.0%}"
                )
    finally:
        finish(proc)


def bench_speed(
    pairings: list[Pairing], servers: dict[str, Server], tests: list[str], args: argparse.Namespace
) -> None:
    """Every pairing runs ``tests`` once per run, pairings in rotated order."""
    cpus = PIN_CHOICES[args.pin]
    if cpus is not None:
        for server in servers.values():
            pin(server.proc.pid, cpus[1])
    for run in range(args.runs):
        log(f"  run {run + 1}/{args.runs}")
        for pairing in rotated(pairings, run):
            mine = [t for t in tests if pairing.client != FLOOR or t == "pingpong"]
            run_client(pairing, servers[pairing.server], mine, args)


def memory_run(kind: str, args: argparse.Namespace) -> dict[str, float]:
    """A fresh server; RSS before and after CONNECTIONS idle connections from its own client."""
    server = start_server(kind, args)
    try:
        proc = start_client(client_command(kind, server, ["memory"], args), None)
        assert proc.stdin is not None
        try:
            before = after = 0
            for event in events(proc, 120):
                if event is None:
                    continue
                if event["event"] == "warm":
                    before = settled_rss(server.proc.pid)
                    proc.stdin.write(b"go\n")
                    proc.stdin.flush()
                elif event["event"] == "ready":
                    after = settled_rss(server.proc.pid)
                    proc.stdin.write(b"done\n")
                    proc.stdin.flush()
                elif event["event"] == "result":
                    break
        finally:
            finish(proc)
    finally:
        server.stop()
    per_conn = (after - before) / args.connections
    log(f"    memory     {kind:10} server  before {before:8,} KiB  after {after:8,} KiB  "
        f"{per_conn:6.1f} KiB per connection")  # fmt: skip
    return {"before_kib": before, "after_kib": after, "per_connection_kib": per_conn}


def bench_memory(kinds: list[str], args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for run in range(args.memory_runs):
        log(f"  memory run {run + 1}/{args.memory_runs}")
        for kind in rotated(kinds, run):
            results[kind].append(memory_run(kind, args))
    return results


# --- CPU per message: one blocking client for every server, all on one CPU ---------------

MASK = b"\x5a\x17\xc3\x81"
UPGRADE = (
    "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN, MASK, payload under 126 bytes), as RFC 6455 5.2 lays it out."""
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + MASK + body


def ws_connect_blocking(url: str) -> Any:
    """A blocking connection to a ws:// URL, after the opening handshake (101 checked)."""
    host = url.removeprefix("ws://").split("/", 1)[0]
    sock = connect_blocking(int(host.rpartition(":")[2]))
    sock.sendall(UPGRADE.format(host=host).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            raise ConnectionError(f"{url} closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise RuntimeError(f"{url} refused the handshake: {head.splitlines()[0]!r}")
    return sock


def bench_cpu(kinds: list[str], args: argparse.Namespace) -> list[CpuRow]:
    """Server CPU per 32 B message, client and servers pinned to ``args.cpu``, rounds interleaved.

    The client is a blocking socket in this process for every server: it sends the 38 bytes of a
    masked 32 B binary frame and reads the 34-byte echo frame (the floor echoes the 38 bytes).
    """
    frame = masked_frame(0x2, os.urandom(SMALL))
    close = masked_frame(0x8, (1000).to_bytes(2, "big"))
    servers: list[Server] = []
    rows: list[CpuRow] = []
    try:
        for kind in [*kinds, FLOOR]:
            server = start_server(kind, args)
            servers.append(server)
            if kind == FLOOR:
                port = int(server.url.rpartition(":")[2])
                conn = partial(connect_blocking, port)
                rows.append(CpuRow(CPU_NAMES[kind], server.proc.pid, conn, frame, len(frame)))
            else:
                conn = partial(ws_connect_blocking, server.url)
                rows.append(CpuRow(CPU_NAMES[kind], server.proc.pid, conn, frame, 2 + SMALL, close))
        cpu_per_message(rows, args.cpu_rounds, args.cpu_seconds, args.cpu)
    finally:
        for server in servers:
            server.stop()
    return rows


CPU_NAMES = {
    NETKIT: "netkit ws-server (uvloop)",
    WEBSOCKETS: "websockets server",
    FLOOR: "bare blocking echo of the frame (floor)",
}


# --- report --------------------------------------------------------------------------------


def column(rows: list[dict[str, float]], key: str) -> list[float]:
    return [r[key] for r in rows]


TARGETS = {  # test: (metric, netkit/websockets at least this, or at most for memory)
    "pingpong": ("rate", 3.0),
    "bulk": ("mb_per_s", 1.5),
    "concurrent": ("rate", 2.0),
}


def report(
    args: argparse.Namespace,
    pairings: list[Pairing],
    memory: dict[str, list[dict[str, float]]],
    cpu_rows: list[CpuRow],
) -> tuple[str, dict[str, Any]]:
    """The Markdown block for benchmarks/README.md, and the raw numbers."""
    info = machine(websockets="websockets")
    flags = " --quick" if args.quick else ""
    flags += f" --pin {args.pin}" if args.pin != "none" else ""
    flags += f" --only {args.only}" if args.only != "all" else ""
    flags += " --netkit-log json" if args.netkit_log == "json" else ""
    if args.websockets_loop != "asyncio":
        flags += f" --websockets-loop {args.websockets_loop}"
    lines = [
        f"Date: {info['date']}  ",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python "
        f"{info['python']}, uvloop {info['uvloop']}, websockets {info['websockets']}  ",
        f"Code: commit {info['commit']} plus the working tree  ",
        f"Command: `python benchmarks/ws.py{flags}`",
        "",
        "| Test | Client → server | Runs | Median | Client CPU / msg | Server CPU / msg | Ratio |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    by = {(p.client, p.server): p for p in pairings}
    nk, ws = by.get((NETKIT, NETKIT)), by.get((WEBSOCKETS, WEBSOCKETS))
    ratios: dict[str, float] = {}
    targets: list[tuple[str, bool | None]] = []
    for test in TESTS:
        metric, goal = TARGETS[test]
        unit = "MB/s" if metric == "mb_per_s" else "msg/s"
        ref = ws.results.get(test) if ws else None
        for p in pairings:
            rows = p.results.get(test)
            if not rows:
                continue
            if p is ws:
                cell = "reference"
            elif ref:
                r = med(column(rows, metric)) / med(column(ref, metric))
                cell = f"{r:.2f}x websockets→websockets" + (
                    "" if p is nk else " (floor)" if p.client == FLOOR else " (information)"
                )
                ratios[f"{test} {p.name}"] = r
            else:
                cell = ""
            if test == "pingpong":
                on_same = sum(x["same_cpu"] >= 0.5 for x in rows)
                cell += f"; same CPU in {on_same}/{len(rows)} runs"
            lines.append(
                f"| {TEST_TITLES[test]} | {p.name} | {len(rows)} | "
                f"{med(column(rows, metric)):,.0f} {unit} | "
                f"{med(column(rows, 'client_cpu_us')):.1f} µs | "
                f"{med(column(rows, 'server_cpu_us')):.1f} µs | {cell} |"
            )
        if nk and ws and test in nk.results and test in ws.results:
            r = ratios[f"{test} {nk.name}"]
            text = f"{TEST_TITLES[test]}: netkit >= {goal:g}x websockets: {r:.2f}x"
            floor = ratios.get(f"{test} {Pairing(FLOOR, FLOOR).name}")
            if floor is not None:
                text += f" (raw TCP floor: {floor:.2f}x"
                text += ", so the target is out of reach here)" if floor < goal else ")"
            targets.append((text, r >= goal))
        elif args.only in ("all", test):
            targets.append(
                (f"{TEST_TITLES[test]}: netkit >= {goal:g}x websockets: not measured", None)
            )
    if memory:
        ref_mem = memory.get(WEBSOCKETS)
        for kind, rows in memory.items():
            per = med(column(rows, "per_connection_kib"))
            if kind == NETKIT and ref_mem:
                r = per / med(column(ref_mem, "per_connection_kib"))
                ratios["memory netkit/websockets"] = r
                cell = f"{r:.2f}x websockets"
            else:
                cell = "reference"
            lines.append(
                f"| d. server RSS at {args.connections:,} idle connections | {kind} client → "
                f"{kind} server | {len(rows)} | {per:.1f} KiB / connection "
                f"(+{med(column(rows, 'after_kib')) - med(column(rows, 'before_kib')):,.0f} KiB "
                f"over {med(column(rows, 'before_kib')):,.0f}) | | | {cell} |"
            )
        if "memory netkit/websockets" in ratios:
            r = ratios["memory netkit/websockets"]
            targets.append(
                (f"d. memory per idle connection: netkit <= 0.75x websockets: {r:.2f}x", r <= 0.75)
            )
    elif args.only in ("all", "memory"):
        targets.append(("d. memory per idle connection: not measured", None))
    lines += [
        "",
        f"a/b: one connection per run, closed loop (send, wait for the echo, repeat) for "
        f"{args.seconds:g} s after a {WARMUP_S:g} s warm-up; b counts payload bytes echoed "
        f"(MB/s = 10^6 bytes/s; each byte crosses loopback twice). c: {args.connections:,} "
        f"connections from one client process, each in its own closed loop, {args.seconds:g} s "
        f"after a {CONCURRENT_WARMUP_S:g} s warm-up. Floor (a only): {FLOOR_FRAME} bytes echoed "
        "over raw TCP by blocking sockets in a closed loop, the same placement. Runs interleaved, "
        "order rotated; ratios "
        "are ratios of medians. CPU / msg = user+sys time of that process over the measured "
        "window, per message (from /proc for the server, `time.process_time()` in the client). "
        "d: a fresh server per run, RSS (VmRSS) settled after one warm-up connection, then again "
        f"with {args.connections:,} connections open and idle after their handshake. The "
        f"websockets server and client run on the {args.websockets_loop} loop, netkit's on "
        "uvloop. netkit ws-server output: "
        + (
            "--json (one JSON line per message, to a file). "
            if args.netkit_log == "json"
            else "text (no --json, no per-message lines). "
        )
        + "CPU placement: "
        + ("not pinned." if args.pin == "none" else f"pinned ({args.pin}), a-c only."),
        "",
    ]
    shares = [r["same_cpu"] for p in pairings for r in p.results.get("pingpong", [])]
    if args.pin == "none" and any(x >= 0.5 for x in shares) and any(x < 0.5 for x in shares):
        lines += [
            "**Placement was mixed** in a: in some runs client and server shared a CPU, in "
            "others not, and on a small VM that alone changes the rate several-fold, so the "
            "unpinned ping-pong ratios depend on where the scheduler put each run. Compare with "
            "`--only pingpong --pin same` (CPU cost) and `--pin split` (cross-CPU wake-ups).",
            "",
        ]
    for text, ok in targets:
        lines.append(target_line(text, ok))
    cpu_raw = None
    if cpu_rows:
        goal = (CPU_NAMES[NETKIT], CPU_GOAL)
        cpu_lines, cpu_raw = cpu_table(cpu_rows, CPU_NAMES[WEBSOCKETS], goal, args.cpu)
        # Only the CPU part ran: the header lines, then its table.
        lines = [*lines[:4], "", *cpu_lines] if args.only == "cpu" else [*lines, "", *cpu_lines]
    raw = {
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k in SETTINGS},
        "speed": {p.name: p.results for p in pairings},
        "memory": memory,
        "ratios": ratios,
        "targets": dict(targets),
        "cpu_per_message": cpu_raw,
    }
    return "\n".join(lines), raw


SETTINGS = (
    "quick",
    "only",
    "pin",
    "websockets_loop",
    "netkit_log",
    "runs",
    "memory_runs",
    "seconds",
    "connections",
    "cpu",
    "cpu_rounds",
    "cpu_seconds",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (~1 minute)")
    add_json_option(parser)
    parser.add_argument(
        "--only", choices=["all", *TESTS, "memory", "cpu"], default="all", help="which test to run"
    )
    add_placement_options(parser, "tests a-c")
    parser.add_argument(
        "--websockets-loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the websockets server and client (default: asyncio, its own default)",
    )
    parser.add_argument(
        "--netkit-log",
        choices=["json", "text"],
        default="text",
        help="netkit ws-server output: text (default: its human output, nothing per message, "
        "like the websockets server) or json (one JSON line per message, to measure its cost)",
    )
    parser.add_argument(
        "--no-cross", action="store_true", help="skip the two cross pairings (information only)"
    )
    # Internal modes: this file is also each helper process.
    parser.add_argument("--serve-websockets", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-tcp-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=[NETKIT, WEBSOCKETS, FLOOR], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tests", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_websockets:
        return websockets_server(args.loop)
    if args.serve_tcp_floor:
        return tcp_floor_server()
    if args.client:
        tests = args.tests.split(",")
        return client(args.client, args.url, tests, args.seconds, args.connections, args.loop)

    args.runs, args.seconds = (2, 1.0) if args.quick else (5, 2.0)
    args.memory_runs = 2 if args.quick else 3
    args.cpu_rounds, args.cpu_seconds = (3, 0.5) if args.quick else (7, 1.0)
    kinds = [NETKIT, WEBSOCKETS]
    if not netkit_server_available():
        log(
            "netkit ws-server is not available (`netkit ws-server --help` fails): its rows are skipped"
        )
        kinds = [WEBSOCKETS]
    pairings = [Pairing(c, s) for c in (NETKIT, WEBSOCKETS) for s in kinds]
    pairings.sort(key=lambda p: (not p.main, p.client != NETKIT))
    if args.no_cross:
        pairings = [p for p in pairings if p.main]
    tests = [t for t in TESTS if args.only in ("all", t)]
    if "pingpong" in tests:
        pairings.append(Pairing(FLOOR, FLOOR))
    memory: dict[str, list[dict[str, float]]] = {}
    if tests:
        log(f"a-c: {args.runs} runs x {len(tests)} tests x {args.seconds:g} s per pairing")
        servers: dict[str, Server] = {}
        try:
            for kind in dict.fromkeys(p.server for p in pairings):
                servers[kind] = start_server(kind, args)
            bench_speed(pairings, servers, tests, args)
        finally:
            for server in servers.values():
                server.stop()
    if args.only in ("all", "memory"):
        log(f"memory: {args.memory_runs} runs x {args.connections:,} idle connections per server")
        memory = bench_memory(kinds, args)
    cpu_rows: list[CpuRow] = []
    if args.only in ("all", "cpu"):
        log(f"CPU per message: {args.cpu_rounds} rounds x {args.cpu_seconds:g} s, CPU {args.cpu}")
        cpu_rows = bench_cpu(kinds, args)
    table, raw = report(args, pairings, memory, cpu_rows)
    print(table)
    write_json(raw, args.json)


if __name__ == "__main__":
    main()

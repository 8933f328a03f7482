"""One ``netkit bench`` worker: :class:`Worker` runs one :class:`~netkit.core.bench.plan.LoadPlan`'s
connection slots on the running loop with the driver for the target's transport, and
:func:`run_worker` returns its :class:`~netkit.core.bench.result.BenchResult`."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netkit.core.addresses import (
    HTTPURL,
    WSURL,
    Endpoint,
    TCPEndpoint,
    UDPEndpoint,
    UnixEndpoint,
    is_http_url,
    parse_endpoint,
    parse_http_url,
)
from netkit.core.bench.bitrate import DatagramTally
from netkit.core.bench.histogram import LATE_TOLERANCE_NS
from netkit.core.bench.http import HTTPLoad
from netkit.core.bench.plan import BITRATE, SCENARIO, SIZE, STREAM_CHUNK, LoadPlan, Scenario
from netkit.core.bench.result import BenchResult
from netkit.core.probe import HEADER_SIZE
from netkit.core.streamtest import Direction
from netkit.core.ws.client import ClientHandshake
from netkit.errors import (
    CheckFailed,
    ConfigError,
    NetkitError,
    OperationTimeout,
)
from netkit.net.bench.bitrate import DatagramBitrate
from netkit.net.bench.datagram import DatagramEcho
from netkit.net.bench.engine import BulkSender, Payload, RequestEngine, Run, Slot, transport_name
from netkit.net.bench.http import HTTPRequestBytes, HTTPRequests
from netkit.net.bench.ramp import ConnectionRamp
from netkit.net.bench.stream import StreamBulk, StreamEcho, StreamTest
from netkit.net.bench.websocket import WSBulk, WSEcho, _ws_timeouts
from netkit.net.connect import open_stream
from netkit.net.datagram import MAX_UDP_PAYLOAD
from netkit.net.echo import EchoClientConnection, echo_once
from netkit.net.protocols import StreamProtocol
from netkit.net.runtime import ShutdownSignal, run_until_signal
from netkit.net.sockets import (
    SocketOptions,
    create_udp_socket,
)
from netkit.net.tls import ClientTLS, client_context
from netkit.net.udp_sink import receiver_options
from netkit.net.ws_client import WebSocketClientConnection, connect_ws

perf_ns = time.perf_counter_ns

# --- the worker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and how to connect.

    Attributes:
        endpoint: the parsed target.
        ssl_context: TLS for ``tcp``/``unix`` targets with TLS options, and for ``wss`` and
            ``https``.
        server_hostname: SNI and verification name override.
        http: for HTTP targets, the request and the checks of its answers.
    """

    endpoint: Endpoint | HTTPURL
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    http: HTTPLoad | None = None

    @property
    def name(self) -> str:
        """The transport name, as reported."""
        return transport_name(self.endpoint, self.ssl_context is not None)


def make_target(
    text: str, tls: ClientTLS, scenario: Scenario, http: HTTPLoad | None = None
) -> Target:
    """The target ``text`` names (see :func:`~netkit.core.addresses.parse_endpoint` and
    :func:`~netkit.core.addresses.parse_http_url`), with TLS when ``tls`` is enabled or the
    URL is ``wss://`` or ``https://``; ``netkit bench`` and ``netkit.bench``.

    Args:
        http: the request and checks of an HTTP target (default: GET, 2xx expected).

    Raises:
        EndpointError: ``text`` does not parse.
        ConfigError: TLS for a UDP target, a scenario other than echo over UDP or HTTP,
            HTTP settings for another target, unusable TLS files.
    """
    if is_http_url(text):
        url = parse_http_url(text)
        if scenario is not Scenario.ECHO:
            raise ConfigError((SCENARIO, f" {scenario}: HTTP targets support echo (requests) only"))
        ctx = client_context(tls) if (tls.enabled or url.secure) else None
        return Target(url, ctx, tls.server_hostname, http or HTTPLoad())
    if http is not None:
        raise ConfigError("HTTP request settings need an http://, https:// or http+unix:// target")
    endpoint = parse_endpoint(text)
    secure = isinstance(endpoint, WSURL) and endpoint.secure
    if tls.enabled and not isinstance(endpoint, TCPEndpoint | UnixEndpoint | WSURL):
        raise ConfigError("TLS settings need a TCP, Unix or WebSocket target")
    _check_udp(endpoint, scenario)
    ctx = client_context(tls) if (tls.enabled or secure) else None
    return Target(endpoint, ctx, tls.server_hostname)


# What a UDP target runs: echo round trips, or a bitrate run (which only UDP runs).
UDP_SCENARIOS = (Scenario.ECHO, Scenario.BITRATE)


def _check_udp(endpoint: Endpoint | HTTPURL, scenario: Scenario) -> None:
    """Refuse a scenario that the target's transport does not run."""
    udp = isinstance(endpoint, UDPEndpoint)
    if scenario is Scenario.BITRATE and not udp:
        raise ConfigError((BITRATE, " needs a udp:// target (TCP streams measure their own rate)"))
    if udp and scenario not in UDP_SCENARIOS:
        raise ConfigError((SCENARIO, f" {scenario}: UDP targets support echo and --bitrate only"))


def reported_scenario(plan: LoadPlan, target: Target) -> Scenario:
    """The scenario's name in reports: an HTTP target's echo scenario is ``request``."""
    if isinstance(target.endpoint, HTTPURL) and plan.scenario is Scenario.ECHO:
        return Scenario.REQUEST
    return plan.scenario


# Scenarios whose results say which way the test ran: a stream (iperf3's -R, --bidir), and a
# UDP bitrate test (-R: the sink sends). Results of different directions never merge.
_DIRECTED = (Scenario.STREAM, Scenario.BITRATE)


def new_result(plan: LoadPlan, target: Target, workers: int = 1) -> BenchResult:
    """An empty result for ``plan``."""
    share = plan.connections / plan.total_connections
    return BenchResult(
        scenario=reported_scenario(plan, target),
        target=str(target.endpoint),
        transport=target.name,
        connections=plan.connections,
        workers=workers,
        pipeline=plan.pipeline,
        size=plan.size,
        rate=plan.rate * share if plan.rate else None,
        datagrams=DatagramTally(plan.bitrate * share) if plan.bitrate is not None else None,
        direction=plan.direction if plan.scenario in _DIRECTED else None,
    )


def stream_test(plan: LoadPlan, target: Target) -> bool:
    """True when ``plan`` runs the stream test protocol (:mod:`netkit.core.streamtest`):
    a stream over TCP or a Unix socket, with or without TLS. (TLS cannot half-close in
    asyncio: there the server's counts never come, and its figures show as not reported.)
    A WebSocket stream writes messages, forward only.

    Raises:
        ConfigError: reverse or bidir over a transport that cannot carry them.
    """
    if plan.scenario is not Scenario.STREAM:
        return False
    byte_stream = isinstance(target.endpoint, TCPEndpoint | UnixEndpoint)
    if plan.direction is not Direction.FORWARD and not byte_stream:
        raise ConfigError(
            f"--{plan.direction}: a {plan.direction} stream needs a TCP or Unix target"
            f" (not {target.name}) served by 'netkit tcp-echo serve --mode stream'"
        )
    return byte_stream


class Worker:
    """Runs one plan on the running loop (see :func:`run_worker`)."""

    def __init__(self, plan: LoadPlan, target: Target) -> None:
        _check_udp(target.endpoint, plan.scenario)
        if isinstance(target.endpoint, UDPEndpoint):
            if plan.size < HEADER_SIZE:
                raise ConfigError(
                    (
                        SIZE,
                        f": UDP requests carry a {HEADER_SIZE}-byte header; give at least {HEADER_SIZE}",
                    )
                )
            if plan.size > MAX_UDP_PAYLOAD:
                raise ConfigError((SIZE, f": a UDP datagram holds at most {MAX_UDP_PAYLOAD} bytes"))
        self.plan = plan
        self.target = target
        self.result = new_result(plan, target)
        self.run = Run(plan, self.result)
        self.stream_test = stream_test(plan, target)
        if plan.scenario is Scenario.STREAM and not self.stream_test:
            self.result.direction = None
        byte_stream = not isinstance(target.endpoint, (WSURL, UDPEndpoint))
        if plan.scenario is Scenario.STREAM and byte_stream:
            self.payload = Payload(min(plan.size, STREAM_CHUNK), 1)
        elif plan.scenario is Scenario.ECHO and byte_stream and plan.size > STREAM_CHUNK:
            self.payload = Payload(plan.size, plan.pipeline, chunked=True)
        else:
            self.payload = Payload(plan.size, plan.pipeline)
        self.slots = [Slot(i, plan.pacing(i)) for i in range(plan.connections)]
        self.conns: set[Any] = set()
        self.ramp: ConnectionRamp | None = None
        if plan.stages is not None and plan.stages.kind == "connections":
            self.ramp = ConnectionRamp(plan, plan.stages, self.slots, self.run)
        self.http_request: HTTPRequestBytes | None = None
        if isinstance(target.endpoint, HTTPURL):
            if plan.scenario is not Scenario.ECHO:
                raise ConfigError((SCENARIO, f" {plan.scenario}: HTTP targets support echo only"))
            self.http_request = HTTPRequestBytes(
                target.http or HTTPLoad(), target.endpoint, plan.pipeline
            )
            self.result.size = len(self.http_request.data)  # what each request sends

    # --- connecting ------------------------------------------------------------------

    async def _open(self, factory: Callable[[], Any]) -> Any:
        ep, target = self.target.endpoint, self.target
        if isinstance(ep, HTTPURL):
            ep = ep.transport
        if isinstance(ep, WSURL):
            return await connect_ws(
                ep,
                factory,
                ssl_context=target.ssl_context,
                server_hostname=target.server_hostname,
                timeout=self.plan.timeout,
            )
        assert isinstance(ep, TCPEndpoint | UnixEndpoint)
        return await open_stream(
            ep,
            factory,
            ssl_context=target.ssl_context,
            server_hostname=target.server_hostname,
            timeout=self.plan.timeout,
            options=SocketOptions(nodelay=True),
        )

    def _factory(self, slot: Slot) -> Callable[[], Any]:
        ep, run, payload = self.target.endpoint, self.run, self.payload
        bulk = self.plan.scenario is Scenario.STREAM
        if isinstance(ep, HTTPURL):
            assert self.http_request is not None
            request = self.http_request
            return lambda: HTTPRequests(run, slot, request)
        if isinstance(ep, WSURL):
            if bulk:
                return lambda: WSBulk(run, slot, payload, ep)
            return lambda: WSEcho(run, slot, payload, ep)
        if bulk and self.stream_test:
            direction = self.plan.direction
            return lambda: StreamTest(run, slot, payload, direction)
        if bulk:
            return lambda: StreamBulk(run, slot, payload)
        return lambda: StreamEcho(run, slot, payload)

    async def _slot_loop(self, slot: Slot) -> None:
        run = self.run
        backoff = 0.05
        while not run.stopping:
            if self.ramp is not None and not await self.ramp.until_wanted(slot):
                return
            try:
                if isinstance(self.target.endpoint, UDPEndpoint):
                    options = (
                        receiver_options()
                        if self.plan.direction is Direction.REVERSE
                        else SocketOptions()
                    )
                    sock, _ = create_udp_socket(self.target.endpoint, bind=False, options=options)
                    if self.plan.scenario is Scenario.BITRATE:
                        conn: Any = DatagramBitrate(
                            run,
                            slot,
                            sock,
                            self.plan.size,
                            reverse=self.plan.direction is Direction.REVERSE,
                        )
                        conn.begin()
                    else:
                        conn = DatagramEcho(run, slot, sock, self.plan.size)
                        conn.start_requests()
                else:
                    conn = await self._open(self._factory(slot))
            except NetkitError as exc:
                run.connect_failed(exc)
                if run.fatal is not None:
                    return
                await self._pause(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            if run.recording:
                run.result.connects += 1
            self.conns.add(conn)
            try:
                await conn.closed
            finally:
                self.conns.discard(conn)
            if isinstance(conn, StreamTest) and conn.refused:
                # Connected, but the server refused the stream test: wait as for a refused
                # connection, or the slot would reconnect in a busy loop.
                await self._pause(backoff)
                backoff = min(backoff * 2, 1.0)
            else:
                backoff = 0.05

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the run stops; returns True when it stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.run.halted.wait()
        return self.run.stopping

    # --- connect scenario ----------------------------------------------------------------

    async def _dial_once(self, seq: int) -> None:
        ep, plan = self.target.endpoint, self.plan
        data = self.payload.data
        async with asyncio.timeout(plan.timeout):
            if isinstance(ep, WSURL):
                url = ep
                ws = await self._open(
                    lambda: WebSocketClientConnection(
                        ClientHandshake.from_url(url),
                        timeouts=_ws_timeouts(plan),
                    )
                )
                if plan.exchange:
                    ws.send_message(data)
                    _, got = await ws.inbox.get()
                    if got != data:
                        raise CheckFailed(f"echo from {ws.peer} differs from what was sent")
                ws.start_close()
                await ws.closed
            else:
                conn = await self._open(EchoClientConnection)
                try:
                    if plan.exchange:
                        await echo_once(conn, seq, data, framed=False, timeout=plan.timeout)
                finally:
                    conn.close()
                await conn.closed
        if plan.exchange and self.run.recording:
            self.result.bytes_sent += len(data)
            self.result.bytes_received += len(data)

    async def _connect_loop(self, slot: Slot) -> None:
        run = self.run
        pacing = slot.pacing
        backoff = 0.0
        while not run.stopping:
            # After a failure, wait before the next attempt: a refusing server would
            # otherwise be hammered in a busy loop (the attempts would measure nothing new).
            if backoff and await self._pause(backoff):
                return
            if self.ramp is not None and not await self.ramp.until_wanted(slot):
                return
            if pacing is not None:
                intended = pacing.due_at(run.start_ns, slot.issued)
                wait = intended - perf_ns()
                if wait > 0:
                    if await self._pause(wait / 1e9):
                        return
                    # The loop's timer may fire up to 1 ms early (uvloop's clock has ms
                    # resolution): the attempt must not start before its intended time,
                    # which its latency is measured from.
                    while perf_ns() < intended:
                        await asyncio.sleep(0)
                elif -wait > LATE_TOLERANCE_NS and run.recording:
                    run.result.late += 1
                slot.issued += 1
            if not run.take(1):
                return
            start = intended if pacing is not None else perf_ns()
            run.outstanding += 1
            try:
                await self._dial_once(slot.issued)
            except (NetkitError, TimeoutError) as exc:
                run.outstanding -= 1
                if isinstance(exc, TimeoutError):
                    exc = OperationTimeout(f"connecting to {self.target.endpoint} timed out")
                run.attempt_failed(exc)
                if run.fatal is not None:
                    return
                backoff = min(max(backoff * 2, 0.05), 1.0)
                continue
            backoff = 0.0
            now = perf_ns()
            run.ever_connected = True
            run.outstanding -= 1
            run.last_done_ns = now
            if run.recording:
                run.latency.record(now - start)
                run.result.requests += 1
                if run.tally is not None:
                    run.tally.completed(now, start)
            if run.budget is not None and run.exhausted:
                run.changed.set()

    # --- the run ----------------------------------------------------------------------

    async def _watchdog(self) -> None:
        period = min(0.1, self.plan.timeout / 4)
        while not self.run.stopping:
            await asyncio.sleep(period)
            now = perf_ns()
            for conn in list(self.conns):
                if isinstance(conn, StreamProtocol) and isinstance(conn, RequestEngine):
                    if conn.timed_out(now):
                        conn.fail(
                            OperationTimeout(
                                f"no response from {conn.peer} within {self.plan.timeout:g}s"
                            )
                        )
                elif isinstance(conn, DatagramEcho):
                    conn.expire(now)

    async def _progress(self, report: Callable[[dict[str, Any]], None], every: float) -> None:
        while True:
            await asyncio.sleep(every)
            report(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """Counters so far, for a live view: requests, errors, bytes, running p99 (and HTTP
        answers by status class)."""
        r = self.result
        http = {"statuses": r.status_classes()} if r.statuses else {}
        return {
            **http,
            "phase": "measure" if self.run.recording else "warmup",
            "requests": r.requests,
            "errors": r.error_count,
            "bytes": r.bytes_sent,
            "late": r.late,
            "p99_ns": r.latency.percentile(99),
        }

    async def _wait_for(self, seconds: float | None, stop: asyncio.Event) -> None:
        """Wait ``seconds`` (forever when None), until the budget is used up, a fatal error
        happens, or ``stop`` is set."""
        run = self.run
        deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set() and run.fatal is None:
                if run.recording and run.budget is not None and run.exhausted:
                    return
                changed = asyncio.ensure_future(run.changed.wait())
                left = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if left is not None and left <= 0:
                    changed.cancel()
                    return
                await asyncio.wait(
                    {changed, stopper}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                run.changed.clear()
        finally:
            stopper.cancel()

    async def execute(
        self,
        stop: asyncio.Event,
        progress: Callable[[dict[str, Any]], None] | None = None,
        progress_every: float = 0.5,
    ) -> BenchResult:
        """Run the plan to its end (or until ``stop`` is set) and return the result.

        Raises:
            NetkitError: no connection could be made at all (the first connect error).
        """
        plan, run = self.plan, self.run
        loop_fn = self._connect_loop if plan.scenario is Scenario.CONNECT else self._slot_loop
        tasks = [asyncio.create_task(loop_fn(slot)) for slot in self.slots]
        helpers = []
        if plan.scenario is not Scenario.CONNECT:
            helpers.append(asyncio.create_task(self._watchdog()))
        if self.ramp is not None:
            helpers.append(asyncio.create_task(self.ramp.drive(lambda: self.conns)))
        if progress is not None:
            helpers.append(asyncio.create_task(self._progress(progress, progress_every)))
        try:
            if plan.warmup > 0:
                await self._wait_for(plan.warmup, stop)
                run.recording = True
            run.measure_start_ns = run.last_done_ns = perf_ns()
            run.result.started_at = time.time()  # wall clock: bench merge compares runs by it
            await self._wait_for(plan.duration, stop)
            end_ns = perf_ns()
            if run.fatal is not None:
                raise run.fatal
            await self._finish(tasks, end_ns)
        finally:
            run.halt()
            for task in tasks + helpers:
                task.cancel()
            await asyncio.gather(*tasks, *helpers, return_exceptions=True)
            for conn in list(self.conns):
                with contextlib.suppress(Exception):
                    conn.abort()
        return self.result

    async def _finish(self, tasks: list[asyncio.Task[None]], end_ns: int) -> None:
        run, plan = self.run, self.plan
        # Requests due before the end that no connection got to send. One due in the last
        # LATE_TOLERANCE_NS may just not have had its turn yet (the duration's own timer
        # can fire first): it is not missed, as it would not have been late.
        cutoff = end_ns - LATE_TOLERANCE_NS
        for slot in self.slots:
            if (
                slot.pacing is not None and plan.direction is not Direction.REVERSE
            ):  # --reverse: the sink paces
                run.result.missed += max(0, slot.pacing.due_by(run.start_ns, cutoff) - slot.issued)
                if run.tally is not None:
                    run.tally.schedule(slot.pacing, slot.issued, end_ns, cutoff)
        if run.tally is not None:
            run.tally.close(end_ns)
        # Stop sending, and give the requests in flight the timeout to come back.
        run.end_ns = end_ns
        run.halt()
        for conn in list(self.conns):
            if isinstance(conn, RequestEngine):
                conn.stop_timer()
            if isinstance(conn, BulkSender):
                conn.stop_bulk()
        drain_until = perf_ns() + run.timeout_ns
        if plan.scenario is Scenario.BITRATE:
            # Each stream asks its receiver what arrived (within the timeout, resending).
            senders = [c for c in self.conns if isinstance(c, DatagramBitrate)]
            await asyncio.gather(*(c.collect() for c in senders))
        elif plan.scenario is Scenario.ECHO:
            while run.outstanding > 0 and perf_ns() < drain_until:
                run.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await run.changed.wait()
        elif plan.scenario is Scenario.CONNECT:
            # Each attempt under way ends within its own timeout (and counts itself); the
            # slack covers the loop's timer granularity.
            await asyncio.wait(tasks, timeout=plan.timeout + 1.0)
        if run.outstanding > 0:
            # Never dropped: a hung server must fail the gate (issue 13 item 15).
            run.error(
                f"no response within {plan.timeout:g}s, before the end of the run",
                "timeout",
                run.outstanding,
                late=True,
            )
        run.settled = True
        if plan.scenario in (Scenario.STREAM, Scenario.BITRATE):
            last = end_ns
        elif plan.duration is not None:
            last = max(end_ns, run.last_done_ns)  # answers drained after the end count too
        else:
            last = run.last_done_ns
        run.result.duration_s = max(1e-9, (last - run.measure_start_ns) / 1e9)
        # Close politely; whatever does not close in time is aborted by the caller. A stream
        # test waits up to the timeout for the servers' counts (its receivers' last bytes).
        pending = []
        for conn in list(self.conns):
            with contextlib.suppress(Exception):
                conn.finish()
            pending.append(conn.closed)
        if pending:
            await asyncio.wait(pending, timeout=max(2.0, plan.timeout) if self.stream_test else 2.0)


async def run_worker(
    plan: LoadPlan,
    target: Target,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    handle_signals: bool = True,
) -> BenchResult:
    """Run ``plan`` against ``target`` on the running loop; SIGINT/SIGTERM end it early.

    Raises:
        NetkitError: no connection could be made at all.
    """
    worker = Worker(plan, target)
    signals = run_until_signal() if handle_signals else contextlib.nullcontext(ShutdownSignal())
    async with signals as shutdown:
        return await worker.execute(shutdown.requested, progress)

"""Load tests from Python: :func:`bench` runs one ``netkit bench`` scenario on the running
event loop and returns its :class:`~netkit.core.bench.result.BenchResult` (latency
percentiles from an HDR histogram, throughput, errors by kind); :func:`bench_sync` does the
same from synchronous code.

It is the command's engine (``netkit.net.bench``), driven in this process: one event loop,
no worker processes (``netkit bench --workers 1``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from netkit.core.bench.bitrate import DEFAULT_DATAGRAM, parse_bitrate
from netkit.core.bench.http import HTTPLoad, StatusCheck, parse_header
from netkit.core.bench.plan import CHOICES, SCENARIO, LoadPlan, Scenario
from netkit.core.bench.result import BenchResult
from netkit.core.bench.stages import StageKind, Stages, parse_stages
from netkit.core.bench.thresholds import enforce, parse_threshold
from netkit.errors import ConfigError, UsageError
from netkit.net import runtime
from netkit.net.bench.worker import make_target, run_worker
from netkit.net.tls import ClientTLS

DEFAULT_SIZE = {
    Scenario.ECHO: 64,
    Scenario.CONNECT: 64,
    Scenario.STREAM: 256 << 10,
    Scenario.BITRATE: DEFAULT_DATAGRAM,
}


async def bench(
    target: str,
    *,
    scenario: str = "echo",
    connections: int | None = None,
    duration: float | None = None,
    requests: int | None = None,
    size: int | None = None,
    pipeline: int = 1,
    rate: float | None = None,
    warmup: float = 0.0,
    timeout: float = 5.0,
    exchange: bool = False,
    stages: str | Stages | None = None,
    bitrate: float | str | None = None,
    direction: str = "forward",
    tls: ClientTLS | None = None,
    fail_if: Sequence[str] = (),
    check: bool = True,
    method: str | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None = None,
    body: bytes | str | None = None,
    expect_status: str | int | None = None,
    expect_body: bytes | str | None = None,
) -> BenchResult:
    """Run a bench scenario against ``target`` on the running loop and return its result.

    Args:
        target: ``HOST:PORT`` (TCP; TLS with ``tls``), ``unix:/path``, ``udp://HOST:PORT``,
            ``ws://HOST:PORT/path``, ``wss://...``, ``ws+unix:///path.sock:/path``,
            ``http://HOST:PORT/path``, ``https://...`` or ``http+unix:///path.sock:/path``.
        scenario: ``echo`` (request/response round trips; HTTP requests for an HTTP target,
            whose result is named ``request``), ``stream`` (bulk one-way writes) or
            ``connect`` (connections per second).
        connections: connections kept open (concurrent ones, for ``connect``); 1 by
            default (with connection ``stages``, the largest count).
        duration: seconds to measure; without it (and without ``requests``), 1 second.
        requests: stop after this many requests instead.
        size: bytes per request (per write, for ``stream``); 64 by default (256 KiB for
            ``stream``).
        pipeline: requests in flight per connection.
        rate: open loop: this many requests per second in all; latency then counts from
            each request's intended send time (no coordinated omission).
        warmup: seconds of load before measuring.
        timeout: seconds allowed to connect, and for each response.
        exchange: ``connect``: send one request and verify its echo before closing.
        stages: ramping stages, as ``netkit bench --stages`` takes them:
            ``"10s:100/s, 30s:1000/s, 10s:0/s"`` ramps the arrival rate (open loop, from
            0/s), ``"10s:50, 20s:100"`` the open connections (closed loop, from 0); each
            stage ramps linearly to its target over its duration. The run lasts the stages'
            total (no ``duration``, ``rate``, ``requests`` or ``warmup`` with them), and the
            result has per-stage figures (``result.stages``).
        bitrate: a UDP bitrate test (``udp://`` targets, as ``iperf3 -u -b``): bits/s in all
            (a number, or text such as ``"100M"``), in datagrams of ``size`` bytes (1460 by
            default) to a sink (``udp_echo_server(mode="sink")``); what it received is
            ``result.datagrams`` (lost, ``loss_pct``, duplicates, out of order,
            ``jitter_ms``). With ``direction="reverse"`` the sink sends the test and this
            side counts it (``iperf3 -u -R``).
        direction: ``stream`` over TCP or Unix, against ``echo_server(mode="stream")``:
            ``forward`` (we send), ``reverse`` (the server sends) or ``bidir``; the result's
            ``directions()`` has each direction's sender and receiver figures.
        tls: TLS for a TCP or Unix target, or the trust settings for ``wss://``
            (``ClientTLS(enabled=True, cacert=...)``).
        fail_if: thresholds as ``netkit bench --fail-if`` takes them (``"p99>5ms"``,
            ``"errors>0"``, ``"rps<1000"``, ``"status_5xx>0"``, per stage
            ``"p99[stage=2]>5ms"``): the run fails when one is crossed.
        check: raise :class:`CheckFailed` when the run failed: as on the command line, a run
            in which nothing succeeded or an echo came back different fails, with or without
            ``fail_if``. False returns every result, failed or not, to inspect.

    Returns:
        The :class:`BenchResult`: ``latency_ms()`` (min, mean, p50 ... p99.99, max),
        ``rps``, ``errors`` (count per kind), ``latency.hdr`` (the HDR histogram),
        ``as_dict()`` (what ``netkit bench --json`` prints).

    Raises:
        EndpointError, ConfigError: a bad target or setting.
        ConnectError: no connection could be made at all.
        CheckFailed: with ``check``, the run failed (the reasons are listed).
    """
    try:
        kind = Scenario(scenario)
        if kind not in CHOICES:
            raise ValueError(scenario)
    except ValueError:
        names = ", ".join(CHOICES)
        raise ConfigError((SCENARIO, f" {scenario!r}: choose one of {names}")) from None
    if bitrate is not None:
        if kind is not Scenario.ECHO:
            raise ConfigError(f"bitrate runs its own scenario: leave out scenario={scenario!r}")
        kind = Scenario.BITRATE
        bitrate = parse_bitrate(bitrate) if isinstance(bitrate, str) else float(bitrate)
    thresholds = [parse_threshold(text) for text in fail_if]
    ramp = parse_stages(stages) if isinstance(stages, str) else stages
    if ramp is not None:
        if duration is not None:
            raise ConfigError("give duration or stages, not both")
        duration = ramp.duration
        if connections is None and ramp.kind is StageKind.CONNECTIONS:
            connections = ramp.peak
    if connections is None:
        connections = 1
    plan = LoadPlan(
        scenario=kind,
        connections=connections,
        total_connections=connections,
        duration=1.0 if duration is None and requests is None else duration,
        requests=requests,
        size=DEFAULT_SIZE[kind] if size is None else size,
        pipeline=pipeline,
        rate=rate,
        warmup=warmup,
        timeout=timeout,
        exchange=exchange,
        stages=ramp,
        bitrate=bitrate,
        direction=direction,  # type: ignore[arg-type]  # LoadPlan checks the name
    )
    for t in thresholds:
        t.check_stages(len(ramp.stages) if ramp else 0)
    if plan.timeout <= 0:
        raise ConfigError("timeout must be more than 0")
    http = _http_load(method, headers, body, expect_status, expect_body)
    where = make_target(target, tls or ClientTLS(), plan.scenario, http)
    result = await run_worker(plan, where, handle_signals=False)
    if check:
        enforce(thresholds, result)
    return result


def _http_load(
    method: str | None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None,
    body: bytes | str | None,
    expect_status: str | int | None,
    expect_body: bytes | str | None,
) -> HTTPLoad | None:
    """The HTTP request and checks the keyword arguments give (None when none was given)."""
    if all(v is None for v in (method, headers, body, expect_status, expect_body)):
        return None
    pairs: list[tuple[str, str]] = []
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    for item in items:  # each checked as -H checks it
        pairs.append(parse_header(item if isinstance(item, str) else f"{item[0]}: {item[1]}"))
    return HTTPLoad(
        method=method or "GET",
        headers=tuple(pairs),
        body=body.encode() if isinstance(body, str) else body or b"",
        status=StatusCheck() if expect_status is None else StatusCheck.parse(str(expect_status)),
        expect_body=expect_body.encode() if isinstance(expect_body, str) else expect_body,
    )


def bench_sync(target: str, **settings: Any) -> BenchResult:
    """:func:`bench` for synchronous code: runs it on a new event loop (uvloop when
    installed) and returns the result. Takes the same keyword arguments.

    Raises:
        UsageError: called while an event loop runs in this thread (await :func:`bench`).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("bench_sync() inside a running event loop: await netkit.bench() instead")
    return runtime.run(lambda: bench(target, **settings))


__all__ = ["BenchResult", "bench", "bench_sync"]

"""``--metrics`` for ``lb`` and ``proxy``: the ``/stats`` snapshot read off running relays, and
the Prometheus text made from it with prometheus_client.

Nothing is counted here: at each scrape, :func:`relay_stats` reads the counters the relay
(:class:`~netkit.net.relay.RelayStats`, the live relays' records) and the upstream (each
backend's :class:`~netkit.core.balance.state.BackendState`) already keep, and
:class:`RelayCollector` (a prometheus_client custom collector) turns the snapshot into metric
families (:func:`netkit.core.metrics.families`), so the connection path pays nothing for it.
prometheus_client is imported with this module, which the commands import only when
``--metrics`` is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from netkit.core.http_api import Request, Response
from netkit.core.metrics import BUCKET_BOUNDS, families, proxy_stats, server_row
from netkit.net.relay import RelayServer
from netkit.net.upstreams import BalancedPool, FixedUpstream

Relays = Callable[[], Iterable[tuple[str, RelayServer]]]
"""The relays to report, each with its name (the ``proxy`` label), as they are now."""


def _live_bytes(server: RelayServer) -> dict[str, tuple[int, int]]:
    # Bytes the live relays have delivered so far, by upstream label (up, down).
    live: dict[str, tuple[int, int]] = {}
    for relay in server.connections.values():
        if relay is not None:
            record = relay.record
            up, down = live.get(record.upstream, (0, 0))
            live[record.upstream] = (up + record.up.delivered, down + record.down.delivered)
    return live


def relay_stats(name: str, server: RelayServer) -> dict[str, Any]:
    """One relay's ``/stats`` entry (:func:`netkit.core.metrics.proxy_stats`), now."""
    now = asyncio.get_running_loop().time()
    live = _live_bytes(server)
    t = server.stats
    frontend = {
        "current_sessions": len(server.connections),
        "max_sessions": t.peak,
        "sessions_total": t.accepted,
        "bytes_in_total": t.bytes_up + sum(up for up, _ in live.values()),
        "bytes_out_total": t.bytes_down + sum(down for _, down in live.values()),
        "denied_connections_total": t.denied,
        "rejected_connections_total": t.rejected,
        "upstream_failures_total": t.failed_upstream,
        "undelivered_bytes_total": t.undelivered,
    }
    upstream = server.upstream
    if isinstance(upstream, BalancedPool):
        layer7 = upstream.checker is not None and upstream.checker.probe.reads
        servers = [
            server_row(s, now, live=live.get(s.name, (0, 0)), layer7=layer7)
            for s in (*upstream.pool.states, *upstream.pool.retired)
        ]
        queue = upstream.queue_snapshot()
        return proxy_stats(name, frontend, servers, upstream.redispatches, queue)
    servers = []
    if isinstance(upstream, FixedUpstream):
        row = server_row(upstream.counts, now, live=live.get(upstream.label, (0, 0)))
        servers.append(row | {"backend": upstream.label})
    return proxy_stats(name, frontend, servers)


def snapshot(relays: Relays) -> dict[str, Any]:
    """The ``/stats`` JSON: ``{"proxies": [entry, ...]}``."""
    return {"proxies": [relay_stats(name, server) for name, server in relays()]}


class StatsCollector:
    """A prometheus_client collector over a ``/stats`` snapshot (made at scrape time)."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        """The metric families of the snapshot."""
        for family in families(self.stats["proxies"]):
            labels = list(family.labels)
            if family.kind == "histogram":
                histogram = HistogramMetricFamily(family.name, family.help, labels=labels)
                for values, (buckets, total) in family.samples:
                    histogram.add_metric(
                        list(values), list(zip(BUCKET_BOUNDS, buckets, strict=True)), total
                    )
                yield histogram
                continue
            cls = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
            metric = cls(family.name, family.help, labels=labels)
            for values, value in family.samples:
                metric.add_metric(list(values), value)
            yield metric


def prometheus_response(stats: dict[str, Any]) -> Response:
    """``GET /metrics``'s answer: the snapshot in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)  # one per scrape: it holds no state
    registry.register(StatsCollector(stats))
    return Response(200, generate_latest(registry), (("Content-Type", CONTENT_TYPE_LATEST),))


class MetricsRoutes:
    """``GET /metrics`` (Prometheus text) and ``GET /stats`` (JSON) over ``relays``."""

    def __init__(self, relays: Relays) -> None:
        self.relays = relays

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: the Prometheus text exposition format.

        The counters are read in the loop (a consistent snapshot, ~0.1 ms a backend); the
        text is written in a thread (~0.5 ms a backend with prometheus_client: 50 ms for 100
        backends), so relays are not held up while it is."""
        return await asyncio.to_thread(prometheus_response, snapshot(self.relays))

    async def stats(self, request: Request) -> Response:
        """``GET /stats``: the same figures as JSON."""
        return Response.json(snapshot(self.relays))

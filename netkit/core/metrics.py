"""What ``--metrics`` reports for ``lb`` and ``proxy``, as data: the ``/stats`` snapshot and the
Prometheus metric families made from it.

The names are HAProxy's own exporter's (``haproxy_frontend_sessions_total``,
``haproxy_server_bytes_in_total`` ...), labelled as HAProxy labels them (``proxy``, ``server``),
so that the dashboards and alert rules written for HAProxy read netkit unchanged; the few
figures HAProxy has no name for carry a ``netkit_`` prefix. As in HAProxy, ``bytes_in`` is what
clients sent (toward the servers) and ``bytes_out`` what they were sent, at every level.

A snapshot (:func:`proxy_stats`) is one JSON-ready dict per relay: its ``frontend`` (the
listener), ``backend`` (the pool, or ``proxy``'s one upstream) and ``servers`` (one row per
backend server). :func:`families` turns snapshots into :class:`Family` objects;
:mod:`netkit.net.metrics` hands them to prometheus_client. Nothing here reads a clock or a
socket: the caller gives the counters as they are at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from netkit.core.balance.state import CONNECT_TIME_BUCKETS, AdminState, BackendState

Kind = Literal["counter", "gauge", "histogram"]

SERVER_STATES = ("UP", "DOWN", "MAINT", "DRAIN")
"""The values of ``haproxy_server_status``'s ``state`` label (HAProxy's, NOLB aside)."""
CHECK_STATES = ("UNK", "L4OK", "L4CON", "L7OK", "L7RSP", "L7STS")
"""The values of ``haproxy_server_check_status``'s ``state`` label: not checked yet, a
connect-only check passed or failed, a send/expect check passed or failed, an HTTP check
failed on its status (HAProxy's codes)."""


@dataclass
class Family:
    """One metric family: its name, kind, help, and one sample per label set.

    A counter's or gauge's sample value is a number; a histogram's is its cumulative bucket
    counts (one per :data:`CONNECT_TIME_BUCKETS` bound, then ``+Inf``) and its sum.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], Any]] = field(default_factory=list)


# (name, kind, help, key in the snapshot)
_FRONTEND = (
    ("haproxy_frontend_current_sessions", "gauge", "Current client connections.", "current_sessions"),
    ("haproxy_frontend_max_sessions", "gauge", "Most client connections at once.", "max_sessions"),
    ("haproxy_frontend_sessions_total", "counter", "Client connections accepted.", "sessions_total"),
    ("haproxy_frontend_bytes_in_total", "counter", "Bytes received from clients.", "bytes_in_total"),
    ("haproxy_frontend_bytes_out_total", "counter", "Bytes sent to clients.", "bytes_out_total"),
    ("haproxy_frontend_denied_connections_total", "counter", "Clients an allow/deny list refused.", "denied_connections_total"),
    ("netkit_frontend_rejected_connections_total", "counter", "Clients refused at --max-connections.", "rejected_connections_total"),
    ("netkit_frontend_upstream_failures_total", "counter", "Clients no backend could take (reset).", "upstream_failures_total"),
    ("netkit_frontend_undelivered_bytes_total", "counter", "Bytes that could not be delivered.", "undelivered_bytes_total"),
)  # fmt: skip
_BACKEND = (
    ("haproxy_backend_current_sessions", "gauge", "Current connections to the servers.", "current_sessions"),
    ("haproxy_backend_sessions_total", "counter", "Connections made to the servers.", "sessions_total"),
    ("haproxy_backend_bytes_in_total", "counter", "Bytes sent to the servers.", "bytes_in_total"),
    ("haproxy_backend_bytes_out_total", "counter", "Bytes received from the servers.", "bytes_out_total"),
    ("haproxy_backend_connection_errors_total", "counter", "Failed connects to the servers.", "connection_errors_total"),
    ("haproxy_backend_redispatch_warnings_total", "counter", "Clients retried on another server after a failed connect.", "redispatch_warnings_total"),
    ("haproxy_backend_active_servers", "gauge", "Primary servers up and taking connections.", "active_servers"),
    ("haproxy_backend_backup_servers", "gauge", "Backup servers up and taking connections.", "backup_servers"),
    ("haproxy_backend_current_queue", "gauge", "Clients waiting for a free slot (every server full).", "current_queue"),
    ("haproxy_backend_max_queue", "gauge", "Most clients waiting at once.", "max_queue"),
    ("netkit_backend_queued_total", "counter", "Clients that waited in the queue.", "queued_total"),
    ("netkit_backend_queue_timeouts_total", "counter", "Clients closed after waiting the queue timeout.", "queue_timeouts_total"),
    ("netkit_backend_queue_refused_total", "counter", "Clients refused because the queue was full.", "queue_refused_total"),
)  # fmt: skip
QUEUE_KEYS = {
    "current": "current_queue",
    "max": "max_queue",
    "queued": "queued_total",
    "timed_out": "queue_timeouts_total",
    "refused": "queue_refused_total",
}
"""The queue's counts (:meth:`netkit.net.upstreams.BalancedPool.queue_snapshot`) as the
backend's keys."""
_SERVER = (
    ("haproxy_server_current_sessions", "gauge", "Current connections (connecting included).", "active"),
    ("haproxy_server_sessions_total", "counter", "Connections made.", "total"),
    ("haproxy_server_bytes_in_total", "counter", "Bytes sent to the server.", "bytes_up"),
    ("haproxy_server_bytes_out_total", "counter", "Bytes received from the server.", "bytes_down"),
    ("haproxy_server_connection_errors_total", "counter", "Failed connects.", "failed"),
    ("haproxy_server_current_queue", "gauge", "Clients waiting for a free slot.", "queue"),
    ("haproxy_server_weight", "gauge", "Effective weight (slow start included).", "effective_weight"),
    ("haproxy_server_check_failures_total", "counter", "Failed active checks.", "check_failures"),
    ("haproxy_server_check_duration_seconds", "gauge", "Duration of the last active check.", "check_seconds"),
    ("haproxy_server_check_up_down_total", "counter", "Up/down changes.", "changes"),
    ("haproxy_server_connect_time_average_seconds", "gauge", "Average connect time.", "connect_average_s"),
)  # fmt: skip


def server_row(
    state: BackendState, now: float, *, live: tuple[int, int] = (0, 0), layer7: bool = False
) -> dict[str, Any]:
    """A backend's ``/stats`` row: its :meth:`BackendState.as_dict`, bytes of live connections
    included (``live``: up, down), with its status, last check and connect-time histogram.

    Args:
        layer7: the checks send and expect (their status is L7OK/L7RSP, not L4OK/L4CON).
    """
    row = state.as_dict(now)
    row["bytes_up"] += live[0]
    row["bytes_down"] += live[1]
    times = state.connect_times
    ok = state.last_check_ok
    if ok is None:
        check = "UNK"
    elif state.check_status is not None:  # an HTTP check: judged by its status
        check = "L7OK" if ok else "L7STS"
    elif layer7:
        check = "L7OK" if ok else "L7RSP"
    else:
        check = "L4OK" if ok else "L4CON"
    status = "UP" if state.up else "DOWN"
    if state.admin is AdminState.MAINT:
        status = "MAINT"
    elif state.admin is AdminState.DRAIN or state.removed:
        status = "DRAIN"
    return row | {
        "status": status,
        "check_result": check,
        "check_seconds": (state.check_ms or 0.0) / 1000,
        "check_failures": state.check_failures,
        "changes": state.changes,
        "connect_average_s": times.sum / times.count if times.count else 0.0,
        "connect_buckets": list(times.buckets),
        "connect_sum_s": times.sum,
    }


def backend_totals(
    servers: Sequence[dict[str, Any]], redispatches: int, queue: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The backend's figures: its servers' added up, how many are up and ready, and its
    queue (``queue``: the pool's queue counts; zeros without one)."""

    def ready(role: str) -> int:
        return sum(s["role"] == role and s["status"] == "UP" for s in servers)

    return {
        "status": "UP" if ready("primary") or ready("backup") else "DOWN",
        "current_sessions": sum(s["active"] for s in servers),
        "sessions_total": sum(s["total"] for s in servers),
        "bytes_in_total": sum(s["bytes_up"] for s in servers),
        "bytes_out_total": sum(s["bytes_down"] for s in servers),
        "connection_errors_total": sum(s["failed"] for s in servers),
        "redispatch_warnings_total": redispatches,
        "active_servers": ready("primary"),
        "backup_servers": ready("backup"),
    } | {key: (queue or {}).get(count, 0) for count, key in QUEUE_KEYS.items()}


def proxy_stats(
    name: str,
    frontend: dict[str, Any],
    servers: Sequence[dict[str, Any]],
    redispatches: int = 0,
    queue: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One relay's ``/stats`` entry: ``{"name", "frontend", "backend", "servers"}``."""
    return {
        "name": name,
        "frontend": frontend,
        "backend": backend_totals(servers, redispatches, queue),
        "servers": list(servers),
    }


def _cumulative(buckets: Sequence[int], count: int) -> list[int]:
    total, out = 0, []
    for n in buckets:
        total += n
        out.append(total)
    return [*out, count]


def families(proxies: Iterable[dict[str, Any]]) -> Iterator[Family]:
    """The Prometheus families of the ``/stats`` entries ``proxies`` (see :func:`proxy_stats`)."""
    proxies = list(proxies)
    for table, part in ((_FRONTEND, "frontend"), (_BACKEND, "backend")):
        for name, kind, text, key in table:
            family = Family(name, kind, text, ("proxy",))  # type: ignore[arg-type]
            for p in proxies:
                family.samples.append(((p["name"],), p[part][key]))
            yield family
    status = Family(
        "haproxy_backend_status", "gauge", "1 for the backend's state.", ("proxy", "state")
    )
    for p in proxies:
        status.samples += [
            ((p["name"], s), int(p["backend"]["status"] == s)) for s in ("UP", "DOWN")
        ]
    yield status
    labels: tuple[str, ...] = ("proxy", "server")
    for name, kind, text, key in _SERVER:
        family = Family(name, kind, text, labels)  # type: ignore[arg-type]
        for p in proxies:
            family.samples += [
                ((p["name"], s["backend"]), s[key]) for s in p["servers"] if key in s
            ]
        if family.samples:
            yield family
    for name, key, states in (
        ("haproxy_server_status", "status", SERVER_STATES),
        ("haproxy_server_check_status", "check_result", CHECK_STATES),
    ):
        family = Family(
            name, "gauge", f"1 for the server's {key.replace('_', ' ')}.", (*labels, "state")
        )
        for p in proxies:
            for s in p["servers"]:
                family.samples += [((p["name"], s["backend"], v), int(s[key] == v)) for v in states]
        yield family
    connect = Family(
        "netkit_server_connect_time_seconds", "histogram", "Connect times to the server.", labels
    )
    for p in proxies:
        for s in p["servers"]:
            buckets = _cumulative(s["connect_buckets"], s["connects"])
            connect.samples.append(((p["name"], s["backend"]), (buckets, s["connect_sum_s"])))
    yield connect


BUCKET_BOUNDS = (*(repr(b) for b in CONNECT_TIME_BUCKETS), "+Inf")
"""The ``le`` labels of the connect-time histogram's buckets."""


# --- several worker processes (--workers N): their snapshots as one ----------------------

SERVER_COUNTERS = ("active", "total", "failed", "bytes_up", "bytes_down", "connects", "queue")
"""A server row's figures that workers add up; health, checks and weights are the first's
(every worker checks every backend itself)."""


def _add(into: dict[str, Any], row: dict[str, Any], keys: Iterable[str]) -> None:
    for key in keys:
        if key in row:
            into[key] = into.get(key, 0) + row[key]


def merge_server_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One backend's rows from every worker as one: :data:`SERVER_COUNTERS` and the
    connect-time histogram added up, the rest as the first worker has it."""
    merged = dict(rows[0])
    for row in rows[1:]:
        _add(merged, row, SERVER_COUNTERS)
        if "connect_buckets" in row:
            merged["connect_buckets"] = [
                a + b
                for a, b in zip(merged["connect_buckets"], row["connect_buckets"], strict=True)
            ]
            merged["connect_sum_s"] += row["connect_sum_s"]
    if "connect_sum_s" in merged:
        count = merged["connects"]
        merged["connect_average_s"] = merged["connect_sum_s"] / count if count else 0.0
    return merged


def merge_proxy_stats(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One relay's ``/stats`` entries from every worker as one: the frontend's figures added
    up (``max_sessions`` too: the sum of each worker's peak, an upper bound), servers merged by
    name (in the order first seen), the backend recomputed from them."""
    frontend: dict[str, Any] = {}
    for entry in entries:
        _add(frontend, entry["frontend"], entry["frontend"])
    servers: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        for row in entry["servers"]:
            servers.setdefault(row["backend"], []).append(row)
    redispatches = sum(e["backend"]["redispatch_warnings_total"] for e in entries)
    rows = [merge_server_rows(same) for same in servers.values()]
    # the queue: each worker has its own (max: the sum of each one's, an upper bound)
    queue = {n: sum(e["backend"].get(k, 0) for e in entries) for n, k in QUEUE_KEYS.items()}
    return proxy_stats(entries[0]["name"], frontend, rows, redispatches, queue)


def merge_stats(snapshots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``/stats`` JSON of every worker (``{"proxies": [...]}`` each) as one, relays
    matched by name."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for snapshot in snapshots:
        for entry in snapshot["proxies"]:
            by_name.setdefault(entry["name"], []).append(entry)
    return {"proxies": [merge_proxy_stats(entries) for entries in by_name.values()]}

"""The runtime operations on a pool, in memory: admin states, weights, add and remove, the
events and statuses they give; and the metric families made from a snapshot."""

from __future__ import annotations

import collections

import pytest

from netkit.core.balance.backends import parse_backends
from netkit.core.balance.control import BackendChange, PoolControl
from netkit.core.balance.pool import BackendPool
from netkit.core.balance.state import AdminState
from netkit.core.http_api import ApiError
from netkit.core.metrics import families, merge_stats, proxy_stats, server_row


def make(*texts: str, algorithm: str = "roundrobin") -> tuple[BackendPool, PoolControl]:
    pool = BackendPool(parse_backends(list(texts)), algorithm=algorithm)
    return pool, PoolControl(pool)


def picks(pool: BackendPool, n: int) -> collections.Counter[str]:
    return collections.Counter(state.name for state in (pool.choose() for _ in range(n)) if state)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "expected"),
        ([], "expected"),
        ({"state": "off"}, "state must be"),
        ({"enabled": "no"}, "true or false"),
        ({"state": "drain", "enabled": True}, "not both"),
        ({"weight": 0}, "1 to 256"),
        ({"weight": True}, "1 to 256"),
        ({"weight": 2.5}, "1 to 256"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_a_bad_change_is_a_400_naming_the_problem(body, words):
    with pytest.raises(ApiError) as caught:
        BackendChange.parse(body)
    assert caught.value.status == 400 and words in str(caught.value)


def test_change_parses_states_and_toxiproxys_enabled():
    assert BackendChange.parse({"state": "drain"}) == BackendChange(AdminState.DRAIN)
    assert BackendChange.parse({"enabled": False}) == BackendChange(AdminState.MAINT)
    assert BackendChange.parse({"enabled": True, "weight": 3}) == BackendChange(AdminState.READY, 3)


def test_drain_and_maint_take_no_new_connection_and_drained_comes_with_the_last():
    pool, control = make("127.0.0.1:1", "127.0.0.1:2")
    a = pool.states[0]
    a.connect_started()
    a.connect_succeeded(0.001)
    row, events = control.change("127.0.0.1:1", {"state": "drain"}, 0.0)
    assert row["admin"] == "drain" and [e for e, _ in events] == ["backend_state"]
    assert picks(pool, 4) == {"127.0.0.1:2": 4}
    assert pool.ended("127.0.0.1:1", 10, 20) is a, "its last connection ended: drained"
    _, events = control.change("127.0.0.1:1", {"enabled": False}, 0.0)
    assert [e for e, _ in events] == ["backend_state", "backend_drained"], "none open: at once"
    _, events = control.change("127.0.0.1:1", {"state": "ready"}, 0.0)
    assert picks(pool, 4) == {"127.0.0.1:1": 2, "127.0.0.1:2": 2}
    assert control.change("127.0.0.1:1", {"state": "ready"}, 0.0)[1] == [], "no change, no event"


def test_weight_changes_roundrobin_and_the_hash_ring():
    pool, control = make("127.0.0.1:1", "127.0.0.1:2")
    control.change("127.0.0.1:1", {"weight": 3}, 0.0)
    assert picks(pool, 8) == {"127.0.0.1:1": 6, "127.0.0.1:2": 2}
    hashed, control = make("127.0.0.1:1", "127.0.0.1:2", algorithm="source")
    keys = [f"10.0.0.{i}" for i in range(200)]

    def share() -> int:
        return sum(hashed.choose(k).name == "127.0.0.1:1" for k in keys)  # type: ignore[union-attr]

    before = share()
    control.change("127.0.0.1:1", {"weight": 8}, 0.0)
    assert share() > before, "more of the ring is the heavier backend's"


def test_add_and_remove_with_statuses():
    pool, control = make("127.0.0.1:1")
    row, events = control.add({"backend": "127.0.0.1:2,weight=2"}, 0.0)
    assert row["weight"] == 2 and events == [
        ("backend_added", {"backend": "127.0.0.1:2", "spec": "127.0.0.1:2,weight=2"})
    ]
    for body, status in (
        ({"backend": "127.0.0.1:2"}, 409),
        ({"backend": "no port"}, 400),
        ({"backend": "127.0.0.1:3", "x": 1}, 400),
    ):
        with pytest.raises(ApiError) as caught:
            control.add(body, 0.0)
        assert caught.value.status == status
    old = pool.states[0]
    old.connect_started()
    old.connect_succeeded(0.001)
    _, events = control.remove("127.0.0.1:1", 0.0)
    assert events == [("backend_removed", {"backend": "127.0.0.1:1", "active": 1})]
    assert picks(pool, 3) == {"127.0.0.1:2": 3}
    assert pool.state("127.0.0.1:1") is old, "still found while its connection runs"
    assert pool.ended("127.0.0.1:1", 1, 1) is old and pool.retired == []
    with pytest.raises(ApiError) as caught:
        control.remove("127.0.0.1:2", 0.0)
    assert caught.value.status == 409
    with pytest.raises(ApiError) as caught:
        control.remove("127.0.0.1:1", 0.0)
    assert caught.value.status == 404


def test_families_carry_haproxys_names_and_exact_values():
    pool, _ = make("127.0.0.1:1", "127.0.0.1:2,backup")
    a = pool.states[0]
    for seconds in (0.0002, 0.003, 9.0):
        a.connect_started()
        a.connect_succeeded(seconds)
        pool.ended(a.name, 100, 200)
    a.check_ended(False)
    rows = [server_row(s, 0.0, live=(5, 7)) for s in pool.states]
    stats = proxy_stats("lb", {"current_sessions": 0}, rows, redispatches=1)
    assert stats["backend"]["bytes_in_total"] == 3 * 100 + 2 * 5
    assert stats["backend"]["active_servers"] == 1 and stats["backend"]["backup_servers"] == 1
    frontend = dict.fromkeys(
        (
            "max_sessions", "sessions_total", "bytes_in_total", "bytes_out_total",
            "denied_connections_total", "rejected_connections_total",
            "upstream_failures_total", "undelivered_bytes_total",
        ),
        0,
    ) | {"current_sessions": 0}  # fmt: skip
    by_name = {f.name: f for f in families([stats | {"frontend": frontend}])}
    sessions = by_name["haproxy_server_sessions_total"]
    assert sessions.kind == "counter"
    assert sessions.samples == [(("lb", "127.0.0.1:1"), 3), (("lb", "127.0.0.1:2"), 0)]
    check = dict(by_name["haproxy_server_check_status"].samples)
    assert check[("lb", "127.0.0.1:1", "L4CON")] == 1 and check[("lb", "127.0.0.1:2", "UNK")] == 1
    (buckets, total), _ = (by_name["netkit_server_connect_time_seconds"].samples[0][1], None)
    assert buckets[0] == 1 and buckets[-2] == 2 and buckets[-1] == 3, "9 s is only in +Inf"
    assert total == pytest.approx(9.0032)
    assert "haproxy_server_current_queue" not in by_name, "no queue to report yet"


def test_workers_snapshots_merge_counters_and_keep_the_first_health():
    def worker(total: int, active: int, bucket: int, up: bool) -> dict:
        pool, _ = make("127.0.0.1:1")
        state = pool.states[0]
        for _ in range(total):
            state.connect_started()
            state.connect_succeeded(0.001 if bucket else 5.0)
        for _ in range(total - active):
            pool.ended(state.name, 10, 20)
        if not up:
            state.check_failed("refused", 0.0)
        front = {"current_sessions": active, "sessions_total": total}
        return {"proxies": [proxy_stats("lb", front, [server_row(state, 0.0)], 1)]}

    merged = merge_stats([worker(3, 1, 1, True), worker(2, 0, 0, False)])
    (entry,) = merged["proxies"]
    assert entry["frontend"] == {"current_sessions": 1, "sessions_total": 5}
    (row,) = entry["servers"]
    assert (row["total"], row["active"], row["bytes_up"]) == (5, 1, 40)
    assert row["status"] == "UP", "health as the first worker sees it"
    assert sum(row["connect_buckets"]) == 3 and row["connects"] == 5
    assert row["connect_average_s"] == pytest.approx((3 * 0.001 + 2 * 5.0) / 5)
    assert entry["backend"]["redispatch_warnings_total"] == 2


def test_check_status_follows_the_kind_of_check():
    pool, _ = make("127.0.0.1:1")
    state = pool.states[0]
    assert server_row(state, 0.0)["check_result"] == "UNK"
    state.check_ended(True)
    assert server_row(state, 0.0)["check_result"] == "L4OK"
    assert server_row(state, 0.0, layer7=True)["check_result"] == "L7OK"
    state.check_ended(False)
    assert server_row(state, 0.0, layer7=True)["check_result"] == "L7RSP"
    state.check_ms, state.check_status = 1.5, 500  # an HTTP check answered 500
    row = server_row(state, 0.0)
    assert (row["check_result"], row["check_status"], row["check_seconds"]) == (
        "L7STS",
        500,
        0.0015,
    )
    assert state.check_failures == 1

"""Tests for netkit.core.balance: backend parsing, the four policies, backups, maxconn,
exclusion, slow start, the rise/fall health machine, connect times and check probes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.balance.backends import Backend, parse_backend, parse_backends
from netkit.core.balance.health import CheckProbe, HealthState, HealthStatus, parse_escapes
from netkit.core.balance.policies import ALGORITHMS, make_policy
from netkit.core.balance.pool import BackendPool
from netkit.core.balance.state import BackendState, ConnectTimes
from netkit.errors import ConfigError, EndpointError


def pool(specs: Sequence[str], **options: object) -> BackendPool:
    return BackendPool(parse_backends(specs), **options)  # type: ignore[arg-type]


def ports(*weights: int) -> list[str]:
    """Backend specs 127.0.0.1:1, :2, ... with the given weights."""
    return [f"127.0.0.1:{i},weight={w}" for i, w in enumerate(weights, 1)]


def picks(p: BackendPool, count: int, *, key: str = "", now: float = 0.0) -> list[int]:
    """The index of each of ``count`` successive choices."""
    out = []
    for _ in range(count):
        chosen = p.choose(key, now)
        assert chosen is not None
        out.append(p.states.index(chosen))
    return out


def letters(indices: list[int]) -> str:
    return "".join("abcdefgh"[i] for i in indices)


KEYS = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(20000)]


# --- parsing -----------------------------------------------------------------------------


def test_parse_backend_examples_from_the_issue() -> None:
    a = parse_backend("127.0.0.1:8001,weight=3")
    assert a == Backend(TCPEndpoint("127.0.0.1", 8001), weight=3)
    b = parse_backend("unix:/run/b.sock,backup")
    assert b == Backend(UnixEndpoint("/run/b.sock"), backup=True)
    c = parse_backend("[::1]:8002,maxconn=100,weight=2")
    assert c == Backend(TCPEndpoint("::1", 8002), weight=2, maxconn=100)
    assert parse_backend(" 127.0.0.1:9 , WEIGHT = 4 ").weight == 4
    assert parse_backend("127.0.0.1:9").weight == 1


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:8001", "127.0.0.1:8001,weight=3", "unix:/run/b.sock,backup",
     "[::1]:8002,weight=2,maxconn=100", "unix:@abstract,weight=256,maxconn=1,backup"],
)  # fmt: skip
def test_str_parses_back_to_the_same_backend(text: str) -> None:
    backend = parse_backend(text)
    assert str(backend) == text
    assert parse_backend(str(backend)) == backend


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "127.0.0.1:8001,wieght=3",
            "unknown option 'wieght' (known: weight, maxconn, backup, tls, sni)",
        ),
        ("127.0.0.1:8001,weight=0", "weight 0 is out of range (1-256)"),
        ("127.0.0.1:8001,weight=257", "weight 257 is out of range (1-256)"),
        ("127.0.0.1:8001,weight=x", "weight='x' is not a whole number"),
        ("127.0.0.1:8001,weight=-1", "weight='-1' is not a whole number"),
        ("127.0.0.1:8001,weight", "weight needs a value (weight=N)"),
        ("127.0.0.1:8001,weight=", "weight needs a value (weight=N)"),
        ("127.0.0.1:8001,maxconn=0", "maxconn must be at least 1"),
        ("127.0.0.1:8001,weight=1,weight=2", "weight is given twice"),
        ("127.0.0.1:8001,backup=no", "backup takes no value"),
        ("127.0.0.1:8001,", "empty option (stray comma?)"),
    ],
)
def test_parse_backend_option_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_backend(text)
    assert message in str(info.value)
    assert text.strip() in str(info.value) or "backend 127.0.0.1:8001" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nohost,weight=2", "has no port"),
        ("udp://127.0.0.1:9", "expected HOST:PORT or unix:/path"),
        ("ws://127.0.0.1:9/", "expected HOST:PORT or unix:/path"),
        ("127.0.0.1:99999,backup", "out of range"),
        (",weight=2", "empty endpoint"),
    ],
)
def test_parse_backend_endpoint_errors(text: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        parse_backend(text)


def test_parse_backends_rejects_duplicates_only_backups_and_nothing() -> None:
    with pytest.raises(ConfigError, match=r"backend 127\.0\.0\.1:1 is given twice"):
        parse_backends(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1,weight=2"])
    with pytest.raises(ConfigError, match="every backend is a backup"):
        parse_backends(["127.0.0.1:1,backup", "unix:/b,backup"])
    with pytest.raises(ConfigError, match="no backends"):
        parse_backends([])


def test_pool_rejects_bad_settings() -> None:
    backends = parse_backends(["127.0.0.1:1"])
    with pytest.raises(ConfigError, match=r"unknown algorithm 'wrr' \(known: roundrobin, "):
        BackendPool(backends, algorithm="wrr")
    with pytest.raises(ConfigError, match="rise and fall must be at least 1"):
        BackendPool(backends, rise=0)
    with pytest.raises(ConfigError, match="rise and fall must be at least 1"):
        BackendPool(backends, fall=0)
    with pytest.raises(ConfigError, match="slow start must not be negative"):
        BackendPool(backends, slowstart=-1)
    with pytest.raises(ConfigError, match="on-error 'skip'"):
        BackendPool(backends, on_error="skip")
    with pytest.raises(ConfigError, match="no backends"):
        BackendPool([])


# --- roundrobin --------------------------------------------------------------------------


def test_smooth_weighted_round_robin_sequence_is_nginx_s() -> None:
    p = pool(ports(5, 1, 1))
    assert letters(picks(p, 21)) == "aabacaa" * 3


def test_round_robin_without_weights_cycles_in_order() -> None:
    assert letters(picks(pool(ports(1, 1, 1)), 9)) == "abcabcabc"


@given(st.lists(st.integers(1, 20), min_size=1, max_size=6))
def test_round_robin_gives_each_backend_exactly_its_weight_per_cycle(weights: list[int]) -> None:
    p = pool(ports(*weights))
    counts = Counter(picks(p, 3 * sum(weights)))
    assert [counts[i] for i in range(len(weights))] == [3 * w for w in weights]


def test_round_robin_skips_a_down_backend_and_keeps_the_others_ratio() -> None:
    p = pool(ports(3, 2, 1))
    p.states[1].health.mark_down("test")
    counts = Counter(picks(p, 400))
    assert counts == {0: 300, 2: 100}


# --- leastconn ---------------------------------------------------------------------------


def test_leastconn_picks_the_least_loaded() -> None:
    p = pool(ports(1, 1, 1), algorithm="leastconn")
    for index, active in enumerate((4, 1, 3)):
        for _ in range(active):
            p.states[index].connect_started()
    assert picks(p, 3) == [1, 1, 1]  # choosing alone does not add load
    p.states[1].connect_started()
    p.states[1].connect_started()
    p.states[1].connect_started()  # b: 4 active, c: 3
    assert picks(p, 1) == [2]


def test_leastconn_weighs_active_connections_by_weight() -> None:
    p = pool(ports(3, 1), algorithm="leastconn")
    a, b = p.states
    a.connect_started()
    a.connect_started()
    b.connect_started()
    assert p.choose() is a  # 2/3 < 1/1


def test_leastconn_breaks_ties_round_robin() -> None:
    p = pool(ports(1, 1, 1), algorithm="leastconn")
    assert letters(picks(p, 7)) == "abcabca"


def test_leastconn_with_load_fills_backends_in_proportion_to_weight() -> None:
    p = pool(ports(1, 2, 3), algorithm="leastconn")
    for _ in range(60):
        chosen = p.choose()
        assert chosen is not None
        chosen.connect_started()
    assert [s.active for s in p.states] == [10, 20, 30]


# --- random (power of two choices) -------------------------------------------------------


def test_random_is_repeatable_from_a_seed() -> None:
    first = picks(pool(ports(1, 1, 1, 1), algorithm="random", seed=7), 200)
    second = picks(pool(ports(1, 1, 1, 1), algorithm="random", seed=7), 200)
    other = picks(pool(ports(1, 1, 1, 1), algorithm="random", seed=8), 200)
    assert first == second
    assert first != other


def test_random_never_picks_the_more_loaded_of_its_two() -> None:
    p = pool(ports(1, 1, 1), algorithm="random", seed=1)
    for index, active in enumerate((0, 5, 10)):
        for _ in range(active):
            p.states[index].connect_started()
    counts = Counter(picks(p, 3000))
    # c is the more loaded of any pair it is drawn in; b loses to a, wins against c.
    assert 2 not in counts
    assert 800 < counts[1] < 1200  # pairs (b, c): one in three
    assert counts[0] + counts[1] == 3000


def test_random_with_two_backends_always_takes_the_lighter() -> None:
    p = pool(ports(1, 1), algorithm="random", seed=3)
    p.states[0].connect_started()
    assert set(picks(p, 200)) == {1}


def test_random_without_load_follows_the_weights() -> None:
    p = pool(ports(1, 3), algorithm="random", seed=11)
    counts = Counter(picks(p, 8000))
    assert 0.72 < counts[1] / 8000 < 0.78


def test_random_with_load_balances_active_connections() -> None:
    p = pool(ports(1, 1, 1, 1), algorithm="random", seed=5)
    for _ in range(400):
        chosen = p.choose()
        assert chosen is not None
        chosen.connect_started()
    actives = [s.active for s in p.states]
    # Two choices keep the spread tight (plain random would be about +-20 here).
    assert max(actives) - min(actives) <= 6, actives


# --- source (consistent hashing) ---------------------------------------------------------


def mapping(p: BackendPool, keys: Sequence[str] = KEYS) -> dict[str, str]:
    out = {}
    for key in keys:
        chosen = p.choose(key)
        assert chosen is not None
        out[key] = chosen.name
    return out


def test_source_maps_a_client_to_the_same_backend_every_time() -> None:
    p = pool(ports(1, 1, 1, 1), algorithm="source")
    assert {p.choose("192.0.2.7") for _ in range(50)} == {p.choose("192.0.2.7")}
    # ... across pools (a restart), since the ring depends only on the backends' names
    assert mapping(p) == mapping(pool(ports(1, 1, 1, 1), algorithm="source"))


def test_source_spreads_keys_by_weight() -> None:
    even = Counter(mapping(pool(ports(1, 1, 1, 1), algorithm="source")).values())
    assert all(0.22 < n / len(KEYS) < 0.28 for n in even.values()), even
    weighted = Counter(mapping(pool(ports(1, 3), algorithm="source")).values())
    assert 0.70 < weighted["127.0.0.1:2"] / len(KEYS) < 0.80, weighted


def test_source_removing_one_of_four_remaps_only_its_share() -> None:
    p = pool(ports(1, 1, 1, 1), algorithm="source")
    before = mapping(p)
    gone = p.states[2]
    gone.health.mark_down("test")
    after = mapping(p)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == gone.name for k in moved)  # only its keys moved ...
    assert len(moved) == sum(1 for v in before.values() if v == gone.name)  # ... all of them
    assert 0.20 < len(moved) / len(KEYS) < 0.30  # roughly a quarter
    assert gone.name not in after.values()
    # the moved keys spread over the three others, not all onto one
    spread = Counter(after[k] for k in moved)
    assert len(spread) == 3 and min(spread.values()) > len(moved) / 6, spread
    # leaving it off the command line gives exactly the same mapping
    three = pool([s for i, s in enumerate(ports(1, 1, 1, 1)) if i != 2], algorithm="source")
    assert mapping(three) == after
    # and when it comes back, its keys come home
    gone.health.passed()
    gone.health.passed()
    assert mapping(p) == before


def test_source_exclude_moves_only_that_client() -> None:
    p = pool(ports(1, 1, 1), algorithm="source")
    first = p.choose("192.0.2.1")
    assert first is not None
    retry = p.choose("192.0.2.1", exclude={first})
    assert retry is not None and retry is not first
    assert p.choose("192.0.2.1") is first  # nothing changed for the next connection


# --- what every policy respects ----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_down_backends_are_never_chosen(algorithm: str) -> None:
    p = pool(ports(1, 1, 1), algorithm=algorithm, seed=1)
    p.states[0].health.mark_down("test")
    p.states[2].health.mark_down("test")
    assert {p.choose(key) for key in KEYS[:300]} == {p.states[1]}
    p.states[1].health.mark_down("test")
    assert p.choose("10.0.0.1") is None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_backups_only_when_every_primary_is_down(algorithm: str) -> None:
    p = pool(
        ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:8,backup", "127.0.0.1:9,backup"],
        algorithm=algorithm,
        seed=2,
    )
    a, b, x, y = p.states
    assert {p.choose(key) for key in KEYS[:300]} == {a, b}
    a.health.mark_down("test")
    assert {p.choose(key) for key in KEYS[:300]} == {b}
    b.health.mark_down("test")
    assert {p.choose(key) for key in KEYS[:300]} == {x, y}  # all backups share the load
    x.health.mark_down("test")
    assert {p.choose(key) for key in KEYS[:300]} == {y}
    y.health.mark_down("test")
    assert p.choose("10.0.0.1") is None
    b.health.passed()
    b.health.passed()  # rise=2: b is back, the backups are idle again
    assert {p.choose(key) for key in KEYS[:300]} == {b}


def test_a_full_pool_says_maxconn_not_no_backend() -> None:
    p = pool(["127.0.0.1:1,maxconn=1", "127.0.0.1:2,maxconn=1"])
    a, b = p.states
    assert p.unavailable() == "no backend available"  # (not asked while one is free)
    for state in (a, b):
        state.connect_started()
    assert p.choose("10.0.0.1") is None
    assert "maxconn" in p.unavailable() and "no backend" not in p.unavailable()
    a.health.mark_down("test")  # down and full: the one still up is full, so still maxconn
    assert "maxconn" in p.unavailable()
    assert p.unavailable(exclude={b}) == "no backend available"  # b refused this client
    b.health.mark_down("test")
    assert p.unavailable() == "no backend available"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_maxconn_is_respected_and_full_primaries_overflow_to_backup(algorithm: str) -> None:
    p = pool(
        ["127.0.0.1:1,maxconn=2", "127.0.0.1:2,maxconn=3", "127.0.0.1:9,backup,maxconn=1"],
        algorithm=algorithm,
        seed=3,
    )
    a, b, backup = p.states
    chosen = []
    for _ in range(6):
        state = p.choose(KEYS[len(chosen)])
        if state is None:
            break
        state.connect_started()
        chosen.append(state)
    assert Counter(chosen) == {a: 2, b: 3, backup: 1}
    assert a.full and b.full and backup.full
    assert p.choose("10.0.0.1") is None
    b.connect_succeeded(0.001)
    b.connection_ended(10, 20)  # one slot free on b: it is chosen again
    assert {p.choose(key) for key in KEYS[:50]} == {b}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_exclude_skips_backends_that_already_failed(algorithm: str) -> None:
    p = pool([*ports(1, 1, 1), "127.0.0.1:9,backup"], algorithm=algorithm, seed=4)
    a, b, c, backup = p.states
    for key in KEYS[:100]:
        tried: set[BackendState] = set()
        for _ in range(4):
            state = p.choose(key, exclude=tried)
            assert state is not None and state not in tried
            tried.add(state)
        assert tried == {a, b, c, backup}  # every primary first, then the backup
        assert p.choose(key, exclude=tried) is None


def test_make_policy_works_on_any_tier() -> None:
    states = [BackendState(b) for b in parse_backends(ports(2, 1))]
    policy = make_policy("roundrobin", states)
    assert [states.index(policy.choose("", 0.0)) for _ in range(3)] == [0, 1, 0]  # type: ignore[arg-type]
    assert make_policy("leastconn", []).choose("", 0.0) is None


# --- slow start --------------------------------------------------------------------------


def test_slow_start_ramps_weight_linearly_after_coming_back_up() -> None:
    p = pool(ports(4, 4), slowstart=10.0, rise=1)
    a, b = p.states
    assert b.effective_weight(0.0) == 4.0  # up from the start: no ramp
    b.check_passed(50.0)
    b.check_failed("refused", 60.0)
    b.check_failed("refused", 61.0)
    assert b.check_failed("refused", 62.0) is not None  # down after fall=3
    event = b.check_passed(100.0)  # rise=1: up again at t=100
    assert event is not None and event.new is HealthStatus.UP
    assert b.up_since == 100.0
    assert b.effective_weight(100.0) == pytest.approx(0.04)  # the 1% floor
    assert b.effective_weight(102.5) == pytest.approx(1.0)
    assert b.effective_weight(105.0) == pytest.approx(2.0)
    assert b.effective_weight(110.0) == 4.0
    assert b.effective_weight(500.0) == 4.0
    assert a.effective_weight(105.0) == 4.0
    # during the ramp the backend gets its share of the ramped weight: 2 of 6 at t=105
    assert Counter(picks(p, 300, now=105.0)) == {0: 200, 1: 100}
    assert b.as_dict(105.0)["effective_weight"] == 2.0


def test_slow_start_ramps_leastconn_too() -> None:
    p = pool(ports(1, 1), algorithm="leastconn", slowstart=10.0, rise=1)
    a, b = p.states
    b.health.mark_down("test")
    b.check_passed(0.0)
    for _ in range(40):
        state = p.choose("", 1.0)  # b at 10% of its weight
        assert state is not None
        state.connect_started()
    assert (a.active, b.active) == (36, 4)


# --- health ------------------------------------------------------------------------------


def test_a_new_backend_is_up_but_its_first_failed_check_takes_it_down() -> None:
    state = BackendState(parse_backend("127.0.0.1:1"), rise=2, fall=3)
    assert state.up
    event = state.check_failed("connection refused by 127.0.0.1:1", 1.5)
    assert event is not None
    assert (event.old, event.new, event.source, event.at) == ("up", "down", "check", 1.5)
    assert event.reason == "first check failed: connection refused by 127.0.0.1:1"
    assert event.as_dict() == {
        "backend": "127.0.0.1:1",
        "old": "up",
        "new": "down",
        "reason": "first check failed: connection refused by 127.0.0.1:1",
        "source": "check",
    }
    assert (
        str(event) == "127.0.0.1:1 is down: first check failed: connection refused by 127.0.0.1:1"
    )
    assert state.last_check == "connection refused by 127.0.0.1:1"


def test_fall_consecutive_failures_go_down_and_a_pass_resets_the_count() -> None:
    state = BackendState(parse_backend("127.0.0.1:1"), rise=2, fall=3)
    assert state.check_passed(0.0) is None
    assert state.check_failed("x", 1.0) is None
    assert state.check_failed("x", 2.0) is None
    assert state.check_passed(3.0) is None  # two failures, then a pass: count starts over
    assert state.check_failed("x", 4.0) is None
    assert state.check_failed("x", 5.0) is None
    assert state.up
    event = state.check_failed("timed out connecting to 127.0.0.1:1", 6.0)
    assert event is not None and not state.up
    assert event.reason == "3 checks failed in a row, last: timed out connecting to 127.0.0.1:1"


def test_rise_consecutive_passes_come_back_up_and_a_failure_resets_the_count() -> None:
    state = BackendState(parse_backend("127.0.0.1:1"), rise=3, fall=1)
    state.check_passed(0.0)
    assert state.check_failed("x", 1.0) is not None
    assert state.check_passed(2.0) is None
    assert state.check_passed(3.0) is None
    assert state.check_failed("x", 4.0) is None  # already down: no event, count reset
    assert state.check_passed(5.0) is None
    assert state.check_passed(6.0) is None
    assert not state.up
    event = state.check_passed(7.0, "connected in 0.1 ms")
    assert event is not None and state.up
    assert (event.old, event.new, event.reason) == ("down", "up", "3 checks passed in a row")
    assert state.up_since == 7.0


def test_passive_failure_marks_down_at_once_by_default() -> None:
    state = BackendState(parse_backend("127.0.0.1:1"))
    state.check_passed(0.0)
    state.connect_started()
    state.connect_started()
    event = state.connect_failed("connection refused by 127.0.0.1:1", 3.0)
    assert event is not None
    assert (event.old, event.new, event.source) == ("up", "down", "traffic")
    assert event.reason == "connect failed: connection refused by 127.0.0.1:1"
    assert (state.active, state.failed, state.total) == (1, 1, 0)
    assert state.connect_failed("connection refused by 127.0.0.1:1", 3.1) is None  # already down
    assert (state.active, state.failed) == (0, 2)


def test_passive_failure_counts_as_one_failed_check_with_fail_check() -> None:
    state = BackendState(parse_backend("127.0.0.1:1"), fall=2, on_error="fail-check")
    state.check_passed(0.0)
    state.connect_started()
    assert state.connect_failed("refused", 1.0) is None
    state.connect_started()
    event = state.connect_failed("refused", 2.0)
    assert event is not None and event.source == "traffic" and not state.up


def test_passive_failure_is_only_counted_with_ignore() -> None:
    state = BackendState(parse_backend("127.0.0.1:1"), on_error="ignore")
    for _ in range(5):
        state.connect_started()
        assert state.connect_failed("refused", 1.0) is None
    assert state.up and state.failed == 5 and state.active == 0


def test_a_local_resource_error_is_not_a_backend_failure() -> None:
    # Out of descriptors here says nothing about the backend: a check that could not run
    # gives no verdict (even the provisional first one), a connect that could not start is
    # neither a failure nor a connection.
    state = BackendState(parse_backend("127.0.0.1:1"), fall=1)
    state.check_skipped("cannot connect to 127.0.0.1:1: Too many open files")
    assert state.up and state.health.provisional and state.health.failures == 0
    assert state.last_check == "check skipped: cannot connect to 127.0.0.1:1: Too many open files"
    state.connect_started()
    state.connect_abandoned()
    assert state.up and (state.active, state.failed, state.total) == (0, 0, 0)


def test_health_state_can_start_down() -> None:
    health = HealthState(rise=1, fall=1, up=False)
    assert not health.up
    assert health.failed("x") is None
    assert health.passed() == "1 check passed in a row"


# --- counters, connect times, snapshot ---------------------------------------------------


def test_connect_times_exact_percentiles_over_a_bounded_window() -> None:
    times = ConnectTimes(window=100)
    for ms in range(1, 101):
        times.add(ms / 1000)
    assert times.percentile(50) == pytest.approx(0.050)
    assert times.percentile(99) == pytest.approx(0.099)
    for _ in range(100):
        times.add(0.5)  # the window now holds only the recent, slow connects
    assert times.percentile(50) == 0.5
    assert times.count == 200
    assert times.as_dict() == {
        "connects": 200,
        "connect_p50_ms": 500.0,
        "connect_p99_ms": 500.0,
        "connect_min_ms": 1.0,
        "connect_max_ms": 500.0,
    }
    assert ConnectTimes().percentile(99) == 0.0


def test_snapshot_rows_carry_the_live_table() -> None:
    p = pool(["127.0.0.1:1,weight=2,maxconn=5", "unix:/tmp/b.sock,backup"])
    a, b = p.states
    a.connect_started()
    a.connect_succeeded(0.002)
    a.connect_started()
    a.connect_succeeded(0.004)
    a.connection_ended(100, 2000)
    b.check_failed("no socket at unix:/tmp/b.sock", 1.0)
    rows = p.snapshot(1.0)
    assert rows[0] == {
        "backend": "127.0.0.1:1",
        "role": "primary",
        "state": "up",
        "admin": "ready",
        "weight": 2,
        "effective_weight": 2.0,
        "maxconn": 5,
        "active": 1,
        "total": 2,
        "failed": 0,
        "bytes_up": 100,
        "bytes_down": 2000,
        "connects": 2,
        "connect_p50_ms": 2.0,
        "connect_p99_ms": 4.0,
        "connect_min_ms": 2.0,
        "connect_max_ms": 4.0,
        "last_check": "",
        "check_ms": None,
        "check_status": None,
    }
    assert rows[1]["role"] == "backup" and rows[1]["state"] == "down"
    assert p.state("unix:/tmp/b.sock") is b
    assert p.up_count == 1
    with pytest.raises(KeyError):
        p.state("127.0.0.1:2")


# --- check probes ------------------------------------------------------------------------


def test_parse_escapes() -> None:
    assert parse_escapes(r"PING\r\n") == b"PING\r\n"
    assert parse_escapes(r"\x00\x7f\xFF\t\0\\") == b"\x00\x7f\xff\t\x00\\"
    assert parse_escapes("héllo") == "héllo".encode()
    with pytest.raises(ConfigError, match=r"unknown escape '\\q'"):
        parse_escapes(r"a\qb")
    with pytest.raises(ConfigError, match="unknown escape"):
        parse_escapes("trailing\\")
    with pytest.raises(ConfigError, match="unknown escape"):
        parse_escapes(r"\x4")


def test_check_probe_parse_and_match() -> None:
    probe = CheckProbe.parse(r"PING\r\n", r"^\+PONG\r\n")
    assert probe.send == b"PING\r\n" and probe.reads
    assert probe.matches(memoryview(b"+PONG\r\nextra"))
    assert not probe.matches(b"+PON")
    assert not probe.matches(b"-ERR\r\n")
    assert probe.describe() == r"/^\+PONG\r\n/"
    plain = CheckProbe.parse()
    assert plain == CheckProbe() and not plain.reads and plain.describe() == "connect"
    banner = CheckProbe.parse(None, "SSH-2.0")
    assert banner.send == b"" and banner.matches(b"SSH-2.0-OpenSSH_9.6\r\n")
    with pytest.raises(ConfigError, match=r"^check_expect '\(' is not a regular expression"):
        CheckProbe.parse(None, "(")
    with pytest.raises(ConfigError, match="must not be empty"):
        CheckProbe.parse(None, "")

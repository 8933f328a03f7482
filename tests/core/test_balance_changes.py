"""Tests for the pool's changes while serving (add, remove by draining, weights, apply),
the backends file, and the queue's counts: netkit.core.balance.pool, backends, queue."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest

from netkit.core.balance.backends import parse_backend, parse_backends, parse_backends_text
from netkit.core.balance.pool import BackendPool
from netkit.core.balance.queue import QueueCounters
from netkit.errors import ConfigError


def pool(specs: Sequence[str], **options: object) -> BackendPool:
    return BackendPool(parse_backends(specs), **options)  # type: ignore[arg-type]


def picks(p: BackendPool, n: int, now: float = 0.0) -> Counter[str]:
    chosen = Counter[str]()
    for _ in range(n):
        state = p.choose("", now)
        assert state is not None
        chosen[state.name] += 1
    return chosen


@pytest.mark.parametrize("algorithm", ["roundrobin", "leastconn", "random", "source"])
def test_an_added_backend_is_chosen_and_a_removed_one_is_not(algorithm: str) -> None:
    p = pool(["127.0.0.1:1"], algorithm=algorithm, seed=1)
    p.add(parse_backend("127.0.0.1:2"), 0.0)
    assert {s.name for s in p.states} == {"127.0.0.1:1", "127.0.0.1:2"}
    if algorithm != "source":  # one key hashes to one backend
        assert set(picks(p, 20)) == {"127.0.0.1:1", "127.0.0.1:2"}
    p.remove("127.0.0.1:1")
    assert set(picks(p, 20)) == {"127.0.0.1:2"}


def test_a_removed_backend_finishes_its_connections_then_is_forgotten() -> None:
    p = pool(["127.0.0.1:1", "127.0.0.1:2"])
    a = p.state("127.0.0.1:1")
    a.connect_started()
    a.connect_succeeded(0.001)
    assert p.remove("127.0.0.1:1") is a and a.removed
    assert p.state("127.0.0.1:1") is a  # its connection can still end
    assert [r["backend"] for r in p.snapshot(0.0)] == ["127.0.0.1:2"]
    assert p.ended("127.0.0.1:1", 10, 20) is a
    with pytest.raises(KeyError):
        p.state("127.0.0.1:1")


def test_a_removed_backend_whose_connect_fails_is_forgotten_too() -> None:
    p = pool(["127.0.0.1:1", "127.0.0.1:2"])
    a = p.state("127.0.0.1:1")
    a.connect_started()
    p.remove(a.name)
    a.connect_failed("refused", 1.0)
    p.settle(a)
    assert p.retired == []


def test_a_backend_added_back_while_finishing_keeps_its_counters() -> None:
    p = pool(["127.0.0.1:1", "127.0.0.1:2"])
    a = p.state("127.0.0.1:1")
    a.connect_started()
    p.remove(a.name)
    back = p.add(parse_backend("127.0.0.1:1,weight=4"), 5.0)
    assert back is a and not a.removed and a.active == 1 and a.backend.weight == 4
    assert p.retired == []
    with pytest.raises(ConfigError, match="already in the pool"):
        p.add(parse_backend("127.0.0.1:1"), 5.0)


def test_a_new_backend_ramps_up_with_slowstart() -> None:
    p = pool(["127.0.0.1:1"], slowstart=10.0)
    new = p.add(parse_backend("127.0.0.1:2"), 100.0)
    assert new.effective_weight(100.0) == pytest.approx(0.01)
    assert new.effective_weight(105.0) == pytest.approx(0.5)
    assert new.effective_weight(110.0) == 1.0
    assert p.state("127.0.0.1:1").effective_weight(100.0) == 1.0
    plain = pool(["127.0.0.1:1"])
    assert plain.add(parse_backend("127.0.0.1:2"), 100.0).effective_weight(100.0) == 1.0


def test_configure_says_what_changed_and_keeps_a_primary() -> None:
    p = pool(["127.0.0.1:1", "127.0.0.1:2"])
    assert picks(p, 10) == Counter({"127.0.0.1:1": 5, "127.0.0.1:2": 5})
    assert p.configure(parse_backend("127.0.0.1:1,weight=4,maxconn=9")) == (
        "weight 1 -> 4, maxconn - -> 9"
    )
    assert picks(p, 10) == Counter({"127.0.0.1:1": 8, "127.0.0.1:2": 2})
    assert p.configure(parse_backend("127.0.0.1:1,weight=4,maxconn=9")) == ""
    p.configure(parse_backend("127.0.0.1:2,backup"))
    with pytest.raises(ConfigError, match="last primary"):
        p.configure(parse_backend("127.0.0.1:1,backup"))


def test_apply_adds_removes_and_changes_in_one_step() -> None:
    p = pool(["127.0.0.1:1", "127.0.0.1:2,weight=2", "127.0.0.1:3,maxconn=5"])
    busy = p.state("127.0.0.1:1")
    busy.connect_started()
    change = p.apply(
        parse_backends(["127.0.0.1:4", "127.0.0.1:3,maxconn=5", "127.0.0.1:2,weight=3,backup"]),
        1.0,
    )
    assert change.as_dict() == {
        "added": ["127.0.0.1:4"],
        "removed": ["127.0.0.1:1"],
        "changed": {"127.0.0.1:2": "weight 2 -> 3, backup false -> true"},
    }
    assert [s.name for s in p.states] == ["127.0.0.1:4", "127.0.0.1:3", "127.0.0.1:2"]
    assert p.retired == [busy] and busy.removed
    assert set(picks(p, 10)) == {"127.0.0.1:4", "127.0.0.1:3"}  # 2 is a backup now
    assert not p.apply(
        parse_backends(["127.0.0.1:4", "127.0.0.1:3,maxconn=5", "127.0.0.1:2,weight=3,backup"]), 2.0
    )


def test_room_and_all_full_follow_maxconn() -> None:
    p = pool(["127.0.0.1:1,maxconn=2", "127.0.0.1:2,maxconn=1"])
    assert p.room() == 3 and not p.all_full()
    for _ in range(3):
        state = p.choose("", 0.0)
        assert state is not None
        state.connect_started()
    assert p.choose("", 0.0) is None
    assert p.room() == 0 and p.all_full()
    p.add(parse_backend("127.0.0.1:3"), 0.0)
    assert p.room() == float("inf") and not p.all_full()


def test_the_backends_file_takes_comments_and_names_the_bad_line() -> None:
    text = "# the pool\n127.0.0.1:1,weight=2  # heavy\n\n   \nunix:/run/b.sock,backup\n"
    assert [str(b) for b in parse_backends_text(text)] == [
        "127.0.0.1:1,weight=2",
        "unix:/run/b.sock,backup",
    ]
    with pytest.raises(ConfigError, match=r"^pool\.txt line 3: .*wieght"):
        parse_backends_text("127.0.0.1:1\n\n127.0.0.1:2,wieght=3\n", "pool.txt")
    with pytest.raises(ConfigError, match=r"line 2: .*no port"):
        parse_backends_text("127.0.0.1:1\nlocalhost\n")
    with pytest.raises(ConfigError, match="no backends given"):
        parse_backends_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="every backend is a backup"):
        parse_backends_text("127.0.0.1:1,backup\n")


def test_queue_counters_admit_refuse_and_count() -> None:
    q = QueueCounters(limit=2, timeout=1.0)
    assert q.admit() and q.admit()
    assert not q.admit()
    assert q.admit(again=True)  # a woken client that lost its slot keeps its place
    q.left()
    q.left(timed_out=True)
    assert q.as_dict() == {
        "limit": 2, "timeout_s": 1.0, "current": 1, "max": 3,
        "queued": 2, "timed_out": 1, "refused": 1,
    }  # fmt: skip
    assert QueueCounters().enabled and not QueueCounters(limit=0).enabled
    with pytest.raises(ConfigError):
        QueueCounters(limit=-1)
    with pytest.raises(ConfigError):
        QueueCounters(timeout=0)

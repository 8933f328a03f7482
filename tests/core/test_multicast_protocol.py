"""Sans-I/O multicast: validation, per-source accounting, the ping protocol (two sessions in memory)."""

from __future__ import annotations

import pytest

from netkit.core.multicast.groups import (
    Group,
    check_interface_family,
    parse_broadcast,
    parse_group,
    parse_source,
    split_sources,
)
from netkit.core.multicast.ping import PING_HEADER_SIZE, PingMessage, PingSession, PingType
from netkit.core.multicast.traffic import (
    MAX_PAYLOAD,
    ReceiveLedger,
    SendPlan,
    SourceAccount,
    probe_sizes,
)
from netkit.core.probe import make_probe, parse_probe
from netkit.errors import ConfigError, EndpointError, UsageError


def test_groups_parse_for_both_families():
    assert parse_group("239.1.2.3:5000") == Group("239.1.2.3", 5000, 4)
    assert parse_group("[FF15::1]:0") == Group("ff15::1", 0, 6)
    assert str(parse_group("[ff15::1]:7")) == "[ff15::1]:7"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("10.0.0.1:5000", "not a multicast address"),
        ("[2001:db8::1]:5000", "not a multicast address"),
        ("example.test:5000", "not an IP address"),
        ("239.1.2.3", "no port"),
    ],
)
def test_bad_groups_are_usage_errors(text, needle):
    with pytest.raises(EndpointError, match=needle) as info:
        parse_group(text)
    assert isinstance(info.value, UsageError)  # exit 2


def test_broadcast_targets_are_ipv4_and_not_multicast():
    assert parse_broadcast("255.255.255.255:9") == Group("255.255.255.255", 9, 4)
    with pytest.raises(EndpointError, match="IPv6 has no broadcast"):
        parse_broadcast("[ff02::1]:9")
    with pytest.raises(EndpointError, match="is multicast"):
        parse_broadcast("239.1.1.1:9")


def test_sources_must_match_the_group_family():
    v4, v6 = parse_group("232.1.1.1:1"), parse_group("[ff3e::1]:1")
    assert parse_source("127.0.0.1", v4) == "127.0.0.1"
    with pytest.raises(ConfigError, match=r"is IPv6 but group 232.1.1.1:1 is IPv4"):
        parse_source("::1", v4)
    with pytest.raises(ConfigError, match="not a unicast"):
        parse_source("239.0.0.1", v4)
    assert split_sources(["127.0.0.1", "::1"], [v4, v6]) == {v4: ["127.0.0.1"], v6: ["::1"]}
    assert split_sources([], [v4]) == {v4: []}
    with pytest.raises(ConfigError, match=r"is IPv4 but group .ff3e::1.:1 is IPv6"):
        split_sources(["127.0.0.1"], [v4, v6])
    with pytest.raises(ConfigError, match="not a unicast"):
        split_sources(["nonsense"], [v4])


def test_interface_given_as_address_must_match_the_family():
    v4 = parse_group("239.1.1.1:1")
    check_interface_family(None, v4)
    check_interface_family("127.0.0.1", v4)
    with pytest.raises(ConfigError, match=r"is an IPv6 address but group 239.1.1.1:1 is IPv4"):
        check_interface_family("::1", v4)


def test_source_accounting_counts_a_gap_a_duplicate_and_reordering():
    account = SourceAccount("127.0.0.1:1", "239.1.1.1:2")
    kinds = []
    for seq in (5, 6, 8, 8, 10):  # joined late at 5; 7 and 9 missing; 8 twice
        kinds.append(account.add(64, parse_probe(make_probe(seq, 1_000, 64)), 3_000).kind)
    assert kinds == ["ok", "ok", "ok", "duplicate", "ok"]
    assert (account.lost, account.tracker.duplicates, account.tracker.reordered) == (2, 1, 0)
    late = account.add(64, parse_probe(make_probe(7, 1_000, 64)), 3_000)
    assert late.kind == "reordered" and late.delay_s == pytest.approx(2e-6)
    summary = account.as_dict()
    assert summary["lost"] == 1 and summary["probes"] == 5 and summary["datagrams"] == 6
    assert summary["loss_percent"] == pytest.approx(100 / 6, abs=0.001)
    assert (summary["first_seq"], summary["last_seq"]) == (5, 10)
    assert summary["delay"]["count"] == 5  # the duplicate's delay is not a sample


def test_other_datagrams_and_skewed_clocks():
    ledger = ReceiveLedger()
    plain = ledger.add("a:1", "g", 5, None, 0)
    assert (plain.kind, plain.seq, plain.delay_s) == ("data", None, None)
    probe = parse_probe(make_probe(0, 0, 24))
    skewed = ledger.add("b:1", "g", 24, probe, 2 * 3600 * 10**9)
    assert skewed.seq == 0 and skewed.delay_s is None
    assert [s["source"] for s in ledger.as_list()] == ["a:1", "b:1"]
    assert ledger.total == 2 and ledger.as_list()[0]["other"] == 1


def test_ping_message_bytes():
    message = PingMessage(PingType.MULTICAST_REPLY, 0x0102030405060708, 9, 10, 11)
    wire = message.serialize(48)
    assert wire == (
        b"NKMP\x01\x02\x00\x00"
        + bytes.fromhex("0102030405060708")
        + (9).to_bytes(8, "big")
        + (10).to_bytes(8, "big")
        + (11).to_bytes(8, "big")
        + bytes(8)
    )
    assert PingMessage.parse(wire) == message
    assert PingMessage.parse(wire[:PING_HEADER_SIZE]) == message
    assert PingMessage.parse(wire[: PING_HEADER_SIZE - 1]) is None
    assert PingMessage.parse(b"XKMP" + wire[4:]) is None
    assert PingMessage.parse(wire[:4] + b"\x02" + wire[5:]) is None  # version
    assert PingMessage.parse(wire[:5] + b"\x09" + wire[6:]) is None  # type


def _deliver(actions, to_group_sessions, sender_session, address, now):
    """Hand each action to every group member (multicast) or to ``sender_session`` (unicast)."""
    for action in actions:
        targets = to_group_sessions if action.to_group else [sender_session]
        for session in targets:
            session.receive(action.data, address, now)


def test_two_ping_sessions_account_for_each_other():
    a, b = PingSession(1, size=64), PingSession(2)
    # b is heard first (its probe), so every probe a sends afterwards counts.
    a.receive(b.probe(0), "b:1", 0)
    assert list(a.peers) == [2]
    for now in range(1_000_000, 6_000_000, 1_000_000):
        probe = a.probe(now)
        assert len(probe) == 64
        assert a.receive(probe, "a:1", now) == ([], None)  # our own loop-back copy
        actions, new = b.receive(probe, "a:1", now)
        assert new is not None and new.peer_id == 1 if now == 1_000_000 else new is None
        assert [x.to_group for x in actions] == [True, False]
        assert all(len(x.data) == 64 for x in actions)
        _deliver(actions[:1] if now == 3_000_000 else actions, [a], a, "b:1", now + 500_000)
    report = a.report()[0]
    assert report["peer"] == "b:1" and report["peer_id"] == "0000000000000002"
    assert report["unicast"]["sent"] == 5 and report["unicast"]["lost"] == 1
    assert report["multicast"]["lost"] == 0 and report["multicast"]["rtt"]["avg_ms"] == 0.5
    assert not a.settled()
    a.receive(b.done(), "b:1", 0)
    assert a.all_peers_done() and not a.all_answered()


def test_probes_before_a_peer_was_heard_do_not_count():
    a, b = PingSession(1), PingSession(2)
    early = a.probe(0)  # b has not joined yet: it never sees this one
    late = a.probe(10)
    actions, _ = b.receive(late, "a:1", 10)
    _deliver(actions, [a], a, "b:1", 20)
    _deliver(b.receive(late, "a:1", 10)[0], [a], a, "b:1", 20)  # a duplicate pair of replies
    report = a.report()[0]
    # a first heard b through a reply to probe 1, after sending 2 probes: nothing counts yet.
    assert report["multicast"]["sent"] == 0 and report["multicast"]["lost"] == 0
    _deliver(b.receive(a.probe(30), "a:1", 30)[0], [a], a, "b:1", 40)
    _deliver(b.receive(a.probe(50), "a:1", 50)[0], [a], a, "b:1", 60)
    _deliver(b.receive(a.probe(50), "a:1", 50)[0][:0], [a], a, "b:1", 60)  # probe 4 lost
    report = a.report()[0]
    assert report["multicast"]["sent"] == 3 and report["multicast"]["received"] == 2
    assert report["unicast"]["lost"] == 1 and len(early) == PING_HEADER_SIZE
    assert a.receive(b"garbage", "x:1", 0) == ([], None) and a.ignored == 1


def test_worst_loss_is_the_highest_of_any_peer_on_either_path():
    a, b = PingSession(1), PingSession(2)
    assert a.worst_loss() == 0.0  # no peers
    a.receive(b.probe(0), "b:1", 0)
    for now in (10, 20, 30, 40):
        actions, _ = b.receive(a.probe(now), "a:1", now)
        # the unicast reply to the last two probes is lost; every multicast reply arrives
        _deliver(actions if now < 30 else actions[:1], [a], a, "b:1", now + 1)
    assert a.report()[0]["unicast"]["loss_percent"] == 50.0
    assert a.worst_loss() == 50.0


def test_a_send_plan_checks_sizes_and_makes_probes_when_due():
    plan = SendPlan.build(4, None, 3, 64)
    make = plan.maker(lambda: 123_456)
    probe = parse_probe(make(2))
    assert plan.total == 3 and probe is not None and (probe.seq, probe.sent_ns) == (2, 123_456)
    given = SendPlan.build(6, [b"a", b"bc"], 99, 64)
    assert given.total == 2 and given.maker(lambda: 0)(1) == b"bc"
    assert (probe_sizes(4)[0], probe_sizes(4)[-1], probe_sizes(6)[-1]) == (24, 65507, 65487)
    with pytest.raises(ConfigError, match=r"largest datagram \(65487 bytes\)"):
        SendPlan.build(6, [bytes(MAX_PAYLOAD[6] + 1)], 1, 64)

"""The self-test's sans-I/O half: groups and plan, one receiver's verdict, the tally."""

from __future__ import annotations

from netkit.core.multicast.groups import Group
from netkit.core.multicast.selftest import (
    OTHER_SOURCE,
    SelftestCase,
    SelftestMode,
    SelftestTally,
    selftest_groups,
    selftest_plan,
)
from netkit.core.probe import make_probe

SENDER = "127.0.0.1:4000"


def _case(mode: SelftestMode = SelftestMode.ASM) -> SelftestCase:
    return SelftestCase(4, mode, Group("239.255.1.2", 5000, 4), None, joined_at=10.0)


def _feed(case: SelftestCase, seqs: list[int], source: str = SENDER) -> None:
    for seq in seqs:
        case.receive(source, SENDER, make_probe(seq, 1_000, 64), 10.25, 2_000)


def test_groups_are_scoped_and_the_plan_has_one_of_each_ssm_receiver():
    asm, ssm = selftest_groups(4, 0x0102)
    assert (asm.address, ssm.address) == ("239.255.1.2", "232.110.1.2")
    asm6, ssm6 = selftest_groups(6, 0x4E4B)
    assert (asm6.address, ssm6.address) == ("ff12::6e6b:4e4b", "ff32::8000:4e4b")
    plan = selftest_plan(4, asm, ssm, "127.0.0.1", 2)
    assert [(m, g, s) for m, g, s in plan] == [
        (SelftestMode.ASM, asm, None),
        (SelftestMode.ASM, asm, None),
        (SelftestMode.SSM, ssm, "127.0.0.1"),
        (SelftestMode.SSM_OTHER, ssm, OTHER_SOURCE[4]),
    ]


def test_a_receiver_that_heard_everything_after_joining_passes():
    case = _case()
    _feed(case, list(range(3, 10)))  # joined at probe 3: what came before does not count
    assert case.heard(9) and not case.heard(2)
    result = case.as_dict(last_seq=9, max_loss=0)
    assert result["passed"] and "reason" not in result
    assert (result["received"], result["lost"], result["join_ms"]) == (7, 0, 250.0)
    assert result["mode"] == "asm" and result["family"] == "ipv4"


def test_loss_duplicates_and_reordering_fail_a_receiver_with_the_reasons():
    case = _case()
    _feed(case, [3, 5, 4, 4, 6])  # 7 to 9 never came, 4 late and twice
    result = case.as_dict(last_seq=9, max_loss=10)
    assert not result["passed"]
    assert result["reason"] == "3 lost, 1 duplicate(s), 1 reordered"
    assert result["loss_percent"] == 42.857  # 3 of the 7 from probe 3 on
    silent = _case().as_dict(last_seq=9, max_loss=100)
    assert silent["reason"] == "no datagram arrived" and silent["join_ms"] is None


def test_the_ssm_other_receiver_must_hear_nothing_at_all():
    quiet = _case(SelftestMode.SSM_OTHER)
    assert quiet.heard(9)  # it never holds up the end of the stream
    assert quiet.as_dict(last_seq=9, max_loss=0)["passed"]
    leaky = _case(SelftestMode.SSM_OTHER)
    _feed(leaky, [1], source="127.0.0.2:9")
    assert leaky.foreign == 1 and leaky.account is None
    result = leaky.as_dict(last_seq=9, max_loss=0)
    assert result["reason"] == "received datagrams from a source it did not join"


def test_the_tally_fails_on_a_failed_case_a_skipped_lone_family_or_nothing_run():
    tally = SelftestTally()
    assert tally.failure([4, 6], "lo") == "no multicast self-test could run on lo"
    tally.add({"passed": True})
    tally.skip(6)
    assert (tally.passed, tally.failed, tally.skipped) == (1, 0, [6])
    assert tally.failure([4, 6], "lo") is None  # with both families asked, a skip is fine
    assert tally.failure([6], "lo") == "IPv6 multicast cannot run on lo"
    tally.add({"passed": False})
    assert tally.failure([4, 6], "lo") == "1 multicast self-test receiver(s) failed on lo"

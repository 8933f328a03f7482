"""The descriptor reserve a relay holds before accepting (net/accept.py)."""

from __future__ import annotations

import os

import pytest

from netkit.net.accept import DescriptorReserve

pytestmark = pytest.mark.timeout(30)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fill_holds_the_count_and_gives_back_what_is_beyond_it_and_the_slack() -> None:
    before = open_fds()
    reserve = DescriptorReserve()
    slack = DescriptorReserve.SLACK
    try:
        assert reserve.fill(5) is None
        assert len(reserve) == 5 and open_fds() == before + 5
        # Clients come and go one by one: a fill a little short of what is held keeps it
        # (no open and close per client).
        assert reserve.fill(4) is None
        assert len(reserve) == 5 and open_fds() == before + 5
        # A burst of connecting clients is over: the next fill keeps only what it needs
        # and the slack.
        assert reserve.fill(slack + 20) is None
        assert reserve.fill(2) is None
        assert len(reserve) == 2 + slack and open_fds() == before + 2 + slack
    finally:
        reserve.close()
    assert open_fds() == before


def test_spend_frees_held_descriptors_only_when_there_are_enough() -> None:
    before = open_fds()
    reserve = DescriptorReserve()
    try:
        reserve.fill(3)
        assert reserve.spend(2) and len(reserve) == 1 and open_fds() == before + 1
        assert not reserve.spend(2) and len(reserve) == 1
    finally:
        reserve.close()
    assert open_fds() == before

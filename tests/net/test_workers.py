"""Tests for netkit.net.workers: forked children, how each ended, and the memory available."""

from __future__ import annotations

import os
import resource
import signal
from typing import Any

import pytest

from netkit.net.workers import available_memory, describe_exit, merge_summaries, run_workers


def test_describe_exit_names_the_signal_or_the_code() -> None:
    assert describe_exit(70) == "exited with code 70"
    assert describe_exit(-signal.SIGTERM) == "was killed by SIGTERM"
    assert describe_exit(-signal.SIGKILL).startswith("was killed by SIGKILL")
    assert "out-of-memory" in describe_exit(-signal.SIGKILL)


@pytest.mark.timeout(30)
def test_run_workers_reports_how_each_child_ended() -> None:
    """Issue 13 item 17: a worker that dies is reported with its signal, not as nothing."""

    def child(index: int) -> tuple[int, dict[str, Any]]:
        if index == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        if index == 2:
            raise MemoryError
        return 0, {"index": index}

    codes, summaries, stopped = run_workers(3, child)
    assert codes == [0, -signal.SIGKILL, 70]
    assert {"index": 0} in summaries
    assert stopped is None


@pytest.mark.timeout(30)
def test_available_memory_follows_an_address_space_limit() -> None:
    assert (available_memory() or 0) > 0

    def child(index: int) -> tuple[int, dict[str, Any]]:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))
        return 0, {"available": available_memory()}

    codes, summaries, _ = run_workers(1, child)
    assert codes == [0]
    assert summaries[0]["available"] <= 3 << 30


def test_merge_summaries_adds_counts_keeps_the_longest_uptime_and_merges_by_field() -> None:
    first = {"connections": 2, "uptime_s": 1.5, "tls": True, "mode": "raw", "rows": [1]}
    second = {"connections": 3, "uptime_s": 2.5, "tls": False, "mode": "framed", "rows": [2]}
    merged = merge_summaries(
        [first, {}, second], {"rows": lambda values: [x for v in values for x in v]}
    )
    assert merged == {
        "connections": 5,
        "uptime_s": 2.5,
        "tls": True,  # not a count: as the first worker gave it
        "mode": "raw",
        "rows": [1, 2],
    }
    assert merge_summaries([]) == {}

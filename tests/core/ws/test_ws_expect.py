"""ws-client's --count/--expect matching (netkit.core.ws.expect)."""

from __future__ import annotations

import re

from netkit.core.ws.expect import Expectation
from netkit.errors import render


def flags(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_count_alone_is_satisfied_by_the_nth_message():
    count = Expectation(count=2)
    assert count.active
    assert [count.feed(b"a"), count.feed(b"b")] == [None, True]
    assert not Expectation().active


def test_count_and_pattern_fail_once_n_came_without_a_match():
    both = Expectation(count=2, patterns=(re.compile("x"),))
    assert [both.feed(b"a"), both.feed(b"b")] == [None, False]
    assert "in the first 2" in render(both.failure(""))


def test_binary_messages_match_as_utf8_with_replacement():
    assert Expectation(patterns=(re.compile("ok"),)).feed(b"\xffok") is True


def test_patterns_match_in_order_each_in_a_later_message():
    ordered = Expectation(patterns=(re.compile("a"), re.compile("b")))
    assert [ordered.feed(m) for m in (b"b", b"ab", b"x", b"b")] == [None, None, None, True]
    twice = Expectation(patterns=(re.compile("a"), re.compile("a")))
    assert [twice.feed(b"a"), twice.feed(b"a")] == [None, True]


def test_failure_mentions_the_settings():
    unmet = Expectation(count=3, patterns=(re.compile("a"), re.compile("b")))
    assert [unmet.feed(m) for m in (b"a", b"a", b"a")] == [None, None, False]
    assert (
        render(unmet.failure("")) == "no message matched expect 'b' (pattern 2 of 2) in the first 3"
    )
    assert "--expect 'b' (pattern 2 of 2) in the first 3" in render(unmet.failure(""), flags)
    short = Expectation(count=2)
    short.feed(b"x")
    assert render(short.failure("within 1s"), flags) == "--count 2: 1 message received within 1s"

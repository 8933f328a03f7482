"""The replay plan and the comparison of a replay's answers with the recording, in memory."""

from __future__ import annotations

import re

import pytest

from netkit.core.ws.recording import RecordWriter, parse_recording
from netkit.core.ws.replay import (
    Action,
    ActionKind,
    Answer,
    CloseSeen,
    DiffKind,
    ReplayCheck,
    ReplayPlan,
)

pytestmark = pytest.mark.timeout(10)

W = RecordWriter("ws://h/", [], 0.0)
CLIENT_CLOSE = CloseSeen(1000, "", "client")


def plan_of(*lines: str) -> ReplayPlan:
    return ReplayPlan.from_recording(parse_recording([W.header(), W.opened(0, None), *lines]))


def text(t: float, data: str, *, sent: bool) -> str:
    return W.message(t, sent=sent, text=True, data=data.encode())


def conversation() -> ReplayPlan:
    """A greeting, then two messages each answered once, then the client closes."""
    return plan_of(
        text(0.1, "welcome", sent=False),
        text(0.2, "a", sent=True),
        text(0.3, "A", sent=False),
        W.ping(0.35, sent=True, data=b"k", keepalive=True),
        W.ping(0.36, sent=True, data=b"p"),
        W.ping(0.37, sent=False, data=b"s"),
        text(0.4, "b", sent=True),
        text(0.5, "B", sent=False),
        W.close(0.6, sent=True, code=4001, reason="done"),
        W.closed(0.7, code=4001, reason="done", initiator="client", clean=True),
    )


def test_plan_actions_and_answers():
    plan = conversation()
    assert plan.actions == (
        Action(0.2, ActionKind.SEND, True, b"a"),
        Action(0.36, ActionKind.PING, data=b"p"),  # the keepalive ping is not replayed
        Action(0.4, ActionKind.SEND, True, b"b"),
        Action(0.6, ActionKind.CLOSE, code=4001, reason="done"),
    )
    assert plan.answers == (
        Answer(True, b"welcome", 0, 0),
        Answer(True, b"A", 1, 1),
        Answer(True, b"B", 3, 2),
    )
    assert [plan.answers_before(n) for n in range(5)] == [1, 2, 2, 3, 3]
    assert plan.client_closes
    assert plan.close == CloseSeen(4001, "done", "client")


def replay(plan: ReplayPlan, answers: list[str], **kwargs) -> ReplayCheck:
    """Feed ``answers`` in order, acting each action once the recorded answers came."""
    check = ReplayCheck(plan, **kwargs)
    got = iter(answers)
    for number, action in enumerate(plan.actions):
        while len(check.got) < plan.answers_before(number):
            answer = next(got, None)
            if answer is None:
                break  # the replay waits, then goes on without it
            check.received(True, answer.encode())
        check.acted(action)
    for rest in got:
        check.received(True, rest.encode())
    return check


def test_same_answers_no_difference():
    check = replay(conversation(), ["welcome", "A", "B"])
    assert check.differences(CloseSeen(4001, "done", "client"), None) == []


def test_changed_answer_names_its_index():
    check = replay(conversation(), ["welcome", "a!", "B"])
    (diff,) = check.differences(CloseSeen(4001, "done", "client"), None)
    assert diff.kind is DiffKind.CHANGED and diff.index == 2 and diff.got_index == 2
    assert diff.expected == Answer(True, b"A", 1, 1) and diff.got == Answer(True, b"a!", 1, 1)
    assert (
        diff.describe()
        == "received message 2 (after sent message 1): expected text 'A', got text 'a!'"
    )
    assert diff.json() == {
        "kind": "changed",
        "index": 2,
        "got_index": 2,
        "expected": {"type": "text", "bytes": 1, "text": "A", "after_sent": 1},
        "got": {"type": "text", "bytes": 2, "text": "a!", "after_sent": 1},
    }


def test_one_extra_message_does_not_shift_the_rest():
    check = replay(conversation(), ["welcome", "A", "noise", "B"])
    (diff,) = check.differences(CloseSeen(4001, "done", "client"), None)
    assert diff.kind is DiffKind.EXTRA and diff.index is None and diff.got_index == 3
    assert diff.describe() == ("extra message 3 of the replay (after sent message 2): text 'noise'")


def test_missing_message_and_close_difference():
    check = replay(conversation(), ["welcome", "B"])
    diffs = check.differences(CloseSeen(1011, "boom", "server"), None)
    assert [d.kind for d in diffs] == [DiffKind.MISSING, DiffKind.CLOSE]
    assert diffs[0].index == 2 and diffs[0].got is None
    assert (
        diffs[0].describe()
        == "received message 2 (after sent message 1) missing: expected text 'A'"
    )
    assert diffs[1].describe() == (
        'close: expected 4001 (application) "done" from the client, '
        'got 1011 (internal error) "boom" from the server'
    )


def test_subprotocol_difference_comes_first():
    check = replay(conversation(), ["welcome", "A", "B"])
    (diff,) = check.differences(CloseSeen(4001, "done", "client"), "chat")
    assert (
        diff.kind is DiffKind.SUBPROTOCOL
        and diff.describe() == "subprotocol: expected nothing, got 'chat'"
    )


def test_binary_answers_compare_bytes():
    plan = plan_of(
        W.message(0.1, sent=True, text=False, data=b"\x00\x01"),
        W.message(0.2, sent=False, text=False, data=b"\x00\x01"),
    )
    check = ReplayCheck(plan)
    check.acted(plan.actions[0])
    check.received(False, b"\x00\x02")
    (diff,) = check.differences(CloseSeen(None, "", None), None)
    assert diff.describe() == (
        "received message 1 (after sent message 1): expected binary 2 bytes 0001, "
        "got binary 2 bytes 0002"
    )
    assert diff.json()["got"] == {
        "type": "binary",
        "bytes": 2,
        "data": "AAI=",
        "encoding": "base64",
        "after_sent": 1,
    }
    # Text and binary with the same bytes differ too.
    check = ReplayCheck(plan)
    check.received(True, b"\x00\x01")
    assert check.differences(CloseSeen(None, "", None), None)[0].kind is DiffKind.CHANGED


def test_ignore_masks_volatile_text():
    plan = plan_of(text(0.1, "go", sent=True), text(0.2, '{"ts":1.5,"v":1}', sent=False))
    ignore = (re.compile(r'"ts":[0-9.]+'),)
    check = replay(plan, ['{"ts":99.25,"v":1}'], ignore=ignore)
    assert check.differences(CloseSeen(None, "", None), None) == []
    check = replay(plan, ['{"ts":99.25,"v":2}'], ignore=ignore)
    assert [d.kind for d in check.differences(CloseSeen(None, "", None), None)] == [
        DiffKind.CHANGED
    ]


def test_long_messages_are_cut_in_descriptions():
    long = Answer(True, b"x" * 100)
    assert long.describe() == f"text {'x' * 60!r}…"
    assert Answer(False, bytes(40)).describe() == "binary 40 bytes " + "00" * 30 + "…"

"""Replaying a recording and comparing the server's answers with it (``ws-client --replay``).

A :class:`ReplayPlan` turns a :class:`~netkit.core.ws.recording.Recording` into the client's
side: the :class:`Action` list (each message sent, each ping sent by the user, the close frame
if the client closed; keepalive pings are the timer's business and are not replayed) and the
messages the server sent, each tagged with the number of actions that came before it.

How answers are aligned: before each action the replay waits until the server has sent as
many messages as the recording holds before that action (the answers to what came before,
or a greeting before the first), up to a deadline; then, at recorded speed, until the
action's recorded time. What arrives is compared with what was recorded as one sequence at
the end (:meth:`ReplayCheck.differences`, a longest-matching-blocks diff), so one extra or
missing message is reported as that, not as every later message differing. Pings and pongs
from the server are not compared (their timing is the server's keepalive); the close is:
its code, reason and which side started it.

``ignore`` patterns (regular expressions) make volatile parts of text messages and close
reasons equal: every match is replaced by ``…`` on both sides before comparing.
"""

from __future__ import annotations

import bisect
import difflib
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from netkit.core.ws.ending import describe_close
from netkit.core.ws.recording import Kind, Recording, message_json

_SHOWN = 60  # characters of a message shown in a difference line


class ActionKind(enum.Enum):
    """What the client does at a step of a replay."""

    SEND = "send"
    PING = "ping"
    CLOSE = "close"


@dataclass(frozen=True)
class Action:
    """One thing the client did in the recording, to do again.

    Attributes:
        t: when, in seconds since the connection opened.
        kind: send a message, a ping or the close frame.
        text: a text message.
        data: the message or the ping's payload.
        code: the close code (CLOSE).
        reason: the close reason (CLOSE).
    """

    t: float
    kind: ActionKind
    text: bool = False
    data: bytes = b""
    code: int = 1000
    reason: str = ""


@dataclass(frozen=True)
class Answer:
    """A message the server sent: text or binary, the payload, and ``after``: how many
    actions came before it; ``sent``: how many of those were messages."""

    text: bool
    data: bytes
    after: int = 0
    sent: int = 0

    def json(self) -> dict[str, Any]:
        """The message in the recording's JSON shape."""
        return message_json(self.text, self.data)

    def describe(self) -> str:
        """``text "hello"`` or ``binary 3 bytes 000102``, cut short when long."""
        if self.text:
            shown = self.data.decode("utf-8", "replace")
            more = "…" if len(shown) > _SHOWN else ""
            return f"text {shown[:_SHOWN]!r}{more}"
        more = "…" if len(self.data) > _SHOWN // 2 else ""
        return f"binary {len(self.data)} bytes {self.data[: _SHOWN // 2].hex()}{more}".rstrip()


@dataclass(frozen=True)
class CloseSeen:
    """How a connection ended: the close code received (None: none), reason, initiator."""

    code: int | None
    reason: str
    initiator: str | None

    def describe(self) -> str:
        """``1000 (normal closure) from the client``."""
        who = f" from the {self.initiator}" if self.initiator else ""
        return describe_close(self.code, self.reason) + who


@dataclass(frozen=True)
class ReplayPlan:
    """The client's side of a recording and the server's answers, in order."""

    actions: tuple[Action, ...]
    answers: tuple[Answer, ...]
    subprotocol: str | None
    close: CloseSeen | None

    @classmethod
    def from_recording(cls, recording: Recording) -> ReplayPlan:
        """The plan of ``recording`` (see the module docstring for what is replayed)."""
        actions: list[Action] = []
        answers: list[Answer] = []
        sent = 0
        for event in recording.events:
            if event.kind is Kind.SENT:
                actions.append(Action(event.t, ActionKind.SEND, event.text, event.data))
                sent += 1
            elif event.kind is Kind.PING and event.sent and not event.keepalive:
                actions.append(Action(event.t, ActionKind.PING, data=event.data))
            elif event.kind is Kind.CLOSE and event.sent and event.code is not None:
                actions.append(
                    Action(event.t, ActionKind.CLOSE, code=event.code, reason=event.reason)
                )
            elif event.kind is Kind.RECEIVED:
                answers.append(Answer(event.text, event.data, len(actions), sent))
        opened, closed = recording.opened, recording.closed
        return cls(
            actions=tuple(actions),
            answers=tuple(answers),
            subprotocol=opened.subprotocol if opened is not None else None,
            close=CloseSeen(closed.code, closed.reason, closed.initiator) if closed else None,
        )

    def answers_before(self, action: int) -> int:
        """How many messages the server had sent before action number ``action`` (0-based;
        ``len(actions)``: all of them)."""
        # Answers are in order, so their ``after`` never decreases: a binary search.
        return bisect.bisect_right(self.answers, action, key=lambda a: a.after)

    @property
    def client_closes(self) -> bool:
        """The client sent the first close frame in the recording."""
        return any(a.kind is ActionKind.CLOSE for a in self.actions)


class DiffKind(enum.Enum):
    """How the replay differs from the recording."""

    CHANGED = "changed"  # a message arrived where the recording has another
    MISSING = "missing"  # a recorded message did not arrive
    EXTRA = "extra"  # a message arrived that the recording does not have
    CLOSE = "close"  # the connection ended otherwise
    SUBPROTOCOL = "subprotocol"  # the server chose another subprotocol


@dataclass(frozen=True)
class Difference:
    """One place where the replay differs from the recording.

    Attributes:
        kind: how.
        index: the message's number in the recording (1-based; None for EXTRA and the rest).
        got_index: the number of the message that arrived in the replay (1-based).
        expected: what the recording has (an :class:`Answer`, :class:`CloseSeen`, or the
            subprotocol).
        got: what arrived instead (None: nothing).
    """

    kind: DiffKind
    index: int | None = None
    got_index: int | None = None
    expected: Answer | CloseSeen | str | None = None
    got: Answer | CloseSeen | str | None = None

    def describe(self) -> str:
        """One line for people."""
        exp, got = _describe(self.expected), _describe(self.got)
        if self.kind is DiffKind.CHANGED:
            return (
                f"received message {self.index}{_after(self.expected)}: expected {exp}, got {got}"
            )
        if self.kind is DiffKind.MISSING:
            return f"received message {self.index}{_after(self.expected)} missing: expected {exp}"
        if self.kind is DiffKind.EXTRA:
            return f"extra message {self.got_index} of the replay{_after(self.got)}: {got}"
        if self.kind is DiffKind.CLOSE:
            return f"close: expected {exp}, got {got}"
        return f"subprotocol: expected {exp}, got {got}"

    def json(self) -> dict[str, Any]:
        """The fields of a ``difference`` event."""
        return {
            "kind": self.kind.value,
            "index": self.index,
            "got_index": self.got_index,
            "expected": _json(self.expected),
            "got": _json(self.got),
        }


def _after(answer: object) -> str:
    if not isinstance(answer, Answer):
        return ""
    return f" (after sent message {answer.sent})" if answer.sent else " (before any sent)"


def _describe(value: Answer | CloseSeen | str | None) -> str:
    if isinstance(value, Answer | CloseSeen):
        return value.describe()
    return "nothing" if value is None else repr(value)


def _json(value: Answer | CloseSeen | str | None) -> Any:
    if isinstance(value, Answer):
        return {**value.json(), "after_sent": value.sent}
    if isinstance(value, CloseSeen):
        return {"code": value.code, "reason": value.reason, "initiator": value.initiator}
    return value


@dataclass
class ReplayCheck:
    """Collects what the server sends during a replay and compares it with the plan.

    Args:
        plan: the recording's plan.
        ignore: patterns whose matches do not count in text messages and close reasons.
    """

    plan: ReplayPlan
    ignore: Sequence[re.Pattern[str]] = ()
    got: list[Answer] = field(default_factory=list)
    actions_done: int = 0
    sent: int = 0

    def acted(self, action: Action) -> None:
        """The replay did ``action`` (what arrives next follows it)."""
        self.actions_done += 1
        if action.kind is ActionKind.SEND:
            self.sent += 1

    def received(self, text: bool, data: bytes) -> None:
        """A message arrived from the server."""
        self.got.append(Answer(text, data, self.actions_done, self.sent))

    def _mask(self, text: str) -> str:
        for pattern in self.ignore:
            text = pattern.sub("…", text)
        return text

    def _key(self, answer: Answer) -> tuple[bool, bytes | str]:
        if answer.text and self.ignore:
            return True, self._mask(answer.data.decode("utf-8", "replace"))
        return answer.text, answer.data

    def differences(self, close: CloseSeen, subprotocol: str | None) -> list[Difference]:
        """Everything that differs: messages (in order), then the close and subprotocol."""
        out: list[Difference] = []
        if subprotocol != self.plan.subprotocol:
            out.append(
                Difference(DiffKind.SUBPROTOCOL, expected=self.plan.subprotocol, got=subprotocol)
            )
        out += self._message_differences()
        expected = self.plan.close
        if expected is not None and (
            expected.code != close.code
            or expected.initiator != close.initiator
            or self._mask(expected.reason) != self._mask(close.reason)
        ):
            out.append(Difference(DiffKind.CLOSE, expected=expected, got=close))
        return out

    def _message_differences(self) -> list[Difference]:
        want, got = self.plan.answers, self.got
        matcher = difflib.SequenceMatcher(
            None, [self._key(a) for a in want], [self._key(a) for a in got], autojunk=False
        )
        out: list[Difference] = []
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            paired = min(i2 - i1, j2 - j1)
            for k in range(paired):
                out.append(
                    Difference(DiffKind.CHANGED, i1 + k + 1, j1 + k + 1, want[i1 + k], got[j1 + k])
                )
            for i in range(i1 + paired, i2):
                out.append(Difference(DiffKind.MISSING, i + 1, None, want[i], None))
            for j in range(j1 + paired, j2):
                out.append(Difference(DiffKind.EXTRA, None, j + 1, None, got[j]))
        return out

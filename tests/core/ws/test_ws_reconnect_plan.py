"""core/ws/reconnect.py and core/backoff.py: the back-off plan, the reasons to reconnect, and
what is sent again (the acknowledgement ledger)."""

from __future__ import annotations

import random

import pytest

from netkit.core.backoff import Backoff
from netkit.core.ws.ending import Ending, Outcome
from netkit.core.ws.http import Headers, UpgradeRefused
from netkit.core.ws.reconnect import (
    Ledger,
    Reason,
    ReconnectPlan,
    ResendPolicy,
    open_reason,
    session_reason,
)
from netkit.core.ws.tunnel import ProxyRefused
from netkit.errors import ConfigError, ConnectError, ConnectionLost, OperationTimeout, TLSError

pytestmark = pytest.mark.timeout(10)


def test_backoff_without_jitter_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)


def test_backoff_jitter_stays_between_half_and_all_of_each_delay() -> None:
    backoff = Backoff(0.1, 1.0, jitter=0.5, rng=random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    for delay, ceiling in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[4:])) > 1  # drawn, not fixed, at the cap


def test_plan_counts_attempts_gives_up_and_starts_again_when_open() -> None:
    plan = ReconnectPlan(first=0.1, cap=0.4, attempts=2, jitter=0.0)
    assert plan.next_delay() == pytest.approx(0.1)
    assert plan.next_delay() == pytest.approx(0.2)
    assert plan.attempt == 2
    assert plan.next_delay() is None
    plan.opened()
    assert plan.attempt == 0
    assert plan.next_delay() == pytest.approx(0.1)


def test_plan_same_seed_same_delays_and_refuses_bad_settings() -> None:
    a, b = ReconnectPlan(seed=3), ReconnectPlan(seed=3)
    assert [a.next_delay() for _ in range(6)] == [b.next_delay() for _ in range(6)]
    assert ReconnectPlan(attempts=None).next_delay() is not None
    with pytest.raises(ConfigError):
        ReconnectPlan(first=2.0, cap=1.0)
    with pytest.raises(ConfigError):
        ReconnectPlan(attempts=-1)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectError("connection refused"), Reason.REFUSED),
        (OperationTimeout("timed out"), Reason.TIMEOUT),
        (ConnectionLost("reset"), Reason.DROPPED),
        (UpgradeRefused(503, "Service Unavailable", Headers()), Reason.UNAVAILABLE),
        (UpgradeRefused(429, "Too Many Requests", Headers()), Reason.UNAVAILABLE),
        (UpgradeRefused(404, "Not Found", Headers()), None),
        (ProxyRefused("proxy said 502", 502), Reason.REFUSED),
        (ProxyRefused("proxy said 407", 407), None),
        (TLSError("not trusted"), None),
        (ConfigError("bad"), None),
    ],
)
def test_open_reason(error: BaseException, reason: Reason | None) -> None:
    assert open_reason(error) is reason


def ending(**kwargs: object) -> Ending:
    return Ending(outcome=kwargs.pop("outcome", Outcome.CLOSED), peer="ws://x", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (ending(close_code=None), Reason.DROPPED),
        (ending(close_code=1006), Reason.DROPPED),
        (ending(connection_error=ConnectionLost("reset")), Reason.DROPPED),
        (ending(connection_error=TLSError("alert")), None),
        (ending(close_code=1001, close_answered=True), Reason.CLOSED),
        (ending(close_code=1012, close_answered=True), Reason.CLOSED),
        (ending(close_code=1000, close_answered=True), None),
        (ending(close_code=1008, close_answered=True), None),
        # We closed (the input ended), even if the close was never answered.
        (ending(close_code=None, initiated_close=True), None),
        (ending(outcome=Outcome.SATISFIED, close_code=None), None),
        (ending(outcome=Outcome.TIMEOUT, close_code=None), None),
        (ending(close_code=None, send_error=ConfigError("not text")), None),
        (ending(close_code=1002, protocol_error=ConnectError("x")), None),
    ],
)
def test_session_reason(end: Ending, reason: Reason | None) -> None:
    assert session_reason(end) is reason


def run_ledger(policy: ResendPolicy) -> tuple[list[str], int, int]:
    """a and b acknowledged by a reply, c and d not; then the connection drops."""
    ledger: Ledger[str] = Ledger(policy)
    for item in "ab":
        ledger.sent(item)
    ledger.acknowledged()
    for item in "cd":
        ledger.sent(item)
    ledger.unsent("e")  # taken from the input, never sent
    rewind = ledger.rewind()
    again = []
    while (item := ledger.take()) is not None:
        again.append(item)
    return again, rewind.resent, rewind.dropped


def test_ledger_none_sends_only_the_unsent_and_counts_the_unacknowledged() -> None:
    assert run_ledger(ResendPolicy.NONE) == (["e"], 0, 2)


def test_ledger_unacknowledged_sends_what_no_reply_followed() -> None:
    assert run_ledger(ResendPolicy.UNACKNOWLEDGED) == (["c", "d", "e"], 2, 0)


def test_ledger_all_sends_everything_again_in_order() -> None:
    assert run_ledger(ResendPolicy.ALL) == (["a", "b", "c", "d", "e"], 4, 0)


def test_ledger_all_keeps_the_history_across_two_reconnections() -> None:
    ledger: Ledger[str] = Ledger(ResendPolicy.ALL)
    ledger.sent("a")
    ledger.acknowledged()
    ledger.rewind()
    assert ledger.take() == "a"
    ledger.sent("a")  # sent again on the second connection, then a new one
    ledger.sent("b")
    assert ledger.rewind().resent == 2
    assert [ledger.take(), ledger.take(), ledger.take()] == ["a", "b", None]

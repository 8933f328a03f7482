"""How a ws-client session's end maps to success or an error (netkit.core.ws.ending)."""

from __future__ import annotations

import re

import pytest

from netkit.core.ws.ending import Ending, Outcome, close_name, describe_close, verdict
from netkit.core.ws.expect import Expectation
from netkit.errors import (
    CheckFailed,
    ConfigError,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
)

URL = "ws://127.0.0.1:1/"


def shown(error: BaseException | None) -> str:
    """The error's message as the command line shows it (settings as flags)."""
    assert isinstance(error, NetkitError)
    return error.describe(lambda name: "--" + name.replace("_", "-"))[0]


def test_close_names():
    assert close_name(1000) == "1000 (normal closure)"
    assert close_name(1011) == "1011 (internal error)"
    assert close_name(4000) == "4000 (application)"
    assert close_name(2999) == "2999 (unknown)"
    assert describe_close(None, "") == "no close frame"
    assert describe_close(1001, "bye") == '1001 (going away) "bye"'


@pytest.mark.parametrize("code", [1000, 1001, 1005])
def test_a_clean_close_by_the_server_is_success(code: int) -> None:
    end = Ending(Outcome.CLOSED, URL, close_answered=True, close_code=code)
    assert verdict(end, Expectation()) is None


@pytest.mark.parametrize(
    ("end", "kind", "text"),
    [
        (Ending(Outcome.CLOSED, URL), ConnectionLost, "without a close frame (1006)"),
        (Ending(Outcome.CLOSED, URL, close_code=1006), ConnectionLost, "(1006)"),
        (
            Ending(Outcome.CLOSED, URL, close_answered=True, close_code=4000, close_reason="x"),
            PeerProtocolError,
            'closed the connection with 4000 (application) "x"',
        ),
        (
            Ending(
                Outcome.SATISFIED, URL, initiated_close=True, close_timed_out=True, close_timeout=2
            ),
            OperationTimeout,
            "did not answer our close frame within 2s (--close-timeout)",
        ),
        (
            Ending(Outcome.SATISFIED, URL, initiated_close=True),
            ConnectionLost,
            "lost before the server answered our close (1006)",
        ),
        (
            Ending(Outcome.TIMEOUT, URL, waited="within 3s"),
            OperationTimeout,
            "did not close the connection within 3s (--timeout; use --count or --expect",
        ),
    ],
)
def test_failures_map_to_their_error(end: Ending, kind: type, text: str) -> None:
    error = verdict(end, Expectation())
    assert isinstance(error, kind) and text in shown(error)


def test_a_broken_connection_wins_over_an_unmet_expectation():
    lost = ConnectionLost("reset")
    end = Ending(Outcome.CLOSED, URL, connection_error=lost)
    assert verdict(end, Expectation(count=5)) is lost


def test_a_send_error_wins_over_everything():
    bad = ConfigError("line 2 of standard input is not UTF-8 text")
    end = Ending(Outcome.SATISFIED, URL, send_error=bad, connection_error=ConnectionLost("x"))
    assert verdict(end, Expectation(count=1)) is bad


def test_expectation_outcomes():
    met = Ending(Outcome.SATISFIED, URL, initiated_close=True, close_answered=True)
    assert verdict(met, Expectation(count=1)) is None
    unmet = Expectation(count=3, patterns=(re.compile("a"),))
    failed = verdict(Ending(Outcome.FAILED, URL), unmet)
    assert isinstance(failed, CheckFailed) and "--expect 'a'" in shown(failed)
    waiting = Expectation(count=2)
    late = verdict(Ending(Outcome.TIMEOUT, URL, waited="within 1s"), waiting)
    assert (
        isinstance(late, CheckFailed) and shown(late) == "--count 2: 0 messages received within 1s"
    )
    assert str(late) == "count 2: 0 messages received within 1s"  # outside the command line
    closed = Ending(Outcome.CLOSED, URL, close_answered=True, close_code=1000)
    early = verdict(closed, Expectation(count=2))
    assert isinstance(early, CheckFailed)
    assert "before the server closed the connection (1000 (normal closure))" in str(early)
    ours = Ending(Outcome.CLOSED, URL, initiated_close=True, close_answered=True, close_code=1000)
    assert "before the connection was closed" in str(verdict(ours, Expectation(count=2)))

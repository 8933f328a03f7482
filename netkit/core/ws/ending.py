"""How a WebSocket client session ended, and what that means: close-code names, the
outcomes of a session and the verdict that turns an outcome into success or an error.

Pure logic (no I/O): the session in :mod:`netkit.net.ws_session` gathers the facts of its
end into an :class:`Ending`; :func:`verdict` returns the error the exit status is for, or
None for success. The rule is documented in ``netkit/commands/ws_client.py``. Messages
mention settings as :class:`~netkit.errors.Setting` objects (the command line shows flags).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from netkit.core.ws.expect import COUNT, EXPECT, Expectation
from netkit.core.ws.frames import CloseCode
from netkit.errors import (
    CheckFailed,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
    Setting,
    words,
)

TIMEOUT, CLOSE_TIMEOUT = Setting("timeout"), Setting("close_timeout")

# Close codes that end a session cleanly when the server sends them.
CLEAN_CLOSE = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD})


def close_name(code: int) -> str:
    """``1000 (normal closure)``, ``4000 (application)``."""
    try:
        return f"{code} ({CloseCode(code).name.lower().replace('_', ' ')})"
    except ValueError:
        return f"{code} ({'application' if 3000 <= code <= 4999 else 'unknown'})"


def describe_close(code: int | None, reason: str) -> str:
    """The close code, its name and the reason, for one line of text."""
    if code is None:
        return "no close frame"
    return close_name(code) + (f' "{reason}"' if reason else "")


class Outcome(enum.Enum):
    """Why the receive loop of a session stopped."""

    CLOSED = "closed"  # the connection closed before anything asked us to stop
    SATISFIED = "satisfied"  # the expectation was met
    FAILED = "failed"  # the expectation can no longer be met
    TIMEOUT = "timeout"  # the session's deadline passed


@dataclass(frozen=True)
class Ending:
    """The facts of a session's end that decide its verdict.

    Attributes:
        outcome: why the receive loop stopped.
        peer: the server, as the messages name it (its URL).
        waited: how the deadline that passed is described ("within 2s"), or "".
        send_error: what stopped our sending (a bad line of input), if anything.
        protocol_error: a protocol violation (ours or the peer's) that closed the connection.
        connection_error: what broke the connection (reset, TLS, keepalive), if anything.
        initiated_close: we sent the first close frame.
        close_answered: a close frame arrived from the server.
        close_timed_out: the server did not answer our close within ``close_timeout``.
        close_timeout: seconds the server had to answer our close.
        close_code: the close code received (None: none).
        close_reason: the close reason received.
    """

    outcome: Outcome
    peer: str
    waited: str = ""
    send_error: BaseException | None = None
    protocol_error: BaseException | None = None
    connection_error: BaseException | None = None
    initiated_close: bool = False
    close_answered: bool = False
    close_timed_out: bool = False
    close_timeout: float | None = None
    close_code: int | None = None
    close_reason: str = ""


def verdict(end: Ending, expectation: Expectation) -> BaseException | None:
    """The error the exit status is for, or None for success.

    A failure of the connection itself wins over an unmet expectation.
    """
    if end.send_error is not None:
        return end.send_error
    if end.outcome is Outcome.FAILED:
        return CheckFailed(expectation.failure(""))
    if end.outcome is Outcome.TIMEOUT:
        if expectation.active:
            return CheckFailed(expectation.failure(end.waited))
        return OperationTimeout(
            words(
                f"{end.peer} did not close the connection {end.waited} (",
                (TIMEOUT, "; use ", COUNT, " or ", EXPECT, " to stop on a reply)"),
            )
        )
    broken = _broken(end)
    if broken is not None or end.outcome is Outcome.SATISFIED:
        return broken
    if expectation.active:
        closed = (
            "before the connection was closed"
            if end.initiated_close
            else f"before the server closed the connection ({close_name(end.close_code or 1005)})"
        )
        return CheckFailed(expectation.failure(closed))
    return None


def _broken(end: Ending) -> NetkitError | BaseException | None:
    """The error when the connection itself failed, or the server closed it badly."""
    for error in (end.protocol_error, end.connection_error):
        if error is not None:
            return error
    if end.initiated_close and not end.close_answered:
        # Our close was never answered: the closing handshake failed (websockets: 1006).
        if end.close_timed_out:
            return OperationTimeout(
                (
                    f"{end.peer} did not answer our close frame within {end.close_timeout:g}s (",
                    CLOSE_TIMEOUT,
                    ")",
                )
            )
        return ConnectionLost(
            f"connection to {end.peer} lost before the server answered our close (1006)"
        )
    if end.outcome is Outcome.SATISFIED or end.initiated_close:
        return None
    code = end.close_code
    if code is None or code == CloseCode.ABNORMAL_CLOSURE:
        return ConnectionLost(f"connection to {end.peer} lost without a close frame (1006)")
    if code not in CLEAN_CLOSE:
        return PeerProtocolError(
            f"{end.peer} closed the connection with {describe_close(code, end.close_reason)}",
            close_code=None,
        )
    return None

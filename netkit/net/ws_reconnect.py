"""ws-client ``--reconnect``: sessions one after another on new connections, with back-off.

:func:`run_reconnecting` opens a connection with a :class:`~netkit.net.ws_dial.Dialer`, runs
a :class:`~netkit.net.ws_session.Session` on it, and when opening fails or the connection
ends in a way another try may cure (:mod:`netkit.core.ws.reconnect` decides), waits as the
:class:`~netkit.core.ws.reconnect.ReconnectPlan` says and goes again. When the attempts are
used up, the last failure ends the run with the exit status it has without ``--reconnect``.
:class:`ResumableInput` keeps the input across connections: what was not sent yet, and what
the resend policy sends again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from netkit.core.ws.ending import describe_close
from netkit.core.ws.reconnect import (
    Ledger,
    Reason,
    ReconnectPlan,
    ResendPolicy,
    Rewind,
    open_reason,
    session_reason,
)
from netkit.errors import NetkitError
from netkit.net.ws_client import WebSocketClientConnection
from netkit.net.ws_dial import Dialer
from netkit.net.ws_session import MessageFeed, Outgoing, Session, Settings, input_messages


class ResumableInput:
    """The input of a reconnecting run (implements :class:`~netkit.net.ws_session.MessageFeed`).

    One task reads the input (arguments, files, stdin lines) for the whole run; each
    connection takes from it, after what the :class:`~netkit.core.ws.reconnect.Ledger` has
    to send again.
    """

    def __init__(self, settings: Settings, policy: ResendPolicy) -> None:
        self.ledger: Ledger[Outgoing] = Ledger(policy)
        self._settings = settings
        # One message read ahead at most: stdin is not read faster than connections send.
        self._queue: asyncio.Queue[Outgoing | Exception | None] = asyncio.Queue(maxsize=1)
        self._reader: asyncio.Task[None] | None = None
        self._ended = False

    async def next(self) -> Outgoing | None:
        """The next message to send; None when the input has ended and nothing is left.

        Raises:
            ConfigError: a line of input is not text (when messages are text).
        """
        item = self.ledger.take()
        if item is not None or self._ended:
            return item
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        got = await self._queue.get()
        if got is None or isinstance(got, Exception):
            self._ended = True
            if got is not None:
                raise got
            return None
        return got

    async def _read(self) -> None:
        try:
            async for item in input_messages(self._settings):
                await self._queue.put(item)
        except Exception as exc:  # a bad line: the session that takes it reports it
            await self._queue.put(exc)
            return
        await self._queue.put(None)

    def sent(self, item: Outgoing) -> None:
        """``item`` went out on the current connection."""
        self.ledger.sent(item)

    def unsent(self, item: Outgoing) -> None:
        """``item`` was not sent: the next connection sends it first."""
        self.ledger.unsent(item)

    def acknowledged(self) -> None:
        """A message arrived: what was sent before it is acknowledged."""
        self.ledger.acknowledged()

    def close(self) -> None:
        """Stop reading the input."""
        if self._reader is not None:
            self._reader.cancel()


@dataclass(frozen=True)
class ReconnectAttempt:
    """One more try, about to be made (a ``reconnect`` event).

    Attributes:
        attempt: its number since the last connection that opened (1 for the first retry).
        limit: how many tries are allowed (None: no limit).
        delay: seconds waited before it.
        reason: why the last connection, or attempt, failed.
        error: that failure (None: the server closed cleanly, with 1001 say).
        closed: the failure in words when ``error`` is None.
        rewind: what is sent again on the new connection.
    """

    attempt: int
    limit: int | None
    delay: float
    reason: Reason
    error: NetkitError | None
    closed: str
    rewind: Rewind


async def run_reconnecting(
    dialer: Dialer,
    plan: ReconnectPlan,
    session: Callable[[WebSocketClientConnection, MessageFeed], Session],
    feed: ResumableInput,
    *,
    on_retry: Callable[[ReconnectAttempt], None],
    deadline: float | None = None,
) -> None:
    """Run sessions until one ends for good; raise what the last one (or attempt) raised.

    Args:
        session: a session on an open connection, taking its messages from ``feed``.
        on_retry: told before each wait.
        deadline: loop time after which no connection is opened or waited for.

    Raises:
        The last failure, as without reconnecting; TimeoutError: ``deadline`` passed while
        opening or waiting.
    """
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await dialer.open()
            except NetkitError as exc:
                reason = open_reason(exc)
                if reason is None or not await _wait(
                    plan, feed, reason, exc, "", on_retry, deadline
                ):
                    raise
                continue
            plan.opened()
            current = session(conn, feed)
            error: NetkitError | None = None
            try:
                await current.run()
            except NetkitError as exc:
                error = exc
            finally:
                conn.abort()  # a no-op after a closing handshake
            reason = session_reason(current.ending) if current.ending is not None else None
            closed = f"closed with {describe_close(conn.close_code, conn.close_reason)}"
            if reason is None or not await _wait(
                plan, feed, reason, error, closed, on_retry, deadline
            ):
                if error is not None:
                    raise error
                return
    finally:
        feed.close()


async def _wait(
    plan: ReconnectPlan,
    feed: ResumableInput,
    reason: Reason,
    error: NetkitError | None,
    closed: str,
    on_retry: Callable[[ReconnectAttempt], None],
    deadline: float | None,
) -> bool:
    """Wait before the next try; False when no try is left."""
    delay = plan.next_delay()
    if delay is None:
        return False
    rewind = feed.ledger.rewind()
    on_retry(ReconnectAttempt(plan.attempt, plan.attempts, delay, reason, error, closed, rewind))
    async with asyncio.timeout_at(deadline):
        await asyncio.sleep(delay)
    return True

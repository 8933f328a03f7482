"""``ws-client --replay``: play a recording's client side on an open connection and collect
the server's answers (:class:`Replay`).

The pacing and what is compared are :mod:`netkit.core.ws.replay`'s: before each action the
replay waits for the answers the recording has before it (up to ``wait`` seconds), then, at
a given speed, for the action's recorded time. Once everything is done it waits for the
connection to end: for the server's close when the server closed in the recording, else for
the answer to our close; a server that does not close within ``wait`` seconds after the
last answer is closed by us (and the close is then a difference).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from netkit.core.ws.replay import Action, ActionKind, CloseSeen, Difference, ReplayCheck
from netkit.net.ws_client import WebSocketClientConnection


class ReplayView(Protocol):
    """What a replay shows as it happens."""

    def sent(self, data: bytes, text: bool) -> None:
        """A message went out."""

    def received(self, is_text: bool, data: bytes) -> None:
        """A message arrived."""


@dataclass
class ReplayResult:
    """What a replay found: the differences (none: the server answered as recorded)."""

    differences: list[Difference]
    sent: int
    received: int
    close: CloseSeen


class Replay:
    """Replays ``check.plan`` on ``conn``.

    Args:
        conn: an open client connection.
        check: the plan and the comparison (it collects what arrives).
        view: shown each message sent and received.
        speed: a factor on the recorded times (2: twice as fast); None: as fast as the
            answers come.
        wait: how long to wait for the recorded answers before each action, and for the
            server to close, before going on without them.
    """

    def __init__(
        self,
        conn: WebSocketClientConnection,
        check: ReplayCheck,
        view: ReplayView,
        *,
        speed: float | None,
        wait: float,
    ) -> None:
        self.conn = conn
        self.check = check
        self.view = view
        self.speed = speed
        self.wait = wait
        self._progress = asyncio.Event()
        self._ended = False

    async def run(self) -> ReplayResult:
        """Replay to the end of the connection and compare."""
        plan = self.check.plan
        receiver = asyncio.create_task(self._receive())
        started = time.perf_counter()
        try:
            for number, action in enumerate(plan.actions):
                await self._answers(plan.answers_before(number))
                if self.speed is not None:
                    delay = started + action.t / self.speed - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)  # pacing, not synchronisation
                if self._ended or not await self._act(action):
                    break
            await self._answers(len(plan.answers))
            if not plan.client_closes and not self._ended:
                await self._answers(len(plan.answers) + 1)  # the server's close, or more
            await self.conn.close_and_wait()  # a no-op once closed
            await receiver
        finally:
            receiver.cancel()
        conn = self.conn
        close = CloseSeen(conn.close_code, conn.close_reason, conn.close_initiator)
        return ReplayResult(
            differences=self.check.differences(close, conn.subprotocol),
            sent=self.check.sent,
            received=len(self.check.got),
            close=close,
        )

    async def _receive(self) -> None:
        while (item := await self.conn.receive()) is not None:
            is_text, data = item
            self.check.received(is_text, data)
            self.view.received(is_text, data)
            self._progress.set()
        self._ended = True
        self._progress.set()

    async def _answers(self, count: int) -> None:
        """Wait until ``count`` messages arrived, the connection ended or ``wait`` passed."""
        try:
            async with asyncio.timeout(self.wait):
                while len(self.check.got) < count and not self._ended:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            pass  # what did not come is reported as missing

    async def _act(self, action: Action) -> bool:
        """Do ``action``; False when the connection no longer takes it."""
        conn = self.conn
        if action.kind is ActionKind.SEND:
            if not conn.send(action.data, text=action.text):
                return False
            self.check.acted(action)
            self.view.sent(action.data, action.text)
            await conn.drain()
        elif action.kind is ActionKind.PING:
            conn.ping(action.data)  # its pong is not compared
            self.check.acted(action)
        else:
            conn.start_close(action.code, action.reason)
            self.check.acted(action)
        return True

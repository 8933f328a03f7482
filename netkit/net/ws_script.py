"""Running a conversation script (``ws-client --script``) on an open client connection.

:class:`ScriptRun` takes the steps of a :class:`~netkit.core.ws.script.Script` in order on a
:class:`~netkit.net.ws_client.WebSocketClientConnection`: it sends, waits for the next message
and checks it, pings, closes, and keeps the captured variables. Each step runs under its own
timeout (and the whole run under the run's deadline, if any); the first step that fails ends
the run: the rest are skipped, the connection is closed, and the
:class:`~netkit.core.ws.script_report.ScriptReport` carries the error the exit status is for.
What is shown is the :class:`ScriptView`'s business (``netkit/commands/ws_script.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from netkit.core.ws.frames import CloseCode
from netkit.core.ws.script import Close, Expect, ExpectClose, Ping, Script, Send, Step, Wait
from netkit.core.ws.script_report import (
    ConnectionEnd,
    ScriptReport,
    StepResult,
    StepStatus,
    check_close,
    failed,
    timed_out,
)
from netkit.core.ws.script_values import show_message
from netkit.errors import ConnectionLost, NetkitError, OperationTimeout, Setting, words
from netkit.net.ws_client import WebSocketClientConnection

T = TypeVar("T")
TIMEOUT = Setting("timeout")
# How long the close after a failed step may take when the close timeout is off.
_GOODBYE = 10.0


class ScriptView(Protocol):
    """What a script run shows, as it happens."""

    def sent(self, data: bytes, text: bool) -> None:
        """A message went out."""

    def received(self, is_text: bool, data: bytes) -> None:
        """A message arrived (reported when a step reads it, or at the end if none did)."""

    def step(self, result: StepResult) -> None:
        """A step passed or failed."""


@dataclass
class ScriptRun:
    """One run of a script on one connection.

    Attributes:
        conn: the open connection.
        script: the steps.
        view: where the run is shown.
        peer: the server, as messages name it.
        deadline: ``time.monotonic()`` by which the whole run must be over (``--timeout``),
            or None.
        variables: the variables so far (``vars``, then captures).
    """

    conn: WebSocketClientConnection
    script: Script
    view: ScriptView
    peer: str
    deadline: float | None = None
    variables: dict[str, Any] = field(default_factory=dict)

    async def run(self, report: ScriptReport | None = None) -> ScriptReport:
        """Run every step (until one fails) and close; never raises a step's failure, the
        report has it (``report``, or a new one).

        Cancelled (Ctrl-C): closes with 1001 "going away", as ws-client's session does, and
        lets the cancellation end the run; the report keeps the steps that finished.
        """
        started = time.perf_counter()
        report = ScriptReport(self.script) if report is None else report
        self.variables.update(self.script.variables)
        try:
            await self._steps(report)
        except asyncio.CancelledError:
            await self.conn.close_and_wait(CloseCode.GOING_AWAY, "going away")
            raise
        await self._finish(report)
        self._report_unread()
        report.seconds = time.perf_counter() - started
        return report

    async def _steps(self, report: ScriptReport) -> None:
        """Each step in turn; the first failure is recorded and skips the rest."""
        for step in self.script.steps:
            step_started = time.perf_counter()
            try:
                detail = await self._run_step(step)
            except NetkitError as error:
                seconds = time.perf_counter() - step_started
                result = StepResult(step, StepStatus.FAILED, seconds, error=error)
                report.results.append(result)
                report.error = error
                self.view.step(result)
                report.skip_rest()
                return
            result = StepResult(step, StepStatus.PASSED, time.perf_counter() - step_started, detail)
            report.results.append(result)
            self.view.step(result)

    async def _run_step(self, step: Step) -> str:
        runner = _RUNNERS[type(step)]
        if self.deadline is None:
            return await runner(self, step)
        left = self.deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(left, 0.0)):
                return await runner(self, step)
        except TimeoutError:
            raise OperationTimeout(
                words(f"{step.label}: the run did not finish within its deadline (", TIMEOUT, ")")
            ) from None

    async def _finish(self, report: ScriptReport) -> None:
        """Close the connection if the script left it open (the rule of the input's end:
        close 1000 and wait for the answer); after a failure, close without judging."""
        conn = self.conn
        if conn.closed.done():
            return
        if report.error is not None:
            conn.start_close(CloseCode.NORMAL_CLOSURE, "script failed")
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), conn.timeouts.close or _GOODBYE)
            except TimeoutError:
                conn.abort()
            return
        await conn.close_and_wait(CloseCode.NORMAL_CLOSURE)
        if conn.ws.close_received is None:
            after = f"after the last step, {self.peer}"
            if conn.close_timed_out:
                close_for = conn.timeouts.close or 0.0
                error: NetkitError = OperationTimeout(
                    words(
                        f"{after} did not answer our close frame within {close_for:g}s (",
                        Setting("close_timeout"),
                        ")",
                    )
                )
            else:
                error = ConnectionLost(f"{after} dropped the connection before answering our close")
            report.fail_outside_steps(error)

    def _close_answered(self) -> bool:
        """A close frame came from the server (read anew: it changes while a step waits)."""
        return self.conn.ws.close_received is not None

    def _report_unread(self) -> None:
        inbox = self.conn.inbox
        while not inbox.empty():
            self.view.received(*inbox.get_nowait())

    def _end(self) -> ConnectionEnd:
        conn = self.conn
        return ConnectionEnd(
            peer=self.peer,
            close_code=conn.close_code,
            close_reason=conn.close_reason,
            error=conn.ws.error or conn.error,
        )

    async def _within(self, step: Step, waiting: Awaitable[T], what: str) -> T:
        """``waiting``'s result, or the step's timeout error ("{what} within 2s")."""
        try:
            async with asyncio.timeout(step.timeout) as window:
                return await waiting
        except TimeoutError:
            if window.expired():
                raise timed_out(step, what) from None
            raise

    # --- one coroutine per kind of step -------------------------------------------------

    async def _send(self, step: Step) -> str:
        assert isinstance(step, Send)
        data, text = step.render(self.variables)
        if not self.conn.send(data, text=text):
            raise self._end().failure(step, "before the message was sent")
        self.view.sent(data, text)
        await self._within(step, self.conn.drain(), "the message was not sent")
        return show_message(text, data)

    async def _expect(self, step: Step) -> str:
        assert isinstance(step, Expect)
        item = await self._within(step, self.conn.receive(), "no message arrived")
        if item is None:
            raise self._end().failure(step, "while waiting for a message")
        is_text, data = item
        self.view.received(is_text, data)
        checked = step.matcher.check(is_text, data, self.variables, dict(step.captures))
        if not checked.ok:
            raise failed(step, checked.why)
        self.variables.update(checked.values)
        captured = "".join(f", {name}={value!r}" for name, value in checked.values.items())
        return show_message(is_text, data) + captured

    async def _wait(self, step: Step) -> str:
        assert isinstance(step, Wait)
        await asyncio.sleep(step.seconds)  # the step is a pause: it waits for nothing else
        return ""

    async def _ping(self, step: Step) -> str:
        assert isinstance(step, Ping)
        rtt = await self._within(step, self.conn.ping(step.payload), "no pong arrived")
        if rtt is None:
            raise self._end().failure(step, "while waiting for the pong")
        return f"pong in {rtt * 1000:.3f} ms"

    async def _close(self, step: Step) -> str:
        assert isinstance(step, Close)
        conn = self.conn
        if self._close_answered() or conn.closed.done():
            raise self._end().failure(step, "before our close frame")
        conn.start_close(step.code, step.reason)
        what = "the server did not answer our close frame"
        await self._within(step, asyncio.shield(conn.closed), what)
        if not self._close_answered():
            if conn.close_timed_out:
                raise OperationTimeout(
                    words(
                        f"{step.label}: {what} within its deadline (", Setting("close_timeout"), ")"
                    )
                )
            raise self._end().failure(step, "before answering our close frame")
        return f"answered with {conn.close_code}"

    async def _expect_close(self, step: Step) -> str:
        assert isinstance(step, ExpectClose)
        conn = self.conn
        await self._within(
            step, asyncio.shield(conn.closed), "the server did not close the connection"
        )
        return check_close(step, step.code, step.reason, self._end())


_RUNNERS: dict[type[Step], Callable[[ScriptRun, Step], Awaitable[str]]] = {
    Send: ScriptRun._send,
    Expect: ScriptRun._expect,
    Wait: ScriptRun._wait,
    Ping: ScriptRun._ping,
    Close: ScriptRun._close,
    ExpectClose: ScriptRun._expect_close,
}

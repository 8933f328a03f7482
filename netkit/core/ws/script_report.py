"""What a conversation script's run found: each step's result, the error the exit status is
for (an expectation failing: exit 1, a timeout: 4, the connection: 3, the server breaking the
protocol or closing with an error code: 7), and the run as a JUnit report.

Pure logic: :mod:`netkit.net.ws_script` runs the steps and records them here. Every failure
message starts with the step's label (``step 3 "login" (expect): ...``), so the one error
line names the step that failed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from netkit.core.junit import TestCase, junit_xml
from netkit.core.ws.ending import CLEAN_CLOSE, describe_close
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.script import Script, Step
from netkit.errors import (
    CheckFailed,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
    TLSError,
)


class StepStatus(enum.Enum):
    """How a step ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # an earlier step failed


@dataclass(frozen=True)
class StepResult:
    """One step's result.

    Attributes:
        step: the step.
        status: passed, failed or skipped.
        seconds: how long it took.
        detail: what happened (for a passed step: what arrived, the pong's time ...).
        error: why it failed (its class gives the exit code), or None.
    """

    step: Step
    status: StepStatus
    seconds: float = 0.0
    detail: str = ""
    error: NetkitError | None = None


def failed(step: Step, why: str) -> CheckFailed:
    """The step's check did not hold (exit 1)."""
    return CheckFailed(f"{step.label}: {why}")


def timed_out(step: Step, what: str) -> OperationTimeout:
    """``what`` did not happen within the step's timeout (exit 4)."""
    return OperationTimeout(f"{step.label}: {what} within {step.timeout:g}s")


# The errors a connection ends with, by the class the exit code is chosen for.
_KINDS: tuple[type[NetkitError], ...] = (
    TLSError,
    OperationTimeout,
    ConnectionLost,
    PeerProtocolError,
)


@dataclass(frozen=True)
class ConnectionEnd:
    """How the connection ended, as far as a step waiting on it can tell.

    Attributes:
        peer: the server (its URL).
        close_code: the server's close code; 1006 or None without a close frame.
        close_reason: its reason.
        error: what broke the connection or the protocol, if anything.
    """

    peer: str
    close_code: int | None
    close_reason: str = ""
    error: BaseException | None = None

    def failure(self, step: Step, when: str) -> NetkitError:
        """The error for ``step``; ``when`` says what the step was doing ("while waiting
        for a message", "before the message was sent").

        A broken connection or protocol keeps its class (3, 4, 5 or 7); a close without a
        close frame is 3; a close with an error code (1002, 1011, 4000 ...) is 7; a clean
        close (1000, 1001, no code) means the step's expectation failed (1).
        """
        said = f"{step.label}: "
        if self.error is not None:
            kind = next((k for k in _KINDS if isinstance(self.error, k)), ConnectionLost)
            if kind is PeerProtocolError:
                return PeerProtocolError(said + str(self.error), close_code=None)
            return kind(said + str(self.error))
        code = self.close_code
        if code is None or code == CloseCode.ABNORMAL_CLOSURE:
            return ConnectionLost(
                f"{said}connection to {self.peer} lost without a close frame (1006) {when}"
            )
        closed = f"{self.peer} closed the connection with {describe_close(code, self.close_reason)}"
        if code not in CLEAN_CLOSE:
            return PeerProtocolError(f"{said}{closed}", close_code=None)
        return CheckFailed(f"{said}{closed} {when}")


def check_close(step: Step, code: int | None, reason: str | None, end: ConnectionEnd) -> str:
    """Check the server's close against an ``expect_close`` step's code and reason.

    Returns:
        What the server sent, for the step's detail.

    Raises:
        NetkitError: it sent something else (1), or no close frame at all (3).
    """
    got = end.close_code
    no_frame = got is None or got == CloseCode.ABNORMAL_CLOSURE
    if no_frame and code == CloseCode.ABNORMAL_CLOSURE:
        return describe_close(got, "")  # the script expects the server to drop the connection
    if end.error is not None or no_frame:
        raise end.failure(step, "while waiting for the server's close frame")
    shown = describe_close(got, end.close_reason)
    if code is not None and got != code:
        raise failed(step, f"expected close code {code}, got {shown}")
    if reason is not None and end.close_reason != reason:
        raise failed(step, f"expected close reason {reason!r}, got {shown}")
    return shown


@dataclass
class ScriptReport:
    """A run of a script: the results so far and the error it ends with.

    Attributes:
        script: what ran.
        results: one per step that ran or was skipped.
        error: the first failure (a step's, or opening or closing the connection), or None.
        seconds: how long the whole run took.
    """

    script: Script
    results: list[StepResult] = field(default_factory=list)
    error: NetkitError | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        """How many steps passed."""
        return sum(r.status is StepStatus.PASSED for r in self.results)

    def fail_outside_steps(self, error: NetkitError) -> None:
        """Record a failure that is no step's (opening, or the final close); the steps not
        run yet are skipped."""
        if self.error is None:
            self.error = error
        self.skip_rest()

    def skip_rest(self) -> None:
        """Mark every step that has no result yet as skipped."""
        done = len(self.results)
        for step in self.script.steps[done:]:
            self.results.append(StepResult(step, StepStatus.SKIPPED, detail="not run"))

    def junit(self, *, timestamp: str | None = None) -> bytes:
        """The run as JUnit XML: one test case per step (``1 send``, ``2 login`` ...); a
        failure outside the steps is one more case, ``connection``."""
        suite = self.script.name or self.script.source
        cases = [
            TestCase(
                name=f"{r.step.index} {r.step.name or r.step.KIND}",
                classname=suite,
                seconds=r.seconds,
                failure=(type(r.error).__name__, str(r.error)) if r.error is not None else None,
                skipped=r.detail if r.status is StepStatus.SKIPPED else None,
                output=r.detail if r.status is StepStatus.PASSED else "",
            )
            for r in self.results
        ]
        if self.error is not None and not any(r.error is self.error for r in self.results):
            cases.append(
                TestCase("connection", suite, failure=(type(self.error).__name__, str(self.error)))
            )
        return junit_xml(suite, cases, timestamp=timestamp)

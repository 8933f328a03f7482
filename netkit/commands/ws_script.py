"""``ws-client --script FILE``: reading the conversation file, showing each step, and the
``--junit`` report. The format is :mod:`netkit.core.ws.script`; the run is
:mod:`netkit.net.ws_script`.

Output: a line per step on stdout (``ok 1 send text "hi"``, ``FAIL 3 ...``), or with
``--json`` a ``step`` event per step besides the ``sent``/``received`` events and a closing
``script`` event. A failure is the one error line (``step 3 "login" (expect): ...``) and its
exit code: 1 for an expectation, 4 for a timeout, 3 for the connection, 7 for the server
breaking the protocol or closing with an error code, 5 for TLS.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.markup import escape

from netkit.console import Output
from netkit.core.ws.script import Script, ScriptFormat, parse_script
from netkit.core.ws.script_report import ScriptReport, StepResult, StepStatus
from netkit.errors import ConfigError, NetkitError
from netkit.net.ws_client import WebSocketClientConnection
from netkit.net.ws_script import ScriptRun


def load_script(path: Path) -> Script:
    """Read and check ``--script FILE`` (YAML by a .yaml/.yml suffix, TOML by .toml).

    Raises:
        ConfigError: unreadable, not UTF-8, or not a valid script (the message names the
            line and the step).
    """
    fmt = ScriptFormat.for_name(path.name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --script {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--script {str(path)!r} is not UTF-8 text") from None
    return parse_script(text, source=str(path), fmt=fmt)


def check_junit_path(path: Path | None) -> None:
    """Refuse a ``--junit`` file that could not be written, before anything runs."""
    if path is None:
        return
    if path.is_dir() or not path.absolute().parent.is_dir():
        raise ConfigError(f"--junit {str(path)!r}: not a file in an existing directory")


class ScriptPresenter:
    """Shows a script's run: implements :class:`~netkit.net.ws_script.ScriptView`."""

    def __init__(self, out: Output, fields: Callable[[bool, bytes], dict[str, object]]) -> None:
        self.out = out
        self.fields = fields  # a message's fields in sent/received events

    def sent(self, data: bytes, text: bool) -> None:
        self.out.event("sent", None, **self.fields(text, data))

    def received(self, is_text: bool, data: bytes) -> None:
        self.out.event("received", None, **self.fields(is_text, data))

    def step(self, result: StepResult) -> None:
        step = result.step
        passed = result.status is StepStatus.PASSED
        what = step.describe() if passed else str(result.error)
        human = f"ok   {step.index} {step.name + ': ' if step.name else ''}{step.describe()}"
        if result.detail:
            human += f" -> {result.detail}"
        self.out.event(
            "step",
            escape(human) if passed else None,  # a failure is the error line on stderr
            index=step.index,
            name=step.name,
            kind=step.KIND,
            status=result.status.value,
            duration_ms=round(result.seconds * 1000, 3),
            detail=result.detail if passed else what,
            line=step.line,
        )

    def finished(self, report: ScriptReport) -> None:
        """The run is over: the ``script`` event, and for people a summary when it passed."""
        total = len(report.script.steps)
        self.out.event(
            "script",
            None,
            source=report.script.source,
            name=report.script.name,
            steps=total,
            passed=report.passed,
            failed=sum(r.status is StepStatus.FAILED for r in report.results),
            skipped=sum(r.status is StepStatus.SKIPPED for r in report.results),
            duration_s=round(report.seconds, 6),
            ok=report.error is None,
        )
        if report.error is None and not self.out.json:
            self.out.err.print(escape(f"script passed: {total} steps in {report.seconds:.3f}s"))


async def run_script(
    script: Script,
    connect: Callable[[], Awaitable[WebSocketClientConnection]],
    presenter: ScriptPresenter,
    *,
    peer: str,
    deadline: float | None,
    junit: Path | None,
) -> None:
    """Connect, run the script, write ``junit``, and raise the failure (if any).

    Raises:
        NetkitError: opening failed, a step failed, or the final close did (see the module
            docstring for the exit codes).
    """
    report = ScriptReport(script)
    try:
        try:
            conn = await connect()
        except NetkitError as error:
            report.fail_outside_steps(error)
            raise
        try:
            await ScriptRun(conn, script, presenter, peer, deadline).run(report)
        finally:
            conn.abort()  # a no-op after the closing handshake
    finally:
        if junit is not None:
            report.skip_rest()  # interrupted: the steps that did not finish did not run
            _write_junit(junit, report)
    presenter.finished(report)
    if report.error is not None:
        raise report.error


def _write_junit(path: Path, report: ScriptReport) -> None:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    try:
        path.write_bytes(report.junit(timestamp=stamp))
    except OSError as exc:
        raise ConfigError(f"cannot write --junit {str(path)!r}: {exc.strerror}") from None

"""Output for every command: rich on a terminal, plain text when piped, JSON lines with --json.

Results go to stdout, diagnostics to stderr. With ``--json`` every event is one JSON object on
one line of stdout, ``{"event": NAME, "ts": UNIX_TIME, ...fields}``; human text is not printed.
If stdout is closed early (``netkit ... | head``) output stops quietly and the command goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape


class _Console(Console):
    """A rich Console that reports a closed stdout to its Output instead of exiting (rich's
    default ``on_broken_pipe`` raises SystemExit(1))."""

    owner: Output | None = None

    def on_broken_pipe(self) -> None:
        if self.owner is not None:
            self.owner._gone()


class Output:
    """Where a command's events and messages go.

    Args:
        json_mode: print JSON lines instead of human text.
    """

    def __init__(self, json_mode: bool = False) -> None:
        self.json = json_mode
        self.out = _Console(highlight=False, soft_wrap=True)
        self.out.owner = self
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self._stdout_gone = False
        global _active
        _active = self

    @property
    def interactive(self) -> bool:
        """True when stdout is a terminal and output is human text (live widgets allowed)."""
        return not self.json and self.out.is_terminal

    def event(self, name: str, human: str | None = None, **fields: Any) -> None:
        """Report an event: a JSON line with ``--json``, else ``human`` (rich markup) if given."""
        if self.json:
            record = {"event": name, "ts": round(time.time(), 6), **fields}
            self._write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        elif human is not None:
            self.print(human)

    def print(self, text: Any = "") -> None:
        """Print human output (suppressed with ``--json``)."""
        if self.json or self._stdout_gone:
            return
        try:
            self.out.print(text)
        except BrokenPipeError:
            self._gone()

    def write_bytes(self, data: bytes) -> None:
        """Write raw bytes to stdout (``--raw`` output), flushed; quiet once the reader left."""
        if self._stdout_gone:
            return
        try:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            self._gone()

    def warn(self, message: str) -> None:
        """A diagnostic on stderr, shown in every mode."""
        self.err.print(f"[yellow]netkit: warning:[/] {escape(message)}")

    def _write(self, line: str) -> None:
        if self._stdout_gone:
            return
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except BrokenPipeError:
            self._gone()

    def _gone(self) -> None:
        # The reader went away: stop writing and point stdout at /dev/null so that the
        # interpreter's final flush does not fail either.
        if self._stdout_gone:
            return
        self._stdout_gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


_active: Output | None = None


def active_output() -> Output | None:
    """The Output of the running command, if one was made (cli.py reports errors through it)."""
    return _active

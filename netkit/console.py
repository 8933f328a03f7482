"""Output for every command: rich on a terminal, plain text when piped, JSON lines with --json.

Results go to stdout, diagnostics to stderr. With ``--json`` every event is one JSON object on
one line of stdout, ``{"event": NAME, "ts": UNIX_TIME, ...fields}``; human text is not printed.
If stdout is closed early (``netkit ... | head``) output stops quietly and the command goes on.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import sys
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
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


# The most written to stdout between flushes. A write of at most PIPE_BUF (4096 on Linux) bytes
# to a pipe is atomic, so lines from --workers processes sharing one stdout never interleave.
ATOMIC_WRITE = 4096

# How long a prepared (high-rate) event may wait in the buffer before it is flushed; any
# other event flushes it sooner.
LAZY_FLUSH_S = 0.05

# The most prepared events buffered before they are written anyway.
MAX_PENDING = 1024

_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def _timestamp(ns: int) -> str:
    # Unix time (time.time_ns()) with microseconds, as a JSON number; by hand, as round()
    # and the float's repr would cost four times as much.
    us = ns // 1000
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _scalar_json(value: Any) -> str:
    # JSON for the scalar fields of a prepared event, without building an encoder per call.
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return repr(value)
    return _ENCODER.encode(value)


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
        # JSON lines not written yet: strings, or what a prepared event formats at flush
        # time. Buffered here, not in sys.stdout, which is unbuffered under PYTHONUNBUFFERED
        # (common in containers).
        self._pending: list[Any] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        atexit.register(self.flush)
        global _active
        _active = self

    @property
    def interactive(self) -> bool:
        """True when stdout is a terminal and output is human text (live widgets allowed)."""
        return not self.json and self.out.is_terminal

    def event(self, name: str, human: str | None = None, /, **fields: Any) -> None:
        """Report an event: a JSON line with ``--json``, else ``human`` (rich markup) if given.

        ``name`` and ``human`` are positional only: an event's fields may be called so (a
        relay's ``fault_added`` names its fault).
        """
        if self.json:
            rest = _ENCODER.encode(fields)[1:-1] if fields else ""
            comma = "," if rest else ""
            self._write(
                f'{{"event":{_scalar_json(name)},"ts":{_timestamp(time.time_ns())}{comma}{rest}}}\n'
            )
        elif human is not None:
            self.print(human)

    def prepared_event(
        self, name: str, varying: tuple[str, ...], **fixed: Any
    ) -> Callable[..., None]:
        """A JSON-only :meth:`event` for events logged at a high rate (one per message).

        The line is the one :meth:`event` would print, with the ``fixed`` fields, then the
        ``varying`` ones, whose values the returned function takes in that order (scalars:
        str, int, float, bool; each field always of one type, as lines are cached by equal
        values). Everything else is encoded once, here. Inside an event loop
        a call only records the time and the values: lines are formatted and written in
        batches, within LAZY_FLUSH_S or with the next other event (a write(2) per message
        would cost more than the message). Without ``--json`` the function does nothing.
        """
        if not self.json:
            return _ignore
        head = '{"event":' + _scalar_json(name) + ',"ts":'
        encoded = "".join(f",{_scalar_json(k)}:{_ENCODER.encode(v)}" for k, v in fixed.items())
        template = encoded.replace("%", "%%")  # a %-format template from here on
        template += "".join(f",{_scalar_json(k).replace('%', '%%')}:%s" for k in varying) + "}\n"

        # The end of the line by values: a server logs the same few sizes over and over.
        ends: dict[tuple[Any, ...], str] = {}

        def line(ns: int, values: tuple[Any, ...]) -> str:
            end = ends.get(values)
            if end is None:
                end = template % tuple(map(_scalar_json, values))
                if len(ends) < MAX_PENDING:
                    ends[values] = end
            return head + _timestamp(ns) + end

        pending = self._pending

        def emit(*values: Any) -> None:
            pending.append((line, time.time_ns(), values))
            if self._flush_handle is None or len(pending) >= MAX_PENDING:
                self._flush_later()

        return emit

    def print(self, text: Any = "") -> None:
        """Print human output (suppressed with ``--json``)."""
        if self.json or self._stdout_gone:
            return
        try:
            self.flush()
            self.out.print(text)
        except BrokenPipeError:
            self._gone()

    def write_bytes(self, data: bytes) -> None:
        """Write raw bytes to stdout (``--raw`` output), flushed; quiet once the reader left."""
        if self._stdout_gone:
            return
        try:
            self.flush()
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            self._gone()

    def warn(self, message: str) -> None:
        """A diagnostic on stderr, shown in every mode."""
        self.err.print(f"[yellow]netkit: warning:[/] {escape(message)}")

    def _write(self, line: str) -> None:
        self._pending.append(line)
        self.flush()

    def _flush_later(self) -> None:
        # A prepared event was buffered: make sure a flush comes (at once without a loop).
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(LAZY_FLUSH_S, self.flush)
        if len(self._pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Write out the JSON lines not written yet, in writes of at most ATOMIC_WRITE bytes.

        Lines from --workers processes sharing a pipe never interleave: a write of at most
        PIPE_BUF bytes is atomic (one line longer than that aside).
        """
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        lines = [x if type(x) is str else x[0](x[1], x[2]) for x in self._pending]
        self._pending.clear()
        if self._stdout_gone:
            return
        try:
            chunk: list[str] = []
            size = 0
            for line in lines:
                if chunk and size + len(line) > ATOMIC_WRITE:
                    sys.stdout.write("".join(chunk))
                    sys.stdout.flush()
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            sys.stdout.write("".join(chunk))
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


def _ignore(*values: Any) -> None:
    """What :meth:`Output.prepared_event` returns without ``--json``."""


_active: Output | None = None


def active_output() -> Output | None:
    """The Output of the running command, if one was made (cli.py reports errors through it)."""
    return _active

"""ws-client's interactive prompt on a terminal, drawn by prompt_toolkit.

:class:`TerminalPrompt` reads lines with line editing and history (Up/Down, Ctrl-R, Emacs
keys) and, while :meth:`TerminalPrompt.showing` is active, prints what arrives *above* the
line being typed: every line written to ``sys.stdout``/``sys.stderr`` goes through
prompt_toolkit's ``run_in_terminal``, which erases the prompt, prints, and redraws it with
the half-typed line and the cursor where they were. What the lines mean is
:mod:`netkit.core.ws.prompt`'s business.

History: kept in memory, and in a file (:func:`default_history_path`,
``$XDG_STATE_HOME/netkit/ws_history``, else ``~/.local/state/netkit/ws_history``) when it can
be written; the file is created ``0600`` (typed messages may hold tokens) in a ``0700``
directory.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.history import FileHistory, History, InMemoryHistory


def default_history_path() -> Path:
    """``$XDG_STATE_HOME/netkit/ws_history`` (``~/.local/state/netkit/ws_history`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "netkit" / "ws_history"


def open_history(path: Path | None) -> tuple[History, str | None]:
    """The prompt's history: in ``path`` if it can be written, else in memory.

    Returns:
        The history, and when a file was asked for but cannot be written, why (a notice for
        the person at the prompt); None otherwise.
    """
    if path is None:
        return InMemoryHistory(), None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created private: a history holds what was typed, tokens included.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    except OSError as exc:
        why = exc.strerror or str(exc)
        return InMemoryHistory(), f"history kept in memory only: cannot write {path}: {why}"
    return FileHistory(path), None


class _AbovePrompt(io.TextIOBase):
    """Stands in for stdout or stderr while the prompt is up: each complete line is printed
    above the prompt with prompt_toolkit's ``run_in_terminal`` (erase the prompt, print, draw
    it again with the half-typed line), in the order written, whichever stream it came to.

    Not prompt_toolkit's ``patch_stdout``: its proxy prints from a thread of its own, which can
    race the loop drawing the prompt (a stray "> " above the first line) and, once the prompt
    is gone, let a later line overtake an earlier one.
    """

    def __init__(self, target: TextIO, pending: set[asyncio.Future[None]]) -> None:
        super().__init__()
        self._target = target
        self._pending = pending
        self._partial = ""

    def write(self, text: str) -> int:
        """Print the complete lines of ``text`` above the prompt; keep the rest for later."""
        self._partial += text
        if "\n" in self._partial:
            lines, _, self._partial = self._partial.rpartition("\n")
            self._print(lines + "\n")
        return len(text)

    def print_rest(self) -> None:
        """Print what was written after the last line ending."""
        if self._partial:
            self._print(self._partial)
            self._partial = ""

    def _print(self, lines: str) -> None:
        # What a server sent is shown, not obeyed: no escape sequences reach the terminal.
        lines = lines.replace("\x1b", "?")
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop (its end): nothing to print above
            self._emit(lines)
            return
        done = run_in_terminal(lambda: self._emit(lines))
        future = asyncio.ensure_future(done)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _emit(self, lines: str) -> None:
        self._target.write(lines)
        self._target.flush()

    def isatty(self) -> bool:
        """False: a writer that styles its output for terminals (rich) writes plain text."""
        return False

    def fileno(self) -> int:
        """The real stream's descriptor."""
        return self._target.fileno()


class TerminalPrompt:
    """Lines typed at a prompt on the terminal, and output printed above it.

    Args:
        history: where typed lines are remembered (see :func:`open_history`).
    """

    def __init__(self, history: History) -> None:
        self._session: PromptSession[str] = PromptSession(history=history)

    @asynccontextmanager
    async def showing(self) -> AsyncIterator[None]:
        """While active, output to stdout and stderr is printed above the prompt."""
        pending: set[asyncio.Future[None]] = set()
        saved = sys.stdout, sys.stderr
        sys.stdout = _AbovePrompt(saved[0], pending)
        sys.stderr = _AbovePrompt(saved[1], pending)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, _AbovePrompt):
                    stream.print_rest()
            if pending:
                await asyncio.wait(pending)  # every line printed before the streams go back
            sys.stdout, sys.stderr = saved

    @staticmethod
    def show(line: str) -> None:
        """Print ``line`` above the prompt (inside :meth:`showing`; plainly outside it)."""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def lines(self, prompt: Callable[[], str]) -> AsyncGenerator[str, None]:
        """Each line typed, until Ctrl-D on an empty line; ``prompt()`` gives the prompt text.

        A task of its own reads the lines and prompts again at once, whatever the consumer
        does with a line: between two prompts the terminal is back in cooked mode, where it
        echoes what is typed and swallows Ctrl-D.

        Ctrl-C (the terminal is in raw mode, so it is a key, not a signal) raises SIGINT in
        this process: it ends the run as Ctrl-C does anywhere else in netkit (close 1001,
        exit 130). The iterator then waits to be cancelled. When SIGINT is ignored (a
        background job), Ctrl-C only drops the line being typed.
        """
        typed: asyncio.Queue[str | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read(prompt, typed))
        try:
            while (line := await typed.get()) is not None:
                yield line
        finally:
            reader.cancel()
            await asyncio.wait({reader})  # the prompt is gone, the terminal restored

    async def _read(self, prompt: Callable[[], str], typed: asyncio.Queue[str | None]) -> None:
        while True:
            try:
                typed.put_nowait(await self._session.prompt_async(prompt))
            except EOFError:
                typed.put_nowait(None)
                return
            except KeyboardInterrupt:
                if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                    signal.raise_signal(signal.SIGINT)  # the run ends: lines() is cancelled
                    return
                # whoever started us ignores SIGINT: Ctrl-C only drops the line

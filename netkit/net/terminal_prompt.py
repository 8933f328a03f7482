"""ws-client's interactive prompt on a terminal, drawn by prompt_toolkit.

:class:`TerminalPrompt` reads lines with line editing and history (Up/Down, Ctrl-R, Emacs
keys) and, while :meth:`TerminalPrompt.showing` is active, prints what arrives *above* the
line being typed: everything written to ``sys.stdout``/``sys.stderr`` goes through
prompt_toolkit's ``patch_stdout`` proxy, which erases the prompt, prints, and redraws it with
the half-typed line and the cursor where they were. What the lines mean is
:mod:`netkit.core.ws.prompt`'s business.

History: kept in memory, and in a file (:func:`default_history_path`,
``$XDG_STATE_HOME/netkit/ws_history``, else ``~/.local/state/netkit/ws_history``) when it can
be written; the file is created ``0600`` (typed messages may hold tokens) in a ``0700``
directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout


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


class TerminalPrompt:
    """Lines typed at a prompt on the terminal, and output printed above it.

    Args:
        history: where typed lines are remembered (see :func:`open_history`).
    """

    def __init__(self, history: History) -> None:
        self._session: PromptSession[str] = PromptSession(history=history)

    @contextmanager
    def showing(self) -> Iterator[None]:
        """While active, output to stdout and stderr is printed above the prompt."""
        with patch_stdout():  # raw=False: escape sequences a server sends are not obeyed
            yield

    @staticmethod
    def show(line: str) -> None:
        """Print ``line`` above the prompt (inside :meth:`showing`; plainly outside it)."""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def lines(self, prompt: Callable[[], str]) -> AsyncIterator[str]:
        """Each line typed, until Ctrl-D on an empty line; ``prompt()`` gives the prompt text.

        Ctrl-C (the terminal is in raw mode, so it is a key, not a signal) raises SIGINT in
        this process: it ends the run as Ctrl-C does anywhere else in netkit (close 1001,
        exit 130). The iterator then waits to be cancelled. When SIGINT is ignored (a
        background job), Ctrl-C only drops the line being typed.
        """
        while True:
            try:
                line = await self._session.prompt_async(prompt)
            except EOFError:
                return
            except KeyboardInterrupt:
                if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
                    continue  # whoever started us ignores SIGINT: Ctrl-C only drops the line
                signal.raise_signal(signal.SIGINT)
                await asyncio.get_running_loop().create_future()  # until cancelled
                return
            yield line

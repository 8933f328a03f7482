"""The prompt's history file and its stand-in stdout (netkit.net.terminal_prompt), in-process."""

from __future__ import annotations

import asyncio
import io
import stat
import sys
from pathlib import Path

import pytest
from prompt_toolkit.history import FileHistory, InMemoryHistory

from netkit.net.terminal_prompt import TerminalPrompt, default_history_path, open_history

pytestmark = pytest.mark.timeout(30)


def test_history_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "netkit" / "ws_history"
    history, notice = open_history(path)
    assert isinstance(history, FileHistory) and notice is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    history.store_string("secret token")
    assert list(FileHistory(path).load_history_strings()) == ["secret token"]


def test_unwritable_history_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the directory should be
    history, notice = open_history(blocker / "ws_history")
    assert isinstance(history, InMemoryHistory)
    assert notice is not None and "memory only" in notice and str(blocker) in notice
    memory, none = open_history(None)
    assert isinstance(memory, InMemoryHistory) and none is None


def test_default_history_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_history_path() == tmp_path / "netkit" / "ws_history"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert (
        default_history_path() == tmp_path / "home" / ".local" / "state" / "netkit" / "ws_history"
    )


def test_showing_prints_lines_in_order_and_restores_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()  # stdout and stderr both: the order across them shows
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", out)
    terminal = TerminalPrompt(InMemoryHistory())

    async def main() -> None:
        async with terminal.showing():
            assert sys.stdout is not out and not sys.stdout.isatty()
            TerminalPrompt.show("one")
            sys.stdout.write('{"event": "x"}\ntw')  # a line and the start of another
            sys.stderr.write("to stderr \x1b[2J\n")  # a server's escape sequence, defused
            sys.stdout.write("o\n")
            sys.stdout.write("no line ending")
        assert sys.stdout is out and sys.stderr is out

    asyncio.run(main())
    assert out.getvalue() == 'one\n{"event": "x"}\nto stderr ?[2J\ntwo\nno line ending'

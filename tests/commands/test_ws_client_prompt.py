"""ws-client's interactive prompt on a real terminal: netkit ws-client in a tmux pane against a
netkit ws-server, driven with ``tmux send-keys`` and read with ``tmux capture-pane``.

tmux is a terminal emulator: what these tests read is the screen a person sees, with
prompt_toolkit's redrawing already applied. Every wait polls the screen under a deadline.
"""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.commands.conftest import NETKIT, run_netkit

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run)"),
]

_POLL = 0.05  # between two looks at the screen (polling, not synchronisation)


class Pane:
    """One command running in a tmux pane of its own private tmux server."""

    def __init__(self, tmp_path: Path, command: list[str], env: dict[str, str]) -> None:
        self.socket = tmp_path / "tmux.sock"
        self.status = tmp_path / "status"
        conf = tmp_path / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\n")  # keep the last screen
        # The exit status through a file: tmux 3.3a sometimes leaves a pane's ended process
        # unreaped (a zombie), and its pane_dead_status empty.
        run = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *command])
        line = f"{run}; echo $? > {shlex.quote(str(self.status))}"
        self._tmux("-f", str(conf), "new-session", "-d", "-s", "t", "-x", "200", "-y", "50", line)

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout

    def type(self, text: str) -> None:
        """Type ``text`` as it is (no key names), without Enter."""
        self._tmux("send-keys", "-t", "t", "-l", text)

    def keys(self, *names: str) -> None:
        """Press keys by tmux name: ``Enter``, ``Up``, ``C-c``, ``C-d`` ..."""
        self._tmux("send-keys", "-t", "t", *names)

    def line(self, text: str) -> None:
        """Type ``text`` and press Enter."""
        self.type(text)
        self.keys("Enter")

    def screen(self) -> list[str]:
        """The pane's lines (wrapped lines joined), trailing blank lines dropped."""
        text = self._tmux("capture-pane", "-p", "-J", "-t", "t")
        return [line.rstrip() for line in text.rstrip().split("\n")]

    def wait(self, check: Callable[[list[str]], bool], what: str, timeout: float = 15) -> None:
        """Poll the screen until ``check(lines)`` holds."""
        deadline = time.monotonic() + timeout
        while not check(lines := self.screen()):
            assert time.monotonic() < deadline, f"{what} not on the screen:\n" + "\n".join(lines)
            time.sleep(_POLL)

    def wait_for(self, text: str, count: int = 1) -> None:
        """Poll until ``text`` appears ``count`` times on the screen."""
        self.wait(lambda lines: "\n".join(lines).count(text) >= count, repr(text))

    def wait_cursor_line(self, text: str) -> None:
        """Poll until the line being typed (the last line shown) is ``text``."""
        self.wait(lambda lines: bool(lines) and lines[-1] == text, f"{text!r} as the last line")

    def exit_status(self, timeout: float = 15) -> int:
        """Wait for the command to end; its exit status."""
        deadline = time.monotonic() + timeout
        while not self.status.exists() or not self.status.read_text().endswith("\n"):
            assert time.monotonic() < deadline, "ws-client did not exit:\n" + "\n".join(
                self.screen()
            )
            time.sleep(_POLL)
        return int(self.status.read_text())

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True)


@pytest.fixture
def prompt(tmp_path: Path) -> Iterator[Callable[..., Pane]]:
    """Start ``netkit ws-client ARGS`` on a tmux terminal, its history under tmp_path."""
    panes: list[Pane] = []

    def start(*args: str) -> Pane:
        home = tmp_path / f"run{len(panes)}"
        home.mkdir()
        env = {"XDG_STATE_HOME": str(tmp_path / "state")}
        pane = Pane(home, [*NETKIT, "ws-client", *args], env)
        panes.append(pane)
        return pane

    yield start
    for pane in panes:
        pane.kill()


def test_prompt_history_ping_close(prompt, netkit_server, tmp_path):
    server = netkit_server("ws-server", "ws://127.0.0.1:0/", "--subprotocol", "chat")
    url = server.listening["url"]
    pane = prompt(url, "--subprotocol", "chat")
    pane.wait_for(f"connected to {url} (subprotocol chat)")
    pane.wait_cursor_line(">")
    pane.line("hello there")
    pane.wait_for("< hello there")
    pane.keys("Up")  # history: the previous line comes back, to be edited or sent again
    pane.wait_cursor_line("> hello there")
    pane.keys("BSpace", "BSpace", "BSpace", "BSpace", "BSpace")
    pane.line("world")
    pane.wait_for("< hello world")
    pane.line("/ping abc")
    pane.wait_for("< pong in ")
    pane.line("/nonsense")
    pane.wait_for("! unknown command /nonsense")
    pane.line("//slash")
    pane.wait_for("< /slash")
    pane.line("/close 4000 bye")
    pane.wait_for("closed: 4000 (application)")
    assert pane.exit_status() == 0
    assert server.wait_for("close")["code"] == 4000

    # The history file: private, and read back by the next run (Up recalls the last line).
    history = tmp_path / "state" / "netkit" / "ws_history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert "+hello world\n" in history.read_text()
    again = prompt(url)
    again.wait_cursor_line(">")
    again.keys("Up")
    again.wait_cursor_line("> /close 4000 bye")
    again.keys("C-u", "C-d")  # Ctrl-D on an empty line: the input ended, close 1000
    again.wait_for("closed: 1000 (normal closure)")
    assert again.exit_status() == 0


def test_half_typed_line_kept_when_a_message_arrives(prompt, netkit_server, tmp_path):
    server = netkit_server("ws-server", "ws://127.0.0.1:0/", "--mode", "broadcast")
    url = server.listening["url"]
    pane = prompt(url)
    pane.wait_cursor_line(">")
    server.wait_for("open")
    pane.type("half a li")
    pane.wait_cursor_line("> half a li")
    pusher = run_netkit("ws-client", url, "pushed to you")  # broadcast: to the prompt's client
    assert pusher.returncode == 0, pusher.stderr
    pane.wait_for("< pushed to you")
    screen = pane.screen()
    assert screen[-1] == "> half a li", screen  # still there, below what arrived
    assert screen.index("< pushed to you") < len(screen) - 1
    pane.type("ne")  # the cursor stayed at the end of the half-typed line
    pane.keys("Enter")
    pane.wait_cursor_line(">")
    history = tmp_path / "state" / "netkit" / "ws_history"
    deadline = time.monotonic() + 10
    while "+half a line\n" not in history.read_text():  # what was sent, as typed
        assert time.monotonic() < deadline, history.read_text()
        time.sleep(0.05)
    pane.keys("C-c")  # Ctrl-C: close 1001 "going away", exit 130, as without a prompt
    pane.wait_for("closed: 1001 (going away)")
    assert pane.exit_status() == 130


def test_binary_and_hex(prompt, netkit_server):
    server = netkit_server("ws-server", "ws://127.0.0.1:0/")
    pane = prompt(server.listening["url"])
    pane.wait_cursor_line(">")
    pane.line("/binary abc")  # once, as binary
    pane.wait_for("< [binary, 3 bytes] 61 62 63")
    pane.line("/binary")  # alone: every line as binary until /binary again
    pane.wait_cursor_line("binary>")
    pane.line("xyz")
    pane.wait_for("< [binary, 3 bytes] 78 79 7a")
    pane.line("//x")
    pane.wait_for("< [binary, 2 bytes] 2f 78")
    pane.line("/binary")
    pane.wait_cursor_line(">")
    pane.line("/hex 00ff")
    pane.wait_for("< [binary, 2 bytes] 00 ff")
    pane.line("/hex")  # hex mode: lines are hex, binary shown whole
    pane.wait_cursor_line("hex>")
    pane.line("zz")
    pane.wait_for("! 'zz' is not hex bytes")
    pane.line("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11")
    pane.wait_for("< [binary] 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11")
    pane.line("/binary text")
    pane.wait_for("< [binary] 74 65 78 74")
    pane.line("/quit")
    pane.wait_for("closed: 1000 (normal closure)")
    assert pane.exit_status() == 0
    assert server.stop() == 0
    assert server.event("close")["messages_in"] == 6


def test_timestamps(prompt, netkit_server):
    server = netkit_server("ws-server", "ws://127.0.0.1:0/")
    pane = prompt(server.listening["url"], "--timestamps")
    pane.wait_cursor_line(">")
    pane.line("stamp me")
    stamped = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} < stamp me$")
    pane.wait(lambda lines: any(stamped.match(line) for line in lines), "a timestamped reply")
    pane.line("/close")
    pane.wait(
        lambda lines: any(re.match(r"^\d\d:\d\d:\d\d\.\d{3} closed: 1000", x) for x in lines),
        "a timestamped close",
    )
    assert pane.exit_status() == 0


def test_json_on_a_terminal_is_still_a_prompt(prompt, netkit_server):
    server = netkit_server("ws-server", "ws://127.0.0.1:0/")
    pane = prompt(server.listening["url"], "--json")
    pane.wait_for('"event":"open"')
    pane.wait_cursor_line(">")
    pane.type("half")
    pane.wait_cursor_line("> half")
    pane.keys("Enter")
    pane.wait_for('"event":"received"')
    pane.wait_cursor_line(">")
    screen = pane.screen()
    (received,) = [line for line in screen if '"event":"received"' in line]
    assert '"text":"half"' in received and "< half" not in "\n".join(screen)
    pane.line("/nope")
    pane.wait_for("! unknown command /nope")  # notices still reach the person, on stderr
    pane.keys("C-d")
    pane.wait_for('"event":"summary"')
    assert pane.exit_status() == 0


def test_piped_stdin_is_not_a_prompt(netkit_server):
    # stdin a pipe: every line is a text message as it is (no /commands), as before the prompt;
    # --timestamps stamps the lines printed there too.
    server = netkit_server("ws-server", "ws://127.0.0.1:0/")
    result = run_netkit(
        "ws-client", server.listening["url"], "--timestamps", input=b"/binary x\n//y\n"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [re.sub(r"^\d\d:\d\d:\d\d\.\d{3} ", "", line) for line in lines] == ["/binary x", "//y"]
    assert all(re.match(r"^\d\d:\d\d:\d\d\.\d{3} /", line) for line in lines), lines

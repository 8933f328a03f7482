"""Every README example marked runnable is run, the way a person pasting it would.

Marking: an HTML comment ``<!-- runnable -->`` on the line before a fenced ``sh`` block. In
such a block:

- ``# ...`` lines are comments; a trailing ``# exit N`` says the command exits N (default 0);
- a line ending in ``&`` starts a server: it runs with ``--json``, its loopback listen address
  (``:7007``, ``127.0.0.1:7007``, ``ws://127.0.0.1:8765/``) becomes port 0, and once its
  ``listening`` event arrives, that README port is replaced by the real one in every later line;
- ``kill ...`` lines (how a person stops the servers) are skipped: the test stops every server
  with SIGTERM at the end of the block and expects exit 0;
- paths under ``/tmp/`` move into a private temporary directory, which is also the working
  directory.

Everything stays on loopback, and every command and wait has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARK = "<!-- runnable -->"
# A loopback address with a port, alone or inside a ws:// or udp:// URL.
LOOPBACK_PORT = re.compile(
    r"^(?:ws://|wss://|udp://)?(?:127\.0\.0\.1|localhost|\[::1\])?:(\d+)(?:/.*)?$"
)
COMMAND_TIMEOUT = 30
LISTEN_TIMEOUT = 15


@dataclass
class Block:
    """One runnable block: where it is in the README and its commands."""

    line: int
    commands: list[str]

    @property
    def name(self) -> str:
        first = next((c for c in self.commands if c.startswith("netkit")), self.commands[0])
        return f"README.md:{self.line}: {' '.join(first.split()[:3])}"


def runnable_blocks(text: str) -> list[Block]:
    """The fenced blocks that follow a runnable mark, continuation lines joined."""
    lines = text.splitlines()
    blocks: list[Block] = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        start = i + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        assert start < len(lines) and lines[start].startswith("```"), (
            f"README.md:{i + 1}: {MARK} must precede a ``` block"
        )
        commands: list[str] = []
        pending = ""
        for body in lines[start + 1 :]:
            if body.startswith("```"):
                break
            if body.rstrip().endswith("\\"):
                pending += body.rstrip()[:-1] + " "
                continue
            full = (pending + body).strip()
            pending = ""
            if full and not full.startswith("#"):
                commands.append(full)
        blocks.append(Block(start + 1, commands))
    return blocks


BLOCKS = runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 8, [b.name for b in BLOCKS]


@dataclass
class Server:
    """A background command from the README."""

    proc: subprocess.Popen[bytes]
    line: str
    output: bytes = b""

    def _read(self, timeout: float) -> bool | None:
        """Read what stdout has within ``timeout``: True if it read, None if nothing, False at EOF."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        self.output += chunk
        return bool(chunk)

    def _events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.output.split(b"\n")[:-1] if line.strip()]

    def listening(self) -> dict[str, object]:
        """Read stdout until the ``listening`` event."""
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while True:
            for event in self._events():
                if event.get("event") == "listening":
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no listening event from: {self.line}")
            if self._read(left) is False:
                raise AssertionError(f"exited before listening ({self.proc.wait()}): {self.line}")

    def finishing(self) -> bool:
        """True when it already printed its summary (``listen --count`` ends by itself)."""
        while self._read(0):
            pass
        return any(event.get("event") == "summary" for event in self._events())


class Session:
    """Runs one block's commands, keeping the port map and the servers."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports: dict[str, str] = {}
        self.servers: list[Server] = []

    def substitute(self, line: str) -> str:
        line = line.replace("/tmp/", f"{self.tmp}/")
        for readme, real in self.ports.items():
            line = re.sub(rf"(?<=:){readme}\b", real, line)
        return line

    def start(self, line: str) -> None:
        words = shlex.split(line.removesuffix("&"), comments=True)
        assert words[0] == "netkit", f"a background line must be one netkit command: {line}"
        listen_at = next((i for i, w in enumerate(words) if LOOPBACK_PORT.match(w)), None)
        readme_port = None
        if listen_at is not None:
            match = LOOPBACK_PORT.match(words[listen_at])
            assert match is not None
            readme_port = match.group(1)
            words[listen_at] = words[listen_at].replace(f":{readme_port}", ":0", 1)
        # --api/--metrics :PORT: the real port comes in the event's api/metrics field
        control: dict[str, str] = {}
        for flag in ("--api", "--metrics"):
            if flag in words[:-1] and (found := LOOPBACK_PORT.match(words[words.index(flag) + 1])):
                control[flag[2:]] = found.group(1)
                at = words.index(flag) + 1
                words[at] = words[at].replace(f":{found.group(1)}", ":0", 1)
        words = [self.substitute(w) for w in words]
        if "--json" not in words:
            words.append("--json")
        proc = subprocess.Popen(
            [sys.executable, "-m", "netkit", *words[1:]],
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        server = Server(proc, line)
        self.servers.append(server)
        event = server.listening()
        if readme_port is not None:
            real = re.search(r":(\d+)(?:/.*)?$", str(event["address"]))
            assert real is not None, event
            self.ports[readme_port] = real.group(1)
        for field, port in control.items():
            if port != readme_port:
                self.ports[port] = str(event[field]).rpartition(":")[2]

    def run(self, line: str) -> None:
        expected = 0
        if match := re.search(r"#\s*exit (\d+)\b", line):
            expected = int(match.group(1))
        script = f'netkit() {{ "{sys.executable}" -m netkit "$@"; }}\nset -o pipefail\n{self.substitute(line)}\n'
        result = subprocess.run(
            ["bash", "--norc", "-c", script],
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == expected, (
            f"{line}\nexit {result.returncode}, expected {expected}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
        )

    def stop(self) -> list[str]:
        """SIGTERM every server still running (last first); the ones that did not exit 0."""
        failures = []
        for server in reversed(self.servers):
            if server.proc.poll() is None and not server.finishing():
                server.proc.send_signal(signal.SIGTERM)
            try:
                rc = server.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                rc = server.proc.wait()
            err = server.proc.stderr.read().decode(errors="replace") if server.proc.stderr else ""
            for stream in (server.proc.stdout, server.proc.stderr):
                if stream is not None:
                    stream.close()
            if rc != 0:
                failures.append(f"{server.line}: exit {rc}: {err[-1000:]}")
        return failures


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_readme_example_runs(block: Block, tmp_path: Path) -> None:
    session = Session(tmp_path)
    try:
        for line in block.commands:
            if line.split()[0] == "kill":
                continue
            if line.endswith("&"):
                session.start(line)
            else:
                session.run(line)
    finally:
        failures = session.stop()
    assert not failures, "\n".join(failures)


# --- what the README says besides its runnable blocks ---------------------------------------

README = (ROOT / "README.md").read_text(encoding="utf-8")
# A command and, on the next line, the JSON line it prints: "netkit ... --json\n# -> {...}".
SAMPLE = re.compile(r"^netkit (?P<command>.+ --json)\n# -> (?P<line>\{.*\})$", re.MULTILINE)
# Fields whose value depends on the run or the machine: only their kind is compared.
VARYING = {"ts", "address", "max_open_files", "loop"}


@pytest.mark.timeout(60)
def test_readme_sample_json_lines_are_what_netkit_prints(tmp_path: Path) -> None:
    samples = SAMPLE.findall(README)
    assert samples, "the README shows no sample --json line any more"
    for command, line in samples:
        expected = json.loads(line.replace("...", "null"))
        session = Session(tmp_path)
        try:
            session.start(f"netkit {command} &")
            got = session.servers[-1].listening()
        finally:
            failures = session.stop()
        assert not failures, failures
        assert list(got) == list(expected), f"README shows {line}\nnetkit prints {got}"
        for key, value in expected.items():
            if key in VARYING:
                assert type(got[key]) is type(value) or value is None, (key, got[key])
            else:
                assert got[key] == value, (key, got[key], value)


def _man_block() -> list[str]:
    """The commands of the README's block that shows how to reach the man pages (or [])."""
    section = README.split("## Man pages and shell completion", 1)[1].split("\n## ", 1)[0]
    for block in section.split("```sh\n")[1:]:
        body = block.split("```", 1)[0]
        lines = [line.split("#", 1)[0].strip() for line in body.splitlines()]
        commands = [line for line in lines if line]
        # Only a block of man commands: never run the completion block (it edits ~/.bashrc).
        if commands and all(re.search(r"\bman (-l |netkit)", c) for c in commands):
            return commands
    return []


@pytest.mark.timeout(60)
def test_readme_ways_to_reach_the_man_pages_work(tmp_path: Path) -> None:
    # "man netkit" failed right after the README's install (#13 item 24): each way the README
    # gives is run here against a real venv laid out as pip installs the pages.
    commands = _man_block()
    assert len(commands) >= 3, "the README shows no block of ways to reach the man pages"
    if shutil.which("man") is None or shutil.which("manpath") is None:
        pytest.skip("man-db is not installed")
    venv = tmp_path / ".venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["tool"]["setuptools"]["data-files"]["share/man/man1"] == ["man/*.1"]
    pages = venv / "share" / "man" / "man1"
    pages.mkdir(parents=True)
    for page in (ROOT / "man").glob("*.1"):
        shutil.copy(page, pages)
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    for command in commands:
        # -w: where the page is, instead of showing it.
        located = command.replace("man -l ", "man -w -l ").replace("man netkit", "man -w netkit")
        result = subprocess.run(
            ["bash", "--norc", "-c", located],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 0, (command, result.stderr)
        found = (tmp_path / result.stdout.strip()).resolve()
        assert found.parent == pages.resolve(), (command, result.stdout)

"""Run netkit as a subprocess, the way people and scripts do."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

NETKIT = [sys.executable, "-m", "netkit"]


def run_netkit(
    *args: str, input: bytes | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run ``netkit ARGS`` to completion and capture its output."""
    return subprocess.run(
        [*NETKIT, *args],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse every line of ``--json`` output."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(stderr: str) -> None:
    """A clean failure: exactly one line on stderr, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert "error" in lines[0]


@dataclass
class ServerProcess:
    """A netkit server started with ``--json``; ``address`` comes from its listening event."""

    proc: subprocess.Popen[bytes]
    listening: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    _pending: bytes = b""

    @property
    def address(self) -> str:
        return str(self.listening["address"])

    def read_event(self, timeout: float = 10) -> dict[str, Any]:
        """Wait for the next JSON event on stdout."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event from the server in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError("server closed stdout: " + self.stderr_text())
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        event = json.loads(line)
        self.events.append(event)
        return event

    def wait_for(self, name: str, timeout: float = 10) -> dict[str, Any]:
        """Read events until one called ``name``."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.read_event(max(0.01, deadline - time.monotonic()))
            if event["event"] == name:
                return event

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` and wait for the exit code; remaining events are collected."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 15) -> int:
        """Wait for a server that was already told to stop; remaining events are collected."""
        rc = self.proc.wait(timeout=timeout)
        assert self.proc.stdout is not None
        rest = self._pending + self.proc.stdout.read()
        self._pending = b""
        self.events += [json.loads(line) for line in rest.splitlines() if line.strip()]
        return rc

    def stderr_text(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def event(self, name: str) -> dict[str, Any]:
        """The last collected event called ``name``."""
        matches = [e for e in self.events if e["event"] == name]
        assert matches, f"no {name!r} event in {self.events}"
        return matches[-1]


@pytest.fixture
def netkit_server() -> Iterator[Any]:
    """Start ``netkit ARGS --json`` and return once it printed its listening event."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        proc = subprocess.Popen(
            [*NETKIT, *args, "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        server = ServerProcess(proc, {})
        started.append(server)
        try:
            server.listening = server.wait_for("listening")
        except (EOFError, TimeoutError):
            proc.kill()
            proc.wait()
            raise
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        for stream in (server.proc.stdout, server.proc.stderr):
            if stream is not None:
                stream.close()

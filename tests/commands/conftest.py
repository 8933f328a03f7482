"""Run netkit as a subprocess, the way people and scripts do."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

NETKIT = [sys.executable, "-m", "netkit"]

# A suite started as a background job of a script (`pytest &` in a shell without job control)
# inherits SIGINT ignored, and so would every netkit it starts (an ignored signal survives
# exec): ws-client, which honours an ignored SIGINT as Python does, then never saw the Ctrl-C
# of test_ws_client's Ctrl-C test. A terminal's Ctrl-C reaches a foreground process, where
# SIGINT is not ignored: give the children that.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """PEM files as a user passes them: ``ca``, ``chain`` (certificate chain) and ``key``."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {
        "ca": tmp_path / "ca.pem",
        "chain": tmp_path / "chain.pem",
        "key": tmp_path / "key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["chain"]))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(paths["chain"]), append=True)
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return {k: str(v) for k, v in paths.items()}


@dataclass
class ServerProcess:
    """A netkit server started with ``--json``; ``address`` comes from its listening event.

    A thread reads its stdout all the time, so a server that logs an event per connection or
    per message never blocks on a full pipe; tests take the events from a queue.
    """

    proc: subprocess.Popen[bytes]
    listening: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    _queue: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._queue.put(json.loads(line))
        self._queue.put(None)  # EOF

    @property
    def address(self) -> str:
        return str(self.listening["address"])

    def read_event(self, timeout: float = 10) -> dict[str, Any]:
        """Wait for the next JSON event on stdout."""
        try:
            event = self._queue.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            raise TimeoutError("no event from the server in time") from None
        if event is None:
            self._queue.put(None)
            raise EOFError("server closed stdout: " + self.stderr_text())
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
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        while (event := self._queue.get_nowait() if not self._queue.empty() else None) is not None:
            self.events.append(event)
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


def start_netkit(*args: str) -> ServerProcess:
    """Start ``netkit ARGS --json`` and return once it printed its listening event (the
    caller stops it: :meth:`ServerProcess.stop`, or the ``netkit_server`` fixture)."""
    proc = subprocess.Popen(
        [*NETKIT, *args, "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = ServerProcess(proc, {})
    try:
        server.listening = server.wait_for("listening")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return server


@pytest.fixture
def netkit_server() -> Iterator[Any]:
    """Start ``netkit ARGS --json`` and return once it printed its listening event."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = start_netkit(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        if server._reader is not None:
            # Closing stdout under the reader thread's read makes that thread raise
            # ("PyMemoryView_FromBuffer(): info->buf must not be NULL"), which pytest then
            # pins on whichever test runs next: let it reach EOF first.
            server._reader.join(timeout=5)
        for stream in (server.proc.stdout, server.proc.stderr):
            if stream is not None:
                stream.close()

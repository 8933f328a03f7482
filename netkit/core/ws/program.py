"""Serving a program over WebSocket (``ws-server --exec``), sans-I/O: websocketd's model.

One process per connection. :class:`Framing` says how messages and the process's streams
meet: ``LINES`` (each message is a line on stdin; each line of stdout a text message) or
``BINARY`` (messages to stdin raw; each chunk of stdout a binary message).
:class:`LineSplitter` cuts a stream into lines (stdout's messages, stderr's log lines),
:func:`program_environment` builds the CGI-style variables websocketd gives its processes
(``libwebsocketd/env.go``), and :func:`exit_close` words a process's end as a close frame
(1000 for exit status 0, 1011 with the status otherwise).
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from netkit.core.ws.events import Request
from netkit.core.ws.frames import CloseCode

__all__ = [
    "PASSED_ENVIRONMENT",
    "Framing",
    "LineSplitter",
    "Program",
    "exit_close",
    "program_environment",
    "split_host",
]

# What a process keeps of the server's own environment; websocketd's default --passenv on
# Linux. Everything else is cleared so that the server's secrets do not leak to the program.
PASSED_ENVIRONMENT = ("PATH", "LD_LIBRARY_PATH")


class Framing(enum.Enum):
    """How messages map to the process's stdin and stdout (``--binary`` or not)."""

    LINES = "lines"  # a message is a line of stdin; a line of stdout a text message
    BINARY = "binary"  # messages raw to stdin; each chunk of stdout a binary message

    @property
    def line_end(self) -> bytes:
        """What follows each message on stdin: a newline for lines, nothing for binary."""
        return b"\n" if self is Framing.LINES else b""


@dataclass(frozen=True)
class Program:
    """What ``--exec`` runs for each connection.

    Attributes:
        command: a shell command line, run as ``/bin/sh -c COMMAND`` (pipelines work; the
            environment's variables expand in it).
        framing: how messages meet stdin and stdout.
        kill_after: seconds between TERM and KILL when the client goes first.
        max_line: the longest line sent as one message (or logged from stderr as one
            event); a longer line is cut into pieces of this size.
    """

    command: str
    framing: Framing = Framing.LINES
    kill_after: float = 2.0
    max_line: int = 1 << 20

    @property
    def argv(self) -> tuple[str, ...]:
        """The process's arguments."""
        return ("/bin/sh", "-c", self.command)


class LineSplitter:
    """Cuts a byte stream into lines, without their ``\\n`` or ``\\r\\n`` (websocketd's
    ``trimEOL``), never holding more than ``max_line`` bytes of a line.

    Args:
        max_line: a line longer than this comes out in pieces of this size.
    """

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self._partial = b""
        self._cut_open = False  # pieces of the line in _partial went out already

    def feed(self, data: bytes) -> list[bytes]:
        """The lines that ``data`` completes (the rest is kept for the next call)."""
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # after the last newline: b"" when data ended one
        # Each test runs on the chunk once, in C: the common chunk holds short lines, no \r.
        if len(data) > self.max_line and (
            len(self._partial) >= self.max_line or max(map(len, lines), default=0) > self.max_line
        ):
            return self._cut(lines)
        if b"\r" in data:
            for i, line in enumerate(lines):
                if line.endswith(b"\r"):
                    lines[i] = line[:-1]
        if lines and self._cut_open:
            self._cut_open = False
            if not lines[0]:  # the end of a line whose pieces went out: no empty message
                del lines[0]
        return lines

    def _cut(self, lines: list[bytes]) -> list[bytes]:
        # The slow path: some line is over the limit.
        out: list[bytes] = []
        step = self.max_line
        for line in lines:
            line = line[:-1] if line.endswith(b"\r") else line
            out.extend(line[i : i + step] for i in range(0, len(line), step))
            if not line and not self._cut_open:
                out.append(line)  # an empty line; not the end of one already sent in pieces
            self._cut_open = False
        # Whole pieces of the unfinished line go now (memory stays bounded); a last \r waits,
        # as it may be the start of the line's \r\n. Where the reads fell never changes
        # what comes out (tests/core/ws/test_ws_program.py splits a stream at every byte).
        partial = self._partial
        ready = len(partial) - partial.endswith(b"\r")
        whole = ready - ready % step
        if whole:
            out.extend(partial[i : i + step] for i in range(0, whole, step))
            self._cut_open = True
        self._partial = partial[whole:]
        return out

    def end(self) -> bytes | None:
        """The stream ended: what followed its last newline, or None when nothing did."""
        rest, self._partial = self._partial, b""
        cut_open, self._cut_open = self._cut_open, False
        if not rest:
            return None
        rest = rest[:-1] if rest.endswith(b"\r") else rest
        return None if cut_open and not rest else rest  # a \r after the pieces: no message


def split_host(host: str, secure: bool) -> tuple[str, str]:
    """``SERVER_NAME`` and ``SERVER_PORT`` from a ``Host`` header (websocketd's
    ``tellHostPort``): ``example.com:8080`` -> (``example.com``, ``8080``); without a port,
    80 (443 with TLS); ``[::1]:80`` -> (``::1``, ``80``)."""
    default = "443" if secure else "80"
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") and rest[1:] else default
    name, colon, port = host.rpartition(":")
    if not colon or not port.isdigit():
        return host, default
    return name, port


def _clean(value: str) -> str:
    # appendEnv: newlines become spaces, then surrounding spaces go.
    return value.replace("\n", " ").replace("\r", " ").strip()


def program_environment(
    request: Request,
    *,
    remote: tuple[str, int] | None,
    secure: bool,
    unique_id: str,
    server_software: str,
    parent: Mapping[str, str],
) -> dict[str, str]:
    """The environment of the process serving ``request``, as websocketd builds it.

    The CGI variables (RFC 3875: ``REMOTE_ADDR``, ``SERVER_NAME``, ``QUERY_STRING`` ...),
    websocketd's additions (``REMOTE_PORT``, ``REQUEST_URI``, ``UNIQUE_ID``), ``HTTPS=on``
    with TLS, and ``HTTP_<NAME>`` for every request header (dashes as underscores, repeated
    headers joined with ", "). Unlike websocketd (whose Go server takes ``Host`` out of the
    headers) ``HTTP_HOST`` is set too. A ``Proxy`` header is skipped: ``HTTP_PROXY`` would
    point the program's HTTP libraries at a proxy of the client's choosing ("httpoxy", as
    Go's net/http/cgi also skips it).

    Args:
        remote: the client's address and port; None on a Unix socket (both empty).
        secure: the connection is TLS.
        unique_id: the connection's ``UNIQUE_ID``.
        server_software: ``SERVER_SOFTWARE`` (``netkit/0.1.0``).
        parent: the server's environment; only :data:`PASSED_ENVIRONMENT` is kept.
    """
    path, _, query = request.target.partition("?")
    host = request.headers.get("Host") or ""
    server_name, server_port = split_host(host, secure) if host else ("", "")
    addr, port = (remote[0], str(remote[1])) if remote is not None else ("", "")
    env = {name: parent[name] for name in PASSED_ENVIRONMENT if name in parent}
    env.update(
        SERVER_SOFTWARE=server_software,
        REMOTE_ADDR=addr,
        REMOTE_HOST=addr,  # websocketd without --reverselookup
        SERVER_NAME=server_name,
        SERVER_PORT=server_port,
        SERVER_PROTOCOL=request.version,
        GATEWAY_INTERFACE="CGI/1.1",
        REQUEST_METHOD=request.method,
        SCRIPT_NAME="/",
        PATH_INFO=path,
        PATH_TRANSLATED=path,
        QUERY_STRING=query,
        # Cleared, as websocketd does, so that none leaks in from elsewhere.
        AUTH_TYPE="",
        CONTENT_LENGTH="",
        CONTENT_TYPE="",
        REMOTE_IDENT="",
        REMOTE_USER="",
        UNIQUE_ID=unique_id,
        REMOTE_PORT=port,
        REQUEST_URI=request.target,
    )
    if secure:
        env["HTTPS"] = "on"
    headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        if key != "HTTP_PROXY":
            headers.setdefault(key, []).append(_clean(value))
    env.update((key, ", ".join(values)) for key, values in headers.items())
    return env


def exit_close(returncode: int) -> tuple[int, str]:
    """The close code and reason for a process that ended with ``returncode`` (as
    :mod:`subprocess` reports it: negative for a signal): 1000 for 0, else 1011 with
    ``exit status N`` or ``killed by SIGNAME``."""
    if returncode == 0:
        return CloseCode.NORMAL_CLOSURE, ""
    return CloseCode.INTERNAL_ERROR, exit_description(returncode)


def exit_description(returncode: int) -> str:
    """``exit status N``, or ``killed by SIGNAME`` for a negative ``returncode``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"

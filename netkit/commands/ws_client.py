"""``netkit ws-client``: a WebSocket client for people (a wscat-like prompt) and for scripts.

Exit codes (the rule ``--help`` documents):

* 0: the server closed cleanly (1000, 1001, or a close frame without a code) after our
  messages; or ``--count``/``--expect`` was satisfied; or the input ended (end of stdin, or
  the last message when stdin is not read: websocat's rule); or we closed on request
  (``/close``, ``/quit``, end of input at the prompt). Whenever we close (1000 or
  ``--close-code``), success also needs the server to answer our close frame within
  ``--close-timeout``.
* 1: ``--count``/``--expect`` not satisfied when the server closed cleanly or ``--timeout``
  passed (by default 10 s after the input ended).
* 3: the connection failed, or dropped without a close frame (1006), our close included.
* 4: ``--open-timeout`` or ``--timeout`` passed before the connection was open; without
  ``--count``/``--expect``, ``--timeout`` passed; the server did not answer our close within
  ``--close-timeout``; or a keepalive ping went unanswered (``--ping-timeout``).
* 5: TLS failed, a server refusing our client certificate (its TLS alert) included.
* 2: bad URL or options.
* 7: the upgrade was refused (the HTTP status is in the message), the server broke the
  protocol, or it closed with any other code (1002, 1008, 1011, 4000 ...; code and reason in
  the message).
* 130: Ctrl-C (we close with 1001 "going away", or ``--close-code``, first).

A failure of the connection itself (3, 7) wins over an unsatisfied ``--count``/``--expect``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from netkit.commands import options as opt
from netkit.console import Output
from netkit.core.addresses import WSURL, parse_ws_url
from netkit.core.units import parse_duration, parse_size
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.frames import CloseCode, is_valid_close_code
from netkit.errors import (
    CheckFailed,
    ConfigError,
    ConnectionLost,
    OperationTimeout,
    PeerProtocolError,
)
from netkit.net import runtime
from netkit.net.tls import client_context
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection, connect_ws
from netkit.status import ExitStatus

NAME = "ws-client"

app = typer.Typer()

_CLEAN_CLOSE = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD})
_HEX_PREVIEW = 16
# Default deadlines, as the websockets library's open_timeout and close_timeout.
_OPEN_TIMEOUT = "10s"
_CLOSE_TIMEOUT = "10s"
# With --count/--expect and no --timeout: how long replies may take once the input ended.
_REPLY_WAIT = 10.0
_MAX_MESSAGE = 1 << 30

HELP_COMMANDS = "/ping [data], /close [code [reason]], /quit (or Ctrl-D); '//text' sends '/text'"


# Paragraphs are single lines: typer's rich help keeps line breaks inside a paragraph.
HELP = escape(
    "\n\n".join(
        [
            "Talk to a WebSocket server: send messages, print what comes back.",
            "Sends the MESSAGES, then each --file, then each line of stdin unless stdin is a "
            "terminal. Text messages print as lines, binary ones as a hex summary (--raw: the "
            "bytes). On a terminal with no messages: a prompt; lines are sent, '< ' marks what "
            "arrives, and " + HELP_COMMANDS + ".",
            "When it stops: with --count/--expect, as soon as they are satisfied (it sends "
            "close 1000 or --close-code, waits for the server's close, exits 0), or when they "
            "fail: exit 1 if the server closes or --timeout passes first (default: 10s after "
            "the input ended). Otherwise when the input ends (end of stdin, or the last "
            "message when stdin is a terminal): it sends close 1000, prints what still "
            "arrives and exits 0 once the server answers the close; or when the server closes "
            "(exit 0 for 1000/1001), --timeout passes (exit 4), or Ctrl-C (close 1001, exit "
            "130).",
            "Default deadlines: --open-timeout 10s (TCP connect, TLS and upgrade together), "
            "--close-timeout 10s (for the server's answer to our close; unanswered: exit 4), "
            "--ping-interval 20s and --ping-timeout 20s, and with --count/--expect 10s for "
            "replies once the input ended. --timeout (none by default) bounds the whole run, "
            "opening included.",
            "Exit 3 when the connection fails or drops without a close frame (1006), 4 when "
            "a deadline passes (--open-timeout, --timeout without --count/--expect, "
            "--close-timeout, --ping-timeout), 5 on TLS failures (a server refusing our client "
            "certificate included), 7 when the upgrade is refused (HTTP "
            "status shown), the server breaks the protocol, or it closes with any other code "
            "(1002, 1008, 1011, 4000 ...: code and reason shown); a broken connection wins over "
            "an unmet --count/--expect. The close code and reason are always reported.",
        ]
    )
)


# --- what to send --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One message to send."""

    data: bytes
    text: bool


def _outgoing(messages: list[str], files: list[Path], binary: bool) -> list[Outgoing]:
    """The messages from the command line: arguments first, then each file as one message."""
    out = [Outgoing(m.encode(), not binary) for m in messages]
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read --file {str(path)!r}: {exc.strerror}") from None
        if not binary:
            _check_text(data, f"--file {str(path)!r}")
        out.append(Outgoing(data, not binary))
    return out


def _check_text(data: bytes, what: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text (send it with --binary)") from None


def _parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon:
        raise ConfigError(f"--header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def build_handshake(
    url: WSURL,
    *,
    headers: list[str],
    subprotocols: list[str],
    origin: str | None,
    compress: bool,
) -> ClientHandshake:
    """The upgrade request the options describe (checked by :meth:`ClientHandshake.from_url`).

    Raises:
        ConfigError: a malformed header or subprotocol, or credentials given twice.
    """
    return ClientHandshake.from_url(
        url,
        headers=[_parse_header(text) for text in headers],
        subprotocols=subprotocols,
        origin=origin,
        compress=compress,
    )


# --- what to wait for ----------------------------------------------------------------------


@dataclass
class Expectation:
    """``--count`` and ``--expect``: when the client is done, and whether that is a success.

    * ``--count N``: satisfied by the N-th message.
    * ``--expect RE`` (repeatable): each pattern must match a message (``re.search``), in
      order, each a later message than the one before; satisfied when the last one matched.
      Binary messages are matched as UTF-8 with undecodable bytes replaced.
    * both: satisfied when every pattern matched among the first N messages; failed once N
      came without that.
    """

    count: int | None = None
    patterns: tuple[re.Pattern[str], ...] = ()
    received: int = 0
    matched: int = 0  # how many patterns matched so far

    @property
    def active(self) -> bool:
        """True when there is something to wait for."""
        return self.count is not None or bool(self.patterns)

    def feed(self, data: bytes) -> bool | None:
        """Record one received message: True when satisfied, False when it no longer can be."""
        self.received += 1
        if self.patterns:
            if self.patterns[self.matched].search(data.decode("utf-8", "replace")):
                self.matched += 1
                if self.matched == len(self.patterns):
                    return True
            if self.count is not None and self.received >= self.count:
                return False
            return None
        if self.count is not None and self.received >= self.count:
            return True
        return None

    def failure(self, why: str) -> str:
        """Say what was not met, and why (``why``: "before ...", "within ...")."""
        got = f"{self.received} message{'s' if self.received != 1 else ''} received"
        if not self.patterns:
            return f"--count {self.count}: {got} {why}"
        what = f"no message matched --expect {self.patterns[self.matched].pattern!r}"
        if len(self.patterns) > 1:
            what += f" (pattern {self.matched + 1} of {len(self.patterns)})"
        if self.count is not None and self.received >= self.count:
            return f"{what} in the first {self.count}"
        return f"{what} ({got}) {why}"


# --- the prompt ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptCommand:
    """One line typed at the prompt.

    Attributes:
        kind: ``send`` (``text`` is the message), ``ping`` (``text`` is the payload),
            ``close`` (``code``, None for the default; ``text`` is the reason), ``quit``, or ``error`` (``text``
            says what is wrong).
    """

    kind: str
    text: str = ""
    code: int | None = None


def parse_prompt_line(line: str) -> PromptCommand:
    """Parse a line typed at the prompt: a message, or ``/ping``, ``/close``, ``/quit``."""
    if not line.startswith("/"):
        return PromptCommand("send", line)
    if line.startswith("//"):
        return PromptCommand("send", line[1:])
    word, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    if word == "ping":
        if len(rest.encode()) > 125:
            return PromptCommand("error", "a ping carries at most 125 bytes")
        return PromptCommand("ping", rest)
    if word == "close":
        code_text, _, reason = rest.partition(" ")
        if not code_text:
            return PromptCommand("close")
        if not code_text.isdigit() or not is_valid_close_code(int(code_text)):
            return PromptCommand("error", f"{code_text!r} is not a close code (1000, 4000 ...)")
        reason = reason.strip()
        if len(reason.encode()) > 123:
            return PromptCommand("error", "a close reason is at most 123 bytes")
        return PromptCommand("close", reason, int(code_text))
    if word == "quit":
        return PromptCommand("quit")
    return PromptCommand("error", f"unknown command /{word}: {HELP_COMMANDS}")


# --- reading standard input ----------------------------------------------------------------


class LineReader:
    """Lines of a file descriptor, read by a daemon thread and handed to the event loop.

    A thread, because asyncio cannot watch a regular file (``< file``) and a terminal read
    must not block the loop. It reads the descriptor with ``os.read``, not ``sys.stdin``:
    a daemon thread blocked inside a buffered reader's lock can make the interpreter abort at
    exit. At most ``_SLOTS`` chunks wait in memory (back-pressure on a fast producer).
    """

    _SLOTS = 16

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._slots = threading.Semaphore(self._SLOTS)
        threading.Thread(target=self._run, name="netkit-stdin", daemon=True).start()

    def _put(self, chunk: bytes | None) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        except RuntimeError:  # the loop is closed: the command is over
            return False
        return True

    def _run(self) -> None:
        try:
            while True:
                self._slots.acquire()
                chunk = os.read(self.fd, 65536)
                if not chunk or not self._put(chunk):
                    break
        except OSError:
            pass
        self._put(None)

    async def lines(self) -> AsyncIterator[bytes]:
        """Each line without its line ending (``\\n`` or ``\\r\\n``); a last unterminated
        line counts too."""
        pending = b""
        while True:
            chunk = await self._queue.get()
            self._slots.release()
            if chunk is None:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.removesuffix(b"\r")
        if pending:
            yield pending.removesuffix(b"\r")


# --- output --------------------------------------------------------------------------------


def close_name(code: int) -> str:
    """``1000 (normal closure)``, ``4000 (application)``."""
    try:
        return f"{code} ({CloseCode(code).name.lower().replace('_', ' ')})"
    except ValueError:
        return f"{code} ({'application' if 3000 <= code <= 4999 else 'unknown'})"


def describe_close(code: int | None, reason: str) -> str:
    """The close code, its name and the reason, for one line of text."""
    if code is None:
        return "no close frame"
    return close_name(code) + (f' "{reason}"' if reason else "")


def message_fields(is_text: bool, data: bytes) -> dict[str, Any]:
    """A message in a ``sent``/``received`` event: ``text``, or for a binary message the
    payload in ``data``, base64-encoded, as ``encoding`` says."""
    if is_text:
        return {"type": "text", "bytes": len(data), "text": data.decode("utf-8")}
    return {
        "type": "binary",
        "bytes": len(data),
        "data": base64.b64encode(data).decode("ascii"),
        "encoding": "base64",
    }


def hex_summary(data: bytes) -> str:
    """``[binary, 5 bytes] 68 65 6c 6c 6f``, at most the first 16 bytes shown."""
    shown = data[:_HEX_PREVIEW].hex(" ")
    more = " ..." if len(data) > _HEX_PREVIEW else ""
    return f"[binary, {len(data)} byte{'s' if len(data) != 1 else ''}] {shown}{more}".rstrip()


# --- the session ---------------------------------------------------------------------------


@dataclass
class Settings:
    """What the command line asked for, once parsed."""

    url: WSURL
    outgoing: list[Outgoing]
    binary: bool
    raw: bool
    expectation: Expectation
    timeout: float | None
    close_timeout: float | None
    close_code: int | None
    close_reason: str
    read_stdin: bool
    interactive: bool


@dataclass
class Session:
    """One connection: sends, prints what arrives, decides when to stop and the exit status."""

    conn: WebSocketClientConnection
    settings: Settings
    out: Output
    sent: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    _send_error: BaseException | None = None
    _window: asyncio.Timeout | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _prompt_shown: bool = False
    deadline: float | None = None  # loop time when --timeout passes (it counts the opening)
    _waited: str = ""  # how the deadline that passed is described ("within 2s")

    async def run(self) -> None:
        """Run to the end; raise the error the exit code is for (return normally for 0)."""
        s = self.settings
        self._report_open()
        self.conn.on_keepalive_rtt = self._report_keepalive_pong
        sender = asyncio.create_task(self._prompt() if s.interactive else self._send_all())
        sender.add_done_callback(self._sender_done)
        outcome = "closed"
        if s.timeout is not None:
            self._waited = f"within {s.timeout:g}s"
        try:
            try:
                async with asyncio.timeout_at(self.deadline) as self._window:
                    outcome = await self._receive_loop()
            except TimeoutError:
                outcome = "timeout"
            finally:
                self._window = None
                sender.cancel()
            if outcome != "closed":
                await self.conn.close_and_wait(self._close_code(), s.close_reason)
        except asyncio.CancelledError:  # Ctrl-C: say goodbye, then let it end the run (130)
            code = CloseCode.GOING_AWAY if s.close_code is None else s.close_code
            await self.conn.close_and_wait(code, s.close_reason or "going away")
            self._report_close(clean_exit=True)
            raise
        error = self._verdict(outcome)
        self._report_close(clean_exit=error is None)
        if error is not None:
            raise error

    def _close_code(self) -> int:
        code = self.settings.close_code
        return CloseCode.NORMAL_CLOSURE if code is None else code

    # --- receiving ----------------------------------------------------------------------

    async def _receive_loop(self) -> str:
        expectation = self.settings.expectation
        while (item := await self.conn.receive()) is not None:
            is_text, data = item
            self._report_received(is_text, data)
            if expectation.active:
                done = expectation.feed(data)
                if done is not None:
                    return "satisfied" if done else "failed"
        return "closed"

    # --- sending ------------------------------------------------------------------------

    async def _send(self, data: bytes, text: bool) -> bool:
        if not self.conn.send(data, text=text):
            return False
        self.sent += 1
        self.sent_bytes += len(data)
        self.out.event("sent", None, **message_fields(text, data))
        await self.conn.drain()
        return True

    async def _send_all(self) -> None:
        s = self.settings
        for item in s.outgoing:
            if not await self._send(item.data, item.text):
                return
        if s.read_stdin:
            number = 0
            async for line in LineReader(0).lines():
                number += 1
                if not s.binary:
                    _check_text(line, f"line {number} of standard input")
                if not await self._send(line, not s.binary):
                    return
        self._input_ended()

    def _input_ended(self) -> None:
        """Everything is sent: close (websocat's rule), or give the replies a deadline."""
        s = self.settings
        if not s.expectation.active:
            self.conn.start_close(self._close_code(), s.close_reason)
            return
        window = self._window
        if window is not None and s.timeout is None:
            # Without --timeout, replies still get a deadline: a script never waits for ever.
            self._waited = f"within {_REPLY_WAIT:g}s after the input ended"
            window.reschedule(asyncio.get_running_loop().time() + _REPLY_WAIT)

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bad line of input (or a bug): close the connection and report it at the end.
        self._send_error = task.exception()
        self.conn.start_close(CloseCode.NORMAL_CLOSURE)

    # --- the prompt ---------------------------------------------------------------------

    def _show(self, line: str) -> None:
        # Received output at the prompt: clear the prompt line, print, then prompt again.
        prefix = "\r\x1b[K" if self._prompt_shown else ""
        suffix = "> " if self._prompt_shown else ""
        self.out.write_bytes(f"{prefix}{line}\n{suffix}".encode())

    def _prompt_again(self) -> None:
        self._prompt_shown = True
        self.out.write_bytes(b"> ")

    async def _prompt(self) -> None:
        self._prompt_again()
        async for raw in LineReader(0).lines():
            self._prompt_shown = False
            command = parse_prompt_line(raw.decode("utf-8", "replace"))
            if command.kind == "send":
                if not await self._send(command.text.encode(), True):
                    return
            elif command.kind == "ping":
                waiter = self.conn.ping(command.text.encode())
                task = asyncio.create_task(self._report_pong(waiter))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif command.kind == "error":
                self._show(f"! {command.text}")
            elif command.kind == "close" and command.code is not None:
                self.conn.start_close(command.code, command.text)
                return
            else:  # /close without a code, /quit
                self.conn.start_close(self._close_code(), self.settings.close_reason)
                return
            self._prompt_again()
        self.conn.start_close(self._close_code(), self.settings.close_reason)  # Ctrl-D

    async def _report_pong(self, waiter: asyncio.Future[float | None]) -> None:
        rtt = await waiter
        if rtt is not None:
            self.out.event("pong", None, rtt_ms=round(rtt * 1000, 3), keepalive=False)
            self._show(f"< pong in {rtt * 1000:.3f} ms")

    def _report_keepalive_pong(self, rtt: float) -> None:
        # An event only: a line every --ping-interval would drown what arrives.
        self.out.event("pong", None, rtt_ms=round(rtt * 1000, 3), keepalive=True)

    # --- reporting ----------------------------------------------------------------------

    def _report_open(self) -> None:
        conn = self.conn
        extensions = [conn.deflate.response()] if conn.deflate is not None else []
        headers = [list(h) for h in conn.response.headers] if conn.response else []
        self.out.event(
            "open",
            None,
            url=str(self.settings.url),
            subprotocol=conn.subprotocol,
            extensions=extensions,
            tls=conn.transport is not None
            and conn.transport.get_extra_info("ssl_object") is not None,
            status=101,
            headers=headers,
        )
        if self.settings.interactive:
            details = [f"subprotocol {conn.subprotocol}"] if conn.subprotocol else []
            details += ["permessage-deflate"] if conn.deflate is not None else []
            more = f" ({', '.join(details)})" if details else ""
            self.out.write_bytes(
                f"connected to {self.settings.url}{more}; {HELP_COMMANDS}\n".encode()
            )

    def _report_received(self, is_text: bool, data: bytes) -> None:
        self.received_bytes += len(data)
        self.out.event("received", None, **message_fields(is_text, data))
        if self.out.json:
            return
        if self.settings.interactive:
            self._show("< " + (data.decode("utf-8") if is_text else hex_summary(data)))
        elif is_text:
            self.out.write_bytes(data + b"\n")
        elif self.settings.raw:
            self.out.write_bytes(data)
        else:
            self.out.write_bytes(hex_summary(data).encode() + b"\n")

    def _report_close(self, *, clean_exit: bool) -> None:
        conn = self.conn
        code, reason = conn.close_code, conn.close_reason
        self.out.event(
            "close",
            None,
            code=code,
            reason=reason,
            initiator=conn.close_initiator,
            clean=conn.ws.close_received is not None,
        )
        self.out.event(
            "summary",
            None,
            sent=self.sent,
            received=self.conn.messages_in,
            bytes_sent=self.sent_bytes,
            bytes_received=self.received_bytes,
            duration_s=round(time.monotonic() - self.started, 6),
            close_code=code,
        )
        if self.out.json:
            return
        text = f"closed: {describe_close(code, reason)}"
        if self.settings.interactive:
            self._prompt_shown = False
            self.out.write_bytes(f"\r\x1b[K{text}\n".encode())
        elif clean_exit:
            # A failure is reported by its one error line (with the code); success by this one.
            self.out.err.print(escape(text))

    # --- the exit status ----------------------------------------------------------------

    def _verdict(self, outcome: str) -> BaseException | None:
        """The error the exit code is for, or None for success (see the module docstring)."""
        s, conn = self.settings, self.conn
        if self._send_error is not None:
            return self._send_error
        if outcome == "failed":
            return CheckFailed(s.expectation.failure(""))
        if outcome == "timeout":
            if s.expectation.active:
                return CheckFailed(s.expectation.failure(self._waited))
            return OperationTimeout(
                f"{s.url} did not close the connection {self._waited} (--timeout; use --count "
                "or --expect to stop on a reply)"
            )
        if conn.ws.error is not None:
            return conn.ws.error
        if conn.error is not None:
            return conn.error
        if conn.initiated_close and conn.ws.close_received is None:
            # Our close was never answered: the closing handshake failed (websockets: 1006).
            if conn.close_timed_out:
                return OperationTimeout(
                    f"{s.url} did not answer our close frame within {s.close_timeout:g}s "
                    "(--close-timeout)"
                )
            return ConnectionLost(
                f"connection to {s.url} lost before the server answered our close (1006)"
            )
        if outcome == "satisfied":
            return None
        # The connection closed before anything asked us to stop.
        code = conn.close_code
        if not conn.initiated_close:
            if code is None or code == CloseCode.ABNORMAL_CLOSURE:
                return ConnectionLost(f"connection to {s.url} lost without a close frame (1006)")
            if code not in _CLEAN_CLOSE:
                return PeerProtocolError(
                    f"{s.url} closed the connection with {describe_close(code, conn.close_reason)}",
                    close_code=None,
                )
        if s.expectation.active:
            end = (
                "before the connection was closed"
                if conn.initiated_close
                else f"before the server closed the connection ({close_name(code or 1005)})"
            )
            return CheckFailed(s.expectation.failure(end))
        return None


# --- the command ---------------------------------------------------------------------------


def _duration_or_off(text: str, option: str) -> float | None:
    seconds = parse_duration(text, option=option)
    return seconds if seconds > 0 else None


def _compile_pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"--expect {text!r} is not a regular expression: {exc}") from None


def _isatty(stream: Any) -> bool:
    try:
        return stream is not None and bool(stream.isatty())
    except (OSError, ValueError):
        return False


@app.command(NAME, help=HELP, no_args_is_help=True)
def ws_client(
    url: Annotated[
        str,
        typer.Argument(
            help="ws://HOST[:PORT]/path, wss://... or ws+unix:///path/to.sock:/path; user:pass@ in the URL sends basic auth."
        ),
    ],
    messages: Annotated[
        list[str] | None,
        typer.Argument(help="Messages to send, in order, before any lines from stdin."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="Extra request header 'Name: value' (repeatable)."),
    ] = None,
    subprotocol: Annotated[
        list[str] | None,
        typer.Option("--subprotocol", help="Offer this subprotocol (repeatable, in order)."),
    ] = None,
    origin: Annotated[str | None, typer.Option("--origin", help="Origin header to send.")] = None,
    binary: Annotated[
        bool,
        typer.Option("--binary", "-b", help="Send messages, stdin lines and files as binary."),
    ] = False,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="Send this file as one message (repeatable)."),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Write received binary messages to stdout as raw bytes."),
    ] = False,
    count: Annotated[
        int | None,
        typer.Option("--count", "-c", min=1, help="Exit 0 after receiving this many messages."),
    ] = None,
    expect: Annotated[
        list[str] | None,
        typer.Option(
            "--expect",
            "-e",
            help="Exit 0 when a received message matches this regex (with --count: within the first N). Repeatable: every pattern must match, in order, each a later message.",
        ),
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            "-t",
            help="Deadline for the whole run, opening included: exit 4 if it passes before the connection is open or without --count/--expect, exit 1 with them. Default (or 0): none, but with --count/--expect replies get 10s once the input ended.",
        ),
    ] = None,
    open_timeout: Annotated[
        str,
        typer.Option(
            "--open-timeout",
            help="Deadline for opening: TCP connect, TLS handshake and HTTP upgrade together (exit 4); 0 disables.",
        ),
    ] = _OPEN_TIMEOUT,
    close_timeout: Annotated[
        str,
        typer.Option(
            "--close-timeout",
            help="How long the server may take to answer our close frame; unanswered: exit 4. 0 disables.",
        ),
    ] = _CLOSE_TIMEOUT,
    close_code: Annotated[
        int | None,
        typer.Option("--close-code", help="Close code we send when we close (default 1000)."),
    ] = None,
    close_reason: Annotated[
        str, typer.Option("--close-reason", help="Close reason we send when we close.")
    ] = "",
    ping_interval: Annotated[
        str, typer.Option("--ping-interval", help="Keepalive ping period; 0 disables.")
    ] = "20s",
    ping_timeout: Annotated[
        str,
        typer.Option(
            "--ping-timeout",
            help="Give up (exit 4) when a ping is not answered in time; 0 disables.",
        ),
    ] = "20s",
    compress: Annotated[
        bool, typer.Option("--compress", help="Offer permessage-deflate (RFC 7692).")
    ] = False,
    max_size: Annotated[
        str,
        typer.Option(
            "--max-size", help="Largest message accepted; a bigger one is closed with 1009."
        ),
    ] = "1MiB",
    retry: Annotated[
        str | None,
        typer.Option(
            "--retry",
            help="Keep retrying a refused connection this long (wait for a server to start).",
        ),
    ] = None,
    cacert: opt.CACert = None,
    cert: opt.ClientCert = None,
    key: opt.ClientKey = None,
    insecure: opt.Insecure = False,
    sni: opt.SNI = None,
    json: opt.Json = False,
) -> None:
    """Connect, send MESSAGES (and files, and stdin lines), print what arrives.

    See :data:`HELP` for when it stops and the module docstring for the exit codes.
    """
    out = Output(json)
    target = parse_ws_url(url)
    if raw and json:
        raise ConfigError("--raw writes bytes to stdout: it cannot be used with --json")
    if close_code is not None and not is_valid_close_code(close_code):
        raise ConfigError(f"--close-code {close_code}: use 1000-1003, 1007-1014 or 3000-4999")
    if len(close_reason.encode()) > 123:
        raise ConfigError("--close-reason is longer than 123 bytes")
    patterns = tuple(_compile_pattern(text) for text in expect or [])
    limit = parse_size(max_size, option="--max-size")
    if not 0 < limit <= _MAX_MESSAGE:
        raise ConfigError("--max-size must be between 1 byte and 1 GiB")
    open_for = _duration_or_off(open_timeout, "--open-timeout")
    close_for = _duration_or_off(close_timeout, "--close-timeout")
    timeouts = WSTimeouts(
        open=open_for,
        close=close_for,
        ping_interval=_duration_or_off(ping_interval, "--ping-interval"),
        ping_timeout=_duration_or_off(ping_timeout, "--ping-timeout"),
    )
    wait = _duration_or_off(timeout, "--timeout") if timeout is not None else None
    retry_for = parse_duration(retry, option="--retry") if retry else 0.0
    tls = opt.client_tls(target.secure, cacert, cert, key, insecure, sni, warn=target.secure)
    if tls.enabled and not target.secure:
        raise ConfigError("TLS options need a wss:// URL")
    ctx = client_context(tls) if tls.enabled else None
    handshake = build_handshake(
        target,
        headers=header or [],
        subprotocols=subprotocol or [],
        origin=origin,
        compress=compress,
    )
    outgoing = _outgoing(messages or [], file or [], binary)
    stdin_tty = _isatty(sys.stdin)
    settings = Settings(
        url=target,
        outgoing=outgoing,
        binary=binary,
        raw=raw,
        expectation=Expectation(count, patterns),
        timeout=wait,
        close_timeout=close_for,
        close_code=close_code,
        close_reason=close_reason,
        read_stdin=sys.stdin is not None and not stdin_tty,
        interactive=stdin_tty and _isatty(sys.stdout) and not json and not outgoing,
    )
    if stdin_tty and not settings.interactive and not outgoing:
        settings.read_stdin = True  # a terminal but JSON or piped output: read lines, no prompt

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait if wait else None
        try:
            async with asyncio.timeout_at(deadline):  # --timeout counts the opening too
                conn = await connect_ws(
                    target,
                    lambda: WebSocketClientConnection(handshake, max_size=limit, timeouts=timeouts),
                    ssl_context=ctx,
                    server_hostname=tls.server_hostname,
                    timeout=open_for,
                    retry_for=retry_for,
                )
        except TimeoutError:
            raise OperationTimeout(f"{target} was not open within {wait:g}s (--timeout)") from None
        try:
            await Session(conn, settings, out, deadline=deadline).run()
        finally:
            conn.abort()  # a no-op after a closing handshake; drops it on errors

    runtime.run(main)
    raise typer.Exit(ExitStatus.SUCCESS)

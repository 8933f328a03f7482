"""One ws-client session on an open connection: sending, receiving, the interactive prompt,
echoing (``--echo``), when to stop, and the verdict.

:class:`Session` drives a :class:`~netkit.net.ws.WebSocketClientConnection`: it sends the
outgoing messages and stdin lines (or runs the prompt), feeds what arrives to the
:class:`~netkit.core.ws.expect.Expectation`, closes when the input ended or the expectation
settled, and raises what :func:`~netkit.core.ws.ending.verdict` decides. What is shown, and
how, is the :class:`SessionView`'s business (``netkit/commands/ws_client.py`` implements it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from netkit.core.addresses import WSURL
from netkit.core.ws.encoding import LineSyntax
from netkit.core.ws.ending import Ending, Outcome, verdict
from netkit.core.ws.expect import Expectation
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.prompt import PromptCommand, PromptKind, PromptState
from netkit.errors import ConfigError, Setting
from netkit.net.lines import LineReader
from netkit.net.ws_client import EchoClientConnection, WebSocketClientConnection

BINARY = Setting("binary")
# With an expectation and no deadline: how long replies may take once the input ended.
REPLY_WAIT = 10.0
STDIN = 0


@dataclass(frozen=True)
class Outgoing:
    """One message to send."""

    data: bytes
    text: bool


def require_text(data: bytes, what: str) -> None:
    """Refuse ``data`` that is not UTF-8 text (``what`` names it in the message).

    Raises:
        ConfigError: ``data`` does not decode; the message points at the ``binary`` setting.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError((f"{what} is not UTF-8 text (send it with ", BINARY, ")")) from None


def input_message(data: bytes, what: str, *, binary: bool, syntax: LineSyntax | None) -> Outgoing:
    """The message one piece of input stands for (an argument, a file, a stdin line).

    With a ``syntax`` (``--hex``/``--base64``) it says text or binary and decodes; otherwise
    ``binary`` sends the bytes as they are, and text must be UTF-8.

    Raises:
        ConfigError: the input is not valid; the message names it with ``what``.
    """
    if syntax is not None:
        payload, is_text = syntax.parse(data, what)
        return Outgoing(payload, is_text)
    if not binary:
        require_text(data, what)
    return Outgoing(data, not binary)


class PromptInput(Protocol):
    """The lines typed at the interactive prompt (:class:`netkit.net.terminal_prompt.TerminalPrompt`)."""

    def lines(self, prompt: Callable[[], str]) -> AsyncGenerator[str, None]:
        """Each line typed, until the input ends; ``prompt()`` gives the prompt to show."""
        ...


@dataclass
class Settings:
    """What the session was asked to do."""

    url: WSURL
    outgoing: list[Outgoing]
    binary: bool
    expectation: Expectation
    timeout: float | None
    close_timeout: float | None
    close_code: int | None
    close_reason: str
    read_stdin: bool
    interactive: bool
    terminal: PromptInput | None = None  # where the prompt's lines come from (interactive)
    syntax: LineSyntax | None = None  # --hex/--base64: how stdin lines become messages
    echo: bool = False  # the connection echoes (EchoClientConnection); no input of our own


async def input_messages(settings: Settings) -> AsyncIterator[Outgoing]:
    """The messages to send: ``settings.outgoing``, then each line of stdin if it is read.

    Raises:
        ConfigError: a line of stdin is not a message: not UTF-8 when messages are text, or
            not valid for ``settings.syntax`` (bad hex or base64, a missing prefix).
    """
    for item in settings.outgoing:
        yield item
    if settings.read_stdin:
        number = 0
        async for line in LineReader(STDIN).lines():
            number += 1
            what = f"line {number} of standard input"
            yield input_message(line, what, binary=settings.binary, syntax=settings.syntax)


class MessageFeed(Protocol):
    """Where a session's messages come from, told what became of each."""

    async def next(self) -> Outgoing | None:
        """The next message to send; None when the input has ended."""

    def sent(self, item: Outgoing) -> None:
        """``item`` went out."""

    def unsent(self, item: Outgoing) -> None:
        """``item`` could not be sent: the connection was closing."""

    def acknowledged(self) -> None:
        """A message arrived from the server."""


class InputStream:
    """One connection's input (:func:`input_messages`): what is not sent is not kept.

    Implements :class:`MessageFeed`; ``--reconnect`` keeps its input across connections
    instead (:class:`~netkit.net.ws_reconnect.ResumableInput`).
    """

    def __init__(self, settings: Settings) -> None:
        self._items = input_messages(settings)

    async def next(self) -> Outgoing | None:
        """The next message, or None at the end of the input."""
        return await anext(self._items, None)

    def sent(self, item: Outgoing) -> None:
        """Nothing to remember."""

    def unsent(self, item: Outgoing) -> None:
        """Nothing to remember: the session is ending."""

    def acknowledged(self) -> None:
        """Nothing to remember."""


class SessionView(Protocol):
    """What a session shows, as it happens."""

    def opened(self, session: Session) -> None:
        """The connection is open."""

    def sent(self, data: bytes, text: bool) -> None:
        """A message went out."""

    def received(self, is_text: bool, data: bytes) -> None:
        """A message arrived."""

    def pong(self, rtt: float, *, keepalive: bool) -> None:
        """A pong answered our ping after ``rtt`` seconds."""

    def notice(self, line: str) -> None:
        """Tell the person at the prompt something (a mistyped command)."""

    def closed(self, session: Session, *, clean_exit: bool) -> None:
        """The session is over (``clean_exit``: it ends in success or Ctrl-C)."""


@dataclass
class Session:
    """One connection: sends, receives, decides when to stop and the verdict."""

    conn: WebSocketClientConnection
    settings: Settings
    view: SessionView
    deadline: float | None = None  # loop time when the whole run's deadline passes
    sent_count: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    _send_error: BaseException | None = None
    _window: asyncio.Timeout | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _waited: str = ""  # how the deadline that passed is described ("within 2s")
    prompt_state: PromptState = field(default_factory=PromptState)  # the prompt's input mode
    feed: MessageFeed | None = None  # where messages come from (None: the settings' input)
    ending: Ending | None = None  # how it ended, once it has

    def __post_init__(self) -> None:
        if self.feed is None:
            self.feed = InputStream(self.settings)

    async def run(self) -> None:
        """Run to the end; raise the error the exit status is for (return normally for 0)."""
        s = self.settings
        self.view.opened(self)
        self.conn.on_keepalive_rtt = lambda rtt: self.view.pong(rtt, keepalive=True)
        sender = asyncio.create_task(self._sender())
        sender.add_done_callback(self._sender_done)
        outcome = Outcome.CLOSED
        if s.timeout is not None:
            self._waited = f"within {s.timeout:g}s"
        try:
            try:
                async with asyncio.timeout_at(self.deadline) as self._window:
                    outcome = await self._receive_loop()
            except TimeoutError:
                outcome = Outcome.TIMEOUT
            finally:
                self._window = None
                sender.cancel()
            if outcome is not Outcome.CLOSED:
                await self.conn.close_and_wait(self._close_code(), s.close_reason)
        except asyncio.CancelledError:  # Ctrl-C: say goodbye, then let it end the run (130)
            code = CloseCode.GOING_AWAY if s.close_code is None else s.close_code
            await self.conn.close_and_wait(code, s.close_reason or "going away")
            self.view.closed(self, clean_exit=True)
            raise
        self.ending = self._ending(outcome)
        error = verdict(self.ending, s.expectation)
        self.view.closed(self, clean_exit=error is None)
        if error is not None:
            raise error

    def _ending(self, outcome: Outcome) -> Ending:
        conn = self.conn
        return Ending(
            outcome=outcome,
            peer=str(self.settings.url),
            waited=self._waited,
            send_error=self._send_error,
            protocol_error=conn.ws.error,
            connection_error=conn.error,
            initiated_close=conn.initiated_close,
            close_answered=conn.ws.close_received is not None,
            close_timed_out=conn.close_timed_out,
            close_timeout=self.settings.close_timeout,
            close_code=conn.close_code,
            close_reason=conn.close_reason,
        )

    def _close_code(self) -> int:
        code = self.settings.close_code
        return CloseCode.NORMAL_CLOSURE if code is None else code

    async def _receive_loop(self) -> Outcome:
        expectation = self.settings.expectation
        while (item := await self.conn.receive()) is not None:
            is_text, data = item
            self.received_bytes += len(data)
            self.view.received(is_text, data)
            assert self.feed is not None
            self.feed.acknowledged()
            if isinstance(self.conn, EchoClientConnection) and self.conn.echoed.popleft():
                await self._sent(data, is_text)  # the connection sent it as it arrived
            if expectation.active:
                done = expectation.feed(data)
                if done is not None:
                    return Outcome.SATISFIED if done else Outcome.FAILED
        return Outcome.CLOSED

    # --- sending ------------------------------------------------------------------------

    async def _send(self, data: bytes, text: bool) -> bool:
        if not self.conn.send(data, text=text):
            return False
        await self._sent(data, text)
        return True

    async def _sent(self, data: bytes, text: bool) -> None:
        self.sent_count += 1
        self.sent_bytes += len(data)
        self.view.sent(data, text)
        await self.conn.drain()

    async def _sender(self) -> None:
        s = self.settings
        if s.interactive:
            await self._prompt()
        elif not s.echo:  # an echo client has no input: the server ends the run
            await self._send_all()

    async def _send_all(self) -> None:
        feed = self.feed
        assert feed is not None
        while (item := await feed.next()) is not None:
            if not await self._send(item.data, item.text):
                feed.unsent(item)
                return
            feed.sent(item)
        self._input_ended()

    def _input_ended(self) -> None:
        """Everything is sent: close (websocat's rule), or give the replies a deadline."""
        s = self.settings
        if not s.expectation.active:
            self.conn.start_close(self._close_code(), s.close_reason)
            return
        window = self._window
        if window is not None and s.timeout is None:
            # Without a deadline, replies still get one: a script never waits for ever.
            self._waited = f"within {REPLY_WAIT:g}s after the input ended"
            window.reschedule(asyncio.get_running_loop().time() + REPLY_WAIT)

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bad line of input (or a bug): close the connection and report it at the end.
        self._send_error = task.exception()
        self.conn.start_close(CloseCode.NORMAL_CLOSURE)

    # --- the prompt ---------------------------------------------------------------------

    async def _prompt(self) -> None:
        terminal = self.settings.terminal
        assert terminal is not None, "an interactive session reads lines from a terminal"
        state = self.prompt_state
        # aclosing: a /close or /quit ends the prompt at once (it stops prompting).
        async with contextlib.aclosing(terminal.lines(lambda: state.prompt)) as lines:
            async for line in lines:
                if not await self._do(state.read(line)):
                    return
        self.conn.start_close(self._close_code(), self.settings.close_reason)  # Ctrl-D

    async def _do(self, command: PromptCommand) -> bool:
        """Do what a line typed at the prompt says; False once the session is to end."""
        kind = command.kind
        if kind is PromptKind.SEND or kind is PromptKind.SEND_BINARY:
            return await self._send(command.data, kind is PromptKind.SEND)
        if kind is PromptKind.PING:
            task = asyncio.create_task(self._report_pong(self.conn.ping(command.text.encode())))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind is PromptKind.ERROR:
            self.view.notice(f"! {command.text}")
        elif kind is PromptKind.MODE:
            self.view.notice(f"- {command.text}")
        elif kind is PromptKind.CLOSE and command.code is not None:
            self.conn.start_close(command.code, command.text)
            return False
        else:  # /close without a code, /quit
            self.conn.start_close(self._close_code(), self.settings.close_reason)
            return False
        return True

    async def _report_pong(self, waiter: asyncio.Future[float | None]) -> None:
        rtt = await waiter
        if rtt is not None:
            self.view.pong(rtt, keepalive=False)

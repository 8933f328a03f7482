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
* ``--replay``: 0 when the server answered as recorded, 1 with the differences (the
  connection failing still exits 3, 4, 5 or 7). The format, the alignment of answers and the
  comparison: ``netkit/core/ws/recording.py`` and ``netkit/core/ws/replay.py``.
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
With ``--reconnect``, the run ends with the code of the failure after which no try was left
(or that another try cannot cure: TLS, a 4xx answer, a protocol error): the same code as
without it. A proxy refusing CONNECT (407, 403 ...) is 3; a redirect refused by ``-L``
(a loop, too many, wss:// to ws://) is 7, as a refused upgrade.

With ``--script``, the step that fails decides (``netkit/commands/ws_script.py``): 1 for a
check, 4 for a timeout, 3 for the connection, 7 for an error close code, 2 for a bad file.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from netkit.commands import options as opt
from netkit.commands import ws_replay, ws_script
from netkit.commands.ws_bridge import bridge_mode
from netkit.commands.ws_dial import DialFlags, dial_flags, report_retry
from netkit.commands.ws_lines import LineFlags, line_flags
from netkit.commands.ws_view import View, message_fields
from netkit.console import Output
from netkit.core.addresses import WSURL, parse_ws_url
from netkit.core.units import parse_size
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.encoding import LineSyntax
from netkit.core.ws.expect import Expectation
from netkit.core.ws.frames import is_valid_close_code
from netkit.core.ws.prompt import PROMPT_COMMANDS
from netkit.core.ws.reconnect import ReconnectPlan
from netkit.errors import ConfigError, OperationTimeout
from netkit.net import runtime
from netkit.net.ws import WSTimeouts
from netkit.net.ws_bridge import WSTarget
from netkit.net.ws_client import EchoClientConnection, WebSocketClientConnection
from netkit.net.ws_dial import Dialer, tls_per_url
from netkit.net.ws_reconnect import ResumableInput, run_reconnecting
from netkit.net.ws_record import EchoRecordingClientConnection, RecordingClientConnection
from netkit.net.ws_session import Outgoing, Session, Settings, input_message
from netkit.status import ExitStatus

if TYPE_CHECKING:
    from netkit.net.terminal_prompt import TerminalPrompt

NAME = "ws-client"

app = typer.Typer(add_completion=False)

# Headers the handshake itself writes; -H may not replace them.
# Default deadlines, as the websockets library's open_timeout and close_timeout.
_OPEN_TIMEOUT = "10s"
_CLOSE_TIMEOUT = "10s"
_MAX_MESSAGE = 1 << 30


# Paragraphs are single lines: typer's rich help keeps line breaks inside a paragraph.
HELP = escape(
    "\n\n".join(
        [
            "Talk to a WebSocket server: send messages, print what comes back.",
            "Sends the MESSAGES, then each --file, then each line of stdin unless stdin is a "
            "terminal. Text messages print as lines, binary ones as a hex summary (--raw: the "
            "bytes). On a terminal with no messages: a prompt with line editing and history "
            "(--history); lines are sent, what arrives is printed above the line being typed "
            "('< ' marks it; with --json, the events), and " + PROMPT_COMMANDS + ". /binary "
            "and /hex typed alone switch how lines are sent (hex mode also shows binary "
            "messages whole, in hex).",
            "When it stops: with --count/--expect, as soon as they are satisfied (it sends "
            "close 1000 or --close-code, waits for the server's close, exits 0), or when they "
            "fail: exit 1 if the server closes or --timeout passes first (default: 10s after "
            "the input ended). Otherwise when the input ends (end of stdin, or the last "
            "message when stdin is a terminal): it sends close 1000, prints what still "
            "arrives and exits 0 once the server answers the close; or when the server closes "
            "(exit 0 for 1000/1001), --timeout passes (exit 4), or Ctrl-C (close 1001, exit "
            "130).",
            "Binary in scripts: with --hex or --base64 every input line (MESSAGES, stdin "
            "lines, files) is decoded and sent as a binary message, and every received binary "
            "message prints as one line of hex or base64; --text-prefix and --binary-prefix "
            "mark which lines are text and which binary, both ways, so one run's output is "
            "another's input. --echo sends every message back until the server closes.",
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
            "--reconnect: the connection is tried again after a jittered back-off when it "
            "fails, drops, or the server closes with 1001 or 1011-1014; the last failure "
            "gives the exit status it has without --reconnect. A proxy refusing CONNECT "
            "exits 3; a redirect loop, too many redirects or wss:// to ws:// with -L exit 7.",
        ]
    )
)


# --- what to send --------------------------------------------------------------------------


def _outgoing(
    messages: list[str], files: list[Path], binary: bool, syntax: LineSyntax | None
) -> list[Outgoing]:
    """The messages from the command line: arguments first, then each file as one message
    (with --hex/--base64, a file is one line: its final line ending is not part of it)."""
    out = [
        input_message(m.encode(), f"message {n} ({m!r})", binary=binary, syntax=syntax)
        for n, m in enumerate(messages, 1)
    ]
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read --file {str(path)!r}: {exc.strerror}") from None
        if syntax is not None:
            data = data.removesuffix(b"\n").removesuffix(b"\r")
        out.append(input_message(data, f"--file {str(path)!r}", binary=binary, syntax=syntax))
    return out


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


def _compile_pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"--expect {text!r} is not a regular expression: {exc}") from None


def _refuse_with_script(
    messages: list[str] | None,
    files: list[Path] | None,
    count: int | None,
    expect: list[str] | None,
    binary: bool,
    raw: bool,
) -> None:
    """--script is a mode of its own: the script says what to send and what to expect."""
    given = [
        ("MESSAGES", bool(messages)),
        ("--file", bool(files)),
        ("--count", count is not None),
        ("--expect", bool(expect)),
        ("--binary", binary),
        ("--raw", raw),
    ]
    clash = next((name for name, present in given if present), None)
    if clash is not None:
        raise ConfigError(
            f"--script cannot be used with {clash}: the script says what to send and expect"
        )


def _isatty(stream: Any) -> bool:
    try:
        return stream is not None and bool(stream.isatty())
    except (OSError, ValueError):
        return False


def _terminal(history: str | None) -> tuple[TerminalPrompt, str | None]:
    """The prompt, with its history (``--history``), and why that is not the file asked for."""
    # prompt_toolkit is loaded only for a prompt: piped and scripted runs start without it.
    from netkit.net.terminal_prompt import TerminalPrompt, default_history_path, open_history

    path = default_history_path() if history is None else Path(history).expanduser()
    lines, notice = open_history(None if history == "off" else path)
    return TerminalPrompt(lines), notice


@app.command(NAME, help=HELP, no_args_is_help=True)
@ws_replay.record_flags
@dial_flags
@line_flags
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
    lines: LineFlags = LineFlags(),
    echo: Annotated[
        bool,
        typer.Option(
            "--echo",
            help="Send every received message back (same type) until the server closes: a client under test for conformance suites. No MESSAGES, --file or stdin.",
        ),
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
    ping_interval: opt.PingInterval = opt.PING_INTERVAL,
    ping_timeout: opt.PingTimeout = opt.PING_TIMEOUT,
    compress: Annotated[
        bool, typer.Option("--compress", help="Offer permessage-deflate (RFC 7692).")
    ] = False,
    max_size: Annotated[
        str,
        typer.Option(
            "--max-size", help="Largest message accepted; a bigger one is closed with 1009."
        ),
    ] = "1MiB",
    retry: opt.Retry = None,
    dial: DialFlags = DialFlags(),
    cacert: opt.CACert = None,
    cert: opt.ClientCert = None,
    key: opt.ClientKey = None,
    insecure: opt.Insecure = False,
    sni: opt.SNI = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="Bridge: listen on this TCP or Unix endpoint (HOST:PORT, unix:/path) and relay each client to URL over its own connection, bytes <-> binary messages.",
        ),
    ] = None,
    stdio: Annotated[
        bool,
        typer.Option(
            "--stdio",
            help="Bridge stdin and stdout to URL as raw bytes: stdin's bytes go as binary messages, messages' payloads come out on stdout; end of stdin closes with 1000. Exit 7 on any close code but 1000/1001 (1011: the far end of a bridge failed), even in answer to ours.",
        ),
    ] = False,
    recording: ws_replay.RecordFlags = ws_replay.RecordFlags(),
    json: opt.Json = False,
    timestamps: Annotated[
        bool,
        typer.Option(
            "--timestamps",
            help="Prefix each line shown (at the prompt too) with the time of day.",
        ),
    ] = False,
    history: Annotated[
        str | None,
        typer.Option(
            "--history",
            metavar="FILE",
            help="Where the prompt keeps the lines typed (created 0600; 'off': memory only). Default: $XDG_STATE_HOME/netkit/ws_history or ~/.local/state/netkit/ws_history, memory only if it cannot be written.",
        ),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(
            "--script",
            help="Run the conversation in this YAML or TOML file (send, expect, wait, ping, close, expect_close steps; see the README) instead of sending messages; exit 1 when an expectation fails, 4 when a step times out, naming the step.",
        ),
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit", help="With --script: write a JUnit XML report here, one test case per step."
        ),
    ] = None,
) -> None:
    """Connect, send MESSAGES (and files, and stdin lines), print what arrives.

    See :data:`HELP` for when it stops and the module docstring for the exit codes.
    """
    out = Output(json)
    target = parse_ws_url(url)
    if raw and json:
        raise ConfigError("--raw writes bytes to stdout: it cannot be used with --json")
    syntax = lines.syntax()
    if syntax is not None and (binary or raw):
        flag = "--binary" if binary else "--raw"
        raise ConfigError(f"{flag} cannot be used with --{syntax.encoding.value}")
    if echo and (messages or file or script):
        raise ConfigError("--echo sends only what it receives: no MESSAGES, --file or --script")
    if script is not None and syntax is not None:
        raise ConfigError(
            f"--script says what to send: it cannot be used with --{syntax.encoding.value}"
        )
    if close_code is not None and not is_valid_close_code(close_code):
        raise ConfigError(f"--close-code {close_code}: use 1000-1003, 1007-1014 or 3000-4999")
    if len(close_reason.encode()) > 123:
        raise ConfigError("--close-reason is longer than 123 bytes")
    patterns = tuple(_compile_pattern(text) for text in expect or [])
    limit = parse_size(max_size, option="--max-size")
    if not 0 < limit <= _MAX_MESSAGE:
        raise ConfigError("--max-size must be between 1 byte and 1 GiB")
    open_for = opt.duration_or_off(open_timeout, "--open-timeout")
    close_for = opt.duration_or_off(close_timeout, "--close-timeout")
    ping_every, ping_wait = opt.pings(ping_interval, ping_timeout)
    timeouts = WSTimeouts(
        open=open_for,
        close=close_for,
        ping_interval=ping_every,
        ping_timeout=ping_wait,
    )
    wait = opt.duration_or_off(timeout, "--timeout") if timeout is not None else None
    retry_for = opt.retry(retry)
    tls = opt.client_tls(
        target.secure, cacert, cert, key, insecure, sni, warn=target.secure or dial.location
    )
    if tls.enabled and not target.secure and not dial.location:
        raise ConfigError("TLS options need a wss:// URL")
    tls_for = tls_per_url(tls)
    tls_for(target)  # a bad certificate file is reported before connecting
    plan = dial.plan()
    replaying = recording.replay_settings(
        (
            ("MESSAGES", messages),
            ("--file", file),
            ("--count", count),
            ("--expect", expect),
            ("--script", script),
            ("--reconnect", plan),
            ("--echo", echo),
            ("--hex/--base64", syntax),
        )
    )
    if echo and plan is not None:
        raise ConfigError("--echo cannot be used with --reconnect: an echo run is one connection")
    if replaying is not None:
        subprotocol = subprotocol or list(replaying.subprotocols)

    def handshake_for(url: WSURL) -> ClientHandshake:
        return build_handshake(
            url,
            headers=header or [],
            subprotocols=subprotocol or [],
            origin=origin,
            compress=compress,
        )

    handshake = handshake_for(target)  # checks -H, --subprotocol before connecting
    if listen is not None or stdio:
        context, verify_as = tls_for(target)
        bridge = WSTarget(target, handshake, context, verify_as, open_for, limit, timeouts)
        bridge_mode(
            out, bridge, listen, stdio, close_for,
            {"MESSAGES": bool(messages), "--file": bool(file), "--count": count is not None,
             "--expect": bool(expect), "--raw": raw, "--binary": binary,
             "--script": script is not None, "--junit": junit is not None,
             "--reconnect": plan is not None, "--proxy": dial.proxy is not None,
             "-L": dial.location, "--record": recording.record is not None,
             "--replay": replaying is not None, "--echo": echo,
             "--hex": lines.hex_, "--base64": lines.base64_},
        )  # fmt: skip
    if script is not None:
        _refuse_with_script(messages, file, count, expect, binary, raw)
        if plan is not None:
            raise ConfigError(
                "--script cannot be used with --reconnect: a script is one connection"
            )
        conversation = ws_script.load_script(script)
        ws_script.check_junit_path(junit)
    elif junit is not None:
        raise ConfigError("--junit reports a --script run: give --script too")
    outgoing = _outgoing(messages or [], file or [], binary, syntax)
    stdin_tty = _isatty(sys.stdin)
    settings = Settings(
        url=target,
        outgoing=outgoing,
        binary=binary,
        expectation=Expectation(count, patterns),
        timeout=wait,
        close_timeout=close_for,
        close_code=close_code,
        close_reason=close_reason,
        read_stdin=sys.stdin is not None and not stdin_tty and not echo,
        interactive=stdin_tty and _isatty(sys.stdout) and not (outgoing or echo or syntax),
        syntax=syntax,
        echo=echo,
    )
    if stdin_tty and not settings.interactive and not outgoing and not echo:
        settings.read_stdin = True  # a terminal but piped output: read lines, no prompt

    prompting = settings.interactive and script is None and replaying is None
    terminal, history_notice = _terminal(history) if prompting else (None, None)
    settings.terminal = terminal

    record = recording.record_file(str(target), subprotocol or ())

    def connection(url: WSURL) -> WebSocketClientConnection:
        shake = handshake if url == target else handshake_for(url)
        if record is not None:
            recorder = EchoRecordingClientConnection if echo else RecordingClientConnection
            return recorder(shake, max_size=limit, timeouts=timeouts, record=record)
        plain = EchoClientConnection if echo else WebSocketClientConnection
        return plain(shake, max_size=limit, timeouts=timeouts)

    dialer = Dialer(
        target,
        connection,
        tls_for,
        proxy=dial.proxy_url(),
        redirects=dial.redirects(),
        timeout=open_for,
        retry_for=retry_for,
    )
    view = View(
        out,
        target,
        interactive=settings.interactive,
        raw=raw,
        timestamps=timestamps,
        syntax=syntax,
    )
    dialer.on_redirect = view.redirected

    @contextlib.asynccontextmanager
    async def prompt_shown() -> AsyncIterator[None]:
        # The prompt, once connected (nothing without one).
        if terminal is None:
            yield
            return
        async with terminal.showing():
            if history_notice is not None:
                view.notice(f"- {history_notice}")
            yield

    def not_open() -> OperationTimeout:
        return OperationTimeout(f"{target} was not open within {wait:g}s (--timeout)")

    async def open_connection(deadline: float | None) -> WebSocketClientConnection:
        try:
            async with asyncio.timeout_at(deadline):  # --timeout counts the opening too
                return await dialer.open()
        except TimeoutError:
            raise not_open() from None

    async def reconnecting(plan: ReconnectPlan, deadline: float | None) -> None:
        try:
            await run_reconnecting(
                dialer,
                plan,
                lambda conn, given: Session(conn, settings, view, deadline=deadline, feed=given),
                ResumableInput(settings, dial.resend),
                on_retry=lambda retry: report_retry(out, retry),
                deadline=deadline,
            )
        except TimeoutError:
            raise not_open() from None

    async def main() -> None:
        deadline = asyncio.get_running_loop().time() + wait if wait else None
        if script is not None:
            await ws_script.run_script(
                conversation,
                lambda: open_connection(deadline),
                ws_script.ScriptPresenter(out, message_fields),
                peer=str(target),
                deadline=time.monotonic() + wait if wait else None,
                junit=junit,
            )
            return
        if plan is not None:
            async with prompt_shown():
                await reconnecting(plan, deadline)
            return
        conn = await open_connection(deadline)
        try:
            if replaying is not None:
                await ws_replay.run_replay(conn, replaying, out, deadline=deadline, timeout=wait)
            else:
                async with prompt_shown():
                    await Session(conn, settings, view, deadline=deadline).run()
        finally:
            conn.abort()  # a no-op after a closing handshake; drops it on errors

    try:
        runtime.run(main)
    finally:
        if record is not None:
            record.close()
    raise typer.Exit(ExitStatus.SUCCESS)

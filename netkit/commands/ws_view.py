"""How a ws-client session looks: its JSON events and the lines people read.

:class:`View` implements :class:`~netkit.net.ws_session.SessionView` for ``netkit
ws-client``: events for ``--json``, lines above the prompt on a terminal, and on a pipe text
as it came, binary as a hex summary, raw bytes (``--raw``) or one encoded line
(``--hex``/``--base64``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.markup import escape

from netkit.commands.ws_dial import report_redirect
from netkit.console import Output
from netkit.core.addresses import WSURL
from netkit.core.ws.encoding import LineSyntax
from netkit.core.ws.ending import describe_close
from netkit.core.ws.prompt import PROMPT_COMMANDS
from netkit.core.ws.recording import message_json
from netkit.net.ws_session import Session

_HEX_PREVIEW = 16


# --- output --------------------------------------------------------------------------------


def message_fields(is_text: bool, data: bytes) -> dict[str, Any]:
    """A message in a ``sent``/``received`` event: ``text``, or for a binary message the
    payload in ``data``, base64-encoded, as ``encoding`` says."""
    return message_json(is_text, data)


def hex_summary(data: bytes) -> str:
    """``[binary, 5 bytes] 68 65 6c 6c 6f``, at most the first 16 bytes shown."""
    shown = data[:_HEX_PREVIEW].hex(" ")
    more = " ..." if len(data) > _HEX_PREVIEW else ""
    return f"[binary, {len(data)} byte{'s' if len(data) != 1 else ''}] {shown}{more}".rstrip()


# --- what the session shows ------------------------------------------------------------------


class View:
    """How a session looks: events, and lines for people (at the prompt: above it).

    Implements :class:`~netkit.net.ws_session.SessionView`. ``timestamps`` prefixes each line
    shown with the local time of day.
    """

    def __init__(
        self,
        out: Output,
        url: WSURL,
        *,
        interactive: bool,
        raw: bool,
        timestamps: bool = False,
        syntax: LineSyntax | None = None,
    ) -> None:
        self.out = out
        self.url = url
        self.interactive = interactive
        self.raw = raw
        self.timestamps = timestamps
        self.syntax = syntax
        self._session: Session | None = None

    def _stamped(self, line: str) -> str:
        if not self.timestamps:
            return line
        now = time.time()
        return f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d} {line}"

    def _show(self, line: str) -> None:
        # At the prompt, stdout goes above the line being typed (TerminalPrompt.showing).
        if self.out.json:
            return
        if self.interactive:
            from netkit.net.terminal_prompt import TerminalPrompt  # loaded by the prompt

            TerminalPrompt.show(self._stamped(line))
        else:
            self._write_line(line.encode())

    def _write_line(self, line: bytes) -> None:
        # Piped output: bytes as they came (no decoding per message without --timestamps).
        stamp = self._stamped("").encode() if self.timestamps else b""
        self.out.write_bytes(stamp + line + b"\n")

    def notice(self, line: str) -> None:
        if self.out.json:  # stdout is for events: a notice is a diagnostic, on stderr
            sys.stderr.write(self._stamped(line) + "\n")
            sys.stderr.flush()
        else:
            self._show(line)

    def pong(self, rtt: float, *, keepalive: bool) -> None:
        self.out.event("pong", None, rtt_ms=round(rtt * 1000, 3), keepalive=keepalive)
        if not keepalive:  # a line every --ping-interval would drown what arrives
            self._show(f"< pong in {rtt * 1000:.3f} ms")

    def opened(self, session: Session) -> None:
        conn = session.conn
        extensions = [conn.deflate.response()] if conn.deflate is not None else []
        headers = [list(h) for h in conn.response.headers] if conn.response else []
        self.out.event(
            "open",
            None,
            url=str(self.url),
            subprotocol=conn.subprotocol,
            extensions=extensions,
            tls=conn.transport is not None
            and conn.transport.get_extra_info("ssl_object") is not None,
            status=101,
            headers=headers,
        )
        self._session = session
        if self.interactive and not self.out.json:
            details = [f"subprotocol {conn.subprotocol}"] if conn.subprotocol else []
            details += ["permessage-deflate"] if conn.deflate is not None else []
            more = f" ({', '.join(details)})" if details else ""
            self._show(f"connected to {self.url}{more}; {PROMPT_COMMANDS}")

    def sent(self, data: bytes, text: bool) -> None:
        self.out.event("sent", None, **message_fields(text, data))

    def redirected(self, status: int, source: WSURL, target: WSURL) -> None:
        """A redirect was followed (-L): opening events name the URL reached."""
        self.url = target
        report_redirect(self.out, status, source, target)

    def received(self, is_text: bool, data: bytes) -> None:
        self.out.event("received", None, **message_fields(is_text, data))
        if self.out.json:
            return
        if self.interactive:
            hex_mode = self._session is not None and self._session.prompt_state.hex
            shown = "[binary] " + data.hex(" ") if hex_mode else hex_summary(data)
            self._show("< " + (data.decode("utf-8") if is_text else shown))
        elif self.syntax is not None:  # --hex/--base64: one line a message
            self._write_line(self.syntax.render(is_text, data))
        elif is_text:
            self._write_line(data)
        elif self.raw:
            self.out.write_bytes(data)
        else:
            self._show(hex_summary(data))

    def closed(self, session: Session, *, clean_exit: bool) -> None:
        conn = session.conn
        code, reason = conn.close_code, conn.close_reason
        self.out.event(
            "close",
            None,
            code=code,
            reason=reason,
            initiator=conn.close_initiator,
            clean=conn.ws.close_received is not None,
            # The code of our own close frame: 1009 when we failed on an oversized frame.
            sent_code=conn.ws.close_sent[0] if conn.ws.close_sent is not None else None,
        )
        self.out.event(
            "summary",
            None,
            sent=session.sent_count,
            received=conn.messages_in,
            bytes_sent=session.sent_bytes,
            bytes_received=session.received_bytes,
            duration_s=round(time.monotonic() - session.started, 6),
            close_code=code,
        )
        if self.out.json:
            return
        text = f"closed: {describe_close(code, reason)}"
        if self.interactive:
            self._show(text)
        elif clean_exit:
            # A failure is reported by its one error line (with the code); success by this one.
            self.out.err.print(escape(text))


# --- the command ---------------------------------------------------------------------------

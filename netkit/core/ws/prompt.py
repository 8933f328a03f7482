"""The lines typed at ws-client's interactive prompt: a message, or a ``/command``.

Pure parsing: :func:`parse_prompt_line` turns one line into a :class:`PromptCommand` whose
:class:`PromptKind` says what to do; the session in :mod:`netkit.net.ws_session` does it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from netkit.core.ws.frames import is_valid_close_code

PROMPT_COMMANDS = "/ping [data], /close [code [reason]], /quit (or Ctrl-D); '//text' sends '/text'"

# RFC 6455 5.5: a control frame's payload is at most 125 bytes; a close reason 123 (2 for the code).
_MAX_PING = 125
_MAX_REASON = 123


class PromptKind(enum.Enum):
    """What a line typed at the prompt asks for."""

    SEND = "send"  # send ``text`` as a message
    PING = "ping"  # send a ping with ``text`` as its payload
    CLOSE = "close"  # close with ``code`` (None: the default) and ``text`` as the reason
    QUIT = "quit"  # close with the default code and reason
    ERROR = "error"  # the line is wrong: ``text`` says why


@dataclass(frozen=True)
class PromptCommand:
    """One line typed at the prompt (see :class:`PromptKind` for what ``text`` holds)."""

    kind: PromptKind
    text: str = ""
    code: int | None = None


def parse_prompt_line(line: str) -> PromptCommand:
    """Parse a line typed at the prompt: a message, or ``/ping``, ``/close``, ``/quit``."""
    if not line.startswith("/"):
        return PromptCommand(PromptKind.SEND, line)
    if line.startswith("//"):
        return PromptCommand(PromptKind.SEND, line[1:])
    word, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    if word == "ping":
        if len(rest.encode()) > _MAX_PING:
            return PromptCommand(PromptKind.ERROR, f"a ping carries at most {_MAX_PING} bytes")
        return PromptCommand(PromptKind.PING, rest)
    if word == "close":
        return _parse_close(rest)
    if word == "quit":
        return PromptCommand(PromptKind.QUIT)
    return PromptCommand(PromptKind.ERROR, f"unknown command /{word}: {PROMPT_COMMANDS}")


def _parse_close(rest: str) -> PromptCommand:
    code_text, _, reason = rest.partition(" ")
    if not code_text:
        return PromptCommand(PromptKind.CLOSE)
    if not code_text.isdigit() or not is_valid_close_code(int(code_text)):
        return PromptCommand(
            PromptKind.ERROR, f"{code_text!r} is not a close code (1000, 4000 ...)"
        )
    reason = reason.strip()
    if len(reason.encode()) > _MAX_REASON:
        return PromptCommand(PromptKind.ERROR, f"a close reason is at most {_MAX_REASON} bytes")
    return PromptCommand(PromptKind.CLOSE, reason, int(code_text))

"""The lines typed at ws-client's interactive prompt: a message, or a ``/command``.

Pure parsing: :class:`PromptState` turns one line into a :class:`PromptCommand` whose
:class:`PromptKind` says what to do, and keeps the input mode (``/binary``, ``/hex`` typed
alone switch it); the session in :mod:`netkit.net.ws_session` does what the command says.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from netkit.core.ws.frames import is_valid_close_code

PROMPT_COMMANDS = (
    "/ping [data], /close [code [reason]], /binary [text], /hex [hex bytes], "
    "/quit (or Ctrl-D); '//text' sends '/text'"
)

# RFC 6455 5.5: a control frame's payload is at most 125 bytes; a close reason 123 (2 for the code).
_MAX_PING = 125
_MAX_REASON = 123


class PromptKind(enum.Enum):
    """What a line typed at the prompt asks for."""

    SEND = "send"  # send ``data`` as a text message (``text`` holds it decoded)
    SEND_BINARY = "send_binary"  # send ``data`` as a binary message
    PING = "ping"  # send a ping with ``text`` as its payload
    CLOSE = "close"  # close with ``code`` (None: the default) and ``text`` as the reason
    QUIT = "quit"  # close with the default code and reason
    MODE = "mode"  # the input mode changed: ``text`` says to what
    ERROR = "error"  # the line is wrong: ``text`` says why


class InputMode(enum.Enum):
    """How a plain line (not a ``/command``) is sent."""

    TEXT = "text"  # as a text message
    BINARY = "binary"  # its UTF-8 bytes as a binary message
    HEX = "hex"  # hex digits (spaces allowed), decoded, as a binary message


_PROMPTS = {InputMode.TEXT: "> ", InputMode.BINARY: "binary> ", InputMode.HEX: "hex> "}


@dataclass(frozen=True)
class PromptCommand:
    """One line typed at the prompt (see :class:`PromptKind` for what ``text`` holds)."""

    kind: PromptKind
    text: str = ""
    code: int | None = None
    data: bytes = b""


def parse_prompt_line(line: str) -> PromptCommand:
    """Parse a line typed at the prompt in text mode (see :meth:`PromptState.read`)."""
    return PromptState().read(line)


def parse_hex(text: str) -> bytes | None:
    """The bytes ``text`` spells in hex (spaces and colons between bytes allowed), or None."""
    try:
        return bytes.fromhex(text.replace(":", " "))
    except ValueError:
        return None


class PromptState:
    """The prompt's input mode, and the parser of the lines typed at it.

    ``/binary`` and ``/hex`` with an argument send it once, in that form; alone, they switch
    the mode every later plain line is sent in (typed again: back to text).
    """

    def __init__(self) -> None:
        self.mode = InputMode.TEXT

    @property
    def prompt(self) -> str:
        """The prompt to show: ``> ``, ``binary> `` or ``hex> ``."""
        return _PROMPTS[self.mode]

    @property
    def hex(self) -> bool:
        """True in hex mode (binary messages arriving are shown whole, in hex)."""
        return self.mode is InputMode.HEX

    def read(self, line: str) -> PromptCommand:
        """Parse one line: a message in the current mode, or ``/ping``, ``/close`` ..."""
        if line.startswith("//"):
            return self._message(line[1:], self.mode)
        if not line.startswith("/"):
            return self._message(line, self.mode)
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
        if word in ("binary", "hex"):
            mode = InputMode(word)
            return self._message(rest, mode) if rest else self._switch(mode)
        return PromptCommand(PromptKind.ERROR, f"unknown command /{word}: {PROMPT_COMMANDS}")

    def _switch(self, mode: InputMode) -> PromptCommand:
        self.mode = InputMode.TEXT if self.mode is mode else mode
        said = {
            InputMode.TEXT: "lines are sent as text",
            InputMode.BINARY: "lines are sent as binary (/binary again: text)",
            InputMode.HEX: "lines are hex bytes sent as binary, binary shown in hex (/hex again: text)",
        }
        return PromptCommand(PromptKind.MODE, said[self.mode])

    @staticmethod
    def _message(text: str, mode: InputMode) -> PromptCommand:
        if mode is InputMode.TEXT:
            return PromptCommand(PromptKind.SEND, text, data=text.encode())
        if mode is InputMode.BINARY:
            return PromptCommand(PromptKind.SEND_BINARY, text, data=text.encode())
        data = parse_hex(text)
        if data is None:
            return PromptCommand(PromptKind.ERROR, f"{text!r} is not hex bytes (68 69 or 6869)")
        return PromptCommand(PromptKind.SEND_BINARY, text, data=data)


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

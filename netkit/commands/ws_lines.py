"""ws-client's flags for binary messages as lines: ``--hex``, ``--base64``, ``--text-prefix``
and ``--binary-prefix``, declared once as :class:`LineFlags` (spliced into the command by
:func:`line_flags`).

The behaviour is :mod:`netkit.core.ws.encoding`; the session decodes input with it
(:func:`netkit.net.ws_session.input_message`) and the command's view prints with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from netkit.commands import options as opt
from netkit.core.ws.encoding import LineSyntax, line_syntax

Hex = Annotated[
    bool,
    typer.Option(
        "--hex",
        help="Binary messages as hex, one a line: MESSAGES, stdin lines and files are decoded and sent as binary; each received binary message prints as a line of hex.",
    ),
]
Base64 = Annotated[
    bool,
    typer.Option("--base64", help="As --hex, in base64 (RFC 4648, standard alphabet, padded)."),
]
TextPrefix = Annotated[
    str | None,
    typer.Option(
        "--text-prefix",
        help="With --hex/--base64: input starting with this is a text message (the prefix removed); received text messages print after it.",
    ),
]
BinaryPrefix = Annotated[
    str | None,
    typer.Option(
        "--binary-prefix",
        help="With --hex/--base64: only input starting with this is binary, the rest text; received binary messages print after it. With --text-prefix too, every input line needs one of the two.",
    ),
]


@dataclass(frozen=True)
class LineFlags:
    """The flags that write binary messages as lines of text."""

    hex_: Hex = False
    base64_: Base64 = False
    text_prefix: TextPrefix = None
    binary_prefix: BinaryPrefix = None

    def syntax(self) -> LineSyntax | None:
        """The :class:`LineSyntax` asked for; None without ``--hex``/``--base64``.

        Raises:
            ConfigError: both encodings, a prefix without one, an empty prefix, or
                prefixes that start with one another.
        """
        return line_syntax(
            hex=self.hex_,
            base64=self.base64_,
            text_prefix=self.text_prefix,
            binary_prefix=self.binary_prefix,
        )


def line_flags(command: opt.Command) -> opt.Command:
    """Give ``command`` the :class:`LineFlags` in place of its ``lines`` parameter."""
    return opt.flag_group(LineFlags, "lines")(command)

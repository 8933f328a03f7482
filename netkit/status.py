"""Every exit code netkit uses, documented once.

The scheme is the same for every subcommand; README.md and the man pages list it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes.

    0 and 1 are for checks (did the echo match, did the threshold hold); 2 is for anything
    the user can fix on the command line; 3-7 say what failed: the network, the peer or this machine.
    """

    SUCCESS = 0
    """Everything worked; every check held."""
    CHECK_FAILED = 1
    """The network worked but a check did not: an echo mismatched, loss exceeded --max-loss,
    an expectation or threshold was not met."""
    USAGE = 2
    """Bad command line or input: unknown option, bad endpoint, missing or unreadable file."""
    CONNECTION_FAILED = 3
    """Could not connect, or the connection broke: refused, unreachable, reset, closed early,
    name not resolved."""
    TIMEOUT = 4
    """An operation did not finish within its timeout."""
    TLS_ERROR = 5
    """TLS failed: certificate not trusted, hostname mismatch, handshake failure."""
    BIND_FAILED = 6
    """This machine refused: a server could not listen (address in use, permission denied, a path
    that is not a socket), descriptors or memory ran out, or a bench worker died."""
    PROTOCOL_ERROR = 7
    """The peer broke the protocol (bad frame, refused upgrade, unexpected close)."""
    INTERNAL_ERROR = 70
    """A bug in netkit (EX_SOFTWARE). Run again with --debug and report the traceback."""
    INTERRUPTED = 130
    """Stopped by SIGINT (Ctrl-C), after a graceful shutdown: 128 + SIGINT."""

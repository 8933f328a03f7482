"""The netkit error tree.

Every failure netkit reports on purpose is a :class:`NetkitError`. Only ``netkit/cli.py`` turns
them into one-line messages and exit codes (see :mod:`netkit.status`). Errors caused by the
user's input are separate from errors caused by the network or the peer::

    NetkitError
    ├── UsageError                  the user can fix it on the command line        -> 2
    │   ├── EndpointError           an endpoint string that does not parse
    │   └── ConfigError             a bad option value, a missing or unreadable file
    │       ├── FaultExists         a fault by that name is already set (HTTP 409)
    │       └── NoSuchFault         no fault by that name is set (HTTP 404)
    ├── LocalError                  this machine refused                           -> 6
    │   ├── BindError               address in use, permission denied, not a socket
    │   └── ResourceExhausted       out of file descriptors or memory
    ├── NetworkError                the network or the peer failed
    │   ├── ConnectError            refused, unreachable, no such socket, not resolved  -> 3
    │   ├── ConnectionLost          reset or closed before the exchange finished        -> 3
    │   ├── OperationTimeout        did not finish in time                               -> 4
    │   └── TLSError                handshake or verification failed                    -> 5
    ├── PeerProtocolError           the peer broke the wire protocol (carries the close code) -> 7
    ├── LocalProtocolError          we were asked to do something the protocol forbids -> 70
    └── CheckFailed                 it all worked, but a check did not hold            -> 1

Errors name settings, not flags: ``core/`` and ``net/`` mention a setting as
``Setting("max_size")`` inside a message (a tuple of text and settings); ``str(error)`` calls
it by its name, and the CLI renders it as the flag that set it (``--max-size``, see
:meth:`NetkitError.describe` and ``netkit/commands/options.py``).

Errors are data: every :class:`NetkitError` pickles and unpickles as itself, whatever its
constructor takes (``netkit bench`` passes its workers' errors to the parent this way).

Frame and handshake parsers in ``netkit.core`` raise :class:`PeerProtocolError` (remote
violations) and :class:`LocalProtocolError` (misuse of the API); both live here so that core
code stays free of I/O imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """A setting mentioned in an error message, by the name the code gives it (``max_size``).

    The command line renders it as the flag that set it; anything else shows the name.
    """

    name: str

    def __str__(self) -> str:
        return self.name


# An error message: plain text, or text and the settings it mentions, in order.
Words = str | Setting | tuple[str | Setting, ...]


def words(*parts: Words) -> tuple[str | Setting, ...]:
    """One message from several pieces, each text, a setting or a message itself."""
    flat: list[str | Setting] = []
    for part in parts:
        flat.extend(part if isinstance(part, tuple) else (part,))
    return tuple(flat)


def render(words: Words, name: Callable[[str], str] = str) -> str:
    """``words`` as text, each :class:`Setting` called ``name(setting.name)``."""
    if isinstance(words, str):
        return words
    if isinstance(words, Setting):
        return name(words.name)
    return "".join(w if isinstance(w, str) else name(w.name) for w in words)


def _restore(cls: type[NetkitError], args: tuple[Any, ...], state: dict[str, Any]) -> NetkitError:
    """Rebuild a pickled error without calling its constructor (subclasses take other
    arguments than the message they pass up)."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class NetkitError(Exception):
    """Base class for every error netkit reports as a one-line message."""

    hint: str | None = None
    # The message and hint as given, when they mention settings (see :class:`Setting`).
    words: Words | None = None
    hint_words: Words | None = None

    def __init__(self, message: Words, *, hint: Words | None = None) -> None:
        super().__init__(render(message))
        if not isinstance(message, str):
            self.words = message
        if hint is not None:
            self.hint = render(hint)
            if not isinstance(hint, str):
                self.hint_words = hint

    def describe(self, name: Callable[[str], str]) -> tuple[str, str | None]:
        """The message and the hint, each mentioned setting called ``name(setting)``."""
        message = str(self) if self.words is None else render(self.words, name)
        hint = self.hint if self.hint_words is None else render(self.hint_words, name)
        return message, hint

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), self.args, self.__dict__)


class UsageError(NetkitError):
    """The command line or its input is wrong; the user can fix it."""


class EndpointError(UsageError):
    """An endpoint string does not parse (``HOST:PORT``, ``unix:/path``, ``ws://...``)."""


class ConfigError(UsageError):
    """An option value is invalid, or a file it names cannot be read."""


class FaultExists(ConfigError):
    """A fault is added under a name a relay's fault set already has."""


class NoSuchFault(ConfigError):
    """A fault is named that a relay's fault set does not have."""


class LocalError(NetkitError):
    """This machine refused an operation (not the network, not the peer)."""


class BindError(LocalError):
    """A listener could not be created: address in use, permission denied, path not a socket."""


class ResourceExhausted(LocalError):
    """This machine ran out of file descriptors (EMFILE/ENFILE) or socket memory."""


class NetworkError(NetkitError):
    """The network or the peer failed."""


class ConnectError(NetworkError):
    """A connection could not be made: refused, unreachable, name not resolved, no socket file."""


class ConnectionLost(NetworkError):
    """An established connection was reset or closed before the exchange finished."""


class OperationTimeout(NetworkError):
    """An operation did not finish within its timeout."""


class TLSError(NetworkError):
    """The TLS handshake or certificate verification failed."""


class PeerProtocolError(NetkitError):
    """The peer sent something the protocol forbids.

    Attributes:
        close_code: the WebSocket close code to answer with (1002 by default), or None for
            protocols without close codes.
    """

    def __init__(
        self, message: Words, *, close_code: int | None = 1002, hint: Words | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.close_code = close_code


class LocalProtocolError(NetkitError):
    """Our own code asked a protocol object to do something the protocol forbids (a bug)."""


class CheckFailed(NetkitError):
    """Everything worked on the wire, but a check the user asked for did not hold."""

"""Backend health: HAProxy's rise/fall machine, the event a change of state produces, and
what an active check sends and expects.

* A backend starts *up* (HAProxy's default) but provisionally: until its first check passes,
  one failed check marks it down (HAProxy starts servers with health = rise, so the first
  failure is enough). After that it takes ``fall`` consecutive failed checks to go down and,
  once down, ``rise`` consecutive passed checks to come back.
* The I/O of a check (connect, send, read until the probe matches) is in
  :mod:`netkit.net.health`; its verdict goes into :class:`netkit.core.balance.state.BackendState`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from netkit.errors import ConfigError, Setting, Words, words


class HealthStatus(StrEnum):
    """Whether a backend takes new connections."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class HealthEvent:
    """A backend changed state.

    Attributes:
        backend: the backend's name (its endpoint).
        old, new: the states before and after.
        reason: one line saying why (the last check's result, or the failed connect).
        source: ``"check"`` (an active health check) or ``"traffic"`` (a client's connect).
        at: the ``now`` the change happened at.
        check_ms: how long the check that caused it took (None from traffic).
        status: the HTTP status of the HTTP check that caused it, else None.
    """

    backend: str
    old: HealthStatus
    new: HealthStatus
    reason: str
    source: Literal["check", "traffic"]
    at: float
    check_ms: float | None = None
    status: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields for a JSON event (``at`` is left to the caller's clock)."""
        return {
            "backend": self.backend,
            "old": str(self.old),
            "new": str(self.new),
            "reason": self.reason,
            "source": self.source,
            **({"check_ms": self.check_ms} if self.check_ms is not None else {}),
            **({"status": self.status} if self.status is not None else {}),
        }

    def __str__(self) -> str:
        return f"{self.backend} is {self.new}: {self.reason}"


class HealthState:
    """HAProxy's rise/fall machine for one backend.

    Up: ``fall`` consecutive failures take it down (a pass resets the count). Down: ``rise``
    consecutive passes bring it up (a failure resets the count). It starts up but provisional:
    the first failure, before any pass, takes it down at once.

    Args:
        rise: consecutive passes to go up (HAProxy's default 2).
        fall: consecutive failures to go down (HAProxy's default 3).
        up: the initial state.
    """

    def __init__(self, rise: int = 2, fall: int = 3, *, up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ConfigError(f"rise and fall must be at least 1 (got rise={rise}, fall={fall})")
        self.rise = rise
        self.fall = fall
        self.status = HealthStatus.UP if up else HealthStatus.DOWN
        self.provisional = up
        self.passes = 0  # consecutive, counted while down
        self.failures = 0  # consecutive, counted while up

    @property
    def up(self) -> bool:
        """True while the backend takes new connections."""
        return self.status is HealthStatus.UP

    def passed(self) -> str | None:
        """Record a passed check; returns why it came up, or None when the state is unchanged."""
        self.provisional = False
        if self.up:
            self.failures = 0
            return None
        self.passes += 1
        if self.passes < self.rise:
            return None
        self.status, self.passes = HealthStatus.UP, 0
        return f"{self.rise} check{'s' if self.rise > 1 else ''} passed in a row"

    def failed(self, reason: str) -> str | None:
        """Record a failed check; returns why it went down, or None when the state is unchanged."""
        if not self.up:
            self.passes = 0
            return None
        self.failures += 1
        if self.provisional:
            return self.mark_down(f"first check failed: {reason}")
        if self.failures < self.fall:
            return None
        return self.mark_down(f"{self.fall} checks failed in a row, last: {reason}")

    def mark_down(self, reason: str) -> str | None:
        """Go down at once (passive ejection); returns ``reason``, or None when already down."""
        self.passes = 0
        if not self.up:
            return None
        self.status, self.failures, self.provisional = HealthStatus.DOWN, 0, False
        return reason


# --- active check probes -----------------------------------------------------------------

CHECK_EXPECT = Setting("check_expect")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.|$)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}


def parse_escapes(text: str, *, option: Words = Setting("check_send")) -> bytes:
    r"""Bytes from text with C-style escapes: ``\r \n \t \0 \\ \xHH``; other text as UTF-8.

    Raises:
        ConfigError: an unknown escape.
    """
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode()
        code = m.group(1)
        if code.startswith("x") and len(code) == 3:
            out.append(int(code[1:], 16))
        elif code in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[code]
        else:
            raise ConfigError(
                words(
                    option,
                    f" {text!r}: unknown escape '\\{code}' (known: \\r \\n \\t \\0 \\\\ \\xHH)",
                )
            )
        pos = m.end()
    out += text[pos:].encode()
    return bytes(out)


@dataclass(frozen=True)
class CheckProbe:
    """What an active check does once connected.

    With neither ``send`` nor ``expect``, connecting is the check. With ``send``, the bytes are
    written; with ``expect``, the check passes when the bytes read so far match the regex
    (a banner can be expected without sending anything).

    Attributes:
        send: bytes to write after connecting.
        expect: a bytes regex searched in what the backend sends back.
        max_read: give up matching after this many bytes.
    """

    send: bytes = b""
    expect: re.Pattern[bytes] | None = None
    max_read: int = 16 * 1024

    @classmethod
    def parse(cls, send: str | None = None, expect: str | None = None) -> CheckProbe:
        r"""Build a probe from ``--check-send`` (escapes as ``PING\r\n``) and ``--check-expect``
        (a regular expression, such as ``^PONG`` or ``\+OK``).

        Raises:
            ConfigError: a bad escape or regular expression.
        """
        pattern = None
        if expect is not None:
            if not expect:
                raise ConfigError((CHECK_EXPECT, " must not be empty"))
            try:
                pattern = re.compile(expect.encode())
            except re.error as exc:
                raise ConfigError(
                    (CHECK_EXPECT, f" {expect!r} is not a regular expression: {exc}")
                ) from None
        return cls(parse_escapes(send) if send else b"", pattern)

    @property
    def reads(self) -> bool:
        """True when the check waits for a reply."""
        return self.expect is not None

    def matches(self, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` (everything read so far) matches ``expect``."""
        return self.expect is not None and self.expect.search(data) is not None

    def describe(self) -> str:
        """How the check is described in messages (``/^PONG/``)."""
        return f"/{self.expect.pattern.decode(errors='replace')}/" if self.expect else "connect"

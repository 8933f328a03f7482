"""ws-client's ``--record`` and ``--replay`` flags: what they mean and how a replay is shown.

The format is :mod:`netkit.core.ws.recording`, the comparison :mod:`netkit.core.ws.replay`,
the I/O :mod:`netkit.net.ws_record` and :mod:`netkit.net.ws_replay`; this module turns the
flags into their settings and presents the result: each message as a ``sent``/``received``
event with ``--json``, then every difference (a ``difference`` event each), a ``replay``
summary, and exit 1 (CHECK_FAILED) when anything differs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from netkit.commands import options as opt
from netkit.commands.options import Command
from netkit.console import Output
from netkit.core.ws.recording import message_json
from netkit.core.ws.replay import ReplayCheck, ReplayPlan
from netkit.errors import CheckFailed, ConfigError, OperationTimeout
from netkit.net.ws_client import WebSocketClientConnection
from netkit.net.ws_record import RecordFile, read_recording
from netkit.net.ws_replay import Replay

DEFAULT_SPEED = "1"
DEFAULT_WAIT = "5s"

Record = Annotated[
    Path | None,
    typer.Option(
        "--record",
        help="Write every event of the session (open, messages, pings, pongs, close) with its "
        "time to this file, as JSON lines, for --replay.",
    ),
]
ReplayFile = Annotated[
    Path | None,
    typer.Option(
        "--replay",
        help="Play the client side of a --record file against URL and compare the server's "
        "answers with the recording: exit 0 when they match, 1 with the differences.",
    ),
]
ReplaySpeed = Annotated[
    str,
    typer.Option(
        "--replay-speed",
        help="With --replay: 'max' sends each message as soon as the answers before it "
        "arrived; a factor plays the recording that much faster (default 1: at recorded "
        "speed).",
    ),
]
ReplayWait = Annotated[
    str,
    typer.Option(
        "--replay-wait",
        help="With --replay: how long to wait for the recorded answers before each message, "
        "and for the server's close, before counting them missing.",
    ),
]
Ignore = Annotated[
    list[str] | None,
    typer.Option(
        "--ignore",
        help="With --replay: text matching this regex (in text messages and close reasons) "
        "does not count as a difference (repeatable), e.g. '\"ts\":[0-9.]+'.",
    ),
]


@dataclass(frozen=True)
class ReplaySettings:
    """A replay as the flags ask for it."""

    path: Path
    plan: ReplayPlan
    subprotocols: tuple[str, ...]
    speed: float | None
    wait: float
    ignore: tuple[re.Pattern[str], ...]


def parse_speed(text: str) -> float | None:
    """``--replay-speed``: ``max`` (None) or a positive factor.

    Raises:
        ConfigError: anything else.
    """
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = 0.0
    if not 0 < speed < float("inf"):
        raise ConfigError(f"--replay-speed {text!r}: use 'max' or a factor above 0, e.g. 1 or 10")
    return speed


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"--ignore {text!r} is not a regular expression: {exc}") from None


def _replay_settings(path: Path, speed: str, wait: str, ignore: list[str]) -> ReplaySettings:
    recording = read_recording(path)
    waited = opt.duration(wait, "--replay-wait")
    return ReplaySettings(
        path=path,
        plan=ReplayPlan.from_recording(recording),
        subprotocols=recording.subprotocols,
        speed=parse_speed(speed),
        wait=waited if waited is not None else 0.0,
        ignore=tuple(_pattern(text) for text in ignore),
    )


@dataclass(frozen=True)
class RecordFlags:
    """ws-client's ``--record``, ``--replay`` and the replay's flags, as one group (spliced
    into the command by :func:`record_flags`)."""

    record: Record = None
    replay: ReplayFile = None
    replay_speed: ReplaySpeed = DEFAULT_SPEED
    replay_wait: ReplayWait = DEFAULT_WAIT
    ignore: Ignore = None

    def replay_settings(self, conflicts: Sequence[tuple[str, object]]) -> ReplaySettings | None:
        """Read the recording and check the replay flags; None without ``--replay``.

        Args:
            conflicts: ``(name, value)`` of what a replay cannot be used with (MESSAGES,
                ``--file`` ...): a true value is refused.

        Raises:
            ConfigError: an unreadable or malformed recording, a bad flag value, a
                conflicting option, or a replay flag without ``--replay``.
        """
        if self.replay is None:
            given = (
                ("--replay-speed", self.replay_speed != DEFAULT_SPEED),
                ("--replay-wait", self.replay_wait != DEFAULT_WAIT),
                ("--ignore", bool(self.ignore)),
            )
            for flag, set_ in given:
                if set_:
                    raise ConfigError(f"{flag} is for --replay")
            return None
        for name, value in conflicts:
            if value:
                raise ConfigError(f"--replay sends the recording's messages: drop {name}")
        return _replay_settings(self.replay, self.replay_speed, self.replay_wait, self.ignore or [])

    def record_file(self, url: str, subprotocols: Sequence[str]) -> RecordFile | None:
        """The ``--record`` file, opened (its header written); None without ``--record``.

        Raises:
            ConfigError: the file cannot be created.
        """
        return RecordFile(self.record, url, tuple(subprotocols)) if self.record else None


def record_flags(command: Command) -> Command:
    """Give ``command`` the :class:`RecordFlags` in place of its ``recording`` parameter."""
    return opt.flag_group(RecordFlags, "recording")(command)


class ReplayPresenter:
    """Shows a replay: messages as events (with ``--json``), differences at the end.

    Implements :class:`~netkit.net.ws_replay.ReplayView`.
    """

    def __init__(self, out: Output) -> None:
        self.out = out

    def sent(self, data: bytes, text: bool) -> None:
        self.out.event("sent", None, **message_json(text, data))

    def received(self, is_text: bool, data: bytes) -> None:
        self.out.event("received", None, **message_json(is_text, data))


async def run_replay(
    conn: WebSocketClientConnection,
    settings: ReplaySettings,
    out: Output,
    *,
    deadline: float | None = None,
    timeout: float | None = None,
) -> None:
    """Replay on ``conn`` and report; return for no difference.

    Args:
        deadline: loop time by which the replay must be over (``--timeout``, ``timeout``
            seconds from the start); None: none.

    Raises:
        CheckFailed: the server's answers differ from the recording.
        OperationTimeout: the deadline passed.
        PeerProtocolError, ConnectionLost: the connection itself failed.
    """
    check = ReplayCheck(settings.plan, settings.ignore)
    replay = Replay(conn, check, ReplayPresenter(out), speed=settings.speed, wait=settings.wait)
    try:
        async with asyncio.timeout_at(deadline):
            result = await replay.run()
    except TimeoutError:
        raise OperationTimeout(
            f"the replay did not finish within {timeout or 0:g}s (--timeout)"
        ) from None
    for error in (conn.ws.error, conn.error):
        if error is not None:
            raise error
    name = str(settings.path)
    summary: dict[str, Any] = {
        "recording": name,
        "sent": result.sent,
        "received": result.received,
        "close_code": result.close.code,
        "differences": len(result.differences),
    }
    for difference in result.differences:
        out.event("difference", None, **difference.json())
    out.event("replay", None, **summary)
    if not result.differences:
        if not out.json:
            out.err.print(
                f"no difference from {name} ({result.sent} sent, {result.received} received)",
                markup=False,
            )
        return
    count = len(result.differences)
    plural = "s" if count != 1 else ""
    if not out.json:
        lines = [f"replay of {name}: {count} difference{plural}"]
        lines += [f"  {d.describe()}" for d in result.differences]
        out.write_bytes(("\n".join(lines) + "\n").encode())
    raise CheckFailed(
        f"the server's answers differ from {name}: {count} difference{plural}, "
        f"first: {result.differences[0].describe()}"
    )

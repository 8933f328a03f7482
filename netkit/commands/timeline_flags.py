"""proxy's ``--timeline`` and ``--timeline-repeat`` flags (TCP and UDP relays).

Apart from :mod:`netkit.commands.options` because the timeline grammar imports every fault
kind: only proxy loads it, not every command that takes a shared flag group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from netkit.commands.options import Command, flag_group
from netkit.core.timeline import SYNTAX as TIMELINE_SYNTAX
from netkit.core.timeline import Timeline, parse_repeat
from netkit.errors import ConfigError

TIMELINE_PANEL = "Fault timeline"


@dataclass(frozen=True)
class TimelineFlags:
    """``--timeline`` and ``--timeline-repeat``: faults that change on time while a relay
    runs (see :mod:`netkit.core.timeline`)."""

    timeline: Annotated[
        str | None,
        typer.Option(
            "--timeline",
            metavar="STEPS",
            help=f"Change the faults on time: '{TIMELINE_SYNTAX}' (e.g. '0s latency=50ms:10ms; "
            "10s reset p=0.2; 25s blackhole; 40s clear'). A step replaces the previous step's "
            "faults ('+' keeps them); fault flags stay throughout.",
            rich_help_panel=TIMELINE_PANEL,
        ),
    ] = None
    timeline_repeat: Annotated[
        str | None,
        typer.Option(
            "--timeline-repeat",
            metavar="N|forever",
            help="Run the timeline N more times, or forever; a cycle lasts until its last step "
            "(end it with e.g. '40s clear').",
            rich_help_panel=TIMELINE_PANEL,
        ),
    ] = None

    def parse(self) -> Timeline | None:
        """The timeline, or None when not given.

        Raises:
            ConfigError: a step that does not parse (named), or --timeline-repeat alone.
        """
        repeat = parse_repeat(self.timeline_repeat) if self.timeline_repeat is not None else 0
        if self.timeline is None:
            if self.timeline_repeat is not None:
                raise ConfigError("--timeline-repeat repeats a --timeline: give one")
            return None
        try:
            return Timeline.parse(self.timeline, repeat=repeat)
        except ConfigError as exc:
            raise ConfigError(f"--timeline: {exc}") from None


def timeline_flags(command: Command) -> Command:
    """Give ``command`` the timeline flags in place of its ``timeline`` parameter."""
    return flag_group(TimelineFlags, "timeline")(command)

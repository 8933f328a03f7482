"""What a WebSocket client waits for: ``count`` messages and ``expect`` patterns, matched as
messages arrive (ws-client's ``--count`` and ``--expect``).

Pure logic: :class:`Expectation` is fed each received message and says when it is satisfied
or can no longer be. Its messages mention the ``count`` and ``expect`` settings as
:class:`~netkit.errors.Setting` objects (the command line shows its flags).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netkit.errors import Setting, Words

COUNT, EXPECT = Setting("count"), Setting("expect")


@dataclass
class Expectation:
    """``count`` and ``patterns``: when the client is done, and whether that is a success.

    * ``count N``: satisfied by the N-th message.
    * ``patterns`` (one or more): each pattern must match a message (``re.search``), in
      order, each a later message than the one before; satisfied when the last one matched.
      Binary messages are matched as UTF-8 with undecodable bytes replaced.
    * both: satisfied when every pattern matched among the first N messages; failed once N
      came without that.
    """

    count: int | None = None
    patterns: tuple[re.Pattern[str], ...] = ()
    received: int = 0
    matched: int = 0  # how many patterns matched so far

    @property
    def active(self) -> bool:
        """True when there is something to wait for."""
        return self.count is not None or bool(self.patterns)

    def feed(self, data: bytes) -> bool | None:
        """Record one received message: True when satisfied, False when it no longer can be."""
        self.received += 1
        if self.patterns:
            if self.patterns[self.matched].search(data.decode("utf-8", "replace")):
                self.matched += 1
                if self.matched == len(self.patterns):
                    return True
            if self.count is not None and self.received >= self.count:
                return False
            return None
        if self.count is not None and self.received >= self.count:
            return True
        return None

    def failure(self, why: str) -> Words:
        """Say what was not met, and why (``why``: "before ...", "within ...")."""
        got = f"{self.received} message{'s' if self.received != 1 else ''} received"
        if not self.patterns:
            return (COUNT, f" {self.count}: {got} {why}")
        which = f" {self.patterns[self.matched].pattern!r}"
        if len(self.patterns) > 1:
            which += f" (pattern {self.matched + 1} of {len(self.patterns)})"
        if self.count is not None and self.received >= self.count:
            return ("no message matched ", EXPECT, f"{which} in the first {self.count}")
        return ("no message matched ", EXPECT, f"{which} ({got}) {why}")

"""The multicast self-test without I/O: its groups, what each receiver saw, verdicts and tally.

One sender streams probes to an ASM and an SSM group; several receivers join while it flows.
Each receiver is a :class:`SelftestCase` that judges what it got; :class:`SelftestTally` adds
up the cases of every family into the command's verdict. The sockets are in
:mod:`netkit.net.multicast.selftest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from netkit.core.multicast.groups import Group
from netkit.core.multicast.traffic import SourceAccount
from netkit.core.probe import parse_probe

# Not-sent-from addresses for the "ssm-other" receivers (RFC 5737 / RFC 3849 documentation).
OTHER_SOURCE = {4: "198.51.100.1", 6: "2001:db8::1"}


class SelftestMode(StrEnum):
    """How a self-test receiver joins, and so what it must receive."""

    ASM = "asm"
    """Any-source join of the ASM group: must receive the stream."""
    SSM = "ssm"
    """Source-specific join of the SSM group with the sender as source: must receive it."""
    SSM_OTHER = "ssm-other"
    """Source-specific join with a source that never sends: must receive nothing."""


def selftest_groups(version: int, salt: int) -> tuple[Group, Group]:
    """The (ASM, SSM) groups a self-test uses: admin/link-scoped, varied by ``salt``."""
    a, b = (salt >> 8) & 0xFF, salt & 0xFF
    if version == 4:
        return Group(f"239.255.{a}.{b}", 0, 4), Group(f"232.110.{a}.{b}", 0, 4)
    return Group(f"ff12::6e6b:{salt & 0xFFFF:x}", 0, 6), Group(
        f"ff32::8000:{salt & 0xFFFF:x}", 0, 6
    )


def selftest_plan(
    version: int, asm: Group, ssm: Group, sender: str, receivers: int
) -> list[tuple[SelftestMode, Group, str | None]]:
    """(mode, group, source to join) of each receiver: ``receivers`` ASM, one SSM, one SSM-other."""
    plan: list[tuple[SelftestMode, Group, str | None]] = [(SelftestMode.ASM, asm, None)] * receivers
    plan += [(SelftestMode.SSM, ssm, sender), (SelftestMode.SSM_OTHER, ssm, OTHER_SOURCE[version])]
    return plan


@dataclass
class SelftestCase:
    """One receiver of the self-test and what it saw.

    Attributes:
        version: 4 or 6.
        mode: how it joined (see :class:`SelftestMode`).
        group: the group it joined.
        source: the source of its source-specific join (None for ASM).
        joined_at, first_at: monotonic times of the join and of the first datagram after it.
        account: the sender's datagrams, as received.
        foreign: datagrams from any other source.
    """

    version: int
    mode: SelftestMode
    group: Group
    source: str | None
    joined_at: float = 0.0
    first_at: float | None = None
    account: SourceAccount | None = None
    foreign: int = 0

    def receive(
        self,
        source: str,
        sender: str,
        data: bytes | bytearray | memoryview,
        now: float,
        now_wall_ns: int,
    ) -> None:
        """Account for one datagram from ``source`` (``sender`` is the self-test's sender)."""
        if source != sender:
            self.foreign += 1
            return
        if self.first_at is None:
            self.first_at = now
        if self.account is None:
            self.account = SourceAccount(sender, str(self.group))
        self.account.add(len(data), parse_probe(data), now_wall_ns)

    def heard(self, seq: int) -> bool:
        """True when probe ``seq`` arrived (an SSM-other receiver never waits for anything)."""
        if self.mode is SelftestMode.SSM_OTHER:
            return True
        return self.account is not None and seq in self.account.tracker.received

    def as_dict(self, last_seq: int, max_loss: float) -> dict[str, Any]:
        """The receiver's result, with ``passed`` and, when it failed, ``reason``."""
        acc = self.account
        received = len(acc.tracker.received) if acc else 0
        lost = last_seq - (acc.lowest or 0) + 1 - received if acc and acc.lowest is not None else 0
        expected = received + lost
        result: dict[str, Any] = {
            "family": f"ipv{self.version}",
            "mode": str(self.mode),
            "group": str(self.group),
            "source": self.source,
            "join_ms": round((self.first_at - self.joined_at) * 1000, 3) if self.first_at else None,
            "received": received,
            "lost": lost,
            "loss_percent": round(100 * lost / expected, 3) if expected else 0.0,
            "duplicates": acc.tracker.duplicates if acc else 0,
            "reordered": acc.tracker.reordered if acc else 0,
            "foreign": self.foreign,
        }
        reasons = self._failures(result, max_loss)
        result["passed"] = not reasons
        if reasons:
            result["reason"] = ", ".join(reasons)
        return result

    def _failures(self, result: dict[str, Any], max_loss: float) -> list[str]:
        if self.mode is SelftestMode.SSM_OTHER:
            if result["received"] or self.foreign:
                return ["received datagrams from a source it did not join"]
            return []
        reasons = []
        if not result["received"]:
            reasons.append("no datagram arrived")
        if result["loss_percent"] > max_loss:
            reasons.append(f"{result['lost']} lost")
        if result["duplicates"]:
            reasons.append(f"{result['duplicates']} duplicate(s)")
        if result["reordered"]:
            reasons.append(f"{result['reordered']} reordered")
        return reasons


@dataclass
class SelftestTally:
    """The self-test's verdict over every family: cases passed and failed, families skipped."""

    passed: int = 0
    failed: int = 0
    skipped: list[int] = field(default_factory=list)

    def add(self, case: dict[str, Any]) -> None:
        """Count one receiver's result (from :meth:`SelftestCase.as_dict`)."""
        if case["passed"]:
            self.passed += 1
        else:
            self.failed += 1

    def skip(self, version: int) -> None:
        """IP ``version`` could not run on this interface."""
        self.skipped.append(version)

    def failure(self, versions: list[int], interface: str) -> str | None:
        """Why the self-test failed, or None when it passed.

        Args:
            versions: the families asked for (a family asked for alone must not be skipped).
            interface: the interface's name, for the message.
        """
        if self.failed:
            return f"{self.failed} multicast self-test receiver(s) failed on {interface}"
        if self.skipped and len(versions) == 1:
            return f"IPv{versions[0]} multicast cannot run on {interface}"
        if not self.passed:
            return f"no multicast self-test could run on {interface}"
        return None

"""Changing a running relay's faults: the methods a TCP proxy's and a UDP proxy's handles share.

Both relays keep their faults in a :class:`~netkit.core.fault_set.FaultSet` (``server.faults``);
a change applies to the open connections or flows from that moment, and to new ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from netkit.core.fault_set import FaultSet
from netkit.core.faults import Fault


class FaultControls(ABC):
    """The faults of a running relay, changeable while it runs (toxiproxy's toxics).

    A relay refuses a fault of the other transport (a datagram fault on a TCP proxy, a stream
    fault other than latency on a UDP proxy) with a :class:`~netkit.errors.ConfigError`.
    """

    @property
    @abstractmethod
    def fault_set(self) -> FaultSet:
        """The relay's own fault set (internal: change faults through the methods)."""

    @property
    def faults(self) -> list[tuple[str, Fault]]:
        """The active faults, in the order they were added, with their names."""
        return list(self.fault_set)

    def add(self, fault: Fault, name: str | None = None) -> str:
        """Add ``fault``; returns its name (toxiproxy's default naming: ``latency_downstream``).

        Raises:
            FaultExists: a fault by that name is active.
            ConfigError: a fault this relay's transport does not take.
        """
        return self.fault_set.add(fault, name)

    def replace(self, name: str, fault: Fault) -> None:
        """Put ``fault`` in the place of the fault called ``name``.

        Raises:
            NoSuchFault: no fault by that name.
            ConfigError: a fault this relay's transport does not take.
        """
        self.fault_set.replace(name, fault)

    def remove(self, name: str) -> Fault:
        """Remove the fault called ``name`` and return it.

        Raises:
            NoSuchFault: no fault by that name.
        """
        return self.fault_set.remove(name)

    def clear(self) -> None:
        """Remove every fault: from now on data passes untouched."""
        self.fault_set.clear()

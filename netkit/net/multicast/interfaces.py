"""This host's network interfaces (in this network namespace), found by name or by address."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
from dataclasses import dataclass

from netkit.errors import ConfigError, Setting

SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class Interface:
    """A network interface and its addresses.

    Attributes:
        name: ``lo``, ``eth0`` ...
        index: the kernel's interface index.
        ipv4: its primary IPv4 address, if any.
        ipv6: its IPv6 addresses (link-local ones included).
        given: the address the user named it by, when they did.
    """

    name: str
    index: int
    ipv4: str | None
    ipv6: tuple[str, ...]
    given: str | None = None

    def address_for(self, version: int) -> str | None:
        """The address to send from for a group of this family (the given one first)."""
        if self.given is not None and (":" in self.given) == (version == 6):
            return self.given
        if version == 4:
            return self.ipv4
        return next(iter(self.ipv6), None)


def _ipv4_address(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            ifreq = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None  # EADDRNOTAVAIL: no IPv4 address on it
    return socket.inet_ntoa(ifreq[20:24])


def _ipv6_addresses() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    try:
        with open("/proc/net/if_inet6") as f:
            lines = f.read().splitlines()
    except OSError:
        return found  # no IPv6 in this kernel
    for line in lines:
        fields = line.split()
        if len(fields) == 6:
            packed = bytes.fromhex(fields[0])
            found.setdefault(fields[5], []).append(socket.inet_ntop(socket.AF_INET6, packed))
    # Global addresses first: they are what a sender would rather use.
    for addresses in found.values():
        addresses.sort(key=lambda a: a.startswith("fe80"))
    return found


def list_interfaces() -> list[Interface]:
    """Every interface of this host (network namespace), with its addresses."""
    v6 = _ipv6_addresses()
    return [
        Interface(name, index, _ipv4_address(name), tuple(v6.get(name, ())))
        for index, name in socket.if_nameindex()
    ]


def resolve_interface(text: str) -> Interface:
    """Find the interface named ``text``, or the one that has address ``text``.

    Raises:
        ConfigError: no such interface; the message lists the ones that exist.
    """
    interfaces = list_interfaces()
    address = text.split("%", 1)[0]
    for iface in interfaces:
        if iface.name == text:
            return iface
    with contextlib.suppress(OSError, ValueError):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        packed = socket.inet_pton(family, address)
        for iface in interfaces:
            mine = [iface.ipv4] if family == socket.AF_INET else list(iface.ipv6)
            if any(a and socket.inet_pton(family, a) == packed for a in mine):
                return Interface(iface.name, iface.index, iface.ipv4, iface.ipv6, address)
    names = ", ".join(i.name for i in interfaces) or "none"
    raise ConfigError(
        (
            Setting("interface"),
            f" {text!r}: no interface has that name or address (interfaces: {names})",
        )
    )

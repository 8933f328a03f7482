"""Multicast groups, broadcast targets and source-specific (SSM) sources, parsed and checked."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netkit.core.addresses import parse_host_port
from netkit.errors import ConfigError, EndpointError, Setting

# The settings these errors mention (the command line shows them as its flags).
BROADCAST, SOURCE, INTERFACE = Setting("broadcast"), Setting("source"), Setting("interface")


@dataclass(frozen=True)
class Group:
    """A multicast group and UDP port.

    Attributes:
        address: the group address (IPv6 without brackets or scope).
        port: UDP port; 0 lets the kernel choose (listeners only).
        version: 4 or 6.
    """

    address: str
    port: int
    version: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.version == 6 else self.address
        return f"{host}:{self.port}"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def parse_group(text: str) -> Group:
    """Parse ``GROUP:PORT`` (``239.1.2.3:5000``, ``[ff15::1]:5000``) and check it is multicast.

    Raises:
        EndpointError: it does not parse, or the address is not a multicast address.
    """
    host, port = parse_host_port(text)
    address = _ip(host)
    if address is None:
        raise EndpointError(f"group {text!r}: {host!r} is not an IP address (names are not groups)")
    if not address.is_multicast:
        hint = "IPv4 groups are 224.0.0.0/4, IPv6 groups ff00::/8"
        raise EndpointError(f"group {text!r}: {address} is not a multicast address ({hint})")
    return Group(str(address), port, address.version)


def parse_broadcast(text: str) -> Group:
    """Parse ``ADDRESS:PORT`` for ``send --broadcast``: an IPv4 address that is not multicast.

    Returns a :class:`Group` (the type carries address, port and version; it is not a group).

    Raises:
        EndpointError: IPv6 (which has no broadcast), a multicast address, or no address.
    """
    host, port = parse_host_port(text)
    address = _ip(host)
    if address is None or address.version != 4:
        raise EndpointError(
            (
                BROADCAST,
                f" {text!r}: expected an IPv4 broadcast address such as 255.255.255.255"
                " (IPv6 has no broadcast; use a group such as ff02::1)",
            )
        )
    if address.is_multicast:
        raise EndpointError((BROADCAST, f" {text!r}: {address} is multicast; drop ", BROADCAST))
    return Group(str(address), port, 4)


def parse_source(text: str, group: Group) -> str:
    """Check a ``--source`` address for a source-specific join of ``group``.

    Raises:
        ConfigError: not a unicast IP address, or of the other family than the group.
    """
    address = _ip(text)
    if address is None or address.is_multicast or address.is_unspecified:
        raise ConfigError((SOURCE, f" {text!r} is not a unicast IP address"))
    if address.version != group.version:
        raise ConfigError(
            (
                SOURCE,
                f" {text!r} is IPv{address.version} but group {group} is IPv{group.version}"
                " (a source-specific join needs a source of the group's family)",
            )
        )
    return str(address)


def split_sources(sources: list[str], groups: list[Group]) -> dict[Group, list[str]]:
    """Which ``--source`` addresses each group joins: those of its family.

    Raises:
        ConfigError: a source is not an IP address, or sources were given and none of them is of
            some group's family (SSM with a source of the other family).
    """
    plan: dict[Group, list[str]] = {}
    for group in groups:
        mine = [s for s in sources if (a := _ip(s)) is not None and a.version == group.version]
        if sources and not mine:
            # Report the first mismatch with the message parse_source gives.
            parse_source(sources[0], group)
        plan[group] = [parse_source(s, group) for s in mine]
    for source in sources:
        if _ip(source) is None:
            raise ConfigError((SOURCE, f" {source!r} is not a unicast IP address"))
    return plan


def check_interface_family(interface_address: str | None, group: Group) -> None:
    """An interface given as an address must be of the group's family.

    Raises:
        ConfigError: ``--interface 192.0.2.1`` with an IPv6 group, or the reverse.
    """
    if interface_address is None:
        return
    address = _ip(interface_address)
    if address is not None and address.version != group.version:
        raise ConfigError(
            (
                INTERFACE,
                f" {interface_address!r} is an IPv{address.version} address but group "
                f"{group} is IPv{group.version}; name the interface instead (e.g. ",
                INTERFACE,
                " eth0)",
            )
        )

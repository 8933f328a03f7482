"""Multicast sockets: joins (ASM and SSM, IPv4 and IPv6), receivers and senders.

Every sender names its outgoing interface (see :mod:`netkit.net.multicast`).

Linux specifics: Python 3.11's ``socket`` module lacks ``MCAST_JOIN_SOURCE_GROUP``,
``IP_MULTICAST_ALL`` and friends, so their values (from ``<linux/in.h>``, ``<linux/in6.h>``)
are here, and the ``group_source_req`` structure is packed by hand. Source-specific joins use
``MCAST_JOIN_SOURCE_GROUP`` for both families, because it names the interface by index;
``IP_ADD_SOURCE_MEMBERSHIP`` needs an IPv4 address on the interface.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct

from netkit.core.multicast.groups import Group
from netkit.errors import BindError, ConfigError, ConnectError
from netkit.net.multicast.interfaces import Interface
from netkit.net.sockets import translate_bind_error

IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
IP_UNICAST_IF = 50
MCAST_JOIN_GROUP = 42
MCAST_JOIN_SOURCE_GROUP = 46

# struct group_source_req { uint32_t gsr_interface; struct sockaddr_storage gsr_group, gsr_source; }
# sockaddr_storage is 128 bytes aligned like a long: 4 bytes of padding after the index on LP64.
_SS_SIZE = 128
_GSR_PAD = struct.calcsize("@I0l") - 4


def _family(version: int) -> socket.AddressFamily:
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def _sockaddr_storage(version: int, address: str) -> bytes:
    if version == 6:
        raw = struct.pack(
            "=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(socket.AF_INET6, address), 0
        )
    else:
        raw = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton(address))
    return raw.ljust(_SS_SIZE, b"\0")


def group_source_req(index: int, version: int, group: str, source: str) -> bytes:
    """Pack ``struct group_source_req`` for ``MCAST_JOIN_SOURCE_GROUP``."""
    return (
        struct.pack("=I", index)
        + bytes(_GSR_PAD)
        + _sockaddr_storage(version, group)
        + _sockaddr_storage(version, source)
    )


def _ip_mreqn(group: str, index: int) -> bytes:
    # struct ip_mreqn { in_addr imr_multiaddr, imr_address; int imr_ifindex; }: the interface
    # by index, so an interface without an IPv4 address can still be joined.
    return socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("=i", index)


def join(sock: socket.socket, group: Group, interface: Interface, sources: list[str]) -> None:
    """Join ``group`` on ``interface``: any source (ASM), or only ``sources`` (SSM).

    Raises:
        OSError: the kernel refused (the caller translates it).
    """
    if not sources:
        if group.version == 4:
            sock.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                _ip_mreqn(group.address, interface.index),
            )
        else:
            mreq = socket.inet_pton(socket.AF_INET6, group.address) + struct.pack(
                "=I", interface.index
            )
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        return
    level = socket.IPPROTO_IPV6 if group.version == 6 else socket.IPPROTO_IP
    for source in sources:
        req = group_source_req(interface.index, group.version, group.address, source)
        sock.setsockopt(level, MCAST_JOIN_SOURCE_GROUP, req)


def _join_error(exc: OSError, group: Group, interface: Interface) -> ConfigError | BindError:
    where = f"group {group} on {interface.name}"
    if exc.errno == errno.ENODEV:
        return ConfigError(f"cannot join {where}: the interface has no address of that family")
    if exc.errno == errno.ENOBUFS:
        return BindError(
            f"cannot join {where}: too many memberships",
            hint="raise net.ipv4.igmp_max_memberships / net.ipv4.igmp_max_msf",
        )
    return BindError(f"cannot join {where}: {exc.strerror or exc}")


def open_receiver(
    group: Group,
    interface: Interface,
    sources: list[str] = [],  # noqa: B006 - never mutated
    *,
    rcvbuf: int | None = None,
    joined: bool = True,
) -> socket.socket:
    """A non-blocking socket bound to ``group`` (port 0: the kernel picks) and joined on ``interface``.

    With ``joined=False`` the caller joins later with :func:`join`.

    The socket is bound to the group address, not the wildcard, and ``IP_MULTICAST_ALL`` is off,
    so it receives only this group even when other sockets on the host join others on the same
    port. ``SO_REUSEADDR`` lets several listeners share the group and port; each gets a copy.

    Raises:
        BindError: the port cannot be bound or the kernel refused the join.
        ConfigError: the interface cannot carry this family.
    """
    sock = socket.socket(_family(group.version), socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if group.version == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):  # Linux < 4.20 has no IPV6_MULTICAST_ALL
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            sock.bind((group.address, group.port, 0, interface.index))
        else:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            sock.bind((group.address, group.port))
    except OSError as exc:
        sock.close()
        raise translate_bind_error(exc, f"udp://{group}") from exc
    try:
        if joined:
            join(sock, group, interface, sources)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise _join_error(exc, group, interface) from exc
    return sock


def open_receivers(
    groups: list[Group],
    interface: Interface,
    sources: dict[Group, list[str]],
    *,
    rcvbuf: int | None = None,
) -> list[tuple[Group, socket.socket]]:
    """One joined receiver per group (see :func:`open_receiver`), each with the port it got.

    Args:
        sources: the sources each group joins (from ``split_sources``; empty: any source).

    Raises:
        BindError, ConfigError: as :func:`open_receiver`; the sockets opened so far are closed.
    """
    opened: list[tuple[Group, socket.socket]] = []
    try:
        for group in groups:
            sock = open_receiver(group, interface, sources[group], rcvbuf=rcvbuf)
            bound = Group(group.address, sock.getsockname()[1], group.version)
            opened.append((bound, sock))
    except BaseException:
        for _, sock in opened:
            sock.close()
        raise
    return opened


def set_multicast_sending(
    sock: socket.socket, version: int, interface: Interface, *, ttl: int, loop: bool
) -> None:
    """Pin the outgoing interface (never the default route), and set TTL/hops and loopback."""
    if version == 6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, interface.index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))
    else:
        sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _ip_mreqn("0.0.0.0", interface.index)
        )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))


def open_sender(
    version: int,
    interface: Interface,
    *,
    ttl: int = 1,
    loop: bool = True,
    source_port: int = 0,
    bind_address: str | None = None,
    broadcast: bool = False,
    sndbuf: int | None = None,
) -> socket.socket:
    """A non-blocking UDP socket that sends multicast (or broadcast) out of ``interface`` only.

    Args:
        version: 4 or 6.
        interface: the outgoing interface; multicast never follows the default route.
        ttl: IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS (1: this link only).
        loop: deliver copies to listeners on this host too.
        source_port: bind to this port (0: the kernel picks one when needed).
        bind_address: bind to this local address (the interface's, when named by address).
        broadcast: SO_BROADCAST, and IP_UNICAST_IF pins broadcasts to ``interface``.
        sndbuf: SO_SNDBUF in bytes.

    Raises:
        BindError: the source address or port cannot be bound.
    """
    sock = socket.socket(_family(version), socket.SOCK_DGRAM)
    target = f"{bind_address or '*'}:{source_port}"
    try:
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        set_multicast_sending(sock, version, interface, ttl=ttl, loop=loop)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            # IP_UNICAST_IF takes the index in network byte order; it also pins 255.255.255.255.
            sock.setsockopt(socket.IPPROTO_IP, IP_UNICAST_IF, struct.pack("!I", interface.index))
        if bind_address is not None or source_port:
            if version == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                scope = interface.index if (bind_address or "").startswith("fe80") else 0
                sock.bind((bind_address or "::", source_port, 0, scope))
            else:
                sock.bind((bind_address or "0.0.0.0", source_port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise translate_bind_error(exc, target) from exc
    return sock


def group_sockaddr(
    group: Group, interface: Interface
) -> tuple[str, int] | tuple[str, int, int, int]:
    """The address to ``sendto`` for ``group`` (IPv6 carries the interface as scope id)."""
    if group.version == 6:
        return (group.address, group.port, 0, interface.index)
    return (group.address, group.port)


def send_error(exc: OSError, group: Group, interface: Interface) -> ConnectError:
    """Translate a failed multicast send into a netkit error that says what to check."""
    if exc.errno == errno.ENETUNREACH:
        return ConnectError(
            f"cannot send to {group} on {interface.name}: network unreachable",
            hint=(
                "the kernel has no multicast route on that interface"
                + (
                    " (Linux lo has no IPv6 multicast route, and does not deliver IPv6 "
                    "multicast sent on it even with one: use a multicast-capable interface)"
                    if group.version == 6 and interface.name == "lo"
                    else ""
                )
            ),
        )
    return ConnectError(f"cannot send to {group} on {interface.name}: {exc.strerror or exc}")

"""Multicast sockets: interfaces, joins (ASM and SSM, IPv4 and IPv6), senders and receivers.

Safety rule: every socket that sends multicast names its outgoing interface explicitly
(``IP_MULTICAST_IF`` / ``IPV6_MULTICAST_IF`` by interface index), so a group never leaves
through whatever the default route points at; broadcast senders are pinned with
``IP_UNICAST_IF`` the same way.

Linux specifics: Python 3.11's ``socket`` module lacks ``MCAST_JOIN_SOURCE_GROUP``,
``IP_MULTICAST_ALL`` and friends, so their values (from ``<linux/in.h>``, ``<linux/in6.h>``)
are here, and the ``group_source_req`` structure is packed by hand. Source-specific joins use
``MCAST_JOIN_SOURCE_GROUP`` for both families, because it names the interface by index;
``IP_ADD_SOURCE_MEMBERSHIP`` needs an IPv4 address on the interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netkit.core.multicast import (
    Arrival,
    Group,
    PingPeer,
    PingSession,
    ReceiveLedger,
    SourceAccount,
)
from netkit.core.probe import make_probe, parse_probe
from netkit.errors import BindError, ConfigError, ConnectError
from netkit.net.sockets import describe, translate_bind_error

IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
IP_UNICAST_IF = 50
MCAST_JOIN_GROUP = 42
MCAST_JOIN_SOURCE_GROUP = 46
SIOCGIFADDR = 0x8915
MAX_DATAGRAM = 65535
BATCH = 64

# struct group_source_req { uint32_t gsr_interface; struct sockaddr_storage gsr_group, gsr_source; }
# sockaddr_storage is 128 bytes aligned like a long: 4 bytes of padding after the index on LP64.
_SS_SIZE = 128
_GSR_PAD = struct.calcsize("@I0l") - 4


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
        f"--interface {text!r}: no interface has that name or address (interfaces: {names})"
    )


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


Handler = Callable[[memoryview, tuple, int], None]  # type: ignore[type-arg]


class DatagramReader:
    """Reads every datagram of a set of sockets into one preallocated buffer.

    Args:
        on_datagram: called with (view of the datagram, sender address, tag) for each one; the
            view is only valid during the call.
    """

    def __init__(self, on_datagram: Handler) -> None:
        self.on_datagram = on_datagram
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._socks: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, sock: socket.socket, tag: int) -> None:
        """Start reading ``sock`` on the running loop; ``tag`` is passed to the handler."""
        self._loop = asyncio.get_running_loop()
        self._socks.append(sock)
        self._loop.add_reader(sock.fileno(), self._readable, sock, tag)

    def close(self) -> None:
        """Stop reading every socket (they stay open)."""
        if self._loop is not None:
            for sock in self._socks:
                self._loop.remove_reader(sock.fileno())
        self._socks.clear()

    def _readable(self, sock: socket.socket, tag: int) -> None:
        for _ in range(BATCH):
            try:
                n, addr = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for an earlier unicast send
            self.on_datagram(self._view[:n], addr, tag)


def source_of(addr: tuple) -> str:  # type: ignore[type-arg]
    """A datagram's sender as ``HOST:PORT`` (IPv6 in brackets, without the scope)."""
    return describe((str(addr[0]).split("%", 1)[0], addr[1]))


def wall_ns() -> int:
    """Wall-clock time in nanoseconds: what multicast probes carry as their send time."""
    return time.time_ns()


# --- sending -------------------------------------------------------------------------------


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(sock.fileno(), ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_writer(sock.fileno())


async def send_all(
    sock: socket.socket,
    address: tuple,  # type: ignore[type-arg]
    count: int,
    make: Callable[[int], bytes],
    *,
    interval: float,
    on_sent: Callable[[int, int], None] | None = None,
    describe_error: Callable[[OSError], Exception],
) -> tuple[int, int]:
    """Send ``make(0)`` ... ``make(count - 1)`` to ``address``, ``interval`` s apart (0: at once).

    A message is made only when it is due, so a generated probe carries its real send time.
    A full send buffer waits for room instead of dropping. ``on_sent(index, size)`` follows each.

    Returns:
        (datagrams sent, bytes sent).

    Raises:
        whatever ``describe_error`` makes of a failed send (network unreachable, ...).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = nbytes = 0
    for index in range(count):
        if interval > 0:
            # Paced against the schedule, not the previous send, so drift does not add up.
            await asyncio.sleep(max(0.0, start + index * interval - loop.time()))
        elif not index & 63:
            await asyncio.sleep(0)  # at full speed, still let signals and readers in
        message = make(index)
        while True:
            try:
                sock.sendto(message, address)
                break
            except (BlockingIOError, InterruptedError):
                await _writable(sock)
            except OSError as exc:
                raise describe_error(exc) from exc
        sent += 1
        nbytes += len(message)
        if on_sent is not None:
            on_sent(index, len(message))
    return sent, nbytes


# --- listening -----------------------------------------------------------------------------


class Listener:
    """Receives on one socket per group and accounts per source (see ``ReceiveLedger``).

    Args:
        sockets: (group, joined socket) pairs.
        on_arrival: called for every datagram with what was learned from it.
    """

    def __init__(
        self, sockets: list[tuple[Group, socket.socket]], on_arrival: Callable[[Arrival], None]
    ) -> None:
        self.sockets = sockets
        self.on_arrival = on_arrival
        self.ledger = ReceiveLedger()
        self.first_arrival: float | None = None
        self._names = [str(group) for group, _ in sockets]
        self._sources: dict[tuple, str] = {}  # type: ignore[type-arg]
        self._enough = asyncio.Event()
        self._count = 0

    def _on_datagram(self, view: memoryview, addr: tuple, tag: int) -> None:  # type: ignore[type-arg]
        if self.first_arrival is None:
            self.first_arrival = time.monotonic()
        source = self._sources.get(addr)
        if source is None:  # formatting the address costs more than the rest of the accounting
            source = self._sources[addr] = source_of(addr)
        probe = parse_probe(view)
        arrival = self.ledger.add(source, self._names[tag], len(view), probe, wall_ns())
        self.on_arrival(arrival)
        if self._count and self.ledger.total >= self._count:
            self._enough.set()

    async def run(self, *, count: int, timeout: float | None, stop: asyncio.Event) -> bool:
        """Receive until ``count`` datagrams (0: no limit), ``timeout`` or ``stop``.

        Returns:
            True when ``count`` datagrams arrived (always True without a count).
        """
        self._count = count
        reader = DatagramReader(self._on_datagram)
        for tag, (_, sock) in enumerate(self.sockets):
            reader.add(sock, tag)
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._enough.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            reader.close()
        return not count or self.ledger.total >= count


# --- ping ----------------------------------------------------------------------------------


@dataclass
class PingSockets:
    """The two sockets of a ping instance: the group (joined) and a unicast one to send from."""

    group: Group
    interface: Interface
    multicast: socket.socket
    unicast: socket.socket

    def close(self) -> None:
        """Close both sockets."""
        self.multicast.close()
        self.unicast.close()


def open_ping_sockets(group: Group, interface: Interface, *, ttl: int, loop: bool) -> PingSockets:
    """Join ``group`` on ``interface`` and open the unicast socket probes and replies leave from.

    Replies to a probe go to the unicast socket's own port, so instances that share a host (and
    the group port) each get their own.

    Raises:
        BindError, ConfigError: as :func:`open_receiver` and :func:`open_sender`.
    """
    receiver = open_receiver(group, interface)
    try:
        sender = open_sender(
            group.version,
            interface,
            ttl=ttl,
            loop=loop,
            bind_address=interface.address_for(group.version)
            or ("::" if group.version == 6 else "0.0.0.0"),
        )
    except Exception:
        receiver.close()
        raise
    return PingSockets(group, interface, receiver, sender)


async def run_ping(
    session: PingSession,
    sockets: PingSockets,
    *,
    count: int,
    interval: float,
    timeout: float,
    stop: asyncio.Event,
    on_peer: Callable[[PingPeer], None],
) -> None:
    """Probe the group ``count`` times and answer the other instances, then wait for them.

    After the last probe a DONE goes out (three times: it is UDP); this instance keeps answering
    until every peer it knows has said DONE and answered everything, or ``timeout`` passes.
    """
    loop = asyncio.get_running_loop()
    group_addr = group_sockaddr(sockets.group, sockets.interface)
    settled = asyncio.Event()

    def send(data: bytes, address: tuple) -> None:  # type: ignore[type-arg]
        with contextlib.suppress(OSError):  # a full buffer or an ICMP error: counted as loss
            sockets.unicast.sendto(data, address)

    def on_datagram(view: memoryview, addr: tuple, tag: int) -> None:  # type: ignore[type-arg]
        actions, new_peer = session.receive(view, source_of(addr), time.monotonic_ns())
        for action in actions:
            send(action.data, group_addr if action.to_group else addr)
        if new_peer is not None:
            on_peer(new_peer)
        if finished and session.settled():
            settled.set()

    finished = False
    reader = DatagramReader(on_datagram)
    reader.add(sockets.multicast, 0)
    reader.add(sockets.unicast, 1)
    try:
        start = loop.time()
        for seq in range(count):
            await asyncio.sleep(max(0.0, start + seq * interval - loop.time()))
            if stop.is_set():
                break
            try:
                sockets.unicast.sendto(session.probe(time.monotonic_ns()), group_addr)
            except (BlockingIOError, InterruptedError):
                pass  # the kernel dropped it: it counts as lost
            except OSError as exc:
                raise send_error(exc, sockets.group, sockets.interface) from exc
        finished = True
        for _ in range(3):
            send(session.done(), group_addr)
        if session.settled():
            settled.set()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(settled.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
    finally:
        reader.close()


# --- self-test -----------------------------------------------------------------------------


@dataclass
class SelftestReceiver:
    """One receiver of the self-test and what it saw.

    Attributes:
        mode: ``asm``; ``ssm`` (joined with the sender as source); ``ssm-other`` (joined with
            a source that never sends: must receive nothing).
    """

    version: int
    mode: str
    group: Group
    source: str | None
    sock: socket.socket
    joined_at: float = 0.0
    first_at: float | None = None
    account: SourceAccount | None = None
    foreign: int = 0

    def as_dict(self, last_seq: int, max_loss: float) -> dict[str, Any]:
        """The receiver's result, with ``passed`` and, when it failed, ``reason``."""
        acc = self.account
        received = len(acc.tracker.received) if acc else 0
        lost = last_seq - (acc.lowest or 0) + 1 - received if acc and acc.lowest is not None else 0
        expected = received + lost
        result: dict[str, Any] = {
            "family": f"ipv{self.version}",
            "mode": self.mode,
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
        reasons = []
        if self.mode == "ssm-other":
            if received or self.foreign:
                reasons.append("received datagrams from a source it did not join")
        else:
            if not received:
                reasons.append("no datagram arrived")
            if result["loss_percent"] > max_loss:
                reasons.append(f"{lost} lost")
            if result["duplicates"]:
                reasons.append(f"{result['duplicates']} duplicate(s)")
            if result["reordered"]:
                reasons.append(f"{result['reordered']} reordered")
        result["passed"] = not reasons
        if reasons:
            result["reason"] = ", ".join(reasons)
        return result


# Not-sent-from addresses for the "ssm-other" receivers (RFC 5737 / RFC 3849 documentation).
OTHER_SOURCE = {4: "198.51.100.1", 6: "2001:db8::1"}


def selftest_groups(version: int, salt: int) -> tuple[Group, Group]:
    """The (ASM, SSM) groups a self-test uses: admin/link-scoped, varied by ``salt``."""
    a, b = (salt >> 8) & 0xFF, salt & 0xFF
    if version == 4:
        return Group(f"239.255.{a}.{b}", 0, 4), Group(f"232.110.{a}.{b}", 0, 4)
    return Group(f"ff12::6e6b:{salt & 0xFFFF:x}", 0, 6), Group(
        f"ff32::8000:{salt & 0xFFFF:x}", 0, 6
    )


async def run_selftest_family(
    version: int,
    interface: Interface,
    *,
    count: int,
    interval: float,
    timeout: float,
    receivers: int,
    max_loss: float,
    salt: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Send ``count`` probes to an ASM and an SSM group and check what each receiver got.

    Receivers join after the stream started, so ``join_ms`` is join→first datagram.

    Returns:
        Per-receiver results, and None, or ([], the reason this family could not run here).
    """
    address = interface.address_for(version)
    if address is None:
        return [], f"{interface.name} has no IPv{version} address to send from"
    try:
        sender = open_sender(version, interface, ttl=1, loop=True, bind_address=address)
    except BindError as exc:
        return [], str(exc)
    source = sender.getsockname()[0]
    asm, ssm = selftest_groups(version, salt)
    plan: list[tuple[str, Group, str | None]] = [("asm", asm, None)] * receivers
    plan += [("ssm", ssm, source), ("ssm-other", ssm, OTHER_SOURCE[version])]
    cases: list[SelftestReceiver] = []
    try:
        port = 0
        for mode, group, src in plan:
            group = Group(group.address, port, version)
            # Bound now, joined once the stream is flowing (below).
            sock = open_receiver(group, interface, [src] if src else [], joined=False)
            port = sock.getsockname()[1]
            cases.append(SelftestReceiver(version, mode, group, src, sock))
    except (BindError, ConfigError) as exc:
        for case in cases:
            case.sock.close()
        sender.close()
        return [], str(exc)
    for case in cases:
        case.group = Group(case.group.address, port, version)
    targets = [group_sockaddr(Group(g.address, port, version), interface) for g in (asm, ssm)]
    me = source_of(sender.getsockname())
    last_seq = count - 1
    all_in = asyncio.Event()

    def on_datagram(view: memoryview, addr: tuple, tag: int) -> None:  # type: ignore[type-arg]
        case = cases[tag]
        now = time.monotonic()
        if source_of(addr) != me:
            case.foreign += 1
            return
        if case.first_at is None:
            case.first_at = now
        if case.account is None:
            case.account = SourceAccount(me, str(case.group))
        case.account.add(len(view), parse_probe(view), wall_ns())
        if all(
            c.account is not None and last_seq in c.account.tracker.received
            for c in cases
            if c.mode != "ssm-other"
        ):
            all_in.set()

    reader = DatagramReader(on_datagram)
    loop = asyncio.get_running_loop()
    try:
        for tag, case in enumerate(cases):
            reader.add(case.sock, tag)
        start = loop.time()
        join_at = max(1, count // 10)
        for seq in range(count):
            await asyncio.sleep(max(0.0, start + seq * interval - loop.time()))
            if seq == join_at:
                for case in cases:
                    join(case.sock, case.group, interface, [case.source] if case.source else [])
                    case.joined_at = time.monotonic()
            probe = make_probe(seq, wall_ns(), 64)
            for target in targets:
                try:
                    sender.sendto(probe, target)
                except (BlockingIOError, InterruptedError):
                    pass  # dropped by the kernel: shows up as loss
                except OSError as exc:
                    return [], f"cannot send IPv{version} multicast on {interface.name}: " + (
                        str(send_error(exc, asm, interface).hint or exc.strerror)
                    )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await all_in.wait()
    finally:
        reader.close()
        for case in cases:
            case.sock.close()
        sender.close()
    return [case.as_dict(last_seq, max_loss) for case in cases], None

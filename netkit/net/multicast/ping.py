"""The I/O of ``multicast ping``: the instance's two sockets and its probe-and-answer loop
(the protocol is :mod:`netkit.core.multicast.ping`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from netkit.core.access import AccessList, DeniedSources
from netkit.core.multicast.groups import Group
from netkit.core.multicast.ping import PingPeer, PingSession
from netkit.net.multicast.datagrams import DatagramReader, source_of
from netkit.net.multicast.interfaces import Interface
from netkit.net.multicast.sockets import group_sockaddr, open_receiver, open_sender, send_error


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
    access: AccessList | None = None,
    on_denied: Callable[[str, str | None], None] | None = None,
) -> int:
    """Probe the group ``count`` times and answer the other instances, then wait for them.

    After the last probe a DONE goes out (three times: it is UDP); this instance keeps answering
    until every peer it knows has said DONE and answered everything, or ``timeout`` passes.

    Args:
        access: allow/deny lists: a datagram from a denied source is neither answered nor
            counted (its sender never becomes a peer); our own datagrams are never checked.
        on_denied: called with (source, rule) the first time a source is denied.

    Returns:
        How many datagrams the lists denied.
    """
    loop = asyncio.get_running_loop()
    group_addr = group_sockaddr(sockets.group, sockets.interface)
    settled = asyncio.Event()
    own = source_of(sockets.unicast.getsockname())
    reported = DeniedSources()
    denied = 0

    def admitted(addr: tuple, source: str) -> bool:  # type: ignore[type-arg]
        nonlocal denied
        if access is None or not access or source == own:
            return True
        verdict = access.check(str(addr[0]))
        if verdict.allowed:
            return True
        denied += 1
        if reported.first(source) and on_denied is not None:
            on_denied(source, verdict.rule)
        return False

    def send(data: bytes, address: tuple) -> None:  # type: ignore[type-arg]
        with contextlib.suppress(OSError):  # a full buffer or an ICMP error: counted as loss
            sockets.unicast.sendto(data, address)

    def on_datagram(view: memoryview, addr: tuple, tag: int) -> None:  # type: ignore[type-arg]
        source = source_of(addr)
        if not admitted(addr, source):
            return
        actions, new_peer = session.receive(view, source, time.monotonic_ns())
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
    return denied

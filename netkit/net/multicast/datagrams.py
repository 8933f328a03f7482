"""Moving multicast datagrams: a reader for many sockets, a paced sender, and a listener that
accounts per source."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from netkit.core.multicast.groups import Group
from netkit.core.multicast.traffic import Arrival, ReceiveLedger
from netkit.core.probe import parse_probe
from netkit.net.sockets import describe

MAX_DATAGRAM = 65535
BATCH = 64


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

"""``udp-echo serve --mode sink``: :class:`UDPSinkServer` receives UDP bitrate tests
(``netkit bench udp://... -b``), counts each sender's datagrams and answers its report requests
(:mod:`netkit.core.bench.bitrate`). It echoes nothing. It also sends reverse tests
(``--reverse``) to clients that ask: :mod:`netkit.net.udp_source`.

Memory stays bounded whatever senders send: a sender's counts are a fixed-size
:class:`~netkit.core.bench.bitrate.SenderLedger`, and at most ``max_senders`` are kept (the one
heard from least recently is forgotten first; its report requests are answered UNKNOWN).
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from netkit.core.access import AccessList
from netkit.core.bench.bitrate import Control, ControlKind, SenderLedger, parse_control
from netkit.core.probe import MAGIC
from netkit.net.datagram import BATCH, DatagramServer, StampedReceiver
from netkit.net.sockets import SocketOptions, describe
from netkit.net.udp_relay import RECEIVE_BUFFER
from netkit.net.udp_source import ReverseSources

# Senders whose counts a sink keeps (about 4 KiB each).
MAX_SENDERS = 1024


def receiver_options(options: SocketOptions = SocketOptions()) -> SocketOptions:
    """The socket options of a side that receives a bitrate test (the sink; bench with
    ``--reverse``): ``options``, with the UDP relay's 4 MiB receive buffer unless they set one
    (the kernel caps it at ``net.core.rmem_max``). A receiver that measures loss must not
    lose datagrams to its own scheduling."""
    return options if options.rcvbuf else replace(options, rcvbuf=RECEIVE_BUFFER)


@dataclass
class SinkStats:
    """Counters of a sink, all senders together."""

    received: int = 0
    bytes_in: int = 0
    counted: int = 0
    dropped: int = 0
    malformed: int = 0
    unstarted: int = 0
    starts: int = 0
    reports: int = 0
    reverse_requests: int = 0
    forgotten: int = 0
    refused_source: int = 0
    denied: int = 0
    send_failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a summary."""
        return {
            "datagrams_in": self.received,
            "bytes_in": self.bytes_in,
            "counted": self.counted,
            "dropped_on_purpose": self.dropped,
            "malformed": self.malformed,
            "unstarted": self.unstarted,
            "starts": self.starts,
            "reports": self.reports,
            "reverse_requests": self.reverse_requests,
            "senders_forgotten": self.forgotten,
            "refused_source": self.refused_source,
            "denied": self.denied,
            "send_failed": self.send_failed,
        }


class UDPSinkServer(DatagramServer):
    """Counts the datagrams of UDP bitrate tests per sender and answers report requests.

    A data datagram (a probe) is counted for its sender only after that sender's START;
    anything that is neither a probe nor a control datagram is counted as malformed and
    otherwise ignored, so one sender's garbage never disturbs another's counts.

    Args:
        sock: a bound, non-blocking UDP socket.
        drop_every: drop every Nth data datagram of each sender (fault injection), 0 = never.
        max_senders: how many senders' counts are kept.
        access: allow/deny lists: a datagram from a denied source is counted and ignored.
        on_denied: called with (source, rule) the first time a source is denied.
        on_start: called with a sender's address when it starts a test.
    """

    stats: SinkStats

    def __init__(
        self,
        sock: socket.socket,
        *,
        drop_every: int = 0,
        max_senders: int = MAX_SENDERS,
        access: AccessList | None = None,
        on_denied: Callable[[str, str | None], None] | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(sock, access, on_denied)
        self.drop_every = drop_every
        self.max_senders = max_senders
        self.on_start = on_start
        self.stats = SinkStats()
        self.senders: OrderedDict[tuple[Any, ...], SenderLedger] = OrderedDict()
        self.sources = ReverseSources(sock, drop_every)
        self._receiver = StampedReceiver(sock, self._buf)

    def _readable(self) -> None:
        stats, buf, view, senders = self.stats, self._buf, self._view, self.senders
        recv = self._receiver.recv
        for _ in range(BATCH):
            try:
                n, addr, arrived = recv()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error from an earlier answer to a sender that went away
            if not self._admits(n, addr):
                continue
            if buf.startswith(MAGIC):
                ledger = senders.get(addr)
                if ledger is None:
                    stats.unstarted += 1
                    continue
                ledger.arrivals += 1
                if self.drop_every and ledger.arrivals % self.drop_every == 0:
                    stats.dropped += 1
                    continue
                ledger.datagram(view[:n], arrived)
                stats.counted += 1
                continue
            control = parse_control(view[:n])
            if control is None:
                stats.malformed += 1
            else:
                self._control(control, addr)

    def stop(self) -> None:
        """Stop receiving and every reverse test; the socket stays open."""
        super().stop()
        self.sources.close()

    def _control(self, control: Control, addr: tuple[Any, ...]) -> None:
        stats, senders = self.stats, self.senders
        if control.kind is ControlKind.START:
            stats.starts += 1
            senders.pop(addr, None)
            if len(senders) >= self.max_senders:
                senders.popitem(last=False)
                stats.forgotten += 1
            senders[addr] = SenderLedger(control.token)
            if self.on_start is not None:
                self.on_start(describe(addr))
            self._answer(Control(ControlKind.STARTED, control.token), addr)
        elif control.kind is ControlKind.REPORT:
            stats.reports += 1
            ledger = senders.get(addr)
            if ledger is None or ledger.token != control.token:
                self._answer(Control(ControlKind.UNKNOWN, control.token), addr)
                return
            senders.move_to_end(addr)
            counts = ledger.counts(control.sent)
            self._answer(Control(ControlKind.COUNTS, control.token, counts=counts), addr)
        elif control.kind in (ControlKind.REVERSE, ControlKind.STOP):
            stats.reverse_requests += 1
            self._answer(self.sources.request(control, addr), addr)
        else:
            stats.malformed += 1  # an answer sent to a sink: nothing to do with it

    def _answer(self, control: Control, addr: tuple[Any, ...]) -> None:
        try:
            self.sock.sendto(control.encode(), addr)
        except OSError:
            self.stats.send_failed += 1  # the sender resends its request

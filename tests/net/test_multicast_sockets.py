"""Multicast sockets on lo: interfaces, joins (ASM and SSM), sender options, the self-test runner."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct

import pytest

from netkit.core.multicast.groups import Group
from netkit.errors import BindError, ConfigError, ConnectError
from netkit.net.multicast.datagrams import Listener
from netkit.net.multicast.interfaces import resolve_interface
from netkit.net.multicast.selftest import run_selftest_family
from netkit.net.multicast.sockets import (
    group_sockaddr,
    group_source_req,
    open_receiver,
    open_receivers,
    open_sender,
    send_error,
)

LO = socket.if_nametoindex("lo")


def _recv(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]] | None:
    ready, _, _ = select.select([sock], [], [], timeout)
    return sock.recvfrom(65535) if ready else None


def test_interfaces_by_name_and_by_address():
    lo = resolve_interface("lo")
    assert (lo.name, lo.index, lo.ipv4, lo.given) == ("lo", LO, "127.0.0.1", None)
    by_address = resolve_interface("127.0.0.1")
    assert by_address.name == "lo" and by_address.address_for(4) == "127.0.0.1"
    with pytest.raises(ConfigError, match=r"no interface has that name.*interfaces: .*\blo\b"):
        resolve_interface("nk-no-such0")


def test_group_source_req_layout():
    req = group_source_req(7, 4, "232.1.2.3", "127.0.0.1")
    pad = struct.calcsize("@I0l") - 4
    assert len(req) == 4 + pad + 2 * 128
    assert struct.unpack_from("=I", req)[0] == 7
    family, _, addr = struct.unpack_from("=HH4s", req, 4 + pad)
    assert family == socket.AF_INET and socket.inet_ntoa(addr) == "232.1.2.3"
    assert socket.inet_ntoa(req[4 + pad + 128 + 4 : 4 + pad + 128 + 8]) == "127.0.0.1"
    req6 = group_source_req(1, 6, "ff3e::1", "::1")
    assert struct.unpack_from("=H", req6, 4 + pad)[0] == socket.AF_INET6


def test_sender_pins_interface_ttl_and_loop():
    lo = resolve_interface("lo")
    sock = open_sender(4, lo, ttl=3, loop=False, bind_address="127.0.0.1")
    try:
        # Linux reports an interface set by index as 0.0.0.0 (the address form is unset); the
        # delivery tests below prove where datagrams go.
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4) == bytes(4)
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    six = open_sender(6, lo, ttl=1, loop=True)
    try:
        assert six.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF) == LO
        assert six.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS) == 1
    finally:
        six.close()


def test_asm_and_ssm_joins_on_lo():
    lo = resolve_interface("lo")
    asm = open_receiver(Group("239.77.1.1", 0, 4), lo)
    port = asm.getsockname()[1]
    ssm = open_receiver(Group("232.77.1.1", port, 4), lo, ["127.0.0.1"])
    good = open_sender(4, lo, bind_address="127.0.0.1")
    other = open_sender(4, lo, bind_address="127.0.0.2")
    try:
        for sender, tag in ((other, b"other"), (good, b"good")):
            sender.sendto(tag, ("239.77.1.1", port))
            sender.sendto(tag, ("232.77.1.1", port))
        assert {_recv(asm)[0], _recv(asm)[0]} == {b"other", b"good"}  # type: ignore[index]
        data, source = _recv(ssm)  # type: ignore[misc]
        assert (data, source[0]) == (b"good", "127.0.0.1")
        assert _recv(ssm, 0.2) is None  # 127.0.0.2 was never let in
    finally:
        for s in (asm, ssm, good, other):
            s.close()


def test_ipv6_on_lo_fails_with_an_explanation():
    lo = resolve_interface("lo")
    sender = open_sender(6, lo)
    group = Group("ff12::4e4b", 9, 6)
    try:
        with pytest.raises(OSError) as info:
            sender.sendto(b"x", group_sockaddr(group, lo))
    finally:
        sender.close()
    error = send_error(info.value, group, lo)
    assert isinstance(error, ConnectError) and "lo has no IPv6 multicast route" in str(error.hint)


def test_listener_counts_and_stops(run):
    lo = resolve_interface("lo")

    async def main() -> tuple[bool, list[str]]:
        group = Group("239.77.2.1", 0, 4)
        sock = open_receiver(group, lo)
        bound = Group(group.address, sock.getsockname()[1], 4)
        kinds: list[str] = []
        listener = Listener([(bound, sock)], lambda a: kinds.append(a.kind))
        sender = open_sender(4, lo, bind_address="127.0.0.1")
        from netkit.core.probe import make_probe

        try:
            for seq in (0, 1, 1, 3):
                sender.sendto(make_probe(seq, 0, 32), (bound.address, bound.port))
            got = await listener.run(count=4, timeout=5, stop=asyncio.Event())
        finally:
            sender.close()
            sock.close()
        account = listener.ledger.as_list()[0]
        assert (account["lost"], account["duplicates"]) == (1, 1)
        return got, kinds

    got, kinds = run(main())
    assert got and kinds == ["ok", "ok", "duplicate", "ok"]


def test_selftest_runner_on_lo(run):
    lo = resolve_interface("lo")
    cases, skipped = run(
        run_selftest_family(
            4, lo, count=30, interval=0.002, timeout=2, receivers=2, max_loss=0, salt=0x4E4B
        )
    )
    assert skipped is None
    assert [c["mode"] for c in cases] == ["asm", "asm", "ssm", "ssm-other"]
    assert all(c["passed"] for c in cases), cases
    assert cases[0]["received"] >= 20 and cases[0]["join_ms"] is not None
    assert cases[3]["received"] == 0


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_receivers_gives_each_group_its_port_and_closes_all_on_failure():
    lo = resolve_interface("lo")
    groups = [Group("239.77.3.1", 0, 4), Group("232.77.3.1", 0, 4)]
    opened = open_receivers(groups, lo, {groups[0]: [], groups[1]: ["127.0.0.1"]})
    try:
        assert [g.address for g, _ in opened] == ["239.77.3.1", "232.77.3.1"]
        assert all(g.port == s.getsockname()[1] != 0 for g, s in opened)
    finally:
        for _, sock in opened:
            sock.close()
    # A wildcard socket without SO_REUSEADDR holds the second group's port: the first
    # group's socket, already open when the second bind fails, is closed with it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", 0))
        port = holder.getsockname()[1]
        second = Group("232.77.3.1", port, 4)
        before = _open_fds()
        with pytest.raises(BindError) as info:
            open_receivers([groups[0], second], lo, {groups[0]: [], second: []})
        # info holds the traceback, and with it the function's locals: a socket left open
        # would still be open here, not collected.
        assert _open_fds() == before and info.value is not None

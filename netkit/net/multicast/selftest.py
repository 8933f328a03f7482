"""The I/O of ``multicast selftest``: one sender, receivers that join while the stream flows.

What the groups are and what each receiver must see is :mod:`netkit.core.multicast.selftest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from netkit.core.multicast.groups import Group
from netkit.core.multicast.selftest import (
    SelftestCase,
    SelftestMode,
    selftest_groups,
    selftest_plan,
)
from netkit.core.probe import make_probe
from netkit.errors import BindError, ConfigError
from netkit.net.multicast.datagrams import DatagramReader, source_of, wall_ns
from netkit.net.multicast.interfaces import Interface
from netkit.net.multicast.sockets import (
    group_sockaddr,
    join,
    open_receiver,
    open_sender,
    send_error,
)

PROBE_SIZE = 64

Receivers = list[tuple[SelftestCase, socket.socket]]


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
    try:
        asm, ssm = selftest_groups(version, salt)
        plan = selftest_plan(version, asm, ssm, sender.getsockname()[0], receivers)
        try:
            opened = _open_receivers(plan, interface, version)
        except (BindError, ConfigError) as exc:
            return [], str(exc)
        try:
            error = await _stream(
                sender, opened, interface, (asm, ssm), count=count, interval=interval,
                timeout=timeout,
            )  # fmt: skip
        finally:
            for _, sock in opened:
                sock.close()
    finally:
        sender.close()
    if error is not None:
        return [], error
    return [case.as_dict(count - 1, max_loss) for case, _ in opened], None


def _open_receivers(
    plan: list[tuple[SelftestMode, Group, str | None]], interface: Interface, version: int
) -> Receivers:
    """Bind every receiver of ``plan`` on one port (joined later, once the stream flows)."""
    opened: Receivers = []
    try:
        port = 0
        for mode, group, source in plan:
            group = Group(group.address, port, version)
            sock = open_receiver(group, interface, [source] if source else [], joined=False)
            port = sock.getsockname()[1]
            opened.append((SelftestCase(version, mode, group, source), sock))
    except BaseException:
        for _, sock in opened:
            sock.close()
        raise
    for case, _ in opened:
        case.group = Group(case.group.address, port, version)
    return opened


async def _stream(
    sender: socket.socket,
    opened: Receivers,
    interface: Interface,
    groups: tuple[Group, Group],
    *,
    count: int,
    interval: float,
    timeout: float,
) -> str | None:
    """Send the probes, join the receivers a tenth of the way in, wait for the last probe.

    Returns:
        None, or why sending failed.
    """
    port = opened[0][0].group.port
    version = opened[0][0].version
    targets = [group_sockaddr(Group(g.address, port, version), interface) for g in groups]
    cases = [case for case, _ in opened]
    me = source_of(sender.getsockname())
    last_seq = count - 1
    all_in = asyncio.Event()

    def on_datagram(view: memoryview, addr: tuple, tag: int) -> None:  # type: ignore[type-arg]
        cases[tag].receive(source_of(addr), me, view, time.monotonic(), wall_ns())
        if all(case.heard(last_seq) for case in cases):
            all_in.set()

    reader = DatagramReader(on_datagram)
    loop = asyncio.get_running_loop()
    try:
        for tag, (_, sock) in enumerate(opened):
            reader.add(sock, tag)
        start = loop.time()
        join_at = max(1, count // 10)
        for seq in range(count):
            await asyncio.sleep(max(0.0, start + seq * interval - loop.time()))
            if seq == join_at:
                for case, sock in opened:
                    join(sock, case.group, interface, [case.source] if case.source else [])
                    case.joined_at = time.monotonic()
            probe = make_probe(seq, wall_ns(), PROBE_SIZE)
            for target in targets:
                try:
                    sender.sendto(probe, target)
                except (BlockingIOError, InterruptedError):
                    pass  # dropped by the kernel: shows up as loss
                except OSError as exc:
                    return f"cannot send IPv{version} multicast on {interface.name}: " + (
                        str(send_error(exc, groups[0], interface).hint or exc.strerror)
                    )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await all_in.wait()
    finally:
        reader.close()
    return None

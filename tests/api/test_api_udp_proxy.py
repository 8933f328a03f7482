"""netkit.udp_proxy: the UDP relay with live faults, over real loopback UDP sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

import netkit
from netkit import ConfigError, Duplicate, EndpointError, Latency, Loss

WAIT = 5.0


class Client:
    """A UDP client socket aimed at a proxy, read through the running loop."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect((host, port))

    async def exchange(self, data: bytes) -> bytes:
        self.sock.send(data)
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 70000), WAIT)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_datagrams_pass_and_live_faults_change_what_arrives(run, host: str) -> None:
    events: list[tuple[str, dict[str, object]]] = []

    async def main() -> dict[str, object]:
        faulted = asyncio.Event()

        def on_event(event: str, fields: dict[str, object]) -> None:
            events.append((event, fields))
            if event == "datagram_fault":
                faulted.set()

        async with (
            netkit.udp_echo_server(f"[{host}]:0" if ":" in host else f"{host}:0") as echo,
            netkit.udp_proxy(echo.address, listen=(host, 0), seed=7, on_event=on_event) as proxy,
        ):
            assert proxy.port and proxy.seed == 7 and proxy.faults == []
            client = Client(host, proxy.port)
            try:
                assert await client.exchange(b"one") == b"one"
                name = proxy.add(Loss(1.0, direction="down"))
                assert name == "loss_downstream"
                client.sock.send(b"lost")  # the reply is lost on its way back
                await asyncio.wait_for(faulted.wait(), WAIT)
                proxy.replace(name, Duplicate(1.0, direction="down"))
                assert await client.exchange(b"twice") == b"twice"
                loop = asyncio.get_running_loop()
                assert await asyncio.wait_for(loop.sock_recv(client.sock, 100), WAIT) == b"twice"
                proxy.clear()
                assert await client.exchange(b"clean") == b"clean"
            finally:
                client.close()
            return proxy.stats

    stats = run(main())
    assert stats["flows"] == 1 and stats["datagrams_up"] == 4
    assert stats["dropped_by_faults"] == 1 and stats["faults_injected"] == 2
    assert [e for e, _ in events if e.startswith("fault")][:3] == [
        "fault_added",
        "fault_updated",
        "faults_cleared",
    ]


def test_latency_applies_to_datagrams_and_faults_can_start_named(run) -> None:
    async def main() -> float:
        async with (
            netkit.udp_echo_server() as echo,
            netkit.udp_proxy(echo.address, faults={"slow": Latency(50, direction="up")}) as proxy,
        ):
            assert proxy.faults == [("slow", Latency(50, direction="up"))]
            client = Client("127.0.0.1", proxy.port or 0)
            try:
                started = asyncio.get_running_loop().time()
                await client.exchange(b"x")
                return asyncio.get_running_loop().time() - started
            finally:
                client.close()

    assert run(main()) >= 0.049  # loop.time() is 1 ms coarse under uvloop


def test_a_stream_fault_and_a_stream_endpoint_are_refused(run) -> None:
    async def main() -> None:
        async with netkit.udp_echo_server() as echo, netkit.udp_proxy(echo.address) as proxy:
            with pytest.raises(ConfigError, match="not to UDP"):
                proxy.add(netkit.Bandwidth(1000))
            assert proxy.faults == []
        with pytest.raises(ConfigError, match="not to UDP"):
            async with netkit.udp_proxy(echo.address, faults=[netkit.Slice(10)]):
                pass
        with pytest.raises(EndpointError):
            async with netkit.udp_proxy("unix:/tmp/x.sock"):
                pass

    run(main())

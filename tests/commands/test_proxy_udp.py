"""``netkit proxy udp://... udp://...`` end to end: the CLI as a subprocess, real UDP on loopback."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.commands.conftest import assert_one_line_error, json_lines, run_netkit


def udp_proxy(netkit_server, upstream: str, *flags: str, listen: str = "udp://127.0.0.1:0"):
    return netkit_server("proxy", listen, f"udp://{upstream}", *flags)


def probe(address: str, count: int, *flags: str) -> dict:
    """Run ``udp-echo client`` through ``address``; its summary event."""
    result = run_netkit(
        "udp-echo", "client", address, "-c", str(count), "-i", "1ms", "-t", "500ms",
        "--max-loss", "100", "--json", *flags,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)[-1]


def test_relayed_echo_and_the_events_of_a_flow(netkit_server):
    echo = netkit_server("udp-echo", "serve", "127.0.0.1:0")
    proxy = udp_proxy(netkit_server, echo.address)
    listening = proxy.listening
    assert listening["transport"] == "udp" and not proxy.address.endswith(":0")
    assert listening["url"] == f"udp://{proxy.address}"
    assert listening["upstream"] == f"udp://{echo.address}"
    assert listening["max_flows"] == 1024 and isinstance(listening["seed"], int)
    summary = probe(proxy.address, 50, "-s", "1400")
    assert (summary["sent"], summary["received"], summary["lost"]) == (50, 50, 0)
    opened = proxy.wait_for("flow_opened")
    assert opened["id"] == 1
    assert proxy.stop() == 0  # SIGTERM: drained, exit 0
    closed = proxy.event("flow_closed")
    assert closed["end"] == "drained"
    assert closed["datagrams_up"] == closed["datagrams_down"] == 50
    assert closed["bytes_up"] == 50 * 1400
    done = proxy.event("summary")
    assert (done["flows"], done["datagrams_up"], done["datagrams_down"]) == (1, 50, 50)
    assert done["cut_at_drain"] == 0


def test_ipv6(netkit_server):
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    echo = netkit_server("udp-echo", "serve", "[::1]:0")
    proxy = udp_proxy(netkit_server, echo.address, listen="udp://[::1]:0")
    assert proxy.address.startswith("[::1]:")
    summary = probe(proxy.address, 10)
    assert summary["received"] == 10
    assert proxy.stop(signal.SIGINT) == 130


def test_a_seeded_run_repeats_its_faults(netkit_server):
    echo = netkit_server("udp-echo", "serve", "127.0.0.1:0")

    def lost(seed: str) -> list[int]:
        proxy = udp_proxy(netkit_server, echo.address, "--loss", "0.3,up", "--seed", seed)
        assert proxy.listening["seed"] == int(seed)
        summary = probe(proxy.address, 200)
        assert proxy.stop() == 0
        faults = [e for e in proxy.events if e["event"] == "datagram_fault"]
        assert all(e["fault"] == "loss" and e["direction"] == "up" for e in faults)
        assert summary["lost"] == len(faults)
        assert proxy.event("summary")["faults_injected"] == len(faults)
        return [e["seq"] for e in faults]

    first = lost("5")
    assert 30 <= len(first) <= 90
    assert lost("5") == first
    assert lost("6") != first


def test_every_datagram_fault_flag_is_accepted(netkit_server):
    echo = netkit_server("udp-echo", "serve", "127.0.0.1:0")
    proxy = udp_proxy(
        netkit_server, echo.address,
        "--drop-first", "1,up", "--duplicate", "0.1,down", "--reorder", "0.1:2:20ms",
        "--latency", "2ms:1ms", "--rate", "10MB/s", "--seed", "1",
    )  # fmt: skip
    kinds = [f["fault"] for f in proxy.listening["faults"]]
    assert kinds == ["latency", "drop-first", "duplicate", "rate", "reorder"]
    summary = probe(proxy.address, 40)
    assert 30 <= summary["received"] <= 39  # the first is dropped, the rest come back
    assert proxy.stop() == 0
    injected = {e["fault"] for e in proxy.events if e["event"] == "datagram_fault"}
    assert "drop-first" in injected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["udp://:0", "udp://127.0.0.1:9", "--slice", "10"], "--slice applies to TCP"),
        (["udp://:0", "udp://127.0.0.1:9", "--proxy-protocol", "v1"], "--proxy-protocol does not apply to a UDP relay"),
        (["udp://:0", "udp://127.0.0.1:9", "--tls-self-signed"], "--tls-self-signed does not apply"),
        (["udp://:0", "127.0.0.1:9", "--no-splice"], "--no-splice does not apply"),
        (["udp://:0", "unix:/tmp/x.sock"], "relays UDP to UDP"),
        ([":0", "127.0.0.1:9", "--loss", "0.1"], "--loss applies to UDP relays only"),
        ([":0", "127.0.0.1:9", "--drop-first", "2"], "--drop-first applies to UDP relays only"),
        (["udp://:0", "udp://127.0.0.1:9", "--reorder", "1.5"], "is not a chance"),
    ],
)  # fmt: skip
def test_flags_of_the_other_transport_are_refused(args: list[str], message: str) -> None:
    result = run_netkit("proxy", *args)
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert message in result.stderr


def test_a_port_in_use_is_exit_6():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_netkit("proxy", f"udp://127.0.0.1:{port}", "udp://127.0.0.1:9")
    assert result.returncode == 6
    assert_one_line_error(result.stderr)

"""``netkit multicast`` end to end: on lo, and between network namespaces the tests create.

Every sender is pinned to an interface: lo here, or the veth inside a namespace. Nothing is sent
through the host's default route and the host's routing table is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.commands.conftest import NETKIT, assert_one_line_error, json_lines, run_netkit


def _port(event: dict, index: int = 0) -> int:
    return int(event["groups"][index].rsplit(":", 1)[1])


def test_send_and_listen_on_several_groups(netkit_server):
    listener = netkit_server(
        "multicast", "listen", "239.77.3.1:0", "239.77.3.2:0", "-c", "6", "-t", "10"
    )
    assert listener.listening["interface"] == "lo"
    for index, group in enumerate(("239.77.3.1", "239.77.3.2")):
        sent = run_netkit(
            "multicast",
            "send",
            f"{group}:{_port(listener.listening, index)}",
            "-c",
            "3",
            "-i",
            "1ms",
            "--json",
        )
        assert sent.returncode == 0, sent.stderr
        summary = json_lines(sent.stdout)[-1]
        assert (summary["sent"], summary["ttl"], summary["interface"]) == (3, 1, "lo")
        assert summary["source"].startswith("127.0.0.1:")
    assert listener.wait_exit() == 0
    datagrams = [e for e in listener.events if e["event"] == "datagram"]
    assert sorted((e["group"].split(":")[0], e["seq"]) for e in datagrams) == [
        (g, s) for g in ("239.77.3.1", "239.77.3.2") for s in range(3)
    ]
    assert all(e["delay_ms"] is not None and e["bytes"] == 64 for e in datagrams)
    sources = listener.event("summary")["sources"]
    assert len(sources) == 2 and all((s["probes"], s["lost"]) == (3, 0) for s in sources)


def test_count_not_reached_in_time_exits_1():
    result = run_netkit("multicast", "listen", "239.77.4.1:0", "-c", "1", "-t", "200ms", "--json")
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert "received 0 of 1 datagram(s)" in result.stderr
    assert json_lines(result.stdout)[-2]["event"] == "summary"


def test_ssm_accepts_the_named_source_and_ignores_another(netkit_server):
    listener = netkit_server(
        "multicast", "listen", "232.77.5.1:0", "--source", "127.0.0.1", "-c", "3", "-t", "10"
    )
    port = _port(listener.listening)
    assert listener.listening["sources"] == ["127.0.0.1"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.2", 0))
        other.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        for _ in range(3):
            other.sendto(b"not for you", ("232.77.5.1", port))
    assert (
        run_netkit("multicast", "send", f"232.77.5.1:{port}", "-c", "3", "-i", "1ms").returncode
        == 0
    )
    assert listener.wait_exit() == 0
    sources = listener.event("summary")["sources"]
    assert [s["source"].split(":")[0] for s in sources] == ["127.0.0.1"]
    assert sources[0]["probes"] == 3


def test_messages_from_arguments_and_stdin(netkit_server):
    listener = netkit_server("multicast", "listen", "239.77.6.1:0", "-c", "3", "-t", "10")
    target = f"239.77.6.1:{_port(listener.listening)}"
    assert run_netkit("multicast", "send", target, "hello", "-i", "0").returncode == 0
    piped = run_netkit("multicast", "send", target, "-", "-i", "0", input=b"one\ntwo\n")
    assert piped.returncode == 0, piped.stderr
    assert listener.wait_exit() == 0
    datagrams = [e for e in listener.events if e["event"] == "datagram"]
    assert [(e["bytes"], e["kind"], e["seq"]) for e in datagrams] == [
        (5, "data", None),
        (3, "data", None),
        (3, "data", None),
    ]


def test_broadcast_on_lo():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.255.255.255", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        result = run_netkit(
            "multicast", "send", "--broadcast", f"127.255.255.255:{port}", "hi", "--json"
        )
        assert result.returncode == 0, result.stderr
        assert json_lines(result.stdout)[-1]["broadcast"] is True
        data, (host, _) = receiver.recvfrom(100)
    assert (data, host) == (b"hi", "127.0.0.1")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["send", "10.1.2.3:5000"], "not a multicast address"),
        (["listen", "127.0.0.1:5000"], "not a multicast address"),
        (["listen", "239.1.1.1:0", "--interface", "::1"], "is an IPv6 address but group"),
        (["send", "239.1.1.1:9", "--interface", "nk-nope0"], "interfaces: "),
        (["listen", "232.1.1.1:0", "--source", "::1"], "is IPv6 but group 232.1.1.1:0 is IPv4"),
        (["send", "--broadcast", "[ff02::1]:9", "x"], "IPv6 has no broadcast"),
        (["send", "239.1.1.1:0"], "port other than 0"),
        (["selftest", "--family", "5"], "choose 4, 6 or all"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    result = run_netkit("multicast", *args)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert needle in result.stderr


def test_selftest_on_lo_passes_and_explains_ipv6():
    result = run_netkit("multicast", "selftest", "--count", "40", "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    cases = [e for e in events if e["event"] == "case"]
    assert {c["mode"] for c in cases} == {"asm", "ssm", "ssm-other"}
    assert all(c["passed"] and c["duplicates"] == 0 and c["lost"] == 0 for c in cases)
    assert all(c["join_ms"] is not None for c in cases if c["mode"] != "ssm-other")
    skipped = [e for e in events if e["event"] == "skipped"]
    if skipped:  # the kernel refuses IPv6 multicast on lo (see net/multicast/sockets.py send_error)
        assert skipped[0]["family"] == "ipv6" and "lo" in skipped[0]["reason"]
        only_v6 = run_netkit("multicast", "selftest", "--family", "6")
        assert only_v6.returncode == 1 and "cannot run on lo" in only_v6.stderr


def test_ping_two_instances_on_lo(netkit_server):
    first = netkit_server("multicast", "ping", "239.77.7.1:0", "-c", "150", "-i", "5ms", "-t", "5s")
    group = first.listening["group"]
    second = run_netkit("multicast", "ping", group, "-c", "20", "-i", "5ms", "-t", "5s", "--json")
    assert second.returncode == 0, second.stderr
    peers = json_lines(second.stdout)[-1]["peers"]
    assert len(peers) == 1 and peers[0]["peer"] == first.listening["address"]
    for path in ("multicast", "unicast"):
        assert peers[0][path]["lost"] == 0 and peers[0][path]["duplicates"] == 0
        assert peers[0][path]["sent"] >= 15 and peers[0][path]["rtt"]["count"] >= 15
    assert first.wait_exit() == 0
    assert first.event("summary")["peers"][0]["multicast"]["lost"] == 0


def test_ping_answers_no_denied_instance(netkit_server):
    # Both instances are on 127.0.0.1: the first denies that address, so it answers nobody
    # (its own probes are never checked), and the second gets no answer. The first probes
    # until stopped, so that it is surely running while the second does.
    first = netkit_server(
        "multicast", "ping", "239.77.7.2:0", "-c", "1000000", "-i", "5ms",
        "--deny", "127.0.0.0/8",
    )  # fmt: skip
    assert first.listening["deny"] == ["127.0.0.0/8"]
    group = first.listening["group"]
    second = run_netkit("multicast", "ping", group, "-c", "10", "-i", "5ms", "-t", "1s", "--json")
    assert second.returncode == 1, second.stderr  # the first answered none of its probes
    events = json_lines(second.stdout)
    (heard,) = next(e for e in events if e["event"] == "summary")["peers"]
    assert heard["peer"] == first.listening["address"]  # it hears the first's probes ...
    assert heard["multicast"]["received"] == heard["unicast"]["received"] == 0  # ... no answer
    denied = first.wait_for("denied")
    assert denied["rule"] == "deny 127.0.0.0/8"
    assert denied["peer"] == events[0]["address"]
    assert first.stop() == 0  # it probes until told to stop
    summary = first.event("summary")
    assert summary["peers"] == [] and summary["denied"] >= 10


def test_ping_alone_fails_the_peer_check():
    result = run_netkit("multicast", "ping", "239.77.8.1:0", "-c", "2", "-i", "1ms", "-t", "100ms")
    assert result.returncode == 1 and "0 other instance(s) answered" in result.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_listen_stops_on_signals_with_a_summary(netkit_server, sig, code):
    listener = netkit_server("multicast", "listen", "239.77.9.1:0")
    assert listener.stop(sig) == code
    assert listener.event("summary")["received"] == 0
    assert "Traceback" not in listener.stderr_text()


# --- between network namespaces --------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def lan() -> Iterator[list[str]]:
    """Three namespaces on one bridge: eth0 with 10.77.0.N/24 and fd77::N/64 in each."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    prefix = f"nk-{os.getpid()}"
    hub, hosts = f"{prefix}-hub", [f"{prefix}-{n}" for n in "abc"]
    created: list[str] = []
    try:
        try:
            _ip("netns", "add", hub)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"'ip netns add' is not permitted here: {exc.stderr.decode().strip()}")
        created.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", hub, "link", "set", "br0", "up")
        for number, ns in enumerate(hosts, 1):
            _ip("netns", "add", ns)
            created.append(ns)
            # No duplicate address detection, so addresses are usable at once.
            subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                 "net.ipv6.conf.default.accept_dad=0"],
                check=True, capture_output=True, timeout=10,
            )  # fmt: skip
            _ip(
                "-n",
                hub,
                "link",
                "add",
                f"v{number}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            _ip("-n", hub, "link", "set", f"v{number}", "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"10.77.0.{number}/24", "dev", "eth0")
            _ip("-n", ns, "addr", "add", f"fd77::{number}/64", "dev", "eth0", "nodad")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield hosts
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *NETKIT, *args]


def _popen(ns: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _in(ns, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("group", ["239.77.10.1", "[ff15::4e4b]"])
def test_delivery_across_namespaces(lan, group):
    a, b, c = lan
    listeners = [
        _popen(
            ns,
            "multicast",
            "listen",
            f"{group}:40000",
            "-I",
            "eth0",
            "-c",
            "5",
            "-t",
            "10",
            "--json",
        )
        for ns in (b, c)
    ]
    try:
        for proc in listeners:  # the listening line means the join is done
            assert proc.stdout is not None and '"listening"' in proc.stdout.readline()
        sent = subprocess.run(
            _in(a, "multicast", "send", f"{group}:40000", "-I", "eth0", "-c", "5", "-i", "2ms"),
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        for proc in listeners:
            out, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, err
            sources = json_lines(out)[-1]["sources"]
            expected = "10.77.0.1:" if group.startswith("239") else "[fd77::1]:"
            assert len(sources) == 1 and sources[0]["source"].startswith(expected)
            assert (sources[0]["probes"], sources[0]["lost"], sources[0]["duplicates"]) == (5, 0, 0)
    finally:
        for proc in listeners:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_ping_between_three_namespaces(lan):
    procs = [
        _popen(ns, "multicast", "ping", "239.77.11.1:40001", "-I", "eth0", "-c", "30", "-i", "10ms",
               "-t", "10s", "--peers", "2", "--json")
        for ns in lan
    ]  # fmt: skip
    try:
        for number, proc in enumerate(procs, 1):
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            peers = json_lines(out)[-1]["peers"]
            others = {f"10.77.0.{n}" for n in (1, 2, 3) if n != number}
            assert {p["peer"].split(":")[0] for p in peers} == others
            for peer in peers:
                for path in ("multicast", "unicast"):
                    assert peer[path]["lost"] == 0 and peer[path]["duplicates"] == 0
                    assert peer[path]["received"] == peer[path]["sent"] > 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_selftest_with_ipv6_on_a_namespace_interface(lan):
    result = subprocess.run(
        _in(lan[0], "multicast", "selftest", "-I", "eth0", "--count", "40", "--json"),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [e for e in json_lines(result.stdout) if e["event"] == "case"]
    assert {c["family"] for c in cases} == {"ipv4", "ipv6"} and all(c["passed"] for c in cases)

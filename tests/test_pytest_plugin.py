"""The pytest plugin (netkit/pytest_plugin.py), run by pytester on real example test files.

The examples are what a user writes: synchronous tests that put a fault proxy in front of the
echo server, change its faults mid-test and measure the effect on real round trips; the
example test files of the README and of docs/proxy.md are extracted and run the same way. Teardown is checked after a failing
test, and the plugin's cost for suites that never use it: it is active through its entry
point, and imports none of netkit's servers until a fixture is used.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs" / "proxy.md"

ROUND_TRIPS = """
import socket
import time

import pytest

from netkit import Latency


def round_trip(sock):
    started = time.perf_counter()
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    return time.perf_counter() - started


def connect(proxy):
    return socket.create_connection((proxy.host, proxy.port), timeout=5)
"""


def test_latency_is_added_and_cleared_mid_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        ROUND_TRIPS
        + """
def test_latency(netkit_echo_server, netkit_proxy):
    proxy = netkit_proxy(netkit_echo_server)
    with connect(proxy) as sock:
        round_trip(sock)  # also connects the proxy upstream: not timed
        name = proxy.add(Latency(100, direction="down"))
        assert name == "latency_downstream"
        assert proxy.faults == [(name, Latency(100, direction="down"))]
        delayed = [round_trip(sock) for _ in range(3)]
        assert min(delayed) >= 0.1 and min(delayed) < 0.3, delayed
        proxy.replace(name, Latency(200, direction="down"))
        delayed = [round_trip(sock) for _ in range(3)]
        assert min(delayed) >= 0.2 and min(delayed) < 0.4, delayed
        proxy.clear()
        assert proxy.faults == []
        on_time = [round_trip(sock) for _ in range(3)]
        assert min(on_time) < 0.1, on_time
    assert proxy.totals.bytes_up == 10  # ten round trips of one byte
"""
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


def test_cut_closes_and_refuses_and_restore_accepts_on_the_same_port(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        ROUND_TRIPS
        + """
def test_cut_and_restore(netkit_echo_server, netkit_proxy):
    proxy = netkit_proxy(netkit_echo_server.address)
    port = proxy.port
    with connect(proxy) as sock:
        round_trip(sock)
        proxy.cut()
        assert not proxy.enabled
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.restore()
    assert proxy.enabled and proxy.port == port
    with connect(proxy) as sock:
        round_trip(sock)
"""
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


def test_servers_and_proxies_are_stopped_after_a_failing_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        ROUND_TRIPS
        + """
LEFT = {}


def test_fails_with_a_connection_open(netkit_echo_server, netkit_proxy):
    proxy = netkit_proxy(netkit_echo_server, faults=[Latency(10)])
    LEFT["sock"] = connect(proxy)
    LEFT["ports"] = (proxy.port, netkit_echo_server.port)
    round_trip(LEFT["sock"])
    assert False, "this test fails on purpose"


def test_the_last_test_left_nothing_running():
    sock = LEFT["sock"]
    sock.settimeout(5)
    try:
        assert sock.recv(1) == b""  # the proxy closed it
    except ConnectionResetError:
        pass
    for port in LEFT["ports"]:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
"""
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*this test fails on purpose*"])


def test_server_options_come_through_indirect_parametrization(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
import socket
import struct

import pytest


@pytest.mark.parametrize("netkit_echo_server", [{"framed": True}], indirect=True)
def test_framed(netkit_echo_server, netkit_proxy):
    proxy = netkit_proxy(netkit_echo_server)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(struct.pack("!I", 2) + b"hi")
        assert sock.recv(6, socket.MSG_WAITALL) == struct.pack("!I", 2) + b"hi"
"""
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


def test_ws_server_fixture_echoes_through_a_proxy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import asyncio

import websockets


def test_ws(netkit_ws_server, netkit_proxy):
    proxy = netkit_proxy(netkit_ws_server)
    url = netkit_ws_server.url.replace(str(netkit_ws_server.port), str(proxy.port))

    async def talk():
        async with websockets.connect(url) as ws:
            await ws.send("hello")
            return await ws.recv()

    assert asyncio.run(talk()) == "hello"
"""
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


def example_after(path: Path, heading: str) -> str:
    """The first Python block after ``heading`` in a Markdown file."""
    text = path.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python example under {heading!r} in {path.name}"
    return match.group(1)


@pytest.mark.parametrize(
    ("path", "heading"),
    [(README, "## Testing with pytest"), (DOCS, "## pytest fixtures")],
    ids=["README", "docs"],
)
def test_the_documented_example_test_passes(
    pytester: pytest.Pytester, path: Path, heading: str
) -> None:
    pytester.makepyfile(test_documented_example=example_after(path, heading))
    result = pytester.runpytest("-p", "no:randomly", "-v")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 2 and "failed" not in outcomes, result.stdout.str()


def test_the_plugin_is_active_through_its_entry_point_and_costs_nothing_unused(
    pytester: pytest.Pytester,
) -> None:
    # A separate interpreter: nothing imported beforehand, only the installed entry point.
    pytester.makepyfile(
        """
import sys


def test_unused():
    loaded = [m for m in ("netkit.api.proxy", "netkit.net.relay", "asyncio") if m in sys.modules]
    assert "netkit.pytest_plugin" in sys.modules
    assert [m for m in loaded if m != "asyncio"] == []


def test_used(netkit_proxy):
    proxy = netkit_proxy("127.0.0.1:9")
    assert proxy.port > 0
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_needs_it(netkit_proxy):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:netkit")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'netkit_proxy' not found*"])


def test_importing_the_plugin_imports_no_server_code() -> None:
    import subprocess

    code = (
        "import sys, netkit.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('netkit.') or m == 'asyncio'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "['netkit.pytest_plugin']"

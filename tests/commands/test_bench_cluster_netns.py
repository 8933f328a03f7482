"""``netkit bench --cluster`` across network namespaces the test creates: the two Dask workers
are different hosts with different source addresses, and the target is on a third.

A hub namespace holds a bridge (10.77.N.1, the scheduler and the bench client); each of the
target's and the two workers' namespaces hangs off it by a veth pair. Nothing leaves these
namespaces. Skipped where ``ip netns`` is not permitted (not root, no iproute2).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands.conftest import NETKIT, ServerProcess, json_lines
from tests.dask_cluster import WORKER, start_scheduler

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
    ),
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, dict[str, str]]]:
    """(prefix, {role: address}) for namespaces PREFIX-hub, -target, -w1, -w2."""
    n = os.getpid() % 200 + 20
    prefix = f"nkc{os.getpid()}"
    addresses = {"hub": f"10.77.{n}.1", "target": f"10.77.{n}.2"}
    addresses |= {"w1": f"10.77.{n}.3", "w2": f"10.77.{n}.4"}
    made: list[str] = []
    try:
        for role in addresses:
            ip("netns", "add", f"{prefix}-{role}")
            made.append(f"{prefix}-{role}")
            ip("-n", f"{prefix}-{role}", "link", "set", "lo", "up")
        hub = f"{prefix}-hub"
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "addr", "add", f"{addresses['hub']}/24", "dev", "br0")
        ip("-n", hub, "link", "set", "br0", "up")
        for role in ("target", "w1", "w2"):
            ns = f"{prefix}-{role}"
            ip("-n", hub, "link", "add", f"v-{role}", "type", "veth", "peer", "eth0", "netns", ns)
            ip("-n", hub, "link", "set", f"v-{role}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addresses[role]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
    except subprocess.CalledProcessError as exc:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        pytest.skip(f"ip netns not permitted here: {exc.stderr.decode().strip()}")
    try:
        yield prefix, addresses
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def in_ns(ns: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *command]


def test_workers_in_two_namespaces_load_a_target_in_a_third(tmp_path: Path) -> None:
    with namespaces() as (prefix, addr):
        procs: list[subprocess.Popen[bytes]] = []
        try:
            target = subprocess.Popen(
                [
                    *in_ns(f"{prefix}-target", *NETKIT, "tcp-echo", "serve", f"{addr['target']}:0"),
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            procs.append(target)
            echo = ServerProcess(target, {})
            echo.listening = echo.wait_for("listening", timeout=30)
            hub, scheduler = start_scheduler(
                addr["hub"], tmp_path / "scheduler.json", ("ip", "netns", "exec", f"{prefix}-hub")
            )
            procs.append(hub)
            for role in ("w1", "w2"):
                procs.append(
                    subprocess.Popen(
                        [
                            *in_ns(f"{prefix}-{role}", *WORKER),
                            scheduler,
                            "--nthreads",
                            "1",
                            "--no-nanny",
                            "--dashboard-address",
                            f"{addr[role]}:0",
                            "--host",
                            addr[role],
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            wait = (
                f"import distributed; distributed.Client({scheduler!r}, timeout=30)"
                ".wait_for_workers(2, timeout=60)"
            )
            subprocess.run(
                in_ns(f"{prefix}-hub", sys.executable, "-c", wait), check=True, timeout=90
            )
            run = subprocess.run(
                [
                    *in_ns(f"{prefix}-hub", *NETKIT, "bench", echo.address, "--cluster", scheduler),
                    "-c",
                    "4",
                    "-d",
                    "1s",
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert run.returncode == 0, run.stderr
            assert echo.stop() == 0
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
    events = json_lines(run.stdout)
    members = [e for e in events if e["event"] == "member"]
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert sorted(m["host"] for m in members) == [addr["w1"], addr["w2"]]
    assert all(m["requests"] > 0 for m in members)
    assert summary["requests"] == sum(m["requests"] for m in members)
    # The target saw both workers' own source addresses.
    peers = {e["peer"].rsplit(":", 1)[0] for e in echo.events if e["event"] == "connected"}
    assert peers == {addr["w1"], addr["w2"]}

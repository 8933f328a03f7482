"""lb's pool while it serves, end to end (the CLI as a subprocess, real loopback backends):
--backends-file reloaded on SIGHUP and on a change without dropping a connection, SIGHUP
that no longer stops lb, and the queue (--queue, --queue-timeout) in front of full backends."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.commands.conftest import assert_one_line_error, run_netkit
from tests.commands.test_lb import backends as backends  # a fixture
from tests.commands.test_lb import host_port
from tests.commands.test_lb_control import call, scrape

pytestmark = pytest.mark.timeout(60)


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(64)
        assert chunk, f"closed after {line!r}"
        line += chunk
    return line


def echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {got!r}"
        got += chunk
    return got


class Load:
    """Clients in a loop through lb (connect, name, echo, close), counting names and errors."""

    def __init__(self, address: str) -> None:
        self.address = host_port(address)
        self.names: Counter[str] = Counter()
        self.errors: list[str] = []
        self.seen = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i in range(20_000):  # bounded
            if self._stop.is_set():
                return
            try:
                with socket.create_connection(self.address, timeout=10) as sock:
                    name = read_line(sock).decode().strip()
                    payload = b"%d\n" % i
                    if echo(sock, payload) != payload:
                        raise AssertionError(f"{name} echoed the wrong bytes")
            except (OSError, AssertionError) as exc:
                self.errors.append(repr(exc))
                continue
            with self.seen:
                self.names[name] += 1
                self.seen.notify_all()

    def wait_for(self, name: str, count: int = 1, timeout: float = 20) -> None:
        """Wait until ``count`` more clients were served by ``name``."""
        with self.seen:
            target = self.names[name] + count
            assert self.seen.wait_for(lambda: self.names[name] >= target, timeout), (
                f"{name} served {self.names[name]} of {target}; errors {self.errors[:3]}"
            )

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(20)


def wait_reload(lb, name: str = "reloaded", timeout: float = 10, **match: object) -> dict:
    """The next ``name`` event whose fields include ``match`` (a change written just before a
    SIGHUP may be seen by the poll first: the SIGHUP then reloads once more, unchanged)."""
    deadline = time.monotonic() + timeout
    while True:
        event = lb.wait_for(name, max(0.01, deadline - time.monotonic()))
        if all(event.get(k) == v for k, v in match.items()):
            return event


def write(path: Path, *lines: str) -> None:
    # Written whole and renamed into place, as an editor or a config tool does.
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    os.replace(tmp, path)


def test_sighup_without_a_backends_file_does_not_stop_lb(netkit_server, backends):
    b = backends("b")
    lb = netkit_server("lb", ":0", b.address, "--check-interval", "30s")
    with socket.create_connection(host_port(lb.address), timeout=10) as held:
        assert read_line(held) == b"b\n"
        lb.proc.send_signal(signal.SIGHUP)
        ignored = lb.wait_for("reload_ignored")
        assert ignored["trigger"] == "SIGHUP" and "--backends-file" in ignored["reason"]
        assert echo(held, b"still here") == b"still here"
        with socket.create_connection(host_port(lb.address), timeout=10) as fresh:
            assert read_line(fresh) == b"b\n"
        assert lb.proc.poll() is None
    assert lb.stop() == 0
    assert lb.event("summary")["connections"] == 2


def test_reload_under_load_adds_and_drains_without_a_client_error(
    netkit_server, backends, tmp_path
):
    a, b = backends("a"), backends("b")
    pool = tmp_path / "pool.txt"
    write(pool, "# the pool", a.address)
    lb = netkit_server("lb", ":0", "--backends-file", str(pool), "--check-interval", "30s")
    assert lb.listening["backends_file"] == str(pool)
    load = Load(lb.address)
    try:
        load.wait_for("a", 5)
        with socket.create_connection(host_port(lb.address), timeout=10) as held:
            assert read_line(held) == b"a\n"
            write(pool, f"{b.address},weight=2  # the new one", "")
            lb.proc.send_signal(signal.SIGHUP)
            reloaded = wait_reload(lb, added=[b.address])
            assert reloaded["removed"] == [a.address] and reloaded["changed"] == {}
            load.wait_for("b", 20)  # the new backend receives connections
            # the removed backend's connection is still relayed, both ways
            assert echo(held, b"a keeps relaying") == b"a keeps relaying"
            served_by_a = load.names["a"]
            load.wait_for("b", 10)
            assert load.names["a"] == served_by_a  # no new client went to a
        write(pool, a.address, b.address)  # back again, from a change of the file alone
        back = wait_reload(lb, trigger="file changed", added=[a.address])
        assert back["changed"] == {b.address: "weight 2 -> 1"}
        load.wait_for("a", 5)
    finally:
        load.stop()
    assert load.errors == []
    assert lb.stop() == 0
    rows = {row["backend"]: row for row in lb.event("summary")["backends"]}
    assert rows[a.address]["active"] == rows[b.address]["active"] == 0
    assert rows[a.address]["admin"] == "ready"


def test_an_invalid_backends_file_keeps_the_old_set_and_says_which_line(
    netkit_server, backends, tmp_path
):
    a = backends("a")
    pool = tmp_path / "pool.txt"
    write(pool, a.address)
    lb = netkit_server("lb", ":0", "--backends-file", str(pool), "--check-interval", "30s")
    write(pool, "# broken", a.address, "127.0.0.1:1,wieght=2")
    lb.proc.send_signal(signal.SIGHUP)
    failed = lb.wait_for("reload_failed")
    assert failed["error"].startswith(f"{pool} line 3: ")
    assert "unknown option 'wieght'" in failed["error"]
    pool.unlink()
    gone = wait_reload(lb, "reload_failed", trigger="file changed")  # the poll saw it go
    while "line 3" in gone["error"]:  # the SIGHUP's, when the poll read the file first
        gone = wait_reload(lb, "reload_failed", trigger="file changed")
    assert "cannot read backends file" in gone["error"]
    with socket.create_connection(host_port(lb.address), timeout=10) as sock:
        assert read_line(sock) == b"a\n"  # still served by the old set
    assert lb.stop() == 0
    assert [row["backend"] for row in lb.event("summary")["backends"]] == [a.address]


def test_each_worker_reloads_and_sighup_to_the_parent_reaches_all(
    netkit_server, backends, tmp_path
):
    a, b = backends("a"), backends("b")
    pool = tmp_path / "pool.txt"
    write(pool, a.address)
    lb = netkit_server(
        "lb", ":0", "--backends-file", str(pool), "--workers", "2", "--check-interval", "30s"
    )
    write(pool, a.address, b.address)  # each worker sees the change on its own
    first = [lb.wait_for("reloaded"), lb.wait_for("reloaded")]
    assert {e["pid"] for e in first} != {lb.proc.pid} and len({e["pid"] for e in first}) == 2
    assert all(e["added"] == [b.address] for e in first)
    pids = {e["pid"] for e in first}
    lb.proc.send_signal(signal.SIGHUP)  # to the parent only: it tells the workers
    again = [wait_reload(lb, trigger="SIGHUP"), wait_reload(lb, trigger="SIGHUP")]
    assert {e["pid"] for e in again} == pids
    write(pool, b.address)
    lb.proc.send_signal(signal.SIGHUP)
    removed = {wait_reload(lb, removed=[a.address])["pid"] for _ in range(2)}
    assert removed == pids
    for _ in range(6):
        with socket.create_connection(host_port(lb.address), timeout=10) as sock:
            assert read_line(sock) == b"b\n"
    assert lb.proc.poll() is None
    assert lb.stop() == 0
    (row,) = lb.event("summary")["backends"]  # b, merged across the workers; a is gone
    assert row["backend"] == b.address and row["total"] >= 6


def test_a_full_backend_queues_then_serves_and_a_full_queue_refuses(netkit_server, backends):
    b = backends("b")
    lb = netkit_server(
        "lb", ":0", f"{b.address},maxconn=1", "--queue", "1", "--check-interval", "30s",
        "--metrics", ":0",
    )  # fmt: skip
    address = host_port(lb.address)
    front = (("proxy", "lb"),)
    with socket.create_connection(address, timeout=10) as held:
        assert read_line(held) == b"b\n"
        waiting = socket.create_connection(address, timeout=10)
        try:
            waiting.sendall(b"sent while queued")
            queued = lb.wait_for("queued")
            assert queued["waiting"] == 1
            assert scrape(lb.listening["metrics"])[("haproxy_backend_current_queue", front)] == 1
            with socket.socket() as refused:
                refused.settimeout(10)
                with pytest.raises(ConnectionResetError):  # maybe before connect() returns
                    refused.connect(address)
                    refused.recv(1)
            assert "queue" in lb.wait_for("queue_full")["error"]
            held.close()  # a slot frees: the queued client is served, its bytes intact
            expected = b"b\nsent while queued"  # its name, then the bytes sent while queued
            got = b""
            while len(got) < len(expected):
                chunk = waiting.recv(64)
                assert chunk, f"closed after {got!r}"
                got += chunk
            assert got == expected
        finally:
            waiting.close()
    m = scrape(lb.listening["metrics"])
    assert m[("haproxy_backend_current_queue", front)] == 0
    assert m[("haproxy_backend_max_queue", front)] == 1
    assert m[("netkit_backend_queued_total", front)] == 1
    assert m[("netkit_backend_queue_refused_total", front)] == 1
    assert m[("netkit_backend_queue_timeouts_total", front)] == 0
    assert lb.stop() == 0
    summary = lb.event("summary")
    assert summary["queue"] | {"timeout_s": None} == {
        "limit": 1, "timeout_s": None, "current": 0, "max": 1,
        "queued": 1, "timed_out": 0, "refused": 1,
    }  # fmt: skip


def test_a_queued_client_is_closed_at_the_queue_timeout(netkit_server, backends):
    b = backends("b")
    lb = netkit_server(
        "lb", ":0", f"{b.address},maxconn=1", "--queue-timeout", "300ms", "--check-interval", "30s"
    )
    assert lb.listening["queue_timeout_s"] == 0.3
    with socket.create_connection(host_port(lb.address), timeout=10) as held:
        assert read_line(held) == b"b\n"
        with socket.create_connection(host_port(lb.address), timeout=10) as late:
            started = time.monotonic()
            timed_out = lb.wait_for("queue_timeout")
            assert timed_out["error"] == "every backend stayed full for 0.3s in the queue"
            with pytest.raises(ConnectionResetError):
                late.recv(1)
            assert time.monotonic() - started < 5
        assert echo(held, b"unaffected") == b"unaffected"
    assert lb.stop() == 0
    assert lb.event("summary")["queue"]["timed_out"] == 1


def test_a_backend_added_through_the_api_takes_the_queued_client(netkit_server, backends):
    a, b = backends("a"), backends("b")
    lb = netkit_server(
        "lb", ":0", f"{a.address},maxconn=1", "--api", ":0", "--check-interval", "30s"
    )
    with socket.create_connection(host_port(lb.address), timeout=10) as held:
        assert read_line(held) == b"a\n"
        with socket.create_connection(host_port(lb.address), timeout=10) as waiting:
            lb.wait_for("queued")
            status, _ = call(lb.listening["api"], "POST", "/backends", {"backend": b.address})
            assert status == 201
            assert read_line(waiting) == b"b\n"  # served at once, not at the next free slot
    assert lb.stop() == 0
    assert lb.event("summary")["queue"]["queued"] == 1


def test_backends_come_from_the_command_line_or_the_file_not_both(tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("127.0.0.1:1\n")
    cases = [
        (("127.0.0.1:2", "--backends-file", str(pool)), "not both"),
        ((), "give --backends-file"),
        (("--backends-file", str(tmp_path / "missing.txt")), "cannot read backends file"),
    ]
    for args, words in cases:
        result = run_netkit("lb", ":0", *args)
        assert result.returncode == 2
        assert_one_line_error(result.stderr)
        assert words in result.stderr
    pool.write_text("# one\n127.0.0.1:1,weight=0\n")
    result = run_netkit("lb", ":0", "--backends-file", str(pool))
    assert result.returncode == 2 and f"{pool} line 2: " in result.stderr

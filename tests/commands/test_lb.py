"""lb end to end: the CLI as a subprocess in front of real loopback backends."""

from __future__ import annotations

import collections
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.commands.conftest import NETKIT, assert_one_line_error, run_netkit
from tests.net.conftest import ThreadListener


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class NamedBackend(ThreadListener):
    """A loopback server that answers every connection with its own name, then echoes."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        self.accepted = threading.Event()
        super().__init__(port)
        self.address = f"127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        self.accepted.set()
        threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(self.name.encode() + b"\n")
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.stop()  # stops listening at once (shutdown before close), as a dead backend


@pytest.fixture
def backends() -> Iterator[Callable[..., NamedBackend]]:
    made: list[NamedBackend] = []

    def make(name: str, port: int = 0) -> NamedBackend:
        backend = NamedBackend(name, port)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def who(address: str) -> str:
    with socket.create_connection(host_port(address), timeout=10) as sock:
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(64)
            assert chunk, "closed before the backend said its name"
            line += chunk
        return line.decode().strip()


def dead_address() -> str:
    with socket.socket() as sock:  # bound and closed: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_weighted_roundrobin_distribution(netkit_server, backends):
    a, b, c = backends("a"), backends("b"), backends("c")
    lb = netkit_server("lb", ":0", f"{a.address},weight=2", b.address, c.address)
    counts = collections.Counter(who(lb.address) for _ in range(12))
    assert counts == {"a": 6, "b": 3, "c": 3}
    assert lb.stop() == 0
    totals = {row["backend"]: row["total"] for row in lb.event("summary")["backends"]}
    assert totals == {a.address: 6, b.address: 3, c.address: 3}


def test_source_hashing_keeps_a_client_on_one_backend(netkit_server, backends):
    addresses = [backends(name).address for name in "abc"]
    lb = netkit_server("lb", ":0", *addresses, "--algorithm", "source")
    assert len({who(lb.address) for _ in range(10)}) == 1


def test_dead_at_start_is_ejected_by_the_first_check(netkit_server, backends):
    alive = backends("alive")
    dead = dead_address()
    lb = netkit_server("lb", ":0", dead, alive.address, "--check-interval", "30s")
    assert [who(lb.address) for _ in range(6)] == ["alive"] * 6
    event = lb.wait_for("health")
    assert (event["backend"], event["new"]) == (dead, "down")


def test_refused_connect_ejects_and_retries_on_the_next_backend(netkit_server, backends):
    doomed, alive = backends("doomed"), backends("alive")
    lb = netkit_server("lb", ":0", doomed.address, alive.address, "--check-interval", "30s")
    assert doomed.accepted.wait(10), "the first health check connected"
    doomed.close()  # up as far as the lb knows; the next check is 30 s away
    assert [who(lb.address) for _ in range(6)] == ["alive"] * 6
    event = lb.wait_for("health")
    assert (event["backend"], event["new"], event["source"]) == (doomed.address, "down", "traffic")
    assert lb.stop() == 0
    assert "upstream_failed" not in {e["event"] for e in lb.events}, "no client saw the refusal"


def test_health_checks_eject_and_readmit(netkit_server, backends):
    first = backends("b1")
    other = backends("b2")
    port = first.port
    lb = netkit_server(
        "lb", ":0", first.address, other.address,
        "--check-interval", "100ms", "--check-timeout", "1s", "--rise", "2", "--fall", "2",
    )  # fmt: skip
    first.close()
    down = lb.wait_for("health")
    assert (down["backend"], down["new"], down["source"]) == (first.address, "down", "check")
    assert {who(lb.address) for _ in range(4)} == {"b2"}
    backends("b1", port)  # the same address comes back
    up = lb.wait_for("health")
    assert (up["backend"], up["new"]) == (first.address, "up")
    assert "b1" in {who(lb.address) for _ in range(4)}


def test_backup_serves_only_when_primaries_are_down(netkit_server, backends):
    primary, spare = backends("primary"), backends("spare")
    lb = netkit_server(
        "lb",
        ":0",
        primary.address,
        f"{spare.address},backup",
        "--check-interval",
        "100ms",
        "--fall",
        "1",
    )
    assert {who(lb.address) for _ in range(3)} == {"primary"}
    primary.close()
    assert lb.wait_for("health")["new"] == "down"
    assert {who(lb.address) for _ in range(3)} == {"spare"}


def test_backend_killed_mid_run(netkit_server):
    one = netkit_server("tcp-echo", "serve", ":0")
    two = netkit_server("tcp-echo", "serve", ":0")
    lb = netkit_server(
        "lb", ":0", one.address, two.address, "--check-interval", "100ms", "--fall", "1",
        # The killed backend refuses at once; the live one's check may be slow on a loaded
        # machine, and with --fall 1 one timed-out check would take it down too.
        "--check-timeout", "5s",
    )  # fmt: skip
    held = [socket.create_connection(host_port(lb.address), timeout=10) for _ in range(2)]
    for sock in held:
        sock.sendall(b"hi")
        assert sock.recv(2) == b"hi"
    one.proc.kill()
    one.proc.wait()
    ended = 0
    for sock in held:
        with sock:
            try:
                sock.sendall(b"again")
                ended += sock.recv(5) != b"again"
            except OSError:
                ended += 1
    assert ended == 1, "the connection on the killed backend ends, the other goes on"
    for _ in range(10):
        result = run_netkit("tcp-echo", "client", lb.address, "ping")
        assert result.returncode == 0, result.stderr


def test_no_backend_available_resets_the_client(netkit_server):
    lb = netkit_server("lb", ":0", dead_address(), "--check-interval", "30s")
    with (
        pytest.raises(ConnectionResetError),
        socket.create_connection(host_port(lb.address), timeout=10) as sock,
    ):
        sock.sendall(b"x")
        sock.recv(1)
    assert "no backend available" in lb.wait_for("upstream_failed")["error"]


def test_connect_times_have_sub_millisecond_resolution_under_uvloop(netkit_server, backends):
    # uvloop's loop.time() ticks in whole milliseconds: connect times measured with it read
    # 0.0 or 1.0 ms ("connect_p50_ms": 0.0) (#13 item 6). They come from perf_counter.
    pytest.importorskip("uvloop")
    b = backends("b")
    lb = netkit_server("--loop", "uvloop", "lb", ":0", b.address, "--check-interval", "30s")
    for _ in range(10):
        assert who(lb.address) == "b"
    assert lb.stop() == 0
    (row,) = lb.event("summary")["backends"]
    assert row["connects"] == 10
    times = [row[f"connect_{k}_ms"] for k in ("min", "p50", "p99", "max")]
    assert times[0] > 0 and not all(float(t).is_integer() for t in times), times


def test_a_full_maxconn_is_its_own_reason_in_json(netkit_server, backends):
    b = backends("b")
    lb = netkit_server(
        "lb", ":0", f"{b.address},maxconn=1", "--check-interval", "30s", "--queue", "0"
    )
    with socket.create_connection(host_port(lb.address), timeout=10) as held:
        assert held.recv(2) == b"b\n"  # b's one slot is taken
        with (
            pytest.raises(ConnectionResetError),
            socket.create_connection(host_port(lb.address), timeout=10) as sock,
        ):
            sock.sendall(b"x")
            sock.recv(1)
        error = lb.wait_for("upstream_failed")["error"]
    assert "maxconn" in error and "no backend available" not in error
    assert lb.stop() == 0
    assert lb.event("summary")["backends"][0]["state"] == "up"  # full is not down


def test_a_full_maxconn_is_its_own_reason_for_people(backends):
    b = backends("b")
    proc = subprocess.Popen(
        [
            *NETKIT,
            "lb",
            "127.0.0.1:0",
            f"{b.address},maxconn=1",
            "--check-interval",
            "30s",
            "--queue",
            "0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        listening = re.search(r"listening on (\S+)", proc.stdout.readline())
        assert listening, "no listening line"
        address = listening.group(1)
        with socket.create_connection(host_port(address), timeout=10) as held:
            assert held.recv(2) == b"b\n"
            with (
                pytest.raises(ConnectionResetError),
                socket.create_connection(host_port(address), timeout=10) as sock,
            ):
                sock.sendall(b"x")
                sock.recv(1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "maxconn" in stderr and "no backend available" not in stderr, stderr


def test_sigterm_drains(netkit_server, backends):
    b = backends("b")
    lb = netkit_server("lb", ":0", b.address)
    with socket.create_connection(host_port(lb.address), timeout=10) as sock:
        assert sock.recv(2) == b"b\n"
        lb.proc.send_signal(signal.SIGTERM)
        lb.wait_for("draining")
        sock.sendall(b"still")
        assert sock.recv(5) == b"still"
    assert lb.wait_exit() == 0


def test_sigusr1_drains_like_sigterm(netkit_server, backends):
    # HAProxy's soft stop: no new clients, the open relay finishes, then a summary. (SIGHUP
    # reloads: tests/commands/test_lb_pool.py.)
    sig = signal.SIGUSR1
    b = backends("b")
    lb = netkit_server("lb", ":0", b.address, "--drain-timeout", "20s")
    with socket.create_connection(host_port(lb.address), timeout=10) as sock:
        assert sock.recv(2) == b"b\n"
        lb.proc.send_signal(sig)
        assert lb.wait_for("draining")["active"] == 1
        sock.sendall(b"still")
        assert sock.recv(5) == b"still"
    assert lb.wait_exit() == 0
    summary = lb.event("summary")
    assert summary["cut_at_drain"] == 0 and summary["connections"] == 1


def test_idle_timeout_defaults_to_ten_minutes(netkit_server, backends):
    b = backends("b")
    assert netkit_server("lb", ":0", b.address).listening["idle_timeout_s"] == 600
    off = netkit_server("lb", ":0", b.address, "--idle-timeout", "0")
    assert off.listening["idle_timeout_s"] is None


def test_a_silent_client_is_closed_at_the_idle_timeout(netkit_server, backends):
    b = backends("b")
    lb = netkit_server("lb", ":0", b.address, "--idle-timeout", "300ms")
    with socket.create_connection(host_port(lb.address), timeout=10) as sock:
        assert sock.recv(2) == b"b\n"
        start = time.perf_counter()
        assert sock.recv(1) == b""  # closed, not reset
        waited = time.perf_counter() - start
    assert 0.25 <= waited < 5, waited
    assert lb.wait_for("closed")["end"] == "idle timeout"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["127.0.0.1:1,wieght=3"], "unknown option 'wieght'"),
        (["127.0.0.1:1,backup"], "backup"),
        (["127.0.0.1:1", "--algorithm", "fastest"], "fastest"),
        (["127.0.0.1:1", "--check-expect", "("], "--check-expect"),
        (["127.0.0.1:1", "--connect-timeout", "0"], "--connect-timeout"),
        (["127.0.0.1:1", "--check-interval", "0s"], "--check-interval"),
    ],
)
def test_bad_arguments_are_usage_errors(args, words):
    result = run_netkit("lb", ":0", *args)
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert words in result.stderr


def test_workers_balance_on_one_port_and_add_up_the_backend_table(netkit_server, backends):
    a, b = backends("a"), backends("b")
    lb = netkit_server("lb", ":0", a.address, b.address, "--workers", "2")
    assert lb.listening["workers"] == 2
    children = Path(f"/proc/{lb.proc.pid}/task/{lb.proc.pid}/children")
    if children.exists():
        assert len(children.read_text().split()) == 2
    names = [who(lb.address) for _ in range(10)]
    assert set(names) <= {"a", "b"} and len(names) == 10
    assert lb.stop() == 0
    summary = lb.event("summary")
    assert summary["connections"] == 10
    rows = {row["backend"]: row for row in summary["backends"]}
    assert list(rows) == [a.address, b.address]  # one row per backend, not one per worker
    assert rows[a.address]["total"] == names.count("a")
    assert rows[b.address]["total"] == names.count("b")
    assert all(row["active"] == 0 for row in rows.values())
    closed = [e for e in lb.events if e["event"] == "closed"]
    assert sorted(e["upstream"] for e in closed) == sorted(
        a.address if n == "a" else b.address for n in names
    )

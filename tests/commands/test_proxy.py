"""proxy end to end: the CLI as a subprocess in front of real loopback servers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.commands.conftest import assert_one_line_error, run_netkit


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def connect(address: str, timeout: float = 10) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(address[5:])
        return sock
    return socket.create_connection(host_port(address), timeout=timeout)


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def thread_server() -> Iterator[Callable[..., str]]:
    """Start a one-handler-per-connection server in a thread; returns its address."""
    listeners: list[socket.socket] = []

    def start(handler: Callable[[socket.socket], None], unix_path: str | None = None) -> str:
        if unix_path:
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(unix_path)
            listener.listen()
            address = f"unix:{unix_path}"
        else:
            listener = socket.create_server(("127.0.0.1", 0))
            address = f"127.0.0.1:{listener.getsockname()[1]}"
        listeners.append(listener)

        def accept_loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                conn.settimeout(20)
                threading.Thread(target=lambda c=conn: _run(handler, c), daemon=True).start()

        threading.Thread(target=accept_loop, daemon=True).start()
        return address

    yield start
    for listener in listeners:
        listener.close()


def _run(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):
        handler(conn)


def echo_handler(conn: socket.socket) -> None:
    while data := conn.recv(1 << 16):
        conn.sendall(data)


def reply_after_eof(conn: socket.socket) -> None:
    """Reads until the client half-closes, then answers with the SHA-256 of what it got."""
    data = recv_all(conn)
    conn.sendall(hashlib.sha256(data).hexdigest().encode())


def exchange_both_ways(address: str, size: int) -> None:
    """Send `size` random bytes while reading the echo; both directions at once, checksummed."""
    payload = os.urandom(size)
    with connect(address, timeout=30) as sock:
        sender = threading.Thread(
            target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR))
        )
        sender.start()
        echoed = recv_all(sock)
        sender.join(timeout=30)
    if echoed != payload:
        first = next(
            (i for i, (a, b) in enumerate(zip(echoed, payload, strict=False)) if a != b), None
        )
        raise AssertionError(
            f"echoed {len(echoed)} of {len(payload)} bytes, first difference at {first}"
        )


@pytest.mark.parametrize("splice", ["--splice", "--no-splice"])
def test_tcp_to_tcp_several_megabytes_both_ways(netkit_server, thread_server, splice):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, splice)
    assert proxy.listening["splice"] is (splice == "--splice")
    exchange_both_ways(proxy.address, 6 << 20)
    assert proxy.stop() == 0
    closed = proxy.event("closed")
    assert closed["bytes_up"] == closed["bytes_down"] == 6 << 20
    assert closed["path"] == ("splice" if splice == "--splice" else "buffered")
    assert "undelivered" not in closed


@pytest.mark.parametrize("splice", ["--splice", "--no-splice"])
def test_half_close_passes_through(netkit_server, thread_server, splice):
    upstream = thread_server(reply_after_eof)
    proxy = netkit_server("proxy", ":0", upstream, splice)
    payload = os.urandom(300_000)
    with connect(proxy.address) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the upstream answers only after our FIN reaches it
        assert recv_all(sock) == hashlib.sha256(payload).hexdigest().encode()


def test_tcp_to_unix_and_unix_to_tcp(netkit_server, thread_server, tmp_path):
    unix_upstream = thread_server(echo_handler, unix_path=str(tmp_path / "up.sock"))
    to_unix = netkit_server("proxy", ":0", unix_upstream)
    exchange_both_ways(to_unix.address, 1 << 20)
    from_unix = netkit_server("proxy", f"unix:{tmp_path / 'front.sock'}", to_unix.address)
    exchange_both_ways(from_unix.address, 1 << 20)


def test_tls_termination_and_origination(netkit_server):
    tls_echo = netkit_server("tcp-echo", "serve", ":0", "--tls-self-signed")
    ca = tls_echo.listening["ca_file"]
    front = netkit_server(
        "proxy", ":0", tls_echo.address, "--tls-self-signed", "--cacert", ca, "--sni", "localhost"
    )
    assert front.listening["transport"] == "tls" and front.listening["upstream_tls"] is True
    ctx = ssl.create_default_context(cafile=front.listening["ca_file"])
    payload = os.urandom(2 << 20)
    with ctx.wrap_socket(connect(front.address), server_hostname="localhost") as sock:
        received = bytearray()
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        while len(received) < len(payload):
            received += sock.recv(1 << 16)
        sender.join(timeout=30)
    assert bytes(received) == payload
    # Without the upstream's CA the proxy refuses to talk to it: the client is reset.
    strict = netkit_server("proxy", ":0", tls_echo.address, "--upstream-tls")
    with connect(strict.address) as sock:
        sock.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    assert "not trusted" in strict.wait_for("upstream_failed")["error"]


def rtt(address: str) -> float:
    with connect(address) as sock:
        start = time.perf_counter()
        sock.sendall(b"ping")
        got = b""
        while len(got) < 4:
            got += sock.recv(4)
        return time.perf_counter() - start


def test_latency_is_added_both_ways(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, "--latency", "60ms", "--seed", "7")
    measured = rtt(proxy.address)
    assert 0.115 <= measured <= 0.5, measured  # 60 ms up + 60 ms down
    fault = proxy.wait_for("fault")
    assert fault["fault"] == "latency" and fault["latency_ms"] == 60.0


def test_latency_one_direction_with_jitter(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, "--latency", "80:10,down")
    measured = rtt(proxy.address)
    assert 0.065 <= measured <= 0.4, measured


def test_bandwidth_cap_within_20_percent(netkit_server, thread_server):
    received: list[float] = []

    def sink(conn: socket.socket) -> None:
        start = None
        total = 0
        while data := conn.recv(1 << 16):
            start = start or time.perf_counter()
            total += len(data)
        received.append(total / (time.perf_counter() - (start or 0)))

    upstream = thread_server(sink)
    proxy = netkit_server("proxy", ":0", upstream, "--bandwidth", "400KB/s,up")
    with connect(proxy.address) as sock:
        sock.sendall(os.urandom(400_000))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # until the proxy passes the upstream's close on
    proxy.wait_for("closed")
    assert received and 0.8 * 400_000 <= received[0] <= 1.2 * 400_000, received


def test_slice_sizes_seen_by_the_receiver(netkit_server, thread_server):
    def burst(conn: socket.socket) -> None:
        conn.sendall(b"z" * 1000)

    upstream = thread_server(burst)
    proxy = netkit_server("proxy", ":0", upstream, "--slice", "100:20ms,down")
    sizes = []
    with connect(proxy.address) as sock:
        while data := sock.recv(4096):
            sizes.append(len(data))
    assert sum(sizes) == 1000
    assert max(sizes) <= 100 and len(sizes) >= 8


def test_limit_data_closes_after_exactly_n_bytes(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, "--limit-data", "1000,down")
    with connect(proxy.address) as sock:
        sock.sendall(b"a" * 5000)
        assert len(recv_all(sock)) == 1000
    assert proxy.wait_for("closed")["end"] == "fault: limit-data"


def test_reset_after_bytes(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, "--reset-after", "2000,down")
    got = 0
    with connect(proxy.address) as sock:
        sock.sendall(b"a" * 5000)
        with pytest.raises(ConnectionResetError):
            while data := sock.recv(1 << 16):
                got += len(data)
    assert got <= 2000
    assert proxy.wait_for("closed")["end"] == "fault: reset"


def reply_ok_after_eof(conn: socket.socket) -> None:
    """Answers ``ok`` once the client's FIN arrived, then closes."""
    recv_all(conn)
    conn.sendall(b"ok")


@pytest.mark.parametrize("splice", ["--splice", "--no-splice"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_slow_close_holds_only_its_direction(netkit_server, thread_server, splice, direction):
    upstream = thread_server(reply_ok_after_eof)
    hold = 0.8
    proxy = netkit_server("proxy", ":0", upstream, splice, "--slow-close", f"{hold}s,{direction}")
    with connect(proxy.address) as sock:
        sock.sendall(b"question")
        sock.shutdown(socket.SHUT_WR)  # up: client FIN -> upstream, which then answers
        start = time.perf_counter()
        assert sock.recv(2) == b"ok"
        answered = time.perf_counter() - start
        assert sock.recv(1) == b""  # down: the upstream's FIN -> client
        closed = time.perf_counter() - start - answered
    if direction == "up":
        assert answered >= hold - 0.05 and closed < hold / 2, (answered, closed)
    else:
        assert answered < hold / 2 and closed >= hold - 0.05, (answered, closed)


@pytest.mark.parametrize("splice", ["--splice", "--no-splice"])
def test_blackhole_then_close_after_a_time(netkit_server, thread_server, splice):
    # toxiproxy's timeout toxic: swallow the bytes, then close CLOSE_AFTER later.
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, splice, "--blackhole-after", "300ms:400ms")
    with connect(proxy.address) as sock:
        start = time.perf_counter()
        sock.sendall(b"one")
        assert sock.recv(3) == b"one"
        assert sock.recv(1) == b""  # closed (FIN), not left open for ever
        elapsed = time.perf_counter() - start
    assert 0.65 <= elapsed < 5, elapsed
    closed = proxy.wait_for("closed")
    assert closed["end"] == "fault: blackhole-after"


def test_refuse_and_accept_delay(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    refusing = netkit_server("proxy", ":0", upstream, "--refuse", "1")
    with pytest.raises(ConnectionResetError), connect(refusing.address) as sock:
        sock.sendall(b"x")
        sock.recv(1)
    delayed = netkit_server("proxy", ":0", upstream, "--accept-delay", "300ms")
    assert rtt(delayed.address) >= 0.29


def test_refuse_probability_is_repeatable_with_a_seed(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    outcomes = []
    for _ in range(2):
        proxy = netkit_server("proxy", ":0", upstream, "--refuse", "0.5", "--seed", "42")
        run = []
        for _ in range(8):
            try:  # the RST may beat connect()'s own poll and surface there
                with connect(proxy.address) as sock:
                    sock.sendall(b"x")
                    run.append(sock.recv(1) == b"x")
            except ConnectionResetError:
                run.append(False)
        outcomes.append(run)
        proxy.stop()
    assert outcomes[0] == outcomes[1]
    assert 0 < sum(outcomes[0]) < 8


def test_proxy_protocol_v1_names_the_client(netkit_server, thread_server):
    headers: list[bytes] = []

    def read_header(conn: socket.socket) -> None:
        line = b""
        while not line.endswith(b"\r\n"):
            line += conn.recv(1)
        headers.append(line)
        conn.sendall(b"ok")

    upstream = thread_server(read_header)
    proxy = netkit_server("proxy", ":0", upstream, "--proxy-protocol", "v1")
    with connect(proxy.address) as sock:
        client_port = sock.getsockname()[1]
        assert recv_all(sock) == b"ok"
    assert headers[0].startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
    assert f" {client_port} ".encode() in headers[0]


def test_upstream_refused_resets_the_client_and_is_logged(netkit_server):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"
        proxy = netkit_server("proxy", ":0", dead)
        with pytest.raises(ConnectionResetError), connect(proxy.address) as sock:
            sock.sendall(b"x")
            sock.recv(1)
        assert "refused" in proxy.wait_for("upstream_failed")["error"]


def test_sigterm_drains_an_open_relay(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, "--drain-timeout", "20s")
    with connect(proxy.address) as sock:
        sock.sendall(b"one")
        assert sock.recv(3) == b"one"
        proxy.proc.send_signal(signal.SIGTERM)
        proxy.wait_for("draining")
        sock.sendall(b"two")
        assert sock.recv(3) == b"two"
    assert proxy.wait_exit() == 0
    assert proxy.event("summary")["cut_at_drain"] == 0


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1], ids=["SIGHUP", "SIGUSR1"])
def test_sighup_and_sigusr1_drain_like_sigterm(netkit_server, thread_server, sig):
    # HAProxy's soft stop: no new clients, the open relay finishes, then a summary.
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, "--drain-timeout", "20s")
    with connect(proxy.address) as sock:
        sock.sendall(b"one")
        assert sock.recv(3) == b"one"
        proxy.proc.send_signal(sig)
        assert proxy.wait_for("draining")["active"] == 1
        sock.sendall(b"two")
        assert sock.recv(3) == b"two"
    assert proxy.wait_exit() == 0
    summary = proxy.event("summary")
    assert summary["cut_at_drain"] == 0 and summary["connections"] == 1


def test_idle_timeout_defaults_to_nginx_s_ten_minutes_and_can_be_turned_off(
    netkit_server, thread_server
):
    upstream = thread_server(echo_handler)
    assert netkit_server("proxy", ":0", upstream).listening["idle_timeout_s"] == 600
    off = netkit_server("proxy", ":0", upstream, "--idle-timeout", "0")
    assert off.listening["idle_timeout_s"] is None


@pytest.mark.parametrize("splice", ["--splice", "--no-splice"])
def test_a_silent_client_is_closed_at_the_idle_timeout(netkit_server, thread_server, splice):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, splice, "--idle-timeout", "300ms")
    with connect(proxy.address) as sock:
        sock.sendall(b"hi")
        assert sock.recv(2) == b"hi"
        start = time.perf_counter()
        assert sock.recv(1) == b""  # closed, not reset
        waited = time.perf_counter() - start
    assert 0.25 <= waited < 5, waited
    assert proxy.wait_for("closed")["end"] == "idle timeout"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--latency", "soon"], "--latency"),
        (["--refuse", "2"], "--refuse"),
        (["--bandwidth", "fast"], "--bandwidth"),
        (["--slice", "0"], "--slice"),
        (["--latency", "50,sideways"], "unknown modifier"),
        (["--accept-delay", "1s,down"], "--accept-delay"),
        (["--blackhole-after", "1s:later"], "--blackhole-after"),
        (["--connect-timeout", "0"], "--connect-timeout"),
    ],
)
def test_bad_fault_values_are_usage_errors(args, words):
    result = run_netkit("proxy", ":0", "127.0.0.1:9", *args)
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert words in result.stderr


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("splice", ["--splice", "--no-splice"])
def test_memory_stays_bounded_when_the_upstream_stops_reading(netkit_server, thread_server, splice):
    release = threading.Event()

    def never_reads(conn: socket.socket) -> None:
        release.wait(30)

    upstream = thread_server(never_reads)
    proxy = netkit_server("proxy", ":0", upstream, splice)
    before = rss_bytes(proxy.proc.pid)
    sent = 0
    chunk = b"m" * (1 << 16)
    try:
        with connect(proxy.address) as sock:
            sock.setblocking(False)
            deadline = time.monotonic() + 20
            while sent < (256 << 20) and time.monotonic() < deadline:
                try:
                    sent += sock.send(chunk)
                except BlockingIOError:
                    # Stalled: wait for room; none within 0.5 s means the proxy stopped reading.
                    _, writable, _ = select.select([], [sock], [], 0.5)
                    if not writable:
                        break
            grown = rss_bytes(proxy.proc.pid) - before
    finally:
        release.set()
    assert sent > 1 << 20, "data flowed into the proxy before it pushed back"
    assert sent < 256 << 20, "the proxy kept reading although the upstream did not"
    assert grown < 24 << 20, f"proxy memory grew by {grown >> 20} MiB"


@pytest.mark.parametrize("splice", ["--splice", "--no-splice"])
def test_concurrent_relays_never_mix_or_lose_bytes(netkit_server, thread_server, splice):
    # Eight relays at once share the buffer and pipe pools: a buffer reused while another
    # transport still sends views of it would show up here as a checksum mismatch.
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, splice)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            exchange_both_ways(proxy.address, 3 << 20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    proxy.stop()
    closed = [e for e in proxy.events if e["event"] == "closed"]
    assert len(closed) == 8 and all("undelivered" not in e for e in closed)


# --- --workers: several processes on one port ----------------------------------------------


def worker_pids(pid: int) -> list[str]:
    """The children of ``pid`` (Linux), or an empty list where /proc does not say."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return children.read_text().split() if children.exists() else []


def echoes(sock: socket.socket, data: bytes) -> bool:
    sock.sendall(data)
    got = b""
    while len(got) < len(data) and (chunk := sock.recv(1 << 16)):
        got += chunk
    return got == data


@pytest.mark.parametrize("splice", ["--splice", "--no-splice"])
def test_workers_relay_on_one_port_and_add_up_their_totals(netkit_server, thread_server, splice):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, splice, "--workers", "3")
    assert proxy.listening["workers"] == 3
    assert proxy.listening["splice"] is (splice == "--splice")
    if pids := worker_pids(proxy.proc.pid):
        assert len(pids) == 3
    for n in range(12):
        with connect(proxy.address) as sock:
            assert echoes(sock, b"%d" % n * 1000)
    assert proxy.stop() == 0
    closed = [e for e in proxy.events if e["event"] == "closed"]
    assert len(closed) == 12  # every worker's events reach stdout
    assert all(e["end"] == "closed" and "undelivered" not in e for e in closed)
    summary = proxy.event("summary")
    assert summary["connections"] == 12
    assert summary["bytes_up"] == summary["bytes_down"] == sum(e["bytes_up"] for e in closed)
    assert summary["cut_at_drain"] == summary["upstream_failures"] == 0
    assert [e["event"] for e in proxy.events].count("listening") == 1


def test_workers_sigterm_drains_every_worker(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, "--workers", "2", "--drain-timeout", "20s")
    socks = [connect(proxy.address) for _ in range(6)]
    try:
        for sock in socks:
            assert echoes(sock, b"before")
        proxy.proc.send_signal(signal.SIGTERM)
        # Every worker stops accepting, and then nothing holds a listener open: refused.
        late = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                connect(proxy.address).close()  # a listener still open (accepted or not)
            except ConnectionRefusedError:
                break
            except ConnectionResetError:
                pass  # a listener closed with this client in its backlog
            late += 1
        else:
            pytest.fail("the port still accepts 10 s after SIGTERM")
        for sock in socks:  # each worker drains: its relays go on until their clients leave
            assert echoes(sock, b"while draining")
    finally:
        for sock in socks:
            sock.close()
    assert proxy.wait_exit() == 0
    summary = proxy.event("summary")
    assert 6 <= summary["connections"] <= 6 + late
    assert summary["cut_at_drain"] == 0
    assert summary["bytes_up"] == 6 * len(b"beforewhile draining")


def test_workers_drain_timeout_cuts_and_sigint_is_130(netkit_server, thread_server):
    upstream = thread_server(echo_handler)
    proxy = netkit_server("proxy", ":0", upstream, "--workers", "2", "--drain-timeout", "200ms")
    socks = [connect(proxy.address) for _ in range(4)]
    try:
        for sock in socks:
            assert echoes(sock, b"held open")
        assert proxy.stop(signal.SIGINT) == 130
        for sock in socks:
            with contextlib.suppress(ConnectionResetError):
                assert recv_all(sock) == b""  # cut by its worker at the drain timeout
    finally:
        for sock in socks:
            sock.close()
    summary = proxy.event("summary")
    assert summary["connections"] == summary["cut_at_drain"] == 4

"""lb --metrics / --api and proxy --metrics end to end, as an operator uses them: the CLI as a
subprocess, real loopback backends, plain HTTP (http.client), metrics read back with
prometheus_client's own parser."""

from __future__ import annotations

import collections
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.commands.test_lb import NamedBackend, host_port, who

PAYLOAD = b"x" * 1000


@pytest.fixture
def named() -> Iterator[Any]:
    """Makes :class:`NamedBackend` servers (each says its name, then echoes)."""
    made: list[NamedBackend] = []

    def make(name: str) -> NamedBackend:
        made.append(NamedBackend(name))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def call(address: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to a control server; the status and the JSON body (None when empty)."""
    host, port = host_port(address)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        if raw and kind.startswith("application/json"):
            return response.status, json.loads(raw)
        return response.status, raw.decode() if raw else None
    finally:
        conn.close()


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics``, parsed by prometheus_client: value by (sample name, labels)."""
    status, text = call(address, "GET", "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exchange(address: str, payload: bytes = PAYLOAD) -> str:
    """Connect, read the backend's name line, send ``payload``, read it echoed, close."""
    with socket.create_connection(host_port(address), timeout=10) as sock:
        got = b""
        while not got.endswith(b"\n"):
            chunk = sock.recv(64)
            assert chunk
            got += chunk
        sock.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            chunk = sock.recv(65536)
            assert chunk
            echoed += chunk
        assert echoed == payload
        return got.decode().strip()


class Held:
    """A client connection held open through the lb (traffic running during a change)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.create_connection(host_port(address), timeout=10)
        line = b""
        while not line.endswith(b"\n"):
            chunk = self.sock.recv(64)
            assert chunk
            line += chunk
        self.backend = line.decode().strip()

    def echo(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = self.sock.recv(65536)
            assert chunk, "the held connection was cut"
            got += chunk
        return got

    def close(self) -> None:
        self.sock.close()


class Traffic:
    """Clients that connect and exchange in a loop in the background, counting failures."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.names: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        for _ in range(100_000):  # bounded; stopped long before
            if self._stop.is_set():
                return
            try:
                self.names[exchange(self.address, b"ping")] += 1
            except (OSError, AssertionError) as exc:
                self.errors.append(repr(exc))

    def stop(self) -> list[str]:
        """Stop the clients; the errors they met."""
        self._stop.set()
        self._thread.join(10)
        assert sum(self.names.values()) > 0, "the traffic ran"
        return self.errors


@pytest.fixture
def traffic() -> Iterator[Any]:
    """Starts :class:`Traffic` to an address; stopped at the end of the test at the latest."""
    runs: list[Traffic] = []

    def start(address: str) -> Traffic:
        runs.append(Traffic(address))
        return runs[-1]

    yield start
    for run in runs:
        run._stop.set()
        run._thread.join(10)


def test_lb_metrics_count_connections_and_bytes_exactly(netkit_server, named):
    a, b = named("a"), named("b")
    lb = netkit_server("lb", ":0", a.address, b.address, "--metrics", ":0")
    metrics = lb.listening["metrics"]
    assert metrics.startswith("127.0.0.1:"), "loopback by default"
    assert [exchange(lb.address) for _ in range(4)] == ["a", "b", "a", "b"]
    for _ in range(4):
        lb.wait_for("closed")
    m = scrape(metrics)
    front = (("proxy", "lb"),)
    assert m[("haproxy_frontend_sessions_total", front)] == 4
    assert m[("haproxy_frontend_current_sessions", front)] == 0
    assert m[("haproxy_frontend_bytes_in_total", front)] == 4 * len(PAYLOAD)
    assert m[("haproxy_frontend_bytes_out_total", front)] == 4 * (len(PAYLOAD) + 2)  # "a\n"
    assert m[("haproxy_backend_sessions_total", front)] == 4
    assert m[("haproxy_backend_active_servers", front)] == 2
    assert m[("haproxy_backend_status", (("proxy", "lb"), ("state", "UP")))] == 1
    for backend in (a, b):
        server = (("proxy", "lb"), ("server", backend.address))
        assert m[("haproxy_server_sessions_total", server)] == 2
        assert m[("haproxy_server_bytes_in_total", server)] == 2 * len(PAYLOAD)
        assert m[("haproxy_server_bytes_out_total", server)] == 2 * (len(PAYLOAD) + 2)
        assert m[("haproxy_server_connection_errors_total", server)] == 0
        assert m[("haproxy_server_status", (*server, ("state", "UP")))] == 1
        assert m[("haproxy_server_status", (*server, ("state", "MAINT")))] == 0
        assert m[("netkit_server_connect_time_seconds_count", server)] == 2
        assert m[("netkit_server_connect_time_seconds_bucket", (("le", "+Inf"), *server))] == 2
    status, stats = call(metrics, "GET", "/stats")
    assert status == 200
    (entry,) = stats["proxies"]
    assert entry["frontend"]["sessions_total"] == 4
    assert entry["backend"]["bytes_in_total"] == 4 * len(PAYLOAD)
    assert [s["total"] for s in entry["servers"]] == [2, 2]
    assert lb.stop() == 0


def test_proxy_metrics_count_its_upstream_exactly(netkit_server, named):
    up = named("up")
    proxy = netkit_server("proxy", ":0", up.address, "--metrics", ":0", "--name", "web")
    for _ in range(3):
        assert exchange(proxy.address) == "up"
    for _ in range(3):
        proxy.wait_for("closed")
    m = scrape(proxy.listening["metrics"])
    front = (("proxy", "web"),)
    server = (("proxy", "web"), ("server", up.address))
    assert m[("haproxy_frontend_sessions_total", front)] == 3
    assert m[("haproxy_frontend_bytes_in_total", front)] == 3 * len(PAYLOAD)
    assert m[("haproxy_frontend_bytes_out_total", front)] == 3 * (len(PAYLOAD) + 3)
    assert m[("haproxy_server_sessions_total", server)] == 3
    assert m[("haproxy_server_bytes_out_total", server)] == 3 * (len(PAYLOAD) + 3)
    assert m[("netkit_server_connect_time_seconds_count", server)] == 3
    assert proxy.stop() == 0


def test_drain_finishes_current_connections_and_takes_no_new(netkit_server, named, traffic):
    a, b = named("a"), named("b")
    lb = netkit_server("lb", ":0", a.address, b.address, "--api", ":0")
    api = lb.listening["api"]
    held = Held(lb.address)
    assert held.backend == "a"  # roundrobin: the first client goes to a
    running = traffic(lb.address)
    status, row = call(api, "PATCH", f"/backends/{a.address}", {"state": "drain"})
    assert (status, row["admin"], row["active"]) == (200, "drain", 1)
    event = lb.wait_for("backend_state")
    assert (event["backend"], event["admin"], event["previous"]) == (a.address, "drain", "ready")
    assert [exchange(lb.address) for _ in range(6)] == ["b"] * 6, "no new connection to a"
    assert held.echo(b"still here") == b"still here", "the current connection goes on"
    held.close()
    drained = lb.wait_for("backend_drained")
    assert (drained["backend"], drained["removed"]) == (a.address, False)
    status, listing = call(api, "GET", "/backends")
    assert {r["backend"]: (r["admin"], r["active"]) for r in listing["backends"]}[a.address] == (
        "drain",
        0,
    )
    assert running.stop() == [], "no client failed while the backend drained"
    assert lb.stop() == 0


def test_disable_takes_effect_for_the_next_connection_and_enable_restores(
    netkit_server, named, traffic
):
    a, b = named("a"), named("b")
    lb = netkit_server("lb", ":0", a.address, b.address, "--api", ":0")
    api = lb.listening["api"]
    running = traffic(lb.address)
    status, row = call(api, "PATCH", f"/backends/{a.address}", {"enabled": False})
    assert (status, row["admin"]) == (200, "maint")
    assert [who(lb.address) for _ in range(4)] == ["b"] * 4
    status, row = call(api, "POST", f"/backends/{a.address}", {"state": "ready"})
    assert (status, row["admin"]) == (200, "ready")
    # Round robin alternates, and the traffic running beside takes turns too: in lockstep it
    # can take every one of a's turns for a while, so wait for a instead of counting turns.
    deadline = time.monotonic() + 15
    while who(lb.address) != "a":
        assert time.monotonic() < deadline, "a never came back after enable"
    assert running.stop() == []
    assert lb.stop() == 0
    states = [(e["admin"], e["previous"]) for e in lb.events if e["event"] == "backend_state"]
    assert states == [("maint", "ready"), ("ready", "maint")]


def test_weight_change_changes_the_distribution(netkit_server, named):
    a, b = named("a"), named("b")
    lb = netkit_server("lb", ":0", a.address, b.address, "--api", ":0")
    api = lb.listening["api"]
    assert collections.Counter(who(lb.address) for _ in range(8)) == {"a": 4, "b": 4}
    status, row = call(api, "PATCH", f"/backends/{a.address}", {"weight": 3})
    assert (status, row["weight"]) == (200, 3)
    assert collections.Counter(who(lb.address) for _ in range(8)) == {"a": 6, "b": 2}
    event = lb.wait_for("backend_weight")
    assert (event["weight"], event["previous"]) == (3, 1)
    assert lb.stop() == 0


def test_add_and_remove_a_backend_under_traffic(netkit_server, named, traffic):
    a, b = named("a"), named("b")
    lb = netkit_server("lb", ":0", a.address, "--api", ":0")
    api = lb.listening["api"]
    running = traffic(lb.address)
    status, row = call(api, "POST", "/backends", {"backend": f"{b.address},weight=2"})
    assert (status, row["backend"], row["weight"]) == (201, b.address, 2)
    assert lb.wait_for("backend_added")["spec"] == f"{b.address},weight=2"
    assert "b" in {who(lb.address) for _ in range(6)}
    status, error = call(api, "POST", "/backends", {"backend": b.address})
    assert (status, error["status"]) == (409, 409)
    held = Held(lb.address)
    while held.backend != "a":  # bounded by the round robin: a turns up within 3 clients
        held.close()
        held = Held(lb.address)
    status, _ = call(api, "DELETE", f"/backends/{a.address}")
    assert status == 204
    assert lb.wait_for("backend_removed")["active"] >= 1
    assert [who(lb.address) for _ in range(4)] == ["b"] * 4
    assert held.echo(b"bye") == b"bye", "a removed backend's connection finishes"
    held.close()
    drained = lb.wait_for("backend_drained")
    assert (drained["backend"], drained["removed"]) == (a.address, True)
    status, listing = call(api, "GET", "/backends")
    assert [r["backend"] for r in listing["backends"]] == [b.address]
    status, error = call(api, "DELETE", f"/backends/{b.address}")
    assert status == 409 and "last primary" in error["error"]
    assert running.stop() == []
    assert lb.stop() == 0


def test_api_errors_are_http_statuses_with_a_json_body(netkit_server, named):
    a = named("a")
    lb = netkit_server("lb", ":0", a.address, "--api", ":0")
    api = lb.listening["api"]
    assert call(api, "GET", "/backends/127.0.0.1:1")[0] == 404
    assert call(api, "PATCH", f"/backends/{a.address}", {"weight": 0})[0] == 400
    assert call(api, "PATCH", f"/backends/{a.address}", {"state": "off"})[0] == 400
    assert call(api, "PATCH", f"/backends/{a.address}", {"colour": "red"})[0] == 400
    assert call(api, "POST", "/backends", {"backend": "nowhere"})[0] == 400
    status, error = call(api, "PUT", "/backends")
    assert (status, error["status"]) == (405, 405)
    assert call(api, "GET", "/nothing")[0] == 404
    assert call(api, "GET", "/stats")[0] == 200, "the API serves the metrics too"
    assert lb.stop() == 0


def test_workers_metrics_and_api_cover_every_worker(netkit_server, named):
    a, b = named("a"), named("b")
    lb = netkit_server(
        "lb", ":0", a.address, b.address, "--workers", "2", "--metrics", ":0", "--api", ":0"
    )
    for _ in range(8):  # the kernel spreads them over the two workers
        exchange(lb.address)
    closed = [lb.wait_for("closed") for _ in range(8)]
    m = scrape(lb.listening["metrics"])
    front = (("proxy", "lb"),)
    assert m[("haproxy_frontend_sessions_total", front)] == 8
    assert m[("haproxy_frontend_bytes_in_total", front)] == 8 * len(PAYLOAD)
    assert m[("haproxy_backend_sessions_total", front)] == 8
    per_server = collections.Counter(event["upstream"] for event in closed)
    for backend in (a, b):
        server = (("proxy", "lb"), ("server", backend.address))
        assert m[("haproxy_server_sessions_total", server)] == per_server[backend.address]
        assert (
            m[("netkit_server_connect_time_seconds_count", server)] == per_server[backend.address]
        )
    api = lb.listening["api"]
    status, row = call(api, "PATCH", f"/backends/{a.address}", {"weight": 3})
    assert (status, row["weight"]) == (200, 3)
    weights = [lb.wait_for("backend_weight") for _ in range(2)]
    assert [w["weight"] for w in weights] == [3, 3], "each worker made the change"
    status, listing = call(api, "GET", "/backends")
    assert [(r["backend"], r["weight"]) for r in listing["backends"]] == [
        (a.address, 3),
        (b.address, 1),
    ]
    assert sum(r["total"] for r in listing["backends"]) == 8
    assert call(api, "GET", "/backends/127.0.0.1:1")[0] == 404
    assert call(api, "PATCH", f"/backends/{a.address}", {"weight": 0})[0] == 400
    assert lb.stop() == 0


def test_proxy_metrics_cover_every_proxy_its_api_made(netkit_server, named):
    up = named("up")
    proxy = netkit_server(
        "proxy", ":0", up.address, "--api", ":0", "--metrics", ":0", "--name", "web"
    )
    status, made = call(
        proxy.listening["api"],
        "POST",
        "/proxies",
        {"name": "second", "listen": "127.0.0.1:0", "upstream": up.address},
    )
    assert status == 201
    assert exchange(proxy.address) == "up"
    for _ in range(2):
        assert exchange(made["listen"]) == "up"
    for _ in range(3):
        proxy.wait_for("closed")
    m = scrape(proxy.listening["metrics"])
    assert m[("haproxy_frontend_sessions_total", (("proxy", "web"),))] == 1
    assert m[("haproxy_frontend_sessions_total", (("proxy", "second"),))] == 2
    second = (("proxy", "second"), ("server", up.address))
    assert m[("haproxy_server_bytes_in_total", second)] == 2 * len(PAYLOAD)
    assert proxy.stop() == 0


def test_metrics_on_a_unix_socket_is_removed_at_exit(netkit_server, named, tmp_path):
    up = named("up")
    path = tmp_path / "metrics.sock"
    proxy = netkit_server("proxy", ":0", up.address, "--metrics", f"unix:{path}")
    assert proxy.listening["metrics"] == f"unix:{path}"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["proxies"][0]["name"] == "proxy"
    assert proxy.stop() == 0
    assert not path.exists()

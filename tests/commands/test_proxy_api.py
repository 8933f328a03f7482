"""proxy --api end to end: toxiproxy's own clients (Python, Node) and plain HTTP drive netkit.

The server runs as a subprocess, as a test suite would start it (``netkit proxy --api
127.0.0.1:0``, the drop-in for toxiproxy-server); an echo server in a thread is the upstream.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.commands.conftest import ServerProcess, assert_one_line_error, run_netkit
from tests.commands.test_proxy import connect, host_port

NODE_PROJECT = Path(__file__).with_name("toxiproxy_node")


@pytest.fixture
def echo() -> Iterator[str]:
    """An echo server on loopback (a thread per connection); yields its address."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture
def api(netkit_server: Any) -> ServerProcess:
    """``netkit proxy --api 127.0.0.1:0``: toxiproxy-server's drop-in, no proxy yet."""
    server: ServerProcess = netkit_server("proxy", "--api", "127.0.0.1:0")
    return server


def request(
    address: str, method: str, path: str, body: Any = None, *, raw: bytes | None = None
) -> tuple[int, Any]:
    """One HTTP request to the API; the status and the body parsed as JSON (or None)."""
    conn = http.client.HTTPConnection(*host_port(address), timeout=10)
    try:
        payload = raw if raw is not None else None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


def round_trip(address: str, size: int = 4) -> float:
    """Milliseconds for ``size`` bytes to reach the echo server through ``address`` and back."""
    with connect(address) as sock:
        return timed_echo(sock, size)


def timed_echo(sock: socket.socket, size: int = 4) -> float:
    start = time.perf_counter()
    sock.sendall(b"x" * size)
    got = 0
    while got < size:
        chunk = sock.recv(65536)
        assert chunk, "the proxy closed the connection"
        got += len(chunk)
    return (time.perf_counter() - start) * 1000


def refused(address: str) -> bool:
    try:
        with connect(address, timeout=5):
            return False
    except ConnectionRefusedError:
        return True


# --- the Python client -------------------------------------------------------------------


def test_toxiproxy_python_drives_a_proxy_through_its_life(api: ServerProcess, echo: str) -> None:
    from toxiproxy import Toxiproxy
    from toxiproxy.api import APIConsumer

    host, port = host_port(api.address)
    server = Toxiproxy()
    server.update_api_consumer(host, port)
    assert server.running()
    assert json.loads(server.version())["version"]
    proxy = server.create(upstream=echo, name="pg")
    assert (proxy.name, proxy.upstream, proxy.enabled) == ("pg", echo, True)
    assert proxy.listen.startswith("127.0.0.1:") and not proxy.listen.endswith(":0")
    assert api.wait_for("proxy_created")["proxy"] == "pg"
    assert round_trip(proxy.listen) < 50

    proxy.add_toxic(type="latency", attributes={"latency": 100})
    assert api.wait_for("fault_added")["name"] == "latency_downstream"
    toxic = proxy.toxics()["latency_downstream"]
    assert (toxic.type, toxic.stream, toxic.attributes) == (
        "latency",
        "downstream",
        {"latency": 100, "jitter": 0},
    )
    assert 95 <= round_trip(proxy.listen) < 300

    # toxiproxy-python has no update call: its API consumer posts the change.
    APIConsumer.post("/proxies/pg/toxics/latency_downstream", json={"attributes": {"latency": 250}})
    assert proxy.get_toxic("latency_downstream").attributes["latency"] == 250
    assert 245 <= round_trip(proxy.listen) < 500

    proxy.destroy_toxic("latency_downstream")
    assert proxy.toxics() == {}
    assert round_trip(proxy.listen) < 50

    with proxy.down():
        assert refused(proxy.listen)
        assert server.get_proxy("pg").enabled is False
    assert round_trip(proxy.listen) < 50  # enabled again, on the same address

    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
    proxy.disable()
    assert server.reset()
    assert server.get_proxy("pg").enabled and proxy.toxics() == {}
    assert round_trip(proxy.listen) < 50
    server.destroy(proxy)
    assert server.proxies() == {}
    assert refused(proxy.listen)


def test_a_latency_toxic_reaches_connections_already_open(api: ServerProcess, echo: str) -> None:
    status, proxy = request(api.address, "POST", "/proxies", {"name": "p", "upstream": echo})
    assert status == 201
    with connect(proxy["listen"]) as sock:
        assert timed_echo(sock) < 50
        status, _ = request(
            api.address,
            "POST",
            "/proxies/p/toxics",
            {"type": "latency", "stream": "upstream", "attributes": {"latency": 150}},
        )
        assert status == 200
        assert 145 <= timed_echo(sock) < 400
        assert request(api.address, "DELETE", "/proxies/p/toxics/latency_upstream")[0] == 204
        assert timed_echo(sock) < 50


# --- the Node client ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_client() -> Path:
    """toxiproxy-node-client, installed from tests/commands/toxiproxy_node by ``npm ci`` into a
    cache directory (once per lock file); the directory holds the scenario to run."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm and node are not installed: the Node toxiproxy client cannot run")
    lock = (NODE_PROJECT / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    target = cache / "netkit-tests" / f"toxiproxy-node-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (target / "node_modules" / "toxiproxy-node-client").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NODE_PROJECT / name, target / name)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    shutil.copy(NODE_PROJECT / "scenario.js", target / "scenario.js")
    return target


@pytest.mark.timeout(300)  # the first run installs the client with npm ci
def test_toxiproxy_node_client_drives_a_proxy_through_its_life(
    api: ServerProcess, echo: str, node_client: Path
) -> None:
    done = subprocess.run(
        ["node", "scenario.js", f"http://{api.address}", echo],
        cwd=node_client,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["version"]
    assert seen["created"]["name"] == "node" and seen["created"]["enabled"] is True
    assert seen["baseline"] < 50
    assert seen["toxic"] == {
        "attributes": {"latency": 100, "jitter": 0},
        "name": "lag",
        "stream": "downstream",
        "toxicity": 1,
        "type": "latency",
    }
    assert 95 <= seen["withLatency"] < 300
    assert seen["updated"]["attributes"] == {"latency": 200, "jitter": 0}
    assert seen["fetched"] == seen["updated"]
    assert 195 <= seen["withMoreLatency"] < 400
    assert seen["afterRemove"] < 50
    assert seen["disabled"]["enabled"] is False
    assert seen["whileDisabled"] == "ECONNREFUSED"
    assert seen["afterReset"]["enabled"] is True
    assert seen["afterResetConnect"] == "connected"
    assert seen["remaining"] == []
    assert "404" in seen["getRemoved"]


# --- plain HTTP: errors --------------------------------------------------------------------


def test_errors_have_toxiproxys_statuses_and_bodies(api: ServerProcess, echo: str) -> None:
    address = api.address
    assert request(address, "POST", "/proxies", {"name": "a", "upstream": echo})[0] == 201
    _, first = request(address, "GET", "/proxies/a")
    cases = [
        (("POST", "/proxies", {"name": "a", "upstream": echo}), 409, "proxy already exists"),
        (("GET", "/proxies/zz", None), 404, "proxy not found"),
        (("DELETE", "/proxies/zz", None), 404, "proxy not found"),
        (("POST", "/proxies/a/toxics", {"type": "earthquake"}), 400, "invalid toxic type"),
        (("GET", "/proxies/a/toxics/zz", None), 404, "toxic not found"),
        (("DELETE", "/proxies/a/toxics/zz", None), 404, "toxic not found"),
        (("POST", "/proxies", {"upstream": echo}), 400, "missing required field: name"),
    ]
    for (method, path, body), status, message in cases:
        assert request(address, method, path, body) == (
            status,
            {"error": message, "status": status},
        )
    toxic = {"type": "latency", "name": "l"}
    assert request(address, "POST", "/proxies/a/toxics", toxic)[0] == 200
    assert request(address, "POST", "/proxies/a/toxics", toxic) == (
        409,
        {"error": "toxic already exists", "status": 409},
    )
    for raw in (b"{", b'{"name": "b", "upstream": ', b"\xff"):
        status, body = request(address, "POST", "/proxies", raw=raw)
        assert status == 400 and body["error"].startswith("bad request body")
    status, body = request(address, "POST", "/proxies/a/toxics", raw=b"[1,2")
    assert status == 400 and body["status"] == 400
    # Nothing crashed, the proxy still relays, and its toxic is still there.
    assert round_trip(first["listen"]) < 50
    assert [t["name"] for t in request(address, "GET", "/proxies/a/toxics")[1]] == ["l"]


def test_a_proxy_that_cannot_listen_is_a_500_and_the_api_goes_on(
    api: ServerProcess, echo: str
) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        status, body = request(
            api.address, "POST", "/proxies", {"name": "x", "upstream": echo, "listen": listen}
        )
        assert status == 500 and body["status"] == 500 and "in use" in body["error"]
        assert request(api.address, "GET", "/proxies") == (200, {})
    finally:
        taken.close()


def test_populate_creates_keeps_and_replaces_proxies(api: ServerProcess, echo: str) -> None:
    body = [{"name": "one", "upstream": echo}, {"name": "two", "upstream": echo, "enabled": False}]
    status, created = request(api.address, "POST", "/populate", body)
    assert status == 201
    assert [(p["name"], p["enabled"]) for p in created["proxies"]] == [
        ("one", True),
        ("two", False),
    ]
    one = created["proxies"][0]
    request(api.address, "POST", "/proxies/one/toxics", {"type": "latency"})
    # Same listen and upstream: kept, toxic and all.
    again = [{"name": "one", "upstream": echo, "listen": one["listen"]}]
    status, kept = request(api.address, "POST", "/populate", again)
    assert status == 201 and len(kept["proxies"][0]["toxics"]) == 1
    status, error = request(api.address, "POST", "/populate", [{"name": "three"}])
    assert (status, error["error"]) == (400, "missing required field: upstream at proxy 1")
    assert sorted(request(api.address, "GET", "/proxies")[1]) == ["one", "two"]


# --- the command line ----------------------------------------------------------------------


def test_the_proxy_from_the_command_line_is_in_the_api(
    netkit_server: Any, echo: str, tmp_path: Path
) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "extra", "upstream": echo}]))
    server = netkit_server(
        "proxy", "127.0.0.1:0", echo, "--api", ":0", "--name", "main", "--latency", "20",
        "--config", str(config),
    )  # fmt: skip
    api_address = server.listening["api"]
    assert api_address.startswith("127.0.0.1:") and not api_address.endswith(":0")
    status, proxies = request(api_address, "GET", "/proxies")
    assert status == 200 and sorted(proxies) == ["extra", "main"]
    main = proxies["main"]
    assert main["listen"] == server.address and main["upstream"] == echo
    assert main["toxics"] == [
        {
            "attributes": {"latency": 20, "jitter": 0},
            "name": "latency",
            "type": "latency",
            "stream": "both",
            "toxicity": 1.0,
        }
    ]
    assert round_trip(server.address) >= 38  # 20 ms each way
    assert request(api_address, "DELETE", "/proxies/main/toxics/latency")[0] == 204
    # With the toxic every round trip takes 40 ms at least; the fastest of five without it
    # (one may wait for a CPU on a loaded machine) shows it gone.
    assert min(round_trip(server.address) for _ in range(5)) < 30
    assert server.stop() == 0
    assert server.event("summary")["connections"] == 6  # the round trips' own


def test_a_proxy_enabled_again_listens_as_it_did_at_start(
    netkit_server: Any, echo: str, tmp_path: Path
) -> None:
    # Disabled and enabled through the API, the command-line proxy's Unix socket comes back
    # with the --socket-mode it was started with (not the default 0660).
    path = tmp_path / "proxy.sock"
    server = netkit_server(
        "proxy", f"unix:{path}", echo, "--api", ":0", "--name", "main", "--socket-mode", "600"
    )
    api_address = server.listening["api"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert request(api_address, "POST", "/proxies/main", {"enabled": False})[0] == 200
    assert not path.exists()
    assert request(api_address, "POST", "/proxies/main", {"enabled": True})[0] == 200
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("127.0.0.1:0",), "LISTEN and UPSTREAM"),
        ((), "give LISTEN and UPSTREAM"),
        (("--api", ":0", "--latency", "5"), "apply to LISTEN"),
        (("127.0.0.1:0", "127.0.0.1:1", "--config", "x.json"), "--config needs --api"),
        (("127.0.0.1:0", "127.0.0.1:1", "--api", ":0", "--workers", "2"), "--workers"),
        (("--api", ":0", "--config", "/nonexistent.json"), "--config /nonexistent.json"),
        (("udp://127.0.0.1:0", "udp://127.0.0.1:1", "--api", ":0"), "not a UDP relay"),
    ],
)
def test_bad_api_command_lines_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    done = run_netkit("proxy", *args)
    assert done.returncode == 2
    assert_one_line_error(done.stderr)
    assert message in done.stderr

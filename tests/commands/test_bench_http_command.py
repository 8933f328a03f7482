"""End-to-end tests of ``netkit bench http://...``: the HTTP flags, per-status counts in the
summary, ``--fail-if status_5xx>0``, and a server that answers garbage (exit 1)."""

from __future__ import annotations

import contextlib
import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from netkit.status import ExitStatus
from tests.commands.conftest import assert_one_line_error, json_lines, run_netkit

pytestmark = pytest.mark.timeout(60)

SHORT = ("--duration", "0.4s", "--workers", "1", "--connections", "2", "--json")


def summary(stdout: str) -> dict[str, Any]:
    (record,) = [e for e in json_lines(stdout) if e["event"] == "summary"]
    return record


class Handler(http.server.BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1: /ok answers 200, /fail 503 and /echo the request body."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        data = self.rfile.read(length) if length else b""
        if len(Handler.seen) < 3:
            Handler.seen.append((self.command, self.headers.get("X-Token", ""), data))
        status = 503 if self.path == "/fail" else 200
        body = data if self.path == "/echo" else b"fine"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


class Garbage(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while self.request.recv(65536):
                self.request.sendall(b"NOT HTTP AT ALL\r\n\r\n")


@contextlib.contextmanager
def serving(handler: Any) -> Iterator[int]:
    cls = http.server.ThreadingHTTPServer if handler is Handler else socketserver.ThreadingTCPServer
    with cls(("127.0.0.1", 0), handler) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()


def test_http_get_counts_statuses_and_passes() -> None:
    with serving(Handler) as port:
        proc = run_netkit("bench", f"http://127.0.0.1:{port}/ok", *SHORT)
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["transport"] == "http" and s["scenario"] == "request"
    assert s["requests"] > 10
    assert s["statuses"] == {"200": s["requests"]}
    assert s["connects"] == 2


def test_method_headers_body_file_and_body_check(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"k": 1}')
    Handler.seen.clear()
    with serving(Handler) as port:
        proc = run_netkit(
            "bench",
            f"http://127.0.0.1:{port}/echo",
            *SHORT,
            "-m",
            "POST",
            "-H",
            "X-Token: abc",
            "--body-file",
            str(body),
            "--expect-body",
            '"k"',
        )
        wrong = run_netkit(
            "bench", f"http://127.0.0.1:{port}/ok", *SHORT, "--expect-body", "missing"
        )
    assert proc.returncode == 0, proc.stderr
    assert Handler.seen[0] == ("POST", "abc", b'{"k": 1}')
    assert wrong.returncode == 1
    assert summary(wrong.stdout)["errors"]["mismatch"] > 0


def test_statuses_fail_if_and_expect_status() -> None:
    with serving(Handler) as port:
        url = f"http://127.0.0.1:{port}/fail"
        gated = run_netkit(
            "bench", url, *SHORT, "--expect-status", "2xx,503", "--fail-if", "status_5xx>0"
        )
        accepted = run_netkit("bench", url, *SHORT, "--expect-status", "503")
        default = run_netkit("bench", url, *SHORT)
        held = run_netkit(
            "bench", f"http://127.0.0.1:{port}/ok", *SHORT, "--fail-if", "status_5xx>0"
        )
    assert gated.returncode == 1
    assert "status_5xx" in gated.stderr
    assert held.returncode == 0, held.stderr  # the same gate, held: no 5xx from /ok
    assert set(summary(held.stdout)["statuses"]) == {"200"}
    assert accepted.returncode == 0, accepted.stderr
    s = summary(default.stdout)
    assert default.returncode == 1  # no request answered as expected
    assert s["errors"]["status"] == s["statuses"]["503"] > 0


def test_progress_events_count_answers_by_status_class() -> None:
    with serving(Handler) as port:
        proc = run_netkit(
            "bench", f"http://127.0.0.1:{port}/fail", *SHORT[2:], "--duration", "1.3s"
        )
    assert proc.returncode == 1
    progress = [e for e in json_lines(proc.stdout) if e["event"] == "progress"]
    assert progress, proc.stdout  # one a second
    assert set(progress[-1]["statuses"]) == {"5xx"} and progress[-1]["statuses"]["5xx"] > 0
    assert progress[-1]["errors"] >= progress[-1]["statuses"]["5xx"]


def test_garbage_is_errors_and_exit_1() -> None:
    with serving(Garbage) as port:
        proc = run_netkit("bench", f"http://127.0.0.1:{port}/", *SHORT)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr)
    s = summary(proc.stdout)
    assert s["requests"] == 0 and s["errors"]["protocol"] > 0


def test_bad_http_flags_are_usage_errors() -> None:
    for args in (
        ("http://127.0.0.1:1/", "-H", "no colon"),
        ("http://127.0.0.1:1/", "-m", "HEAD", "--expect-body", "x"),
        ("http://127.0.0.1:1/", "--expect-status", "6xx"),
        ("http://127.0.0.1:1/", "--body", "a", "--body-file", "/dev/null"),
        ("127.0.0.1:1", "-m", "POST"),
        ("http://127.0.0.1:1/", "--scenario", "stream"),
        ("http://127.0.0.1:1/", "--size", "100"),
    ):
        proc = run_netkit("bench", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert_one_line_error(proc.stderr)


def test_json_summary_round_trips(tmp_path: Path) -> None:
    with serving(Handler) as port:
        proc = run_netkit("bench", f"http://127.0.0.1:{port}/ok", *SHORT)
    saved = tmp_path / "a.json"
    saved.write_text(proc.stdout)
    merged = run_netkit("bench", "merge", str(saved), "--json")
    assert merged.returncode == 0, merged.stderr
    assert (
        json.loads(merged.stdout.splitlines()[-1])["statuses"] == summary(proc.stdout)["statuses"]
    )


def test_https_with_cacert(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        server.daemon_threads = True
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"https://127.0.0.1:{server.server_address[1]}/ok"
            trusted = run_netkit("bench", url, *SHORT, "--cacert", str(tmp_path / "ca.pem"))
            untrusted = run_netkit("bench", url, *SHORT)
        finally:
            server.shutdown()
    assert trusted.returncode == 0, trusted.stderr
    s = summary(trusted.stdout)
    assert s["transport"] == "https" and s["statuses"]["200"] == s["requests"] > 0
    assert untrusted.returncode == ExitStatus.TLS_ERROR
    assert "not trusted" in untrusted.stderr

"""``netkit bench`` against a real nginx (nginx-light; ``.ci/run`` installs it): keep-alive
reuse, exact status counts, a 404 path failing the run, pipelining, and ``http+unix``.

nginx cannot listen on port 0, so the test binds both listeners itself (127.0.0.1 port 0 and
a Unix socket in tmp_path) and hands them to nginx as inherited sockets (the ``NGINX``
environment variable nginx reads for its binary upgrade: ``"fd;fd;"``; the ``listen``
lines name the same addresses). No port is guessed, and no start-up race is waited out: a
connection made before nginx accepts waits in the listen queue.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.commands.conftest import assert_one_line_error, run_netkit
from tests.commands.test_bench_http_command import summary

pytestmark = pytest.mark.timeout(60)

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
needs_nginx = pytest.mark.skipif(
    NGINX is None,
    reason="nginx is not installed (.ci/run installs it: apt-get install nginx-light)",
)

BODY = b"hello from nginx\n"

# keepalive_requests: nginx closes a keep-alive connection after 1000 requests by default,
# which would make bench open more connections than it keeps. As root, workers would run as
# nobody and could not read tmp_path (0700): `user root` keeps them as the master.
CONFIG = """\
daemon off;
worker_processes 1;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen unix:{sock};
        root {d}/www;
    }}
}}
"""


@dataclass
class Nginx:
    port: int
    sock: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    """nginx serving ``/small.txt`` (:data:`BODY`) on 127.0.0.1 and on a Unix socket."""
    assert NGINX is not None
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "small.txt").write_bytes(BODY)
    sock = tmp_path / "nginx.sock"
    with contextlib.ExitStack() as stack:
        tcp = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        unix = stack.enter_context(socket.socket(socket.AF_UNIX))
        unix.bind(str(sock))
        unix.listen(128)
        port = tcp.getsockname()[1]
        user = "user root;" if os.geteuid() == 0 else ""
        config = tmp_path / "nginx.conf"
        config.write_text(CONFIG.format(d=tmp_path, user=user, port=port, sock=sock))
        fds = [tcp.fileno(), unix.fileno()]
        proc = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config)],
            pass_fds=fds,
            env={**os.environ, "NGINX": "".join(f"{fd};" for fd in fds)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        yield Nginx(port, sock)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = (tmp_path / "error.log").read_text()
    assert "[emerg]" not in log and "[alert]" not in log, log


def bench(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_netkit("bench", url, "--workers", "1", "--json", *args)


@needs_nginx
@pytest.mark.parametrize("pipeline", ["1", "8"])
def test_keep_alive_connections_are_reused_and_statuses_exact(nginx: Nginx, pipeline: str) -> None:
    proc = bench(
        f"{nginx.url}/small.txt",
        *("-c", "4", "--requests", "2000", "--pipeline", pipeline),
        *("--expect-body", BODY.decode().strip()),
    )
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["requests"] == 2000
    assert s["statuses"] == {"200": 2000}
    assert s["connects"] == 4  # one per connection slot: every request on a kept-alive one
    assert s["errors"] == {"total": 0}


@needs_nginx
def test_a_missing_path_is_404_errors_and_exit_1(nginx: Nginx) -> None:
    proc = bench(f"{nginx.url}/missing", "-c", "2", "--requests", "300")
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr)
    s = summary(proc.stdout)
    assert s["statuses"] == {"404": 300}
    assert s["errors"] == {"total": 300, "status": 300}
    assert s["requests"] == 0
    assert s["connects"] == 2  # nginx keeps the connection open after a 404


@needs_nginx
def test_http_unix(nginx: Nginx) -> None:
    proc = bench(f"http+unix://{nginx.sock}:/small.txt", "-c", "3", "--requests", "900")
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["transport"] == "http+unix" and s["scenario"] == "request"
    assert s["statuses"] == {"200": 900}
    assert s["connects"] == 3


@needs_nginx
def test_head_requests_end_with_the_head(nginx: Nginx) -> None:
    # nginx answers HEAD with the file's Content-Length (17) and no body: were the reader to
    # wait for those 17 bytes, the next heads would be taken for a body and the run hang.
    proc = bench(f"{nginx.url}/small.txt", "-m", "HEAD", "-c", "2", "--requests", "1000",
                 "--pipeline", "4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["statuses"] == {"200": 1000} and s["connects"] == 2
    assert s["bytes_received"] > 1000 * 150 and s["errors"] == {"total": 0}

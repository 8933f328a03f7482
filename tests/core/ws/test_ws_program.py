"""core/ws/program.py: lines, websocketd's environment, and the close a process's end gets."""

from __future__ import annotations

import pytest

from netkit.core.ws.events import Request
from netkit.core.ws.http import Headers
from netkit.core.ws.program import (
    Framing,
    LineSplitter,
    Program,
    exit_close,
    program_environment,
    split_host,
)


def test_lines_come_out_whole_without_their_ends():
    lines = LineSplitter(100)
    assert lines.feed(b"one\ntw") == [b"one"]
    assert lines.feed(b"o\r\nthree\n\n") == [b"two", b"three", b""]
    assert lines.feed(b"tail\r") == []
    assert lines.end() == b"tail"
    assert lines.end() is None


def test_a_line_longer_than_the_limit_comes_out_in_pieces():
    lines = LineSplitter(4)
    assert lines.feed(b"abcdefghij") == [b"abcd", b"efgh"]  # "ij" waits for more
    assert lines.feed(b"k\nxy\n") == [b"ijk", b"xy"]
    assert lines.feed(b"123456789\n") == [b"1234", b"5678", b"9"]
    with pytest.raises(ValueError):
        LineSplitter(0)


@pytest.mark.parametrize("max_line", [1000, 4, 3])
def test_a_stream_split_in_two_at_every_point_gives_the_same_lines(max_line):
    # A pipe hands over whatever it holds: a line, or its \r\n, may end in either read.
    stream = b"one\r\ntwo\n\nabcdefghij\r\nxy\r\r\n\n12345678\nz"

    def lines_of(*chunks: bytes) -> list[bytes]:
        splitter = LineSplitter(max_line)
        out = [line for chunk in chunks for line in splitter.feed(chunk)]
        tail = splitter.end()
        return out + ([tail] if tail is not None else [])

    whole = lines_of(stream)
    if max_line == 1000:
        assert whole == [b"one", b"two", b"", b"abcdefghij", b"xy\r", b"", b"12345678", b"z"]
    if max_line == 4:  # pieces of 4; a line that fills its last piece ends with no empty one
        assert whole == [
            b"one", b"two", b"", b"abcd", b"efgh", b"ij", b"xy\r", b"", b"1234", b"5678", b"z"
        ]  # fmt: skip
    for a in range(len(stream) + 1):
        assert lines_of(stream[:a], stream[a:]) == whole, a
        for b in range(a, len(stream) + 1):
            assert lines_of(stream[:a], stream[a:b], stream[b:]) == whole, (a, b)
    # The stream ending without a newline, on a piece's end and with a \r after it.
    for tail in (b"abcdefghijkl", b"abcdefghijkl\r", b"abc\r"):
        ended = lines_of(tail)
        assert all(ended) and b"".join(ended) == tail.rstrip(b"\r"), ended
        for a in range(len(tail) + 1):
            assert lines_of(tail[:a], tail[a:]) == ended, (tail, a)


def test_framing_and_program():
    assert Framing.LINES.line_end == b"\n" and Framing.BINARY.line_end == b""
    assert Program("cat | sed -u s/a/b/").argv == ("/bin/sh", "-c", "cat | sed -u s/a/b/")


@pytest.mark.parametrize(
    ("host", "secure", "expected"),
    [
        ("example.com:8080", False, ("example.com", "8080")),
        ("example.com", False, ("example.com", "80")),
        ("example.com", True, ("example.com", "443")),
        ("[::1]:9000", False, ("::1", "9000")),
        ("[::1]", True, ("::1", "443")),
    ],
)
def test_server_name_and_port_come_from_the_host_header(host, secure, expected):
    assert split_host(host, secure) == expected


def test_the_environment_is_websocketds():
    request = Request(
        "GET",
        "/app/x?a=1&b=2",
        "HTTP/1.1",
        Headers(
            [
                ("Host", "example.com:8080"),
                ("X-Token", "s3cret"),
                ("Accept", "a"),
                ("accept", " b\r\n"),
                ("Proxy", "http://evil.example/"),
            ]
        ),
    )
    env = program_environment(
        request,
        remote=("127.0.0.1", 40000),
        secure=True,
        unique_id="abc",
        server_software="netkit/1",
        parent={"PATH": "/bin", "HOME": "/root", "AWS_SECRET": "x"},
    )
    assert env["PATH"] == "/bin" and "HOME" not in env and "AWS_SECRET" not in env
    assert env["REMOTE_ADDR"] == env["REMOTE_HOST"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == "40000"
    assert env["REQUEST_URI"] == "/app/x?a=1&b=2"
    assert env["QUERY_STRING"] == "a=1&b=2"
    assert env["PATH_INFO"] == env["PATH_TRANSLATED"] == "/app/x"
    assert env["SCRIPT_NAME"] == "/"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8080")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["REQUEST_METHOD"] == "GET"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1" and env["SERVER_SOFTWARE"] == "netkit/1"
    assert env["UNIQUE_ID"] == "abc" and env["HTTPS"] == "on"
    assert env["HTTP_X_TOKEN"] == "s3cret" and env["HTTP_HOST"] == "example.com:8080"
    assert env["HTTP_ACCEPT"] == "a, b"  # repeated headers joined, newlines gone
    assert "HTTP_PROXY" not in env  # httpoxy
    assert all(env[k] == "" for k in ("AUTH_TYPE", "CONTENT_TYPE", "REMOTE_USER"))


def test_a_unix_socket_client_has_no_address_and_plain_http_no_https():
    request = Request("GET", "/", "HTTP/1.1", Headers())
    env = program_environment(
        request, remote=None, secure=False, unique_id="u", server_software="s", parent={}
    )
    assert env["REMOTE_ADDR"] == env["REMOTE_PORT"] == env["SERVER_NAME"] == ""
    assert "HTTPS" not in env and env["QUERY_STRING"] == ""


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, (1000, "")),
        (3, (1011, "exit status 3")),
        (-15, (1011, "killed by SIGTERM")),
        (-9, (1011, "killed by SIGKILL")),
    ],
)
def test_a_process_end_is_worded_as_a_close(status, expected):
    assert exit_close(status) == expected

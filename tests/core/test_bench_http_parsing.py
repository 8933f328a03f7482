"""Tests for netkit.core.bench.http (the request, the status check, the response reader fed in
every split), HTTP URLs, and the HTTP parts of results and thresholds."""

from __future__ import annotations

import pytest

from netkit.core.addresses import HTTPURL, is_http_url, parse_http_url
from netkit.core.bench.http import (
    MAX_HEAD,
    HTTPLoad,
    HTTPRequest,
    Response,
    ResponseReader,
    StatusCheck,
    parse_header,
)
from netkit.core.bench.plan import Scenario
from netkit.core.bench.result import BenchResult, merge_results
from netkit.core.bench.thresholds import parse_threshold
from netkit.errors import ConfigError, EndpointError, PeerProtocolError

pytestmark = pytest.mark.timeout(30)

# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url", "host_header"),
    [
        (
            "http://127.0.0.1:8080/x?y=1",
            HTTPURL(False, "127.0.0.1", 8080, "/x?y=1"),
            "127.0.0.1:8080",
        ),
        ("https://example.test", HTTPURL(True, "example.test", 443, "/"), "example.test"),
        ("http://[::1]/#frag", HTTPURL(False, "::1", 80, "/"), "[::1]"),
        (
            "http+unix:///run/docker.sock:/v1.43/info",
            HTTPURL(False, "localhost", 0, "/v1.43/info", "/run/docker.sock"),
            "localhost",
        ),
    ],
)
def test_http_urls(text: str, url: HTTPURL, host_header: str) -> None:
    assert is_http_url(text)
    assert parse_http_url(text) == url
    assert url.host_header == host_header
    assert parse_http_url(str(url)) == url


@pytest.mark.parametrize("text", ["ws://h/", "127.0.0.1:80", "http://", "http://u:p@h/"])
def test_not_http_urls(text: str) -> None:
    with pytest.raises(EndpointError):
        parse_http_url(text)


# --- the request -----------------------------------------------------------------------------


def test_a_get_request_in_bytes() -> None:
    assert HTTPRequest("GET", "/a?b=1", "h:8080").serialize() == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: h:8080\r\nUser-Agent: netkit-bench\r\n\r\n"
    )


def test_a_post_with_headers_and_body() -> None:
    req = HTTPRequest("POST", "/", "h", (("Host", "other"), ("X-A", "1")), b"{}")
    assert req.serialize() == (
        b"POST / HTTP/1.1\r\nUser-Agent: netkit-bench\r\nHost: other\r\nX-A: 1\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    assert HTTPRequest("PUT", "/", "h").serialize().endswith(b"Content-Length: 0\r\n\r\n")


def test_header_parsing() -> None:
    assert parse_header("Authorization:  Bearer x ") == ("Authorization", "Bearer x")
    for bad in ("no colon", "Bad Name: x", "Content-Length: 3", ": x"):
        with pytest.raises(ConfigError):
            parse_header(bad)


def test_methods() -> None:
    with pytest.raises(ConfigError, match="not an HTTP method"):
        HTTPLoad(method="GE T")
    assert HTTPLoad(method="HEAD").head_only and not HTTPLoad(method="head").head_only


def test_status_checks() -> None:
    default = StatusCheck()
    assert default.accepts(200) and default.accepts(299) and not default.accepts(301)
    check = StatusCheck.parse("2xx, 301-302,404")
    assert [c for c in (200, 301, 302, 303, 404, 500) if check.accepts(c)] == [200, 301, 302, 404]
    for bad in ("6xx", "abc", "300-200", "99", ""):
        with pytest.raises(ConfigError):
            StatusCheck.parse(bad)


# --- the response reader ---------------------------------------------------------------------

STREAM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbye!"
)
EXPECTED = [
    Response(200, True, True),
    Response(404, True, True),
    Response(204, True, False),
    Response(200, False, False),
]


@pytest.mark.parametrize("step", [1, 2, 7, len(STREAM)])
def test_responses_in_any_split(step: int) -> None:
    reader = ResponseReader(expect_body=b"hello")
    for i in range(0, len(STREAM), step):
        reader.feed(memoryview(STREAM)[i : i + step])
    assert list(reader.responses) == EXPECTED
    assert not reader.eof()


def test_a_body_until_the_end_of_the_connection() -> None:
    reader = ResponseReader(expect_body=b"end")
    reader.feed(b"HTTP/1.0 200 OK\r\n\r\nto the en")
    reader.feed(b"d")
    assert not reader.responses
    assert reader.eof()
    assert list(reader.responses) == [Response(200, False, True)]


def test_a_connection_that_ends_inside_a_response() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(PeerProtocolError, match="middle"):
        reader.eof()


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ],
)
def test_malformed_responses_raise_peer_errors(data: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        ResponseReader().feed(data)


def test_a_head_over_the_limit() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nX-Long: ")
    with pytest.raises(PeerProtocolError, match="head over"):
        for _ in range(MAX_HEAD // 4096 + 2):
            reader.feed(b"a" * 4096)


def test_a_body_over_the_checked_limit_fails_the_check() -> None:
    reader = ResponseReader(expect_body=b"x")
    size = (1 << 20) + 1
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    reader.feed(b"x" * size)
    assert list(reader.responses) == [Response(200, True, False)]


# --- results and thresholds ------------------------------------------------------------------


def _result(statuses: dict[int, int]) -> BenchResult:
    r = BenchResult(Scenario.REQUEST, "http://h:1/", "http", 1, 1, 1, 64, None, duration_s=1.0)
    r.statuses.update(statuses)
    r.requests = sum(statuses.values())
    r.connects = 2
    return r


def test_statuses_survive_json_and_merge() -> None:
    a, b = _result({200: 5, 503: 1}), _result({200: 2, 404: 3})
    assert BenchResult.from_dict(a.as_dict()).statuses == a.statuses
    assert a.as_dict()["statuses"] == {"200": 5, "503": 1}
    merged = merge_results([a, b])
    assert merged.statuses == {200: 7, 503: 1, 404: 3}
    assert merged.connects == 4


def test_status_thresholds() -> None:
    r = _result({200: 5, 503: 2, 502: 1, 404: 3})
    assert parse_threshold("status_5xx>0").value(r) == 3
    assert parse_threshold("status_404>=3").crossed(r)
    assert not parse_threshold("status_2xx<5").crossed(r)
    with pytest.raises(ConfigError):
        parse_threshold("status_6xx>0")


def test_status_classes() -> None:
    assert _result({200: 5, 204: 1, 503: 2, 404: 3}).status_classes() == {
        "2xx": 6,
        "4xx": 3,
        "5xx": 2,
    }


def test_an_http_result_saved_as_echo_loads_as_request() -> None:
    # Results saved before HTTP runs had their own scenario name said "echo".
    old = {**_result({200: 5}).as_dict(), "scenario": "echo"}
    assert BenchResult.from_dict(old).scenario is Scenario.REQUEST
    tcp = {**old, "transport": "tcp", "statuses": {}}
    assert BenchResult.from_dict(tcp).scenario is Scenario.ECHO
    merged = merge_results([BenchResult.from_dict(old), _result({200: 1})])
    assert merged.scenario is Scenario.REQUEST and merged.statuses == {200: 6}

"""core/ws/tunnel.py (HTTP CONNECT) and core/ws/redirect.py (-L), against literal bytes."""

from __future__ import annotations

import pytest

from netkit.core.addresses import TCPEndpoint, parse_ws_url
from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.http import Headers, UpgradeRefused
from netkit.core.ws.redirect import RedirectChain, RedirectPolicy, resolve_location
from netkit.core.ws.tunnel import (
    ProxyRefused,
    ProxyURL,
    check_answer,
    connect_request,
    parse_proxy_url,
    read_connect_answer,
)
from netkit.errors import ConfigError, PeerProtocolError

pytestmark = pytest.mark.timeout(10)
PROXY = ProxyURL("127.0.0.1", 3128)


def test_parse_proxy_url_with_credentials_never_prints_them() -> None:
    proxy = parse_proxy_url("http://al%40ice:s3cr%3At@[::1]:3128")
    assert (proxy.host, proxy.port, proxy.user, proxy.password) == ("::1", 3128, "al@ice", "s3cr:t")
    assert str(proxy) == "http://[::1]:3128"


@pytest.mark.parametrize(
    "text",
    ["https://p:1", "socks5://p:1", "http://p", "http://:8080", "http://p:99999", "http://p:1/x"],
)
def test_parse_proxy_url_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_proxy_url(text)


def test_connect_request_bytes() -> None:
    assert connect_request(PROXY, TCPEndpoint("::1", 443)) == (
        b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n"
    )
    # RFC 7617 2: base64 of "Aladdin:open sesame".
    authed = ProxyURL("p", 1, "Aladdin", "open sesame")
    assert connect_request(authed, TCPEndpoint("example.test", 80)) == (
        b"CONNECT example.test:80 HTTP/1.1\r\nHost: example.test:80\r\n"
        b"Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
    )


def test_read_connect_answer_in_pieces_leaves_what_follows() -> None:
    buf = ReceiveBuffer(1 << 16)
    data = b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\nEXTRA"
    for i in range(len(data) - 5):
        buf.extend(data[i : i + 1])
        answer = read_connect_answer(buf, PROXY)
        if i < len(data) - 6:
            assert answer is None
    assert answer is not None and answer.status == 200 and answer.headers.get("via") == "x"
    check_answer(answer, PROXY, TCPEndpoint("h", 1))


def test_read_connect_answer_refuses_what_is_not_http() -> None:
    buf = ReceiveBuffer(1 << 16)
    buf.extend(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(PeerProtocolError, match="did not answer CONNECT with HTTP"):
        read_connect_answer(buf, PROXY)


@pytest.mark.parametrize(
    ("status", "proxy", "hint"),
    [
        (407, PROXY, "wants credentials"),
        (407, ProxyURL("p", 1, "u", "p"), "did not accept"),
        (403, PROXY, "does not allow"),
        (502, PROXY, "could not reach"),
    ],
)
def test_check_answer_refusals_say_what_to_do(status: int, proxy: ProxyURL, hint: str) -> None:
    buf = ReceiveBuffer(1 << 16)
    buf.extend(f"HTTP/1.1 {status} Nope\r\n\r\n".encode())
    answer = read_connect_answer(buf, proxy)
    assert answer is not None
    with pytest.raises(ProxyRefused) as info:
        check_answer(answer, proxy, TCPEndpoint("h", 9))
    assert info.value.status_code == status
    assert f"refused CONNECT to h:9: {status} Nope" in str(info.value)
    assert hint in (info.value.hint or "")


# --- redirects -------------------------------------------------------------------------------


def refused(status: int, location: str | None) -> UpgradeRefused:
    return UpgradeRefused(status, "", Headers([("Location", location)] if location else []))


@pytest.mark.parametrize(
    ("base", "location", "expected"),
    [
        ("ws://a:1/x", "/y?q=1", "ws://a:1/y?q=1"),
        ("ws://a:1/x/z", "w", "ws://a:1/x/w"),
        ("ws://a:1/", "http://b:2/p", "ws://b:2/p"),
        ("wss://a/", "https://b/p", "wss://b:443/p"),
        ("ws://a/", "wss://b:5/", "wss://b:5/"),
        ("ws+unix:///s.sock:/x", "/y", "ws+unix:///s.sock:/y"),
    ],
)
def test_resolve_location(base: str, location: str, expected: str) -> None:
    assert str(resolve_location(parse_ws_url(base), location)) == expected


def test_resolve_location_keeps_credentials_only_on_the_same_host() -> None:
    url = parse_ws_url("ws://u:p@a:1/")
    assert resolve_location(url, "/z").user == "u"
    assert resolve_location(url, "ws://b:1/z").user is None


def test_chain_follows_then_stops_a_loop() -> None:
    chain = RedirectChain(parse_ws_url("ws://a:1/a"), RedirectPolicy())
    assert str(chain.follow(refused(302, "/b"))) == "ws://a:1/b"
    with pytest.raises(
        PeerProtocolError, match="redirect loop: ws://a:1/a -> ws://a:1/b -> ws://a:1/a"
    ):
        chain.follow(refused(307, "/a"))


def test_chain_hop_limit_downgrade_and_non_redirects() -> None:
    chain = RedirectChain(parse_ws_url("ws://a:1/0"), RedirectPolicy(max_hops=2))
    chain.follow(refused(301, "/1"))
    chain.follow(refused(308, "/2"))
    with pytest.raises(PeerProtocolError, match="more than 2 redirects"):
        chain.follow(refused(303, "/3"))
    secure = RedirectChain(parse_ws_url("wss://a/"), RedirectPolicy())
    with pytest.raises(PeerProtocolError, match="from TLS to plain text") as info:
        secure.follow(refused(302, "ws://a/"))
    assert "allow_insecure_redirect" in (info.value.hint or "")
    allowed = RedirectChain(
        parse_ws_url("https://a/".replace("https", "wss")), RedirectPolicy(allow_downgrade=True)
    )
    assert str(allowed.follow(refused(302, "http://a/"))) == "ws://a:80/"
    assert chain.follow(refused(404, None)) is None
    assert RedirectChain(parse_ws_url("ws://a/"), None).follow(refused(302, "/b")) is None
    with pytest.raises(PeerProtocolError, match="without a Location"):
        RedirectChain(parse_ws_url("ws://a/"), RedirectPolicy()).follow(refused(302, None))

"""netkit.ws_connect through an HTTP CONNECT proxy and following redirects, on loopback."""

from __future__ import annotations

import pytest

import netkit
from netkit import PeerProtocolError
from netkit.core.ws.http import UpgradeRefused
from netkit.core.ws.tunnel import ProxyRefused
from tests.commands.test_ws_client_reconnect import ConnectProxy, Redirector

pytestmark = pytest.mark.timeout(20)


def test_ws_connect_follows_a_redirect_through_a_proxy(run) -> None:
    proxy = ConnectProxy()

    async def main() -> None:
        async with netkit.ws_server() as server:
            redirector = Redirector({"/start": server.url})
            try:
                url = f"ws://127.0.0.1:{redirector.port}/start"
                with pytest.raises(UpgradeRefused):
                    async with netkit.ws_connect(url, proxy=proxy.url):
                        pass
                async with netkit.ws_connect(url, proxy=proxy.url, max_redirects=2) as ws:
                    await ws.send("via proxy")
                    assert await ws.recv() == "via proxy"
            finally:
                redirector.stop()
        targets = [target for target, _ in proxy.requests]
        server_at = server.url.removeprefix("ws://").rstrip("/")
        assert targets == [f"127.0.0.1:{redirector.port}"] * 2 + [server_at]

    try:
        run(main())
    finally:
        proxy.stop()


def test_ws_connect_redirect_loop_and_proxy_refusal(run) -> None:
    proxy = ConnectProxy(credentials="u:p")
    redirector = Redirector({"/a": "/b", "/b": "/a"})

    async def main() -> None:
        url = f"ws://127.0.0.1:{redirector.port}/a"
        with pytest.raises(PeerProtocolError, match="redirect loop"):
            async with netkit.ws_connect(url, max_redirects=5):
                pass
        with pytest.raises(ProxyRefused, match="407") as info:
            async with netkit.ws_connect(url, proxy=proxy.url):
                pass
        assert info.value.status_code == 407

    try:
        run(main())
    finally:
        proxy.stop()
        redirector.stop()

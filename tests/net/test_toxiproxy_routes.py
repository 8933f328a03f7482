"""toxiproxy's API on a proxy registry, in process: routes, relays and events over loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import TCPEndpoint
from netkit.core.http_api import ApiError, Request, Response
from netkit.core.toxiproxy import VERSION
from netkit.net.echo import EchoConnection
from netkit.net.proxy_registry import ProxyRegistry
from netkit.net.server import StreamServer, make_listener
from netkit.net.toxiproxy import ToxiproxyApi
from tests.net.conftest import EventLog

if TYPE_CHECKING:
    from conftest import Runner, TLSFiles


class Api:
    """A registry with its API, called in process (no HTTP), and an echo server to relay to."""

    def __init__(self, echo: StreamServer) -> None:
        self.log = EventLog()
        self.registry = ProxyRegistry(on_event=self.log.record, connect_timeout=5)
        self.api = ToxiproxyApi(self.registry)
        self.echo = echo.address

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body).encode()
        try:
            response: Response = await self.api(Request(method, path, body=raw))
        except ApiError as exc:
            response = exc.response()
        return response.status, json.loads(response.body) if response.body else None


async def with_api(test: Any) -> None:
    echo = StreamServer(make_listener(TCPEndpoint("127.0.0.1", 0)), EchoConnection)
    echo.start()
    api = Api(echo)
    try:
        await test(api)
    finally:
        await api.registry.close()
        await echo.drain(1.0)
        await echo.close()


async def echo_once(address: str, *, ssl_context: ssl.SSLContext | None = None) -> bytes:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=ssl_context, server_hostname="localhost" if ssl_context else None
    )
    writer.write(b"hello")
    data = await reader.readexactly(5)
    writer.close()
    return data


def test_the_api_creates_relays_that_work_and_reports_each_change(run: Runner[None]) -> None:
    async def test(api: Api) -> None:
        assert await api.call("GET", "/version") == (200, {"version": VERSION})
        status, proxy = await api.call("POST", "/proxies", {"name": "a", "upstream": api.echo})
        assert status == 201 and proxy["enabled"] is True
        assert await echo_once(proxy["listen"]) == b"hello"
        assert api.log.named("proxy_created")[0]["proxy"] == "a"
        toxic = {"type": "slicer", "attributes": {"average_size": 2, "delay": 100}}
        assert (await api.call("POST", "/proxies/a/toxics", toxic))[0] == 200
        assert await echo_once(proxy["listen"]) == b"hello"  # sliced, still whole
        added = api.log.named("fault_added")[0]
        assert (added["proxy"], added["name"], added["fault"]) == (
            "a",
            "slicer_downstream",
            "slice",
        )
        status, changed = await api.call(
            "PATCH", "/proxies/a/toxics/slicer_downstream", {"toxicity": 0.5}
        )
        assert status == 200 and changed["toxicity"] == 0.5
        assert changed["attributes"] == {"average_size": 2, "size_variation": 0, "delay": 100}
        assert api.log.named("fault_updated")[0]["p"] == 0.5
        assert (await api.call("DELETE", "/proxies/a"))[0] == 204
        assert api.log.named("proxy_deleted") == [{"proxy": "a"}]
        assert await api.call("GET", "/proxies") == (200, {})

    run(with_api(test))


def test_disable_enable_and_a_new_upstream(run: Runner[None]) -> None:
    async def test(api: Api) -> None:
        _, proxy = await api.call("POST", "/proxies", {"name": "a", "upstream": "127.0.0.1:1"})
        with pytest.raises(OSError):
            await echo_once(proxy["listen"])  # upstream refuses: the client is reset
        status, moved = await api.call("POST", "/proxies/a", {"upstream": api.echo})
        assert (status, moved["upstream"], moved["listen"]) == (200, api.echo, proxy["listen"])
        assert await echo_once(proxy["listen"]) == b"hello"
        status, off = await api.call("POST", "/proxies/a", {"enabled": False})
        assert (status, off["enabled"]) == (200, False)
        with pytest.raises(ConnectionRefusedError):
            await echo_once(proxy["listen"])
        assert (await api.call("POST", "/reset"))[0] == 204
        assert await echo_once(proxy["listen"]) == b"hello"
        assert [e["proxy"] for e in api.log.named("disabled")] == ["a"]
        assert api.log.named("proxies_reset") == [{"proxies": ["a"]}]
        status, elsewhere = await api.call("PATCH", "/proxies/a", {"listen": "127.0.0.1:0"})
        assert status == 200 and elsewhere["listen"] != proxy["listen"]
        assert await echo_once(elsewhere["listen"]) == b"hello"
        with pytest.raises(ConnectionRefusedError):
            await echo_once(proxy["listen"])
        assert api.log.named("relistened")[0]["address"] == elsewhere["listen"]

    run(with_api(test))


def test_created_disabled_and_populated(run: Runner[None]) -> None:
    async def test(api: Api) -> None:
        body = [{"name": "x", "upstream": api.echo, "enabled": False}]
        status, made = await api.call("POST", "/populate", body)
        assert status == 201 and made["proxies"][0]["enabled"] is False
        listen = made["proxies"][0]["listen"]
        with pytest.raises(ConnectionRefusedError):
            await echo_once(listen)
        status, error = await api.call("POST", "/populate", [{"name": "y", "upstream": "x"}])
        assert status == 400 and error["error"].startswith("bad request body: upstream")
        assert error["proxies"] is None

    run(with_api(test))


def test_tls_and_seed_extensions(run: Runner[None], tls_files: TLSFiles) -> None:
    async def test(api: Api) -> None:
        body = {
            "name": "tls",
            "upstream": api.echo,
            "seed": 5,
            "listen_tls": {"cert": str(tls_files.cert), "key": str(tls_files.key)},
        }
        status, proxy = await api.call("POST", "/proxies", body)
        assert status == 201 and proxy["seed"] == 5 and proxy["listen_tls"]["cert"]
        trusting = ssl.create_default_context(cafile=str(tls_files.ca))
        assert await echo_once(proxy["listen"], ssl_context=trusting) == b"hello"
        # TLS to the upstream: a second proxy in front of the first.
        outer = {
            "name": "outer",
            "upstream": proxy["listen"],
            "upstream_tls": {"cacert": str(tls_files.ca), "server_hostname": "localhost"},
        }
        status, front = await api.call("POST", "/proxies", outer)
        assert status == 201
        assert await echo_once(front["listen"]) == b"hello"
        missing = {"name": "bad", "upstream": api.echo, "listen_tls": {"cert": "/nonexistent.pem"}}
        status, error = await api.call("POST", "/proxies", missing)
        assert status == 400 and "nonexistent" in error["error"]
        assert "bad" not in (await api.call("GET", "/proxies"))[1]

    run(with_api(test))


def test_routes_answer_toxiproxys_errors(run: Runner[None]) -> None:
    async def test(api: Api) -> None:
        await api.call("POST", "/proxies", {"name": "a", "upstream": api.echo})
        assert await api.call("GET", "/proxies/a/toxics/none") == (
            404,
            {"error": "toxic not found", "status": 404},
        )
        assert await api.call("PATCH", "/proxies/a/toxics/none", {}) == (
            404,
            {"error": "toxic not found", "status": 404},
        )
        assert (await api.call("PUT", "/proxies/a"))[0] == 405
        assert (await api.call("GET", "/toxics"))[0] == 404

    run(with_api(test))


def test_toxics_added_to_an_open_connection_act_as_toxiproxys(run: Runner[None]) -> None:
    # Each toxic acts from the moment it is added (toxiproxy's links pick it up at once).
    async def toxic_on_open_connection(
        api: Api, listen: str, toxic: dict[str, Any], *, finish: bool = False
    ) -> tuple[bytes | str, float]:
        host, _, port = listen.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"hi")
        assert await reader.readexactly(2) == b"hi"
        start = time.perf_counter()  # not the loop clock: uvloop's is in whole ms
        assert (await api.call("POST", "/proxies/a/toxics", toxic))[0] == 200
        writer.write(b"hello")
        if finish:
            assert await reader.readexactly(5) == b"hello"
            writer.write_eof()
        try:
            data: bytes | str = await reader.read()
        except ConnectionResetError:
            data = "reset"
        writer.close()
        assert (await api.call("POST", "/reset"))[0] == 204
        return data, time.perf_counter() - start

    async def test(api: Api) -> None:
        _, proxy = await api.call("POST", "/proxies", {"name": "a", "upstream": api.echo})
        listen = proxy["listen"]
        swallowed, after = await toxic_on_open_connection(
            api, listen, {"type": "timeout", "attributes": {"timeout": 200}}
        )
        assert swallowed == b"" and 0.19 <= after < 1.0  # nothing through, closed at 200 ms
        limited, _ = await toxic_on_open_connection(
            api, listen, {"type": "limit_data", "attributes": {"bytes": 3}}
        )
        assert limited == b"hel"  # 3 bytes from when it was added, then the end
        reset, after = await toxic_on_open_connection(
            api, listen, {"type": "reset_peer", "attributes": {"timeout": 100}}
        )
        assert reset == "reset" and 0.09 <= after < 1.0
        _, after = await toxic_on_open_connection(
            api, listen, {"type": "slow_close", "attributes": {"delay": 150}}, finish=True
        )
        assert 0.14 <= after < 1.0  # the upstream's FIN held 150 ms

    run(with_api(test))

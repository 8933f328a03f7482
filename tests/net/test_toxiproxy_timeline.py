"""netkit's extension of toxiproxy's API: a fault timeline per proxy, in process over loopback
(``POST/GET/DELETE /proxies/{proxy}/timeline``)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from tests.net.test_toxiproxy_routes import Api, with_api

if TYPE_CHECKING:
    from conftest import Runner


async def step_event(api: Api, index: int) -> dict:
    """The first cycle's step ``index``, once it came."""
    async with asyncio.timeout(5):
        return (await api.log.wait_events("timeline_step", index + 1))[index]


def test_a_timeline_in_netkit_s_grammar_runs_on_a_proxy(run: Runner[None]) -> None:
    async def test(api: Api) -> None:
        await api.call("POST", "/proxies", {"name": "a", "upstream": api.echo})
        began = time.perf_counter()
        body = {"timeline": "0s latency=20ms,down; 200ms clear", "repeat": 0}
        status, shown = await api.call("POST", "/proxies/a/timeline", body)
        assert status == 200 and shown["running"] is True
        assert [s["at_s"] for s in shown["timeline"]["steps"]] == [0, 0.2]
        _, toxics = await api.call("GET", "/proxies/a/toxics")
        assert [t["name"] for t in toxics] == ["timeline_latency_downstream"]
        assert toxics[0]["attributes"]["latency"] == 20
        await step_event(api, 1)
        assert time.perf_counter() - began < 0.2 + 0.05
        assert (await api.call("GET", "/proxies/a/toxics"))[1] == []
        status, shown = await api.call("GET", "/proxies/a/timeline")
        assert status == 200 and shown["running"] is False

    run(with_api(test))


def test_typed_steps_take_toxics_and_delete_stops_the_run(run: Runner[None]) -> None:
    async def test(api: Api) -> None:
        await api.call("POST", "/proxies", {"name": "a", "upstream": api.echo})
        toxic = {"type": "latency", "stream": "upstream", "attributes": {"latency": 5}}
        body = {
            "steps": [{"at": 0, "toxics": [toxic]}, {"at": 50, "keep": True}, {"at": 100}],
            "repeat": "forever",
        }
        assert (await api.call("POST", "/proxies/a/timeline", body))[0] == 200
        await step_event(api, 2)
        assert api.log.named("timeline_repeat")
        assert await api.call("DELETE", "/proxies/a/timeline") == (204, None)
        count = len(api.log.named("timeline_step"))
        await asyncio.sleep(0.15)  # more than a cycle: no step may come
        assert len(api.log.named("timeline_step")) == count
        assert (await api.call("DELETE", "/proxies/a/timeline"))[0] == 404

    run(with_api(test))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"timeline": "0s latency=fast"}, "timeline step 1 ('0s latency=fast')"),
        ({"timeline": "0s loss=5%"}, "timeline step 1 (at 0s): --loss applies to UDP"),
        ({"steps": [{"toxics": []}]}, "missing required field: at"),
        ({"steps": [{"at": 0, "toxics": [{"type": "nope"}]}]}, "invalid toxic type"),
        ({"timeline": "0s clear", "repeat": "often"}, "repeat must be a count"),
        ({}, "missing required field: timeline"),
    ],
)
def test_a_bad_timeline_is_a_400_naming_what_is_wrong(
    run: Runner[None], body: dict, says: str
) -> None:
    async def test(api: Api) -> None:
        await api.call("POST", "/proxies", {"name": "a", "upstream": api.echo})
        status, error = await api.call("POST", "/proxies/a/timeline", body)
        assert status == 400 and says in error["error"], error
        assert (await api.call("GET", "/proxies/a/timeline"))[0] == 404
        assert (await api.call("POST", "/proxies/b/timeline", body))[0] == 404

    run(with_api(test))

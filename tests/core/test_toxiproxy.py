"""toxiproxy's JSON ↔ netkit faults and proxy specs (sans I/O), against toxiproxy's shapes."""

from __future__ import annotations

import pytest

from netkit.core.faults import (
    AcceptDelay,
    Bandwidth,
    BlackholeAfter,
    Latency,
    LimitData,
    Refuse,
    ResetAfter,
    Slice,
    SlowClose,
)
from netkit.core.http_api import ApiError
from netkit.core.toxiproxy import (
    DEFAULT_LISTEN,
    TOXIC_TYPES,
    ProxySpec,
    Toxic,
    parse_populate,
    parse_proxy,
    parse_toxic,
    toxics_json,
    update_proxy,
    update_toxic,
)

# (request attributes, the fault, the attributes shown back: every attribute, toxiproxy's units)
TOXIPROXY_TYPES = {
    "latency": ({"latency": 100, "jitter": 10}, Latency(100, jitter=10, direction="down"), None),
    "bandwidth": ({"rate": 250}, Bandwidth(250_000, direction="down"), None),
    "slow_close": ({"delay": 300}, SlowClose(300, direction="down"), None),
    "timeout": ({"timeout": 2000}, BlackholeAfter(0, close_after=2000, direction="down"), None),
    "reset_peer": ({"timeout": 50}, ResetAfter(ms=50, direction="down"), None),
    "slicer": (
        {"average_size": 64, "size_variation": 16, "delay": 1500},
        Slice(64, delay=1.5, variation=16, direction="down"),
        None,
    ),
    "limit_data": ({"bytes": 4096}, LimitData(4096, direction="down"), None),
    "netkit_refuse": ({}, Refuse(), None),
    "netkit_accept_delay": ({"delay": 250.5}, AcceptDelay(250.5), None),
    "netkit_reset_after": ({"bytes": 10}, ResetAfter(size=10, direction="down"), None),
    "netkit_blackhole": (
        {"after": 100},
        BlackholeAfter(100, direction="down"),
        {"after": 100, "close_after": 0},
    ),
}


def test_every_type_is_covered_here():
    assert {kind.name for kind in TOXIC_TYPES} == set(TOXIPROXY_TYPES)


@pytest.mark.parametrize("type_name", sorted(TOXIPROXY_TYPES))
def test_each_type_builds_its_fault_and_reads_back_the_same(type_name):
    attributes, fault, shown = TOXIPROXY_TYPES[type_name]
    toxic = parse_toxic({"type": type_name, "attributes": attributes})
    assert toxic.fault == fault
    stream = "both" if type_name in ("netkit_refuse", "netkit_accept_delay") else "downstream"
    assert toxic.name == f"{type_name}_downstream"  # toxiproxy's default name: TYPE_STREAM
    assert toxic.as_json() == {
        "attributes": shown or attributes,
        "name": f"{type_name}_downstream",
        "type": type_name,
        "stream": stream,
        "toxicity": 1.0,
    }


def test_missing_attributes_are_zero_as_in_toxiproxy():
    toxic = parse_toxic({"type": "latency", "stream": "upstream", "name": "lag", "toxicity": 0.5})
    assert toxic == Toxic("lag", Latency(0, direction="up", probability=0.5))
    assert toxic.as_json()["attributes"] == {"latency": 0, "jitter": 0}


def test_a_bandwidth_of_zero_is_unlimited_as_in_toxiproxy():
    from netkit.core.faults import DirectionPlan

    plan = DirectionPlan()
    parse_toxic({"type": "bandwidth", "attributes": {"rate": 0}}).fault.apply_to(plan)
    assert not plan.shapes_data


def test_faults_from_the_command_line_show_as_toxics_on_both_streams():
    shown = toxics_json([("latency", Latency(50)), ("slice", Slice(100, delay=20))])
    assert shown[0] == {
        "attributes": {"latency": 50, "jitter": 0},
        "name": "latency",
        "type": "latency",
        "stream": "both",
        "toxicity": 1.0,
    }
    assert shown[1]["attributes"] == {"average_size": 100, "size_variation": 0, "delay": 20000}


def test_toxics_are_listed_upstream_first_as_toxiproxy_chains_them():
    listed = toxics_json(
        [("d", Latency(1, direction="down")), ("b", Latency(1)), ("u", Latency(1, direction="up"))]
    )
    assert [t["name"] for t in listed] == ["u", "d", "b"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"type": "nope"}, 400, "invalid toxic type"),
        ({"type": "latency", "stream": "sideways"}, 400, "stream was invalid"),
        ([], 400, "bad request body"),
        ({"type": "latency", "attributes": {"latency": "x"}}, 400, "must be a number"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, 400, "whole number"),
        ({"type": "latency", "attributes": {"latency": -1}}, 400, "must not be negative"),
        ({"type": "latency", "toxicity": 2}, 400, "toxicity"),
        ({"type": "slicer", "attributes": {"average_size": 0}}, 400, "at least 1 byte"),
        ({"type": "slicer", "attributes": {"average_size": 5, "size_variation": 5}}, 400, "1 byte"),
    ],
)
def test_bad_toxics_get_toxiproxy_errors(body, status, message):
    with pytest.raises(ApiError, match=message) as caught:
        parse_toxic(body)
    assert caught.value.status == status
    response = caught.value.response()
    assert response.status == status
    assert b'"status":%d' % status in response.body and b'"error":' in response.body


def test_unknown_attributes_are_ignored_as_in_toxiproxy():
    toxic = parse_toxic({"type": "latency", "attributes": {"latency": 5, "colour": "red"}})
    assert toxic.fault == Latency(5, direction="down")


def test_an_update_changes_the_attributes_it_names_and_keeps_the_rest():
    toxic = parse_toxic({"type": "latency", "attributes": {"latency": 100, "jitter": 5}})
    changed = update_toxic(toxic, {"attributes": {"latency": 200}})
    assert changed == Toxic("latency_downstream", Latency(200, jitter=5, direction="down"))
    again = update_toxic(changed, {"toxicity": 0.25, "type": "bandwidth", "stream": "upstream"})
    assert again.fault == Latency(200, jitter=5, direction="down", probability=0.25)
    with pytest.raises(ApiError, match="must be a number"):
        update_toxic(toxic, {"attributes": {"jitter": None}})


def test_a_proxy_takes_toxiproxy_fields_with_its_defaults():
    spec = parse_proxy({"name": "redis", "upstream": "127.0.0.1:6379"})
    assert spec == ProxySpec("redis", DEFAULT_LISTEN, "127.0.0.1:6379", True)
    assert spec.as_json() == {
        "name": "redis",
        "listen": "127.0.0.1:0",
        "upstream": "127.0.0.1:6379",
        "enabled": True,
        "toxics": [],
    }


def test_netkit_extensions_are_read_and_shown_only_when_set():
    spec = parse_proxy(
        {
            "name": "tls",
            "upstream": "localhost:443",
            "listen": "[::1]:0",
            "enabled": False,
            "seed": 7,
            "listen_tls": {"self_signed": True},
            "upstream_tls": True,
        }
    )
    shown = spec.as_json()
    assert shown["seed"] == 7 and shown["listen_tls"] == {"self_signed": True}
    assert shown["upstream_tls"] == {} and shown["enabled"] is False
    with pytest.raises(ApiError, match=r"listen_tls\.password"):
        parse_proxy({"name": "x", "upstream": "a:1", "listen_tls": {"password": "x"}})
    with pytest.raises(ApiError, match="seed"):
        parse_proxy({"name": "x", "upstream": "a:1", "seed": "7"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"upstream": "a:1"}, "missing required field: name"),
        ({"name": "x"}, "missing required field: upstream"),
        ({"name": "x", "upstream": "not an endpoint"}, "bad request body: upstream"),
        ({"name": "x", "upstream": "a:1", "listen": "udp://x:1"}, "bad request body: listen"),
        ({"name": "x", "upstream": "a:1", "enabled": "yes"}, "enabled must be"),
        ({"name": 5, "upstream": "a:1"}, "name must be a string"),
        ("redis", "expected a JSON object"),
    ],
)
def test_bad_proxies_are_400(body, message):
    with pytest.raises(ApiError, match=message) as caught:
        parse_proxy(body)
    assert caught.value.status == 400


def test_an_update_keeps_what_it_does_not_name():
    spec = ProxySpec("p", "127.0.0.1:4000", "127.0.0.1:5000", True, seed=3)
    assert update_proxy(spec, {"enabled": False}) == ProxySpec(
        "p", "127.0.0.1:4000", "127.0.0.1:5000", False, seed=3
    )
    moved = update_proxy(spec, {"upstream": "127.0.0.1:6000", "name": "ignored", "seed": 3})
    assert (moved.name, moved.upstream, moved.seed) == ("p", "127.0.0.1:6000", 3)
    with pytest.raises(ApiError, match="seed is set when a proxy is created"):
        update_proxy(spec, {"seed": 4})


def test_populate_checks_every_proxy_first_and_says_which_is_wrong():
    specs = parse_populate([{"name": "a", "upstream": "x:1"}, {"name": "b", "upstream": "x:2"}])
    assert [s.name for s in specs] == ["a", "b"]
    with pytest.raises(ApiError, match="missing required field: upstream at proxy 2"):
        parse_populate([{"name": "a", "upstream": "x:1"}, {"name": "b"}])
    with pytest.raises(ApiError, match="array"):
        parse_populate({"name": "a"})

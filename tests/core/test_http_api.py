"""The sans-I/O JSON API pieces: routes, requests, responses and the error shape."""

from __future__ import annotations

import pytest

from netkit.core.http_api import ApiError, Request, Response, Routes


def test_routes_match_segments_and_decode_them():
    routes = Routes[str]()
    routes.add("/proxies", GET="index", POST="create")
    routes.add("/proxies/{proxy}/toxics/{toxic}", GET="toxic", DELETE="remove")
    assert routes.match("GET", "/proxies") == ("index", {})
    assert routes.match("DELETE", "/proxies/a%20b/toxics/lat") == (
        "remove",
        {"proxy": "a b", "toxic": "lat"},
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/proxies/", 404),  # no trailing slash, as toxiproxy's router
        ("GET", "/proxies/a/b", 404),
        ("PUT", "/proxies", 405),
    ],
)
def test_unrouted_requests_are_404_or_405(method, path, status):
    routes = Routes[str]()
    routes.add("/proxies", GET="index", POST="create")
    routes.add("/proxies/{proxy}", GET="show")
    with pytest.raises(ApiError) as caught:
        routes.match(method, path)
    assert caught.value.status == status


def test_a_json_response_serializes_with_its_length():
    response = Response.json({"a": 1}, status=201)
    assert response.serialize(keep_alive=True) == (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}'
    )
    assert Response.empty().serialize(keep_alive=False) == (
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )


def test_errors_have_toxiproxys_shape():
    response = ApiError("proxy not found", 404).response()
    assert (response.status, response.body) == (404, b'{"error":"proxy not found","status":404}')


def test_request_bodies_parse_as_json_or_answer_400():
    assert Request("POST", "/", body=b' {"a": [1]} ').json() == {"a": [1]}
    assert Request("POST", "/").json() is None
    for body in (b"{", b"\xff\xfe", b"[1,]"):
        with pytest.raises(ApiError, match="bad request body") as caught:
            Request("POST", "/", body=body).json()
        assert caught.value.status == 400

"""Tests for netkit.net.control_workers: the parent's control server asking worker processes'
control sockets (here: servers on real Unix sockets in tmp_path, in one loop)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from netkit.core.addresses import UnixEndpoint
from netkit.core.http_api import ApiError, Request, Response
from netkit.net.control_workers import WorkersControl, ask_worker
from netkit.net.http_api import serving_api
from netkit.net.server import make_listener


def worker(tmp_path: Path, name: str, answers: dict[str, Response]):  # type: ignore[no-untyped-def]
    """A fake worker's control server: a fixed answer per path."""
    path = str(tmp_path / f"{name}.sock")

    async def handle(request: Request) -> Response:
        if request.method != "GET" and request.path in answers:
            return Response.json({"asked": request.method, "body": request.json()})
        found = answers.get(request.path)
        if found is None:
            raise ApiError("not here", 404)
        return found

    return path, serving_api(make_listener(UnixEndpoint(path)), handle)


def row(name: str, total: int, weight: int) -> dict[str, Any]:
    return {"backend": name, "total": total, "active": 0, "weight": weight, "role": "primary"}


def test_reads_merge_and_changes_reach_every_worker(run, tmp_path):
    async def main() -> None:
        first, one = worker(
            tmp_path,
            "w0",
            {"/backends": Response.json({"backends": [row("a", 2, 3)]}), "/x": Response.empty()},
        )
        second, two = worker(
            tmp_path,
            "w1",
            {"/backends": Response.json({"backends": [row("a", 5, 1)]}), "/x": Response.empty()},
        )
        async with one, two:
            control = WorkersControl([first, second])
            merged = await control(Request("GET", "/backends"))
            (only,) = json.loads(merged.body)["backends"]
            assert (only["total"], only["weight"]) == (7, 3), "counts added, settings the first's"
            changed = await control(Request("PATCH", "/x", body=b'{"weight": 2}'))
            assert json.loads(changed.body) == {"asked": "PATCH", "body": {"weight": 2}}
            missing = await control(Request("GET", "/nothing"))
            assert missing.status == 404

    run(main())


def test_a_worker_that_is_gone_is_a_502_and_disagreeing_workers_a_500(run, tmp_path):
    async def main() -> None:
        first, one = worker(tmp_path, "w0", {"/x": Response.empty()})
        second, two = worker(tmp_path, "w1", {})
        async with one, two:
            with pytest.raises(ApiError) as gone:
                await ask_worker(str(tmp_path / "gone.sock"), Request("GET", "/stats"))
            assert gone.value.status == 502 and "did not answer" in str(gone.value)
            with pytest.raises(ApiError) as split:
                await WorkersControl([first, second])(Request("DELETE", "/x"))
            assert split.value.status == 500 and "worker 1 404" in str(split.value)

    run(main())

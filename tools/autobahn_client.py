"""Autobahn|Testsuite driver for netkit's WebSocket client (the suite's fuzzingserver mode).

The Autobahn suite (``autobahntestsuite`` on PyPI) runs on Python 2.7 only, so it is not part
of the test suite; run it by hand after a change to the WebSocket code. netkit must stay with
no FAILED case, as server and as client.

Setup (Python 2.7, e.g. pyenv's): ``python2.7 -m pip install virtualenv`` then
``python2.7 -m virtualenv ab && ab/bin/pip install autobahntestsuite`` (25.10.1 pins
autobahn 0.10.9 and Twisted 19.10).

netkit as server::

    netkit ws-server 127.0.0.1:0 --json --max-size 16MiB [--compress]   # 9.* send 16 MiB
    # spec.json: {"outdir": "./reports/servers", "cases": ["*"], "exclude-cases": [],
    #             "servers": [{"agent": "netkit", "url": "ws://127.0.0.1:PORT"}]}
    ab/bin/wstest -m fuzzingclient -s spec.json

netkit as client::

    # spec.json: {"url": "ws://127.0.0.1:9001", "outdir": "./reports/clients",
    #             "cases": ["*"], "exclude-cases": []}
    ab/bin/wstest -m fuzzingserver -s spec.json &
    python tools/autobahn_client.py [--url ws://127.0.0.1:9001] [--agent netkit]
                                    [--no-compress] [--cases 1-10,300]

The command line can be the client under test too, one process per case (``ws-client
--echo`` echoes from the connection as this driver does; 2026-12-07, with --compress: 514 of
517 cases OK, 3 informational (7.1.6, 7.13.1, 7.13.2), none non-strict or failed; 14 min on
the shared 2-CPU machine)::

    for n in $(seq 1 517); do
        netkit ws-client "ws://127.0.0.1:9001/runCase?case=$n&agent=netkit-cli" \
            --echo --max-size 16MiB --compress --ping-interval 0
    done
    netkit ws-client "ws://127.0.0.1:9001/updateReports?agent=netkit-cli" --echo

This driver reads /getCaseCount, connects to /runCase?case=N&agent=AGENT for each case and
echoes every message back with the same type (text or binary) until the connection closes,
then asks for /updateReports?agent=AGENT. It uses only netkit's own client API
(netkit.net.ws.connect_ws + WebSocketClientConnection). Results: reports/*/index.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from netkit.core.addresses import parse_ws_url
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.events import Message
from netkit.errors import NetkitError
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection, connect_ws

MAX_SIZE = 16 << 20  # 9.* send messages of up to 16 MiB
TIMEOUTS = WSTimeouts(open=10.0, close=10.0, ping_interval=None, ping_timeout=None)


class EchoClient(WebSocketClientConnection):
    """Echo each message as it arrives, with its type (the data view is valid only here)."""

    def on_message(self, message: Message) -> None:
        self.send_message(message.data, text=message.text)


async def _open(
    base: str, resource: str, factory_cls: type[WebSocketClientConnection], compress: bool
) -> WebSocketClientConnection:
    url = parse_ws_url(base.rstrip("/") + resource)
    handshake = ClientHandshake(
        url.host_header, url.resource, deflate=DeflateParams() if compress else None
    )
    return await connect_ws(
        url,
        lambda: factory_cls(handshake, max_size=MAX_SIZE, timeouts=TIMEOUTS),
        ssl_context=None,
        timeout=10.0,
    )


async def get_case_count(base: str) -> int:
    conn = await _open(base, "/getCaseCount", WebSocketClientConnection, False)
    item = await conn.receive()
    await asyncio.wait_for(asyncio.shield(conn.closed), 15)
    assert item is not None, "no case count received"
    return int(item[1].decode())


async def run_case(base: str, case: int, agent: str, compress: bool) -> str:
    try:
        conn = await _open(base, f"/runCase?case={case}&agent={agent}", EchoClient, compress)
    except (NetkitError, OSError) as exc:  # a failed opening is a result too: go on
        return f"open failed: {exc!r}"
    try:
        await asyncio.wait_for(asyncio.shield(conn.closed), 120)
    except TimeoutError:
        conn.abort()
        return "timed out (aborted)"
    err = f" error={conn.ws.error!r}" if conn.ws.error is not None else ""
    return f"closed code={conn.close_code} deflate={conn.deflate is not None}{err}"


async def update_reports(base: str, agent: str) -> None:
    conn = await _open(base, f"/updateReports?agent={agent}", WebSocketClientConnection, False)
    await asyncio.wait_for(asyncio.shield(conn.closed), 120)


def parse_cases(spec: str | None, count: int) -> list[int]:
    if not spec:
        return list(range(1, count + 1))
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="ws://127.0.0.1:9001")
    p.add_argument("--agent", default="netkit")
    p.add_argument("--no-compress", action="store_true", help="do not offer permessage-deflate")
    p.add_argument("--cases", help="case numbers (1-based), e.g. 1-10,300")
    args = p.parse_args()
    count = await get_case_count(args.url)
    print(f"{count} cases", flush=True)
    for case in parse_cases(args.cases, count):
        t0 = time.perf_counter()
        result = await run_case(args.url, case, args.agent, not args.no_compress)
        print(f"case {case}/{count}: {result} ({time.perf_counter() - t0:.2f}s)", flush=True)
    await update_reports(args.url, args.agent)
    print("reports updated", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

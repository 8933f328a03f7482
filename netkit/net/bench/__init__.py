"""The load drivers of ``netkit bench``: one event loop's worth of connections, and their clock.

One :func:`run_worker` call drives one :class:`~netkit.core.bench.plan.LoadPlan` on the running loop
and returns its :class:`~netkit.core.bench.result.BenchResult`; ``netkit bench --workers N`` runs it in
N processes and merges the results.

Each connection slot keeps one connection open (reconnecting after a failure, which is counted)
and runs the request engine of :class:`RequestEngine`: closed loop (a new request as soon as
one completes, up to ``pipeline`` in flight) or open loop (request ``k`` due at a time fixed in
advance; latency measured from that time, as wrk2 does). Modules:

- ``engine``: the run state, slots, :class:`RequestEngine`, payload, error kinds, bulk sending;
- ``worker``: :class:`Worker` and :func:`run_worker` (one process's share of a run);
- ``fanout``: running workers in forked processes, their progress and their results;
- ``embedded``: :class:`EmbeddedEchoServer`, netkit's own echo server to load.

Transports, one driver module each:

- TCP, TLS and Unix echo (``stream``): :class:`StreamEcho`, a :class:`~netkit.net.protocols.StreamProtocol`
  that verifies the echoed byte stream against the payload pattern without copying it;
- UDP echo (``datagram``): :class:`DatagramEcho`, sequenced probes (:mod:`netkit.core.probe`) on a connected
  socket read with ``recv_into``;
- WebSocket echo (``websocket``): :class:`WSEcho`, a :class:`~netkit.net.ws.WebSocketClientConnection` that
  compares each message with the payload;
- ``stream``: :class:`StreamBulk` / :class:`WSBulk` write as fast as the peer reads;
- ``connect``: connect, optionally exchange one verified echo, close, repeat.

The hot path is kept lean: one ``perf_counter_ns()`` per batch of responses, a histogram
record per response, one write per batch of requests.

Without a target, :class:`EmbeddedEchoServer` runs netkit's own echo server (the shared
:class:`~netkit.net.server.StreamServer`) in forked processes for the drivers to load.
"""

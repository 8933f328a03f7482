"""Load balancing as pure objects (no I/O): backends, their health and state, the policies.

The pieces, from the command line inward:

- :mod:`~netkit.core.balance.backends`: ``parse_backends(["127.0.0.1:8001,weight=3",
  "unix:/run/b.sock,backup"])`` -> ``[Backend, ...]``, the backends as the user writes them.
- :mod:`~netkit.core.balance.health`: the rise/fall machine (:class:`HealthState`), the
  :class:`HealthEvent` a change of state produces, and the :class:`CheckProbe` an active check runs.
- :mod:`~netkit.core.balance.state`: :class:`BackendState`, what the balancer knows about one
  backend at run time (counters, connect times, health, slow start, maxconn).
- :mod:`~netkit.core.balance.policies`: roundrobin, leastconn, random (two choices) and source
  (consistent hash), each choosing among one tier of backends.
- :mod:`~netkit.core.balance.pool`: :class:`BackendPool`, every backend's state and the policy
  that picks a primary, else a backup: ``pool.choose(client_key, now, exclude)``.

Time is always passed in (``now``, in seconds on any monotonic clock - the I/O layer uses the
event loop's ``loop.time()``); nothing here reads a clock. Randomness comes from a seedable
``random.Random``. The semantics are HAProxy's where it has them; each module says which.
"""

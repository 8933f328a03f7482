"""Multicast without I/O: the sans-I/O half of ``netkit multicast``.

- :mod:`~netkit.core.multicast.groups`: groups, broadcast targets and SSM sources, parsed and checked.
- :mod:`~netkit.core.multicast.traffic`: what ``send`` sends (payloads or generated probes, size
  limits) and per-source accounting of what ``listen`` receives.
- :mod:`~netkit.core.multicast.ping`: the ping protocol (``multicast ping``, after omping).
- :mod:`~netkit.core.multicast.selftest`: the self-test's groups, receivers' verdicts and tally.

The sockets for all of them are in :mod:`netkit.net.multicast`.
"""

"""Multicast sockets and the I/O of ``netkit multicast`` (the protocol half is in
:mod:`netkit.core.multicast`).

- :mod:`~netkit.net.multicast.interfaces`: this host's interfaces and their addresses.
- :mod:`~netkit.net.multicast.sockets`: joins (ASM and SSM, IPv4 and IPv6), receivers, senders.
- :mod:`~netkit.net.multicast.datagrams`: reading datagrams, the paced sender, the listener.
- :mod:`~netkit.net.multicast.ping`: the ping instance's sockets and its probe/answer loop.
- :mod:`~netkit.net.multicast.selftest`: one self-test run per IP family.

Safety rule: every socket that sends multicast names its outgoing interface explicitly
(``IP_MULTICAST_IF`` / ``IPV6_MULTICAST_IF`` by interface index), so a group never leaves
through whatever the default route points at; broadcast senders are pinned with
``IP_UNICAST_IF`` the same way.
"""

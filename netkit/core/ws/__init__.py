"""WebSocket (RFC 6455) codec, sans-I/O.

- :mod:`~netkit.core.ws.frames`: the frame parser (one, with the small-frame path inside it)
  and serializer, opcodes, close codes.
- :mod:`~netkit.core.ws.mask`: XOR masking (int trick, numpy for large payloads).
- :mod:`~netkit.core.ws.http`: HTTP heads and headers of the opening handshake.
- :mod:`~netkit.core.ws.handshake`: what both sides of the opening handshake share.
- :mod:`~netkit.core.ws.server`: the server's handshake policy and ``ServerProtocol``.
- :mod:`~netkit.core.ws.client`: the client's request (from a URL) and ``ClientProtocol``.
- :mod:`~netkit.core.ws.protocol`: the connection state machine both sides build on.
- :mod:`~netkit.core.ws.events`: what a connection reports.
- :mod:`~netkit.core.ws.utf8`: UTF-8 checks of text messages as they arrive.
- :mod:`~netkit.core.ws.pings`: pings in flight and their pongs.
- :mod:`~netkit.core.ws.deflate`: permessage-deflate (RFC 7692).
"""

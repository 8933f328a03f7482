"""WebSocket (RFC 6455) codec, sans-I/O.

- :mod:`~netkit.core.ws.frames`: frame parser and serializer, opcodes, close codes.
- :mod:`~netkit.core.ws.mask`: XOR masking (int trick, numpy for large payloads).
- :mod:`~netkit.core.ws.handshake`: the opening handshake, client and server.
- :mod:`~netkit.core.ws.deflate`: permessage-deflate (RFC 7692).
- :mod:`~netkit.core.ws.protocol`: the connection state machine.
"""

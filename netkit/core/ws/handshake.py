"""What both sides of the WebSocket opening handshake (RFC 6455 section 4) share: the key and its answer.

The sides themselves: :mod:`netkit.core.ws.client` (the request, the check of the answer,
:class:`~netkit.core.ws.client.ClientProtocol`) and :mod:`netkit.core.ws.server` (the policy
that answers a request, :class:`~netkit.core.ws.server.ServerProtocol`). HTTP heads and
headers are read and written by :mod:`netkit.core.ws.http`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Final

GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_VERSION: Final = "13"


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (4.2.2 step 5.4)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """Return a fresh ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded (4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def valid_key(key: str) -> bool:
    """Tell whether ``key`` is a valid ``Sec-WebSocket-Key``: 16 bytes, base64-encoded (4.1)."""
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return False
    return len(raw) == 16

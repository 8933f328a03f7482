"""XOR masking of WebSocket payloads (RFC 6455 section 5.3).

Two implementations, chosen by payload size (figures from ``benchmarks/ws_mask.py``):

- small payloads: the int trick, one ``int.from_bytes`` of the payload XORed with the key
  repeated to the same length. A handful of C-level operations, no per-byte Python loop.
- large payloads: numpy, when it is installed, XORing the payload in place as ``uint64`` words
  (8 bytes per operation, no temporary copy of the payload). numpy is optional: without it the
  int trick handles every size.

Receiving unmasks in place (:func:`unmask_into`: the payload is a view of the receive buffer and
nobody else needs the masked bytes); sending returns new bytes (:func:`mask_bytes`: the payload
belongs to the caller and must not change under it).
"""

from __future__ import annotations

from types import ModuleType
from typing import Final

Buffer = bytes | bytearray | memoryview

# Payloads at least this long go through numpy when it is available. Below it the int trick
# wins (numpy costs ~1.7 µs a call whatever the size); the curves cross between 512 and
# 1024 bytes: see benchmarks/ws_mask.py.
NUMPY_THRESHOLD: Final = 1024

_numpy: ModuleType | None = None
_numpy_tried = False


def _load_numpy() -> ModuleType | None:
    # Imported on the first large payload, not at start-up: ``import numpy`` takes ~90 ms,
    # which a CLI that never sees a 1 KiB message should not pay.
    global _numpy, _numpy_tried
    if not _numpy_tried:
        _numpy_tried = True
        try:
            import numpy
        except ImportError:  # pragma: no cover - depends on the environment
            _numpy = None
        else:
            _numpy = numpy
    return _numpy


def have_numpy() -> bool:
    """Tell whether the numpy path is available (imports numpy if it was not yet)."""
    return _load_numpy() is not None


def _check_key(key: Buffer) -> None:
    if len(key) != 4:
        raise ValueError(f"a masking key is 4 bytes, not {len(key)}")


# The key repeated over n bytes is key * KEY_REPEAT[n], truncated by LOW_BYTES[n]: multiplying
# a 32-bit number by 1 + 2**32 + 2**64 + ... lays copies side by side without carries. Tables
# up to the largest payload a 7-bit length can announce, the size of every control frame and of
# the small messages that dominate chat and ping-pong traffic. Public for the parser's inline
# copy of xor_small().
SMALL_MAX: Final = 125
KEY_REPEAT: Final = [sum(1 << (32 * i) for i in range((n + 3) // 4)) for n in range(SMALL_MAX + 1)]
LOW_BYTES: Final = [(1 << (8 * n)) - 1 for n in range(SMALL_MAX + 1)]


def key_int(key: Buffer) -> int:
    """The 4-byte masking key as the int :func:`xor_small` takes."""
    return int.from_bytes(key, "little")


def xor_small(data: Buffer, key: int) -> bytes:
    """Return ``data`` (at most 125 bytes) XORed with a key from :func:`key_int`.

    The per-frame path of small messages: a handful of int operations, no key repetition.
    """
    # 5.3: octet i of the payload is XORed with octet i MOD 4 of the key.
    n = len(data)
    return ((int.from_bytes(data, "little") ^ key * KEY_REPEAT[n]) & LOW_BYTES[n]).to_bytes(
        n, "little"
    )


def _xor_int(data: Buffer, key: bytes) -> bytes:
    n = len(data)
    if n <= SMALL_MAX:
        return xor_small(data, int.from_bytes(key, "little"))
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def _unmask_numpy(view: memoryview, key: bytes) -> None:
    np = _load_numpy()
    assert np is not None
    n = len(view)
    words = n // 8
    if words:
        # Native byte order on both sides, so the key repeated to 8 bytes lines up with the
        # payload whatever the machine's endianness.
        arr64 = np.frombuffer(view[: words * 8], dtype=np.uint64)
        arr64 ^= np.frombuffer(key * 2, dtype=np.uint64)[0]
    tail = n - words * 8
    if tail:
        # The tail starts at a multiple of 8, hence of 4: key alignment is unchanged.
        view[words * 8 :] = _xor_int(view[words * 8 :], key)


def unmask_into(view: memoryview, key: Buffer, start: int = 0) -> None:
    """Unmask (or mask: XOR is its own inverse) a writable buffer in place.

    The one unmasking routine: the frame parser calls it for every masked frame, whole small
    frames included (its per-message path), and for the part of a text frame that arrived.

    Args:
        view: a writable, contiguous byte view; typically a slice of the receive buffer.
        key: the 4-byte masking key.
        start: offset of the first byte to unmask, the bytes before it being done already
            (5.3: byte i uses key byte i MOD 4).

    Raises:
        ValueError: the key is not 4 bytes.
        TypeError: the view is read-only.
    """
    n = len(view) - start
    if 0 < n <= SMALL_MAX and not start and len(key) == 4:
        # The per-message path: one small frame, unmasked with a handful of int operations.
        view[:] = xor_small(view, int.from_bytes(key, "little"))
        return
    _check_key(key)
    if view.readonly:
        raise TypeError("unmask_into() needs a writable buffer")
    if n <= 0:
        return
    if view.itemsize != 1 or view.ndim != 1:
        view = view.cast("B")
    key = bytes(key)
    if start:
        shift = start % 4
        view, key = view[start:], key[shift:] + key[:shift]
    if n >= NUMPY_THRESHOLD and _load_numpy() is not None:
        _unmask_numpy(view, key)
    else:
        view[:] = _xor_int(view, key)


def mask_bytes(data: Buffer, key: bytes) -> bytes | bytearray:
    """Return ``data`` XORed with the masking key, leaving ``data`` untouched.

    Args:
        data: the payload to send.
        key: the 4-byte masking key.

    Returns:
        The masked payload, a new object (a bytearray on the numpy path, to avoid a second
        copy).

    Raises:
        ValueError: the key is not 4 bytes.
    """
    _check_key(key)
    n = len(data)
    if n >= NUMPY_THRESHOLD and _load_numpy() is not None:
        # One copy is unavoidable: the caller's payload must stay as it is.
        out = bytearray(data)
        _unmask_numpy(memoryview(out), key)
        return out
    return _xor_int(data, key)
